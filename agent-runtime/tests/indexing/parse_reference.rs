//! Parses the real multi-language tree in `tests/data/index` and checks it against independent
//! references: Python's `ast` for the Python package, `go/parser` for the Go module, and known
//! definitions (read off the files) for Rust, TypeScript/TSX and JavaScript.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use cogo_agent::roles::indexing::parse::{Language, ParsedFile, SymbolKind, parse};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/index")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

struct Parsed {
    path: PathBuf,
    rel: String,
    source: String,
    file: ParsedFile,
}

fn parse_tree() -> Vec<Parsed> {
    let root = data_dir();
    let mut paths = Vec::new();
    files_under(&root, &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            let language = Language::of_path(&rel)?;
            let source = std::fs::read_to_string(&path).expect("utf-8 source");
            let file = parse(language, &source).unwrap_or_else(|e| panic!("{rel}: {e}"));
            Some(Parsed {
                path,
                rel,
                source,
                file,
            })
        })
        .collect()
}

fn find<'a>(tree: &'a [Parsed], rel: &str) -> &'a Parsed {
    tree.iter()
        .find(|p| p.rel == rel)
        .unwrap_or_else(|| panic!("{rel} not in the test data"))
}

#[test]
fn every_file_parses_and_is_chunked_completely() {
    let tree = parse_tree();
    let mut per_language: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
    for p in &tree {
        let lines: Vec<&str> = p.source.split('\n').collect();
        let mut owners = vec![0u32; lines.len()];
        for chunk in &p.file.chunks {
            assert!(
                chunk.text.len() <= 4096 && chunk.end_line - chunk.start_line < 60,
                "{}",
                p.rel
            );
            for owner in &mut owners[chunk.start_line as usize - 1..chunk.end_line as usize] {
                *owner += 1;
            }
        }
        for (i, line) in lines.iter().enumerate() {
            if !line.trim().is_empty() {
                assert_eq!(owners[i], 1, "{}:{} is in {} chunks", p.rel, i + 1, owners[i]);
            }
        }
        for symbol in &p.file.symbols {
            assert!(
                symbol.line >= 1 && symbol.line <= symbol.end_line,
                "{}: {symbol:?}",
                p.rel
            );
            assert!(symbol.end_line as usize <= lines.len(), "{}: {symbol:?}", p.rel);
        }
        let entry = per_language.entry(p.file.language.name()).or_default();
        entry.0 += 1;
        entry.1 += p.file.symbols.len();
        entry.2 += p.file.chunks.len();
        entry.3 += p.file.calls.len();
    }
    for language in ["rust", "python", "typescript", "tsx", "javascript", "go"] {
        assert!(
            per_language.contains_key(language),
            "no {language} file in the test data"
        );
    }
    for (language, (files, symbols, chunks, calls)) in &per_language {
        println!(
            "{language:<11} files {files:>3}  symbols {symbols:>4}  chunks {chunks:>4}  calls {calls:>5}"
        );
    }
}

/// (file, name, kind, line, end line)
type Def = (String, String, &'static str, u32, u32);

fn ours(tree: &[Parsed], language: Language, kinds: &[SymbolKind]) -> BTreeSet<Def> {
    tree.iter()
        .filter(|p| p.file.language == language)
        .flat_map(|p| {
            p.file
                .symbols
                .iter()
                .filter(|s| kinds.contains(&s.kind))
                .map(|s| (p.rel.clone(), s.name.clone(), s.kind.as_str(), s.line, s.end_line))
        })
        .collect()
}

fn reference(output: std::process::Output, what: &str) -> BTreeSet<Def> {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let kind = SymbolKind::parse(f[2])
                .unwrap_or_else(|| panic!("kind {}", f[2]))
                .as_str();
            (
                f[0].to_string(),
                f[1].to_string(),
                kind,
                f[3].parse().expect("line"),
                f[4].parse().expect("end"),
            )
        })
        .collect()
}

fn assert_same(what: &str, ours: &BTreeSet<Def>, theirs: &BTreeSet<Def>) {
    let missing: Vec<&Def> = theirs.difference(ours).collect();
    let extra: Vec<&Def> = ours.difference(theirs).collect();
    println!(
        "{what}: {} definitions in the reference, {} found",
        theirs.len(),
        ours.len()
    );
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
}

const PYTHON_AST: &str = r#"
import ast, sys, pathlib
root = pathlib.Path(sys.argv[1])
for path in sorted(root.rglob("*.py")):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            kind = "class"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind = "method" if isinstance(parents.get(node), ast.ClassDef) else "function"
        else:
            continue
        print(f"{path.relative_to(root.parent).as_posix()}\t{node.name}\t{kind}\t{node.lineno}\t{node.end_lineno}")
"#;

#[test]
fn python_definitions_match_pythons_ast() {
    let tree = parse_tree();
    let dir = data_dir().join("python");
    let output = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_AST)
        .arg(&dir)
        .output()
        .expect("python3 runs");
    let theirs: BTreeSet<Def> = reference(output, "python3 ast");
    let ours = ours(
        &tree,
        Language::Python,
        &[SymbolKind::Function, SymbolKind::Method, SymbolKind::Class],
    );
    assert!(
        theirs.len() > 50,
        "the reference found too little: {}",
        theirs.len()
    );
    assert_same("python vs ast", &ours, &theirs);
}

const GO_AST: &str = r#"package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func recv(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recv(t.X)
	case *ast.IndexExpr:
		return recv(t.X)
	case *ast.IndexListExpr:
		return recv(t.X)
	case *ast.Ident:
		return t.Name
	}
	return "?"
}

func main() {
	root := os.Args[1]
	var files []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, p := range files {
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		rel, _ := filepath.Rel(filepath.Dir(root), p)
		line := func(pos token.Pos) int { return fset.Position(pos).Line }
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				kind, name := "function", d.Name.Name
				if d.Recv != nil && len(d.Recv.List) > 0 {
					kind, name = "method", recv(d.Recv.List[0].Type)+"."+d.Name.Name
				}
				fmt.Printf("%s\t%s\t%s\t%d\t%d\n", rel, name, kind, line(d.Pos()), line(d.End()))
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						kind := "type"
						switch s.Type.(type) {
						case *ast.StructType:
							kind = "struct"
						case *ast.InterfaceType:
							kind = "interface"
						}
						fmt.Printf("%s\t%s\t%s\t%d\t%d\n", rel, s.Name.Name, kind, line(s.Pos()), line(s.End()))
					case *ast.ValueSpec:
						if d.Tok == token.CONST {
							for _, n := range s.Names {
								fmt.Printf("%s\t%s\tconstant\t%d\t%d\n", rel, n.Name, line(n.Pos()), line(s.End()))
							}
						}
					}
				}
			}
		}
	}
}
"#;

#[test]
fn go_definitions_match_go_parser() {
    let tree = parse_tree();
    let work = std::env::temp_dir().join(format!("parse-go-ref-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    let program = work.join("main.go");
    std::fs::write(&program, GO_AST).expect("write the Go program");
    let output = Command::new("go")
        .arg("run")
        .arg(&program)
        .arg(data_dir().join("go"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .current_dir(&work)
        .output()
        .expect("go runs");
    let _ = std::fs::remove_dir_all(&work);
    let theirs: BTreeSet<Def> = reference(output, "go run");
    let all = [
        SymbolKind::Function,
        SymbolKind::Method,
        SymbolKind::Struct,
        SymbolKind::Interface,
        SymbolKind::Type,
        SymbolKind::Constant,
    ];
    let ours: BTreeSet<Def> = tree
        .iter()
        .filter(|p| p.file.language == Language::Go)
        .flat_map(|p| {
            p.file.symbols.iter().filter(|s| all.contains(&s.kind)).map(|s| {
                let name = match (&s.container, s.kind) {
                    (Some(receiver), SymbolKind::Method) => format!("{receiver}.{}", s.name),
                    _ => s.name.clone(),
                };
                (p.rel.clone(), name, s.kind.as_str(), s.line, s.end_line)
            })
        })
        .collect();
    assert!(
        theirs.len() > 50,
        "the reference found too little: {}",
        theirs.len()
    );
    assert_same("go vs go/parser", &ours, &theirs);
}

/// (file, name, kind, line, end line, container) read off the files by hand.
type Known = (
    &'static str,
    &'static str,
    SymbolKind,
    u32,
    u32,
    Option<&'static str>,
);

const KNOWN: &[Known] = &[
    (
        "rust/semver-1.0.28/src/identifier.rs",
        "PTR_BYTES",
        SymbolKind::Constant,
        76,
        76,
        None,
    ),
    (
        "rust/semver-1.0.28/src/identifier.rs",
        "Identifier",
        SymbolKind::Struct,
        84,
        87,
        None,
    ),
    (
        "rust/semver-1.0.28/src/identifier.rs",
        "ptr_to_repr",
        SymbolKind::Function,
        281,
        293,
        None,
    ),
    (
        "rust/semver-1.0.28/src/parse.rs",
        "Error",
        SymbolKind::Struct,
        21,
        23,
        None,
    ),
    (
        "rust/semver-1.0.28/src/parse.rs",
        "from_str",
        SymbolKind::Method,
        28,
        81,
        Some("Version"),
    ),
    (
        "rust/semver-1.0.28/src/parse.rs",
        "from_str",
        SymbolKind::Method,
        87,
        105,
        Some("VersionReq"),
    ),
    (
        "rust/semver-1.0.28/src/parse.rs",
        "numeric_identifier",
        SymbolKind::Function,
        156,
        184,
        None,
    ),
    (
        "rust/semver-1.0.28/src/eval.rs",
        "matches_req",
        SymbolKind::Function,
        3,
        24,
        None,
    ),
    (
        "rust/semver-1.0.28/src/eval.rs",
        "matches_caret",
        SymbolKind::Function,
        134,
        168,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/core/store.ts",
        "TOAST_LIMIT",
        SymbolKind::Constant,
        5,
        5,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/core/store.ts",
        "ActionType",
        SymbolKind::Enum,
        12,
        20,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/core/store.ts",
        "reducer",
        SymbolKind::Function,
        62,
        134,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/core/types.ts",
        "IconTheme",
        SymbolKind::Interface,
        14,
        17,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/core/types.ts",
        "ValueFunction",
        SymbolKind::Type,
        19,
        19,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/components/toaster.tsx",
        "ToastWrapper",
        SymbolKind::Function,
        15,
        45,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/components/toaster.tsx",
        "DEFAULT_OFFSET",
        SymbolKind::Constant,
        83,
        83,
        None,
    ),
    (
        "typescript/react-hot-toast-2.6.1/src/components/toaster.tsx",
        "Toaster",
        SymbolKind::Function,
        85,
        143,
        None,
    ),
    (
        "typescript/mitt-3.0.1/index.d.ts",
        "Emitter",
        SymbolKind::Interface,
        7,
        15,
        None,
    ),
    (
        "typescript/mitt-3.0.1/index.d.ts",
        "mitt",
        SymbolKind::Function,
        21,
        21,
        None,
    ),
    (
        "javascript/ms-2.1.3/index.js",
        "parse",
        SymbolKind::Function,
        48,
        103,
        None,
    ),
    (
        "javascript/debug-4.4.3/src/node.js",
        "useColors",
        SymbolKind::Function,
        155,
        159,
        None,
    ),
    (
        "javascript/debug-4.4.3/src/node.js",
        "o",
        SymbolKind::Function,
        248,
        254,
        None,
    ),
    (
        "javascript/debug-4.4.3/src/common.js",
        "setup",
        SymbolKind::Function,
        7,
        290,
        None,
    ),
    (
        "javascript/debug-4.4.3/src/common.js",
        "createDebug",
        SymbolKind::Function,
        60,
        147,
        Some("setup"),
    ),
];

#[test]
fn known_definitions_in_rust_typescript_and_javascript() {
    let tree = parse_tree();
    for &(rel, name, kind, line, end_line, container) in KNOWN {
        let file = &find(&tree, rel).file;
        let found = file.symbols.iter().find(|s| s.name == name && s.line == line);
        let found = found.unwrap_or_else(|| panic!("{rel}: no {name} at {line} in {:#?}", file.symbols));
        assert_eq!(
            (found.kind, found.end_line, found.container.as_deref()),
            (kind, end_line, container),
            "{rel}: {name}"
        );
    }
    // A few imports and calls where the grammar gives them.
    let toaster = &find(
        &tree,
        "typescript/react-hot-toast-2.6.1/src/components/toaster.tsx",
    )
    .file;
    assert!(
        toaster
            .imports
            .iter()
            .any(|i| i.module == "../core/use-toaster" && i.line == 9)
    );
    assert!(
        toaster
            .calls
            .iter()
            .any(|c| c.callee == "useToaster" && c.caller.as_deref() == Some("Toaster"))
    );
    let index = find(&tree, "javascript/debug-4.4.3/src/index.js");
    let modules: Vec<&str> = index.file.imports.iter().map(|i| i.module.as_str()).collect();
    assert_eq!(modules, ["./browser.js", "./node.js"], "{}", index.path.display());
    let lib = &find(&tree, "rust/semver-1.0.28/src/lib.rs").file;
    assert!(lib.imports.iter().any(|i| i.module == "core::str::FromStr"));
    assert!(
        lib.calls
            .iter()
            .any(|c| c.callee == "matches_req" && c.caller.as_deref() == Some("matches"))
    );
}
