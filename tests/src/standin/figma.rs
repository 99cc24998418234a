//! A strict stand-in for the Figma REST API (v1), serving one design file in the API's
//! documented shapes: `GET /v1/files/:key`, `/v1/files/:key/nodes`, `/v1/files/:key/images`
//! and `/v1/files/:key/{components,component_sets,styles}`.
//!
//! Like Figma it wants the token in `X-Figma-Token` (403 `{"status":403,"err":"Invalid token"}`
//! otherwise), answers 404 for another file, and 400 for a query parameter the endpoint does
//! not document or a malformed one. It can answer the next requests with 429 and a
//! `Retry-After`, and records every request.

use std::{
    collections::BTreeMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The stand-in.
pub struct Figma {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    token: String,
    key: String,
    file: Value,
    state: Mutex<FigmaState>,
}

#[derive(Default)]
struct FigmaState {
    /// Requests still to answer with 429, and the `Retry-After` to send.
    limited: u32,
    retry_after: u64,
    /// (method, path and query, status) of every request.
    log: Vec<(String, String, u16)>,
}

impl Figma {
    /// Serves `file` (a `GET /v1/files/:key` answer) as the file `key` on `addr`, to callers
    /// with `token`.
    pub async fn serve(addr: SocketAddr, token: &str, key: &str, file: Value) -> io::Result<Figma> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.into(),
            key: key.into(),
            file,
            state: Mutex::default(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Figma { addr, shared, task })
    }

    /// The API's base address (what `COGO_FIGMA_API_URL` takes).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests with 429 and `Retry-After: retry_after`.
    pub fn limit_next(&self, n: u32, retry_after: u64) {
        let mut s = self.shared.state.lock().unwrap();
        s.limited = n;
        s.retry_after = retry_after;
    }

    /// (method, path and query, status) of every request so far.
    pub fn requests(&self) -> Vec<(String, String, u16)> {
        self.shared.state.lock().unwrap().log.clone()
    }
}

impl Drop for Figma {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, err: &str) -> Response {
    (status, axum::Json(json!({"status": status.as_u16(), "err": err}))).into_response()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect();
    let token = req
        .headers()
        .get("x-figma-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let response = answer(&shared, req.method().as_str(), &path, &query, token.as_deref());
    let mut s = shared.state.lock().unwrap();
    let response = if s.limited > 0 && response.status() != StatusCode::FORBIDDEN {
        s.limited -= 1;
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
        r.headers_mut()
            .insert(header::RETRY_AFTER, s.retry_after.to_string().parse().unwrap());
        r
    } else {
        response
    };
    let uri = req.uri().to_string();
    s.log
        .push((req.method().to_string(), uri, response.status().as_u16()));
    response
}

fn answer(
    shared: &Shared,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    token: Option<&str>,
) -> Response {
    if token != Some(shared.token.as_str()) {
        return error(StatusCode::FORBIDDEN, "Invalid token");
    }
    if method != "GET" {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let Some(rest) = path.strip_prefix("/v1/files/") else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let (key, endpoint) = rest.split_once('/').unwrap_or((rest, ""));
    if key != shared.key {
        return error(StatusCode::NOT_FOUND, "Not found");
    }
    let allowed: &[&str] = match endpoint {
        "" => &[
            "version",
            "ids",
            "depth",
            "geometry",
            "plugin_data",
            "branch_data",
        ],
        "nodes" => &["ids", "version", "depth", "geometry", "plugin_data"],
        "images" | "components" | "component_sets" | "styles" => &[],
        _ => return error(StatusCode::NOT_FOUND, "Not found"),
    };
    if let Some(k) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
        return error(StatusCode::BAD_REQUEST, &format!("Unknown parameter: {k}"));
    }
    if let Some(d) = query.get("depth")
        && d.parse::<u32>().ok().filter(|d| *d > 0).is_none()
    {
        return error(StatusCode::BAD_REQUEST, "depth must be a positive integer");
    }
    let file = &shared.file;
    match endpoint {
        "" => {
            let mut f = file.clone();
            if let Some(d) = query.get("depth").and_then(|d| d.parse::<u32>().ok()) {
                cut(&mut f["document"], d);
            }
            axum::Json(f).into_response()
        }
        "nodes" => {
            let Some(ids) = query.get("ids").filter(|i| !i.is_empty()) else {
                return error(StatusCode::BAD_REQUEST, "ids is required");
            };
            let mut nodes = serde_json::Map::new();
            for id in ids.split(',') {
                let found = find(&file["document"], id).map(|n| {
                    json!({
                        "document": n,
                        "components": file["components"],
                        "componentSets": file["componentSets"],
                        "styles": file["styles"],
                        "schemaVersion": 0,
                    })
                });
                nodes.insert(id.to_string(), found.unwrap_or(Value::Null));
            }
            axum::Json(json!({
                "name": file["name"],
                "lastModified": file["lastModified"],
                "thumbnailUrl": file["thumbnailUrl"],
                "version": file["version"],
                "role": "viewer",
                "editorType": "figma",
                "nodes": nodes,
            }))
            .into_response()
        }
        "images" => {
            let mut refs = BTreeMap::new();
            collect_image_refs(&file["document"], &mut refs);
            let images: serde_json::Map<String, Value> = refs
                .into_keys()
                .map(|r| (r.clone(), Value::from(format!("https://images.example/{r}.png"))))
                .collect();
            axum::Json(json!({"error": false, "status": 200, "meta": {"images": images}})).into_response()
        }
        what => axum::Json(json!({"error": false, "status": 200, "meta": {what: []}})).into_response(),
    }
}

/// Keeps `depth` levels below the document (1: pages only).
fn cut(node: &mut Value, depth: u32) {
    if let Some(children) = node.get_mut("children").and_then(Value::as_array_mut) {
        if depth == 0 {
            node.as_object_mut().unwrap().remove("children");
            return;
        }
        for c in children {
            cut(c, depth - 1);
        }
    }
}

fn find<'a>(node: &'a Value, id: &str) -> Option<&'a Value> {
    if node["id"] == id {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|c| find(c, id))
}

fn collect_image_refs(node: &Value, refs: &mut BTreeMap<String, ()>) {
    for paint in node["fills"].as_array().into_iter().flatten() {
        if let Some(r) = paint["imageRef"].as_str() {
            refs.insert(r.to_string(), ());
        }
    }
    for c in node["children"].as_array().into_iter().flatten() {
        collect_image_refs(c, refs);
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
