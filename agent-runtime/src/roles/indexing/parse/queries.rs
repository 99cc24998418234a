//! The *match* step's queries: one tree-sitter query per language, compiled once and cached.
//!
//! Capture names: `@def.<kind>` marks a definition node, where `<kind>` is a `SymbolKind` name
//! or `scope` (a Rust impl: a container, not a symbol), `var` (a JS/TS variable declarator, kind
//! decided by its value) or `typespec` (a Go type spec, kind decided by `@typebody`). `@name` is
//! the defined name, `@receiver` a Go receiver type, `@import` an import's module node, `@call`
//! and `@callee` a call and its last name. Other captures (`@_...`) only feed predicates.

use std::sync::OnceLock;

use tree_sitter::Query;

use super::{Language, ParseError, SymbolKind};

const RUST_QUERY: &str = r#"
(function_item name: (identifier) @name) @def.function
(function_signature_item name: (identifier) @name) @def.function
(struct_item name: (type_identifier) @name) @def.struct
(union_item name: (type_identifier) @name) @def.struct
(enum_item name: (type_identifier) @name) @def.enum
(trait_item name: (type_identifier) @name) @def.trait
(type_item name: (type_identifier) @name) @def.type
(associated_type name: (type_identifier) @name) @def.type
(const_item name: (identifier) @name) @def.constant
(static_item name: (identifier) @name) @def.constant
(mod_item name: (identifier) @name) @def.module
(impl_item type: (_) @name) @def.scope

(use_declaration argument: (_) @import)
(extern_crate_declaration name: (identifier) @import)

(call_expression
  function: [
    (identifier) @callee
    (scoped_identifier name: (identifier) @callee)
    (field_expression field: (field_identifier) @callee)
    (generic_function function: [
      (identifier) @callee
      (scoped_identifier name: (identifier) @callee)
      (field_expression field: (field_identifier) @callee)])
  ]) @call
"#;

const PYTHON_QUERY: &str = r#"
(function_definition name: (identifier) @name) @def.function
(class_definition name: (identifier) @name) @def.class
((module (expression_statement (assignment left: (identifier) @name)) @def.constant)
  (#match? @name "^_*[A-Z][A-Z0-9_]*$"))

(import_statement name: [(dotted_name) @import (aliased_import name: (dotted_name) @import)])
(import_from_statement module_name: (_) @import)

(call function: [(identifier) @callee (attribute attribute: (identifier) @callee)]) @call
"#;

/// Shared by JavaScript, TypeScript and TSX.
const ECMASCRIPT_QUERY: &str = r#"
(function_declaration name: (identifier) @name) @def.function
(generator_function_declaration name: (identifier) @name) @def.function
(class_declaration name: (_) @name) @def.class
(class_body (method_definition name: (_) @name) @def.method)
(variable_declarator name: (identifier) @name value: (_) @value) @def.var
(assignment_expression
  left: (member_expression property: (property_identifier) @name)
  right: [(function_expression) (arrow_function)]) @def.function

(import_statement source: (string) @import)
(export_statement source: (string) @import)
((call_expression function: (identifier) @_require arguments: (arguments . (string) @import))
  (#eq? @_require "require"))
(call_expression function: (import) arguments: (arguments . (string) @import))

(call_expression
  function: [
    (identifier) @callee
    (member_expression property: [(property_identifier) (private_property_identifier)] @callee)
  ]) @call
(new_expression
  constructor: [(identifier) @callee (member_expression property: (property_identifier) @callee)]) @call
"#;

const JAVASCRIPT_QUERY: &str = r#"
(class_body
  (field_definition property: (_) @name value: [(arrow_function) (function_expression)]) @def.method)
"#;

const TYPESCRIPT_QUERY: &str = r#"
(abstract_class_declaration name: (type_identifier) @name) @def.class
(class_body
  (public_field_definition name: (_) @name value: [(arrow_function) (function_expression)]) @def.method)
(class_body (method_signature name: (_) @name) @def.method)
(class_body (abstract_method_signature name: (_) @name) @def.method)
(function_signature name: (identifier) @name) @def.function
(interface_declaration name: (type_identifier) @name) @def.interface
(type_alias_declaration name: (type_identifier) @name) @def.type
(enum_declaration name: (identifier) @name) @def.enum
(internal_module name: [(identifier) (nested_identifier)] @name) @def.module
(module name: [(identifier) (nested_identifier)] @name) @def.module

(import_require_clause source: (string) @import)
"#;

const GO_QUERY: &str = r#"
(function_declaration name: (identifier) @name) @def.function
(method_declaration
  receiver: (parameter_list (parameter_declaration type: (_) @receiver))
  name: (field_identifier) @name) @def.method
(type_spec name: (type_identifier) @name type: (_) @typebody) @def.typespec
(type_alias name: (type_identifier) @name) @def.type
(const_spec name: (identifier) @name) @def.constant

(import_spec path: (_) @import)

(call_expression
  function: [(identifier) @callee (selector_expression field: (field_identifier) @callee)]) @call
"#;

/// The query text of `language`: TypeScript, TSX and JavaScript share [`ECMASCRIPT_QUERY`].
fn query_source(language: Language) -> String {
    match language {
        Language::Rust => RUST_QUERY.to_string(),
        Language::Python => PYTHON_QUERY.to_string(),
        Language::TypeScript | Language::Tsx => format!("{ECMASCRIPT_QUERY}\n{TYPESCRIPT_QUERY}"),
        Language::JavaScript => format!("{ECMASCRIPT_QUERY}\n{JAVASCRIPT_QUERY}"),
        Language::Go => GO_QUERY.to_string(),
    }
}

/// What a definition capture says about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefTag {
    Kind(SymbolKind),
    Scope,
    Var,
    TypeSpec,
}

/// What a capture is, decided once per query from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Def(DefTag),
    Name,
    Receiver,
    TypeBody,
    Value,
    Import,
    Call,
    Callee,
    Other,
}

impl Role {
    fn of(capture: &str) -> Result<Role, String> {
        Ok(match capture {
            "name" => Role::Name,
            "receiver" => Role::Receiver,
            "typebody" => Role::TypeBody,
            "value" => Role::Value,
            "import" => Role::Import,
            "call" => Role::Call,
            "callee" => Role::Callee,
            "def.scope" => Role::Def(DefTag::Scope),
            "def.var" => Role::Def(DefTag::Var),
            "def.typespec" => Role::Def(DefTag::TypeSpec),
            other => match other.strip_prefix("def.").map(SymbolKind::parse) {
                Some(Some(kind)) => Role::Def(DefTag::Kind(kind)),
                Some(None) => return Err(format!("unknown definition capture @{other}")),
                None => Role::Other,
            },
        })
    }
}

/// A language's query and the [`Role`] of each of its captures, by capture index.
pub(super) struct CompiledQuery {
    /// The compiled query.
    pub(super) query: Query,
    /// The role of each capture, indexed like the query's capture names.
    pub(super) roles: Vec<Role>,
}

/// The compiled query of `language`, compiled on first use and cached for the process.
pub(super) fn compiled_query(language: Language) -> Result<&'static CompiledQuery, ParseError> {
    static QUERIES: [OnceLock<Result<CompiledQuery, String>>; 6] = [const { OnceLock::new() }; 6];
    let cached = QUERIES[language.index()].get_or_init(|| {
        let query = Query::new(&language.grammar(), &query_source(language)).map_err(|e| e.to_string())?;
        let roles = query
            .capture_names()
            .iter()
            .map(|n| Role::of(n))
            .collect::<Result<_, _>>()?;
        Ok(CompiledQuery { query, roles })
    });
    cached.as_ref().map_err(|message| ParseError::Query {
        language: language.name(),
        message: message.clone(),
    })
}
