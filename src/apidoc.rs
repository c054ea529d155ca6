//! The field reference in `docs/api.md`, generated from the CRD schemas so that it
//! cannot drift from the code. `make crds` rewrites it; a test checks it.

use serde_json::Value;

use crate::crdgen;

/// Start and end markers of the generated part of `docs/api.md`.
pub const BEGIN: &str = "<!-- BEGIN GENERATED REFERENCE: make crds -->";
pub const END: &str = "<!-- END GENERATED REFERENCE -->";

/// Fields whose types are Kubernetes' own (documented by `kubectl explain`) or described
/// elsewhere on the page: listed, not expanded.
const NOT_EXPANDED: &[&str] =
    &["resources", "affinity", "tolerations", "topologySpreadConstraints", "newCluster", "conditions"];

/// The generated reference, markers included.
pub fn reference() -> String {
    let mut out = format!("{BEGIN}\n");
    for crd in crdgen::all() {
        let kind = &crd.spec.names.kind;
        let v = &crd.spec.versions[0];
        let Some(schema) = v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()) else { continue };
        let schema = serde_json::to_value(schema).unwrap_or_default();
        out.push_str(&format!(
            "\n### {kind}\n\n`{}/{}`, namespaced, short name `{}`. {}\n",
            crd.spec.group,
            v.name,
            crd.spec.names.short_names.iter().flatten().next().map(String::as_str).unwrap_or("-"),
            one_line(schema.get("description"))
        ));
        for part in ["spec", "status"] {
            let Some(node) = schema.pointer(&format!("/properties/{part}")) else { continue };
            out.push_str(&format!("\n| `{part}` field | type | default | description |\n|---|---|---|---|\n"));
            rows(part, node, &mut out);
        }
    }
    out.push_str(&format!("\n{END}"));
    out
}

fn rows(path: &str, node: &Value, out: &mut String) {
    let Some(props) = node.get("properties").and_then(Value::as_object) else { return };
    let required: Vec<&str> =
        node.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, field) in props {
        let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let mut ty = type_of(field);
        if required.contains(&name.as_str()) {
            ty.push_str(", required");
        }
        let default = field.get("default").map(|d| format!("`{}`", d)).unwrap_or_default();
        out.push_str(&format!("| `{p}` | {ty} | {default} | {} |\n", one_line(field.get("description"))));
        if NOT_EXPANDED.contains(&name.as_str()) {
            continue;
        }
        match field.get("type").and_then(Value::as_str) {
            Some("object") => rows(&p, field, out),
            Some("array") => {
                if let Some(items) = field.get("items") {
                    rows(&format!("{p}[]"), items, out);
                }
            }
            _ => {}
        }
    }
}

fn type_of(field: &Value) -> String {
    let base = match field.get("type").and_then(Value::as_str) {
        Some("array") => {
            format!("[]{}", field.get("items").map(type_of).unwrap_or_default())
        }
        Some("object") if field.get("additionalProperties").is_some() => "map".to_string(),
        Some(t) => t.to_string(),
        None if field.get("x-kubernetes-int-or-string").is_some() => "quantity".to_string(),
        None => "any".to_string(),
    };
    match field.get("enum").and_then(Value::as_array) {
        Some(values) => {
            let vs: Vec<String> = values.iter().map(|v| v.to_string().trim_matches('"').to_string()).collect();
            format!("{base}: {}", vs.join(" \\| "))
        }
        None => base,
    }
}

fn one_line(d: Option<&Value>) -> String {
    d.and_then(Value::as_str).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

/// `doc` with its generated part replaced by [`reference`]; `None` without markers.
pub fn splice(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN)?;
    let end = doc.find(END)? + END.len();
    Some(format!("{}{}{}", &doc[..start], reference(), &doc[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_api_md_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md");
        let doc = std::fs::read_to_string(&path).expect("docs/api.md");
        let fresh = splice(&doc).expect("docs/api.md has the generated-reference markers");
        assert!(doc == fresh, "docs/api.md is stale: run `make crds`");
    }

    #[test]
    fn reference_lists_nested_fields_with_defaults() {
        let r = reference();
        assert!(r.contains("| `spec.size` | integer: 1 \\| 3 \\| 5 \\| 7 | `3` |"), "{r}");
        assert!(r.contains("| `spec.storage.retention.whenDeleted` |"));
        assert!(r.contains("| `status.members[].dbSizeInUse` |"));
        assert!(!r.contains("spec.scheduling.affinity.nodeAffinity"), "Kubernetes' own types are not expanded");
    }
}
