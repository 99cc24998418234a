//! The task catalogue: the input and result of every task type whose handler lives outside
//! the `cogo.*` built-ins, as Rust types. Inputs refuse unknown fields, so a misspelt field
//! fails the task at once with a message naming it.

pub mod python;

/// How a file's `content` is written: as UTF-8 text or base64.
#[derive(
    serde::Serialize, serde::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The content is the file's text.
    #[default]
    Utf8,
    /// The content is the file's bytes in standard base64.
    Base64,
}
