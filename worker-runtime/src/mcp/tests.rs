//! What the caller sees before any request: finding the tool, checking its arguments, and
//! the errors' messages and retry advice.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;

fn figma() -> McpServer {
    McpServer::new("figma", "http://127.0.0.1:3845/mcp").header("Authorization", "Bearer s3cret-token")
}

fn tool(name: &str, schema: Value) -> ToolInfo {
    ToolInfo {
        name: name.to_string(),
        title: None,
        description: None,
        input_schema: schema,
        output_schema: None,
        annotations: None,
    }
}

fn args(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("arguments are an object"),
    }
}

fn tools() -> Vec<ToolInfo> {
    vec![
        tool(
            "get_code",
            json!({"type": "object", "properties": {"nodeId": {"type": "string"}}, "required": ["nodeId"]}),
        ),
        tool("get_image", json!({"type": "object"})),
    ]
}

#[test]
fn a_known_tool_with_good_arguments_passes() {
    let tools = tools();
    let found = check_call(&figma(), &tools, "get_code", &args(json!({"nodeId": "1:2"}))).unwrap();
    assert_eq!(found.name, "get_code");
}

#[test]
fn an_unknown_tool_lists_the_available_names() {
    let e = check_call(&figma(), &tools(), "get_cod", &Map::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "figma": has no tool "get_cod"; its tools are: get_code, get_image"#
    );
    assert!(!e.retryable());
    assert_eq!(e.kind(), "unknown_tool");

    let none = check_call(&figma(), &[], "x", &Map::new()).unwrap_err();
    assert!(none.to_string().ends_with("its tools are: (none)"), "{none}");
}

#[test]
fn bad_arguments_carry_the_validators_message() {
    let e = check_call(&figma(), &tools(), "get_code", &args(json!({"nodeId": 12}))).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"mcp server "figma": bad arguments for tool "get_code": arguments.nodeId: expected a string, got a number"#
    );
    assert!(!e.retryable());
    assert!(matches!(e.failure, McpFailure::InvalidArguments { .. }));
}

#[test]
fn errors_say_whether_to_retry() {
    let cases = [
        (
            McpFailure::Unreachable("Connection refused (os error 111)".into()),
            true,
        ),
        (McpFailure::Timeout(Duration::from_secs(5)), true),
        (McpFailure::HttpStatus { status: 503 }, true),
        (McpFailure::HttpStatus { status: 429 }, true),
        (McpFailure::HttpStatus { status: 404 }, false),
        (McpFailure::Credentials { status: 401 }, false),
        (
            McpFailure::Protocol {
                code: -32602,
                message: "bad".into(),
            },
            false,
        ),
        (McpFailure::Malformed("not MCP".into()), false),
        (McpFailure::Config("bad URL".into()), false),
        (
            McpFailure::ToolFailed {
                tool: "t".into(),
                message: "no".into(),
            },
            false,
        ),
    ];
    for (failure, retryable) in cases {
        let e = figma().error(failure);
        assert_eq!(e.retryable(), retryable, "{e}");
        assert!(e.to_string().starts_with(r#"mcp server "figma": "#), "{e}");
    }
}

#[test]
fn messages_read_well() {
    let e = figma().error(McpFailure::Credentials { status: 403 });
    assert_eq!(
        e.to_string(),
        r#"mcp server "figma": the server refused the credentials (HTTP 403); check the headers configured for it"#
    );
    let e = figma().error(McpFailure::Protocol {
        code: -32601,
        message: "method not found".into(),
    });
    assert_eq!(
        e.to_string(),
        r#"mcp server "figma": the server answered with error -32601: method not found"#
    );
    let e = figma().error(McpFailure::Timeout(Duration::from_millis(1500)));
    assert_eq!(e.to_string(), r#"mcp server "figma": no answer within 1.5s"#);
}

#[test]
fn debug_never_shows_header_values() {
    let shown = format!("{:?}", figma());
    assert!(!shown.contains("s3cret-token"), "{shown}");
    assert!(shown.contains("Authorization: <redacted>"), "{shown}");

    let url_secrets = McpServer::new("figma", "https://user:pw@mcp.example.com/mcp?token=abc");
    let shown = format!("{url_secrets:?}");
    assert!(
        shown.contains(r#"url: "https://redacted@mcp.example.com/mcp?redacted""#),
        "{shown}"
    );
}

#[test]
fn tool_info_is_camel_case_json() {
    let info = ToolInfo {
        output_schema: Some(json!({"type": "object"})),
        annotations: Some(ToolAnnotations {
            read_only_hint: Some(true),
            ..ToolAnnotations::default()
        }),
        ..tool("get_code", json!({"type": "object"}))
    };
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        json!({
            "name": "get_code",
            "inputSchema": {"type": "object"},
            "outputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": true},
        })
    );
    let result = CallResult {
        content: vec![json!({"type": "text", "text": "3"})],
        structured_content: Some(json!({"sum": 3})),
        is_error: false,
    };
    assert_eq!(
        serde_json::to_value(&result).unwrap(),
        json!({"content": [{"type": "text", "text": "3"}], "structuredContent": {"sum": 3}, "isError": false})
    );
}
