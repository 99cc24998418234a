//! How many problems are reported, and what the caps on hostile schemas do.

use serde_json::{Value, json};

use super::super::*;

#[test]
fn at_most_five_problems_are_reported_in_order() {
    let schema = json!({"type": "object", "required": ["a", "b", "c", "d", "e", "f", "g"]});
    let e = check(&schema, &json!({})).unwrap_err();
    assert_eq!(e.problems.len(), MAX_PROBLEMS);
    assert!(e.truncated);
    assert_eq!(e.problems[0].message, r#"missing required property "a""#);
    assert_eq!(e.problems[4].message, r#"missing required property "e""#);
    assert!(e.to_string().ends_with("; and more"), "{e}");

    let two = check(&schema, &json!({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})).unwrap_err();
    assert_eq!(two.problems.len(), 2);
    assert!(!two.truncated);
    assert_eq!(
        two.to_string(),
        r#"arguments: missing required property "f"; arguments: missing required property "g""#
    );
}

#[test]
fn a_root_name_can_be_chosen() {
    let e = check_named(&json!({"type": "string"}), &json!(1), "input").unwrap_err();
    assert_eq!(e.to_string(), "input: expected a string, got a number");
}

#[test]
fn a_ref_loop_is_refused_not_followed_forever() {
    let schema =
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    let e = check(&schema, &json!(1)).unwrap_err();
    assert!(
        e.to_string()
            .contains("nests more than 64 levels deep (or its $refs loop)"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_refused() {
    let mut schema = json!({"type": "integer"});
    let mut value = json!(1);
    for _ in 0..200 {
        schema = json!({"type": "array", "items": schema});
        value = json!([value]);
    }
    let e = check(&schema, &value).unwrap_err();
    assert!(e.to_string().contains("cannot be checked"), "{e}");
    assert!(e.problems[0].path.starts_with("arguments[0][0]"), "{e}");
}

#[test]
fn exponential_combinators_hit_the_step_budget() {
    // A small schema whose every level refers twice to the next: 2^25 checks if nothing
    // stopped it.
    let mut defs = serde_json::Map::new();
    for i in 0..25 {
        let next = format!("#/$defs/l{}", i + 1);
        defs.insert(
            format!("l{i}"),
            json!({"anyOf": [{"$ref": next}, {"$ref": next}]}),
        );
    }
    defs.insert("l25".to_string(), json!({"type": "string"}));
    let schema = json!({"$defs": defs, "$ref": "#/$defs/l0"});
    let started = std::time::Instant::now();
    let e = check(&schema, &json!(1)).unwrap_err();
    assert!(e.to_string().contains("too large to check"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(
        e.to_string().len() < 2_000,
        "messages stay short: {} bytes",
        e.to_string().len()
    );
}

#[test]
fn huge_enums_and_unique_arrays_are_bounded() {
    let schema = json!({"enum": (0..200_000).collect::<Vec<_>>()});
    let e = check(&schema, &json!(-1)).unwrap_err();
    assert!(e.to_string().contains("too large to check"), "{e}");

    let unique = json!({"uniqueItems": true});
    let items: Vec<u32> = (0..5_000).collect();
    let e = check(&unique, &json!(items)).unwrap_err();
    assert!(e.to_string().contains("too large to check"), "{e}");
}

#[test]
fn many_patterns_are_refused_and_hostile_ones_bounded() {
    let patterns: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("^p{i}$"), json!(true))).collect();
    let e = check(&json!({"patternProperties": patterns}), &json!({"k": 1})).unwrap_err();
    assert!(e.to_string().contains("more than 64 patterns"), "{e}");

    // A pattern whose compiled form would be enormous is not checked rather than compiled.
    let e = check(&json!({"pattern": "\\w{1000}{1000}"}), &json!("x"));
    assert!(e.is_ok());
}

#[test]
fn long_keys_and_values_are_cut_in_messages() {
    let key = "k".repeat(500);
    let e = check(&json!({"additionalProperties": false}), &json!({key.clone(): 1})).unwrap_err();
    assert!(e.to_string().len() < 300, "{e}");
    assert!(e.to_string().contains('…'));
}
