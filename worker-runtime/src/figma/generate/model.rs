//! The typed subset of a Figma node that code generation reads. Enums that drive layout are
//! typed; presentational keywords (text case, decoration, blend mode) stay as the API's strings
//! and are mapped, or warned about, where CSS is written.

use std::collections::BTreeMap;

pub(crate) use crate::figma::read::Rect;

/// The Figma node types generation knows; anything else is kept by name and drawn as a box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Frame,
    Group,
    Section,
    Component,
    ComponentSet,
    Instance,
    Rectangle,
    Ellipse,
    Text,
    Vector,
    Line,
    Star,
    RegularPolygon,
    BooleanOperation,
    Other(String),
}

impl NodeKind {
    pub(crate) fn parse(s: &str) -> NodeKind {
        match s {
            "FRAME" => NodeKind::Frame,
            "GROUP" => NodeKind::Group,
            "SECTION" => NodeKind::Section,
            "COMPONENT" => NodeKind::Component,
            "COMPONENT_SET" => NodeKind::ComponentSet,
            "INSTANCE" => NodeKind::Instance,
            "RECTANGLE" => NodeKind::Rectangle,
            "ELLIPSE" => NodeKind::Ellipse,
            "TEXT" => NodeKind::Text,
            "VECTOR" => NodeKind::Vector,
            "LINE" => NodeKind::Line,
            "STAR" => NodeKind::Star,
            "REGULAR_POLYGON" => NodeKind::RegularPolygon,
            "BOOLEAN_OPERATION" => NodeKind::BooleanOperation,
            other => NodeKind::Other(other.to_string()),
        }
    }

    /// Frames and their kin: they have children laid out by auto layout or constraints.
    pub(crate) fn is_frame_like(&self) -> bool {
        matches!(
            self,
            NodeKind::Frame
                | NodeKind::Section
                | NodeKind::Component
                | NodeKind::ComponentSet
                | NodeKind::Instance
        )
    }

    /// Shapes CSS cannot draw: rendered as their bounding box with a warning.
    pub(crate) fn is_vector_shape(&self) -> bool {
        matches!(
            self,
            NodeKind::Vector
                | NodeKind::Line
                | NodeKind::Star
                | NodeKind::RegularPolygon
                | NodeKind::BooleanOperation
        )
    }
}

/// Alignment on an auto-layout axis (`primaryAxisAlignItems` / `counterAxisAlignItems`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AxisAlign {
    Min,
    Center,
    Max,
    SpaceBetween,
    Baseline,
}

/// How a layer is sized on one axis inside auto layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sizing {
    Fixed,
    Hug,
    Fill,
}

/// A constraint on one axis, with LEFT/TOP as `Start` and RIGHT/BOTTOM as `End`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Constraint {
    Start,
    End,
    Center,
    Stretch,
    Scale,
}

/// A frame's own auto layout (present only when `layoutMode` is HORIZONTAL or VERTICAL).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AutoLayout {
    pub horizontal: bool,
    pub wrap: bool,
    pub primary_align: AxisAlign,
    pub counter_align: AxisAlign,
    /// top, right, bottom, left.
    pub padding: [f64; 4],
    pub gap: f64,
    pub counter_gap: f64,
    pub strokes_included: bool,
    /// `primaryAxisSizingMode: AUTO` (hug along the primary axis), for legacy sizing.
    pub primary_hug: bool,
    /// `counterAxisSizingMode: AUTO`.
    pub counter_hug: bool,
}

/// How a node sits in its parent: auto-layout item fields and constraints.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChildLayout {
    pub absolute: bool,
    pub sizing_h: Option<Sizing>,
    pub sizing_v: Option<Sizing>,
    pub grow: f64,
    pub stretch: bool,
    pub horizontal: Constraint,
    pub vertical: Constraint,
}

/// An RGBA colour with channels in 0..1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Color {
    pub r: f64,
    pub g: f64,
    pub b: f64,
    pub a: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GradientKind {
    Linear,
    Radial,
    Angular,
    Diamond,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PaintKind {
    Solid(Color),
    Gradient {
        kind: GradientKind,
        /// Start, end and width handles in the node's normalized space.
        handles: Vec<(f64, f64)>,
        stops: Vec<(f64, Color)>,
    },
    Image {
        image_ref: Option<String>,
        /// `scaleMode`: FILL, FIT, TILE or STRETCH.
        scale_mode: Option<String>,
        /// Where the image can be downloaded (`GET /v1/files/:key/images`), once resolved.
        url: Option<String>,
    },
    /// EMOJI, VIDEO and anything newer.
    Other(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Paint {
    pub kind: PaintKind,
    pub opacity: f64,
    pub blend_mode: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrokeAlign {
    Inside,
    Outside,
    Center,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stroke {
    /// Visible stroke paints, bottom first as in the API.
    pub paints: Vec<Paint>,
    pub weight: f64,
    /// top, right, bottom, left.
    pub individual: Option<[f64; 4]>,
    pub align: StrokeAlign,
    pub dashed: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EffectKind {
    DropShadow,
    InnerShadow,
    LayerBlur,
    BackgroundBlur,
    Other(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Effect {
    pub kind: EffectKind,
    pub radius: f64,
    pub color: Color,
    pub offset: (f64, f64),
    pub spread: f64,
}

/// A TypeStyle, or an entry of `styleOverrideTable` (where every field may be absent).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TypeStyle {
    pub family: Option<String>,
    pub weight: Option<f64>,
    pub size: Option<f64>,
    pub italic: Option<bool>,
    pub align_h: Option<String>,
    pub align_v: Option<String>,
    pub letter_spacing: Option<f64>,
    pub line_height_px: Option<f64>,
    pub text_case: Option<String>,
    pub decoration: Option<String>,
    pub paragraph_spacing: Option<f64>,
    /// Visible fills when the style sets them (overrides often do).
    pub fills: Option<Vec<Paint>>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Text {
    pub characters: String,
    pub style: TypeStyle,
    /// Style id per UTF-16 code unit; 0 (or past the end) is the base style.
    pub overrides: Vec<u32>,
    pub table: BTreeMap<u32, TypeStyle>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub id: String,
    pub name: String,
    pub kind: NodeKind,
    pub bbox: Rect,
    /// Visible children only; hidden ones are counted in `hidden`.
    pub children: Vec<Node>,
    pub hidden: usize,
    pub layout: Option<AutoLayout>,
    pub child: ChildLayout,
    pub clips: bool,
    /// Visible fills, bottom first.
    pub fills: Vec<Paint>,
    pub stroke: Option<Stroke>,
    pub radius: Option<f64>,
    /// top-left, top-right, bottom-right, bottom-left.
    pub radii: Option<[f64; 4]>,
    /// Visible effects.
    pub effects: Vec<Effect>,
    pub opacity: f64,
    pub blend_mode: Option<String>,
    pub rotation: f64,
    pub is_mask: bool,
    pub text: Option<Text>,
    pub component_id: Option<String>,
}
