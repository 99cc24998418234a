//! Hostile names and text stay inert; output is deterministic and fast.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::figma::fixture::{BENCH_FRAME_ID, frame_with_nodes, node_count};

const HOSTILE: &str = "</style><script>alert(\"x\")</script>`${x}'{y}";

fn hostile_frame() -> N {
    frame("1:1", HOSTILE).child(
        text("1:2\"><b>", HOSTILE, HOSTILE)
            .set("style", json!({"fontFamily": HOSTILE, "fontSize": 12}))
            .set("characterStyleOverrides", json!([0, 0, 1]))
            .set("styleOverrideTable", json!({"1": {"fontFamily": "x\"}</style>"}})),
    )
}

#[test]
fn hostile_names_and_text_cannot_break_out_of_html() {
    let g = html(hostile_frame());
    assert_eq!(g.code.matches("<script").count(), 0, "{}", g.code);
    assert_eq!(
        g.code.matches("</style>").count(),
        1,
        "only the real end of the style block"
    );
    assert!(g.code.contains("data-node-id=\"1:2&quot;&gt;&lt;b&gt;\""));
    assert!(
        g.code
            .contains("&lt;/style&gt;&lt;script&gt;alert(&quot;x&quot;)")
    );
    assert!(
        g.code
            .contains(r#"font-family: "\3c /style\3e \3c script\3e alert(\22 x\22 )"#),
        "{}",
        g.code
    );
    // Class names are derived from names but only ever contain [a-z0-9-_].
    let classes = classes_of(&g.code, "1:1");
    assert!(classes.iter().all(|c| {
        c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    }));
    assert_eq!(classes, ["style-script-alert-x-script-x-y"]);
}

#[test]
fn hostile_names_and_text_cannot_break_out_of_tsx() {
    let g = react(hostile_frame());
    assert_eq!(g.code.matches("<script").count(), 0, "{}", g.code);
    assert!(
        g.code.contains(r#"data-node-id={"1:2\">\u003cb>"}"#),
        "{}",
        g.code
    );
    assert!(
        g.code
            .contains(r#"{"tyle>\u003cscript>alert(\"x\")\u003c/script>`${x}'{y}"}"#),
        "{}",
        g.code
    );
    // Inside the css template literal, backslashes are doubled and nothing can end it early.
    assert!(g.code.contains(r#"font-family: "\\3c /style\\3e"#), "{}", g.code);
    let start = g
        .code
        .find("const css = `")
        .map_or(0, |i| i + "const css = `".len());
    let end = start + g.code[start..].find("`;\n").unwrap_or(0);
    let css = &g.code[start..end];
    assert!(css.contains(r"\`\${x}"), "{css}");
    assert!(
        !css.contains('<'),
        "the sheet is set as raw HTML, so it must hold no tag: {css}"
    );
    for (i, _) in css.match_indices('`') {
        assert_eq!(&css[i - 1..i], "\\", "unescaped backtick at {i} in {css}");
    }
    assert!(
        g.code
            .contains("export default function StyleScriptAlertXScriptXY()")
    );
}

#[test]
fn class_and_component_names_are_unique_and_stable() {
    let root = frame("1:1", "Card")
        .child(rect("1:2", "Card").fills(json!([solid(1.0, 0.0, 0.0)])))
        .child(rect("1:3", "card!").fills(json!([solid(0.0, 1.0, 0.0)])))
        .child(rect("1:4", "").fills(json!([solid(0.0, 0.0, 1.0)])))
        .child(rect("1:5", "42 px").fills(json!([solid(0.0, 0.0, 0.5)])));
    let g = html(root);
    let names: Vec<&str> = ["1:1", "1:2", "1:3", "1:4", "1:5"]
        .iter()
        .map(|id| classes_of(&g.code, id)[0])
        .collect();
    assert_eq!(names, ["card", "card-2", "card-3", "layer", "n42-px"]);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let fixture = frame_with_nodes(120);
    for framework in [Framework::Html, Framework::React] {
        let first = generate_ui(&fixture, BENCH_FRAME_ID, framework);
        for _ in 0..3 {
            assert_eq!(generate_ui(&fixture, BENCH_FRAME_ID, framework), first);
        }
    }
}

#[test]
fn a_500_node_frame_generates_in_milliseconds() {
    let fixture = frame_with_nodes(500);
    assert_eq!(node_count(500), 501);
    for framework in [Framework::Html, Framework::React] {
        let start = Instant::now();
        let g = generate_ui(&fixture, BENCH_FRAME_ID, framework).unwrap_or_else(|e| panic!("{e}"));
        let took = start.elapsed();
        // Unoptimized test builds are ~10x slower than release (about 4 ms there).
        assert!(took < Duration::from_millis(400), "{framework:?} took {took:?}");
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        match framework {
            Framework::Html => assert_eq!(g.code.matches("data-node-id=").count(), 501),
            Framework::React => assert_eq!(g.code.matches("<Chip nodeId=").count(), 80),
        }
    }
}
