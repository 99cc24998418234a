//! The keywords of strings, numbers, arrays and objects, and `type`.

use serde_json::{Map, Value};

use super::Problem;
use super::text::{article, list_names, plural, property_path, push, show_str};
use super::validator::{Abort, Validator};

impl<'s> Validator<'s> {
    /// `minLength`, `maxLength` and `pattern`.
    pub(super) fn check_string(
        &mut self,
        schema: &'s Map<String, Value>,
        text: &str,
        path: &str,
        out: &mut Vec<Problem>,
    ) -> Result<(), Abort> {
        let length = text.chars().count();
        if let Some(min) = schema.get("minLength").and_then(count)
            && length < min
        {
            push(
                out,
                path,
                format!("must be at least {min} {} long", plural(min, "character")),
            );
        }
        if let Some(max) = schema.get("maxLength").and_then(count)
            && length > max
        {
            push(
                out,
                path,
                format!(
                    "must be at most {max} {} long, got {length}",
                    plural(max, "character")
                ),
            );
        }
        if let Some(Value::String(pattern)) = schema.get("pattern")
            && let Some(regex) = self.pattern(pattern, path)?
            && !regex.is_match(text)
        {
            push(out, path, format!("must match the pattern {}", show_str(pattern)));
        }
        Ok(())
    }

    /// `prefixItems`/`items`/`additionalItems`, `contains`, `minItems`, `maxItems`,
    /// `uniqueItems`.
    pub(super) fn check_array(
        &mut self,
        schema: &'s Map<String, Value>,
        items: &[Value],
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
        cap: usize,
    ) -> Result<(), Abort> {
        if let Some(min) = schema.get("minItems").and_then(count)
            && items.len() < min
        {
            push(
                out,
                path,
                format!(
                    "must have at least {min} {}, got {}",
                    plural(min, "item"),
                    items.len()
                ),
            );
        }
        if let Some(max) = schema.get("maxItems").and_then(count)
            && items.len() > max
        {
            push(
                out,
                path,
                format!(
                    "must have at most {max} {}, got {}",
                    plural(max, "item"),
                    items.len()
                ),
            );
        }
        if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
            'outer: for (i, a) in items.iter().enumerate() {
                for (j, b) in items.iter().enumerate().skip(i + 1) {
                    if self.equal(a, b, path)? {
                        push(
                            out,
                            path,
                            format!("items must be unique, but [{i}] and [{j}] are equal"),
                        );
                        break 'outer;
                    }
                }
            }
        }
        // draft 2020-12: `prefixItems` then `items`; draft-07: `items` as a list then
        // `additionalItems`.
        let (prefix, rest) = match (schema.get("prefixItems"), schema.get("items")) {
            (Some(Value::Array(prefix)), rest) => (prefix.as_slice(), rest),
            (_, Some(Value::Array(prefix))) => (prefix.as_slice(), schema.get("additionalItems")),
            (_, rest) => (&[][..], rest),
        };
        for (i, item) in items.iter().enumerate() {
            if out.len() >= cap {
                return Ok(());
            }
            let sub = match prefix.get(i) {
                Some(sub) => sub,
                None => match rest {
                    Some(sub) => sub,
                    None => break,
                },
            };
            let item_path = format!("{path}[{i}]");
            if sub == &Value::Bool(false) && i >= prefix.len() {
                push(
                    out,
                    &item_path,
                    format!(
                        "is not allowed: at most {} {}",
                        prefix.len(),
                        plural(prefix.len(), "item")
                    ),
                );
                continue;
            }
            self.validate(sub, item, &item_path, depth + 1, out, cap)?;
        }
        if let Some(contains) = schema.get("contains") {
            let mut found = false;
            for item in items {
                if self.probe(contains, item, path, depth)?.is_none() {
                    found = true;
                    break;
                }
            }
            if !found {
                push(
                    out,
                    path,
                    "must contain at least one item that matches \"contains\"".to_string(),
                );
            }
        }
        Ok(())
    }

    /// `required`, `properties`, `patternProperties`, `additionalProperties`,
    /// `minProperties`, `maxProperties`.
    pub(super) fn check_object(
        &mut self,
        schema: &'s Map<String, Value>,
        object: &Map<String, Value>,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
        cap: usize,
    ) -> Result<(), Abort> {
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required {
                self.tick(path)?;
                if let Value::String(name) = name
                    && !object.contains_key(name)
                {
                    push(out, path, format!("missing required property {}", show_str(name)));
                    if out.len() >= cap {
                        return Ok(());
                    }
                }
            }
        }
        if let Some(min) = schema.get("minProperties").and_then(count)
            && object.len() < min
        {
            push(
                out,
                path,
                format!("must have at least {min} {}", plural(min, "property")),
            );
        }
        if let Some(max) = schema.get("maxProperties").and_then(count)
            && object.len() > max
        {
            push(
                out,
                path,
                format!("must have at most {max} {}", plural(max, "property")),
            );
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let pattern_properties = schema.get("patternProperties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, item) in object {
            if out.len() >= cap {
                return Ok(());
            }
            self.tick(path)?;
            let item_path = property_path(path, key);
            let mut described = false;
            if let Some(sub) = properties.and_then(|p| p.get(key)) {
                described = true;
                self.validate(sub, item, &item_path, depth + 1, out, cap)?;
            }
            for (pattern, sub) in pattern_properties.into_iter().flatten() {
                self.tick(path)?;
                if let Some(regex) = self.pattern(pattern, path)?
                    && regex.is_match(key)
                {
                    described = true;
                    self.validate(sub, item, &item_path, depth + 1, out, cap)?;
                }
            }
            match additional {
                Some(_) if described => {}
                Some(Value::Bool(false)) => {
                    let allowed = properties
                        .map(|p| p.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default();
                    let hint = if allowed.is_empty() || pattern_properties.is_some() {
                        String::new()
                    } else {
                        format!(" (allowed: {})", list_names(&allowed))
                    };
                    push(out, path, format!("unexpected property {}{hint}", show_str(key)));
                }
                Some(sub) => self.validate(sub, item, &item_path, depth + 1, out, cap)?,
                None => {}
            }
        }
        Ok(())
    }
}

/// `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (number forms), `multipleOf`.
pub(super) fn check_number(schema: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<Problem>) {
    let Some(n) = value.as_f64() else { return };
    let bound = |key: &str| schema.get(key).and_then(|b| b.as_f64().map(|f| (f, b)));
    if let Some((min, shown)) = bound("minimum")
        && n < min
    {
        push(out, path, format!("must be at least {shown}, got {value}"));
    }
    if let Some((max, shown)) = bound("maximum")
        && n > max
    {
        push(out, path, format!("must be at most {shown}, got {value}"));
    }
    if let Some((min, shown)) = bound("exclusiveMinimum")
        && n <= min
    {
        push(out, path, format!("must be greater than {shown}, got {value}"));
    }
    if let Some((max, shown)) = bound("exclusiveMaximum")
        && n >= max
    {
        push(out, path, format!("must be less than {shown}, got {value}"));
    }
    if let Some((step, shown)) = bound("multipleOf")
        && step > 0.0
    {
        let ratio = n / step;
        if ratio.is_finite() && (ratio - ratio.round()).abs() > 1e-9 * ratio.abs().max(1.0) {
            push(out, path, format!("must be a multiple of {shown}, got {value}"));
        }
    }
}

/// What `type` expected, when `value` is none of it; `None` when it matches.
pub(super) fn type_mismatch(types: &Value, value: &Value) -> Option<String> {
    let names: Vec<&str> = match types {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().take(16).filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let mut known = Vec::new();
    for name in names {
        match type_matches(name, value) {
            // An unknown type name is not ours to judge.
            None => return None,
            Some(true) => return None,
            Some(false) => known.push(name),
        }
    }
    if known.is_empty() {
        return None;
    }
    let described: Vec<&str> = known.iter().map(|name| article(name)).collect();
    Some(match described.as_slice() {
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => return None,
    })
}

/// Whether `value` is of the JSON Schema type `name`; `None` for a name JSON Schema lacks.
fn type_matches(name: &str, value: &Value) -> Option<bool> {
    Some(match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
            }
            _ => false,
        },
        _ => return None,
    })
}

/// A non-negative integer keyword such as `minLength`.
fn count(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        _ => None,
    }
}
