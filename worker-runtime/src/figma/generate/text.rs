//! TEXT nodes: the TypeStyle to CSS, and `characterStyleOverrides` to runs of `<span>`s.
//!
//! The text box always has an explicit size (set by the placement), `white-space: pre-wrap` and
//! visible overflow, so whichever fonts the browser has, only the glyphs move, never the boxes.

use super::build::{Run, TextContent};
use super::css::{Decl, css_string, decl, num, px};
use super::model::*;
use super::paint::{Ctx, paint_color};

/// The declarations of a text node's base style and its runs.
pub(crate) fn text(cx: &mut Ctx<'_>) -> (Vec<Decl>, Option<TextContent>) {
    let node = cx.node;
    let Some(text) = node.text.as_ref() else {
        return (Vec::new(), None);
    };
    let mut out = style(cx, &text.style, Some(&node.fills));
    out.push(decl("white-space", "pre-wrap"));
    let valign = match text.style.align_v.as_deref() {
        None | Some("TOP") => None,
        Some("CENTER") => Some("center"),
        Some("BOTTOM") => Some("flex-end"),
        Some(other) => {
            cx.warn(format!("unknown textAlignVertical {other:?} ignored"));
            None
        }
    };
    if let Some(v) = valign {
        out.extend([
            decl("display", "flex"),
            decl("flex-direction", "column"),
            decl("justify-content", v),
        ]);
    }
    if text.style.paragraph_spacing.is_some_and(|s| s != 0.0) {
        cx.warn("paragraphSpacing not supported; paragraphs drawn without extra space");
    }
    let runs = runs(cx, text);
    (
        out,
        Some(TextContent {
            runs,
            wrapper: valign.is_some(),
        }),
    )
}

/// A generic family to fall back on, guessed from the family name.
fn generic(family: &str) -> &'static str {
    let f = family.to_ascii_lowercase();
    if f.contains("mono") || f.contains("code") || f.contains("courier") {
        "monospace"
    } else if f.contains("serif") && !f.contains("sans") {
        "serif"
    } else {
        "sans-serif"
    }
}

/// CSS for the fields a style sets. `fills` is the node's fills for the base style; overrides
/// carry their own.
fn style(cx: &mut Ctx<'_>, s: &TypeStyle, fills: Option<&Vec<Paint>>) -> Vec<Decl> {
    let mut out = Vec::new();
    if let Some(f) = &s.family {
        out.push(decl("font-family", format!("{}, {}", css_string(f), generic(f))));
    }
    if let Some(w) = s.weight {
        out.push(decl("font-weight", num(w)));
    }
    if let Some(size) = s.size {
        out.push(decl("font-size", px(size)));
    }
    if let Some(italic) = s.italic {
        out.push(decl("font-style", if italic { "italic" } else { "normal" }));
    }
    if let Some(lh) = s.line_height_px {
        out.push(decl("line-height", px(lh)));
    }
    if let Some(ls) = s.letter_spacing.filter(|l| *l != 0.0) {
        out.push(decl("letter-spacing", px(ls)));
    }
    match s.align_h.as_deref() {
        None | Some("LEFT") => {}
        Some("CENTER") => out.push(decl("text-align", "center")),
        Some("RIGHT") => out.push(decl("text-align", "right")),
        Some("JUSTIFIED") => out.push(decl("text-align", "justify")),
        Some(other) => cx.warn(format!("unknown textAlignHorizontal {other:?} ignored")),
    }
    match s.text_case.as_deref() {
        None | Some("ORIGINAL") => {}
        Some("UPPER") => out.push(decl("text-transform", "uppercase")),
        Some("LOWER") => out.push(decl("text-transform", "lowercase")),
        Some("TITLE") => out.push(decl("text-transform", "capitalize")),
        Some("SMALL_CAPS") => out.push(decl("font-variant-caps", "small-caps")),
        Some("SMALL_CAPS_FORCED") => out.push(decl("font-variant-caps", "all-small-caps")),
        Some(other) => cx.warn(format!("textCase {other:?} not supported; drawn as typed")),
    }
    match s.decoration.as_deref() {
        None | Some("NONE") => {}
        Some("UNDERLINE") => out.push(decl("text-decoration", "underline")),
        Some("STRIKETHROUGH") => out.push(decl("text-decoration", "line-through")),
        Some(other) => cx.warn(format!("textDecoration {other:?} not supported; left out")),
    }
    if let Some(fills) = fills.or(s.fills.as_ref()) {
        if fills.len() > 1 {
            cx.warn(format!("{} text fills; only the top one drawn", fills.len()));
        }
        match fills.last() {
            Some(top) => {
                let c = paint_color(cx, top, "text fill");
                out.push(decl("color", c));
            }
            None => out.push(decl("color", "transparent")),
        }
    }
    out
}

/// Splits the characters into runs of one style; run 0 (the base style) has no declarations.
fn runs(cx: &mut Ctx<'_>, text: &Text) -> Vec<Run> {
    let mut runs: Vec<(u32, String)> = Vec::new();
    let mut unit = 0usize;
    for ch in text.characters.chars() {
        let id = text.overrides.get(unit).copied().unwrap_or(0);
        unit += ch.len_utf16();
        match runs.last_mut() {
            Some((last, s)) if *last == id => s.push(ch),
            _ => runs.push((id, ch.to_string())),
        }
    }
    let mut missing = Vec::new();
    let out = runs
        .into_iter()
        .map(|(id, text_run)| {
            let decls = match (id, text.table.get(&id)) {
                (0, _) => Vec::new(),
                (_, Some(s)) => style(cx, s, None),
                (_, None) => {
                    if !missing.contains(&id) {
                        missing.push(id);
                    }
                    Vec::new()
                }
            };
            Run {
                text: text_run,
                decls,
                class: None,
            }
        })
        .collect();
    for id in missing {
        cx.warn(format!(
            "style override {id} is not in styleOverrideTable; drawn in the base style"
        ));
    }
    out
}
