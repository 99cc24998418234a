//! The validator's specification: for each keyword, a value it accepts and one it refuses with
//! the message a model will read.

use serde_json::{Value, json};

use super::*;

/// `(what, schema, value, None if accepted or Some(fragment of the error))`.
type Case = (&'static str, Value, Value, Option<&'static str>);

fn run(cases: Vec<Case>) {
    for (what, schema, value, expected) in cases {
        let result = check(&schema, &value);
        match (expected, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => panic!("{what}: expected {value} to pass, got: {e}"),
            (Some(fragment), Ok(())) => panic!("{what}: expected {value} to fail with {fragment:?}"),
            (Some(fragment), Err(e)) => assert!(
                e.to_string().contains(fragment),
                "{what}: expected {fragment:?} in {:?}",
                e.to_string()
            ),
        }
    }
}

#[test]
fn types_name_the_expected_and_the_given_kind() {
    run(vec![
        ("string", json!({"type": "string"}), json!("x"), None),
        (
            "string refuses a number",
            json!({"type": "string"}),
            json!(3),
            Some("arguments: expected a string, got a number"),
        ),
        ("integer accepts 3", json!({"type": "integer"}), json!(3), None),
        (
            "integer accepts 3.0",
            json!({"type": "integer"}),
            json!(3.0),
            None,
        ),
        (
            "integer accepts a large unsigned",
            json!({"type": "integer"}),
            json!(u64::MAX),
            None,
        ),
        (
            "integer refuses 3.5",
            json!({"type": "integer"}),
            json!(3.5),
            Some("expected an integer, got a number"),
        ),
        ("number accepts 3.5", json!({"type": "number"}), json!(3.5), None),
        (
            "boolean",
            json!({"type": "boolean"}),
            json!("true"),
            Some("expected a boolean, got a string"),
        ),
        ("null", json!({"type": "null"}), json!(null), None),
        (
            "array",
            json!({"type": "array"}),
            json!({}),
            Some("expected an array, got an object"),
        ),
        (
            "object",
            json!({"type": "object"}),
            json!([]),
            Some("expected an object, got an array"),
        ),
        (
            "a list of types",
            json!({"type": ["string", "null"]}),
            json!(null),
            None,
        ),
        (
            "a list of types refused",
            json!({"type": ["string", "null"]}),
            json!(1),
            Some("expected a string or null, got a number"),
        ),
        (
            "three types",
            json!({"type": ["string", "integer", "null"]}),
            json!(true),
            Some("expected a string, an integer or null, got a boolean"),
        ),
        (
            "an unknown type name is not judged",
            json!({"type": "file"}),
            json!(1),
            None,
        ),
        ("true accepts anything", json!(true), json!({"a": [1]}), None),
        (
            "false refuses everything",
            json!(false),
            json!(null),
            Some("arguments: no value is allowed here"),
        ),
        (
            "the empty schema accepts anything",
            json!({}),
            json!([1, "a"]),
            None,
        ),
        (
            "format is ignored",
            json!({"type": "string", "format": "email"}),
            json!("not an email"),
            None,
        ),
        (
            "unknown keywords are ignored",
            json!({"x-figma": {"type": "integer"}, "type": "string"}),
            json!("x"),
            None,
        ),
    ]);
}

#[test]
fn enums_and_consts_list_what_is_allowed() {
    run(vec![
        ("enum", json!({"enum": ["c", "f"]}), json!("c"), None),
        (
            "enum refused",
            json!({"enum": ["c", "f"]}),
            json!("k"),
            Some(r#"arguments: must be one of "c", "f""#),
        ),
        (
            "enum of mixed values",
            json!({"enum": [1, null, {"a": 1}]}),
            json!({"a": 1.0}),
            None,
        ),
        (
            "enum compares numbers by value",
            json!({"enum": [1]}),
            json!(1.0),
            None,
        ),
        (
            "a long enum lists the first ten",
            json!({"enum": (0..30).map(|i| format!("v{i}")).collect::<Vec<_>>()}),
            json!("x"),
            Some(r#""v9", … (30 in all)"#),
        ),
        ("const", json!({"const": "fixed"}), json!("fixed"), None),
        (
            "const refused",
            json!({"const": "fixed"}),
            json!("other"),
            Some(r#"must be "fixed""#),
        ),
        (
            "const object ignores key order",
            json!({"const": {"a": 1, "b": 2}}),
            json!({"b": 2, "a": 1}),
            None,
        ),
    ]);
}

#[test]
fn numbers_are_bounded() {
    run(vec![
        ("minimum", json!({"minimum": 1}), json!(1), None),
        (
            "minimum refused",
            json!({"minimum": 1}),
            json!(0),
            Some("must be at least 1, got 0"),
        ),
        ("maximum", json!({"maximum": 10}), json!(10.0), None),
        (
            "maximum refused",
            json!({"maximum": 10}),
            json!(10.5),
            Some("must be at most 10, got 10.5"),
        ),
        (
            "exclusiveMinimum",
            json!({"exclusiveMinimum": 0}),
            json!(0.001),
            None,
        ),
        (
            "exclusiveMinimum refused",
            json!({"exclusiveMinimum": 0}),
            json!(0),
            Some("must be greater than 0, got 0"),
        ),
        (
            "exclusiveMaximum refused",
            json!({"exclusiveMaximum": 1.5}),
            json!(1.5),
            Some("must be less than 1.5, got 1.5"),
        ),
        ("multipleOf", json!({"multipleOf": 0.1}), json!(0.3), None),
        (
            "multipleOf refused",
            json!({"multipleOf": 5}),
            json!(12),
            Some("must be a multiple of 5, got 12"),
        ),
        (
            "bounds do not apply to strings",
            json!({"minimum": 5}),
            json!("1"),
            None,
        ),
    ]);
}

#[test]
fn strings_are_measured_in_characters_and_matched() {
    run(vec![
        ("minLength", json!({"minLength": 1}), json!("a"), None),
        (
            "minLength refused",
            json!({"minLength": 1}),
            json!(""),
            Some("arguments: must be at least 1 character long"),
        ),
        (
            "maxLength counts characters, not bytes",
            json!({"maxLength": 2}),
            json!("한글"),
            None,
        ),
        (
            "maxLength refused",
            json!({"maxLength": 2}),
            json!("한글이"),
            Some("must be at most 2 characters long, got 3"),
        ),
        ("pattern", json!({"pattern": "^[a-z]+$"}), json!("abc"), None),
        (
            "pattern refused",
            json!({"pattern": "^[a-z]+$"}),
            json!("aBc"),
            Some(r#"must match the pattern "^[a-z]+$""#),
        ),
        (
            "pattern is not anchored",
            json!({"pattern": "[0-9]"}),
            json!("a1b"),
            None,
        ),
        (
            "a node id pattern",
            json!({"pattern": "^\\d+:\\d+$"}),
            json!("12:34"),
            None,
        ),
        (
            "a pattern Rust cannot compile is not checked",
            json!({"pattern": "^(?!x).*$"}),
            json!("x"),
            None,
        ),
    ]);
}

#[test]
fn arrays_check_items_by_position() {
    let tuple = json!({"prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false});
    run(vec![
        (
            "items",
            json!({"items": {"type": "integer"}}),
            json!([1, 2]),
            None,
        ),
        (
            "items refused",
            json!({"items": {"type": "integer"}}),
            json!([1, "2"]),
            Some("arguments[1]: expected an integer, got a string"),
        ),
        (
            "minItems",
            json!({"minItems": 2}),
            json!([1]),
            Some("must have at least 2 items, got 1"),
        ),
        (
            "maxItems",
            json!({"maxItems": 1}),
            json!([1, 2]),
            Some("must have at most 1 item, got 2"),
        ),
        (
            "uniqueItems",
            json!({"uniqueItems": true}),
            json!([1, 2, 3]),
            None,
        ),
        (
            "uniqueItems refused",
            json!({"uniqueItems": true}),
            json!([1, "a", 1.0]),
            Some("items must be unique, but [0] and [2] are equal"),
        ),
        ("prefixItems", tuple.clone(), json!(["a", 1]), None),
        (
            "prefixItems refused",
            tuple.clone(),
            json!([1, 1]),
            Some("arguments[0]: expected a string, got a number"),
        ),
        (
            "items false after prefixItems",
            tuple,
            json!(["a", 1, 2]),
            Some("arguments[2]: is not allowed: at most 2 items"),
        ),
        (
            "draft-07 tuple items with additionalItems",
            json!({"items": [{"type": "string"}], "additionalItems": {"type": "boolean"}}),
            json!(["a", true, 3]),
            Some("arguments[2]: expected a boolean, got a number"),
        ),
        ("contains", json!({"contains": {"const": 2}}), json!([1, 2]), None),
        (
            "contains refused",
            json!({"contains": {"const": 2}}),
            json!([1, 3]),
            Some("must contain at least one item"),
        ),
    ]);
}

#[test]
fn objects_name_missing_and_unexpected_properties() {
    let weather = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city"],
        "additionalProperties": false,
    });
    run(vec![
        (
            "a good object",
            weather.clone(),
            json!({"city": "Seoul", "unit": "c"}),
            None,
        ),
        (
            "required",
            weather.clone(),
            json!({"unit": "c"}),
            Some(r#"arguments: missing required property "city""#),
        ),
        (
            "a property's enum",
            weather.clone(),
            json!({"city": "Seoul", "unit": "k"}),
            Some(r#"arguments.unit: must be one of "c", "f""#),
        ),
        (
            "additionalProperties false names the allowed ones",
            weather.clone(),
            json!({"city": "Seoul", "cty": 1}),
            Some(r#"arguments: unexpected property "cty" (allowed: "city", "unit")"#),
        ),
        (
            "additionalProperties as a schema",
            json!({"additionalProperties": {"type": "integer"}}),
            json!({"a": 1, "b": "x"}),
            Some("arguments.b: expected an integer, got a string"),
        ),
        (
            "patternProperties describe matching keys",
            json!({"patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": false}),
            json!({"x-a": "ok", "y": 1}),
            Some(r#"unexpected property "y""#),
        ),
        (
            "patternProperties check values",
            json!({"patternProperties": {"^x-": {"type": "string"}}}),
            json!({"x-a": 1}),
            Some("arguments.x-a: expected a string, got a number"),
        ),
        (
            "a key that is not an identifier is quoted",
            json!({"additionalProperties": {"type": "string"}}),
            json!({"two words": 1}),
            Some(r#"arguments["two words"]: expected a string"#),
        ),
        (
            "minProperties",
            json!({"minProperties": 1}),
            json!({}),
            Some("must have at least 1 property"),
        ),
        (
            "maxProperties",
            json!({"maxProperties": 1}),
            json!({"a": 1, "b": 2}),
            Some("must have at most 1 property"),
        ),
        (
            "required does not apply to arrays",
            json!({"required": ["a"]}),
            json!([]),
            None,
        ),
    ]);
}

#[test]
fn paths_go_through_items_and_properties() {
    let schema = json!({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}},
    });
    let value = json!({"items": [{"name": "a"}, {"name": "b"}, {"name": 3}]});
    run(vec![(
        "nested path",
        schema,
        value,
        Some("arguments.items[2].name: expected a string, got a number"),
    )]);
}

#[test]
fn combinators_explain_which_alternative_failed() {
    let string_or_null = json!({"anyOf": [{"type": "string"}, {"type": "null"}]});
    let one = json!({"oneOf": [{"type": "integer"}, {"type": "number"}]});
    run(vec![
        ("anyOf", string_or_null.clone(), json!(null), None),
        (
            "anyOf refused",
            string_or_null,
            json!(1),
            Some(
                "matches none of the allowed alternatives (expected a string, got a number; or expected null, got a number)",
            ),
        ),
        ("oneOf with one match", one.clone(), json!(1.5), None),
        (
            "oneOf with two matches",
            one,
            json!(2),
            Some("must match exactly one alternative, but matches alternatives 1, 2"),
        ),
        (
            "oneOf with none",
            json!({"oneOf": [{"type": "string"}]}),
            json!(true),
            Some("matches none of the allowed alternatives (expected a string"),
        ),
        (
            "allOf",
            json!({"allOf": [{"minimum": 1}, {"maximum": 3}]}),
            json!(2),
            None,
        ),
        (
            "allOf refused",
            json!({"allOf": [{"minimum": 1}, {"maximum": 3}]}),
            json!(4),
            Some("must be at most 3, got 4"),
        ),
        ("not", json!({"not": {"type": "string"}}), json!(1), None),
        (
            "not refused",
            json!({"not": {"type": "string"}}),
            json!("s"),
            Some(r#"must not match the schema under "not""#),
        ),
        (
            "an alternative's problem keeps its own path",
            json!({"anyOf": [{"type": "object", "required": ["id"]}, {"type": "string"}]}),
            json!({}),
            Some(r#"missing required property "id"; or expected a string, got an object"#),
        ),
    ]);
}

#[test]
fn refs_resolve_in_defs_and_definitions() {
    let schemars_style = json!({
        "type": "object",
        "properties": {"language": {"anyOf": [{"$ref": "#/$defs/Language"}, {"type": "null"}]}},
        "$defs": {"Language": {"type": "string", "enum": ["en", "ko"]}},
    });
    let draft07 = json!({
        "properties": {"point": {"$ref": "#/definitions/Point"}},
        "definitions": {"Point": {"type": "object", "required": ["x"]}},
    });
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}, "v": {"type": "integer"}}}},
        "$ref": "#/$defs/node",
    });
    run(vec![
        ("$defs", schemars_style.clone(), json!({"language": "ko"}), None),
        (
            "$defs refused",
            schemars_style,
            json!({"language": "fr"}),
            Some(r#"must be one of "en", "ko""#),
        ),
        (
            "definitions refused",
            draft07,
            json!({"point": {}}),
            Some(r#"arguments.point: missing required property "x""#),
        ),
        (
            "a recursive schema",
            tree.clone(),
            json!({"children": [{"children": [{"v": 1}]}]}),
            None,
        ),
        (
            "a recursive schema refused",
            tree,
            json!({"children": [{"children": [{"v": "1"}]}]}),
            Some("arguments.children[0].children[0].v: expected an integer"),
        ),
        (
            "the root",
            json!({"properties": {"next": {"$ref": "#"}}, "type": "object"}),
            json!({"next": {"next": 1}}),
            Some("arguments.next.next: expected an object"),
        ),
        (
            "a $ref to another document is not followed",
            json!({"$ref": "https://example.com/s.json"}),
            json!(1),
            None,
        ),
        (
            "a dangling $ref is not followed",
            json!({"$ref": "#/$defs/missing"}),
            json!(1),
            None,
        ),
        (
            "an escaped pointer",
            json!({"$ref": "#/$defs/a~1b", "$defs": {"a/b": {"type": "string"}}}),
            json!(1),
            Some("expected a string"),
        ),
    ]);
}

mod limits;
