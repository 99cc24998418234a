//! A clean, compact view of a `GET /v1/files/:key` response for agents and people.
//!
//! The raw document repeats every paint, constraint and export setting on every node; the clean
//! tree keeps what a reader needs to find their way: ids, names, types, geometry relative to the
//! parent (rounded to 0.01 px), auto-layout summaries, text and the component an instance uses.
//! Hidden nodes are dropped but counted (`hiddenChildren` on the parent, `hiddenNodes` in total);
//! `depth` cuts nesting and marks the cut nodes with `truncated: true`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::figma::error::{FigmaError, Result};
use crate::figma::read::{
    Path, as_object, get, is_visible, opt_array, opt_f64, opt_object, opt_str, rect, req, req_str, round2,
};

type Object = Map<String, Value>;

/// Cleans a whole file: `{name, lastModified, version, pages, components, componentSets,
/// styles, hiddenNodes}`. Each page is `{id, name, children}`; each node is `{id, name, type,
/// x, y, width, height}` with, where they apply, `layout`, `sizing`, `positioning`, `text`,
/// `componentId`, `hiddenChildren`, `truncated` and `children`.
///
/// `depth` limits nesting: `Some(1)` keeps pages only, `Some(2)` pages and their top-level
/// frames, and so on; `None` keeps everything. `Some(0)` is refused.
pub fn clean_file(file: &Value, depth: Option<u32>) -> Result<Value> {
    if depth == Some(0) {
        return Err(FigmaError::InvalidDepth);
    }
    let root = Path::Root;
    let file_obj = as_object(file, root)?;
    let name = req_str(file_obj, "name", root)?;
    let catalog = catalog(file_obj)?;
    let doc_path = root.key("document");
    let document = as_object(req(file_obj, "document", root)?, doc_path)?;
    let pages_path = doc_path.key("children");
    let mut cleaner = Cleaner {
        depth,
        hidden_total: 0,
    };
    let mut pages = Vec::new();
    for (i, page) in opt_array(document, "children", doc_path)?.iter().enumerate() {
        let p = pages_path.index(i);
        pages.push(cleaner.page(as_object(page, p)?, p)?);
    }
    let mut out = Object::new();
    out.insert("name".into(), name.into());
    for key in ["lastModified", "version"] {
        if let Some(v) = opt_str(file_obj, key, root)? {
            out.insert(key.into(), v.into());
        }
    }
    out.insert("pages".into(), Value::Array(pages));
    if let Value::Object(c) = catalog {
        out.extend(c);
    }
    out.insert("hiddenNodes".into(), cleaner.hidden_total.into());
    Ok(Value::Object(out))
}

/// The file's reusable parts only: `{components, componentSets, styles}`, each a list sorted in
/// document order (styles by type and name). A component carries `componentSet` (the set's id)
/// when it is a variant and `page` (the page's name) when its definition is in this file; a set
/// lists its `variants` by id.
pub fn clean_components(file: &Value) -> Result<Value> {
    catalog(as_object(file, Path::Root)?)
}

struct Cleaner {
    depth: Option<u32>,
    hidden_total: usize,
}

impl Cleaner {
    /// Whether nodes at `level` (pages are level 1) may keep their children.
    fn may_descend(&self, level: u32) -> bool {
        self.depth.is_none_or(|d| level < d)
    }

    fn page(&mut self, page: &Object, path: Path<'_>) -> Result<Value> {
        let mut out = Object::new();
        out.insert("id".into(), req_str(page, "id", path)?.into());
        out.insert("name".into(), req_str(page, "name", path)?.into());
        self.children(page, path, (0.0, 0.0), 1, &mut out)?;
        Ok(Value::Object(out))
    }

    /// Adds `children` (or `truncated`) and `hiddenChildren` to `out`.
    fn children(
        &mut self,
        node: &Object,
        path: Path<'_>,
        origin: (f64, f64),
        level: u32,
        out: &mut Object,
    ) -> Result<()> {
        let kids = opt_array(node, "children", path)?;
        if kids.is_empty() {
            return Ok(());
        }
        if !self.may_descend(level) {
            out.insert("truncated".into(), true.into());
            return Ok(());
        }
        let kids_path = path.key("children");
        let mut cleaned = Vec::with_capacity(kids.len());
        let mut hidden = 0usize;
        for (i, kid) in kids.iter().enumerate() {
            let p = kids_path.index(i);
            let kid = as_object(kid, p)?;
            if is_visible(kid, p)? {
                cleaned.push(self.node(kid, p, origin, level + 1)?);
            } else {
                hidden += 1;
            }
        }
        self.hidden_total += hidden;
        if hidden > 0 {
            out.insert("hiddenChildren".into(), hidden.into());
        }
        if !cleaned.is_empty() {
            out.insert("children".into(), Value::Array(cleaned));
        }
        Ok(())
    }

    fn node(&mut self, node: &Object, path: Path<'_>, origin: (f64, f64), level: u32) -> Result<Value> {
        let bbox = rect(node, "absoluteBoundingBox", path)?;
        let mut out = Object::new();
        out.insert("id".into(), req_str(node, "id", path)?.into());
        out.insert("name".into(), req_str(node, "name", path)?.into());
        let kind = req_str(node, "type", path)?;
        out.insert("type".into(), kind.into());
        out.insert("x".into(), round2(bbox.x - origin.0).into());
        out.insert("y".into(), round2(bbox.y - origin.1).into());
        out.insert("width".into(), round2(bbox.w).into());
        out.insert("height".into(), round2(bbox.h).into());
        if let Some(layout) = layout_summary(node, path)? {
            out.insert("layout".into(), layout);
        }
        let h = opt_str(node, "layoutSizingHorizontal", path)?;
        let v = opt_str(node, "layoutSizingVertical", path)?;
        if h.is_some_and(|s| s != "FIXED") || v.is_some_and(|s| s != "FIXED") {
            out.insert(
                "sizing".into(),
                json!({"horizontal": h.unwrap_or("FIXED"), "vertical": v.unwrap_or("FIXED")}),
            );
        }
        if opt_str(node, "layoutPositioning", path)? == Some("ABSOLUTE") {
            out.insert("positioning".into(), "ABSOLUTE".into());
        }
        if kind == "TEXT" {
            out.insert(
                "text".into(),
                opt_str(node, "characters", path)?.unwrap_or("").into(),
            );
        }
        if let Some(id) = opt_str(node, "componentId", path)? {
            out.insert("componentId".into(), id.into());
        }
        self.children(node, path, (bbox.x, bbox.y), level, &mut out)?;
        Ok(Value::Object(out))
    }
}

/// `{mode, gap, padding: [top, right, bottom, left], primaryAlign, counterAlign, wrap?,
/// counterGap?}` for auto-layout frames, `None` otherwise.
fn layout_summary(node: &Object, path: Path<'_>) -> Result<Option<Value>> {
    let mode = match opt_str(node, "layoutMode", path)? {
        None | Some("NONE") => return Ok(None),
        Some(mode) => mode,
    };
    let num = |key: &str| -> Result<f64> { Ok(round2(opt_f64(node, key, path)?.unwrap_or(0.0))) };
    let mut out = Object::new();
    out.insert("mode".into(), mode.into());
    let primary = opt_str(node, "primaryAxisAlignItems", path)?.unwrap_or("MIN");
    out.insert("gap".into(), num("itemSpacing")?.into());
    let padding = [
        num("paddingTop")?,
        num("paddingRight")?,
        num("paddingBottom")?,
        num("paddingLeft")?,
    ];
    out.insert("padding".into(), json!(padding));
    out.insert("primaryAlign".into(), primary.into());
    out.insert(
        "counterAlign".into(),
        opt_str(node, "counterAxisAlignItems", path)?
            .unwrap_or("MIN")
            .into(),
    );
    if opt_str(node, "layoutWrap", path)? == Some("WRAP") {
        out.insert("wrap".into(), true.into());
        out.insert("counterGap".into(), num("counterAxisSpacing")?.into());
    }
    Ok(Some(Value::Object(out)))
}

/// Where each COMPONENT / COMPONENT_SET definition sits: id → (page name, document order).
fn definitions(file: &Object) -> Result<HashMap<String, (String, usize)>> {
    fn walk(
        node: &Object,
        path: Path<'_>,
        page: &str,
        found: &mut HashMap<String, (String, usize)>,
        order: &mut usize,
    ) -> Result<()> {
        if matches!(req_str(node, "type", path)?, "COMPONENT" | "COMPONENT_SET") {
            found.insert(req_str(node, "id", path)?.to_string(), (page.to_string(), *order));
            *order += 1;
        }
        let kids_path = path.key("children");
        for (i, kid) in opt_array(node, "children", path)?.iter().enumerate() {
            let p = kids_path.index(i);
            walk(as_object(kid, p)?, p, page, found, order)?;
        }
        Ok(())
    }
    let mut found = HashMap::new();
    let root = Path::Root;
    let Some(document) = get(file, "document") else {
        return Ok(found);
    };
    let doc_path = root.key("document");
    let document = as_object(document, doc_path)?;
    let pages_path = doc_path.key("children");
    let mut order = 0;
    for (i, page) in opt_array(document, "children", doc_path)?.iter().enumerate() {
        let p = pages_path.index(i);
        let page = as_object(page, p)?;
        let name = req_str(page, "name", p)?;
        let kids_path = p.key("children");
        for (j, kid) in opt_array(page, "children", p)?.iter().enumerate() {
            let kp = kids_path.index(j);
            walk(as_object(kid, kp)?, kp, name, &mut found, &mut order)?;
        }
    }
    Ok(found)
}

/// One entry of the `components` / `componentSets` / `styles` maps, read with its path.
struct Entry<'v> {
    id: &'v str,
    obj: &'v Object,
}

fn entries<'v>(file: &'v Object, key: &'static str) -> Result<Vec<Entry<'v>>> {
    let root = Path::Root;
    let Some(map) = opt_object(file, key, root)? else {
        return Ok(Vec::new());
    };
    let map_path = root.key(key);
    map.iter()
        .map(|(id, v)| {
            Ok(Entry {
                id,
                obj: as_object(v, map_path.key(id))?,
            })
        })
        .collect()
}

fn catalog(file: &Object) -> Result<Value> {
    let defs = definitions(file)?;
    let order_of = |id: &str| defs.get(id).map_or(usize::MAX, |d| d.1);
    let root = Path::Root;

    let mut components = entries(file, "components")?;
    components.sort_by(|a, b| (order_of(a.id), a.id).cmp(&(order_of(b.id), b.id)));
    let comp_path = root.key("components");
    let mut variants: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut comp_out = Vec::with_capacity(components.len());
    for c in &components {
        let p = comp_path.key(c.id);
        let mut out = base_entry(c, p)?;
        if let Some(set) = opt_str(c.obj, "componentSetId", p)? {
            out.insert("componentSet".into(), set.into());
            variants.entry(set).or_default().push(c.id);
        }
        if let Some((page, _)) = defs.get(c.id) {
            out.insert("page".into(), page.as_str().into());
        }
        comp_out.push(Value::Object(out));
    }

    let mut sets = entries(file, "componentSets")?;
    sets.sort_by(|a, b| (order_of(a.id), a.id).cmp(&(order_of(b.id), b.id)));
    let sets_path = root.key("componentSets");
    let mut sets_out = Vec::with_capacity(sets.len());
    for s in &sets {
        let p = sets_path.key(s.id);
        let mut out = base_entry(s, p)?;
        if let Some((page, _)) = defs.get(s.id) {
            out.insert("page".into(), page.as_str().into());
        }
        out.insert(
            "variants".into(),
            json!(variants.get(s.id).cloned().unwrap_or_default()),
        );
        sets_out.push(Value::Object(out));
    }

    let styles_path = root.key("styles");
    let mut styles_out = Vec::new();
    for s in entries(file, "styles")? {
        let p = styles_path.key(s.id);
        let mut out = base_entry(&s, p)?;
        out.insert("type".into(), req_str(s.obj, "styleType", p)?.into());
        styles_out.push(out);
    }
    let sort_key = |o: &Object| (o["type"].to_string(), o["name"].to_string(), o["id"].to_string());
    styles_out.sort_by_key(sort_key);

    Ok(json!({
        "components": comp_out,
        "componentSets": sets_out,
        "styles": styles_out.into_iter().map(Value::Object).collect::<Vec<_>>(),
    }))
}

/// `{id, key, name, description}` of a catalog entry.
fn base_entry(e: &Entry<'_>, path: Path<'_>) -> Result<Object> {
    let mut out = Object::new();
    out.insert("id".into(), e.id.into());
    out.insert("key".into(), req_str(e.obj, "key", path)?.into());
    out.insert("name".into(), req_str(e.obj, "name", path)?.into());
    out.insert(
        "description".into(),
        opt_str(e.obj, "description", path)?.unwrap_or("").into(),
    );
    Ok(out)
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
