//! UI code from one frame of a `GET /v1/files/:key/nodes` response.
//!
//! The pipeline: *look up* the node → *parse* it into typed nodes (errors name the field path)
//! → *build* one element per visible node with its CSS → *name* classes (instances share them)
//! → *emit* HTML or TSX. Every step is pure and linear in the number of nodes.
//!
//! Geometry is reproduced, not re-flowed: the root is the frame at its own size at the page's
//! top-left, auto layout becomes flexbox, everything else is placed absolutely from
//! `absoluteBoundingBox` and the constraints, and text boxes get explicit sizes, so a browser
//! lays every element within a pixel of Figma whatever fonts it has. Whatever cannot be mapped
//! is drawn as close as CSS allows and reported in `warnings` as `<node id> "<name>": <what>`.

mod build;
mod classes;
mod css;
mod html;
mod layout;
mod model;
mod paint;
mod parse;
mod react;
mod text;

use std::collections::HashMap;
use std::fmt::Display;

use serde_json::{Map, Value};

use crate::figma::error::{FigmaError, Result};
use crate::figma::read::{Path, as_object, opt_object, opt_str, req, req_str};

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framework {
    /// One self-contained HTML document with a `<style>` block.
    Html,
    /// One TSX module: a default-exported function component for the frame, one exported
    /// function component per Figma component used, and the same style sheet as the HTML
    /// output in a `css` string rendered by a `<style>` element.
    React,
}

/// Generated code and everything that could not be mapped exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// The HTML document or TSX module.
    pub code: String,
    /// One line per approximation, in the form `<node id> "<node name>": <what and how>`.
    pub warnings: Vec<String>,
}

/// Gives each image fill its download address, when `images` has a usable one.
fn resolve_images(node: &mut model::Node, images: &HashMap<String, String>) {
    let usable = |u: &&String| {
        (u.starts_with("https://") || u.starts_with("http://"))
            && !u
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'\\<>()".contains(c))
    };
    for paint in &mut node.fills {
        if let model::PaintKind::Image {
            image_ref: Some(r),
            url,
            ..
        } = &mut paint.kind
        {
            *url = images.get(r.as_str()).filter(usable).cloned();
        }
    }
    for c in &mut node.children {
        resolve_images(c, images);
    }
}

/// Warnings collected while generating, in the documented format.
#[derive(Debug, Default)]
pub(crate) struct Warnings(Vec<String>);

impl Warnings {
    pub(crate) fn add(&mut self, id: &str, name: &str, msg: impl Display) {
        self.0.push(format!("{id} {name:?}: {msg}"));
    }
}

/// Node types UI can be generated from.
const ROOT_TYPES: &[&str] = &[
    "FRAME",
    "COMPONENT",
    "COMPONENT_SET",
    "INSTANCE",
    "GROUP",
    "SECTION",
];

/// Generates `framework` code for node `node_id` (`1:2`, or `1-2` as in Figma URLs) of a
/// `GET /v1/files/:key/nodes` response.
pub fn generate_ui(nodes_response: &Value, node_id: &str, framework: Framework) -> Result<Generated> {
    generate_ui_with_images(nodes_response, node_id, framework, &HashMap::new())
}

/// The `imageRef`s of the visible fills under `node_id` (as Figma writes it), for
/// `GET /v1/files/:key/images`.
pub fn image_refs(nodes_response: &Value, node_id: &str) -> Vec<String> {
    fn walk(node: &Value, out: &mut Vec<String>) {
        if node["visible"] == false {
            return;
        }
        for paint in node["fills"].as_array().into_iter().flatten() {
            if let Some(r) = paint["imageRef"].as_str()
                && !out.iter().any(|o| o == r)
            {
                out.push(r.to_string());
            }
        }
        for c in node["children"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut out = vec![];
    walk(&nodes_response["nodes"][node_id]["document"], &mut out);
    out
}

/// [`generate_ui`] with the download address of each image fill by `imageRef` (from
/// `GET /v1/files/:key/images`): image fills then show their image instead of a placeholder.
/// An address that is not a plain http(s) URL is not used.
pub fn generate_ui_with_images(
    nodes_response: &Value,
    node_id: &str,
    framework: Framework,
    images: &HashMap<String, String>,
) -> Result<Generated> {
    let root = Path::Root;
    let response = as_object(nodes_response, root)?;
    let nodes_path = root.key("nodes");
    let nodes = as_object(req(response, "nodes", root)?, nodes_path)?;
    let (id, entry) = lookup(nodes, node_id)?;
    let entry_path = nodes_path.key(id);
    let entry = as_object(entry, entry_path)?;
    let doc_path = entry_path.key("document");
    let document = as_object(req(entry, "document", entry_path)?, doc_path)?;
    let node_type = req_str(document, "type", doc_path)?;
    if !ROOT_TYPES.contains(&node_type) {
        return Err(FigmaError::UnsupportedRoot {
            node_id: id.to_string(),
            node_type: node_type.to_string(),
        });
    }

    let mut warnings = Warnings::default();
    let mut node = parse::node(&entry["document"], doc_path, &mut warnings)?;
    resolve_images(&mut node, images);
    let names = component_names(entry, entry_path)?;
    let mut tree = build::element(&node, layout::Placement::Root, &mut warnings);
    let rules = classes::assign(&mut tree, &names);
    let code = match framework {
        Framework::Html => html::document(&tree, &rules, &node.name, node.bbox.w),
        Framework::React => react::module(&tree, &rules, &node.name, &names, &mut warnings),
    };
    Ok(Generated {
        code,
        warnings: warnings.0,
    })
}

/// The entry for `node_id`, accepting the URL form `1-2` for `1:2`.
fn lookup<'v>(nodes: &'v Map<String, Value>, node_id: &str) -> Result<(&'v str, &'v Value)> {
    let colon = node_id.replace('-', ":");
    for candidate in [node_id, colon.as_str()] {
        if let Some((id, v)) = nodes.get_key_value(candidate)
            && !v.is_null()
        {
            return Ok((id.as_str(), v));
        }
    }
    let mut available: Vec<String> = nodes
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    available.sort();
    Err(FigmaError::NodeNotFound {
        node_id: node_id.to_string(),
        available,
    })
}

/// Display names of the components the response describes: a variant is named after its set
/// and its property values ("Button" + "Variant=Primary" → "Button Primary").
fn component_names(entry: &Map<String, Value>, path: Path<'_>) -> Result<HashMap<String, String>> {
    let mut set_names = HashMap::new();
    if let Some(sets) = opt_object(entry, "componentSets", path)? {
        let sets_path = path.key("componentSets");
        for (id, set) in sets {
            let p = sets_path.key(id);
            set_names.insert(id.as_str(), req_str(as_object(set, p)?, "name", p)?);
        }
    }
    let mut names = HashMap::new();
    if let Some(components) = opt_object(entry, "components", path)? {
        let comp_path = path.key("components");
        for (id, c) in components {
            let p = comp_path.key(id);
            let c = as_object(c, p)?;
            let name = req_str(c, "name", p)?;
            let display = match opt_str(c, "componentSetId", p)?.and_then(|s| set_names.get(s)) {
                Some(set) => {
                    let values: Vec<&str> = name
                        .split(',')
                        .map(|pair| pair.split_once('=').map_or(pair, |(_, v)| v).trim())
                        .collect();
                    format!("{set} {}", values.join(" "))
                }
                None => name.to_string(),
            };
            names.insert(id.clone(), display);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
