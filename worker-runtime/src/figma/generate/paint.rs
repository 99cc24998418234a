//! Fills, strokes, corner radii, effects and blend modes to CSS.
//!
//! Figma lists paints bottom first; CSS lists background layers top first, so fills are
//! reversed. INSIDE strokes become borders (the caller compensates padding and offsets so the
//! children stay where Figma puts them); OUTSIDE and CENTER strokes become outlines, which never
//! take layout space. Blur radii are halved: Figma's blur value is about twice CSS's deviation.

use super::Warnings;
use super::css::{Decl, color, decl, num, pct, px};
use super::model::*;

/// Who the warnings are about.
pub(crate) struct Ctx<'a> {
    pub node: &'a Node,
    pub warn: &'a mut Warnings,
}

impl Ctx<'_> {
    pub(crate) fn warn(&mut self, msg: impl Into<String>) {
        self.warn.add(&self.node.id, &self.node.name, msg.into());
    }
}

/// `background-color` for a lone solid fill, otherwise one `background` with every layer.
pub(crate) fn background(cx: &mut Ctx<'_>) -> Vec<Decl> {
    let node = cx.node;
    let fills = &node.fills;
    let mut layers = Vec::new();
    let mut base_color = None;
    for (i, paint) in fills.iter().enumerate().rev() {
        paint_blend_warning(cx, paint, "fill");
        let bottom = i == 0;
        match &paint.kind {
            PaintKind::Solid(c) if bottom => base_color = Some(color(*c, paint.opacity)),
            PaintKind::Solid(c) => {
                let c = color(*c, paint.opacity);
                layers.push(format!("linear-gradient({c}, {c})"));
            }
            PaintKind::Gradient { .. } => {
                if let Some(layer) = gradient(cx, paint) {
                    layers.push(layer);
                }
            }
            PaintKind::Image {
                image_ref,
                scale_mode,
                url: Some(url),
            } => {
                let r = image_ref.as_deref().unwrap_or("none");
                cx.warn(format!(
                    "IMAGE fill (imageRef {r}) loaded from Figma's image address, which expires after about 14 days"
                ));
                let fit = match scale_mode.as_deref() {
                    Some("FIT") => "center / contain no-repeat",
                    Some("TILE") => "top left repeat",
                    Some("STRETCH") => "center / 100% 100% no-repeat",
                    _ => "center / cover no-repeat",
                };
                layers.push(format!("url(\"{url}\") {fit}"));
            }
            PaintKind::Image { image_ref, .. } => {
                let r = image_ref.as_deref().unwrap_or("none");
                cx.warn(format!(
                    "IMAGE fill (imageRef {r}) rendered as a grey placeholder"
                ));
                layers.push("repeating-linear-gradient(45deg, #d9d9d9 0 10px, #cfcfcf 10px 20px)".into());
            }
            PaintKind::Other(t) => cx.warn(format!("{t} fill not supported; left out")),
        }
    }
    match (layers.is_empty(), base_color) {
        (true, None) => Vec::new(),
        (true, Some(c)) => vec![decl("background-color", c)],
        (false, base) => {
            let mut value = layers.join(", ");
            if let Some(c) = base {
                value.push_str(", ");
                value.push_str(&c);
            }
            vec![decl("background", value)]
        }
    }
}

fn paint_blend_warning(cx: &mut Ctx<'_>, paint: &Paint, what: &str) {
    if let Some(mode) = paint
        .blend_mode
        .as_deref()
        .filter(|m| !matches!(*m, "NORMAL" | "PASS_THROUGH"))
    {
        cx.warn(format!("{what} blend mode {mode} not supported; drawn as NORMAL"));
    }
}

/// A CSS gradient layer for a gradient paint.
pub(crate) fn gradient(cx: &mut Ctx<'_>, paint: &Paint) -> Option<String> {
    let PaintKind::Gradient { kind, handles, stops } = &paint.kind else {
        return None;
    };
    let (w, h) = (cx.node.bbox.w.max(1e-6), cx.node.bbox.h.max(1e-6));
    let at = |i: usize| handles.get(i).map(|(x, y)| (x * w, y * h));
    let (p0, p1) = (at(0)?, at(1)?);
    let d = (p1.0 - p0.0, p1.1 - p0.1);
    let len = |v: (f64, f64)| v.0.hypot(v.1);
    let stop_list = |pos: &dyn Fn(f64) -> f64| -> String {
        let list: Vec<String> = stops
            .iter()
            .map(|(t, c)| format!("{} {}", color(*c, paint.opacity), pct(pos(*t) * 100.0)))
            .collect();
        list.join(", ")
    };
    match kind {
        GradientKind::Linear => {
            // The gradient runs across the isolines, which are parallel to the width handle.
            let mut n = d;
            if let Some(p2) = at(2) {
                let wv = (p2.0 - p0.0, p2.1 - p0.1);
                if len(wv) > 1e-9 {
                    n = (-wv.1, wv.0);
                    if n.0 * d.0 + n.1 * d.1 < 0.0 {
                        n = (-n.0, -n.1);
                    }
                }
            }
            if len(n) < 1e-9 || len(d) < 1e-9 {
                cx.warn("degenerate GRADIENT_LINEAR drawn with its first stop colour");
                let c = color(stops[0].1, paint.opacity);
                return Some(format!("linear-gradient({c}, {c})"));
            }
            let u = (n.0 / len(n), n.1 / len(n));
            let angle = u.0.atan2(-u.1).to_degrees().rem_euclid(360.0);
            let line = (w * u.0).abs() + (h * u.1).abs();
            let start = (w / 2.0 - u.0 * line / 2.0, h / 2.0 - u.1 * line / 2.0);
            let pos = |t: f64| {
                let p = (p0.0 + t * d.0 - start.0, p0.1 + t * d.1 - start.1);
                (p.0 * u.0 + p.1 * u.1) / line
            };
            Some(format!("linear-gradient({}deg, {})", num(angle), stop_list(&pos)))
        }
        GradientKind::Radial | GradientKind::Diamond => {
            if *kind == GradientKind::Diamond {
                cx.warn("GRADIENT_DIAMOND approximated with a radial-gradient");
            }
            let p2 = at(2).unwrap_or((p0.0 - d.1, p0.1 + d.0));
            let wv = (p2.0 - p0.0, p2.1 - p0.1);
            let (rx, ry) = if d.1.abs() <= d.0.abs() * 1e-3 {
                (len(d), len(wv))
            } else if d.0.abs() <= d.1.abs() * 1e-3 {
                (len(wv), len(d))
            } else {
                cx.warn("rotated GRADIENT_RADIAL drawn unrotated");
                (len(d), len(wv))
            };
            Some(format!(
                "radial-gradient(ellipse {} {} at {} {}, {})",
                px(rx.max(0.01)),
                px(ry.max(0.01)),
                px(p0.0),
                px(p0.1),
                stop_list(&|t| t)
            ))
        }
        GradientKind::Angular => {
            cx.warn("GRADIENT_ANGULAR approximated with a conic-gradient");
            let from = d.0.atan2(-d.1).to_degrees().rem_euclid(360.0);
            Some(format!(
                "conic-gradient(from {}deg at {} {}, {})",
                num(from),
                px(p0.0),
                px(p0.1),
                stop_list(&|t| t)
            ))
        }
    }
}

/// The CSS colour of a paint used where only a colour fits (strokes, text).
pub(crate) fn paint_color(cx: &mut Ctx<'_>, paint: &Paint, what: &str) -> String {
    match &paint.kind {
        PaintKind::Solid(c) => color(*c, paint.opacity),
        PaintKind::Gradient { stops, .. } => {
            cx.warn(format!("gradient {what} drawn with its first stop colour"));
            color(stops[0].1, paint.opacity)
        }
        PaintKind::Image { .. } => {
            cx.warn(format!("IMAGE {what} drawn grey"));
            "#d9d9d9".into()
        }
        PaintKind::Other(t) => {
            cx.warn(format!("{t} {what} drawn grey"));
            "#d9d9d9".into()
        }
    }
}

/// Stroke declarations and the border widths they add inside the box (top, right, bottom, left).
pub(crate) fn stroke(cx: &mut Ctx<'_>) -> (Vec<Decl>, [f64; 4]) {
    let node = cx.node;
    let Some(stroke) = node.stroke.as_ref() else {
        return (Vec::new(), [0.0; 4]);
    };
    if cx.node.kind == NodeKind::Text {
        cx.warn("text strokes not supported; left out");
        return (Vec::new(), [0.0; 4]);
    }
    if stroke.paints.len() > 1 {
        cx.warn(format!(
            "{} stroke paints; only the top one drawn",
            stroke.paints.len()
        ));
    }
    let Some(top) = stroke.paints.last() else {
        return (Vec::new(), [0.0; 4]);
    };
    paint_blend_warning(cx, top, "stroke");
    let c = paint_color(cx, top, "stroke");
    let style = if stroke.dashed { "dashed" } else { "solid" };
    match stroke.align {
        StrokeAlign::Inside => match stroke.individual {
            Some(sides) => {
                let widths = sides.map(px).join(" ");
                let decls = vec![
                    decl("border-style", style),
                    decl("border-color", c),
                    decl("border-width", widths),
                ];
                (decls, sides)
            }
            None => (
                vec![decl("border", format!("{} {style} {c}", px(stroke.weight)))],
                [stroke.weight; 4],
            ),
        },
        align => {
            let weight = match stroke.individual {
                Some(sides) => {
                    cx.warn("individual stroke weights outside the box drawn as one outline of the widest");
                    sides.into_iter().fold(0.0, f64::max)
                }
                None => stroke.weight,
            };
            // A LINE's box has no height: an outline of half the weight all round draws it.
            if node.kind == NodeKind::Line {
                return (
                    vec![decl("outline", format!("{} {style} {c}", px(weight / 2.0)))],
                    [0.0; 4],
                );
            }
            let mut decls = vec![decl("outline", format!("{} {style} {c}", px(weight)))];
            if align == StrokeAlign::Center {
                decls.push(decl("outline-offset", px(-weight / 2.0)));
            }
            (decls, [0.0; 4])
        }
    }
}

pub(crate) fn radius(node: &Node) -> Vec<Decl> {
    if node.kind == NodeKind::Ellipse {
        return vec![decl("border-radius", "50%")];
    }
    match (node.radii, node.radius) {
        (Some([a, b, c, d]), _) if !(a == b && b == c && c == d) => {
            vec![decl("border-radius", [a, b, c, d].map(px).join(" "))]
        }
        (Some([a, ..]), _) if a > 0.0 => vec![decl("border-radius", px(a))],
        (None, Some(r)) => vec![decl("border-radius", px(r))],
        _ => Vec::new(),
    }
}

/// Shadows and blurs. On TEXT, shadows follow the glyphs (`text-shadow`).
pub(crate) fn effects(cx: &mut Ctx<'_>) -> Vec<Decl> {
    let node = cx.node;
    let is_text = node.kind == NodeKind::Text;
    let mut shadows = Vec::new();
    let mut out = Vec::new();
    for e in node.effects.iter().rev() {
        let (x, y, blur, spread) = (px(e.offset.0), px(e.offset.1), px(e.radius), px(e.spread));
        let c = color(e.color, 1.0);
        match (&e.kind, is_text) {
            (EffectKind::DropShadow, false) => shadows.push(format!("{x} {y} {blur} {spread} {c}")),
            (EffectKind::InnerShadow, false) => shadows.push(format!("inset {x} {y} {blur} {spread} {c}")),
            (EffectKind::DropShadow, true) => {
                if e.spread != 0.0 {
                    cx.warn("spread of a DROP_SHADOW on text not supported; drawn without it");
                }
                shadows.push(format!("{x} {y} {blur} {c}"));
            }
            (EffectKind::InnerShadow, true) => cx.warn("INNER_SHADOW on text not supported; left out"),
            (EffectKind::LayerBlur, _) => out.push(decl("filter", format!("blur({})", px(e.radius / 2.0)))),
            (EffectKind::BackgroundBlur, _) => {
                out.push(decl("backdrop-filter", format!("blur({})", px(e.radius / 2.0))))
            }
            (EffectKind::Other(t), _) => cx.warn(format!("{t} effect not supported; left out")),
        }
    }
    if !shadows.is_empty() {
        let prop = if is_text { "text-shadow" } else { "box-shadow" };
        out.insert(0, decl(prop, shadows.join(", ")));
    }
    out
}

/// `mix-blend-mode` for a layer blend mode, with a warning: CSS blends against what is painted
/// below in the page, which need not be what Figma blends against.
pub(crate) fn blend(cx: &mut Ctx<'_>) -> Vec<Decl> {
    let Some(mode) = cx.node.blend_mode.clone() else {
        return Vec::new();
    };
    let css = match mode.as_str() {
        "NORMAL" | "PASS_THROUGH" => return Vec::new(),
        "LINEAR_BURN" | "LINEAR_DODGE" => None,
        m => Some(m.to_ascii_lowercase().replace('_', "-")),
    };
    match css {
        Some(css) => {
            cx.warn(format!(
                "blend mode {mode} approximated with mix-blend-mode: {css}"
            ));
            vec![decl("mix-blend-mode", css)]
        }
        None => {
            cx.warn(format!("blend mode {mode} not supported; drawn as NORMAL"));
            Vec::new()
        }
    }
}
