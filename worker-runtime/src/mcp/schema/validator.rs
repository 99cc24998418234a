//! The walk over a schema and a value: `$ref`s, combinators, and the caps on the work.
//! The keywords of each kind of value are in [`super::keywords`].

use std::collections::HashMap;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::keywords::{check_number, type_mismatch};
use super::text::{alternatives, describe, list_values, push, show};
use super::{MAX_DEPTH, MAX_PATTERNS, MAX_STEPS, Problem};

/// The compiled size one pattern may take, in bytes.
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// A cap was reached: the check stops at once, whatever alternative it was trying.
pub(super) struct Abort(pub(super) Problem);

/// The state of one check: the document `$ref`s point into, and the work done so far.
pub(super) struct Validator<'s> {
    root: &'s Value,
    steps: usize,
    patterns: HashMap<&'s str, Option<Regex>>,
}

impl<'s> Validator<'s> {
    /// A check of values against `root`.
    pub(super) fn new(root: &'s Value) -> Self {
        Validator {
            root,
            steps: 0,
            patterns: HashMap::new(),
        }
    }

    /// Counts one unit of work, failing once the budget is spent.
    pub(super) fn tick(&mut self, path: &str) -> Result<(), Abort> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Abort(Problem {
                path: path.to_string(),
                message: format!("the schema or the value is too large to check (over {MAX_STEPS} steps)"),
            }));
        }
        Ok(())
    }

    /// Adds to `out` the problems of `value` under `schema`, stopping once `out` holds `cap`.
    pub(super) fn validate(
        &mut self,
        schema: &'s Value,
        value: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
        cap: usize,
    ) -> Result<(), Abort> {
        self.tick(path)?;
        if depth > MAX_DEPTH {
            return Err(Abort(Problem {
                path: path.to_string(),
                message: format!(
                    "the schema nests more than {MAX_DEPTH} levels deep (or its $refs loop); it cannot be checked"
                ),
            }));
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => {
                push(out, path, "no value is allowed here".to_string());
                return Ok(());
            }
            Value::Object(schema) => schema,
            // Not a schema: nothing to check against.
            _ => return Ok(()),
        };
        let start = out.len();

        if let Some(Value::String(reference)) = schema.get("$ref")
            && let Some(target) = self.resolve(reference)
        {
            self.validate(target, value, path, depth + 1, out, cap)?;
            if out.len() >= cap {
                return Ok(());
            }
        }
        if let Some(types) = schema.get("type")
            && let Some(expected) = type_mismatch(types, value)
        {
            push(out, path, format!("expected {expected}, got {}", describe(value)));
            // The other keywords would only repeat that the value has the wrong kind.
            return Ok(());
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            let mut found = false;
            for candidate in allowed {
                if self.equal(candidate, value, path)? {
                    found = true;
                    break;
                }
            }
            if !found {
                push(out, path, format!("must be one of {}", list_values(allowed)));
            }
        }
        if let Some(expected) = schema.get("const")
            && !self.equal(expected, value, path)?
        {
            push(out, path, format!("must be {}", show(expected)));
        }
        match value {
            Value::Number(_) => check_number(schema, value, path, out),
            Value::String(text) => self.check_string(schema, text, path, out)?,
            Value::Array(items) => self.check_array(schema, items, path, depth, out, cap)?,
            Value::Object(object) => self.check_object(schema, object, path, depth, out, cap)?,
            Value::Null | Value::Bool(_) => {}
        }
        if out.len() >= cap {
            return Ok(());
        }
        self.check_combinators(schema, value, path, depth, out, cap)?;
        // Keep within the cap even when several keywords added problems at once.
        if out.len() > cap.max(start) {
            out.truncate(cap.max(start));
        }
        Ok(())
    }

    /// `allOf`, `anyOf`, `oneOf` and `not`.
    fn check_combinators(
        &mut self,
        schema: &'s Map<String, Value>,
        value: &Value,
        path: &str,
        depth: usize,
        out: &mut Vec<Problem>,
        cap: usize,
    ) -> Result<(), Abort> {
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.validate(sub, value, path, depth + 1, out, cap)?;
                if out.len() >= cap {
                    return Ok(());
                }
            }
        }
        if let Some(Value::Array(any)) = schema.get("anyOf") {
            let mut failures = Vec::new();
            let mut matched = false;
            for sub in any {
                match self.probe(sub, value, path, depth)? {
                    None => {
                        matched = true;
                        break;
                    }
                    Some(problem) => failures.push(problem),
                }
            }
            if !matched && !any.is_empty() {
                push(
                    out,
                    path,
                    format!(
                        "matches none of the allowed alternatives ({})",
                        alternatives(path, &failures)
                    ),
                );
            }
        }
        if let Some(Value::Array(one)) = schema.get("oneOf") {
            let mut failures = Vec::new();
            let mut matched = Vec::new();
            for (i, sub) in one.iter().enumerate() {
                match self.probe(sub, value, path, depth)? {
                    None => matched.push(i + 1),
                    Some(problem) => failures.push(problem),
                }
            }
            match matched.len() {
                0 if !one.is_empty() => push(
                    out,
                    path,
                    format!(
                        "matches none of the allowed alternatives ({})",
                        alternatives(path, &failures)
                    ),
                ),
                0 | 1 => {}
                _ => push(
                    out,
                    path,
                    format!(
                        "must match exactly one alternative, but matches alternatives {}",
                        matched
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        if let Some(not) = schema.get("not")
            && self.probe(not, value, path, depth)?.is_none()
        {
            push(out, path, "must not match the schema under \"not\"".to_string());
        }
        Ok(())
    }

    /// Whether `value` satisfies `sub`: `None` if it does, else its first problem.
    pub(super) fn probe(
        &mut self,
        sub: &'s Value,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Option<Problem>, Abort> {
        let mut problems = Vec::new();
        self.validate(sub, value, path, depth + 1, &mut problems, 1)?;
        Ok(problems.into_iter().next())
    }

    /// The compiled `pattern`, or `None` when it cannot be compiled (then it is not checked).
    pub(super) fn pattern(&mut self, pattern: &'s str, path: &str) -> Result<Option<Regex>, Abort> {
        if let Some(compiled) = self.patterns.get(pattern) {
            return Ok(compiled.clone());
        }
        if self.patterns.len() >= MAX_PATTERNS {
            return Err(Abort(Problem {
                path: path.to_string(),
                message: format!("the schema has more than {MAX_PATTERNS} patterns; it cannot be checked"),
            }));
        }
        // Compiling costs more than a step; count it as many.
        for _ in 0..100 {
            self.tick(path)?;
        }
        let compiled = RegexBuilder::new(pattern)
            .size_limit(MAX_PATTERN_BYTES)
            .dfa_size_limit(MAX_PATTERN_BYTES)
            .build()
            .ok();
        self.patterns.insert(pattern, compiled.clone());
        Ok(compiled)
    }

    /// The schema a local `$ref` names, or `None` for one that points elsewhere or nowhere.
    fn resolve(&self, reference: &str) -> Option<&'s Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(pointer)
    }

    /// JSON equality as JSON Schema means it: `1` equals `1.0`, key order does not matter.
    pub(super) fn equal(&mut self, a: &Value, b: &Value, path: &str) -> Result<bool, Abort> {
        self.tick(path)?;
        Ok(match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (x, y) in x.iter().zip(y) {
                    if !self.equal(x, y, path)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (key, x) in x {
                    match y.get(key) {
                        Some(y) if self.equal(x, y, path)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            _ => a == b,
        })
    }
}
