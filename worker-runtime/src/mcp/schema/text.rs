//! How problems are worded: kinds of values, paths, and values cut short.

use serde_json::Value;

use super::Problem;

/// How many `enum` values a message lists.
const LISTED_VALUES: usize = 10;
/// How many characters of a value or key a message shows.
const SHOWN_CHARS: usize = 60;
/// How many failed alternatives an `anyOf`/`oneOf` message describes.
const LISTED_ALTERNATIVES: usize = 3;
/// How many characters of one failed alternative such a message shows (nested combinators
/// would otherwise multiply the length at each level).
const ALTERNATIVE_CHARS: usize = 160;

/// A type name with its article, as messages use it.
pub(super) fn article(name: &str) -> &'static str {
    match name {
        "null" => "null",
        "boolean" => "a boolean",
        "string" => "a string",
        "array" => "an array",
        "object" => "an object",
        "number" => "a number",
        "integer" => "an integer",
        _ => "a value of another type",
    }
}

/// What kind of JSON value this is, with its article.
pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn plural(n: usize, word: &str) -> String {
    match (n, word) {
        (1, _) => word.to_string(),
        (_, "property") => "properties".to_string(),
        _ => format!("{word}s"),
    }
}

pub(super) fn push(out: &mut Vec<Problem>, path: &str, message: String) {
    out.push(Problem {
        path: path.to_string(),
        message,
    });
}

/// The path of property `key` under `parent`: `parent.key`, or `parent["odd key"]`.
pub(super) fn property_path(parent: &str, key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-');
    if identifier && key.len() <= SHOWN_CHARS {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", show_str(key))
    }
}

/// A JSON value as a message shows it: compact, and cut short when long.
pub(super) fn show(value: &Value) -> String {
    shorten(value.to_string())
}

/// A string as a message quotes it.
pub(super) fn show_str(text: &str) -> String {
    shorten(Value::String(text.to_string()).to_string())
}

fn shorten(text: String) -> String {
    cut(text, SHOWN_CHARS)
}

/// `text`, cut to `max` characters and marked when cut.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut short: String = text.chars().take(max).collect();
    short.push('…');
    short
}

/// `"c", "f"`, or the first few of a long list and how many there are.
pub(super) fn list_values(values: &[Value]) -> String {
    let mut listed: Vec<String> = values.iter().take(LISTED_VALUES).map(show).collect();
    if values.len() > LISTED_VALUES {
        listed.push(format!("… ({} in all)", values.len()));
    }
    listed.join(", ")
}

/// Property names as a message lists them.
pub(super) fn list_names(names: &[String]) -> String {
    let mut listed: Vec<String> = names.iter().take(LISTED_VALUES).map(|n| show_str(n)).collect();
    if names.len() > LISTED_VALUES {
        listed.push(format!("… ({} in all)", names.len()));
    }
    listed.join(", ")
}

/// The first problems of failed alternatives, relative to the combinator's path.
pub(super) fn alternatives(path: &str, failures: &[Problem]) -> String {
    let mut parts: Vec<String> = failures
        .iter()
        .take(LISTED_ALTERNATIVES)
        .map(|p| {
            if p.path == path {
                p.message.clone()
            } else {
                p.to_string()
            }
        })
        .map(|text| cut(text, ALTERNATIVE_CHARS))
        .collect();
    if failures.len() > LISTED_ALTERNATIVES {
        parts.push(format!("{} more", failures.len() - LISTED_ALTERNATIVES));
    }
    parts.join("; or ")
}
