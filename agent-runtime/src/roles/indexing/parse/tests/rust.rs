//! Rust: definitions, `impl` and trait methods, `use` imports, calls and chunks.

use super::*;

const RUST: &str = r#"use std::collections::HashMap;
use crate::{a, b};

/// A server.
pub struct Server {
    name: String,
}

impl Server {
    pub fn new() -> Self {
        helper();
        Server { name: String::new() }
    }
}

impl Display for Server {
    fn fmt(&self, f: &mut Formatter) -> Result {
        f.write_str("x")
    }
}

pub trait Greet {
    fn hello(&self);
}

pub enum Mode { A, B }

type Map = HashMap<String, u32>;
const LIMIT: u32 = 3;
static NAME: &str = "x";

mod inner {
    fn helper() {
        fn nested() {}
        nested();
    }
}

impl<T> From<T> for Wrapper<T> {
    fn from(t: T) -> Self {
        Wrapper(t)
    }
}
"#;

#[test]
fn rust_symbols_imports_calls_and_chunks() {
    let file = parsed(Language::Rust, RUST);
    assert_eq!(
        symbols(&file),
        vec![
            ("Server", Struct, 5, 7, None),
            ("new", Method, 10, 13, Some("Server")),
            ("fmt", Method, 17, 19, Some("Server")),
            ("Greet", Trait, 22, 24, None),
            ("hello", Method, 23, 23, Some("Greet")),
            ("Mode", Enum, 26, 26, None),
            ("Map", Type, 28, 28, None),
            ("LIMIT", Constant, 29, 29, None),
            ("NAME", Constant, 30, 30, None),
            ("inner", Module, 32, 37, None),
            ("helper", Function, 33, 36, Some("inner")),
            ("nested", Function, 34, 34, Some("helper")),
            ("from", Method, 40, 42, Some("Wrapper")),
        ]
    );
    assert_eq!(
        imports(&file),
        vec![("std::collections::HashMap", 1), ("crate::{a, b}", 2)]
    );
    assert_eq!(
        calls(&file),
        vec![
            ("helper", 11, Some("new")),
            ("new", 12, Some("new")),
            ("write_str", 18, Some("fmt")),
            ("nested", 35, Some("helper")),
            ("Wrapper", 41, Some("from")),
        ]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 2, None, None),
            (4, 7, Some("Server"), Some(Struct)),
            (9, 14, Some("Server"), None),
            (16, 20, Some("Server"), None),
            (22, 24, Some("Greet"), Some(Trait)),
            (26, 26, Some("Mode"), Some(Enum)),
            (28, 30, None, None),
            (32, 37, Some("inner"), Some(Module)),
            (39, 43, Some("Wrapper"), None),
        ]
    );
}
