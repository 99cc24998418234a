//! A Chrome DevTools Protocol connection over Chromium's debugging pipe
//! (`--remote-debugging-pipe`: the browser reads commands on its fd 3 and writes answers and
//! events on its fd 4, each message JSON ended by a NUL byte). No port is opened, so pages
//! cannot reach the protocol.
//!
//! Commands are answered by id; events are routed to the subscriber of their session (flat
//! sessions, `Target.attachToTarget` with `flatten`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    sync::{mpsc, oneshot, watch},
};
use tracing::debug;

/// The largest message read from the browser (a full-page screenshot is the largest).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CdpError {
    /// The browser answered with an error.
    #[error("{method}: {message} ({code})")]
    Protocol {
        /// The command.
        method: String,
        /// The browser's message.
        message: String,
        /// The browser's code.
        code: i64,
    },
    /// No answer in time.
    #[error("{method}: no answer from the browser within {seconds} s")]
    Timeout {
        /// The command.
        method: String,
        /// How long was waited.
        seconds: u64,
    },
    /// The pipe closed: the browser exited or crashed.
    #[error("the browser is gone ({0})")]
    Closed(String),
}

/// An event the browser sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's name, such as `Page.loadEventFired`.
    pub method: String,
    /// Its parameters.
    pub params: Value,
}

type Pending = HashMap<u64, (String, oneshot::Sender<Result<Value, CdpError>>)>;

struct Shared {
    pending: Mutex<Pending>,
    /// Event subscribers by session id ("" for the browser's own).
    subscribers: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
}

/// One connection to one browser; cheap to clone.
#[derive(Clone)]
pub struct Cdp {
    out: mpsc::UnboundedSender<Vec<u8>>,
    next: Arc<AtomicU64>,
    shared: Arc<Shared>,
    closed: watch::Receiver<Option<String>>,
}

impl Cdp {
    /// Speaks CDP over `reader` (the browser's fd 4) and `writer` (its fd 3).
    pub fn start<R, W>(reader: R, writer: W) -> Cdp
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(HashMap::new()),
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let (closed_tx, closed) = watch::channel(None);
        let closed_tx = Arc::new(closed_tx);
        {
            let closed_tx = closed_tx.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut writer = writer;
                while let Some(mut message) = out_rx.recv().await {
                    message.push(0);
                    if let Err(e) = writer.write_all(&message).await {
                        close(&shared, &closed_tx, format!("cannot write to the browser: {e}"));
                        return;
                    }
                    let _ = writer.flush().await;
                }
            });
        }
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::with_capacity(1 << 16, reader);
                let mut message = Vec::new();
                loop {
                    message.clear();
                    let read = (&mut reader)
                        .take(MAX_MESSAGE_BYTES as u64 + 1)
                        .read_until(0, &mut message)
                        .await;
                    let why = match read {
                        Ok(0) => "its pipe closed".to_string(),
                        Ok(_) if message.last() != Some(&0) => {
                            format!("it sent a message over {} MiB", MAX_MESSAGE_BYTES >> 20)
                        }
                        Ok(_) => {
                            message.pop();
                            dispatch(&shared, &message);
                            continue;
                        }
                        Err(e) => format!("cannot read from it: {e}"),
                    };
                    close(&shared, &closed_tx, why);
                    return;
                }
            });
        }
        Cdp {
            out,
            next: Arc::new(AtomicU64::new(1)),
            shared,
            closed,
        }
    }

    /// Sends `method` (to `session`, or to the browser itself) and waits for its answer.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CdpError> {
        if let Some(why) = self.closed.borrow().clone() {
            return Err(CdpError::Closed(why));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = Value::from(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, (method.to_string(), tx));
        if self.out.send(message.to_string().into_bytes()).is_err() {
            lock(&self.shared.pending).remove(&id);
            return Err(CdpError::Closed("its pipe closed".into()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(CdpError::Closed("its pipe closed".into())),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                Err(CdpError::Timeout {
                    method: method.into(),
                    seconds: timeout.as_secs(),
                })
            }
        }
    }

    /// The events of `session` from now on, until [`Cdp::unsubscribe`].
    pub fn subscribe(&self, session: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.subscribers).insert(session.to_string(), tx);
        rx
    }

    /// Stops routing the events of `session`.
    pub fn unsubscribe(&self, session: &str) {
        lock(&self.shared.subscribers).remove(session);
    }

    /// Why the connection closed, once it has.
    pub fn closed(&self) -> Option<String> {
        self.closed.borrow().clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn close(shared: &Shared, closed: &watch::Sender<Option<String>>, why: String) {
    debug!(why, "the browser connection closed");
    closed.send_if_modified(|c| {
        if c.is_none() {
            *c = Some(why.clone());
            true
        } else {
            false
        }
    });
    for (_, (_, tx)) in lock(&shared.pending).drain() {
        let _ = tx.send(Err(CdpError::Closed(why.clone())));
    }
    lock(&shared.subscribers).clear();
}

fn dispatch(shared: &Shared, message: &[u8]) {
    let Ok(mut v) = serde_json::from_slice::<Value>(message) else {
        debug!(
            bytes = message.len(),
            "ignoring a message from the browser that is not JSON"
        );
        return;
    };
    if let Some(id) = v.get("id").and_then(Value::as_u64) {
        let Some((method, tx)) = lock(&shared.pending).remove(&id) else {
            return;
        };
        let answer = match v.get_mut("error") {
            Some(e) => Err(CdpError::Protocol {
                method,
                message: e["message"].as_str().unwrap_or("unknown error").to_string(),
                code: e["code"].as_i64().unwrap_or(0),
            }),
            None => Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null)),
        };
        let _ = tx.send(answer);
        return;
    }
    let Some(method) = v.get("method").and_then(Value::as_str).map(str::to_string) else {
        return;
    };
    let session = v
        .get("sessionId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let event = Event {
        method,
        params: v.get_mut("params").map(Value::take).unwrap_or(Value::Null),
    };
    let mut subscribers = lock(&shared.subscribers);
    if let Some(tx) = subscribers.get(&session)
        && tx.send(event).is_err()
    {
        subscribers.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, duplex};

    use super::*;

    /// A browser stand-in on the other end of two in-memory pipes.
    fn pair() -> (Cdp, tokio::io::DuplexStream, tokio::io::DuplexStream) {
        let (to_browser, browser_in) = duplex(1 << 16);
        let (browser_out, from_browser) = duplex(1 << 16);
        (Cdp::start(from_browser, to_browser), browser_in, browser_out)
    }

    async fn read_message(r: &mut tokio::io::DuplexStream) -> Value {
        let mut bytes = Vec::new();
        loop {
            let b = r.read_u8().await.unwrap();
            if b == 0 {
                return serde_json::from_slice(&bytes).unwrap();
            }
            bytes.push(b);
        }
    }

    #[tokio::test]
    async fn answers_errors_and_events_find_their_caller() {
        let (cdp, mut browser_in, mut browser_out) = pair();
        let mut events = cdp.subscribe("S1");
        let call = {
            let cdp = cdp.clone();
            tokio::spawn(async move {
                cdp.call(
                    Some("S1"),
                    "Page.navigate",
                    json!({"url": "x"}),
                    Duration::from_secs(5),
                )
                .await
            })
        };
        let sent = read_message(&mut browser_in).await;
        assert_eq!(sent["method"], "Page.navigate");
        assert_eq!(sent["sessionId"], "S1");
        let id = sent["id"].as_u64().unwrap();
        let reply = format!(
            "{}\0not json\0{}\0",
            json!({"method": "Page.loadEventFired", "sessionId": "S1", "params": {"timestamp": 1}}),
            json!({"id": id, "result": {"frameId": "F"}})
        );
        browser_out.write_all(reply.as_bytes()).await.unwrap();
        assert_eq!(call.await.unwrap().unwrap(), json!({"frameId": "F"}));
        assert_eq!(events.recv().await.unwrap().method, "Page.loadEventFired");

        let call = {
            let cdp = cdp.clone();
            tokio::spawn(async move { cdp.call(None, "Nope.x", json!({}), Duration::from_secs(5)).await })
        };
        let id = read_message(&mut browser_in).await["id"].as_u64().unwrap();
        let reply = json!({"id": id, "error": {"code": -32601, "message": "'Nope.x' wasn't found"}});
        browser_out
            .write_all(format!("{reply}\0").as_bytes())
            .await
            .unwrap();
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.to_string(), "Nope.x: 'Nope.x' wasn't found (-32601)");
    }

    #[tokio::test]
    async fn a_silent_or_vanished_browser_fails_calls_instead_of_hanging() {
        let (cdp, _browser_in, browser_out) = pair();
        let e = cdp
            .call(None, "Browser.getVersion", json!({}), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, CdpError::Timeout { .. }), "{e}");
        let waiting = {
            let cdp = cdp.clone();
            tokio::spawn(async move {
                cdp.call(None, "Browser.getVersion", json!({}), Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(browser_out);
        let e = waiting.await.unwrap().unwrap_err();
        assert_eq!(e, CdpError::Closed("its pipe closed".into()));
        assert!(cdp.closed().is_some());
        let e = cdp
            .call(None, "Browser.getVersion", json!({}), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, CdpError::Closed(_)), "{e}");
    }
}
