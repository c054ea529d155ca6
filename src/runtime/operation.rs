//! The per-cluster operation slot: one disruptive operation per etcd cluster at a time
//! (a membership change, a restart, a defragmentation, a snapshot of a member, a
//! restore), whichever controller runs it.
//!
//! The slot is an annotation on the EtcdCluster. A controller takes it before a
//! disruptive step with the object's `resourceVersion` as a precondition (so a replica
//! acting on an old view, e.g. one that lost the Lease, gets a 409 and does nothing),
//! keeps it while the operation runs over several passes, and releases it when done.
//! Every controller reads it before it acts; [`decide`] is the pure rule.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use super::kube_ops::annotate_if_unchanged;

/// Annotation of the EtcdCluster holding the slot.
pub const ANNOTATION: &str = "etcdpilot.io/operation";

/// An operation under way on one cluster, as recorded before its first step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// What: `RemoveMember`, `Restart`, `Snapshot`, `Defragment`, `Restore`, ...
    pub kind: String,
    /// The member it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The controller running it (`cluster`, `backup`, `restore`, ...).
    pub controller: String,
    /// The replica running it.
    pub holder: String,
    /// When it was recorded (RFC 3339).
    pub since: jiff::Timestamp,
    /// After this it is taken to be abandoned (its controller died mid-way) and the slot
    /// is free again.
    pub expires: jiff::Timestamp,
}

/// Who holds a slot, read from its record's `controller`: the cluster planner, a
/// backup or a restore (each named), or a holder this version does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder<'a> {
    Cluster,
    Backup(&'a str),
    Restore(&'a str),
    Unknown(&'a str),
}

impl<'a> Holder<'a> {
    /// The holder of a record's `controller` field.
    pub fn of(controller: &'a str) -> Self {
        match controller.split_once('/') {
            None if controller == "cluster" => Holder::Cluster,
            Some(("backup", name)) => Holder::Backup(name),
            Some(("restore", name)) => Holder::Restore(name),
            _ => Holder::Unknown(controller),
        }
    }

    /// What a record names this holder by.
    pub fn id(&self) -> String {
        match self {
            Holder::Cluster => "cluster".into(),
            Holder::Backup(name) => format!("backup/{name}"),
            Holder::Restore(name) => format!("restore/{name}"),
            Holder::Unknown(raw) => (*raw).to_string(),
        }
    }
}

impl Operation {
    /// Who holds the slot this record takes.
    pub fn held_by(&self) -> Holder<'_> {
        Holder::of(&self.controller)
    }

    /// A restore holds it: the cluster planner stands down entirely.
    pub fn is_restore(&self) -> bool {
        matches!(self.held_by(), Holder::Restore(_))
    }
}

/// What a controller may do, given the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Nobody holds it (or what held it expired): take it.
    Free,
    /// This controller holds it (this replica, or a predecessor replica that lost the
    /// Lease): go on, refreshing the record.
    Ours,
    /// Another controller's operation runs: wait.
    Busy(Operation),
}

/// The recorded operation of an object, if any (an unreadable record counts as none:
/// it can only have been written by hand).
pub fn recorded<K: Resource>(obj: &K) -> Option<Operation> {
    obj.meta().annotations.as_ref()?.get(ANNOTATION).and_then(|v| serde_json::from_str(v).ok())
}

/// The rule every controller follows before it acts.
pub fn decide(current: Option<&Operation>, controller: &str, now: jiff::Timestamp) -> Slot {
    match current {
        None => Slot::Free,
        Some(op) if op.expires <= now => Slot::Free,
        // A replica acts only while it holds the Lease: a record of this controller by
        // another replica was left by one that has lost it.
        Some(op) if op.controller == controller => Slot::Ours,
        Some(op) => Slot::Busy(op.clone()),
    }
}

/// What became of an attempt to take the slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    Yes,
    /// The object changed since it was read (another replica or controller wrote), or
    /// another controller holds the slot: look again.
    Lost(String),
}

/// Whether `current` already records `op`: the same step of the same controller, by the
/// same replica, with more than half of its time left. A step etcd answers "not yet"
/// (a learner still catching up, membership changes refused for 5 s after a member
/// joined) is tried again every few seconds; writing the record again each time would
/// change the object, whose watch event starts the next pass at once: a loop at the API
/// server's speed instead of the planned requeue.
pub fn already_recorded(current: Option<&Operation>, op: &Operation) -> bool {
    let Some(c) = current else { return false };
    let half = op.expires.duration_since(op.since) / 2;
    c.controller == op.controller
        && c.holder == op.holder
        && c.kind == op.kind
        && c.member == op.member
        && c.expires.duration_since(op.since) > half
}

/// Records `op` on the object, which must still be at the `resourceVersion` it was read
/// at. Read the object fresh first: the precondition fences against every write since.
/// A record of this very step by this replica is left as it is (see
/// [`already_recorded`]): the fresh read shows no other replica or controller took the
/// slot since, which is what the write would have proven.
pub async fn take<K>(api: &Api<K>, fresh: &K, op: &Operation) -> Result<Taken, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let now = op.since;
    let current = recorded(fresh);
    if let Slot::Busy(other) = decide(current.as_ref(), &op.controller, now) {
        return Ok(Taken::Lost(format!("{} {} holds the cluster's operation slot", other.controller, other.kind)));
    }
    if already_recorded(current.as_ref(), op) {
        return Ok(Taken::Yes);
    }
    let record = serde_json::to_string(op).unwrap_or_default();
    Ok(match annotate_if_unchanged(api, fresh, ANNOTATION, &record).await? {
        true => Taken::Yes,
        false => Taken::Lost("the cluster changed since it was read".into()),
    })
}

/// Clears the slot if `controller` holds it (a JSON patch whose `test` makes the
/// removal atomic: another controller's record is never removed).
pub async fn release<K>(api: &Api<K>, obj: &K, controller: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(raw) = obj.meta().annotations.as_ref().and_then(|a| a.get(ANNOTATION)).cloned() else { return Ok(()) };
    if recorded(obj).is_some_and(|op| op.controller != controller) {
        return Ok(());
    }
    let path = format!("/metadata/annotations/{}", ANNOTATION.replace('~', "~0").replace('/', "~1"));
    let patch: json_patch::Patch = match serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": raw},
        {"op": "remove", "path": path},
    ])) {
        Ok(p) => p,
        Err(_) => return Ok(()),
    };
    match api.patch(&obj.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        // The record changed or went meanwhile: not ours to clear.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 || s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Replaces the record `read` holds with `op` (a longer expiry for an operation that is
/// still running), atomically: a JSON patch whose `test` fails if the record changed.
/// Returns false when it had changed (the slot is no longer this operation's).
pub async fn refresh<K>(api: &Api<K>, read: &K, op: &Operation) -> Result<bool, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(raw) = read.meta().annotations.as_ref().and_then(|a| a.get(ANNOTATION)).cloned() else {
        return Ok(false);
    };
    let path = format!("/metadata/annotations/{}", ANNOTATION.replace('~', "~0").replace('/', "~1"));
    let value = serde_json::to_string(op).unwrap_or_default();
    let patch: json_patch::Patch = match serde_json::from_value(serde_json::json!([
        {"op": "test", "path": path, "value": raw},
        {"op": "replace", "path": path, "value": value},
    ])) {
        Ok(p) => p,
        Err(_) => return Ok(false),
    };
    match api.patch(&read.name_any(), &PatchParams::default(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn holders_are_read_from_the_record() {
        for (raw, holder) in [
            ("cluster", Holder::Cluster),
            ("backup/nightly-1", Holder::Backup("nightly-1")),
            ("restore/r1", Holder::Restore("r1")),
            ("restorer", Holder::Unknown("restorer")),
            ("cluster/x", Holder::Unknown("cluster/x")),
        ] {
            assert_eq!(Holder::of(raw), holder, "{raw}");
            assert_eq!(holder.id(), raw, "{raw} round-trips");
        }
    }

    use super::*;

    fn op(controller: &str, holder: &str, expires: i64) -> Operation {
        Operation {
            kind: "RemoveMember".into(),
            member: Some("main-4".into()),
            controller: controller.into(),
            holder: holder.into(),
            since: jiff::Timestamp::from_second(0).unwrap(),
            expires: jiff::Timestamp::from_second(expires).unwrap(),
        }
    }

    #[test]
    fn the_slot_table() {
        let now = jiff::Timestamp::from_second(100).unwrap();
        let rows: Vec<(&str, Option<Operation>, Slot)> = vec![
            ("nothing recorded: free", None, Slot::Free),
            ("own record: go on", Some(op("cluster", "a", 200)), Slot::Ours),
            ("own controller, a replica that lost the Lease: take over", Some(op("cluster", "b", 200)), Slot::Ours),
            ("another controller's snapshot: wait", Some(op("backup", "a", 200)), Slot::Busy(op("backup", "a", 200))),
            ("another controller's record expired: free", Some(op("backup", "a", 100)), Slot::Free),
        ];
        for (what, current, want) in rows {
            assert_eq!(decide(current.as_ref(), "cluster", now), want, "{what}");
        }
    }

    #[test]
    fn a_step_tried_again_is_not_written_again() {
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        // The attempt now (t = 100), for 600 s.
        let attempt = Operation { since: at(100), expires: at(700), holder: "a".into(), ..op("cluster", "a", 0) };
        let recorded_at = |since: i64| Operation { since: at(since), expires: at(since + 600), ..attempt.clone() };
        let rows: Vec<(&str, Option<Operation>, bool)> = vec![
            ("nothing recorded: write", None, false),
            ("this step by this replica 10 s ago: leave it", Some(recorded_at(90)), true),
            ("this step, recorded 299 s ago (more than half left): leave it", Some(recorded_at(-199)), true),
            ("this step, over half of its time gone: refresh", Some(recorded_at(-200)), false),
            (
                "another replica's record (it lost the Lease): write, fenced",
                Some(Operation { holder: "b".into(), ..recorded_at(90) }),
                false,
            ),
            (
                "another step of the same operation: write",
                Some(Operation { kind: "PromoteLearner".into(), ..recorded_at(90) }),
                false,
            ),
            (
                "the same step for another member: write",
                Some(Operation { member: Some("main-5".into()), ..recorded_at(90) }),
                false,
            ),
            (
                "another controller's record: write (decide says busy first)",
                Some(Operation { controller: "backup".into(), ..recorded_at(90) }),
                false,
            ),
        ];
        for (what, current, want) in rows {
            assert_eq!(already_recorded(current.as_ref(), &attempt), want, "{what}");
        }
    }

    #[test]
    fn a_record_round_trips_through_the_annotation() {
        let o = op("restore", "pod-a", 500);
        let ec: crate::api::EtcdCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "main", "annotations": {ANNOTATION: serde_json::to_string(&o).unwrap()}},
            "spec": {"size": 3, "version": "3.4.23"}}))
        .unwrap();
        assert_eq!(recorded(&ec), Some(o));
        let text = serde_json::to_string(&op("cluster", "a", 1)).unwrap();
        assert!(
            text.contains("\"controller\":\"cluster\"") && text.contains("\"since\":\"1970-01-01T00:00:00Z\""),
            "{text}"
        );
    }
}
