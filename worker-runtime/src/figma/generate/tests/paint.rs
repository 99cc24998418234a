//! Fills, gradients, strokes, radii, effects, opacity and clipping.

use serde_json::{Value, json};

use super::*;

fn gradient(kind: &str, handles: [(f64, f64); 3]) -> Value {
    json!({
        "type": kind,
        "gradientHandlePositions": handles.map(|(x, y)| json!({"x": x, "y": y})),
        "gradientStops": [
            {"position": 0, "color": {"r": 1, "g": 0, "b": 0, "a": 1}},
            {"position": 1, "color": {"r": 0, "g": 0, "b": 1, "a": 1}}
        ]
    })
}

fn style_with(n: N) -> BTreeMap<String, String> {
    let g = html(frame("1:1", "Root").child(n));
    style_of(&g.code, "1:2")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn solid_fills_carry_paint_opacity_and_node_opacity_separately() {
    let paint = json!({"type": "SOLID", "opacity": 0.5, "color": {"r": 1, "g": 0.5, "b": 0, "a": 0.8}});
    let s = style_with(rect("1:2", "R").fills(json!([paint])).set("opacity", json!(0.25)));
    assert_eq!(s["background-color"], "rgba(255, 128, 0, 0.4)");
    assert_eq!(s["opacity"], "0.25");
}

#[test]
fn several_fills_are_layered_top_first() {
    let top = gradient("GRADIENT_LINEAR", [(0.0, 0.5), (1.0, 0.5), (0.0, 1.0)]);
    let s = style_with(rect("1:2", "R").fills(json!([solid(1.0, 1.0, 1.0), solid(0.0, 0.0, 0.0), top])));
    assert_eq!(
        s["background"],
        "linear-gradient(90deg, #ff0000 0%, #0000ff 100%), linear-gradient(#000000, #000000), #ffffff"
    );
    assert!(!s.contains_key("background-color"));
}

#[test]
fn invisible_fills_are_skipped() {
    let hidden = json!({"type": "SOLID", "visible": false, "color": {"r": 1, "g": 0, "b": 0}});
    let s = style_with(rect("1:2", "R").fills(json!([hidden])));
    assert!(!s.contains_key("background-color") && !s.contains_key("background"));
}

#[test]
fn linear_gradient_angles_come_from_the_handles() {
    // (start, end, width handle) on a 100x100 box → CSS
    let cases = [
        (
            [(0.5, 0.0), (0.5, 1.0), (0.0, 0.0)],
            "linear-gradient(180deg, #ff0000 0%, #0000ff 100%)",
        ),
        (
            [(0.0, 0.5), (1.0, 0.5), (0.0, 1.0)],
            "linear-gradient(90deg, #ff0000 0%, #0000ff 100%)",
        ),
        (
            [(0.5, 1.0), (0.5, 0.0), (1.0, 1.0)],
            "linear-gradient(0deg, #ff0000 0%, #0000ff 100%)",
        ),
        // Handles inset by a quarter: stops land at 25% and 75% of the CSS gradient line.
        (
            [(0.25, 0.5), (0.75, 0.5), (0.25, 1.0)],
            "linear-gradient(90deg, #ff0000 25%, #0000ff 75%)",
        ),
        (
            [(0.0, 0.0), (1.0, 1.0), (-0.5, 0.5)],
            "linear-gradient(135deg, #ff0000 0%, #0000ff 100%)",
        ),
    ];
    for (handles, expected) in cases {
        let s = style_with(
            rect("1:2", "R")
                .at(0.0, 0.0, 100.0, 100.0)
                .fills(json!([gradient("GRADIENT_LINEAR", handles)])),
        );
        assert_eq!(s["background"], expected, "{handles:?}");
    }
}

#[test]
fn other_gradients_are_drawn_and_reported_when_approximated() {
    let handles = [(0.5, 0.5), (1.0, 0.5), (0.5, 1.0)];
    let cases = [
        (
            "GRADIENT_RADIAL",
            "radial-gradient(ellipse 50px 50px at 50px 50px",
            None,
        ),
        (
            "GRADIENT_DIAMOND",
            "radial-gradient(",
            Some("GRADIENT_DIAMOND approximated"),
        ),
        (
            "GRADIENT_ANGULAR",
            "conic-gradient(from 90deg at 50px 50px",
            Some("GRADIENT_ANGULAR approximated"),
        ),
    ];
    for (kind, css, warning) in cases {
        let g = html(frame("1:1", "Root").child(rect("1:2", "R").fills(json!([gradient(kind, handles)]))));
        assert!(
            style_of(&g.code, "1:2")["background"].starts_with(css),
            "{kind}: {}",
            g.code
        );
        match warning {
            Some(w) => assert_warned(&g.warnings, "1:2", w),
            None => assert!(g.warnings.is_empty(), "{:?}", g.warnings),
        }
    }
}

#[test]
fn strokes_become_borders_or_outlines() {
    let black = json!([solid(0.0, 0.0, 0.0)]);
    let cases: [(&str, Option<Value>, bool, Decls); 5] = [
        ("INSIDE", None, false, &[("border", "3px solid #000000")]),
        ("INSIDE", None, true, &[("border", "3px dashed #000000")]),
        (
            "INSIDE",
            Some(json!({"top": 1, "right": 0, "bottom": 2, "left": 0})),
            false,
            &[
                ("border-width", "1px 0 2px 0"),
                ("border-style", "solid"),
                ("border-color", "#000000"),
            ],
        ),
        ("OUTSIDE", None, false, &[("outline", "3px solid #000000")]),
        (
            "CENTER",
            None,
            false,
            &[("outline", "3px solid #000000"), ("outline-offset", "-1.5px")],
        ),
    ];
    for (align, individual, dashed, expected) in cases {
        let mut r = rect("1:2", "R")
            .set("strokes", black.clone())
            .set("strokeWeight", json!(3))
            .set("strokeAlign", json!(align));
        if let Some(w) = individual {
            r = r.set("individualStrokeWeights", w);
        }
        if dashed {
            r = r.set("strokeDashes", json!([4, 2]));
        }
        let s = style_with(r);
        for (k, v) in expected {
            assert_eq!(s.get(*k).map(String::as_str), Some(*v), "{align}: {k} in {s:?}");
        }
    }
}

#[test]
fn corner_radii_and_ellipses() {
    let cases = [
        (rect("1:2", "R").set("cornerRadius", json!(8)), "8px"),
        (
            rect("1:2", "R").set("rectangleCornerRadii", json!([1, 2, 3, 4])),
            "1px 2px 3px 4px",
        ),
        (
            rect("1:2", "R").set("rectangleCornerRadii", json!([6, 6, 6, 6])),
            "6px",
        ),
        (node("ELLIPSE", "1:2", "Avatar"), "50%"),
    ];
    for (n, expected) in cases {
        assert_eq!(style_with(n)["border-radius"], expected);
    }
}

#[test]
fn effects_become_shadows_and_filters() {
    let shadow = |kind: &str| {
        json!({"type": kind, "radius": 8, "spread": 2, "offset": {"x": 1, "y": 4},
               "color": {"r": 0, "g": 0, "b": 0, "a": 0.25}})
    };
    let blur = |kind: &str| json!({"type": kind, "radius": 10});
    let s = style_with(rect("1:2", "R").set(
        "effects",
        json!([
            shadow("DROP_SHADOW"),
            shadow("INNER_SHADOW"),
            blur("LAYER_BLUR"),
            blur("BACKGROUND_BLUR")
        ]),
    ));
    assert_eq!(
        s["box-shadow"],
        "inset 1px 4px 8px 2px rgba(0, 0, 0, 0.25), 1px 4px 8px 2px rgba(0, 0, 0, 0.25)"
    );
    assert_eq!(s["filter"], "blur(5px)");
    assert_eq!(s["backdrop-filter"], "blur(5px)");
}

#[test]
fn hidden_effects_are_skipped() {
    let e =
        json!([{"type": "DROP_SHADOW", "visible": false, "radius": 8, "color": {"r": 0, "g": 0, "b": 0}}]);
    assert!(!style_with(rect("1:2", "R").set("effects", e)).contains_key("box-shadow"));
}

#[test]
fn clipping_frames_hide_their_overflow() {
    let clipped = frame("1:2", "Clip")
        .set("clipsContent", json!(true))
        .child(rect("1:3", "R"));
    assert_eq!(style_with(clipped)["overflow"], "hidden");
}

#[test]
fn unmappable_paint_and_shapes_are_drawn_and_reported() {
    let image = json!([{"type": "IMAGE", "imageRef": "abc123", "scaleMode": "FILL"}]);
    let cases = [
        (
            rect("1:2", "Photo").fills(image),
            "IMAGE fill (imageRef abc123) rendered as a grey placeholder",
        ),
        (
            rect("1:2", "E").fills(json!([{"type": "EMOJI"}])),
            "EMOJI fill not supported",
        ),
        (node("VECTOR", "1:2", "Icon"), "VECTOR drawn as its bounding box"),
        (node("STAR", "1:2", "Star"), "STAR drawn as its bounding box"),
        (node("LINE", "1:2", "Rule"), "LINE drawn as its bounding box"),
        (
            node("REGULAR_POLYGON", "1:2", "Hex"),
            "REGULAR_POLYGON drawn as its bounding box",
        ),
        (
            node("BOOLEAN_OPERATION", "1:2", "Union").child(rect("1:3", "A")),
            "its 1 operand layers are not drawn",
        ),
        (
            node("WASHI_TAPE", "1:2", "Tape"),
            "unknown node type WASHI_TAPE drawn as a box",
        ),
        (
            rect("1:2", "Tilt").set("rotation", json!(15)),
            "rotation 15 not applied",
        ),
        (
            rect("1:2", "M").set("blendMode", json!("MULTIPLY")),
            "approximated with mix-blend-mode: multiply",
        ),
        (
            rect("1:2", "L").set("blendMode", json!("LINEAR_BURN")),
            "blend mode LINEAR_BURN not supported",
        ),
        (
            rect("1:2", "Mask").set("isMask", json!(true)),
            "mask not supported",
        ),
        (
            frame("1:2", "Grid").set("layoutMode", json!("GRID")),
            "unknown layoutMode \"GRID\"",
        ),
        (
            rect("1:2", "Two").set("strokes", json!([solid(0.0, 0.0, 0.0), solid(1.0, 1.0, 1.0)])),
            "2 stroke paints; only the top one drawn",
        ),
        (
            text("1:2", "Outlined", "Hi").set("strokes", json!([solid(0.0, 0.0, 0.0)])),
            "text strokes not supported",
        ),
    ];
    for (n, fragment) in cases {
        let g = html(frame("1:1", "Root").child(n));
        assert_warned(&g.warnings, "1:2", fragment);
        assert!(
            g.code.contains("data-node-id=\"1:2\""),
            "the layer is still drawn"
        );
    }
}

#[test]
fn hidden_layers_are_left_out_without_warnings() {
    let g = html(
        frame("1:1", "Root").child(
            rect("1:2", "Hidden")
                .set("visible", json!(false))
                .set("rotation", json!(9)),
        ),
    );
    assert!(!g.code.contains("1:2"));
    assert!(g.warnings.is_empty());
}

#[test]
fn a_line_is_drawn_by_an_outline_around_its_flat_box() {
    let line = node("LINE", "1:2", "Divider")
        .at(0.0, 10.0, 100.0, 0.0)
        .set("strokes", json!([solid(0.0, 0.0, 0.0)]))
        .set("strokeWeight", json!(2))
        .set("strokeAlign", json!("CENTER"));
    let s = style_with(line);
    assert_eq!(
        (s["height"].as_str(), s["outline"].as_str()),
        ("0", "1px solid #000000")
    );
    assert!(!s.contains_key("outline-offset"));
}

#[test]
fn image_fills_show_their_image_when_figma_gives_a_plain_address() {
    let fills = |mode: &str| json!([{"type": "IMAGE", "imageRef": "abc123", "scaleMode": mode}]);
    let root = frame("1:1", "Root").child(rect("1:2", "Photo").fills(fills("FIT")));
    let images = |url: &str| [("abc123".to_string(), url.to_string())].into();
    let g = crate::figma::generate_ui_with_images(
        &response(root.clone()),
        "1:1",
        Framework::Html,
        &images("https://images.example/abc123.png"),
    )
    .unwrap();
    let s = style_of(&g.code, "1:2");
    assert_eq!(
        s["background"],
        "url(\"https://images.example/abc123.png\") center / contain no-repeat"
    );
    assert!(
        g.warnings[0].contains("loaded from Figma's image address"),
        "{:?}",
        g.warnings
    );
    assert_eq!(
        crate::figma::image_refs(&response(root.clone()), "1:1"),
        ["abc123"]
    );
    // An address that could break out of the CSS is not used.
    for hostile in [
        "https://x/a\"); background: red; (\"",
        "javascript:alert(1)",
        "https://x/a b",
    ] {
        let g = crate::figma::generate_ui_with_images(
            &response(root.clone()),
            "1:1",
            Framework::Html,
            &images(hostile),
        )
        .unwrap();
        assert!(!g.code.contains("url("), "{hostile}: {}", g.code);
        assert!(g.warnings[0].contains("grey placeholder"), "{hostile}");
    }
}
