//! Path-aware reading of the Figma JSON: every accessor names the exact field when it refuses.
//!
//! A [`Path`] is a linked list of the keys and indexes from the root of the response, kept on
//! the stack; it is only turned into text when an error is built, so reading stays linear.

use std::fmt;

use serde_json::{Map, Value};

use crate::figma::error::{FigmaError, Result};

/// Where a value sits in the response: `nodes["1:2"].document.children[3].fills[0]`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Path<'a> {
    /// The top of the response.
    Root,
    /// A field of the object at the parent path.
    Key(&'a Path<'a>, &'a str),
    /// An element of the array at the parent path.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    /// The path of field `key` below this one.
    pub(crate) fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    /// The path of element `i` below this one.
    pub(crate) fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                write!(f, "{parent}")?;
                match (matches!(parent, Path::Root), is_identifier(key)) {
                    (true, true) => write!(f, "{key}"),
                    (false, true) => write!(f, ".{key}"),
                    (_, false) => write!(f, "[{key:?}]"),
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// The JSON type of a value, as the error messages name it.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The path as error messages print it; the top of the response itself is `<root>`.
fn shown(path: Path<'_>) -> String {
    match path {
        Path::Root => "<root>".to_string(),
        p => p.to_string(),
    }
}

pub(crate) fn missing(path: Path<'_>) -> FigmaError {
    FigmaError::MissingField { path: shown(path) }
}

pub(crate) fn wrong(path: Path<'_>, expected: &'static str, found: &Value) -> FigmaError {
    FigmaError::WrongType {
        path: shown(path),
        expected,
        found: kind_of(found),
    }
}

pub(crate) fn invalid(path: Path<'_>, message: impl Into<String>) -> FigmaError {
    FigmaError::InvalidValue {
        path: shown(path),
        message: message.into(),
    }
}

/// The value itself as an object.
pub(crate) fn as_object<'v>(v: &'v Value, path: Path<'_>) -> Result<&'v Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Err(missing(path)),
        other => Err(wrong(path, "an object", other)),
    }
}

/// An object's field; `null` counts as absent, as the Figma API uses both.
pub(crate) fn get<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn req<'v>(obj: &'v Map<String, Value>, key: &str, path: Path<'_>) -> Result<&'v Value> {
    get(obj, key).ok_or_else(|| missing(path.key(key)))
}

pub(crate) fn opt_str<'v>(obj: &'v Map<String, Value>, key: &str, path: Path<'_>) -> Result<Option<&'v str>> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(path.key(key), "a string", other)),
    }
}

pub(crate) fn req_str<'v>(obj: &'v Map<String, Value>, key: &str, path: Path<'_>) -> Result<&'v str> {
    opt_str(obj, key, path)?.ok_or_else(|| missing(path.key(key)))
}

pub(crate) fn opt_f64(obj: &Map<String, Value>, key: &str, path: Path<'_>) -> Result<Option<f64>> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(wrong(path.key(key), "a number", other)),
    }
}

pub(crate) fn req_f64(obj: &Map<String, Value>, key: &str, path: Path<'_>) -> Result<f64> {
    opt_f64(obj, key, path)?.ok_or_else(|| missing(path.key(key)))
}

pub(crate) fn opt_bool(obj: &Map<String, Value>, key: &str, path: Path<'_>) -> Result<Option<bool>> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong(path.key(key), "a boolean", other)),
    }
}

/// An optional array field; absent reads as empty.
pub(crate) fn opt_array<'v>(obj: &'v Map<String, Value>, key: &str, path: Path<'_>) -> Result<&'v [Value]> {
    match get(obj, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(wrong(path.key(key), "an array", other)),
    }
}

/// An optional object field.
pub(crate) fn opt_object<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    path: Path<'_>,
) -> Result<Option<&'v Map<String, Value>>> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(wrong(path.key(key), "an object", other)),
    }
}

/// `visible` defaults to true in the API.
pub(crate) fn is_visible(obj: &Map<String, Value>, path: Path<'_>) -> Result<bool> {
    Ok(opt_bool(obj, "visible", path)?.unwrap_or(true))
}

/// An `absoluteBoundingBox`-shaped rectangle `{x, y, width, height}`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

pub(crate) fn rect(obj: &Map<String, Value>, key: &str, path: Path<'_>) -> Result<Rect> {
    let p = path.key(key);
    let r = as_object(req(obj, key, path)?, p)?;
    let rect = Rect {
        x: req_f64(r, "x", p)?,
        y: req_f64(r, "y", p)?,
        w: req_f64(r, "width", p)?,
        h: req_f64(r, "height", p)?,
    };
    if rect.w < 0.0 || rect.h < 0.0 {
        return Err(invalid(p, format!("negative size {}x{}", rect.w, rect.h)));
    }
    Ok(rect)
}

/// Rounds to 0.01, the precision of the clean tree and of the generated CSS; never yields -0.
pub(crate) fn round2(v: f64) -> f64 {
    let r = (v * 100.0).round() / 100.0;
    if r == 0.0 { 0.0 } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_javascript() {
        let root = Path::Root;
        let nodes = root.key("nodes");
        let id = nodes.key("1:2");
        let doc = id.key("document");
        let kids = doc.key("children");
        let third = kids.index(3);
        assert_eq!(
            third.key("fills").to_string(),
            r#"nodes["1:2"].document.children[3].fills"#
        );
    }
}
