//! Problems of a cluster's spec, alone and against what runs: a spec with problems is
//! reported (condition `SpecValid=False`, an Event) and changes nothing.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use crate::api::EtcdCluster;
use crate::api::cluster::{StorageMedium, Topology};
use crate::api::validation;
use crate::shared::names::{MEDIUM_ANNOTATION, TLS_MODE_ANNOTATION, TOPOLOGY_ANNOTATION, VERSION_ANNOTATION};

/// Problems of the spec, alone and against what runs.
pub fn problems(ec: &EtcdCluster, pods: &[Pod], pvcs: &[PersistentVolumeClaim]) -> Vec<String> {
    let spec = &ec.spec;
    let mut out: Vec<String> = validation::validate_cluster(spec).iter().map(ToString::to_string).collect();
    // What runs: the lowest version any member pod was built with (else the status),
    // and the topology and medium the pods were built with.
    let annotated = |key: &str| pods.iter().find_map(|p| p.annotations().get(key).cloned());
    let running_version = pods
        .iter()
        .filter_map(|p| p.annotations().get(VERSION_ANNOTATION))
        .filter_map(|v| semver::Version::parse(v).ok())
        .min()
        .map(|v| v.to_string())
        .or_else(|| ec.status.as_ref().and_then(|s| s.version.clone()));
    let mut live = spec.clone();
    if let Some(v) = running_version {
        live.version = v;
    }
    match annotated(TOPOLOGY_ANNOTATION).as_deref() {
        Some("Stacked") => live.topology = Topology::Stacked,
        Some("External") => live.topology = Topology::External,
        _ => {}
    }
    // Pods from before the mode was recorded: taken to run what the spec says.
    if let Some(mode) = annotated(TLS_MODE_ANNOTATION)
        && let Ok(m) = serde_json::from_value(serde_json::Value::String(mode))
    {
        live.tls.mode = m;
    }
    // Members trust only the CA they started with.
    if !pods.is_empty() {
        let live = annotated(crate::shared::names::CA_FROM_ANNOTATION).unwrap_or_default();
        let wanted = spec.tls.ca_from.as_ref().map(|c| c.cluster.clone()).unwrap_or_default();
        if live != wanted {
            let says = |c: &str| if c.is_empty() { "its own CA".to_string() } else { format!("the CA of {c}") };
            out.push(format!(
                "spec.tls.caFrom cannot change on a live cluster: its members trust {}, not {}",
                says(&live),
                says(&wanted)
            ));
        }
    }
    match annotated(MEDIUM_ANNOTATION).as_deref() {
        Some("Memory") => live.storage.medium = StorageMedium::Memory,
        Some("Persistent") => live.storage.medium = StorageMedium::Persistent,
        _ => {}
    }
    out.extend(validation::validate_cluster_change(&live, spec).iter().map(ToString::to_string));
    if spec.tls.mode == crate::api::cluster::TlsMode::CertManager {
        out.push(
            "spec.tls.mode: CertManager is not supported by this version of etcd-pilot yet; use Operator (the default) or Secrets"
                .into(),
        );
    }
    let uid = ec.uid().unwrap_or_default();
    for pvc in pvcs {
        if let Some(other) = pvc.annotations().get(crate::shared::names::CLUSTER_UID_ANNOTATION)
            && *other != uid
        {
            out.push(format!(
                "PVC {} holds data of an earlier EtcdCluster of this name (uid {other}); delete it, or restore that data with an EtcdRestore",
                pvc.name_any()
            ));
        }
    }
    out
}

/// Why two compactors are configured on this cluster, if they are.
pub fn compaction_conflict(ec: &EtcdCluster) -> Option<String> {
    let schedule = ec.spec.compaction.schedule.as_ref()?;
    let retention = ec.spec.etcd.auto_compaction_retention.trim();
    let amount: f64 = retention.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().unwrap_or(0.0);
    (amount > 0.0).then(|| {
        format!(
            "spec.compaction.schedule ({schedule}) and etcd's own auto-compaction (spec.etcd.autoCompactionRetention: {retention}) both compact this cluster: keep one (and none at all when kube-apiserver compacts it)"
        )
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
