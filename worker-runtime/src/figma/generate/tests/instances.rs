//! Component instances are reused parts: one class (HTML) or one function component (React)
//! per component, with each instance's own overrides still drawn.

use serde_json::{Value, json};

use super::*;

/// An instance of component 5:1 ("Button") with its label layer, Figma-style ids.
fn button(id: &str, x: f64, label: &str) -> N {
    node("INSTANCE", id, "Button")
        .set("componentId", json!("5:1"))
        .at(x, 0.0, 80.0, 32.0)
        .auto("HORIZONTAL", 0.0)
        .pad(4.0, 8.0, 4.0, 8.0)
        .fills(json!([solid(0.0, 0.0, 1.0)]))
        .child(text(&format!("I{id};5:2"), "Label", label).at(x + 8.0, 4.0, 64.0, 24.0))
}

fn components() -> Value {
    json!({"5:1": {"key": "k51", "name": "Button", "description": ""},
           "6:1": {"key": "k61", "name": "Icon", "description": ""},
           "7:1": {"key": "k71", "name": "Card", "description": ""}})
}

fn generate(root: N, framework: Framework) -> Generated {
    let id = root.clone().value()["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match generate_ui(&response_with(root, components()), &id, framework) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

fn toolbar() -> N {
    frame("1:1", "Toolbar")
        .at(0.0, 0.0, 300.0, 32.0)
        .auto("HORIZONTAL", 10.0)
        .child(button("1:2", 0.0, "Save"))
        .child(button("1:3", 90.0, "Cancel"))
        .child(button("1:4", 180.0, "Save").fills(json!([solid(1.0, 0.0, 0.0)])))
}

#[test]
fn every_instance_of_a_component_shares_its_class() {
    let g = generate(toolbar(), Framework::Html);
    for id in ["1:2", "1:3", "1:4"] {
        assert_eq!(classes_of(&g.code, id)[0], "button", "{id}");
        assert_eq!(classes_of(&g.code, &format!("I{id};5:2")), ["button__label"]);
    }
    assert_eq!(
        g.code.matches("\n.button {").count(),
        1,
        "one rule for the component"
    );
    assert!(g.code.contains(">Cancel</div>"), "the overridden text is drawn");
}

#[test]
fn what_an_instance_overrides_goes_to_its_own_class() {
    let g = generate(toolbar(), Framework::Html);
    assert!(
        !rule(&g.code, "button").contains_key("background-color"),
        "the instances disagree on the fill"
    );
    assert_eq!(style_of(&g.code, "1:2")["background-color"], "#0000ff");
    assert_eq!(style_of(&g.code, "1:4")["background-color"], "#ff0000");
    assert_eq!(
        rule(&g.code, "button")["padding"],
        "4px 8px 4px 8px",
        "what they agree on is shared"
    );
}

#[test]
fn react_renders_each_component_once_and_passes_overrides_as_props() {
    let g = generate(toolbar(), Framework::React);
    assert_eq!(g.code.matches("export function Button(").count(), 1, "{}", g.code);
    assert!(
        g.code
            .contains(r#"<Button nodeId={"1:2"} className="button-2" />"#),
        "{}",
        g.code
    );
    assert!(
        g.code.contains(
            r#"<Button nodeId={"1:3"} className="button-2" parts={{ "5:2": { text: "Cancel" } }} />"#
        ),
        "{}",
        g.code
    );
    assert!(
        g.code
            .contains(r#"<Button nodeId={"1:4"} className="button-3" />"#),
        "{}",
        g.code
    );
    assert!(
        g.code.contains(r#"{parts["5:2"]?.text ?? "Save"}"#),
        "the first instance's text is the default"
    );
    assert!(g.code.contains(r#"data-node-id={sub(nodeId, "5:2")}"#));
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
}

#[test]
fn an_instance_with_different_layers_is_drawn_inline_in_react() {
    let odd = button("1:3", 90.0, "Cancel").child(rect("I1:3;5:9", "Extra").at(90.0, 0.0, 4.0, 4.0));
    let root = frame("1:1", "Bar").child(button("1:2", 0.0, "Save")).child(odd);
    let g = generate(root, Framework::React);
    assert_warned(
        &g.warnings,
        "1:3",
        "instance drawn inline in React: its layers differ",
    );
    assert!(g.code.contains(r#"<div data-node-id={"I1:3;5:9"}"#));
    assert!(g.code.contains(r#"<Button nodeId={"1:2"}"#));
}

#[test]
fn instance_layers_without_figma_ids_are_drawn_inline_in_react() {
    let mut odd = node("INSTANCE", "1:2", "Button").set("componentId", json!("5:1"));
    odd = odd.child(text("9:9", "Label", "Go"));
    let g = generate(frame("1:1", "Bar").child(odd), Framework::React);
    assert_warned(&g.warnings, "1:2", "do not follow Figma's instance id scheme");
    assert!(g.code.contains(r#"data-node-id={"9:9"}"#));
}

#[test]
fn nested_instances_render_as_their_own_components() {
    let icon = |id: &str| {
        node("INSTANCE", id, "Icon")
            .set("componentId", json!("6:1"))
            .at(0.0, 0.0, 16.0, 16.0)
            .fills(json!([solid(0.0, 0.0, 0.0)]))
    };
    let card = |id: &str, title: &str| {
        node("INSTANCE", id, "Card")
            .set("componentId", json!("7:1"))
            .auto("VERTICAL", 0.0)
            .child(icon(&format!("I{id};7:2")))
            .child(text(&format!("I{id};7:3"), "Title", title))
    };
    let root = frame("1:1", "List")
        .auto("VERTICAL", 0.0)
        .child(card("1:2", "One"))
        .child(card("1:3", "Two"));
    let g = generate(root, Framework::React);
    assert!(g.code.contains("export function Icon("), "{}", g.code);
    assert!(
        g.code.contains(r#"<Icon nodeId={sub(nodeId, "7:2")} className={cx("card__icon", parts["7:2"]?.className)} parts={parts["7:2"]?.parts} />"#),
        "{}",
        g.code
    );
    assert!(
        g.code.contains(r#"parts={{ "7:3": { text: "Two" } }}"#),
        "{}",
        g.code
    );
    // HTML: the nested instance carries the part class of the card and the class of the icon.
    let h = generate(card("1:2", "One"), Framework::Html);
    assert_eq!(classes_of(&h.code, "I1:2;7:2"), ["card__icon", "icon"]);
}

#[test]
fn variants_are_named_after_their_set_and_values() {
    let comps = json!({"5:1": {"key": "k", "name": "Variant=Primary, Size=Large", "componentSetId": "5:0"}});
    let mut resp = response_with(frame("1:1", "Bar").child(button("1:2", 0.0, "Go")), comps);
    resp["nodes"]["1:1"]["componentSets"] = json!({"5:0": {"key": "s", "name": "Button"}});
    let g = generate_ui(&resp, "1:1", Framework::React).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        g.code.contains("export function ButtonPrimaryLarge("),
        "{}",
        g.code
    );
    assert!(g.code.contains(r#"cx("button-primary-large", className)"#));
}

#[test]
fn a_frame_without_instances_needs_no_component_helpers() {
    let g = generate(frame("1:1", "Plain").child(rect("1:2", "R")), Framework::React);
    assert!(
        !g.code.contains("InstanceProps") && !g.code.contains("const cx"),
        "{}",
        g.code
    );
    assert!(
        generate(toolbar(), Framework::React)
            .code
            .contains("type InstanceProps")
    );
}
