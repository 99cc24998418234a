//! `figma.file`, `figma.components` and `figma.generate_ui`: Figma designs read through the
//! Figma REST API on a FigmaMCP worker.

use serde::{Deserialize, Serialize};

/// The task type reading a file's tree.
pub const FILE: &str = "figma.file";
/// The task type listing a file's components, component sets and styles.
pub const COMPONENTS: &str = "figma.components";
/// The task type turning a frame into code.
pub const GENERATE_UI: &str = "figma.generate_ui";

/// Input of `figma.file`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileInput {
    /// The file's key, from its address (`figma.com/design/<fileKey>/...`).
    pub file_key: String,
    /// How deep the tree goes: 1 for pages only, 2 for their top-level frames, and so on
    /// (default: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub depth: Option<u32>,
}

/// Input of `figma.components`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentsInput {
    /// The file's key.
    pub file_key: String,
}

/// Input of `figma.generate_ui`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateUiInput {
    /// The file's key.
    pub file_key: String,
    /// The frame (or component, instance, group or section) to turn into code, as Figma
    /// writes node ids (`12:34`; `12-34` from an address is read the same).
    pub node_id: String,
    /// What to write (default html).
    #[serde(default)]
    pub framework: Framework,
}

/// What `figma.generate_ui` writes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    /// One HTML document with its CSS.
    #[default]
    Html,
    /// A React function component (TSX) with its CSS.
    React,
}

/// Result of `figma.generate_ui`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateUiResult {
    /// The code.
    pub code: String,
    /// What the design has that the code does not show as Figma does, one line each, naming
    /// the node.
    pub warnings: Vec<String>,
}

/// Figma writes node ids `12:34`; addresses carry them as `12-34`.
pub fn normalize_node_id(id: &str) -> String {
    if !id.contains(':') && id.contains('-') {
        id.replace('-', ":")
    } else {
        id.to_string()
    }
}

/// Why a file key or node id cannot be sent to Figma, if it cannot.
pub fn check_key(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | ';' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {value:?} is not a Figma key (letters, digits and : - ; _ only)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inputs_read_as_documented() {
        let g: GenerateUiInput = serde_json::from_value(json!({"fileKey": "abc", "nodeId": "1-2"})).unwrap();
        assert_eq!(g.framework, Framework::Html);
        assert_eq!(normalize_node_id(&g.node_id), "1:2");
        assert_eq!(normalize_node_id("I1:2;3:4"), "I1:2;3:4");
        for (input, fragment) in [
            (
                json!({"fileKey": "abc", "nodeId": "1:2", "framework": "vue"}),
                "unknown variant `vue`",
            ),
            (json!({"fileKey": "abc", "node": "1:2"}), "unknown field `node`"),
        ] {
            let e = serde_json::from_value::<GenerateUiInput>(input.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(fragment), "{input}: {e}");
        }
        assert!(
            check_key("fileKey", "a/../b")
                .unwrap_err()
                .contains("not a Figma key")
        );
        assert!(check_key("fileKey", "").is_err());
        assert!(check_key("nodeId", "12:34").is_ok());
    }
}
