//! The FigmaMCP worker's MCP client: it lists and calls the tools of the MCP servers named in
//! its config (such as Figma's Dev Mode server), over the streamable HTTP transport.
//!
//! A call is one short session, bounded as a whole by [`McpServer::timeout`]:
//! *initialize → list the tools → check the arguments → call → close*. Only the first, the
//! second, the fourth and the last talk to the server (`client.rs`); finding the tool and checking
//! the arguments against its input schema ([`check_call`], [`schema`]) are pure, so a model's
//! mistake is explained to it without a request, and a malformed call never reaches the server.
//!
//! Every failure is an [`McpError`] that names the server and says whether trying again may
//! help ([`McpError::retryable`]). The headers configured for a server (its credentials) are
//! sent, never logged, and never part of an error or a `Debug` output.

mod client;
pub mod schema;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use self::client::Session;
use self::schema::SchemaError;

/// The name this client gives itself in `initialize`.
pub const CLIENT_NAME: &str = "cogo-worker";
/// The version it gives.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// How long a call may take when the config names no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The most tools a server may list; a longer list is refused as unusable.
pub const MAX_TOOLS: usize = 1000;
/// The most pages of tools followed before the list is refused as unending.
pub const MAX_PAGES: usize = 50;
/// How many characters of a server's error message or a failed tool's text an error keeps.
const MAX_MESSAGE_CHARS: usize = 4000;

/// An MCP server the worker may use, as its config names it.
#[derive(Clone, PartialEq, Eq)]
pub struct McpServer {
    /// The name the config gives it; every error names it.
    pub name: String,
    /// Its streamable HTTP endpoint, such as `http://127.0.0.1:3845/mcp`.
    pub url: String,
    /// Headers sent with every request, such as `Authorization: Bearer …`. Secret: they are
    /// never logged, shown in errors, or printed by `Debug`.
    pub headers: Vec<(String, String)>,
    /// How long one call (connect, list, call and close) may take in all.
    pub timeout: Duration,
}

impl McpServer {
    /// A server with no headers and the [`DEFAULT_TIMEOUT`].
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        McpServer {
            name: name.into(),
            url: url.into(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same server, with one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The same server, with another timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// An error of this server.
    fn error(&self, failure: McpFailure) -> McpError {
        McpError {
            server: self.name.clone(),
            failure,
        }
    }
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `url` without what may be secret in it: user info and query.
fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "<not a URL>".to_string();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("redacted");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("redacted"));
    }
    parsed.to_string()
}

/// A tool a server offers, as its `tools/list` describes it (camelCase in JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    /// The name to call it by.
    pub name: String,
    /// A title for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema its arguments must satisfy.
    pub input_schema: Value,
    /// The JSON Schema of its structured result, if it declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Hints about its behaviour (the server's word, not a guarantee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// A tool's behaviour hints, as MCP defines them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// A title for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// It does not change its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// Its changes may destroy something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// Calling it twice with the same arguments does no more than once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// It reaches things outside the server (the web, other services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

/// What a tool returned (camelCase in JSON, as MCP's `CallToolResult`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallResult {
    /// Its content blocks (text, images, resources …), as the server gave them.
    pub content: Vec<Value>,
    /// Its structured result, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    /// Whether the tool reported a failure. Always false here: [`call_tool`] returns such a
    /// result as [`McpFailure::ToolFailed`]; the field keeps the JSON shape MCP defines.
    #[serde(default)]
    pub is_error: bool,
}

/// Why a call to an MCP server failed; its message starts `mcp server "NAME": `.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("mcp server {server:?}: {failure}")]
pub struct McpError {
    /// The server's name in the config.
    pub server: String,
    /// What went wrong.
    pub failure: McpFailure,
}

impl McpError {
    /// Whether the same call may succeed later: the server was unreachable, slow, or failing
    /// (5xx, 429). Refused credentials, bad arguments, unknown tools, protocol errors and a
    /// tool's own failure will happen again.
    pub fn retryable(&self) -> bool {
        match &self.failure {
            McpFailure::Unreachable(_) | McpFailure::Timeout(_) => true,
            McpFailure::HttpStatus { status } => *status >= 500 || *status == 429 || *status == 408,
            McpFailure::Config(_)
            | McpFailure::Credentials { .. }
            | McpFailure::Protocol { .. }
            | McpFailure::Malformed(_)
            | McpFailure::UnknownTool { .. }
            | McpFailure::InvalidArguments { .. }
            | McpFailure::ToolFailed { .. } => false,
        }
    }

    /// A short name of the failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match &self.failure {
            McpFailure::Config(_) => "config",
            McpFailure::Unreachable(_) => "unreachable",
            McpFailure::Timeout(_) => "timeout",
            McpFailure::Credentials { .. } => "credentials",
            McpFailure::HttpStatus { .. } => "http_status",
            McpFailure::Protocol { .. } => "protocol",
            McpFailure::Malformed(_) => "malformed",
            McpFailure::UnknownTool { .. } => "unknown_tool",
            McpFailure::InvalidArguments { .. } => "invalid_arguments",
            McpFailure::ToolFailed { .. } => "tool_failed",
        }
    }
}

/// What went wrong with an MCP server.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum McpFailure {
    /// The config cannot be used: a bad URL or header, or no TLS setup.
    #[error("bad configuration: {0}")]
    Config(String),
    /// No connection, or it broke before the answer was complete.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// No complete answer within the server's timeout.
    #[error("no answer within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The server answered 401 or 403.
    #[error("the server refused the credentials (HTTP {status}); check the headers configured for it")]
    Credentials {
        /// The HTTP status.
        status: u16,
    },
    /// The server answered with another HTTP error.
    #[error("the server answered HTTP {status}")]
    HttpStatus {
        /// The HTTP status.
        status: u16,
    },
    /// The server answered with a JSON-RPC error.
    #[error("the server answered with error {code}: {message}")]
    Protocol {
        /// The JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// An answer this client cannot use (not MCP, too large, an unending tool list).
    #[error("unusable answer: {0}")]
    Malformed(String),
    /// The server has no tool of that name.
    #[error("has no tool {tool:?}; its tools are: {}", list_names(.available))]
    UnknownTool {
        /// The name asked for.
        tool: String,
        /// The names it has.
        available: Vec<String>,
    },
    /// The arguments do not satisfy the tool's input schema; the call was not sent.
    #[error("bad arguments for tool {tool:?}: {problems}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// What is wrong with them.
        problems: SchemaError,
    },
    /// The tool ran and reported a failure (`isError`); its text says why.
    #[error("tool {tool:?} failed: {message}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// The text content it returned.
        message: String,
    },
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names.join(", ")
}

/// Lists the tools of `server`, following pagination (at most [`MAX_TOOLS`] tools in
/// [`MAX_PAGES`] pages).
pub async fn list_tools(server: &McpServer) -> Result<Vec<ToolInfo>, McpError> {
    let deadline = Instant::now() + server.timeout;
    let session = bounded(server, deadline, Session::open(server)).await?;
    let tools = bounded(server, deadline, session.list_tools()).await;
    session.close(deadline).await;
    tools
}

/// Calls `tool` of `server` with `arguments`, in one session: lists the tools, finds the tool
/// and checks the arguments against its input schema ([`check_call`]), and only then calls it.
/// A result the tool marks `isError` is returned as [`McpFailure::ToolFailed`].
pub async fn call_tool(
    server: &McpServer,
    tool: &str,
    arguments: Map<String, Value>,
) -> Result<CallResult, McpError> {
    let deadline = Instant::now() + server.timeout;
    let session = bounded(server, deadline, Session::open(server)).await?;
    let result = async {
        let tools = bounded(server, deadline, session.list_tools()).await?;
        check_call(server, &tools, tool, &arguments)?;
        bounded(server, deadline, session.call(tool, arguments)).await
    }
    .await;
    session.close(deadline).await;
    result
}

/// Like [`call_tool`], with the tools already listed (say, when the model was shown them):
/// arguments that fail the check never open a connection.
pub async fn call_listed_tool(
    server: &McpServer,
    tools: &[ToolInfo],
    tool: &str,
    arguments: Map<String, Value>,
) -> Result<CallResult, McpError> {
    check_call(server, tools, tool, &arguments)?;
    let deadline = Instant::now() + server.timeout;
    let session = bounded(server, deadline, Session::open(server)).await?;
    let result = bounded(server, deadline, session.call(tool, arguments)).await;
    session.close(deadline).await;
    result
}

/// Finds `tool` among `tools` and checks `arguments` against its input schema.
pub fn check_call<'t>(
    server: &McpServer,
    tools: &'t [ToolInfo],
    tool: &str,
    arguments: &Map<String, Value>,
) -> Result<&'t ToolInfo, McpError> {
    let Some(found) = tools.iter().find(|t| t.name == tool) else {
        return Err(server.error(McpFailure::UnknownTool {
            tool: tool.to_string(),
            available: tools.iter().map(|t| t.name.clone()).collect(),
        }));
    };
    // Checking needs a `Value`; the map is small next to the call itself.
    let value = Value::Object(arguments.clone());
    schema::check(&found.input_schema, &value).map_err(|problems| {
        server.error(McpFailure::InvalidArguments {
            tool: tool.to_string(),
            problems,
        })
    })?;
    Ok(found)
}

/// `work`, unless the deadline passes first.
async fn bounded<T>(
    server: &McpServer,
    deadline: Instant,
    work: impl Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(server.error(McpFailure::Timeout(server.timeout))),
    }
}

/// `text`, cut to [`MAX_MESSAGE_CHARS`] characters.
fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests;
