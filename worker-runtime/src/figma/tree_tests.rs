//! The clean tree of a design file, read as the spec of `clean_file` and `clean_components`.

use serde_json::{Value, json};

use super::*;

fn design() -> Value {
    serde_json::from_str(include_str!("../../../tests/data/figma/design.json"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn clean(depth: Option<u32>) -> Value {
    clean_file(&design(), depth).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_file_keeps_its_header_and_pages() {
    let c = clean(None);
    assert_eq!(
        (&c["name"], &c["lastModified"], &c["version"]),
        (
            &json!("Cogo Mobile"),
            &json!("2025-05-12T09:30:00Z"),
            &json!("5123456789")
        )
    );
    let pages: Vec<&str> = c["pages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(pages, ["Screens", "Components"]);
    assert_eq!(c["hiddenNodes"], 1);
}

#[test]
fn nodes_are_compact_and_placed_relative_to_their_parent() {
    let c = clean(None);
    let frame = &c["pages"][0]["children"][0];
    assert_eq!(
        (
            &frame["id"],
            &frame["type"],
            &frame["x"],
            &frame["y"],
            &frame["width"],
            &frame["height"]
        ),
        (
            &json!("1:2"),
            &json!("FRAME"),
            &json!(100.0),
            &json!(200.0),
            &json!(375.0),
            &json!(812.0)
        ),
    );
    assert_eq!(
        frame["layout"],
        json!({"mode": "VERTICAL", "gap": 24.0, "padding": [48.0, 24.0, 32.0, 24.0],
               "primaryAlign": "MIN", "counterAlign": "MIN"})
    );
    let title = &frame["children"][0];
    assert_eq!(
        (&title["x"], &title["y"], &title["text"]),
        (&json!(24.0), &json!(48.0), &json!("Welcome back"))
    );
    assert_eq!(title["sizing"], json!({"horizontal": "FILL", "vertical": "HUG"}));
    let email = &frame["children"][1];
    assert_eq!(
        (&email["type"], &email["componentId"]),
        (&json!("INSTANCE"), &json!("11:1"))
    );
    let button_label = &frame["children"][3]["children"][0];
    assert_eq!(
        (&button_label["x"], &button_label["y"]),
        (&json!(133.5), &json!(12.0)),
        "relative to the button"
    );
    // The raw paints, constraints and render bounds are gone.
    assert!(frame.get("fills").is_none() && frame.get("absoluteBoundingBox").is_none());
}

#[test]
fn hidden_nodes_are_dropped_but_counted() {
    let c = clean(None);
    let card = &c["pages"][0]["children"][0]["children"][4];
    assert_eq!(card["name"], "Promo card");
    assert_eq!(card["hiddenChildren"], 1);
    let names: Vec<&str> = card["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["Avatar", "Copy", "Chevron"]);
}

#[test]
fn depth_cuts_nesting_and_marks_what_was_cut() {
    let pages_only = clean(Some(1));
    let page = &pages_only["pages"][0];
    assert_eq!((page.get("children"), &page["truncated"]), (None, &json!(true)));
    let frames = clean(Some(2));
    let frame = &frames["pages"][0]["children"][0];
    assert_eq!((frame.get("children"), &frame["truncated"]), (None, &json!(true)));
    let deeper = clean(Some(3));
    let title = &deeper["pages"][0]["children"][0]["children"][0];
    assert_eq!(title["name"], "Title");
    assert!(title.get("truncated").is_none(), "a leaf has nothing to cut");
    assert_eq!(
        deeper["pages"][0]["children"][0]["children"][1]["truncated"],
        true
    );
    // The catalog does not depend on depth.
    assert_eq!(pages_only["components"], clean(None)["components"]);
}

#[test]
fn depth_zero_is_refused() {
    assert_eq!(clean_file(&design(), Some(0)), Err(FigmaError::InvalidDepth));
}

#[test]
fn components_sets_and_styles_are_listed_with_where_they_live() {
    let c = clean_components(&design()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c["components"],
        json!([
            {"id": "10:2", "key": "5b7f2c1e9a0d4e3f8b6c1a2d3e4f5a6b7c8d9e0f", "name": "Variant=Primary",
             "description": "Main call to action", "componentSet": "10:1", "page": "Components"},
            {"id": "10:4", "key": "6c8a3d2f0b1e5f4a9c7d2b3e4f5a6b7c8d9e0f1a", "name": "Variant=Secondary",
             "description": "Secondary action", "componentSet": "10:1", "page": "Components"},
            {"id": "11:1", "key": "7d9b4e3a1c2f6a5b0d8e3c4f5a6b7c8d9e0f1a2b", "name": "Input",
             "description": "Text field with a label", "page": "Components"}
        ])
    );
    assert_eq!(c["componentSets"][0]["variants"], json!(["10:2", "10:4"]));
    assert_eq!(c["componentSets"][0]["page"], "Components");
    let styles: Vec<(&str, &str)> = c["styles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["type"].as_str()?, s["name"].as_str()?)))
        .collect();
    assert_eq!(
        styles,
        [
            ("EFFECT", "Shadow/Card"),
            ("FILL", "Brand/Primary"),
            ("GRID", "Grid/4pt"),
            ("TEXT", "Heading/H1")
        ]
    );
}

#[test]
fn malformed_files_name_the_field() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut d = design();
        f(&mut d);
        d
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!("file"),
            "wrong_type",
            "field `<root>` should be an object but is a string",
        ),
        (
            with(&|d| d["document"] = Value::Null),
            "missing_field",
            "missing field `document`",
        ),
        (
            with(&|d| {
                d["document"]["children"][0]["children"][0]["children"][0]["absoluteBoundingBox"] =
                    Value::Null
            }),
            "missing_field",
            "`document.children[0].children[0].children[0].absoluteBoundingBox`",
        ),
        (
            with(&|d| d["document"]["children"][1]["name"] = json!(7)),
            "wrong_type",
            "`document.children[1].name` should be a string but is a number",
        ),
        (
            with(&|d| d["components"]["11:1"]["key"] = Value::Null),
            "missing_field",
            r#"`components["11:1"].key`"#,
        ),
        (
            with(&|d| d["styles"]["20:1"] = json!([])),
            "wrong_type",
            r#"`styles["20:1"]` should be an object"#,
        ),
    ];
    for (file, code, fragment) in cases {
        let e = clean_file(&file, None)
            .err()
            .unwrap_or_else(|| panic!("{fragment}: expected an error"));
        assert_eq!(e.code(), code, "{e}");
        assert!(
            e.to_string().contains(fragment),
            "{e} does not contain {fragment}"
        );
    }
}
