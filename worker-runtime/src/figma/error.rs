//! The one error type of the crate: every way a Figma response or a request can be refused,
//! each with a stable `code()` and a message that names the offending field path.

use std::fmt;

/// Why a Figma response could not be turned into a clean tree or into code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FigmaError {
    /// A required field is absent (or `null`). `path` is JS-like: `document.children[0].name`.
    MissingField {
        /// Where the field should have been.
        path: String,
    },
    /// A field has the wrong JSON type.
    WrongType {
        /// Where the field is.
        path: String,
        /// What the API documents, e.g. "a number".
        expected: &'static str,
        /// What was found, e.g. "a string".
        found: &'static str,
    },
    /// A field has the right type but a value that cannot be used (e.g. a negative width).
    InvalidValue {
        /// Where the field is.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The requested node is not in the `nodes` map of the response (or is `null` there).
    NodeNotFound {
        /// The id that was asked for.
        node_id: String,
        /// The ids the response does hold, sorted.
        available: Vec<String>,
    },
    /// The requested node cannot be the root of generated UI (e.g. a TEXT or a VECTOR).
    UnsupportedRoot {
        /// The node's id.
        node_id: String,
        /// The node's Figma type.
        node_type: String,
    },
    /// `depth` must be at least 1 (1 = pages only).
    InvalidDepth,
}

/// Result with the crate's error.
pub type Result<T, E = FigmaError> = std::result::Result<T, E>;

impl FigmaError {
    /// A stable, machine-readable code for the error kind (for task results and metrics).
    pub fn code(&self) -> &'static str {
        match self {
            FigmaError::MissingField { .. } => "missing_field",
            FigmaError::WrongType { .. } => "wrong_type",
            FigmaError::InvalidValue { .. } => "invalid_value",
            FigmaError::NodeNotFound { .. } => "node_not_found",
            FigmaError::UnsupportedRoot { .. } => "unsupported_root",
            FigmaError::InvalidDepth => "invalid_depth",
        }
    }
}

impl fmt::Display for FigmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FigmaError::MissingField { path } => write!(f, "missing field `{path}` in the Figma response"),
            FigmaError::WrongType {
                path,
                expected,
                found,
            } => {
                write!(f, "field `{path}` should be {expected} but is {found}")
            }
            FigmaError::InvalidValue { path, message } => write!(f, "field `{path}`: {message}"),
            FigmaError::NodeNotFound { node_id, available } => {
                write!(f, "node {node_id:?} is not in the response; it holds ")?;
                if available.is_empty() {
                    write!(f, "no nodes")
                } else {
                    write!(f, "{}", available.join(", "))
                }
            }
            FigmaError::UnsupportedRoot { node_id, node_type } => write!(
                f,
                "node {node_id:?} is a {node_type}; UI can be generated only from a FRAME, COMPONENT, \
                 COMPONENT_SET, INSTANCE, GROUP or SECTION"
            ),
            FigmaError::InvalidDepth => write!(f, "depth must be at least 1 (1 = pages only)"),
        }
    }
}

impl std::error::Error for FigmaError {}
