//! Synthetic `GET /v1/files/:key/nodes` responses for benchmarks and tests.
//!
//! [`frame_with_nodes`] lays out a grid of cards the way Figma's auto layout would, so the
//! `absoluteBoundingBox` of every node is where a browser puts the generated element.

use serde_json::{Value, json};

/// Node id of the frame [`frame_with_nodes`] builds.
pub const BENCH_FRAME_ID: &str = "1:1";

const ORIGIN: (f64, f64) = (40.0, 60.0);
const PADDING: f64 = 24.0;
const CARDS_PER_ROW: usize = 4;
const CARD_W: f64 = 160.0;
const CARD_H: f64 = 204.0;
const CARD_GAP: f64 = 16.0;
const ROW_GAP: f64 = 24.0;
/// A row frame plus four cards of six nodes each.
const NODES_PER_ROW: usize = 1 + CARDS_PER_ROW * 6;

fn bbox(x: f64, y: f64, w: f64, h: f64) -> Value {
    json!({"x": x, "y": y, "width": w, "height": h})
}

fn solid(r: f64, g: f64, b: f64) -> Value {
    json!({"type": "SOLID", "blendMode": "NORMAL", "color": {"r": r, "g": g, "b": b, "a": 1.0}})
}

fn text(id: String, name: &str, chars: String, (x, y, w, h): (f64, f64, f64, f64), size: f64) -> Value {
    json!({
        "id": id, "name": name, "type": "TEXT", "blendMode": "PASS_THROUGH",
        "absoluteBoundingBox": bbox(x, y, w, h),
        "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
        "layoutAlign": "STRETCH", "layoutGrow": 0,
        "layoutSizingHorizontal": "FILL", "layoutSizingVertical": "HUG",
        "fills": [solid(0.07, 0.09, 0.15)], "strokes": [], "effects": [],
        "characters": chars,
        "style": {
            "fontFamily": "Inter", "fontPostScriptName": "Inter-Regular", "fontWeight": 400,
            "fontSize": size, "textAlignHorizontal": "LEFT", "textAlignVertical": "TOP",
            "letterSpacing": 0, "lineHeightPx": h.min(size * 1.5), "lineHeightUnit": "PIXELS",
            "textAutoResize": "HEIGHT"
        },
        "characterStyleOverrides": [], "styleOverrideTable": {}
    })
}

fn card(k: usize, x: f64, y: f64) -> Value {
    let inner = CARD_W - 24.0;
    let chip_id = format!("7:{k}");
    let thumbnail = json!({
        "id": format!("4:{k}"), "name": "Thumbnail", "type": "RECTANGLE", "blendMode": "PASS_THROUGH",
        "absoluteBoundingBox": bbox(x + 12.0, y + 12.0, inner, 80.0),
        "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
        "layoutSizingHorizontal": "FIXED", "layoutSizingVertical": "FIXED",
        "fills": [solid(0.86, 0.9, 1.0)], "strokes": [], "effects": [], "cornerRadius": 4
    });
    let label = text(
        format!("I{chip_id};9:2"),
        "Label",
        format!("Tag {}", k % 7),
        (x + 20.0, y + 172.0, inner - 16.0, 16.0),
        12.0,
    );
    let chip = json!({
        "id": chip_id, "name": "Chip", "type": "INSTANCE", "componentId": "9:1",
        "blendMode": "PASS_THROUGH",
        "absoluteBoundingBox": bbox(x + 12.0, y + 168.0, inner, 24.0),
        "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
        "layoutMode": "HORIZONTAL", "itemSpacing": 4,
        "paddingTop": 4, "paddingRight": 8, "paddingBottom": 4, "paddingLeft": 8,
        "primaryAxisSizingMode": "FIXED", "counterAxisSizingMode": "AUTO",
        "primaryAxisAlignItems": "MIN", "counterAxisAlignItems": "CENTER",
        "layoutSizingHorizontal": "FILL", "layoutSizingVertical": "HUG",
        "fills": [solid(0.93, 0.95, 1.0)], "strokes": [], "effects": [], "cornerRadius": 12,
        "children": [label]
    });
    let shadow = json!({
        "type": "DROP_SHADOW", "visible": true, "radius": 4, "spread": 0, "offset": {"x": 0, "y": 1},
        "color": {"r": 0, "g": 0, "b": 0, "a": 0.1}, "blendMode": "NORMAL"
    });
    let children = vec![
        thumbnail,
        text(
            format!("5:{k}"),
            "Title",
            format!("Card {k}"),
            (x + 12.0, y + 100.0, inner, 20.0),
            14.0,
        ),
        text(
            format!("6:{k}"),
            "Body",
            format!("Body copy of card {k}"),
            (x + 12.0, y + 128.0, inner, 32.0),
            12.0,
        ),
        chip,
    ];
    json!({
        "id": format!("3:{k}"), "name": format!("Card {k}"), "type": "FRAME", "blendMode": "PASS_THROUGH",
        "absoluteBoundingBox": bbox(x, y, CARD_W, CARD_H),
        "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
        "layoutMode": "VERTICAL", "itemSpacing": 8,
        "paddingTop": 12, "paddingRight": 12, "paddingBottom": 12, "paddingLeft": 12,
        "primaryAxisSizingMode": "AUTO", "counterAxisSizingMode": "FIXED",
        "primaryAxisAlignItems": "MIN", "counterAxisAlignItems": "MIN",
        "layoutSizingHorizontal": "FIXED", "layoutSizingVertical": "HUG",
        "fills": [solid(1.0, 1.0, 1.0)], "strokes": [solid(0.9, 0.91, 0.92)],
        "strokeWeight": 1, "strokeAlign": "INSIDE", "cornerRadius": 8, "clipsContent": true,
        "effects": [shadow],
        "children": children
    })
}

/// A nodes response holding one frame ([`BENCH_FRAME_ID`]) of about `n` nodes: a vertical auto
/// layout of rows, each a horizontal auto layout of four cards (a rectangle, two texts and an
/// instance of the "Chip" component with its text). Every row adds 25 nodes; there is always at
/// least one row.
pub fn frame_with_nodes(n: usize) -> Value {
    let rows = n.saturating_sub(1).div_ceil(NODES_PER_ROW).max(1);
    let (ox, oy) = ORIGIN;
    let row_w = CARDS_PER_ROW as f64 * CARD_W + (CARDS_PER_ROW - 1) as f64 * CARD_GAP;
    let width = row_w + 2.0 * PADDING;
    let height = 2.0 * PADDING + rows as f64 * CARD_H + (rows - 1) as f64 * ROW_GAP;
    let row_nodes: Vec<Value> = (0..rows)
        .map(|r| {
            let y = oy + PADDING + r as f64 * (CARD_H + ROW_GAP);
            let cards: Vec<Value> = (0..CARDS_PER_ROW)
                .map(|c| card(r * CARDS_PER_ROW + c, ox + PADDING + c as f64 * (CARD_W + CARD_GAP), y))
                .collect();
            json!({
                "id": format!("2:{r}"), "name": format!("Row {r}"), "type": "FRAME", "blendMode": "PASS_THROUGH",
                "absoluteBoundingBox": bbox(ox + PADDING, y, row_w, CARD_H),
                "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
                "layoutMode": "HORIZONTAL", "itemSpacing": CARD_GAP,
                "primaryAxisSizingMode": "FIXED", "counterAxisSizingMode": "AUTO",
                "primaryAxisAlignItems": "MIN", "counterAxisAlignItems": "MIN",
                "layoutSizingHorizontal": "FILL", "layoutSizingVertical": "HUG",
                "fills": [], "strokes": [], "effects": [], "clipsContent": false,
                "children": cards
            })
        })
        .collect();
    json!({
        "name": "Benchmark",
        "lastModified": "2025-01-01T00:00:00Z",
        "version": "1",
        "nodes": {
            BENCH_FRAME_ID: {
                "document": {
                    "id": BENCH_FRAME_ID, "name": "Bench", "type": "FRAME", "blendMode": "PASS_THROUGH",
                    "absoluteBoundingBox": bbox(ox, oy, width, height),
                    "constraints": {"vertical": "TOP", "horizontal": "LEFT"},
                    "layoutMode": "VERTICAL", "itemSpacing": ROW_GAP,
                    "paddingTop": PADDING, "paddingRight": PADDING, "paddingBottom": PADDING, "paddingLeft": PADDING,
                    "primaryAxisSizingMode": "FIXED", "counterAxisSizingMode": "FIXED",
                    "primaryAxisAlignItems": "MIN", "counterAxisAlignItems": "MIN",
                    "fills": [solid(0.97, 0.98, 0.99)], "strokes": [], "effects": [], "clipsContent": true,
                    "children": row_nodes
                },
                "components": {"9:1": {"key": "c0ffee0000000000000000000000000000000001", "name": "Chip",
                                       "description": "A small tag"}},
                "componentSets": {},
                "styles": {},
                "schemaVersion": 0
            }
        }
    })
}

/// How many nodes the frame of [`frame_with_nodes`]`(n)` holds, the frame included.
pub fn node_count(n: usize) -> usize {
    1 + n.saturating_sub(1).div_ceil(NODES_PER_ROW).max(1) * NODES_PER_ROW
}
