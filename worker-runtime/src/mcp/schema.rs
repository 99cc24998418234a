//! A small JSON Schema validator for the schemas MCP servers give their tools' inputs.
//!
//! It checks a tool call's arguments before they leave the worker, so a model that got them
//! wrong reads *why* (`arguments.unit: must be one of "c", "f"`) instead of a server's opaque
//! error, and a malformed call never reaches the server.
//!
//! Supported (draft 2020-12 and draft-07 spellings): boolean schemas; `type` (a name or a list;
//! `integer` accepts `3.0`); `enum`, `const`; `minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum` (number forms), `multipleOf`; `minLength`, `maxLength` (in characters),
//! `pattern` (Rust `regex` syntax: a pattern it cannot compile, such as one with a look-ahead,
//! is not checked); `items`, `prefixItems`, `additionalItems`, `contains`, `minItems`, `maxItems`,
//! `uniqueItems`; `properties`, `patternProperties`, `additionalProperties`, `required`,
//! `minProperties`, `maxProperties`; `allOf`, `anyOf`, `oneOf`, `not`; `$ref` to a fragment of
//! the same document (`#`, `#/$defs/…`, `#/definitions/…`).
//!
//! Everything else is ignored and accepted: `format`, unknown keywords, unknown type names,
//! `$ref`s to other documents or to nothing (the server still validates what it receives).
//!
//! The work is capped: at most [`MAX_DEPTH`] nested schemas (which also ends `$ref` loops),
//! [`MAX_STEPS`] checks in all and [`MAX_PATTERNS`] distinct patterns. Past a cap the arguments
//! are refused with a problem that says so: a schema too large to check is not trusted.

mod keywords;
#[cfg(test)]
mod tests;
mod text;
mod validator;

use std::fmt;

use serde_json::Value;

use self::validator::{Abort, Validator};

/// How many problems an error reports at most.
pub const MAX_PROBLEMS: usize = 5;
/// How deeply schemas may nest (through properties, items, combinators and `$ref`s).
pub const MAX_DEPTH: usize = 64;
/// How many checks one call may make: schema nodes visited, values compared, keys matched.
pub const MAX_STEPS: usize = 100_000;
/// How many distinct `pattern`s and `patternProperties` one call compiles.
pub const MAX_PATTERNS: usize = 64;
/// The name of the checked value in paths.
pub const ROOT: &str = "arguments";

/// One way the value breaks the schema, at a path such as `arguments.items[2].name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where, from [`ROOT`]: `.name` for a property, `[2]` for an item, `["odd key"]` for a
    /// property that is not an identifier.
    pub path: String,
    /// What is wrong, for a human or a model to fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a value does not satisfy a schema: the first few problems, in the order they were found
/// (an object's properties in the order its map keeps them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    /// At most [`MAX_PROBLEMS`] problems, never empty.
    pub problems: Vec<Problem>,
    /// Whether more problems were found than are listed.
    pub truncated: bool,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        if self.truncated {
            f.write_str("; and more")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaError {}

/// Checks `value` against `schema`; problems are named from [`ROOT`] (`arguments`).
pub fn check(schema: &Value, value: &Value) -> Result<(), SchemaError> {
    check_named(schema, value, ROOT)
}

/// Checks `value` against `schema`, naming the value `root` in the problems' paths.
pub fn check_named(schema: &Value, value: &Value, root: &str) -> Result<(), SchemaError> {
    let mut validator = Validator::new(schema);
    let mut problems = Vec::new();
    if let Err(Abort(limit)) = validator.validate(schema, value, root, 0, &mut problems, MAX_PROBLEMS + 1) {
        problems.truncate(MAX_PROBLEMS - 1);
        problems.push(limit);
    }
    if problems.is_empty() {
        return Ok(());
    }
    let truncated = problems.len() > MAX_PROBLEMS;
    problems.truncate(MAX_PROBLEMS);
    Err(SchemaError { problems, truncated })
}
