//! The *match* step: query matches turned into raw definitions, imports and calls, and the
//! node helpers it needs (names of types, quoted strings, rows).

use tree_sitter::Node;

use super::{
    Import, SymbolKind,
    queries::{DefTag, Role},
};

/// The nodes captured by one query match, by role.
#[derive(Default)]
pub(super) struct Captured<'t> {
    def: Option<(Node<'t>, DefTag)>,
    name: Option<Node<'t>>,
    receiver: Option<Node<'t>>,
    type_body: Option<Node<'t>>,
    value: Option<Node<'t>>,
    import: Option<Node<'t>>,
    call: Option<Node<'t>>,
    callee: Option<Node<'t>>,
}

impl<'t> Captured<'t> {
    /// Records `node` as the capture for `role`.
    pub(super) fn set(&mut self, role: Role, node: Node<'t>) {
        match role {
            Role::Def(tag) => self.def = Some((node, tag)),
            Role::Name => self.name = Some(node),
            Role::Receiver => self.receiver = Some(node),
            Role::TypeBody => self.type_body = Some(node),
            Role::Value => self.value = Some(node),
            Role::Import => self.import = Some(node),
            Role::Call => self.call = Some(node),
            Role::Callee => self.callee = Some(node),
            Role::Other => {}
        }
    }
}

/// A definition, or a Rust `impl` scope (`kind: None`).
pub(super) struct Def<'t> {
    /// The definition's node.
    pub(super) node: Node<'t>,
    /// The defined name (for a scope: the plain type name).
    pub(super) name: String,
    /// What it defines; `None` for a Rust `impl` scope.
    pub(super) kind: Option<SymbolKind>,
    /// A Go method's receiver type.
    pub(super) receiver: Option<String>,
    /// 0-based first row.
    pub(super) start_row: usize,
    /// 0-based last row.
    pub(super) end_row: usize,
    /// Index of the enclosing definition, set by `resolve`.
    pub(super) container: Option<usize>,
    /// Name of the container (a Go method's receiver), set by `resolve`.
    pub(super) container_name: Option<String>,
}

impl Def<'_> {
    /// Start byte.
    pub(super) fn start(&self) -> usize {
        self.node.start_byte()
    }

    /// End byte (exclusive).
    pub(super) fn end(&self) -> usize {
        self.node.end_byte()
    }

    /// A function or a method.
    pub(super) fn is_function(&self) -> bool {
        matches!(self.kind, Some(SymbolKind::Function | SymbolKind::Method))
    }

    /// Classes, impls, traits, interfaces and modules: cut into methods when big.
    pub(super) fn is_class_like(&self) -> bool {
        match self.kind {
            None => true,
            Some(kind) => kind.holds_methods() || kind == SymbolKind::Module,
        }
    }
}

/// A call before its caller is known.
pub(super) struct RawCall {
    /// The callee's last name.
    pub(super) callee: String,
    /// 1-based line of the callee.
    pub(super) line: u32,
    /// Start byte of the callee.
    pub(super) at: usize,
}

/// Everything the matches of one file found, in match order.
#[derive(Default)]
pub(super) struct Found<'t> {
    /// Definitions and scopes.
    pub(super) defs: Vec<Def<'t>>,
    /// Imports.
    pub(super) imports: Vec<Import>,
    /// Calls.
    pub(super) calls: Vec<RawCall>,
}

impl<'t> Found<'t> {
    /// Adds what one match captured: a definition, an import or a call.
    pub(super) fn add(&mut self, c: &Captured<'t>, src: &str) {
        if let (Some((node, tag)), Some(name_node)) = (c.def, c.name) {
            let kind = match tag {
                DefTag::Kind(kind) => Some(kind),
                DefTag::Scope => None,
                DefTag::TypeSpec => Some(match c.type_body.map(|b| b.kind()) {
                    Some("struct_type") => SymbolKind::Struct,
                    Some("interface_type") => SymbolKind::Interface,
                    _ => SymbolKind::Type,
                }),
                DefTag::Var => match c.value.and_then(|v| classify_var(node, v, text(name_node, src))) {
                    Some(kind) => Some(kind),
                    None => return,
                },
            };
            let name = match tag {
                DefTag::Scope => type_name(name_node, src),
                _ => unquote(name_node, src),
            };
            self.defs.push(Def {
                node,
                name,
                kind,
                receiver: c.receiver.map(|r| type_name(r, src)),
                start_row: node.start_position().row,
                end_row: last_row(node),
                container: None,
                container_name: None,
            });
        } else if let Some(node) = c.import {
            let module = match node.kind() {
                "string" | "interpreted_string_literal" | "raw_string_literal" => unquote(node, src),
                _ => text(node, src).split_whitespace().collect::<Vec<_>>().join(" "),
            };
            if !module.is_empty() {
                self.imports.push(Import {
                    module,
                    line: row(node),
                });
            }
        } else if let (Some(_), Some(callee)) = (c.call, c.callee) {
            // Ordered and attributed by the callee's position, so chained calls stay in order.
            self.calls.push(RawCall {
                callee: text(callee, src).to_string(),
                line: row(callee),
                at: callee.start_byte(),
            });
        }
    }
}

/// The kind of `const f = () => ...` and friends, or `None` for a variable that is no symbol.
fn classify_var(declarator: Node, value: Node, name: &str) -> Option<SymbolKind> {
    match value.kind() {
        "arrow_function" | "function_expression" | "function" | "generator_function" => {
            return Some(SymbolKind::Function);
        }
        "class" => return Some(SymbolKind::Class),
        _ => {}
    }
    let declaration = declarator.parent()?;
    let is_const = declaration.kind() == "lexical_declaration"
        && declaration
            .child_by_field_name("kind")
            .is_some_and(|k| k.kind() == "const");
    let parent = declaration.parent()?;
    let exported = parent.kind() == "export_statement";
    let top = if exported { parent.parent()? } else { parent };
    let top_level = top.kind() == "program";
    (is_const && top_level && (exported || is_upper_case(name))).then_some(SymbolKind::Constant)
}

/// `UPPER_CASE`: at least one capital, and only capitals, digits and `_`.
fn is_upper_case(name: &str) -> bool {
    name.chars().any(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The plain name of a type: `Foo` for `Foo<T>`, `&'a Foo`, `*Foo`, `a::Foo`, `pkg.Foo`.
fn type_name(node: Node, src: &str) -> String {
    let mut n = node;
    loop {
        let next = match n.kind() {
            "generic_type" | "reference_type" | "pointer_type" | "parenthesized_type" => n
                .child_by_field_name("type")
                .or_else(|| n.named_child((n.named_child_count() as u32).saturating_sub(1))),
            "scoped_type_identifier" | "qualified_type" => n.child_by_field_name("name"),
            _ => None,
        };
        match next {
            Some(inner) => n = inner,
            None => return text(n, src).to_string(),
        }
    }
}

/// The node's source text (empty if its range is not in `src`).
fn text<'s>(node: Node, src: &'s str) -> &'s str {
    src.get(node.byte_range()).unwrap_or("")
}

/// The node's text without surrounding quotes or backticks.
fn unquote(node: Node, src: &str) -> String {
    let t = text(node, src).trim();
    let quoted = t.len() >= 2
        && matches!(t.as_bytes()[0], b'"' | b'\'' | b'`')
        && t.as_bytes()[t.len() - 1] == t.as_bytes()[0];
    if quoted {
        t[1..t.len() - 1].to_string()
    } else {
        t.to_string()
    }
}

/// 1-based line of a node's start.
fn row(node: Node) -> u32 {
    node.start_position().row as u32 + 1
}

/// 0-based last row of a node, not counting a newline it may end with.
pub(super) fn last_row(node: Node) -> usize {
    let (start, end) = (node.start_position(), node.end_position());
    if end.column == 0 && end.row > start.row {
        end.row - 1
    } else {
        end.row
    }
}
