//! The MCP client against a real MCP server (rmcp's server side, served by axum on loopback,
//! `cogo_e2e::standin::mcp`): listing, calling, and every way a call fails, each with the
//! error a task would report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cogo_e2e::standin::mcp::{Running, TOKEN, args, serve};
use cogo_worker::mcp::{self, McpFailure, McpServer};
use serde_json::{Map, json};

#[tokio::test]
async fn lists_the_tools_with_their_schemas() {
    let running = serve(None).await;
    let mut tools = mcp::list_tools(&server(&running, "/mcp")).await.unwrap();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["add", "fail", "get_node", "greet", "slow"]);

    let add = &tools[0];
    assert_eq!(add.description.as_deref(), Some("Adds two integers"));
    assert_eq!(add.input_schema["properties"]["a"]["type"], "integer");
    assert_eq!(add.input_schema["required"], json!(["a", "b"]));
    let greet = &tools[3];
    assert_eq!(greet.input_schema["properties"]["name"]["minLength"], 1);
    assert!(greet.output_schema.is_some(), "Json<T> declares an output schema");
    assert_eq!(
        running.seen.deletes.load(Ordering::SeqCst),
        1,
        "the session was closed"
    );
}

#[tokio::test]
async fn follows_pages_of_tools_up_to_a_cap() {
    let running = serve(None).await;
    let tools = mcp::list_tools(&server(&running, "/paged")).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["p0t0", "p0t1", "p1t0", "p1t1", "p2t0", "p2t1"]);

    let e = mcp::list_tools(&server(&running, "/endless")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "test": unusable answer: its tool list goes on past 50 pages"#
    );
    assert!(!e.retryable());

    let e = mcp::list_tools(&server(&running, "/looping")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "test": unusable answer: its tool list repeats a page cursor"#
    );
}

#[tokio::test]
async fn calls_add_and_returns_its_text_and_structured_content() {
    let running = serve(None).await;
    let result = mcp::call_tool(&server(&running, "/mcp"), "add", args(json!({"a": 2, "b": 3})))
        .await
        .unwrap();
    assert_eq!(result.content, vec![json!({"type": "text", "text": "5"})]);
    assert_eq!(result.structured_content, Some(json!({"sum": 5})));
    assert!(!result.is_error);
    assert_eq!(running.seen.calls(), ["add"]);
    assert_eq!(
        running.seen.deletes.load(Ordering::SeqCst),
        1,
        "one session, closed"
    );

    let greeting = mcp::call_tool(
        &server(&running, "/mcp"),
        "greet",
        args(json!({"name": "민수", "language": "ko"})),
    )
    .await
    .unwrap();
    assert_eq!(
        greeting.structured_content,
        Some(json!({"text": "안녕하세요, 민수"}))
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_by_the_schema_and_never_reach_the_server() {
    let running = serve(None).await;
    let server = server(&running, "/mcp");
    let cases = [
        (
            "add",
            json!({"a": 1, "b": "2"}),
            "arguments.b: expected an integer, got a string",
        ),
        (
            "add",
            json!({"a": 1}),
            r#"arguments: missing required property "b""#,
        ),
        (
            "add",
            json!({"a": 1.5, "b": 2}),
            "arguments.a: expected an integer, got a number",
        ),
        (
            "greet",
            json!({"name": ""}),
            "arguments.name: must be at least 1 character long",
        ),
        (
            "greet",
            json!({"name": "x", "language": "fr"}),
            r#"must be one of "en", "ko""#,
        ),
    ];
    let count = cases.len();
    for (tool, arguments, fragment) in cases {
        let e = mcp::call_tool(&server, tool, args(arguments)).await.unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with(&format!(
                r#"mcp server "test": bad arguments for tool "{tool}": "#
            )),
            "{message}"
        );
        assert!(message.contains(fragment), "{fragment:?} in {message}");
        assert!(!e.retryable());
    }
    assert!(
        running.seen.calls().is_empty(),
        "no call reached the server: {:?}",
        running.seen.calls()
    );
    assert_eq!(
        running.seen.deletes.load(Ordering::SeqCst),
        count,
        "each session was closed"
    );
}

#[tokio::test]
async fn with_listed_tools_bad_arguments_open_no_connection() {
    let running = serve(None).await;
    let server = server(&running, "/mcp");
    let tools = mcp::list_tools(&server).await.unwrap();
    let before = running.seen.requests.load(Ordering::SeqCst);

    let e = mcp::call_listed_tool(&server, &tools, "add", args(json!({"a": "1", "b": 2})))
        .await
        .unwrap_err();
    assert!(matches!(e.failure, McpFailure::InvalidArguments { .. }), "{e}");
    assert_eq!(
        running.seen.requests.load(Ordering::SeqCst),
        before,
        "no request at all"
    );

    let ok = mcp::call_listed_tool(&server, &tools, "add", args(json!({"a": 40, "b": 2})))
        .await
        .unwrap();
    assert_eq!(ok.structured_content, Some(json!({"sum": 42})));
    assert_eq!(running.seen.calls(), ["add"]);
}

#[tokio::test]
async fn an_unknown_tool_names_the_available_ones() {
    let running = serve(None).await;
    let e = mcp::call_tool(&server(&running, "/mcp"), "subtract", Map::new())
        .await
        .unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with(r#"mcp server "test": has no tool "subtract"; its tools are: "#),
        "{message}"
    );
    for name in ["add", "greet", "fail", "get_node", "slow"] {
        assert!(message.contains(name), "{name} in {message}");
    }
    assert!(!e.retryable());
    assert!(running.seen.calls().is_empty());
}

#[tokio::test]
async fn a_server_that_is_down_is_worth_retrying() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let server = McpServer::new("figma", format!("http://{address}/mcp")).timeout(Duration::from_secs(5));

    let e = mcp::list_tools(&server).await.unwrap_err();
    assert!(matches!(e.failure, McpFailure::Unreachable(_)), "{e:?}");
    assert!(e.retryable());
    let message = e.to_string();
    assert!(
        message.starts_with(r#"mcp server "figma": cannot reach the server: "#),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        !message.contains(&address.to_string()),
        "no URL in the message: {message}"
    );
}

#[tokio::test]
async fn refused_credentials_are_not_retried_and_never_shown() {
    let running = serve(Some(TOKEN)).await;
    let good = server(&running, "/mcp").header("Authorization", format!("Bearer {TOKEN}"));
    let result = mcp::call_tool(&good, "add", args(json!({"a": 1, "b": 1})))
        .await
        .unwrap();
    assert_eq!(result.structured_content, Some(json!({"sum": 2})));

    let wrong = server(&running, "/mcp").header("Authorization", "Bearer figd_wrong-token");
    let missing = server(&running, "/mcp");
    for server in [wrong, missing] {
        let e = mcp::call_tool(&server, "add", args(json!({"a": 1, "b": 1})))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"mcp server "test": the server refused the credentials (HTTP 401); check the headers configured for it"#
        );
        assert!(!e.retryable());
        assert!(!format!("{e:?}").contains("token"), "{e:?}");
    }
    assert_eq!(running.seen.calls(), ["add"]);
}

#[tokio::test]
async fn a_tool_that_reports_an_error_fails_with_its_text() {
    let running = serve(None).await;
    let e = mcp::call_tool(&server(&running, "/mcp"), "fail", Map::new())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "test": tool "fail" failed: the file is locked"#
    );
    assert!(!e.retryable());
    assert_eq!(e.kind(), "tool_failed");
}

#[tokio::test]
async fn a_json_rpc_error_carries_the_servers_code_and_message() {
    let running = serve(None).await;
    let e = mcp::call_tool(
        &server(&running, "/mcp"),
        "get_node",
        args(json!({"nodeId": "9:9"})),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.failure,
        McpFailure::Protocol {
            code: -32602,
            message: "no node 9:9".to_string()
        }
    );
    assert_eq!(
        e.to_string(),
        r#"mcp server "test": the server answered with error -32602: no node 9:9"#
    );
    assert!(!e.retryable());
}

#[tokio::test]
async fn a_slow_call_times_out_and_is_worth_retrying() {
    let running = serve(None).await;
    let server = server(&running, "/mcp").timeout(Duration::from_millis(700));
    let started = Instant::now();
    let e = mcp::call_tool(&server, "slow", Map::new()).await.unwrap_err();
    assert_eq!(e.failure, McpFailure::Timeout(Duration::from_millis(700)));
    assert_eq!(e.to_string(), r#"mcp server "test": no answer within 0.7s"#);
    assert!(e.retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http_errors_are_retried_only_when_the_server_failed() {
    let running = serve(None).await;
    let e = mcp::list_tools(&server(&running, "/broken")).await.unwrap_err();
    assert_eq!(e.failure, McpFailure::HttpStatus { status: 500 });
    assert!(e.retryable());

    let e = mcp::list_tools(&server(&running, "/nowhere")).await.unwrap_err();
    assert_eq!(e.failure, McpFailure::HttpStatus { status: 404 });
    assert!(!e.retryable());
}

#[tokio::test]
async fn a_bad_url_or_header_is_a_config_error() {
    let e = mcp::list_tools(&McpServer::new("figma", "not a url"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"mcp server "figma": bad configuration: the URL is not valid"#),
        "{e}"
    );
    let e = mcp::list_tools(&McpServer::new("figma", "ftp://127.0.0.1/mcp"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be http or https"), "{e}");
    let server = McpServer::new("figma", "http://127.0.0.1:9/mcp").header("Authorization", "Bearer a\nb");
    let e = mcp::list_tools(&server).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "figma": bad configuration: the value of header "Authorization" is not a valid header value"#
    );
    assert!(!e.retryable());
}

/// The server at `path`, named "test", with a 5 s timeout.
fn server(running: &Running, path: &str) -> McpServer {
    McpServer::new("test", running.url(path)).timeout(Duration::from_secs(5))
}
