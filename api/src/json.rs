//! How deep free-form JSON (a task's input, a result) may nest.
//!
//! JSON parsers stop at some depth: serde_json at 128 levels, so an AgentTask whose input nests
//! about 124 levels deep would make every list of AgentTasks fail to parse in every Rust client.
//! Cogo accepts at most [`MAX_DEPTH`] levels, well below any parser's limit, and reads the free
//! JSON of its resources and requests with [`bounded`], which never fails on depth: it keeps
//! [`MAX_DEPTH`] levels, skips what lies deeper without recursing, and leaves an empty container
//! in its place, so [`depth`] still tells that the value was too deep and the object can be
//! refused with a clear reason instead of breaking whoever lists it.

use std::fmt;

use serde::{
    Deserializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

/// The most levels of arrays and objects a task's input or result may nest.
pub const MAX_DEPTH: usize = 64;

/// Levels of arrays and objects in `v`: 0 for a scalar, 1 for `[]` or `{"a": 1}`. Iterative, so
/// any depth is measured without exhausting the stack.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, above)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        let level = above + 1;
        deepest = deepest.max(level);
        stack.extend(children.map(|c| (c, level)));
    }
    deepest
}

/// Why `v`, named `what` (`spec.input`, `the result`), cannot be accepted, or None when it
/// nests no deeper than [`MAX_DEPTH`].
pub fn too_deep(what: &str, v: &Value) -> Option<String> {
    (depth(v) > MAX_DEPTH).then(|| format!("{what} nests more than {MAX_DEPTH} levels of arrays and objects"))
}

/// Reads an optional free-form JSON value with at most [`MAX_DEPTH`] + 1 levels: whatever lies
/// deeper is skipped (without recursion, so no depth makes it fail) and an empty container of
/// the same kind stands in for the container at level [`MAX_DEPTH`] + 1. For `deserialize_with`.
pub fn bounded<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            Level(0).deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Reads an optional list of JSON values, each as [`bounded`] reads one.
pub fn bounded_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
    match bounded(d)? {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(de::Error::custom("expected a list of JSON values")),
    }
}

/// [`bounded`] for a field that holds a plain `Value` (JSON null reads as `Value::Null`).
pub fn bounded_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Level(0).deserialize(d)
}

/// Reads one value below `0` levels of containers.
#[derive(Clone, Copy)]
struct Level(usize);

impl<'de> DeserializeSeed<'de> for Level {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        if self.0 >= MAX_DEPTH {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Array(items));
        }
        while let Some(v) = seq.next_element_seed(Level(self.0 + 1))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        if self.0 >= MAX_DEPTH {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(fields));
        }
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(Level(self.0 + 1))?;
            fields.insert(key, v);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    fn nested_objects(levels: usize) -> String {
        format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
    }

    #[derive(Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "bounded")]
        v: Option<Value>,
    }

    fn read(text: &str) -> Option<Value> {
        serde_json::from_str::<Holder>(&format!(r#"{{"v": {text}}}"#))
            .unwrap()
            .v
    }

    #[test]
    fn depth_counts_levels_of_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        let deep: Value = serde_json::from_str(&nested(100)).unwrap();
        assert_eq!(depth(&deep), 100);
    }

    #[test]
    fn values_within_the_limit_are_read_whole() {
        for text in [
            nested(MAX_DEPTH),
            nested_objects(MAX_DEPTH),
            r#"{"x": [1, 2.5, "s", null, true]}"#.into(),
        ] {
            let plain: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(read(&text), Some(plain.clone()));
            assert!(too_deep("v", &plain).is_none());
        }
        assert_eq!(read("null"), None);
        assert_eq!(serde_json::from_str::<Holder>("{}").unwrap().v, None);
    }

    #[test]
    fn values_past_the_limit_are_read_at_any_depth_and_stay_too_deep() {
        // Deeper than serde_json can parse into a Value, and deeper than any stack would allow.
        for levels in [MAX_DEPTH + 1, 200, 100_000] {
            for text in [nested(levels), nested_objects(levels)] {
                if levels >= 200 {
                    assert!(
                        serde_json::from_str::<Value>(&text).is_err(),
                        "serde_json alone cannot read it"
                    );
                }
                let v = read(&text).expect("a value");
                assert_eq!(
                    depth(&v),
                    MAX_DEPTH + 1,
                    "cut one level past the limit ({levels})"
                );
                let why = too_deep("spec.input", &v).expect("refused");
                assert!(why.contains("spec.input nests more than 64 levels"), "{why}");
            }
        }
    }

    #[test]
    fn what_follows_a_deep_value_is_still_read() {
        let text = format!(r#"{{"v": {{"deep": {}, "after": 7}}, "w": 1}}"#, nested(500));
        #[derive(Deserialize)]
        struct Two {
            #[serde(deserialize_with = "bounded")]
            v: Option<Value>,
            w: i32,
        }
        let two: Two = serde_json::from_str(&text).unwrap();
        assert_eq!((two.v.unwrap()["after"].clone(), two.w), (json!(7), 1));
        let v = bounded_value(&mut serde_json::Deserializer::from_str(&nested(300))).unwrap();
        assert_eq!(depth(&v), MAX_DEPTH + 1);
    }
}
