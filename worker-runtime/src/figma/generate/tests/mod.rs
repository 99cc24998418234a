//! Tests of `generate_ui`, one file per concern. Nodes are built with small fluent builders;
//! assertions read the computed style of one element out of the generated HTML.

mod errors;
mod fixtures;
mod instances;
mod layout;
mod paint;
mod safety;
mod text;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::figma::{Framework, Generated, generate_ui};

/// Expected CSS declarations in a table of cases.
pub(crate) type Decls = &'static [(&'static str, &'static str)];

/// A node under construction.
#[derive(Clone, Debug)]
pub(crate) struct N(Map<String, Value>);

pub(crate) fn node(kind: &str, id: &str, name: &str) -> N {
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("name".into(), name.into());
    m.insert("type".into(), kind.into());
    m.insert(
        "absoluteBoundingBox".into(),
        json!({"x": 0, "y": 0, "width": 100, "height": 100}),
    );
    N(m)
}

pub(crate) fn frame(id: &str, name: &str) -> N {
    node("FRAME", id, name)
}

pub(crate) fn rect(id: &str, name: &str) -> N {
    node("RECTANGLE", id, name)
}

pub(crate) fn text(id: &str, name: &str, chars: &str) -> N {
    node("TEXT", id, name)
        .set("characters", json!(chars))
        .set(
            "style",
            json!({"fontFamily": "Inter", "fontWeight": 400, "fontSize": 16, "lineHeightPx": 24}),
        )
        .set("fills", json!([solid(0.0, 0.0, 0.0)]))
}

pub(crate) fn solid(r: f64, g: f64, b: f64) -> Value {
    json!({"type": "SOLID", "color": {"r": r, "g": g, "b": b, "a": 1.0}})
}

impl N {
    pub(crate) fn set(mut self, key: &str, value: Value) -> N {
        self.0.insert(key.into(), value);
        self
    }

    pub(crate) fn at(self, x: f64, y: f64, w: f64, h: f64) -> N {
        self.set(
            "absoluteBoundingBox",
            json!({"x": x, "y": y, "width": w, "height": h}),
        )
    }

    /// Auto layout with `mode` (HORIZONTAL / VERTICAL) and `gap`.
    pub(crate) fn auto(self, mode: &str, gap: f64) -> N {
        self.set("layoutMode", json!(mode)).set("itemSpacing", json!(gap))
    }

    pub(crate) fn pad(self, t: f64, r: f64, b: f64, l: f64) -> N {
        self.set("paddingTop", json!(t))
            .set("paddingRight", json!(r))
            .set("paddingBottom", json!(b))
            .set("paddingLeft", json!(l))
    }

    pub(crate) fn sizing(self, h: &str, v: &str) -> N {
        self.set("layoutSizingHorizontal", json!(h))
            .set("layoutSizingVertical", json!(v))
    }

    pub(crate) fn constraints(self, h: &str, v: &str) -> N {
        self.set("constraints", json!({"horizontal": h, "vertical": v}))
    }

    pub(crate) fn fills(self, fills: Value) -> N {
        self.set("fills", fills)
    }

    pub(crate) fn child(mut self, c: N) -> N {
        let kids = self.0.entry("children").or_insert_with(|| json!([]));
        if let Value::Array(a) = kids {
            a.push(Value::Object(c.0));
        }
        self
    }

    pub(crate) fn value(self) -> Value {
        Value::Object(self.0)
    }
}

/// A nodes response holding `root`, with `components` as its components map.
pub(crate) fn response_with(root: N, components: Value) -> Value {
    let id = root.0["id"].as_str().unwrap_or_default().to_string();
    json!({"name": "Test file", "nodes": {id: {"document": root.value(), "components": components,
           "componentSets": {}, "styles": {}}}})
}

pub(crate) fn response(root: N) -> Value {
    response_with(root, json!({}))
}

fn generate(root: N, framework: Framework) -> Generated {
    let id = root.0["id"].as_str().unwrap_or_default().to_string();
    match generate_ui(&response(root), &id, framework) {
        Ok(g) => g,
        Err(e) => panic!("generation failed: {e}"),
    }
}

pub(crate) fn html(root: N) -> Generated {
    generate(root, Framework::Html)
}

pub(crate) fn react(root: N) -> Generated {
    generate(root, Framework::React)
}

/// The class attribute of the element with `data-node-id="id"` in generated HTML.
pub(crate) fn classes_of<'a>(code: &'a str, id: &str) -> Vec<&'a str> {
    let marker = format!("data-node-id=\"{id}\"");
    let Some(at) = code.find(&marker) else {
        panic!("no element for node {id} in:\n{code}");
    };
    let rest = &code[at + marker.len()..];
    let tag_end = rest.find('>').unwrap_or(rest.len());
    match rest[..tag_end].split_once("class=\"") {
        Some((_, after)) => after.split('"').next().unwrap_or_default().split(' ').collect(),
        None => Vec::new(),
    }
}

/// The declarations of one class rule in the generated style sheet.
pub(crate) fn rule<'a>(code: &'a str, class: &str) -> BTreeMap<&'a str, &'a str> {
    let head = format!("\n.{class} {{\n");
    let Some(at) = code.find(&head) else {
        return BTreeMap::new();
    };
    let body = &code[at + head.len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| l.trim().strip_suffix(';')?.split_once(": "))
        .collect()
}

/// Every declaration that applies to node `id` through its classes.
pub(crate) fn style_of<'a>(code: &'a str, id: &str) -> BTreeMap<&'a str, &'a str> {
    let mut out = BTreeMap::new();
    for class in classes_of(code, id) {
        out.extend(rule(code, class));
    }
    out
}

/// Asserts that `warnings` has one line about node `id` containing `fragment`.
pub(crate) fn assert_warned(warnings: &[String], id: &str, fragment: &str) {
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with(&format!("{id} ")) && w.contains(fragment)),
        "no warning about {id} containing {fragment:?} in {warnings:#?}"
    );
}
