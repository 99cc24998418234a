//! `mcp.tools` and `mcp.call`: tools of the MCP servers a FigmaMCP worker's CogoWorker names,
//! reached over MCP's streamable HTTP transport.

use serde::{Deserialize, Serialize};

/// The task type listing a server's tools.
pub const TOOLS: &str = "mcp.tools";
/// The task type calling one tool.
pub const CALL: &str = "mcp.call";

/// Input of `mcp.tools`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolsInput {
    /// The server's name in the CogoWorker's `mcpServers`.
    pub server: String,
}

/// Input of `mcp.call`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallInput {
    /// The server's name in the CogoWorker's `mcpServers`.
    pub server: String,
    /// The tool's name.
    pub tool: String,
    /// The tool's arguments, checked against its input schema before the call.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_must_be_an_object() {
        let ok: CallInput = serde_json::from_value(json!({"server": "s", "tool": "t"})).unwrap();
        assert!(ok.arguments.is_empty());
        let e = serde_json::from_value::<CallInput>(json!({"server": "s", "tool": "t", "arguments": [1]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type: sequence, expected a map"), "{e}");
        let e = serde_json::from_value::<ToolsInput>(json!({"server": "s", "tool": "t"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `tool`"), "{e}");
    }
}
