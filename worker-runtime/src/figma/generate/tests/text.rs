//! TEXT nodes: type styles, fixed boxes, alignment and mixed styles.

use serde_json::json;

use super::*;

fn styled(style: serde_json::Value) -> N {
    text("1:2", "Label", "Hello")
        .at(0.0, 0.0, 120.0, 24.0)
        .set("style", style)
}

fn style_with(n: N) -> Vec<(String, String)> {
    let g = html(frame("1:1", "Root").child(n));
    style_of(&g.code, "1:2")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn type_styles_map_to_font_properties() {
    // (TypeStyle field, value, CSS property, CSS value)
    let cases = [
        (
            "fontFamily",
            json!("Inter"),
            "font-family",
            "\"Inter\", sans-serif",
        ),
        (
            "fontFamily",
            json!("JetBrains Mono"),
            "font-family",
            "\"JetBrains Mono\", monospace",
        ),
        (
            "fontFamily",
            json!("Noto Serif"),
            "font-family",
            "\"Noto Serif\", serif",
        ),
        ("fontWeight", json!(600), "font-weight", "600"),
        ("fontSize", json!(14.5), "font-size", "14.5px"),
        ("italic", json!(true), "font-style", "italic"),
        ("lineHeightPx", json!(21.78), "line-height", "21.78px"),
        ("letterSpacing", json!(-0.5), "letter-spacing", "-0.5px"),
        ("textAlignHorizontal", json!("CENTER"), "text-align", "center"),
        ("textAlignHorizontal", json!("RIGHT"), "text-align", "right"),
        ("textAlignHorizontal", json!("JUSTIFIED"), "text-align", "justify"),
        ("textCase", json!("UPPER"), "text-transform", "uppercase"),
        ("textCase", json!("LOWER"), "text-transform", "lowercase"),
        ("textCase", json!("TITLE"), "text-transform", "capitalize"),
        ("textCase", json!("SMALL_CAPS"), "font-variant-caps", "small-caps"),
        (
            "textDecoration",
            json!("UNDERLINE"),
            "text-decoration",
            "underline",
        ),
        (
            "textDecoration",
            json!("STRIKETHROUGH"),
            "text-decoration",
            "line-through",
        ),
    ];
    for (field, value, prop, css) in cases {
        let s = style_with(styled(json!({ field: value })));
        assert!(
            s.contains(&(prop.to_string(), css.to_string())),
            "{field}={value}: {s:?}"
        );
    }
}

#[test]
fn text_colour_comes_from_the_top_fill() {
    let fills =
        json!([solid(1.0, 0.0, 0.0), {"type": "SOLID", "opacity": 0.5, "color": {"r": 0, "g": 0, "b": 1}}]);
    let g = html(frame("1:1", "Root").child(text("1:2", "T", "x").fills(fills)));
    assert_eq!(style_of(&g.code, "1:2")["color"], "rgba(0, 0, 255, 0.5)");
    assert_warned(&g.warnings, "1:2", "2 text fills; only the top one drawn");
    assert!(
        !style_of(&g.code, "1:2").contains_key("background-color"),
        "text fills are not backgrounds"
    );
}

#[test]
fn text_boxes_have_explicit_sizes_so_fonts_cannot_move_them() {
    let s = style_with(
        text("1:2", "T", "Hello")
            .at(0.0, 0.0, 120.0, 24.0)
            .sizing("HUG", "HUG"),
    );
    assert!(s.contains(&("width".into(), "120px".into())) && s.contains(&("height".into(), "24px".into())));
    assert!(s.contains(&("white-space".into(), "pre-wrap".into())));
    // FILL in auto layout: the flex item takes its width from the row instead.
    let g = html(
        frame("1:1", "Row")
            .auto("HORIZONTAL", 0.0)
            .child(text("1:2", "T", "x").sizing("FILL", "HUG")),
    );
    let s = style_of(&g.code, "1:2");
    assert_eq!((s["flex"], s["height"]), ("1 1 0", "100px"));
    assert!(!s.contains_key("width"));
}

#[test]
fn vertical_alignment_wraps_the_runs_in_a_flex_column() {
    let g = html(frame("1:1", "Root").child(styled(json!({"textAlignVertical": "CENTER"}))));
    let s = style_of(&g.code, "1:2");
    assert_eq!(
        (s["display"], s["flex-direction"], s["justify-content"]),
        ("flex", "column", "center")
    );
    assert!(g.code.contains("><span>Hello</span></div>"), "{}", g.code);
}

#[test]
fn mixed_styles_become_spans() {
    let t = text("1:2", "Body", "Get 20% off")
        .set("characterStyleOverrides", json!([0, 0, 0, 0, 1, 1, 1]))
        .set(
            "styleOverrideTable",
            json!({"1": {"fontWeight": 700, "textDecoration": "UNDERLINE",
                                                 "fills": [solid(1.0, 0.0, 0.0)]}}),
        );
    let g = html(frame("1:1", "Root").child(t));
    assert!(
        g.code
            .contains(">Get <span class=\"body-run\">20%</span> off</div>"),
        "{}",
        g.code
    );
    let r = rule(&g.code, "body-run");
    assert_eq!(
        (r["font-weight"], r["text-decoration"], r["color"]),
        ("700", "underline", "#ff0000")
    );
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
}

#[test]
fn style_overrides_count_utf16_units_like_figma() {
    // "😀" is two UTF-16 units; the override starts at unit 3, the "b".
    let t = text("1:2", "T", "😀ab")
        .set("characterStyleOverrides", json!([0, 0, 0, 1]))
        .set("styleOverrideTable", json!({"1": {"italic": true}}));
    let g = html(frame("1:1", "Root").child(t));
    assert!(
        g.code.contains(">😀a<span class=\"t-run\">b</span></div>"),
        "{}",
        g.code
    );
}

#[test]
fn an_override_missing_from_the_table_is_reported() {
    let t = text("1:2", "T", "ab").set("characterStyleOverrides", json!([0, 7]));
    let g = html(frame("1:1", "Root").child(t));
    assert_warned(
        &g.warnings,
        "1:2",
        "style override 7 is not in styleOverrideTable",
    );
    assert!(g.code.contains(">ab</div>"));
}

#[test]
fn text_shadows_follow_the_glyphs() {
    let e = json!([{"type": "DROP_SHADOW", "radius": 2, "spread": 1, "offset": {"x": 0, "y": 1},
                    "color": {"r": 0, "g": 0, "b": 0, "a": 0.5}}]);
    let g = html(frame("1:1", "Root").child(text("1:2", "T", "x").set("effects", e)));
    assert_eq!(
        style_of(&g.code, "1:2")["text-shadow"],
        "0 1px 2px rgba(0, 0, 0, 0.5)"
    );
    assert_warned(
        &g.warnings,
        "1:2",
        "spread of a DROP_SHADOW on text not supported",
    );
}
