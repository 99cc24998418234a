//! Python: definitions, imports, calls and chunks.

use super::*;

const PYTHON: &str = r#"import os
import a.b as ab
from x.y import z
from . import sibling

MAX_SIZE = 10
name = "x"


@decorator
class Greeter(Base):
    """Doc."""

    def __init__(self, name):
        self.name = name
        setup(name)

    @property
    def greet(self):
        def inner():
            return self.name.upper()
        return inner()


def main():
    Greeter("x").greet


if __name__ == "__main__":
    main()
"#;

#[test]
fn python_symbols_imports_calls_and_chunks() {
    let file = parsed(Language::Python, PYTHON);
    assert_eq!(
        symbols(&file),
        vec![
            ("MAX_SIZE", Constant, 6, 6, None),
            ("Greeter", Class, 11, 22, None),
            ("__init__", Method, 14, 16, Some("Greeter")),
            ("greet", Method, 19, 22, Some("Greeter")),
            ("inner", Function, 20, 21, Some("greet")),
            ("main", Function, 25, 26, None),
        ]
    );
    assert_eq!(imports(&file), vec![("os", 1), ("a.b", 2), ("x.y", 3), (".", 4)]);
    assert_eq!(
        calls(&file),
        vec![
            ("setup", 16, Some("__init__")),
            ("upper", 21, Some("inner")),
            ("inner", 22, Some("greet")),
            ("Greeter", 26, Some("main")),
            ("main", 30, None),
        ]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 7, None, None),
            (10, 22, Some("Greeter"), Some(Class)),
            (25, 26, Some("main"), Some(Function)),
            (29, 30, None, None),
        ]
    );
}
