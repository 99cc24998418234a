//! One MCP session over streamable HTTP (rmcp): open (`initialize`), list tools, call a tool,
//! close (which sends `DELETE` with the session id the server gave). Also how rmcp's errors
//! become [`McpError`]s: which are worth retrying, and which say the credentials were refused.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    PaginatedRequestParams, ProtocolVersion, Tool,
};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::{ErrorData, RoleClient, ServiceError};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{CLIENT_NAME, CLIENT_VERSION, MAX_PAGES, MAX_TOOLS};
use super::{CallResult, McpError, McpFailure, McpServer, ToolAnnotations, ToolInfo, cut};

/// The transport's error type, which rmcp boxes inside its own errors.
type TransportError = StreamableHttpError<reqwest::Error>;

/// An initialized session with one server.
pub(super) struct Session<'a> {
    server: &'a McpServer,
    service: RunningService<RoleClient, ClientConfig>,
}

impl<'a> Session<'a> {
    /// Connects and initializes, as [`CLIENT_NAME`].
    pub(super) async fn open(server: &'a McpServer) -> Result<Self, McpError> {
        let url = reqwest::Url::parse(&server.url)
            .map_err(|e| server.error(McpFailure::Config(format!("the URL is not valid: {e}"))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(server.error(McpFailure::Config(format!(
                "the URL must be http or https, not {:?}",
                url.scheme()
            ))));
        }
        let config = StreamableHttpClientTransportConfig::with_uri(server.url.as_str())
            .custom_headers(headers(server)?)
            // A session lives for one call: one that expired is an error, not a new session.
            .reinit_on_expired_session(false);
        let transport = StreamableHttpClientTransport::with_client(http_client(server)?, config);
        // The newest version with the `initialize` handshake, so the server keeps a session
        // that closing ends (later versions are sessionless).
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(CLIENT_NAME, CLIENT_VERSION),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
        tracing::debug!(server = %server.name, "opening an MCP session");
        let service = rmcp::serve_client(info, transport)
            .await
            .map_err(|e| server.error(from_initialize(&e)))?;
        Ok(Session { server, service })
    }

    /// Every tool, page after page, within [`MAX_TOOLS`] and [`MAX_PAGES`].
    pub(super) async fn list_tools(&self) -> Result<Vec<ToolInfo>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        for _ in 0..MAX_PAGES {
            let params = cursor
                .take()
                .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            let page = self
                .service
                .list_tools(params)
                .await
                .map_err(|e| self.server.error(from_service(&e)))?;
            tools.extend(page.tools.into_iter().map(tool_info));
            if tools.len() > MAX_TOOLS {
                return Err(self.malformed(format!("it lists more than {MAX_TOOLS} tools")));
            }
            match page.next_cursor {
                None => return Ok(tools),
                Some(next) if !seen_cursors.insert(next.clone()) => {
                    return Err(self.malformed("its tool list repeats a page cursor".to_string()));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(self.malformed(format!("its tool list goes on past {MAX_PAGES} pages")))
    }

    /// Calls `tool`; a result marked `isError` becomes [`McpFailure::ToolFailed`].
    pub(super) async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> Result<CallResult, McpError> {
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let result = self
            .service
            .call_tool(params)
            .await
            .map_err(|e| self.server.error(from_service(&e)))?;
        call_result(self.server, tool, result)
    }

    /// Ends the session (`DELETE` when the server gave a session id), giving up at `deadline`:
    /// the answer is already in hand, and an abandoned session expires on the server.
    pub(super) async fn close(mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.service.close_with_timeout(left).await {
            Ok(Some(_)) => tracing::debug!(server = %self.server.name, "closed the MCP session"),
            Ok(None) => tracing::debug!(server = %self.server.name, "gave up closing the MCP session"),
            Err(e) => tracing::warn!(server = %self.server.name, "closing the MCP session failed: {e}"),
        }
    }

    fn malformed(&self, detail: String) -> McpError {
        self.server.error(McpFailure::Malformed(detail))
    }
}

/// The configured headers, marked sensitive so no `Debug` of them shows a value.
fn headers(server: &McpServer) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
    let mut headers = HashMap::new();
    for (name, value) in &server.headers {
        let header_name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| server.error(McpFailure::Config(format!("{name:?} is not a valid header name"))))?;
        let mut header_value = HeaderValue::from_str(value.trim()).map_err(|_| {
            server.error(McpFailure::Config(format!(
                "the value of header {name:?} is not a valid header value"
            )))
        })?;
        header_value.set_sensitive(true);
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// The pods' HTTP client (rustls with ring and the system's roots, no redirects, so that
/// credentials never follow one).
fn http_client(server: &McpServer) -> Result<reqwest::Client, McpError> {
    cogo_agent::llm::http_client().map_err(|e| server.error(McpFailure::Config(e)))
}

fn tool_info(tool: Tool) -> ToolInfo {
    ToolInfo {
        name: tool.name.into_owned(),
        title: tool.title,
        description: tool.description.map(|d| d.into_owned()),
        input_schema: Value::Object(tool.input_schema.as_ref().clone()),
        output_schema: tool.output_schema.map(|s| Value::Object(s.as_ref().clone())),
        annotations: tool.annotations.map(|a| ToolAnnotations {
            title: a.title,
            read_only_hint: a.read_only_hint,
            destructive_hint: a.destructive_hint,
            idempotent_hint: a.idempotent_hint,
            open_world_hint: a.open_world_hint,
        }),
    }
}

fn call_result(server: &McpServer, tool: &str, result: CallToolResult) -> Result<CallResult, McpError> {
    let content: Vec<Value> = result
        .content
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| server.error(McpFailure::Malformed(format!("unreadable tool content: {e}"))))?;
    if result.is_error == Some(true) {
        let texts: Vec<&str> = content
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect();
        let message = if texts.is_empty() {
            "(the tool gave no text)".to_string()
        } else {
            cut(&texts.join("\n"))
        };
        return Err(server.error(McpFailure::ToolFailed {
            tool: tool.to_string(),
            message,
        }));
    }
    Ok(CallResult {
        content,
        structured_content: result.structured_content,
        is_error: false,
    })
}

/// Why `initialize` failed.
fn from_initialize(error: &ClientInitializeError) -> McpFailure {
    match error {
        ClientInitializeError::TransportError { error, .. } => from_transport(error.error.as_ref()),
        ClientInitializeError::JsonRpcError(data) => protocol(data),
        ClientInitializeError::ConnectionClosed(_) => {
            McpFailure::Unreachable("the connection closed during initialize".to_string())
        }
        ClientInitializeError::Cancelled => McpFailure::Unreachable("initialize was cancelled".to_string()),
        ClientInitializeError::NoCompatibleProtocolVersion { server_supported, .. } => {
            McpFailure::Malformed(format!(
                "no protocol version in common (the server speaks {})",
                server_supported
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
        other => McpFailure::Malformed(format!("initialize failed: {}", cut(&other.to_string()))),
    }
}

/// Why a request of an initialized session failed.
fn from_service(error: &ServiceError) -> McpFailure {
    match error {
        ServiceError::McpError(data) => protocol(data),
        ServiceError::TransportSend(error) => from_transport(error.error.as_ref()),
        ServiceError::TransportClosed => McpFailure::Unreachable("the connection closed".to_string()),
        ServiceError::Timeout { timeout } => McpFailure::Timeout(*timeout),
        ServiceError::Cancelled { .. } => McpFailure::Unreachable("the request was cancelled".to_string()),
        other => McpFailure::Malformed(cut(&other.to_string())),
    }
}

fn protocol(data: &ErrorData) -> McpFailure {
    McpFailure::Protocol {
        code: data.code.0,
        message: cut(&data.message),
    }
}

/// Why the transport failed. Messages come from the error's causes, never from reqwest's
/// own text, which carries the URL (and a URL may carry a token).
fn from_transport(error: &(dyn StdError + Send + Sync + 'static)) -> McpFailure {
    let Some(error) = error.downcast_ref::<TransportError>() else {
        return McpFailure::Unreachable(root_cause(error));
    };
    match error {
        StreamableHttpError::Client(e) => from_reqwest(e),
        StreamableHttpError::HttpStatus(status) => from_status(status.status),
        StreamableHttpError::AuthRequired(_) => McpFailure::Credentials { status: 401 },
        StreamableHttpError::InsufficientScope(_) => McpFailure::Credentials { status: 403 },
        // rmcp reports other HTTP errors as "HTTP 404 Not Found: <body>".
        StreamableHttpError::UnexpectedServerResponse(text) => match http_status_of(text) {
            Some(status) => from_status(status),
            None => McpFailure::Malformed(cut(text)),
        },
        StreamableHttpError::Io(e) => McpFailure::Unreachable(e.to_string()),
        StreamableHttpError::Sse(e) => McpFailure::Unreachable(format!("the event stream broke: {e}")),
        StreamableHttpError::UnexpectedEndOfStream
        | StreamableHttpError::TransportChannelClosed
        | StreamableHttpError::TokioJoinError(_) => {
            McpFailure::Unreachable("the connection ended before the answer".to_string())
        }
        StreamableHttpError::SessionExpired => {
            McpFailure::Unreachable("the server ended the session".to_string())
        }
        StreamableHttpError::ReservedHeaderConflict(name) => {
            McpFailure::Config(format!("header {name:?} is set by the MCP transport itself"))
        }
        other => McpFailure::Malformed(cut(&other.to_string())),
    }
}

fn from_reqwest(error: &reqwest::Error) -> McpFailure {
    if let Some(status) = error.status() {
        return from_status(status.as_u16());
    }
    if error.is_builder() {
        return McpFailure::Config(root_cause(error));
    }
    if error.is_decode() {
        return McpFailure::Malformed(root_cause(error));
    }
    if error.is_timeout() {
        return McpFailure::Unreachable("the connection timed out".to_string());
    }
    McpFailure::Unreachable(root_cause(error))
}

fn from_status(status: u16) -> McpFailure {
    match status {
        401 | 403 => McpFailure::Credentials { status },
        _ => McpFailure::HttpStatus { status },
    }
}

/// The status of rmcp's "HTTP 404 Not Found: …" messages.
fn http_status_of(text: &str) -> Option<u16> {
    let rest = text.strip_prefix("HTTP ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|s| (100..600).contains(s))
}

/// The innermost cause of an error, such as "Connection refused (os error 111)".
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if cause.is::<reqwest::Error>() {
        // reqwest's own text names the URL.
        return "the request failed".to_string();
    }
    cut(&cause.to_string())
}
