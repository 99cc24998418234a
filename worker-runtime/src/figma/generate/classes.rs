//! Class names and the style sheet.
//!
//! Instances are reused parts: every layer of an instance is keyed by (component id, the layer's
//! id inside the component), read from Figma's instance id scheme `I<instance>;<layer>`, and the
//! instance itself by (component id, root). Each key becomes one shared class holding the
//! declarations that every occurrence agrees on; what an occurrence does differently (its
//! position, an overridden fill) goes to the element's own class. A declaration is shared only
//! when every occurrence has it with the same value, so shared and own rules never set the same
//! property differently and their order does not matter.
//!
//! Names come from layer and component names (`kebab`), made unique in document order, so the
//! same input always yields the same sheet. Elements whose own declarations are identical (a
//! list of equal cards) share the class of the first of them.

use std::collections::HashMap;

use super::build::Element;
use super::css::{Decl, Namer, kebab};

/// A part of a component: (component id, layer id inside it; empty for the instance itself).
pub(crate) type PartKey = (String, String);

/// A shared class on an element, with the part it stands for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shared {
    pub key: PartKey,
    pub class: String,
}

/// One rule of the style sheet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rule {
    pub class: String,
    pub decls: Vec<Decl>,
}

/// The prefix Figma gives the layers of an instance: `I1:4;` for instance `1:4`, and for a
/// nested instance (whose id already starts with `I`) its id plus `;`.
pub(crate) fn instance_prefix(instance_id: &str) -> String {
    if instance_id.starts_with('I') {
        format!("{instance_id};")
    } else {
        format!("I{instance_id};")
    }
}

/// The part keys of `e` given its innermost enclosing instance (id, component id).
fn keys_of(e: &Element, enclosing: Option<(&str, &str)>) -> Vec<PartKey> {
    let mut keys = Vec::new();
    if let Some((inst, cid)) = enclosing
        && let Some(rest) = e.node_id.strip_prefix(&instance_prefix(inst))
    {
        keys.push((cid.to_string(), rest.to_string()));
    }
    if let Some(cid) = &e.component {
        keys.push((cid.clone(), String::new()));
    }
    keys
}

/// Calls `f` on every element in document order with its part keys.
fn walk(e: &Element, enclosing: Option<(&str, &str)>, f: &mut dyn FnMut(&Element, Vec<PartKey>)) {
    f(e, keys_of(e, enclosing));
    let inner = match &e.component {
        Some(cid) => Some((e.node_id.as_str(), cid.as_str())),
        None => enclosing,
    };
    for c in &e.children {
        walk(c, inner, f);
    }
}

/// Names every class of the tree (filling `shared`, `own` and run classes) and returns the
/// sheet. `component_names` maps component ids to display names ("Button Primary").
pub(crate) fn assign(root: &mut Element, component_names: &HashMap<String, String>) -> Vec<Rule> {
    // Pass 1: what every occurrence of each part agrees on.
    let mut agreed: HashMap<PartKey, Vec<Decl>> = HashMap::new();
    walk(root, None, &mut |e, keys| {
        for key in keys {
            agreed
                .entry(key)
                .and_modify(|d| d.retain(|decl| e.decls.contains(decl)))
                .or_insert_with(|| e.decls.clone());
        }
    });
    // Pass 2: names and rules in document order.
    let mut namer = Namer::default();
    let mut names: HashMap<PartKey, String> = HashMap::new();
    let mut run_names: HashMap<Vec<Decl>, String> = HashMap::new();
    let mut own_names: HashMap<Vec<Decl>, String> = HashMap::new();
    let mut rules = Vec::new();
    let mut plan: Vec<(Vec<Shared>, Option<String>)> = Vec::new();
    walk(root, None, &mut |e, keys| {
        let mut shared = Vec::with_capacity(keys.len());
        for key in keys {
            let class = match names.get(&key) {
                Some(class) => class.clone(),
                None => {
                    let base = if key.1.is_empty() {
                        let display = component_names
                            .get(&key.0)
                            .map_or(e.name.as_str(), String::as_str);
                        kebab(display)
                    } else {
                        let root_class = names
                            .get(&(key.0.clone(), String::new()))
                            .cloned()
                            .unwrap_or_default();
                        format!("{root_class}__{}", kebab(&e.name))
                    };
                    let class = namer.unique(&base, true);
                    names.insert(key.clone(), class.clone());
                    let decls = agreed.get(&key).cloned().unwrap_or_default();
                    if !decls.is_empty() {
                        rules.push(Rule {
                            class: class.clone(),
                            decls,
                        });
                    }
                    class
                }
            };
            shared.push(Shared { key, class });
        }
        let own_decls: Vec<Decl> = e
            .decls
            .iter()
            .filter(|d| {
                !shared
                    .iter()
                    .any(|s| agreed.get(&s.key).is_some_and(|a| a.contains(d)))
            })
            .cloned()
            .collect();
        let own = if own_decls.is_empty() {
            None
        } else if let Some(class) = own_names.get(&own_decls) {
            Some(class.clone())
        } else {
            let class = namer.unique(&kebab(&e.name), true);
            rules.push(Rule {
                class: class.clone(),
                decls: own_decls.clone(),
            });
            own_names.insert(own_decls, class.clone());
            Some(class)
        };
        if let Some(text) = &e.text {
            for run in text.runs.iter().filter(|r| !r.decls.is_empty()) {
                if !run_names.contains_key(&run.decls) {
                    let class = namer.unique(&format!("{}-run", kebab(&e.name)), true);
                    rules.push(Rule {
                        class: class.clone(),
                        decls: run.decls.clone(),
                    });
                    run_names.insert(run.decls.clone(), class);
                }
            }
        }
        plan.push((shared, own));
    });
    let mut plan = plan.into_iter();
    apply(root, &mut plan, &run_names);
    rules
}

/// Writes the planned classes into the tree, in the same document order as `walk`.
fn apply(
    e: &mut Element,
    plan: &mut impl Iterator<Item = (Vec<Shared>, Option<String>)>,
    run_names: &HashMap<Vec<Decl>, String>,
) {
    if let Some((shared, own)) = plan.next() {
        e.shared = shared;
        e.own = own;
    }
    if let Some(text) = &mut e.text {
        for run in &mut text.runs {
            run.class = run_names.get(&run.decls).cloned();
        }
    }
    for c in &mut e.children {
        apply(c, plan, run_names);
    }
}

/// Every class of an element: shared ones first, then its own.
pub(crate) fn all_classes(e: &Element) -> Vec<&str> {
    e.shared
        .iter()
        .map(|s| s.class.as_str())
        .chain(e.own.as_deref())
        .collect()
}
