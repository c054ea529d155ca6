//! The `etcdpilot.io/v1alpha1` API: four kinds designed as one whole.
//!
//! Doc comments on fields are the `kubectl explain` text users read, so they say what a
//! field does and what its default is. What a schema cannot express (a version jump, a
//! live topology change) is checked in [`validation`] and enforced by the reconcilers.

pub mod backup;
pub mod cluster;
pub mod common;
pub mod restore;
pub mod schedule;
pub mod validation;

pub use backup::{EtcdBackup, EtcdBackupSpec, EtcdBackupStatus};
pub use cluster::{EtcdCluster, EtcdClusterSpec, EtcdClusterStatus};
pub use common::*;
pub use restore::{EtcdRestore, EtcdRestoreSpec, EtcdRestoreStatus};
pub use schedule::{EtcdBackupSchedule, EtcdBackupScheduleSpec, EtcdBackupScheduleStatus};

/// The API group of every etcd-pilot kind.
pub const GROUP: &str = "etcdpilot.io";
/// The only served (and stored) version.
pub const VERSION: &str = "v1alpha1";

#[cfg(test)]
mod example_tests {
    use super::*;
    use serde_json::Value;

    /// Paths in `example` that `typed` (the example parsed and serialized again) lacks:
    /// fields the types do not know, i.e. typos the API server would prune.
    fn unknown(path: &str, example: &Value, typed: &Value, out: &mut Vec<String>) {
        match (example, typed) {
            (Value::Object(e), Value::Object(t)) => {
                for (k, v) in e {
                    match t.get(k) {
                        Some(tv) => unknown(&format!("{path}.{k}"), v, tv, out),
                        None => out.push(format!("{path}.{k}")),
                    }
                }
            }
            (Value::Array(e), Value::Array(t)) => {
                for (i, (ev, tv)) in e.iter().zip(t).enumerate() {
                    unknown(&format!("{path}[{i}]"), ev, tv, out);
                }
            }
            _ => {}
        }
    }

    fn check<K: serde::de::DeserializeOwned + serde::Serialize>(name: &str, doc: &Value) -> K {
        let typed: K = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut out = Vec::new();
        unknown("", doc, &serde_json::to_value(&typed).unwrap(), &mut out);
        assert!(out.is_empty(), "{name}: unknown fields {out:?}");
        typed
    }

    #[test]
    fn every_example_parses_without_unknown_fields_and_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.display().to_string();
            let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if doc["apiVersion"] != "etcdpilot.io/v1alpha1" {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap().to_string();
            let problems = match kind.as_str() {
                "EtcdCluster" => validation::validate_cluster(&check::<EtcdCluster>(&name, &doc).spec),
                "EtcdBackup" => {
                    check::<EtcdBackup>(&name, &doc);
                    Vec::new()
                }
                "EtcdBackupSchedule" => validation::validate_schedule(&check::<EtcdBackupSchedule>(&name, &doc).spec),
                "EtcdRestore" => validation::validate_restore(&check::<EtcdRestore>(&name, &doc).spec),
                other => panic!("{name}: unknown kind {other}"),
            };
            assert!(problems.is_empty(), "{name}: {problems:?}");
            kinds.push(kind);
        }
        kinds.sort();
        kinds.dedup();
        assert_eq!(
            kinds,
            ["EtcdBackup", "EtcdBackupSchedule", "EtcdCluster", "EtcdRestore"],
            "an example of every kind"
        );
    }
}
