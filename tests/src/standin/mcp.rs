//! A real MCP server for the MCP client's tests: rmcp's server side, served by axum, with tools
//! that add, greet, fail, answer a JSON-RPC error or take too long; paged tool lists; an
//! always-500 endpoint; and a count of what reached it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The bearer token `serve(Some(TOKEN))` accepts.
pub const TOKEN: &str = "figd_s3cret-token";

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// Every HTTP request.
    pub requests: AtomicUsize,
    /// `DELETE`s (sessions closed).
    pub deletes: AtomicUsize,
    /// Tools called, by name, before any argument parsing.
    pub calls: Mutex<Vec<String>>,
}

impl Seen {
    /// The tools called so far, by name.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Language {
    En,
    Ko,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct GreetArgs {
    #[schemars(length(min = 1))]
    name: String,
    language: Option<Language>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Greeting {
    text: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct NodeArgs {
    #[serde(rename = "nodeId")]
    node_id: String,
}

#[derive(Clone)]
struct TestServer {
    seen: Arc<Seen>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl TestServer {
    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> CallToolResult {
        let mut result = CallToolResult::success(vec![ContentBlock::text((a + b).to_string())]);
        result.structured_content = Some(json!({"sum": a + b}));
        result
    }

    #[tool(description = "Greets someone")]
    fn greet(&self, Parameters(args): Parameters<GreetArgs>) -> Json<Greeting> {
        let text = match args.language {
            Some(Language::Ko) => format!("안녕하세요, {}", args.name),
            _ => format!("Hello, {}", args.name),
        };
        Json(Greeting { text })
    }

    #[tool(description = "Always reports a failure")]
    fn fail(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("the file is locked")])
    }

    #[tool(description = "Answers with a JSON-RPC error")]
    fn get_node(&self, Parameters(args): Parameters<NodeArgs>) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::invalid_params(
            format!("no node {}", args.node_id),
            None,
        ))
    }

    #[tool(description = "Takes five seconds")]
    async fn slow(&self) -> CallToolResult {
        tokio::time::sleep(Duration::from_secs(5)).await;
        CallToolResult::success(vec![ContentBlock::text("late")])
    }
}

#[tool_handler]
impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.seen.calls.lock().unwrap().push(request.name.to_string());
        self.tool_router
            .call(ToolCallContext::new(self, request, context))
            .await
    }
}

/// A server whose tools come two to a page, over `pages` pages; `usize::MAX` pages never end,
/// and `0` pages always point back to the second page.
#[derive(Clone)]
struct PagedServer {
    pages: usize,
}

impl ServerHandler for PagedServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let page: usize = request.and_then(|r| r.cursor).map_or(0, |c| c.parse().unwrap());
        let schema: JsonObject = serde_json::from_value(json!({"type": "object"})).unwrap();
        let schema = Arc::new(schema);
        let tools = (0..2)
            .map(|i| Tool::new(format!("p{page}t{i}"), "a tool", schema.clone()))
            .collect();
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = match self.pages {
            0 => Some("1".to_string()),
            pages => (page + 1 < pages).then(|| (page + 1).to_string()),
        };
        Ok(result)
    }
}

/// Counts requests, and answers 401 unless the bearer token is right (when one is required):
/// with a `WWW-Authenticate` challenge when there is no token, without one when it is wrong.
async fn guard(
    State((seen, token)): State<(Arc<Seen>, Option<&'static str>)>,
    request: Request,
    next: Next,
) -> Response {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    if request.method() == Method::DELETE {
        seen.deletes.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(token) = token {
        let expected = format!("Bearer {token}");
        match request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            Some(given) if given == expected => {}
            // A bare 401 ...
            Some(_) => return (StatusCode::UNAUTHORIZED, "bad token").into_response(),
            // ... and one with a challenge, as OAuth-protected servers answer.
            None => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, r#"Bearer realm="mcp""#)],
                    "no token",
                )
                    .into_response();
            }
        }
    }
    next.run(request).await
}

/// A server serving, and what it saw.
pub struct Running {
    base: String,
    /// What reached it.
    pub seen: Arc<Seen>,
}

impl Running {
    /// The address of the endpoint at `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Serves the test tools at `/mcp`, the paged ones at `/paged` (3 pages), `/endless` and `/looping`, and
/// an always-500 endpoint at `/broken`.
pub async fn serve(token: Option<&'static str>) -> Running {
    serve_on(SocketAddr::from(([127, 0, 0, 1], 0)), token)
        .await
        .expect("a free port of 127.0.0.1")
}

/// [`serve`] on `addr` (e.g. an address pods can reach).
pub async fn serve_on(addr: SocketAddr, token: Option<&'static str>) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    // rmcp accepts loopback hosts only unless told otherwise (against DNS rebinding).
    let config = || {
        StreamableHttpServerConfig::default()
            .with_allowed_hosts([address.ip().to_string(), address.to_string()])
    };
    let seen = Arc::new(Seen::default());
    let tools = {
        let seen = seen.clone();
        StreamableHttpService::new(
            move || {
                Ok(TestServer {
                    seen: seen.clone(),
                    tool_router: TestServer::tool_router(),
                })
            },
            Arc::new(LocalSessionManager::default()),
            config(),
        )
    };
    let paged = |pages| {
        StreamableHttpService::new(
            move || Ok(PagedServer { pages }),
            Arc::new(LocalSessionManager::default()),
            config(),
        )
    };
    let router = axum::Router::new()
        .nest_service("/mcp", tools)
        .nest_service("/paged", paged(3))
        .nest_service("/endless", paged(usize::MAX))
        .nest_service("/looping", paged(0))
        .route(
            "/broken",
            axum::routing::any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(from_fn_with_state((seen.clone(), token), guard));
    // Without TCP_NODELAY each small answer waits out the client's delayed ACK (~40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Running {
        base: format!("http://{address}"),
        seen,
    })
}

/// A JSON object as tool arguments.
pub fn args(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("arguments are an object"),
    }
}
