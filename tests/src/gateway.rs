//! The chat gateway as the tests run it: `cogo-operator gateway` as a local process, user
//! tokens signed as Supabase Auth signs them (HS256 with the project's secret, RS256 and ES256
//! with the keys of a JWKS served here), and a blocking HTTP client that reads JSON answers and
//! Server-Sent Events.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{
    cluster::{Cluster, free_port, operator_binary, wait_until},
    repo,
};

/// The project's HS256 secret the tests' gateways trust.
pub const JWT_SECRET: &str = "cogo-e2e-project-jwt-secret-0123456789abcdef";
/// The issuer the tests' tokens name.
pub const ISSUER: &str = "http://127.0.0.1:54321/auth/v1";

fn key_file(name: &str) -> String {
    let path = repo().join("operator/tests/data/gateway").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body")
}

/// Serves [`jwks`] on a free port of 127.0.0.1, on the current runtime, as Supabase Auth does;
/// returns its URL.
pub async fn serve_jwks() -> String {
    let path = "/auth/v1/.well-known/jwks.json";
    let app = axum::Router::new().route(
        path,
        axum::routing::get(|| async { ([("content-type", "application/json")], jwks()) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let url = format!("http://{}{path}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The JWKS the tests serve: the public halves of the RSA (`rsa-1`) and EC (`ec-1`) keys.
pub fn jwks() -> String {
    key_file("jwks.json")
}

/// How a token is signed.
#[derive(Clone, Copy, Debug)]
pub enum Signer {
    /// HS256 with [`JWT_SECRET`].
    Secret,
    /// HS256 with another secret.
    WrongSecret,
    /// RS256 with the JWKS's `rsa-1`.
    Rsa,
    /// ES256 with the JWKS's `ec-1`.
    Ec,
    /// RS256 with `rsa-1`, under a kid the JWKS does not have.
    UnknownKid,
    /// HS256 keyed with the RSA public key, under its kid (the HS/RS confusion).
    Confused,
}

/// A Supabase user token for `sub`, with the standard claims valid for an hour, `extra` added
/// (or overriding), signed by `signer`.
pub fn token(sub: &str, extra: Value, signer: Signer) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({"sub": sub, "aud": "authenticated", "iss": ISSUER, "role": "authenticated",
                            "iat": now, "exp": now + 3600, "email": format!("{sub}@cogo.xyz")});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(&k);
        } else {
            claims[k] = v;
        }
    }
    let (mut header, key) = match signer {
        Signer::Secret => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        ),
        Signer::WrongSecret => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(b"not-the-secret"),
        ),
        Signer::Rsa | Signer::UnknownKid => (
            Header::new(Algorithm::RS256),
            EncodingKey::from_rsa_der(&der(&key_file("rsa.pem"))),
        ),
        Signer::Ec => (
            Header::new(Algorithm::ES256),
            EncodingKey::from_ec_der(&der(&key_file("ec.pem"))),
        ),
        Signer::Confused => (
            Header::new(Algorithm::HS256),
            EncodingKey::from_secret(key_file("rsa.pub.pem").as_bytes()),
        ),
    };
    header.kid = match signer {
        Signer::Rsa | Signer::Confused => Some("rsa-1".into()),
        Signer::Ec => Some("ec-1".into()),
        Signer::UnknownKid => Some("rsa-9".into()),
        _ => None,
    };
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// A token whose header says `alg: none`, unsigned.
pub fn unsigned_token(sub: &str) -> String {
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let signed = token(sub, json!({}), Signer::Secret);
    let payload = signed.split('.').nth(1).unwrap().to_string();
    format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT"})))
}

/// `token` with its payload replaced by one naming `other` (the signature kept).
pub fn tampered(token: &str, other: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(other);
    parts[1] = engine.encode(claims.to_string());
    parts.join(".")
}

/// `cogo-operator gateway` as a local process. Killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// Where it listens, on 127.0.0.1.
    pub port: u16,
}

impl GatewayProcess {
    /// Starts a gateway serving `namespace`, its database at `database_url`, trusting
    /// [`JWT_SECRET`] and the JWKS at `jwks_url`, with `extra` arguments; waits until it serves.
    pub fn start(
        cluster: &Cluster,
        namespace: &str,
        database_url: &str,
        jwks_url: &str,
        extra: &[&str],
    ) -> GatewayProcess {
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("cogo-e2e-gateway-{namespace}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = crate::cluster::ProcessEnv::apply(&mut Command::new(operator_binary()))
            .arg("gateway")
            .args(["--addr", &format!("127.0.0.1:{port}"), "--namespace", namespace])
            .args([
                "--database-url",
                database_url,
                "--jwks-url",
                jwks_url,
                "--jwt-issuer",
                ISSUER,
            ])
            .args(extra)
            .env("COGO_GATEWAY_JWT_SECRET", JWT_SECRET)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("COGO_E2E_GATEWAY_LOG").unwrap_or("info,cogo_operator=debug".into()),
            )
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the gateway");
        let g = GatewayProcess { child, log, port };
        wait_until(Duration::from_secs(30), "the gateway to serve /healthz", || {
            crate::cluster::http_get(port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        });
        g
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client of this gateway.
    pub fn client(&self) -> GatewayClient {
        GatewayClient::new(&format!("http://127.0.0.1:{}", self.port))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: its status, `Retry-After`, and body (JSON, or the raw text).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header.
    pub retry_after: Option<String>,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body, as JSON when it is.
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("")
    }

    /// The Server-Sent Events of a streamed answer: (event, data as JSON).
    pub fn events(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for block in self.text.split("\n\n") {
            let mut event = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if !data.is_empty() {
                out.push((event, serde_json::from_str(&data).unwrap_or(Value::String(data))));
            }
        }
        out
    }
}

/// A blocking HTTP client of a gateway.
pub struct GatewayClient {
    base: String,
    http: reqwest::blocking::Client,
}

impl GatewayClient {
    /// A client of the gateway at `base`.
    pub fn new(base: &str) -> GatewayClient {
        let http = crate::http_client(Duration::from_secs(120));
        GatewayClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// Sends `method path` with the bearer `token` (none when empty), the JSON `body` (none when
    /// null) and `Accept: accept`.
    pub fn send(&self, method: &str, path: &str, token: &str, body: &Value, accept: &str) -> Answer {
        let mut req = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.base))
            .header("accept", accept);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if !body.is_null() {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let retry_after = header("retry-after");
        let content_type = header("content-type").unwrap_or_default();
        let text = res.text().unwrap_or_default();
        Answer {
            status,
            retry_after,
            content_type,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// GET `path` as `token`.
    pub fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, token, &Value::Null, "application/json")
    }

    /// POST the JSON `body` to `path` as `token`.
    pub fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send("POST", path, token, &body, "application/json")
    }

    /// POST the JSON `body` to `path` as `token`, asking for Server-Sent Events.
    pub fn stream(&self, path: &str, token: &str, body: Value) -> Answer {
        self.send("POST", path, token, &body, "text/event-stream")
    }

    /// POST raw bytes to `path` with `content_type`.
    pub fn post_raw(&self, path: &str, token: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().unwrap_or_default();
        Answer {
            status,
            retry_after: None,
            content_type: String::new(),
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }
}
