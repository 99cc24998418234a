//! Auto layout to flexbox, child sizing, constraints and the root's geometry.

use serde_json::json;

use super::*;

#[test]
fn the_root_is_the_frame_at_its_own_size() {
    let g = html(frame("1:1", "Screen").at(300.0, 500.0, 375.0, 812.0));
    let s = style_of(&g.code, "1:1");
    assert_eq!((s["width"], s["height"]), ("375px", "812px"));
    assert!(
        !s.contains_key("position"),
        "the root stays in the page flow at its top-left"
    );
    assert!(g.code.contains("html, body { margin: 0; padding: 0; }"));
}

#[test]
fn auto_layout_becomes_a_flex_container() {
    // (mode, primary, counter) → (flex-direction, justify-content, align-items)
    let cases = [
        ("HORIZONTAL", "MIN", "MIN", "row", None, "flex-start"),
        ("VERTICAL", "CENTER", "CENTER", "column", Some("center"), "center"),
        ("HORIZONTAL", "MAX", "MAX", "row", Some("flex-end"), "flex-end"),
        (
            "VERTICAL",
            "SPACE_BETWEEN",
            "BASELINE",
            "column",
            Some("space-between"),
            "baseline",
        ),
    ];
    for (mode, primary, counter, direction, justify, align) in cases {
        let root = frame("1:1", "F")
            .auto(mode, 12.0)
            .pad(1.0, 2.0, 3.0, 4.0)
            .set("primaryAxisAlignItems", json!(primary))
            .set("counterAxisAlignItems", json!(counter));
        let g = html(root);
        let s = style_of(&g.code, "1:1");
        assert_eq!(s["display"], "flex");
        assert_eq!(s["flex-direction"], direction, "{mode}");
        assert_eq!(s.get("justify-content").copied(), justify, "{primary}");
        assert_eq!(s["align-items"], align, "{counter}");
        assert_eq!(s["padding"], "1px 2px 3px 4px");
        let gap = if primary == "SPACE_BETWEEN" {
            None
        } else {
            Some("12px")
        };
        assert_eq!(
            s.get("gap").copied(),
            gap,
            "space-between spaces the items itself"
        );
    }
}

#[test]
fn wrapping_sets_row_and_column_gaps() {
    let root = frame("1:1", "Chips")
        .auto("HORIZONTAL", 8.0)
        .set("layoutWrap", json!("WRAP"))
        .set("counterAxisSpacing", json!(6));
    let s = style_of(&html(root).code, "1:1")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    assert!(s.contains(&("flex-wrap".into(), "wrap".into())));
    assert!(
        s.contains(&("gap".into(), "6px 8px".into())),
        "row-gap from counterAxisSpacing: {s:?}"
    );
}

/// A child of `parent` auto layout sized `h` × `v`: what its style must and must not hold.
struct Sizing {
    parent: &'static str,
    h: &'static str,
    v: &'static str,
    child_has_auto_layout: bool,
    present: Decls,
    absent: &'static [&'static str],
}

#[rustfmt::skip]
const SIZING: &[Sizing] = &[
    Sizing { parent: "HORIZONTAL", h: "FIXED", v: "FIXED", child_has_auto_layout: false,
             present: &[("flex", "none"), ("width", "40px"), ("height", "30px")], absent: &["align-self"] },
    Sizing { parent: "HORIZONTAL", h: "FILL", v: "FIXED", child_has_auto_layout: false,
             present: &[("flex", "1 1 0"), ("height", "30px")], absent: &["width"] },
    Sizing { parent: "HORIZONTAL", h: "FIXED", v: "FILL", child_has_auto_layout: false,
             present: &[("width", "40px"), ("align-self", "stretch")], absent: &["height"] },
    Sizing { parent: "VERTICAL", h: "FILL", v: "FILL", child_has_auto_layout: false,
             present: &[("flex", "1 1 0"), ("align-self", "stretch")], absent: &["width", "height"] },
    Sizing { parent: "VERTICAL", h: "HUG", v: "HUG", child_has_auto_layout: true,
             present: &[("flex", "none")], absent: &["width", "height"] },
    // HUG on a layer without auto layout cannot size from content: keep the box.
    Sizing { parent: "VERTICAL", h: "HUG", v: "HUG", child_has_auto_layout: false,
             present: &[("width", "40px"), ("height", "30px")], absent: &[] },
];

#[test]
fn child_sizing_follows_fixed_hug_and_fill() {
    for case in SIZING {
        let mut child = frame("1:2", "Child")
            .at(0.0, 0.0, 40.0, 30.0)
            .sizing(case.h, case.v);
        if case.child_has_auto_layout {
            child = child.auto("HORIZONTAL", 0.0);
        }
        let g = html(frame("1:1", "Parent").auto(case.parent, 0.0).child(child));
        let s = style_of(&g.code, "1:2");
        let what = format!("{} {}/{}", case.parent, case.h, case.v);
        for (k, val) in case.present {
            assert_eq!(s.get(k), Some(val), "{what}: {k} in {s:?}");
        }
        for k in case.absent {
            assert!(!s.contains_key(k), "{what}: no {k} in {s:?}");
        }
    }
}

#[test]
fn legacy_layout_grow_and_align_mean_fill() {
    let child = rect("1:2", "Legacy")
        .at(0.0, 0.0, 40.0, 30.0)
        .set("layoutGrow", json!(1))
        .set("layoutAlign", json!("STRETCH"));
    let g = html(frame("1:1", "Row").auto("HORIZONTAL", 0.0).child(child));
    let s = style_of(&g.code, "1:2");
    assert_eq!(s["flex"], "1 1 0");
    assert_eq!(s["align-self"], "stretch");
}

#[test]
fn absolute_children_of_auto_layout_are_positioned() {
    let child = rect("1:2", "Badge")
        .at(90.0, 5.0, 10.0, 10.0)
        .set("layoutPositioning", json!("ABSOLUTE"));
    let root = frame("1:1", "Row")
        .at(0.0, 0.0, 100.0, 50.0)
        .auto("HORIZONTAL", 8.0)
        .child(child);
    let g = html(root);
    let s = style_of(&g.code, "1:2");
    assert_eq!((s["position"], s["left"], s["top"]), ("absolute", "90px", "5px"));
    assert!(!s.contains_key("flex"));
}

#[test]
fn constraints_pick_the_anchoring_properties() {
    // Parent 200x100 at (10, 20); child 40x20 at parent offset (30, 50).
    let cases: [(&str, &str, Decls); 5] = [
        (
            "LEFT",
            "TOP",
            &[
                ("left", "30px"),
                ("width", "40px"),
                ("top", "50px"),
                ("height", "20px"),
            ],
        ),
        (
            "RIGHT",
            "BOTTOM",
            &[
                ("right", "130px"),
                ("width", "40px"),
                ("bottom", "30px"),
                ("height", "20px"),
            ],
        ),
        (
            "LEFT_RIGHT",
            "TOP_BOTTOM",
            &[
                ("left", "30px"),
                ("right", "130px"),
                ("top", "50px"),
                ("bottom", "30px"),
            ],
        ),
        (
            "CENTER",
            "CENTER",
            &[("left", "calc(50% - 70px)"), ("top", "calc(50% + 0px)")],
        ),
        (
            "SCALE",
            "SCALE",
            &[
                ("left", "15%"),
                ("width", "20%"),
                ("top", "50%"),
                ("height", "20%"),
            ],
        ),
    ];
    for (h, v, expected) in cases {
        let child = rect("1:2", "Child").at(40.0, 70.0, 40.0, 20.0).constraints(h, v);
        let root = frame("1:1", "Parent").at(10.0, 20.0, 200.0, 100.0).child(child);
        let g = html(root);
        let s = style_of(&g.code, "1:2");
        assert_eq!(s["position"], "absolute");
        for (k, val) in expected {
            assert_eq!(s.get(k), Some(val), "{h}/{v}: {k} in {s:?}");
        }
    }
}

#[test]
fn an_inside_stroke_does_not_move_the_children() {
    let stroked = |root: N| {
        root.set("strokes", json!([solid(0.0, 0.0, 0.0)]))
            .set("strokeWeight", json!(2))
    };
    // Auto layout: Figma pads from the frame's edge, so the border comes off the padding.
    let root = stroked(
        frame("1:1", "Box")
            .auto("VERTICAL", 0.0)
            .pad(10.0, 10.0, 10.0, 1.0),
    );
    let g = html(root);
    let s = style_of(&g.code, "1:1");
    assert_eq!(
        (s["border"], s["padding"]),
        ("2px solid #000000", "8px 8px 8px 0")
    );
    assert_warned(&g.warnings, "1:1", "padding 1px is thinner than the 2px stroke");
    // Unless the strokes are included in the layout.
    let root = stroked(
        frame("1:1", "Box")
            .auto("VERTICAL", 0.0)
            .pad(10.0, 10.0, 10.0, 10.0),
    )
    .set("strokesIncludedInLayout", json!(true));
    assert_eq!(
        style_of(&html(root).code, "1:1")["padding"],
        "10px 10px 10px 10px"
    );
    // Absolute children: offsets are measured inside the border.
    let root = stroked(frame("1:1", "Box").at(0.0, 0.0, 100.0, 100.0))
        .child(rect("1:2", "R").at(10.0, 10.0, 20.0, 20.0));
    let g = html(root);
    let s = style_of(&g.code, "1:2");
    assert_eq!((s["left"], s["top"]), ("8px", "8px"));
}

#[test]
fn children_of_groups_are_pinned_to_the_group() {
    let child = rect("1:3", "R")
        .at(60.0, 70.0, 10.0, 10.0)
        .constraints("RIGHT", "BOTTOM");
    let group = node("GROUP", "1:2", "Group")
        .at(50.0, 50.0, 40.0, 40.0)
        .child(child);
    let root = frame("1:1", "F").at(0.0, 0.0, 200.0, 200.0).child(group);
    let code = html(root).code;
    let s = style_of(&code, "1:3");
    assert_eq!((s["left"], s["top"]), ("10px", "20px"), "{s:?}");
    let g = style_of(&code, "1:2");
    assert_eq!((g["left"], g["top"], g["width"]), ("50px", "50px", "40px"));
}

#[test]
fn geometry_is_rounded_to_hundredths() {
    let child = rect("1:2", "R").at(10.123_456, 0.0, 33.333_333, 10.0);
    let g = html(frame("1:1", "F").child(child));
    let s = style_of(&g.code, "1:2");
    assert_eq!((s["left"], s["width"]), ("10.12px", "33.33px"));
}
