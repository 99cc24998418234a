//! Reads a node of the Figma JSON into the typed [`Node`]: wrong JSON types are errors naming the
//! field path; keyword values the API may add later (a new layout mode, a new paint type) are
//! warnings, and the node falls back to the documented default. Hidden nodes, paints and
//! effects are skipped before they are read, so junk in them cannot fail a render.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Warnings;
use super::model::*;
use crate::figma::error::Result;
use crate::figma::read::{
    Path, as_object, get, invalid, is_visible, opt_array, opt_bool, opt_f64, opt_object, opt_str, rect, req,
    req_f64, req_str, wrong,
};

type Object = Map<String, Value>;

/// Who is being read, for warnings about unknown keywords.
struct Who<'a> {
    id: &'a str,
    name: &'a str,
}

/// Reads an optional keyword field through `table`; unknown values warn and give `default`.
fn keyword<T: Copy>(
    obj: &Object,
    key: &str,
    path: Path<'_>,
    who: &Who<'_>,
    warn: &mut Warnings,
    table: &[(&str, T)],
    default: T,
) -> Result<T> {
    let Some(s) = opt_str(obj, key, path)? else {
        return Ok(default);
    };
    match table.iter().find(|(k, _)| *k == s) {
        Some((_, v)) => Ok(*v),
        None => {
            warn.add(who.id, who.name, format!("unknown {key} {s:?} ignored"));
            Ok(default)
        }
    }
}

const ALIGN: &[(&str, AxisAlign)] = &[
    ("MIN", AxisAlign::Min),
    ("CENTER", AxisAlign::Center),
    ("MAX", AxisAlign::Max),
    ("SPACE_BETWEEN", AxisAlign::SpaceBetween),
    ("BASELINE", AxisAlign::Baseline),
];
const SIZING: &[(&str, Option<Sizing>)] = &[
    ("FIXED", Some(Sizing::Fixed)),
    ("HUG", Some(Sizing::Hug)),
    ("FILL", Some(Sizing::Fill)),
];
const HORIZONTAL: &[(&str, Constraint)] = &[
    ("LEFT", Constraint::Start),
    ("RIGHT", Constraint::End),
    ("CENTER", Constraint::Center),
    ("LEFT_RIGHT", Constraint::Stretch),
    ("SCALE", Constraint::Scale),
];
const VERTICAL: &[(&str, Constraint)] = &[
    ("TOP", Constraint::Start),
    ("BOTTOM", Constraint::End),
    ("CENTER", Constraint::Center),
    ("TOP_BOTTOM", Constraint::Stretch),
    ("SCALE", Constraint::Scale),
];
const STROKE_ALIGN: &[(&str, StrokeAlign)] = &[
    ("INSIDE", StrokeAlign::Inside),
    ("OUTSIDE", StrokeAlign::Outside),
    ("CENTER", StrokeAlign::Center),
];

/// Reads a visible node and its visible subtree.
pub(crate) fn node(v: &Value, path: Path<'_>, warn: &mut Warnings) -> Result<Node> {
    let obj = as_object(v, path)?;
    let id = req_str(obj, "id", path)?;
    let name = req_str(obj, "name", path)?;
    let who = Who { id, name };
    let kind = NodeKind::parse(req_str(obj, "type", path)?);
    let bbox = rect(obj, "absoluteBoundingBox", path)?;

    let mut children = Vec::new();
    let mut hidden = 0;
    let kids_path = path.key("children");
    for (i, kid) in opt_array(obj, "children", path)?.iter().enumerate() {
        let p = kids_path.index(i);
        if is_visible(as_object(kid, p)?, p)? {
            children.push(node(kid, p, warn)?);
        } else {
            hidden += 1;
        }
    }

    let layout = match opt_str(obj, "layoutMode", path)? {
        None | Some("NONE") => None,
        Some(mode @ ("HORIZONTAL" | "VERTICAL")) => Some(auto_layout(obj, path, &who, warn, mode)?),
        Some(other) => {
            warn.add(
                id,
                name,
                format!("unknown layoutMode {other:?}; children placed from their boxes"),
            );
            None
        }
    };
    let stroke_paints = paints(obj, "strokes", path)?;
    let stroke = if stroke_paints.is_empty() {
        None
    } else {
        Some(stroke(obj, path, &who, warn, stroke_paints)?)
    };
    let radii = match opt_array(obj, "rectangleCornerRadii", path)? {
        [] => None,
        [a, b, c, d] => {
            let p = path.key("rectangleCornerRadii");
            let n = |v: &Value, i: usize| v.as_f64().ok_or_else(|| wrong(p.index(i), "a number", v));
            Some([n(a, 0)?, n(b, 1)?, n(c, 2)?, n(d, 3)?])
        }
        other => {
            let p = path.key("rectangleCornerRadii");
            return Err(invalid(p, format!("expected 4 radii, found {}", other.len())));
        }
    };
    let text = match kind {
        NodeKind::Text => Some(text(obj, path)?),
        _ => None,
    };
    let component_id = match kind {
        NodeKind::Instance => Some(req_str(obj, "componentId", path)?.to_string()),
        _ => None,
    };

    Ok(Node {
        id: id.to_string(),
        name: name.to_string(),
        child: child_layout(obj, path, &who, warn)?,
        layout,
        kind,
        bbox,
        children,
        hidden,
        clips: opt_bool(obj, "clipsContent", path)?.unwrap_or(false),
        fills: paints(obj, "fills", path)?,
        stroke,
        radius: opt_f64(obj, "cornerRadius", path)?.filter(|r| *r > 0.0),
        radii,
        effects: effects(obj, path)?,
        opacity: opt_f64(obj, "opacity", path)?.unwrap_or(1.0),
        blend_mode: opt_str(obj, "blendMode", path)?.map(str::to_string),
        rotation: opt_f64(obj, "rotation", path)?.unwrap_or(0.0),
        is_mask: opt_bool(obj, "isMask", path)?.unwrap_or(false),
        text,
        component_id,
    })
}

fn auto_layout(
    obj: &Object,
    path: Path<'_>,
    who: &Who<'_>,
    warn: &mut Warnings,
    mode: &str,
) -> Result<AutoLayout> {
    let num = |key: &str| -> Result<f64> { Ok(opt_f64(obj, key, path)?.unwrap_or(0.0)) };
    let primary_align = keyword(
        obj,
        "primaryAxisAlignItems",
        path,
        who,
        warn,
        ALIGN,
        AxisAlign::Min,
    )?;
    let counter_align = keyword(
        obj,
        "counterAxisAlignItems",
        path,
        who,
        warn,
        ALIGN,
        AxisAlign::Min,
    )?;
    Ok(AutoLayout {
        horizontal: mode == "HORIZONTAL",
        wrap: opt_str(obj, "layoutWrap", path)? == Some("WRAP"),
        primary_align,
        counter_align,
        padding: [
            num("paddingTop")?,
            num("paddingRight")?,
            num("paddingBottom")?,
            num("paddingLeft")?,
        ],
        gap: num("itemSpacing")?,
        counter_gap: num("counterAxisSpacing")?,
        strokes_included: opt_bool(obj, "strokesIncludedInLayout", path)?.unwrap_or(false),
        primary_hug: opt_str(obj, "primaryAxisSizingMode", path)? == Some("AUTO"),
        counter_hug: opt_str(obj, "counterAxisSizingMode", path)? == Some("AUTO"),
    })
}

fn child_layout(obj: &Object, path: Path<'_>, who: &Who<'_>, warn: &mut Warnings) -> Result<ChildLayout> {
    let (mut horizontal, mut vertical) = (Constraint::Start, Constraint::Start);
    if let Some(c) = opt_object(obj, "constraints", path)? {
        let p = path.key("constraints");
        horizontal = keyword(c, "horizontal", p, who, warn, HORIZONTAL, Constraint::Start)?;
        vertical = keyword(c, "vertical", p, who, warn, VERTICAL, Constraint::Start)?;
    }
    Ok(ChildLayout {
        absolute: opt_str(obj, "layoutPositioning", path)? == Some("ABSOLUTE"),
        sizing_h: keyword(obj, "layoutSizingHorizontal", path, who, warn, SIZING, None)?,
        sizing_v: keyword(obj, "layoutSizingVertical", path, who, warn, SIZING, None)?,
        grow: opt_f64(obj, "layoutGrow", path)?.unwrap_or(0.0),
        stretch: opt_str(obj, "layoutAlign", path)? == Some("STRETCH"),
        horizontal,
        vertical,
    })
}

fn stroke(
    obj: &Object,
    path: Path<'_>,
    who: &Who<'_>,
    warn: &mut Warnings,
    paints: Vec<Paint>,
) -> Result<Stroke> {
    let individual = match opt_object(obj, "individualStrokeWeights", path)? {
        None => None,
        Some(w) => {
            let p = path.key("individualStrokeWeights");
            Some([
                req_f64(w, "top", p)?,
                req_f64(w, "right", p)?,
                req_f64(w, "bottom", p)?,
                req_f64(w, "left", p)?,
            ])
        }
    };
    Ok(Stroke {
        paints,
        weight: opt_f64(obj, "strokeWeight", path)?.unwrap_or(1.0),
        individual,
        align: keyword(
            obj,
            "strokeAlign",
            path,
            who,
            warn,
            STROKE_ALIGN,
            StrokeAlign::Inside,
        )?,
        dashed: !opt_array(obj, "strokeDashes", path)?.is_empty(),
    })
}

pub(crate) fn color(v: &Value, path: Path<'_>) -> Result<Color> {
    let c = as_object(v, path)?;
    Ok(Color {
        r: req_f64(c, "r", path)?,
        g: req_f64(c, "g", path)?,
        b: req_f64(c, "b", path)?,
        a: opt_f64(c, "a", path)?.unwrap_or(1.0),
    })
}

/// The visible paints of `obj[key]`, bottom first.
fn paints(obj: &Object, key: &str, path: Path<'_>) -> Result<Vec<Paint>> {
    let list_path = path.key(key);
    let mut out = Vec::new();
    for (i, v) in opt_array(obj, key, path)?.iter().enumerate() {
        let p = list_path.index(i);
        let paint = as_object(v, p)?;
        if is_visible(paint, p)? {
            out.push(self::paint(paint, p)?);
        }
    }
    Ok(out)
}

fn paint(paint: &Object, p: Path<'_>) -> Result<Paint> {
    let kind = match req_str(paint, "type", p)? {
        "SOLID" => PaintKind::Solid(color(req(paint, "color", p)?, p.key("color"))?),
        t @ ("GRADIENT_LINEAR" | "GRADIENT_RADIAL" | "GRADIENT_ANGULAR" | "GRADIENT_DIAMOND") => {
            let kind = match t {
                "GRADIENT_LINEAR" => GradientKind::Linear,
                "GRADIENT_RADIAL" => GradientKind::Radial,
                "GRADIENT_ANGULAR" => GradientKind::Angular,
                _ => GradientKind::Diamond,
            };
            let hp = p.key("gradientHandlePositions");
            let mut handles = Vec::new();
            for (i, h) in opt_array(paint, "gradientHandlePositions", p)?.iter().enumerate() {
                let hp = hp.index(i);
                let h = as_object(h, hp)?;
                handles.push((req_f64(h, "x", hp)?, req_f64(h, "y", hp)?));
            }
            let sp = p.key("gradientStops");
            let mut stops = Vec::new();
            for (i, s) in opt_array(paint, "gradientStops", p)?.iter().enumerate() {
                let sp = sp.index(i);
                let s = as_object(s, sp)?;
                stops.push((
                    req_f64(s, "position", sp)?,
                    color(req(s, "color", sp)?, sp.key("color"))?,
                ));
            }
            if handles.len() < 2 {
                return Err(invalid(hp, "a gradient needs at least 2 handle positions"));
            }
            if stops.is_empty() {
                return Err(invalid(sp, "a gradient needs at least 1 stop"));
            }
            PaintKind::Gradient { kind, handles, stops }
        }
        "IMAGE" => PaintKind::Image {
            image_ref: opt_str(paint, "imageRef", p)?.map(str::to_string),
            scale_mode: opt_str(paint, "scaleMode", p)?.map(str::to_string),
            url: None,
        },
        other => PaintKind::Other(other.to_string()),
    };
    Ok(Paint {
        kind,
        opacity: opt_f64(paint, "opacity", p)?.unwrap_or(1.0),
        blend_mode: opt_str(paint, "blendMode", p)?.map(str::to_string),
    })
}

fn effects(obj: &Object, path: Path<'_>) -> Result<Vec<Effect>> {
    let list_path = path.key("effects");
    let mut out = Vec::new();
    for (i, v) in opt_array(obj, "effects", path)?.iter().enumerate() {
        let p = list_path.index(i);
        let e = as_object(v, p)?;
        if !is_visible(e, p)? {
            continue;
        }
        let kind = match req_str(e, "type", p)? {
            "DROP_SHADOW" => EffectKind::DropShadow,
            "INNER_SHADOW" => EffectKind::InnerShadow,
            "LAYER_BLUR" => EffectKind::LayerBlur,
            "BACKGROUND_BLUR" => EffectKind::BackgroundBlur,
            other => EffectKind::Other(other.to_string()),
        };
        let color = match get(e, "color") {
            Some(c) => color(c, p.key("color"))?,
            None => Color {
                r: 0.0,
                g: 0.0,
                b: 0.0,
                a: 0.0,
            },
        };
        let offset = match opt_object(e, "offset", p)? {
            Some(o) => (
                req_f64(o, "x", p.key("offset"))?,
                req_f64(o, "y", p.key("offset"))?,
            ),
            None => (0.0, 0.0),
        };
        out.push(Effect {
            kind,
            radius: opt_f64(e, "radius", p)?.unwrap_or(0.0),
            color,
            offset,
            spread: opt_f64(e, "spread", p)?.unwrap_or(0.0),
        });
    }
    Ok(out)
}

fn type_style(s: &Object, p: Path<'_>) -> Result<TypeStyle> {
    let string = |key: &str| -> Result<Option<String>> { Ok(opt_str(s, key, p)?.map(str::to_string)) };
    let fills = match get(s, "fills") {
        Some(_) => Some(paints(s, "fills", p)?),
        None => None,
    };
    Ok(TypeStyle {
        family: string("fontFamily")?,
        weight: opt_f64(s, "fontWeight", p)?,
        size: opt_f64(s, "fontSize", p)?,
        italic: opt_bool(s, "italic", p)?,
        align_h: string("textAlignHorizontal")?,
        align_v: string("textAlignVertical")?,
        letter_spacing: opt_f64(s, "letterSpacing", p)?,
        line_height_px: opt_f64(s, "lineHeightPx", p)?,
        text_case: string("textCase")?,
        decoration: string("textDecoration")?,
        paragraph_spacing: opt_f64(s, "paragraphSpacing", p)?,
        fills,
    })
}

fn text(obj: &Object, path: Path<'_>) -> Result<Text> {
    let style = match opt_object(obj, "style", path)? {
        Some(s) => type_style(s, path.key("style"))?,
        None => TypeStyle::default(),
    };
    let op = path.key("characterStyleOverrides");
    let mut overrides = Vec::new();
    for (i, v) in opt_array(obj, "characterStyleOverrides", path)?
        .iter()
        .enumerate()
    {
        let id = v.as_u64().and_then(|n| u32::try_from(n).ok());
        overrides.push(id.ok_or_else(|| wrong(op.index(i), "a style id (a whole number)", v))?);
    }
    let mut table = BTreeMap::new();
    if let Some(t) = opt_object(obj, "styleOverrideTable", path)? {
        let tp = path.key("styleOverrideTable");
        for (key, v) in t {
            let p = tp.key(key);
            let id: u32 = key
                .parse()
                .map_err(|_| invalid(p, "style ids must be whole numbers"))?;
            table.insert(id, type_style(as_object(v, p)?, p)?);
        }
    }
    Ok(Text {
        characters: opt_str(obj, "characters", path)?.unwrap_or("").to_string(),
        style,
        overrides,
        table,
    })
}
