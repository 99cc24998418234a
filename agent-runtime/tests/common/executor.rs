//! An Executor in this process for tests: its worker endpoint on a local port, its lanes
//! pulling from an in-memory broker, and what a worker needs to talk to it (tokens signed with
//! Ed25519 keys the broker publishes, frames, a dialer).
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use base64::Engine;
use cogo_agent::{
    app,
    broker::{SharedBroker, memory::MemoryBroker},
    pod,
    roles::RoleConfig,
};
use cogo_api::{
    AgentRole, WorkerKind,
    broker::{WorkerKey, WorkerKeySet},
    worker::message::{MessageType, Payload, TOKEN_AUDIENCE, WorkerClaims, WorkerMessage, decode},
};
use ed25519_dalek::SigningKey;
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, protocol::CloseFrame},
};

pub const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub fn key_of(kid: &str, seed: [u8; 32]) -> WorkerKey {
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    WorkerKey {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        alg: "EdDSA".into(),
        use_: "sig".into(),
        kid: kid.into(),
        x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
    }
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A worker token for `ns/worker` of `executor`, signed with `seed` under `kid`.
pub fn token(kid: &str, seed: [u8; 32], ns: &str, executor: &str, exp: i64, aud: &str) -> String {
    let claims = WorkerClaims {
        sub: WorkerClaims::subject(ns, "python"),
        aud: aud.into(),
        kind: WorkerKind::PythonSandbox,
        executor: executor.into(),
        iat: now(),
        exp,
    };
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(Algorithm::EdDSA)
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

pub fn good_token() -> String {
    token("w1", [1; 32], "memory", "executor", now() + 3600, TOKEN_AUDIENCE)
}

pub struct Executor {
    pub port: u16,
    pub broker: Arc<MemoryBroker>,
    pub stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// An Executor `executor` of namespace `memory` on a local port, pinging every `ping`.
pub async fn executor_pinging(ping: Duration) -> Executor {
    let broker = Arc::new(MemoryBroker::new("executor-0", 1));
    broker.set_worker_keys(WorkerKeySet {
        keys: vec![key_of("w1", [1; 32])],
    });
    let shared: SharedBroker = broker.clone();
    let config = RoleConfig {
        role: AgentRole::Executor,
        agent: "executor".into(),
        namespace: "memory".into(),
        pod: "executor-0".into(),
        concurrency: 2,
        broker: Some(shared),
        metrics: pod::Metrics::new("agent", "role", "executor"),
        worker_ping: ping,
        no_worker_for: Duration::from_secs(2),
        model: None,
        fetch: Default::default(),
        storage: Default::default(),
        index: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, _) = tokio::sync::watch::channel(false);
    let served = stop.clone();
    tokio::spawn(async move {
        app::serve(
            listener,
            config,
            None,
            (Duration::from_secs(1), pod::Ready::now()),
            served,
        )
        .await
    });
    Executor { port, broker, stop }
}

/// An Executor pinging every 300 ms.
pub async fn executor() -> Executor {
    executor_pinging(Duration::from_millis(300)).await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn dial(port: u16, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    dial_with(port, token, &[]).await
}

/// [`dial`], with more headers on the upgrade.
pub async fn dial_with(
    port: u16,
    token: Option<&str>,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://127.0.0.1:{port}/v1/workers")
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

pub fn frame(id: &str, t: &str, worker: &str, task: Option<&str>, data: Option<Value>) -> Message {
    let mut v =
        json!({"id": id, "type": t, "workerId": worker, "timestamp": jiff::Timestamp::now().to_string()});
    if let Some(task) = task {
        v["taskId"] = json!(task);
    }
    if let Some(d) = data {
        v["data"] = d;
    }
    Message::Text(v.to_string().into())
}

/// A worker connected with `capacity` slots.
pub async fn worker(port: u16, id: &str, capacity: u32) -> Ws {
    worker_with(port, id, capacity, &[]).await
}

/// [`worker`], with more headers on the upgrade (the features it takes).
pub async fn worker_with(port: u16, id: &str, capacity: u32, headers: &[(&'static str, &str)]) -> Ws {
    let mut ws = dial_with(port, Some(&good_token()), headers).await.unwrap();
    ws.send(frame(
        &format!("{id}-0"),
        "status",
        id,
        None,
        Some(json!({"capacity": capacity, "active": 0})),
    ))
    .await
    .unwrap();
    ws
}

/// The next frame of `kind`, answering pings on the way.
pub async fn next_of(ws: &mut Ws, kind: MessageType, id: &str) -> Option<(WorkerMessage, Payload)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??.ok()?;
        let Message::Text(text) = msg else {
            if let Message::Close(_) = msg {
                return None;
            }
            continue;
        };
        let (m, p) = decode(&text, usize::MAX).expect("the Executor sends valid frames");
        if m.message_type == MessageType::Ping {
            let pong = frame(&m.id, "pong", id, None, None);
            ws.send(pong).await.ok()?;
        }
        if m.message_type == kind {
            return Some((m, p));
        }
    }
}

/// The close frame the Executor ends the connection with.
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()? {
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return Some(code.into()),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}
