//! The *resolve* step: containers, methods and callers, from how definitions nest.

use super::{
    Call, SymbolKind,
    extract::{Def, RawCall},
};

/// Sorts definitions, drops duplicates and fills in containers; functions directly inside a
/// class-like definition become methods.
pub(super) fn resolve(mut defs: Vec<Def<'_>>) -> Vec<Def<'_>> {
    defs.sort_by(|a, b| {
        a.start()
            .cmp(&b.start())
            .then(b.end().cmp(&a.end()))
            .then(a.name.cmp(&b.name))
    });
    defs.dedup_by(|b, a| a.node == b.node && a.name == b.name);
    let mut stack: Vec<usize> = Vec::new();
    for i in 0..defs.len() {
        while let Some(&top) = stack.last() {
            if defs[top].start() <= defs[i].start() && defs[i].end() <= defs[top].end() {
                break;
            }
            stack.pop();
        }
        let container = stack.last().copied();
        defs[i].container = container;
        if let Some(c) = container {
            let holds_methods = defs[c].kind.is_none_or(SymbolKind::holds_methods);
            if holds_methods && defs[i].kind == Some(SymbolKind::Function) {
                defs[i].kind = Some(SymbolKind::Method);
            }
        }
        defs[i].container_name = match &defs[i].receiver {
            Some(receiver) => Some(receiver.clone()),
            None => container.map(|c| defs[c].name.clone()),
        };
        stack.push(i);
    }
    defs
}

/// Gives each call its innermost enclosing function or method, in source order.
pub(super) fn attribute_calls(mut raw: Vec<RawCall>, defs: &[Def]) -> Vec<Call> {
    raw.sort_by_key(|c| c.at);
    let functions: Vec<&Def> = defs.iter().filter(|d| d.is_function()).collect();
    let mut next = 0;
    let mut stack: Vec<&Def> = Vec::new();
    raw.into_iter()
        .map(|call| {
            while next < functions.len() && functions[next].start() <= call.at {
                let f = functions[next];
                while stack.last().is_some_and(|top| f.end() > top.end()) {
                    stack.pop();
                }
                stack.push(f);
                next += 1;
            }
            while stack.last().is_some_and(|top| call.at >= top.end()) {
                stack.pop();
            }
            Call {
                callee: call.callee,
                line: call.line,
                caller: stack.last().map(|f| f.name.clone()),
            }
        })
        .collect()
}
