//! Turns the typed node tree into the element tree both emitters write: one element per visible
//! node, each with its CSS declarations, its text runs and the component it instantiates.

use std::collections::HashSet;

use super::Warnings;
use super::css::{Decl, decl, num};
use super::layout::{self, Placement};
use super::model::*;
use super::paint::{self, Ctx};
use super::text;

/// One element of the output, in document order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Element {
    pub node_id: String,
    pub name: String,
    pub decls: Vec<Decl>,
    pub text: Option<TextContent>,
    /// The `componentId` of an INSTANCE.
    pub component: Option<String>,
    pub children: Vec<Element>,
    /// Classes shared with the same layer of other instances (filled in by `classes`).
    pub shared: Vec<super::classes::Shared>,
    /// The element's own class, when it has declarations no shared class holds.
    pub own: Option<String>,
}

/// The content of a TEXT element.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TextContent {
    pub runs: Vec<Run>,
    /// Vertical alignment needs the runs wrapped in one `<span>` inside the flex column.
    pub wrapper: bool,
}

/// A stretch of characters in one style; the base style has no declarations and no class.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Run {
    pub text: String,
    pub decls: Vec<Decl>,
    pub class: Option<String>,
}

/// Builds the element for `node` placed by `placement`, and its subtree.
pub(crate) fn element(node: &Node, placement: Placement<'_>, warn: &mut Warnings) -> Element {
    let mut decls = layout::place(node, placement);
    let mut cx = Ctx {
        node,
        warn: &mut *warn,
    };
    notes(&mut cx);
    let (stroke, border) = paint::stroke(&mut cx);
    decls.extend(layout::container(node, border, cx.warn));
    if node.kind != NodeKind::Text {
        decls.extend(paint::background(&mut cx));
    }
    decls.extend(stroke);
    decls.extend(paint::radius(node));
    decls.extend(paint::effects(&mut cx));
    if node.opacity < 1.0 {
        decls.push(decl("opacity", num(node.opacity)));
    }
    decls.extend(paint::blend(&mut cx));
    if node.clips && !node.children.is_empty() {
        decls.push(decl("overflow", "hidden"));
    }
    let (text_decls, text) = text::text(&mut cx);
    decls.extend(text_decls);

    let inner = Rect {
        x: node.bbox.x + border[3],
        y: node.bbox.y + border[0],
        w: (node.bbox.w - border[1] - border[3]).max(0.0),
        h: (node.bbox.h - border[0] - border[2]).max(0.0),
    };
    let renders_children = !node.kind.is_vector_shape() && node.kind != NodeKind::Text;
    let children = if renders_children {
        node.children
            .iter()
            .map(|child| {
                let placement = match (&node.layout, child.child.absolute) {
                    (Some(l), false) => Placement::Flex(l),
                    _ => Placement::Absolute {
                        inner,
                        constraints: node.kind.is_frame_like(),
                    },
                };
                element(child, placement, warn)
            })
            .collect()
    } else {
        Vec::new()
    };

    Element {
        node_id: node.id.clone(),
        name: node.name.clone(),
        decls: last_of_each(decls),
        text,
        component: node.component_id.clone(),
        children,
        shared: Vec::new(),
        own: None,
    }
}

/// Warnings about what the element cannot show as Figma does.
fn notes(cx: &mut Ctx<'_>) {
    let node = cx.node;
    if node.kind.is_vector_shape() {
        let kind = match &node.kind {
            NodeKind::Vector => "VECTOR",
            NodeKind::Line => "LINE",
            NodeKind::Star => "STAR",
            NodeKind::RegularPolygon => "REGULAR_POLYGON",
            _ => "BOOLEAN_OPERATION",
        };
        let mut msg = format!("{kind} drawn as its bounding box with its fills and strokes");
        if !node.children.is_empty() {
            msg.push_str(&format!(
                "; its {} operand layers are not drawn",
                node.children.len()
            ));
        }
        cx.warn(msg);
    }
    if let NodeKind::Other(kind) = &node.kind {
        cx.warn(format!("unknown node type {kind} drawn as a box"));
    }
    if node.rotation.abs() > 1e-6 {
        cx.warn(format!(
            "rotation {} not applied; drawn as its axis-aligned bounding box",
            num(node.rotation)
        ));
    }
    if node.is_mask {
        cx.warn("mask not supported; drawn as a normal layer");
    }
}

/// Keeps the last declaration of each property, in place, so no element sets one twice.
fn last_of_each(decls: Vec<Decl>) -> Vec<Decl> {
    let mut seen = HashSet::new();
    let mut out: Vec<Decl> = decls.into_iter().rev().filter(|d| seen.insert(d.prop)).collect();
    out.reverse();
    out
}
