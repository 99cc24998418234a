//! The shipped fixtures: a realistic sign-in screen and the synthetic benchmark frame.

use serde_json::Value;

use super::*;
use crate::figma::fixture::{BENCH_FRAME_ID, frame_with_nodes};

pub(crate) fn load(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("fixture is not JSON: {e}"))
}

pub(crate) fn design() -> Value {
    load(include_str!("../../../../../tests/data/figma/design.json"))
}

pub(crate) fn nodes() -> Value {
    load(include_str!("../../../../../tests/data/figma/nodes.json"))
}

/// Visible node ids of a subtree, in document order.
fn visible_ids(n: &Value, out: &mut Vec<String>) {
    if n["visible"] == Value::Bool(false) {
        return;
    }
    out.push(n["id"].as_str().unwrap_or_default().to_string());
    for c in n["children"].as_array().into_iter().flatten() {
        visible_ids(c, out);
    }
}

#[test]
fn the_nodes_fixture_is_the_sign_in_frame_of_the_design_fixture() {
    let design = design();
    let frame = &design["document"]["children"][0]["children"][0];
    assert_eq!(frame["name"], "Sign in");
    assert_eq!(&nodes()["nodes"]["1:2"]["document"], frame);
}

#[test]
fn the_sign_in_screen_renders_every_visible_layer() {
    let g = generate_ui(&nodes(), "1:2", Framework::Html).unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    visible_ids(&nodes()["nodes"]["1:2"]["document"], &mut ids);
    assert_eq!(ids.len(), 25);
    for id in &ids {
        assert_eq!(
            g.code.matches(&format!("data-node-id=\"{id}\"")).count(),
            1,
            "{id}"
        );
    }
    assert!(!g.code.contains("1:12"), "the hidden badge is left out");
    assert_eq!(
        g.warnings,
        [
            "1:13 \"Chevron\": VECTOR drawn as its bounding box with its fills and strokes",
            "1:15 \"Background image\": IMAGE fill (imageRef 7d3c0a9f2b41e8c6d5f0a1b2c3d4e5f6a7b8c9d0) \
             rendered as a grey placeholder",
            "1:20 \"Divider\": LINE drawn as its bounding box with its fills and strokes",
        ]
    );
    // Spot checks of the mapping, against the fixture's documented values.
    let root = style_of(&g.code, "1:2");
    assert_eq!(
        (root["width"], root["height"], root["padding"]),
        ("375px", "812px", "48px 24px 32px 24px")
    );
    let card = style_of(&g.code, "1:7");
    assert_eq!(
        card["background"],
        "linear-gradient(90deg, #eef2ff 0%, #ffffff 100%)"
    );
    assert_eq!(card["box-shadow"], "0 4px 12px 0 rgba(15, 23, 42, 0.08)");
    assert_eq!(
        classes_of(&g.code, "1:4"),
        classes_of(&g.code, "1:5"),
        "both inputs share the Input class"
    );
    assert!(g.code.contains(">Password</div>") && g.code.contains(">••••••••</div>"));
}

#[test]
fn the_sign_in_screen_as_react_reuses_input_and_button() {
    let g = generate_ui(&nodes(), "1:2", Framework::React).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.code.matches("export function Input(").count(), 1);
    assert_eq!(g.code.matches("export function ButtonPrimary(").count(), 1);
    assert!(g.code.contains("export default function SignIn()"));
    assert!(g.code.contains(
        r#"<Input nodeId={"1:5"} parts={{ "11:2": { text: "Password" }, "11:4": { text: "••••••••" } }} />"#
    ));
    assert_eq!(g.warnings.len(), 3);
}

#[test]
fn the_benchmark_frame_nests_rows_of_cards() {
    let resp = frame_with_nodes(100);
    let root = &resp["nodes"][BENCH_FRAME_ID]["document"];
    let mut ids = Vec::new();
    visible_ids(root, &mut ids);
    assert_eq!(ids.len(), crate::figma::fixture::node_count(100));
    assert_eq!(ids.len(), 101);
    // Every layer lies inside its parent's box.
    fn inside(parent: &Value) {
        let b = &parent["absoluteBoundingBox"];
        let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        for c in parent["children"].as_array().into_iter().flatten() {
            let cb = &c["absoluteBoundingBox"];
            assert!(
                num(cb, "x") >= num(b, "x") && num(cb, "y") >= num(b, "y"),
                "{}",
                c["id"]
            );
            assert!(
                num(cb, "x") + num(cb, "width") <= num(b, "x") + num(b, "width"),
                "{}",
                c["id"]
            );
            assert!(
                num(cb, "y") + num(cb, "height") <= num(b, "y") + num(b, "height"),
                "{}",
                c["id"]
            );
            inside(c);
        }
    }
    inside(root);
}
