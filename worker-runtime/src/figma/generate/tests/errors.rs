//! Bad requests and malformed responses are refused with an error that names the field.

use serde_json::{Value, json};

use super::*;
use crate::figma::FigmaError;

fn err(resp: &Value, id: &str) -> FigmaError {
    match generate_ui(resp, id, Framework::Html) {
        Ok(g) => panic!("expected an error, got:\n{}", g.code),
        Err(e) => e,
    }
}

#[test]
fn malformed_responses_name_the_field() {
    let with_child = |child: N| response(frame("1:1", "Root").child(child));
    // (response, requested id, error code, fragment of the message)
    let cases: Vec<(Value, &str, &str, &str)> = vec![
        (
            json!([]),
            "1:1",
            "wrong_type",
            "field `<root>` should be an object but is an array",
        ),
        (
            json!({"name": "x"}),
            "1:1",
            "missing_field",
            "missing field `nodes`",
        ),
        (
            json!({"nodes": {"1:1": {}}}),
            "1:1",
            "missing_field",
            r#"`nodes["1:1"].document`"#,
        ),
        (
            with_child(rect("1:2", "R").set("absoluteBoundingBox", Value::Null)),
            "1:1",
            "missing_field",
            r#"`nodes["1:1"].document.children[0].absoluteBoundingBox`"#,
        ),
        (
            with_child(
                rect("1:2", "R").fills(json!([{"type": "SOLID", "color": {"r": "red", "g": 0, "b": 0}}])),
            ),
            "1:1",
            "wrong_type",
            r#"`nodes["1:1"].document.children[0].fills[0].color.r` should be a number but is a string"#,
        ),
        (
            with_child(rect("1:2", "R").at(0.0, 0.0, -5.0, 10.0)),
            "1:1",
            "invalid_value",
            "negative size -5x10",
        ),
        (
            with_child(rect("1:2", "R").set("rectangleCornerRadii", json!([1, 2]))),
            "1:1",
            "invalid_value",
            "expected 4 radii, found 2",
        ),
        (
            with_child(node("INSTANCE", "1:2", "I")),
            "1:1",
            "missing_field",
            r#"`nodes["1:1"].document.children[0].componentId`"#,
        ),
        (
            with_child(text("1:2", "T", "x").set("characterStyleOverrides", json!([0, -1]))),
            "1:1",
            "wrong_type",
            "characterStyleOverrides[1]` should be a style id",
        ),
        (
            with_child(rect("1:2", "R").fills(json!([{"type": "GRADIENT_LINEAR", "gradientStops": []}]))),
            "1:1",
            "invalid_value",
            "a gradient needs at least 2 handle positions",
        ),
        (
            with_child(rect("1:2", "R").set("children", json!({}))),
            "1:1",
            "wrong_type",
            "children` should be an array",
        ),
    ];
    for (resp, id, code, fragment) in cases {
        let e = err(&resp, id);
        assert_eq!(e.code(), code, "{e}");
        assert!(
            e.to_string().contains(fragment),
            "{e:?} does not contain {fragment}"
        );
    }
}

#[test]
fn an_unknown_node_id_lists_the_ones_available() {
    let resp = response(frame("1:1", "Root"));
    let e = err(&resp, "9:9");
    assert_eq!(
        e,
        FigmaError::NodeNotFound {
            node_id: "9:9".into(),
            available: vec!["1:1".into()]
        }
    );
    assert_eq!(e.to_string(), "node \"9:9\" is not in the response; it holds 1:1");
    // Figma answers `null` for ids it does not have.
    let e = err(&json!({"nodes": {"9:9": null}}), "9:9");
    assert_eq!(e.code(), "node_not_found");
}

#[test]
fn the_url_form_of_an_id_is_accepted() {
    let resp = response(frame("1:1", "Root"));
    assert!(generate_ui(&resp, "1-1", Framework::Html).is_ok());
}

#[test]
fn only_containers_can_be_generated() {
    for kind in ["TEXT", "RECTANGLE", "VECTOR", "CANVAS", "DOCUMENT"] {
        let e = err(&response(node(kind, "1:1", "X")), "1:1");
        assert_eq!(
            e,
            FigmaError::UnsupportedRoot {
                node_id: "1:1".into(),
                node_type: kind.into()
            }
        );
    }
    for kind in ["FRAME", "COMPONENT", "COMPONENT_SET", "GROUP", "SECTION"] {
        assert!(
            generate_ui(&response(node(kind, "1:1", "X")), "1:1", Framework::Html).is_ok(),
            "{kind}"
        );
    }
}

#[test]
fn junk_inside_hidden_layers_is_never_read() {
    let junk = rect("1:2", "Hidden")
        .set("visible", json!(false))
        .set("fills", json!("not a list"));
    assert!(
        generate_ui(
            &response(frame("1:1", "Root").child(junk)),
            "1:1",
            Framework::Html
        )
        .is_ok()
    );
}
