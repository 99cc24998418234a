//! Go: definitions, receiver methods, imports, calls and chunks.

use super::*;

const GO: &str = r#"package server

import (
	"fmt"
	str "strings"
)

const (
	A = iota
	B
)

type Server struct {
	name string
}

type Handler interface {
	Serve()
}

type ID = string
type Count int

func New(name string) *Server {
	return &Server{name: str.ToUpper(name)}
}

func (s *Server) Serve() {
	fmt.Println(s.name)
	helper()
}

func (l List[T]) Len() int { return len(l) }
"#;

#[test]
fn go_symbols_imports_calls_and_chunks() {
    let file = parsed(Language::Go, GO);
    assert_eq!(
        symbols(&file),
        vec![
            ("A", Constant, 9, 9, None),
            ("B", Constant, 10, 10, None),
            ("Server", Struct, 13, 15, None),
            ("Handler", Interface, 17, 19, None),
            ("ID", Type, 21, 21, None),
            ("Count", Type, 22, 22, None),
            ("New", Function, 24, 26, None),
            ("Serve", Method, 28, 31, Some("Server")),
            ("Len", Method, 33, 33, Some("List")),
        ]
    );
    assert_eq!(imports(&file), vec![("fmt", 4), ("strings", 5)]);
    assert_eq!(
        calls(&file),
        vec![
            ("ToUpper", 25, Some("New")),
            ("Println", 29, Some("Serve")),
            ("helper", 30, Some("Serve")),
            ("len", 33, Some("Len")),
        ]
    );
    assert_eq!(
        chunks(&file),
        vec![
            (1, 11, None, None),
            (13, 15, Some("Server"), Some(Struct)),
            (17, 19, Some("Handler"), Some(Interface)),
            (21, 22, None, None),
            (24, 26, Some("New"), Some(Function)),
            (28, 31, Some("Serve"), Some(Method)),
            (33, 33, Some("Len"), Some(Method)),
        ]
    );
}
