//! JSON schemas for kubeconform, built offline: Kubernetes' own kinds from the OpenAPI document
//! shipped in the `k8s.io/kubernetes` Go module, Cogo's kinds from `crds/`. Files are named as
//! kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` template expects, and are strict
//! (no unknown fields), so `kubeconform -strict` really checks every field.

use std::{collections::BTreeSet, path::Path};

use serde_json::{Map, Value, json};

/// The file name kubeconform looks up for `apiVersion` and `kind`.
pub fn file_name(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let first = if group.is_empty() {
        version
    } else {
        group.split('.').next().unwrap_or(group)
    };
    let suffix = if group.is_empty() {
        format!("-{first}")
    } else {
        format!("-{first}-{version}")
    };
    format!("{}{suffix}.json", kind.to_lowercase())
}

/// Makes a schema strict: objects that list their properties accept no others.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let open = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties") && !map.contains_key("additionalProperties") && !open {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for v in map.values_mut() {
                strict(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// Rewrites the OpenAPI extensions JSON Schema does not know into plain JSON Schema.
fn plain(schema: &mut Value) {
    let Value::Object(map) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(plain);
        }
        return;
    };
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || map.get("format") == Some(&json!("int-or-string"))
    {
        map.remove("type");
        map.remove("format");
        map.insert("oneOf".into(), json!([{"type": "string"}, {"type": "integer"}]));
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = map.get("type").cloned() {
            map.insert("type".into(), json!([t, "null"]));
        } else if let Some(Value::Array(e)) = map.get_mut("enum")
            && !e.contains(&Value::Null)
        {
            e.push(Value::Null);
        }
    }
    for v in map.values_mut() {
        plain(v);
    }
}

fn collect_refs(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                out.insert(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Writes the schema of every listed `(apiVersion, kind)` of Kubernetes into `out`, from the
/// OpenAPI v2 document at `swagger`. Returns the kinds it could not find.
pub fn write_builtin(
    swagger: &Path,
    wanted: &BTreeSet<(String, String)>,
    out: &Path,
) -> Vec<(String, String)> {
    let doc: Value =
        serde_json::from_slice(&std::fs::read(swagger).expect("read swagger.json")).expect("swagger JSON");
    let defs = doc["definitions"].as_object().expect("definitions");
    let mut missing = Vec::new();
    for (api_version, kind) in wanted {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let found = defs.iter().find(|(_, d)| {
            d["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|gvks| {
                    gvks.iter()
                        .any(|g| g["group"] == group && g["version"] == version && g["kind"] == kind.as_str())
                })
        });
        let Some((name, _)) = found else {
            missing.push((api_version.clone(), kind.clone()));
            continue;
        };
        // The definitions the kind reaches, transitively.
        let mut closure = BTreeSet::from([name.clone()]);
        let mut queue = vec![name.clone()];
        while let Some(n) = queue.pop() {
            let mut refs = BTreeSet::new();
            collect_refs(&defs[&n], &mut refs);
            for r in refs {
                if closure.insert(r.clone()) {
                    queue.push(r);
                }
            }
        }
        let mut definitions = Map::new();
        for n in &closure {
            let mut d = defs[n].clone();
            if n == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
                d = json!({"oneOf": [{"type": "string"}, {"type": "number"}]});
            }
            plain(&mut d);
            strict(&mut d);
            definitions.insert(n.clone(), d);
        }
        let schema = json!({"$ref": format!("#/definitions/{name}"), "definitions": definitions});
        std::fs::write(
            out.join(file_name(api_version, kind)),
            serde_json::to_vec(&schema).unwrap(),
        )
        .expect("write schema");
    }
    missing
}

/// Writes the schema of every version of the CRDs in `crds` (YAML files) into `out`.
pub fn write_crds(crds: &Path, out: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(crds).expect("read crds dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read CRD");
        for crd in serde_saphyr::from_multiple::<Value>(&text).expect("CRD YAML") {
            let (group, kind) = (&crd["spec"]["group"], &crd["spec"]["names"]["kind"]);
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let mut schema = v["schema"]["openAPIV3Schema"].clone();
                plain(&mut schema);
                strict(&mut schema);
                // The API server implies apiVersion, kind and metadata (ObjectMeta, which it
                // checks itself); a CRD's schema need not list them.
                schema["properties"]["apiVersion"] = json!({"type": "string"});
                schema["properties"]["kind"] = json!({"type": "string"});
                schema["properties"]["metadata"] = json!({"type": "object"});
                let api_version = format!("{}/{}", group.as_str().unwrap(), v["name"].as_str().unwrap());
                std::fs::write(
                    out.join(file_name(&api_version, kind.as_str().unwrap())),
                    serde_json::to_vec(&schema).unwrap(),
                )
                .expect("write schema");
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kubeconform() {
        assert_eq!(file_name("apps/v1", "Deployment"), "deployment-apps-v1.json");
        assert_eq!(file_name("v1", "Service"), "service-v1.json");
        assert_eq!(
            file_name("networking.k8s.io/v1", "NetworkPolicy"),
            "networkpolicy-networking-v1.json"
        );
        assert_eq!(
            file_name("cogo.xyz/v1alpha1", "CogoAgent"),
            "cogoagent-cogo-v1alpha1.json"
        );
    }

    #[test]
    fn strict_closes_listed_objects_only() {
        let mut s = json!({"properties": {"a": {"type": "object", "properties": {"b": {}}}, "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {}}}});
        strict(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(s["properties"]["free"].get("additionalProperties").is_none());
    }

    #[test]
    fn int_or_string_and_nullable_become_plain_schema() {
        let mut s = json!({"x-kubernetes-int-or-string": true, "properties": {"n": {"type": "string", "nullable": true}}});
        plain(&mut s);
        assert_eq!(s["oneOf"], json!([{"type": "string"}, {"type": "integer"}]));
        assert_eq!(s["properties"]["n"]["type"], json!(["string", "null"]));
    }
}
