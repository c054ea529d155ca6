//! Which nodes can take a member when members never share a node (anti-affinity
//! `Required`, or Stacked): pure, from the member pod as built and the nodes as listed.
//! The planner adds no learner that no node could take, and the status names the
//! members that cannot be placed.
//!
//! It reads what the scheduler reads first (cordons, taints against tolerations, the
//! node selector, required node affinity) and errs towards "can take one": a node it
//! counts that the scheduler then refuses (resources, ports, volumes) leaves a learner's
//! pod Pending, which waits without voting and says the scheduler's own words.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};
use kube::ResourceExt;

use crate::api::EtcdCluster;
use crate::api::cluster::{AntiAffinity, Topology};

/// Whether members of this cluster never share a node.
pub fn one_per_node(ec: &EtcdCluster) -> bool {
    ec.spec.topology == Topology::Stacked || ec.spec.scheduling.anti_affinity == AntiAffinity::Required
}

/// The names of the nodes that can take the member `pod`, sorted.
pub fn placeable_nodes(pod: &Pod, nodes: &[Node]) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let mut out: Vec<String> = nodes
        .iter()
        .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter(|n| {
            n.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().all(|t| {
                !matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                    || tolerations.iter().any(|tol| tolerates(tol, t))
            })
        })
        .filter(|n| {
            let labels = n.labels();
            spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        })
        .filter(|n| {
            // Terms are ORed, a term's expressions ANDed; a term with only field
            // selectors is not judged here (taken as matching).
            required.is_none_or(|r| {
                r.node_selector_terms
                    .iter()
                    .any(|term| term.match_expressions.iter().flatten().all(|e| expression_matches(e, n.labels())))
            })
        })
        .map(|n| n.name_any())
        .collect();
    out.sort();
    out
}

/// Kubernetes' toleration rule: effect (empty: any), then key and value by operator.
fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    }
}

fn expression_matches(e: &NodeSelectorRequirement, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.clone().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt, Lt and anything newer: not judged here.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).expect("node")
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "main-0"}, "spec": spec})).expect("pod")
    }

    fn testbed() -> Vec<Node> {
        let cp_taint = json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
        let mut nodes = Vec::new();
        for i in 1..=3 {
            nodes.push(node(json!({"metadata": {"name": format!("cp{i}"),
                "labels": {"node-role.kubernetes.io/control-plane": "", "zone": "a"}},
                "spec": {"taints": cp_taint}})));
        }
        for i in 1..=3 {
            nodes.push(node(
                json!({"metadata": {"name": format!("w{i}"), "labels": {"zone": if i == 3 { "b" } else { "a" }}}}),
            ));
        }
        nodes
    }

    #[test]
    fn the_nodes_that_can_take_a_member() {
        let stacked = json!({"containers": [], "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]});
        let rows: Vec<(&str, serde_json::Value, Vec<Node>, Vec<&str>)> = vec![
            ("external, no tolerations: the workers", json!({"containers": []}), testbed(), vec!["w1", "w2", "w3"]),
            ("stacked: the control-plane nodes", stacked.clone(), testbed(), vec!["cp1", "cp2", "cp3"]),
            (
                "a cordoned node takes nothing",
                json!({"containers": []}),
                {
                    let mut n = testbed();
                    n[4] = node(json!({"metadata": {"name": "w2"}, "spec": {"unschedulable": true}}));
                    n
                },
                vec!["w1", "w3"],
            ),
            (
                "a toleration of every taint (operator Exists, no key)",
                json!({"containers": [], "tolerations": [{"operator": "Exists"}]}),
                testbed(),
                vec!["cp1", "cp2", "cp3", "w1", "w2", "w3"],
            ),
            (
                "a toleration for another effect does not tolerate",
                json!({"containers": [], "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoExecute"}]}),
                testbed(),
                vec!["w1", "w2", "w3"],
            ),
            (
                "Equal needs the taint's value",
                json!({"containers": [], "tolerations": [{"key": "dedicated", "value": "etcd"}]}),
                vec![
                    node(
                        json!({"metadata": {"name": "a"}, "spec": {"taints": [{"key": "dedicated", "value": "etcd", "effect": "NoSchedule"}]}}),
                    ),
                    node(
                        json!({"metadata": {"name": "b"}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
                    ),
                    node(
                        json!({"metadata": {"name": "c"}, "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "PreferNoSchedule"}]}}),
                    ),
                ],
                vec!["a", "c"],
            ),
            (
                "required node affinity: terms ORed, expressions ANDed",
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                              {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}]}}}}),
                testbed(),
                vec!["w1", "w2", "w3"],
            ),
            ("a node selector", json!({"containers": [], "nodeSelector": {"zone": "b"}}), testbed(), vec!["w3"]),
            ("no nodes", stacked, Vec::new(), vec![]),
        ];
        for (what, spec, nodes, want) in rows {
            assert_eq!(placeable_nodes(&pod(spec), &nodes), want, "{what}");
        }
    }
}
