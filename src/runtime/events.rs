//! Events, one object each: kube's `Recorder` folds Events of one reason into a series,
//! which would hide which member (or which backup) a change was about.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::Runtime;

/// `reportingController` of every Event etcd-pilot publishes.
pub const REPORTING_CONTROLLER: &str = "etcdpilot.io/etcd-pilot";

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// The Event about `obj`, as it is created. Pure, so its fields are unit-tested.
pub fn event<K: Resource<DynamicType = ()>>(
    obj: &K,
    instance: &str,
    type_: EventType,
    reason: &str,
    note: &str,
    now: jiff::Timestamp,
) -> Event {
    Event {
        metadata: ObjectMeta { generate_name: Some(format!("{}-", obj.name_any())), ..ObjectMeta::default() },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        action: Some(reason.into()),
        reason: Some(reason.into()),
        // The API caps a note at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        type_: Some(if type_ == EventType::Warning { "Warning" } else { "Normal" }.into()),
        regarding: Some(obj.object_ref(&())),
        ..Event::default()
    }
}

/// Publishes an Event about `obj`. Failing to publish is logged, never an error of the
/// pass: an Event must not stop a step.
pub async fn publish<K: Resource<DynamicType = ()>>(rt: &Runtime, obj: &K, type_: EventType, reason: &str, note: &str) {
    let api: Api<Event> = Api::namespaced(rt.client.clone(), &obj.namespace().unwrap_or_default());
    let e = event(obj, &rt.instance, type_, reason, note, jiff::Timestamp::now());
    if let Err(err) = api.create(&PostParams::default(), &e).await {
        tracing::warn!(error = %err, reason, "cannot publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EtcdCluster;

    #[test]
    fn an_event_names_its_object_and_caps_its_note() {
        let ec: EtcdCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "main", "namespace": "prod", "uid": "u"},
            "spec": {"size": 3, "version": "3.4.23"}}))
        .unwrap();
        let e = event(&ec, "pod-a", EventType::Warning, "Blocked", &"x".repeat(2000), jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(e.metadata.generate_name.as_deref(), Some("main-"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.note.as_ref().map(String::len), Some(1000));
        let r = e.regarding.expect("regarding");
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.namespace.as_deref()),
            (Some("EtcdCluster"), Some("main"), Some("prod"))
        );
    }
}
