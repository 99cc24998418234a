//! The small vocabulary every mapping shares: declarations, number and colour formats, escaping
//! for CSS strings, HTML and JS, and deterministic names derived from layer names.

use std::collections::HashSet;
use std::fmt::Write;

use super::model::Color;
use crate::figma::read::round2;

/// One CSS declaration, `prop: value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Decl {
    pub prop: &'static str,
    pub value: String,
}

pub(crate) fn decl(prop: &'static str, value: impl Into<String>) -> Decl {
    Decl {
        prop,
        value: value.into(),
    }
}

/// A number rounded to 0.01 without trailing zeros: `12`, `12.5`, `-0.33`.
pub(crate) fn num(v: f64) -> String {
    let r = round2(v);
    let s = format!("{r:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A length in px, `0` for zero.
pub(crate) fn px(v: f64) -> String {
    match num(v).as_str() {
        "0" => "0".to_string(),
        n => format!("{n}px"),
    }
}

/// A percentage with four decimals, for SCALE constraints and gradient stops.
pub(crate) fn pct(v: f64) -> String {
    let r = (v * 10_000.0).round() / 10_000.0;
    let s = format!("{:.4}", if r == 0.0 { 0.0 } else { r });
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// `#rrggbb` when opaque, `rgba(r, g, b, a)` otherwise; `opacity` multiplies the alpha.
pub(crate) fn color(c: Color, opacity: f64) -> String {
    let ch = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    let a = (c.a * opacity).clamp(0.0, 1.0);
    let a = (a * 1000.0).round() / 1000.0;
    if a >= 1.0 {
        format!("#{:02x}{:02x}{:02x}", ch(c.r), ch(c.g), ch(c.b))
    } else {
        format!("rgba({}, {}, {}, {})", ch(c.r), ch(c.g), ch(c.b), num_fine(a))
    }
}

fn num_fine(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A double-quoted CSS string. Quotes, backslashes, control characters and `<`/`>` are written as
/// CSS escapes, so no value can close the `<style>` element or the string.
pub(crate) fn css_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' | '<' | '>' | '&' => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\{:x} ", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text and attribute values for HTML: `& < > " '` become entities.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JS string literal (JSON's escaping, plus `<` so the text is inert anywhere it is pasted).
pub(crate) fn js_string(s: &str) -> String {
    let json = serde_json::Value::String(s.to_string()).to_string();
    json.replace('<', "\\u003c")
}

/// The words of a layer name: ASCII letters and digits, split on everything else and on
/// lower-to-upper case changes ("signInButton" → sign, in, button).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            cur.push(c.to_ascii_lowercase());
        } else {
            prev_lower = false;
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// A CSS class base from a layer name: lowercase words joined by `-`, at most 40 characters,
/// never empty and never starting with a digit.
pub(crate) fn kebab(name: &str) -> String {
    let mut out = String::new();
    for w in words(name) {
        if out.len() + w.len() > 40 {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&w);
    }
    match out.chars().next() {
        None => "layer".to_string(),
        Some(c) if c.is_ascii_digit() => format!("n{out}"),
        Some(_) => out,
    }
}

/// A React component name from a layer or component name: PascalCase, never empty, never
/// starting with a digit.
pub(crate) fn pascal(name: &str) -> String {
    let mut out = String::new();
    for w in words(name) {
        if out.len() + w.len() > 40 {
            break;
        }
        let mut chars = w.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    match out.chars().next() {
        None => "Layer".to_string(),
        Some(c) if c.is_ascii_digit() => format!("N{out}"),
        Some(_) => out,
    }
}

/// Hands out unique names in call order: `card`, `card-2`, `card-3`...
#[derive(Default)]
pub(crate) struct Namer {
    used: HashSet<String>,
}

impl Namer {
    /// A namer that never hands out `reserved`.
    pub(crate) fn with_reserved(reserved: &[&str]) -> Namer {
        Namer {
            used: reserved.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `base` if unused, else `base-N` (or `baseN` when `dash` is false) for the first free N.
    pub(crate) fn unique(&mut self, base: &str, dash: bool) -> String {
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        (2..)
            .map(|n| {
                if dash {
                    format!("{base}-{n}")
                } else {
                    format!("{base}{n}")
                }
            })
            .find(|candidate| self.used.insert(candidate.clone()))
            .unwrap_or_default()
    }
}
