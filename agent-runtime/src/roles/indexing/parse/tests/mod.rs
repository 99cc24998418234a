//! Unit tests of [`parse`](super::parse): shared helpers and the checks of chunking, syntax
//! errors, languages and kinds; one module per language for its symbols, imports, calls and
//! chunks.

mod ecmascript;
mod go;
mod python;
mod rust;

use super::*;
use SymbolKind::*;

type Sym<'a> = (&'a str, SymbolKind, u32, u32, Option<&'a str>);

fn parsed(language: Language, source: &str) -> ParsedFile {
    let file = parse(language, source).expect("parses");
    assert_chunks_cover(source, &file.chunks);
    file
}

fn symbols(file: &ParsedFile) -> Vec<Sym<'_>> {
    file.symbols
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.kind,
                s.line,
                s.end_line,
                s.container.as_deref(),
            )
        })
        .collect()
}

fn imports(file: &ParsedFile) -> Vec<(&str, u32)> {
    file.imports.iter().map(|i| (i.module.as_str(), i.line)).collect()
}

fn calls(file: &ParsedFile) -> Vec<(&str, u32, Option<&str>)> {
    file.calls
        .iter()
        .map(|c| (c.callee.as_str(), c.line, c.caller.as_deref()))
        .collect()
}

fn chunks(file: &ParsedFile) -> Vec<(u32, u32, Option<&str>, Option<SymbolKind>)> {
    file.chunks
        .iter()
        .map(|c| (c.start_line, c.end_line, c.symbol.as_deref(), c.kind))
        .collect()
}

/// Every non-blank line is in exactly one chunk; chunks are in order, within the limits,
/// not blank, and hold exactly their lines.
fn assert_chunks_cover(source: &str, chunks: &[Chunk]) {
    let lines: Vec<&str> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut owners = vec![0; lines.len()];
    let mut last_end = 0;
    for chunk in chunks {
        assert!(
            chunk.start_line > last_end,
            "chunks overlap or are out of order at {chunk:?}"
        );
        assert!(chunk.start_line <= chunk.end_line);
        assert!(
            chunk.end_line - chunk.start_line < MAX_CHUNK_LINES,
            "too many lines: {chunk:?}"
        );
        assert!(
            chunk.text.len() <= MAX_CHUNK_BYTES,
            "too many bytes in chunk at {}",
            chunk.start_line
        );
        assert!(!chunk.text.trim().is_empty(), "blank chunk {chunk:?}");
        let (a, b) = (chunk.start_line as usize - 1, chunk.end_line as usize - 1);
        assert_eq!(chunk.text, lines[a..=b].join("\n"), "chunk text is not its lines");
        for owner in &mut owners[a..=b] {
            *owner += 1;
        }
        last_end = chunk.end_line;
    }
    for (i, line) in lines.iter().enumerate() {
        if !line.trim().is_empty() {
            assert_eq!(
                owners[i],
                1,
                "line {} ({line:?}) is in {} chunks",
                i + 1,
                owners[i]
            );
        }
    }
}

#[test]
fn a_big_impl_is_cut_into_its_methods() {
    let mut source = String::from("struct Big;\n\n/// Many methods.\nimpl Big {\n    const N: u32 = 1;\n");
    for i in 0..20 {
        source.push_str(&format!(
            "\n    /// Method {i}.\n    fn m{i}(&self) -> u32 {{\n        {i}\n    }}\n"
        ));
    }
    source.push_str("}\n");
    let file = parsed(Language::Rust, &source);
    let cut = chunks(&file);
    assert_eq!(cut[0], (1, 1, Some("Big"), Some(Struct)));
    assert_eq!(
        cut[1],
        (3, 5, Some("Big"), None),
        "the impl header with its doc and the const"
    );
    assert_eq!(cut.len(), 22);
    for (i, chunk) in file.chunks[2..].iter().enumerate() {
        assert_eq!(
            (chunk.symbol.as_deref(), chunk.kind),
            (Some(format!("m{i}").as_str()), Some(Method))
        );
        assert!(
            chunk.text.starts_with(&format!("    /// Method {i}.")),
            "doc comment stays with m{i}"
        );
    }
    assert!(
        file.chunks.last().is_some_and(|c| c.text.ends_with("\n}")),
        "the closing brace is kept"
    );
}

#[test]
fn a_long_function_is_split_into_pieces_that_keep_its_symbol() {
    let mut source = String::from("import os\n\ndef long():\n");
    for i in 0..150 {
        source.push_str(&format!("    x{i} = os.getenv('V{i}')\n"));
    }
    let file = parsed(Language::Python, &source);
    assert_eq!(
        chunks(&file),
        vec![
            (1, 1, None, None),
            (3, 62, Some("long"), Some(Function)),
            (63, 122, Some("long"), Some(Function)),
            (123, 153, Some("long"), Some(Function)),
        ]
    );
}

#[test]
fn chunks_respect_the_byte_limit_and_split_overlong_lines() {
    let wide = format!("const DATA = \"{}\";\n", "x".repeat(3 * MAX_CHUNK_BYTES));
    let source = format!("function f() {{\n  return 1;\n}}\n{wide}");
    let file = parse(Language::JavaScript, &source).expect("parses");
    let pieces: Vec<&Chunk> = file.chunks.iter().filter(|c| c.start_line == 4).collect();
    assert_eq!(pieces.len(), 4);
    assert!(
        pieces
            .iter()
            .all(|c| c.end_line == 4 && c.text.len() <= MAX_CHUNK_BYTES)
    );
    assert_eq!(
        pieces.iter().map(|c| c.text.as_str()).collect::<String>(),
        wide.trim_end()
    );
    assert_eq!(file.chunks[0].symbol.as_deref(), Some("f"));

    let mut many = String::new();
    for i in 0..50 {
        many.push_str(&format!("# {}\nV{i} = {i}\n", "c".repeat(120)));
    }
    assert_chunks_cover(&many, &parsed(Language::Python, &many).chunks);
}

#[test]
fn syntax_errors_keep_the_valid_definitions() {
    let source =
        "def ok():\n    return 1\n\ndef broken(:\n    pass\n\nclass Fine:\n    def m(self):\n        pass\n";
    let file = parsed(Language::Python, source);
    let names: Vec<&str> = file.symbols.iter().map(|s| s.name.as_str()).collect();
    for name in ["ok", "Fine", "m"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let source = "fn good() {}\nfn bad( {\n}\nstruct Kept;\nimpl Kept { fn fine(&self) {} }\n";
    let file = parsed(Language::Rust, source);
    let names: Vec<&str> = file.symbols.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"good"), "{names:?}");
    for (language, source) in [
        (Language::Go, "package x\nfunc ok() {}\nfunc (\n"),
        (Language::TypeScript, "function ok() {}\nclass {{{ \n"),
        (
            Language::Tsx,
            "function ok() { return <div>; }\nconst A = () => <div></span>;\n",
        ),
        (Language::JavaScript, "function ok() {}\n)))(((\n"),
    ] {
        let file = parsed(language, source);
        assert!(
            file.symbols.iter().any(|s| s.name == "ok"),
            "{language}: {:?}",
            file.symbols
        );
    }
}

#[test]
fn empty_and_blank_files_yield_nothing() {
    for language in Language::ALL {
        for source in ["", "\n\n   \n", "\r\n"] {
            let file = parsed(language, source);
            assert_eq!(file.language, language);
            assert!(file.symbols.is_empty() && file.imports.is_empty() && file.calls.is_empty());
            assert!(file.chunks.is_empty(), "{language}: {:?}", file.chunks);
        }
    }
}

#[test]
fn languages_by_path() {
    let table = [
        ("src/main.rs", Some(Language::Rust)),
        ("a/b.py", Some(Language::Python)),
        ("stubs/x.pyi", Some(Language::Python)),
        ("index.ts", Some(Language::TypeScript)),
        ("index.d.ts", Some(Language::TypeScript)),
        ("x.mts", Some(Language::TypeScript)),
        ("x.cts", Some(Language::TypeScript)),
        ("App.TSX", Some(Language::Tsx)),
        ("a.js", Some(Language::JavaScript)),
        ("a.mjs", Some(Language::JavaScript)),
        ("a.cjs", Some(Language::JavaScript)),
        ("a.jsx", Some(Language::JavaScript)),
        ("cmd/main.go", Some(Language::Go)),
        ("README.md", None),
        ("Makefile", None),
        ("dir.rs/file", None),
    ];
    for (path, language) in table {
        assert_eq!(Language::of_path(path), language, "{path}");
    }
    let names: Vec<&str> = Language::ALL.iter().map(|l| l.name()).collect();
    assert_eq!(names, ["rust", "python", "typescript", "tsx", "javascript", "go"]);
}

#[test]
fn kinds_round_trip_through_their_names_and_serde() {
    for kind in [
        Function, Method, Class, Struct, Enum, Trait, Interface, Type, Constant, Module,
    ] {
        assert_eq!(SymbolKind::parse(kind.as_str()), Some(kind));
        let json = serde_json::to_string(&kind).expect("serializes");
        assert_eq!(json, format!("\"{}\"", kind.as_str()));
    }
    assert_eq!(SymbolKind::parse("Function"), None);
    let symbol = Symbol {
        name: "f".into(),
        kind: Function,
        line: 1,
        end_line: 2,
        container: None,
    };
    let json = serde_json::to_value(&symbol).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({"name": "f", "kind": "function", "line": 1, "endLine": 2})
    );
    let json = serde_json::to_value(Language::TypeScript).expect("serializes");
    assert_eq!(json, "typescript");
}

#[test]
fn every_query_compiles() {
    for language in Language::ALL {
        compiled_query(language).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Deeply nested definitions (a generated or hostile file) parse on a thread with the blocking
/// pool's 2 MiB stack, without overflowing it.
#[test]
fn deeply_nested_definitions_do_not_overflow_the_stack() {
    let depth = 25_000;
    let mut source = String::new();
    for i in 0..depth {
        source.push_str(&format!("function f{i}() {{\n"));
    }
    for _ in 0..depth {
        source.push_str("}\n");
    }
    let parsed = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || parse(Language::JavaScript, &source).map(|p| (p.symbols.len(), p.chunks.len())))
        .unwrap()
        .join()
        .expect("no stack overflow");
    let (symbols, chunks) = parsed.unwrap();
    assert_eq!(symbols, depth);
    assert!(chunks >= 1);
}
