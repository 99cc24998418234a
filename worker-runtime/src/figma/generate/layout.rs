//! Auto layout to flexbox, and constraints to absolute positions.
//!
//! A frame with auto layout is a flex container; its children are flex items sized by
//! FIXED (explicit size), HUG (auto) or FILL (`flex: 1 1 0` on the primary axis,
//! `align-self: stretch` on the counter axis), read from `layoutSizing*` or, in older files,
//! from `layoutGrow`/`layoutAlign`. Everything else, and ABSOLUTE children, is positioned
//! absolutely inside the parent's padding box, honouring the child's constraints.

use super::Warnings;
use super::css::{Decl, decl, num, pct, px};
use super::model::*;

/// How a parent places one child.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placement<'a> {
    /// The generated root: the frame at its own size at the page's top-left.
    Root,
    /// A flex item of the parent's auto layout.
    Flex(&'a AutoLayout),
    /// Absolutely positioned inside `inner`, the parent's padding box in absolute coordinates;
    /// `constraints: false` for children of groups, which are always pinned top-left.
    Absolute { inner: Rect, constraints: bool },
}

/// The declarations that place and size `node` in its parent.
pub(crate) fn place(node: &Node, placement: Placement<'_>) -> Vec<Decl> {
    match placement {
        Placement::Root => vec![decl("width", px(node.bbox.w)), decl("height", px(node.bbox.h))],
        Placement::Flex(parent) => flex_item(node, parent),
        Placement::Absolute { inner, constraints } => absolute(node, inner, constraints),
    }
}

/// The sizing of `node` on one axis inside auto layout, with the legacy fields as fallback.
fn sizing(node: &Node, horizontal_axis: bool, parent: &AutoLayout) -> Sizing {
    let explicit = if horizontal_axis {
        node.child.sizing_h
    } else {
        node.child.sizing_v
    };
    let on_primary = horizontal_axis == parent.horizontal;
    let own_hug = node.layout.as_ref().map(|l| {
        if l.horizontal == horizontal_axis {
            l.primary_hug
        } else {
            l.counter_hug
        }
    });
    let fill = if on_primary {
        node.child.grow > 0.0
    } else {
        node.child.stretch
    };
    let s = explicit.unwrap_or(if fill {
        Sizing::Fill
    } else if own_hug == Some(true) {
        Sizing::Hug
    } else {
        Sizing::Fixed
    });
    // Only an auto-layout frame can size itself from its content without fonts deciding.
    if s == Sizing::Hug && (node.layout.is_none() || node.kind == NodeKind::Text) {
        Sizing::Fixed
    } else {
        s
    }
}

fn flex_item(node: &Node, parent: &AutoLayout) -> Vec<Decl> {
    let mut out = Vec::new();
    let (w, h) = (sizing(node, true, parent), sizing(node, false, parent));
    let (primary, counter) = if parent.horizontal { (w, h) } else { (h, w) };
    let (primary_prop, counter_prop, primary_len, counter_len) = if parent.horizontal {
        ("width", "height", node.bbox.w, node.bbox.h)
    } else {
        ("height", "width", node.bbox.h, node.bbox.w)
    };
    match primary {
        Sizing::Fixed => {
            out.push(decl("flex", "none"));
            out.push(decl(primary_prop, px(primary_len)));
        }
        Sizing::Hug => out.push(decl("flex", "none")),
        Sizing::Fill => out.push(decl("flex", "1 1 0")),
    }
    match counter {
        Sizing::Fixed => out.push(decl(counter_prop, px(counter_len))),
        Sizing::Hug => {}
        Sizing::Fill => out.push(decl("align-self", "stretch")),
    }
    out
}

fn absolute(node: &Node, inner: Rect, constraints: bool) -> Vec<Decl> {
    let b = node.bbox;
    let (h, v) = if constraints {
        (node.child.horizontal, node.child.vertical)
    } else {
        (Constraint::Start, Constraint::Start)
    };
    let mut out = vec![decl("position", "absolute")];
    out.extend(axis(h, b.x - inner.x, b.w, inner.w, ["left", "right", "width"]));
    out.extend(axis(v, b.y - inner.y, b.h, inner.h, ["top", "bottom", "height"]));
    out
}

/// One axis of a constraint: `offset` and `size` of the child, `room` of the parent's box.
fn axis(c: Constraint, offset: f64, size: f64, room: f64, [start, end, len]: [&'static str; 3]) -> Vec<Decl> {
    let far = room - offset - size;
    match c {
        Constraint::Scale if room > 0.0 => vec![
            decl(start, pct(offset / room * 100.0)),
            decl(len, pct(size / room * 100.0)),
        ],
        Constraint::Start | Constraint::Scale => vec![decl(start, px(offset)), decl(len, px(size))],
        Constraint::End => vec![decl(end, px(far)), decl(len, px(size))],
        Constraint::Stretch => vec![decl(start, px(offset)), decl(end, px(far))],
        Constraint::Center => {
            let shift = offset - room / 2.0;
            let sign = if shift < 0.0 { "-" } else { "+" };
            vec![
                decl(start, format!("calc(50% {sign} {}px)", num(shift.abs()))),
                decl(len, px(size)),
            ]
        }
    }
}

/// Flex container declarations for a frame with auto layout. `border` is what an INSIDE stroke
/// takes inside the box; Figma measures padding from the frame's edge (unless strokes are
/// included in layout), so the border is taken off the padding.
pub(crate) fn container(node: &Node, border: [f64; 4], warn: &mut Warnings) -> Vec<Decl> {
    let Some(l) = node.layout.as_ref() else {
        return Vec::new();
    };
    let mut out = vec![
        decl("display", "flex"),
        decl("flex-direction", if l.horizontal { "row" } else { "column" }),
    ];
    let primary_gap = if l.primary_align == AxisAlign::SpaceBetween {
        0.0
    } else {
        l.gap
    };
    if l.wrap {
        out.push(decl("flex-wrap", "wrap"));
        out.push(decl("align-content", "flex-start"));
        let (row, column) = if l.horizontal {
            (l.counter_gap, primary_gap)
        } else {
            (primary_gap, l.counter_gap)
        };
        if row != 0.0 || column != 0.0 {
            out.push(decl("gap", format!("{} {}", px(row), px(column))));
        }
    } else if primary_gap != 0.0 {
        out.push(decl("gap", px(primary_gap)));
    }
    let justify = match l.primary_align {
        AxisAlign::Min | AxisAlign::Baseline => None,
        AxisAlign::Center => Some("center"),
        AxisAlign::Max => Some("flex-end"),
        AxisAlign::SpaceBetween => Some("space-between"),
    };
    if let Some(j) = justify {
        out.push(decl("justify-content", j));
    }
    let align = match l.counter_align {
        AxisAlign::Min | AxisAlign::SpaceBetween => "flex-start",
        AxisAlign::Center => "center",
        AxisAlign::Max => "flex-end",
        AxisAlign::Baseline => "baseline",
    };
    out.push(decl("align-items", align));
    let mut padding = l.padding;
    if !l.strokes_included {
        for (p, b) in padding.iter_mut().zip(border) {
            if *p < b {
                warn.add(
                    &node.id,
                    &node.name,
                    format!(
                        "padding {} is thinner than the {} stroke; children shift by {}",
                        px(*p),
                        px(b),
                        px(b - *p)
                    ),
                );
            }
            *p = (*p - b).max(0.0);
        }
    }
    if padding.iter().any(|p| *p != 0.0) {
        out.push(decl("padding", padding.map(px).join(" ")));
    }
    out
}
