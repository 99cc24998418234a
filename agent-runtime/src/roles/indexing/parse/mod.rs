//! Source parsing for the indexing role: symbols, imports, calls and chunks from tree-sitter.
//!
//! [`parse`] is a pure function of `(language, source)` and runs in four steps:
//! *parse → match → resolve → chunk*.
//!
//! - **parse**: one tree-sitter parse. Syntax errors never fail the call: whatever tree-sitter
//!   recovers around `ERROR` nodes is indexed.
//! - **match**: one query per language (compiled once and cached) captures definitions, imports
//!   and calls. The queries are the `*_QUERY` strings in `queries.rs`; capture names say what a
//!   node is (`@def.<kind>`, `@name`, `@import`, `@call` + `@callee`, ...). `extract.rs` turns
//!   the matches into raw definitions, imports and calls.
//! - **resolve**: containers come from nesting (a Rust `impl` or a class makes its functions
//!   methods; a Go method's container is its receiver type); a call's caller is the innermost
//!   enclosing function or method (`resolve.rs`).
//! - **chunk**: lines are cut along definition boundaries (see [`Chunk`]; `chunk.rs`).

mod chunk;
mod extract;
mod queries;
mod resolve;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use tree_sitter::{Parser, QueryCursor, StreamingIterator};

use chunk::{Chunker, Lines};
use extract::{Captured, Found};
use queries::compiled_query;
use resolve::{attribute_calls, resolve};

/// The most lines one [`Chunk`] holds; longer spans are split into consecutive pieces.
pub const MAX_CHUNK_LINES: u32 = 60;
/// The most bytes one [`Chunk`] holds; longer spans (or lines) are split into pieces.
pub const MAX_CHUNK_BYTES: usize = 4096;

/// A source language that the indexer parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust (`.rs`).
    Rust,
    /// Python (`.py`, `.pyi`).
    Python,
    /// TypeScript (`.ts`, `.mts`, `.cts`, including `.d.ts`).
    TypeScript,
    /// TypeScript with JSX (`.tsx`).
    Tsx,
    /// JavaScript, JSX included (`.js`, `.mjs`, `.cjs`, `.jsx`).
    JavaScript,
    /// Go (`.go`).
    Go,
}

impl Language {
    /// Every supported language, in a fixed order.
    pub const ALL: [Language; 6] = [
        Language::Rust,
        Language::Python,
        Language::TypeScript,
        Language::Tsx,
        Language::JavaScript,
        Language::Go,
    ];

    /// The language of a file by its extension (case-insensitive), or `None` if it is not indexed.
    pub fn of_path(path: &str) -> Option<Language> {
        let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let (_, ext) = file.rsplit_once('.')?;
        match ext.to_ascii_lowercase().as_str() {
            "rs" => Some(Language::Rust),
            "py" | "pyi" => Some(Language::Python),
            "ts" | "mts" | "cts" => Some(Language::TypeScript),
            "tsx" => Some(Language::Tsx),
            "js" | "mjs" | "cjs" | "jsx" => Some(Language::JavaScript),
            "go" => Some(Language::Go),
            _ => None,
        }
    }

    /// The key used in results (`languages: {rust: n, ...}`), equal to the serde name.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::JavaScript => "javascript",
            Language::Go => "go",
        }
    }

    /// The position in [`Language::ALL`], for per-language caches.
    fn index(self) -> usize {
        self as usize
    }

    /// The tree-sitter grammar.
    fn grammar(self) -> tree_sitter::Language {
        match self {
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a [`Symbol`] defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SymbolKind {
    /// A free function, or a function nested in another function.
    Function,
    /// A function inside a class, `impl`, trait or interface, or a Go method.
    Method,
    /// A class (Python, JavaScript, TypeScript).
    Class,
    /// A Rust struct or union, or a Go struct type.
    Struct,
    /// An enum (Rust, TypeScript).
    Enum,
    /// A Rust trait.
    Trait,
    /// A TypeScript or Go interface.
    Interface,
    /// A type alias or other named type.
    Type,
    /// A constant: Rust `const`/`static`, Go `const`, Python module-level `UPPER_CASE = ...`,
    /// JS/TS top-level `const` that is exported or `UPPER_CASE` and not a function.
    Constant,
    /// A Rust `mod` or a TypeScript namespace/module.
    Module,
}

impl SymbolKind {
    /// The lowercase name, equal to the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            SymbolKind::Function => "function",
            SymbolKind::Method => "method",
            SymbolKind::Class => "class",
            SymbolKind::Struct => "struct",
            SymbolKind::Enum => "enum",
            SymbolKind::Trait => "trait",
            SymbolKind::Interface => "interface",
            SymbolKind::Type => "type",
            SymbolKind::Constant => "constant",
            SymbolKind::Module => "module",
        }
    }

    /// The kind named by [`SymbolKind::as_str`], or `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "function" => SymbolKind::Function,
            "method" => SymbolKind::Method,
            "class" => SymbolKind::Class,
            "struct" => SymbolKind::Struct,
            "enum" => SymbolKind::Enum,
            "trait" => SymbolKind::Trait,
            "interface" => SymbolKind::Interface,
            "type" => SymbolKind::Type,
            "constant" => SymbolKind::Constant,
            "module" => SymbolKind::Module,
            _ => return None,
        })
    }

    /// Kinds whose functions are methods.
    fn holds_methods(self) -> bool {
        matches!(
            self,
            SymbolKind::Class
                | SymbolKind::Struct
                | SymbolKind::Trait
                | SymbolKind::Interface
                | SymbolKind::Enum
        )
    }
}

impl std::fmt::Display for SymbolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Symbol {
    /// The defined name as written (`foo`, `Server`, `#private`).
    pub name: String,
    /// What it defines.
    pub kind: SymbolKind,
    /// 1-based line where the definition starts (the `def`/`fn`/`func` line, not its comments).
    pub line: u32,
    /// 1-based line where the definition ends.
    pub end_line: u32,
    /// The enclosing class, `impl` type, trait, module, or function; a Go method's receiver type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A module the file imports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Import {
    /// Rust: the `use` argument (`std::collections::HashMap`, `crate::{a, b}`); Python: the
    /// dotted module (`a.b`, `.rel`); JS/TS/Go: the module string without quotes.
    pub module: String,
    /// 1-based line of the import.
    pub line: u32,
}

/// A call site, where the grammar gives one (calls inside Rust macros are not parsed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// The last identifier of the called name: `foo.bar()` and `a::b::bar()` give `bar`;
    /// `new Foo()` gives `Foo`.
    pub callee: String,
    /// 1-based line of the callee name.
    pub line: u32,
    /// The innermost enclosing function or method symbol; `None` at top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
}

/// A span of whole lines to index for search.
///
/// Each top-level definition is its own chunk, with the comments, attributes and decorators
/// right above it; a class, `impl`, trait or module longer than the limits is cut into its
/// header and one chunk per method. Code between definitions (imports, statements, small
/// constants) is grouped. Anything over [`MAX_CHUNK_LINES`] or [`MAX_CHUNK_BYTES`] is split into
/// consecutive pieces that keep the symbol. Every non-blank line is in exactly one chunk, except
/// that a single line longer than [`MAX_CHUNK_BYTES`] is split across consecutive pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// 1-based first line.
    pub start_line: u32,
    /// 1-based last line (inclusive).
    pub end_line: u32,
    /// The definition this chunk belongs to (for a Rust `impl` block: the type's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// The kind of `symbol` (`None` for a Rust `impl` block or when there is no symbol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SymbolKind>,
    /// The source text of the lines, without the final newline.
    pub text: String,
}

/// Everything extracted from one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParsedFile {
    /// The language the file was parsed as.
    pub language: Language,
    /// Definitions in source order.
    pub symbols: Vec<Symbol>,
    /// Imports in source order.
    pub imports: Vec<Import>,
    /// Calls in source order.
    pub calls: Vec<Call>,
    /// Chunks in source order, covering every non-blank line.
    pub chunks: Vec<Chunk>,
}

/// Why a file could not be parsed at all. Syntax errors are not among them.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The grammar could not be loaded into the parser (an ABI mismatch).
    #[error("the {language} grammar could not be loaded: {message}")]
    Grammar {
        /// The language's name.
        language: &'static str,
        /// tree-sitter's message.
        message: String,
    },
    /// A built-in query does not compile against the grammar (a bug in this module).
    #[error("the built-in {language} query does not compile: {message}")]
    Query {
        /// The language's name.
        language: &'static str,
        /// tree-sitter's message.
        message: String,
    },
    /// tree-sitter returned no tree.
    #[error("tree-sitter returned no syntax tree for this {language} source")]
    NoTree {
        /// The language's name.
        language: &'static str,
    },
}

/// Parses `source` as `language` and extracts symbols, imports, calls and chunks.
pub fn parse(language: Language, source: &str) -> Result<ParsedFile, ParseError> {
    let lang = language.name();
    let mut parser = Parser::new();
    parser
        .set_language(&language.grammar())
        .map_err(|e| ParseError::Grammar {
            language: lang,
            message: e.to_string(),
        })?;
    let tree = parser
        .parse(source, None)
        .ok_or(ParseError::NoTree { language: lang })?;
    let compiled = compiled_query(language)?;

    let mut found = Found::default();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(&compiled.query, tree.root_node(), source.as_bytes());
    while let Some(m) = matches.next() {
        let mut captured = Captured::default();
        for capture in m.captures {
            captured.set(compiled.roles[capture.index as usize], capture.node);
        }
        found.add(&captured, source);
    }
    drop(matches);

    let defs = resolve(found.defs);
    let calls = attribute_calls(found.calls, &defs);
    let lines = Lines::new(source);
    let chunks = Chunker::new(&lines, &defs).chunks(tree.root_node());
    let symbols = defs
        .iter()
        .filter_map(|d| {
            Some(Symbol {
                name: d.name.clone(),
                kind: d.kind?,
                line: d.start_row as u32 + 1,
                end_line: d.end_row as u32 + 1,
                container: d.container_name.clone(),
            })
        })
        .collect();
    let mut imports = found.imports;
    imports.sort_by_key(|i| i.line);
    Ok(ParsedFile {
        language,
        symbols,
        imports,
        calls,
        chunks,
    })
}
