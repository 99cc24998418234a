//! One self-contained HTML document: a `<style>` block and the element tree, every element a
//! `<div data-node-id="…">`, text runs in `<span>`s (runs are not nodes and carry no id).

use std::fmt::Write;

use super::build::{Element, TextContent};
use super::classes::{Rule, all_classes};
use super::css::html_escape;

/// The rules every document starts with: no margins, border-box sizing, and a containing block
/// on every node element (class rules that set `position: absolute` come later and win).
pub(crate) const RESET: &str = "html, body { margin: 0; padding: 0; }\n\
[data-node-id] { box-sizing: border-box; position: relative; margin: 0; min-width: 0; min-height: 0; }\n";

/// The style sheet text: the reset and the rules, one declaration a line.
pub(crate) fn sheet(rules: &[Rule]) -> String {
    let mut out = String::from(RESET);
    for rule in rules {
        let _ = writeln!(out, ".{} {{", rule.class);
        for d in &rule.decls {
            let _ = writeln!(out, "  {}: {};", d.prop, d.value);
        }
        out.push_str("}\n");
    }
    out
}

/// The whole document for `root`, titled `title`.
pub(crate) fn document(root: &Element, rules: &[Rule], title: &str, width: f64) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<meta name=\"viewport\" content=\"width={}\">", width.ceil());
    let _ = writeln!(out, "<title>{}</title>", html_escape(title));
    out.push_str("<style>\n");
    out.push_str(&sheet(rules));
    out.push_str("</style>\n</head>\n<body>\n");
    element(&mut out, root, 0);
    out.push_str("</body>\n</html>\n");
    out
}

fn element(out: &mut String, e: &Element, depth: usize) {
    let indent = "  ".repeat(depth);
    let classes = all_classes(e).join(" ");
    let _ = write!(out, "{indent}<div data-node-id=\"{}\"", html_escape(&e.node_id));
    if !classes.is_empty() {
        let _ = write!(out, " class=\"{classes}\"");
    }
    out.push('>');
    if let Some(text) = &e.text {
        runs(out, text);
        out.push_str("</div>\n");
        return;
    }
    if e.children.is_empty() {
        out.push_str("</div>\n");
        return;
    }
    out.push('\n');
    for c in &e.children {
        element(out, c, depth + 1);
    }
    let _ = writeln!(out, "{indent}</div>");
}

fn runs(out: &mut String, text: &TextContent) {
    if text.wrapper {
        out.push_str("<span>");
    }
    for run in &text.runs {
        match &run.class {
            Some(class) => {
                let _ = write!(out, "<span class=\"{class}\">{}</span>", html_escape(&run.text));
            }
            None => out.push_str(&html_escape(&run.text)),
        }
    }
    if text.wrapper {
        out.push_str("</span>");
    }
}
