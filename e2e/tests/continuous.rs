//! Continuous backup and restore to a point on the testbed (issue 23), with the operator
//! installed from the chart and the testbed's S3 server: a schedule with `continuous`
//! on takes its base at once and streams every change; under a workload like
//! kube-apiserver's, with the leader moved during the stream, a revision R in the middle
//! is read from the source before anything is compacted, writing goes on, and a restore
//! to R into a new cluster gives every key exactly as at R (value, create_revision,
//! mod_revision, version; leased keys on a lease no longer than the source's); the first
//! write after it is above every revision the source served. The segments, read from the
//! S3 server's disk, cover every revision after the base exactly once. A point outside
//! the window is refused with the window named, and nothing is created.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use etcd_pilot::api::{EtcdBackupSchedule, EtcdRestore, Phase};
use etcd_pilot::shared::window::Index;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::{Kit, OPERATOR_NS};
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use etcd_pilot_e2e::traffic::Writer;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams};
use serde_json::json;

type State = BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64, i64)>;

async fn state(c: &mut Client, revision: Option<i64>) -> State {
    let mut options = GetOptions::new().with_prefix();
    if let Some(r) = revision {
        options = options.with_revision(r);
    }
    let r = c.get("/registry/", Some(options)).await.expect("get");
    r.kvs()
        .iter()
        .map(|k| {
            (k.key().to_vec(), (k.value().to_vec(), k.create_revision(), k.mod_revision(), k.version(), k.lease()))
        })
        .collect()
}

async fn revision(c: &mut Client) -> i64 {
    c.get("/", None).await.expect("get").header().map(|h| h.revision()).unwrap_or(0)
}

/// kube-apiserver's kinds of writes: puts, deletes, a guarded multi-key transaction,
/// events on a short lease that expires, a leader record on a lease kept alive.
async fn workload(c: &mut Client, round: usize, kept: i64) {
    for i in 0..10 {
        c.put(format!("/registry/pods/default/p{}", (round * 7 + i) % 20), format!("pod {round}.{i}"), None)
            .await
            .expect("put");
    }
    c.delete(format!("/registry/pods/default/p{}", round % 20), None).await.expect("delete");
    let txn = Txn::new().when([Compare::version("/registry/namespaces/default", CompareOp::Greater, -1)]).and_then([
        TxnOp::put(format!("/registry/configmaps/default/c{round}"), "a", None),
        TxnOp::put(format!("/registry/secrets/default/s{round}"), "b", None),
        TxnOp::delete(format!("/registry/configmaps/default/c{}", round.wrapping_sub(2)), None),
    ]);
    c.txn(txn).await.expect("txn");
    // Events live an hour (kube-apiserver's default event TTL); master leases 3 s.
    let hour = c.lease_grant(3600, None).await.expect("lease").id();
    c.put(format!("/registry/events/default/e{round}"), "event", Some(PutOptions::new().with_lease(hour)))
        .await
        .expect("leased put");
    let short = c.lease_grant(3, None).await.expect("lease").id();
    c.put(format!("/registry/masterleases/10.0.0.{round}"), "ip", Some(PutOptions::new().with_lease(short)))
        .await
        .expect("leased put");
    c.put("/registry/leases/kube-system/leader", format!("r{round}"), Some(PutOptions::new().with_lease(kept)))
        .await
        .expect("kept lease put");
    c.lease_keep_alive(kept).await.expect("keep alive").0.keep_alive().await.expect("keep alive");
}

fn schedule(flush_seconds: i32) -> serde_json::Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule", "metadata": {"name": "every-6h"},
           "spec": {"clusterName": "src", "schedule": "0 */6 * * *", "retention": {"keepLast": 4},
                    "continuous": {"enabled": true, "flushSeconds": flush_seconds}}})
}

/// The copy of the first test's backups and stream: a second bucket (a directory of the
/// S3 server's root).
const COPIES: &str = "etcd-copies";

/// A 3-member source cluster with a streaming schedule (copied to [`COPIES`] with
/// `copy`): the base's revision once streaming.
async fn streaming_source(kit: &Kit, ns: &str, copy: bool) -> i64 {
    s3_secret(kit, ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(kit, ns, cluster_manifest("src", 3, "3.5.30", json!({"backup": s3_target(ns, "s3")}))).await;
    wait_ready(kit, ns, "src", 3).await;
    let mut manifest = schedule(1);
    if copy {
        std::fs::create_dir_all(kit.state.dir.join("s3").join(COPIES)).expect("second bucket");
        let mut t = s3_target(&format!("{ns}-dr"), "s3");
        t["bucket"] = json!(COPIES);
        manifest["spec"]["copyTo"] = json!([t]);
    }
    let _: EtcdBackupSchedule = kit.create(ns, manifest).await;
    wait_continuous(kit, ns, "the base and the stream", |s| {
        (s.state.as_deref() == Some("Streaming")).then_some(s.window_start.as_ref()?.revision)
    })
    .await
}

async fn wait_continuous<T>(
    kit: &Kit,
    ns: &str,
    what: &str,
    check: impl Fn(&etcd_pilot::api::schedule::ContinuousStatus) -> Option<T>,
) -> T {
    let schedules: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), ns);
    let (check, schedules) = (&check, &schedules);
    wait_for(what, WAIT, || async move { check(&schedules.get("every-6h").await.ok()?.status?.continuous?) }).await
}

/// The index and its segments, read from the S3 server's disk: every revision from
/// `base + 1` on in exactly one segment (no gap, no overlap), each segment whole; the
/// segments in order.
fn covered(kit: &Kit, ns: &str, base: i64) -> Vec<etcd_pilot::shared::segment::Segment> {
    let prefix = format!("{ns}/{ns}/src/streams/every-6h/");
    let index: Index =
        serde_json::from_slice(&std::fs::read(s3_object_file(kit, &format!("{prefix}index.json"))).expect("index"))
            .expect("an index");
    let mut next = base + 1;
    let mut out = Vec::new();
    for s in index.segments.iter().filter(|s| s.last > base) {
        assert_eq!(s.first, next, "segments follow each other without a gap or an overlap: {:?}", index.segments);
        let bytes = std::fs::read(s3_object_file(kit, &s.key)).expect("segment on disk");
        let seg = etcd_pilot::shared::segment::decode(&bytes).expect("a whole segment");
        assert_eq!((seg.first, seg.last), (s.first, s.last));
        next = s.last + 1;
        out.push(seg);
    }
    out
}

fn restore_to(name: &str, point: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": name},
           "spec": {"source": {"schedule": {"name": "every-6h"}}, "pointInTime": point, "mode": "NewCluster",
                    "clusterName": name, "newCluster": {"size": 1, "version": "3.5.30"}}})
}

async fn wait_restore(kit: &Kit, ns: &str, name: &str) -> EtcdRestore {
    let api: Api<EtcdRestore> = Api::namespaced(kit.client.clone(), ns);
    wait_for(&format!("restore {name} to finish"), WAIT, || async {
        api.get(name).await.ok().filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_finished()))
    })
    .await
}

#[tokio::test]
async fn a_restore_to_a_revision_in_the_middle_is_exact() {
    let (kit, ns) = setup("pitr").await;
    let base = streaming_source(&kit, &ns, true).await;
    let mut c = etcd(&kit, &ns, "src").await;
    c.put("/registry/namespaces/default", "ns", None).await.expect("put");
    let kept = c.lease_grant(30, None).await.expect("lease").id();
    let schedules: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), &ns);

    for round in 0..6 {
        workload(&mut c, round, kept).await;
    }
    // The leader moved while the stream runs.
    let members = c.member_list().await.expect("members");
    let status = c.status().await.expect("status");
    let leader = status.leader();
    let other = members.members().iter().find(|m| m.id() != leader).expect("a follower").id();
    let mut at_leader = member_etcd(
        &kit,
        &ns,
        "src",
        &members.members().iter().find(|m| m.id() == leader).map(|m| m.name().to_string()).unwrap_or_default(),
    )
    .await;
    at_leader.move_leader(other).await.expect("move leader");
    for round in 6..10 {
        workload(&mut c, round, kept).await;
    }
    let point = revision(&mut c).await;
    let at_point = state(&mut c, Some(point)).await;
    let mut granted: HashMap<i64, i64> = HashMap::new();
    for (.., lease) in at_point.values() {
        if *lease != 0 {
            granted.insert(*lease, c.lease_time_to_live(*lease, None).await.expect("ttl").granted_ttl().max(3));
        }
    }
    // A time after R and before anything else is written resolves to R. (An API time
    // has whole seconds: the second begun at least 0.2 s after R was written.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let at_time = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("a time");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for round in 10..16 {
        workload(&mut c, round, kept).await;
    }
    let last = revision(&mut c).await;
    wait_for("the last write durable in the store", WAIT, || async {
        let s = schedules.get("every-6h").await.ok()?.status?.continuous?;
        (s.last_revision? >= last).then_some(())
    })
    .await;

    // The segments, from the S3 server's disk: every revision after the base, once.
    let segments = covered(&kit, &ns, base);
    assert!(segments.last().is_some_and(|s| s.last >= last), "the segments reach the last write ({last})");

    // The copy: its stream as far, its base copied.
    wait_continuous(&kit, &ns, "the copy of the stream as far", |s| {
        s.copies.first().and_then(|c| (c.last_revision? >= last).then_some(()))
    })
    .await;
    let backups: Api<etcd_pilot::api::EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    wait_for("the base copied", WAIT, || async {
        let all = backups.list(&Default::default()).await.ok()?.items;
        all.iter()
            .all(|b| b.status.as_ref().is_some_and(|s| s.copies.first().is_some_and(|c| c.phase == Phase::Succeeded)))
            .then_some(())
    })
    .await;

    // Restore to R, to a time that resolves to R, and to R from the copy, side by side.
    let _: EtcdRestore = kit.create(&ns, restore_to("to-r", json!({"revision": point}))).await;
    let _: EtcdRestore = kit.create(&ns, restore_to("at-time", json!({"time": at_time.to_string()}))).await;
    let mut from_copy = restore_to("copy-to-r", json!({"revision": point}));
    from_copy["spec"]["source"]["copy"] = json!(COPIES);
    let _: EtcdRestore = kit.create(&ns, from_copy).await;
    let by_time = wait_restore(&kit, &ns, "at-time").await.status.expect("status");
    assert_eq!(by_time.phase, Phase::Succeeded, "{by_time:?}");
    assert_eq!(
        by_time.point_in_time.map(|p| p.revision),
        Some(point),
        "the time resolves to the last revision by then"
    );
    let r = wait_restore(&kit, &ns, "to-r").await;
    let s = r.status.clone().expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    let reached = s.point_in_time.clone().expect("status.pointInTime");
    assert_eq!(reached.revision, point);
    assert_eq!(reached.base_revision, base);
    assert!(!reached.segments.is_empty(), "{reached:?}");
    wait_ready(&kit, &ns, "to-r", 1).await;
    let mut n = etcd(&kit, &ns, "to-r").await;
    let got = state(&mut n, None).await;
    // Every key as at R. Keys on a lease with seconds left at R may have expired in the
    // restored cluster since (their lease kept the TTL it had left at R): only those.
    for (k, v) in &at_point {
        let key = String::from_utf8_lossy(k);
        match got.get(k) {
            Some(g) => assert_eq!((&g.0, g.1, g.2, g.3), (&v.0, v.1, v.2, v.3), "{key} as at revision {point}"),
            None => assert!(v.4 != 0 && granted[&v.4] <= 5, "{key} is missing from the restore"),
        }
    }
    assert!(got.keys().all(|k| at_point.contains_key(k)), "no key the source did not hold at R");
    let leased: Vec<_> = got.iter().filter(|(_, v)| v.4 != 0).collect();
    assert!(leased.len() > 5, "the restore holds leased keys: {}", leased.len());
    for (k, v) in leased {
        assert_eq!(v.4, at_point[k].4, "the same lease");
        let ttl = n.lease_time_to_live(v.4, None).await.expect("ttl");
        assert!(ttl.granted_ttl() <= granted[&v.4], "{k:?}: {ttl:?} vs {}", granted[&v.4]);
        // A lease with seconds left at R may be expiring by now; one of an hour lives on.
        assert!(granted[&v.4] <= 5 || ttl.ttl() > 0, "{k:?}: {ttl:?}");
    }
    // From the copy alone: the same point, the same keys.
    let by_copy = wait_restore(&kit, &ns, "copy-to-r").await.status.expect("status");
    assert_eq!(by_copy.phase, Phase::Succeeded, "{by_copy:?}");
    assert_eq!(by_copy.point_in_time.as_ref().map(|p| p.revision), Some(point));
    assert!(by_copy.source_object.unwrap_or_default().contains(COPIES), "read from the copy");
    wait_ready(&kit, &ns, "copy-to-r", 1).await;
    let copied = state(&mut etcd(&kit, &ns, "copy-to-r").await, None).await;
    for (k, v) in &at_point {
        if let Some(g) = copied.get(k) {
            assert_eq!((&g.0, g.1, g.2, g.3), (&v.0, v.1, v.2, v.3), "{} from the copy", String::from_utf8_lossy(k));
        } else {
            assert!(
                v.4 != 0 && granted[&v.4] <= 5,
                "{} is missing from the copy's restore",
                String::from_utf8_lossy(k)
            );
        }
    }
    let first = n.put("/registry/after", "x", None).await.expect("put").header().map(|h| h.revision()).unwrap_or(0);
    assert!(first > last, "the first write after the restore ({first}) is above the source's last ({last})");

    // Outside the window: refused, the window named, nothing created.
    let _: EtcdRestore = kit.create(&ns, restore_to("too-far", json!({"revision": last + 1_000_000}))).await;
    let r = wait_restore(&kit, &ns, "too-far").await;
    let s = r.status.expect("status");
    assert_eq!(s.phase, Phase::Failed);
    let why = s.error.unwrap_or_default();
    assert!(why.contains("outside the window: revisions"), "{why}");
    assert!(clusters(&kit, &ns).get_opt("too-far").await.expect("get").is_none(), "nothing created");
    // From the replica that leads now (the Lease may have moved meanwhile).
    wait_for("the lag metric", WAIT, || async {
        let metrics = operator_metrics(&kit).await;
        metrics.lines().any(|l| l.starts_with("etcdpilot_stream_lag_seconds{") && l.contains(&ns)).then_some(())
    })
    .await;
    kit.delete_namespace(&ns).await;
}

/// The stream across an operator replica killed (the Lease handed over), a member replaced
/// (pod and volume gone) and the leader moved, under steady writes: afterwards the
/// segments cover every revision after the base exactly once, and each key's last write
/// is in the segment revision etcd names as its mod_revision.
#[tokio::test]
async fn the_stream_covers_every_revision_once_across_a_handover_a_replaced_member_and_a_leader_move() {
    let (kit, ns) = setup("stream-faults").await;
    let base = streaming_source(&kit, &ns, false).await;
    let writer = Writer::start_refreshing(&kit, &ns, "src").await;
    writer.wait_acked(20).await;
    let mut c = etcd(&kit, &ns, "src").await;

    // 1. The leading operator replica killed without a grace period: the standby takes
    // the Lease and the stream goes on from the index.
    let ops: Api<Pod> = Api::namespaced(kit.client.clone(), OPERATOR_NS);
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kit.client.clone(), OPERATOR_NS);
    let holder =
        |l: k8s_openapi::api::coordination::v1::Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let killed = holder(leases.get(LEASE).await.expect("leader-election Lease"));
    let at_kill = revision(&mut c).await;
    ops.delete(&killed, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("kill the leading replica");
    wait_for("the Lease handed over", WAIT, || async {
        let now = holder(leases.get(LEASE).await.ok()?);
        (!now.is_empty() && now != killed).then_some(())
    })
    .await;
    let after_kill = revision(&mut c).await;
    wait_continuous(&kit, &ns, "the stream past the handover", |s| (s.last_revision? > after_kill).then_some(())).await;
    assert!(after_kill > at_kill, "writes went on meanwhile");

    // 2. A member replaced: its pod and volume gone.
    let members = c.member_list().await.expect("members");
    let leader = c.status().await.expect("status").leader();
    let victim = members.members().iter().find(|m| m.id() != leader).expect("a follower").name().to_string();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    pvcs.delete(&format!("data-{victim}"), &DeleteParams::default()).await.expect("delete the volume");
    pods.delete(&victim, &DeleteParams::default()).await.expect("delete the pod");
    wait_for(&format!("{victim} replaced"), WAIT, || async {
        let ec = clusters(&kit, &ns).get("src").await.ok()?;
        let st = ec.status?;
        let names: Vec<&str> = st.members.iter().filter(|m| !m.id.is_empty()).map(|m| m.name.as_str()).collect();
        (st.ready_members == 3 && !names.contains(&victim.as_str())).then_some(())
    })
    .await;

    // 3. The leader moved.
    let mut c = etcd(&kit, &ns, "src").await;
    let members = c.member_list().await.expect("members");
    let leader = c.status().await.expect("status").leader();
    let to = members.members().iter().find(|m| m.id() != leader && !m.is_learner()).expect("a voter").id();
    let name = members.members().iter().find(|m| m.id() == leader).map(|m| m.name().to_string()).unwrap_or_default();
    member_etcd(&kit, &ns, "src", &name).await.move_leader(to).await.expect("move leader");
    let acked = writer.acked();
    writer.wait_acked(acked + 20).await;
    writer.finish(&kit, &ns, "src").await;
    let last = revision(&mut c).await;
    wait_continuous(&kit, &ns, "the last write durable", |s| (s.last_revision? >= last).then_some(())).await;

    let segments = covered(&kit, &ns, base);
    assert!(segments.last().is_some_and(|s| s.last >= last));
    let by_revision: HashMap<i64, &etcd_pilot::shared::segment::Revision> =
        segments.iter().flat_map(|s| s.revisions.iter().map(|r| (r.revision, r))).collect();
    let now = c.get("w/", Some(GetOptions::new().with_prefix())).await.expect("get");
    assert!(now.kvs().len() > 40, "{} writes", now.kvs().len());
    for kv in now.kvs().iter().filter(|kv| kv.mod_revision() > base) {
        let r = by_revision.get(&kv.mod_revision()).expect("the key's revision is in a segment");
        assert!(
            r.changes.iter().any(|ch| ch.key == kv.key() && ch.value == kv.value() && !ch.delete),
            "revision {} holds the write of {:?}",
            kv.mod_revision(),
            kv.key_str()
        );
    }
    kit.delete_namespace(&ns).await;
}

/// A stream stopped (the schedule suspended) while etcd compacts past it: turned on again,
/// it finds its next revision compacted, a new base is taken at once, and the gap is
/// named in status, in an Event and in a metric; a restore into the gap is refused.
#[tokio::test]
async fn a_compaction_past_a_stopped_stream_is_a_gap_and_a_new_base() {
    let (kit, ns) = setup("stream-gap").await;
    let base = streaming_source(&kit, &ns, false).await;
    let mut c = etcd(&kit, &ns, "src").await;
    for i in 0..20 {
        c.put(format!("/registry/pods/default/p{i}"), "a", None).await.expect("put");
    }
    let streamed = revision(&mut c).await;
    wait_continuous(&kit, &ns, "the writes durable", |s| (s.last_revision? >= streamed).then_some(())).await;
    patch(&kit, &ns, json!({"suspend": true})).await;
    wait_continuous(&kit, &ns, "the stream suspended", |s| (s.state.as_deref() == Some("Suspended")).then_some(()))
        .await;
    for i in 0..20 {
        c.put(format!("/registry/pods/default/p{i}"), "b", None).await.expect("put");
    }
    let compacted = revision(&mut c).await;
    c.compact(compacted, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("compact");
    patch(&kit, &ns, json!({"suspend": false})).await;
    let gap = wait_continuous(&kit, &ns, "a gap and a new base", |s| {
        (s.state.as_deref() == Some("Streaming")).then_some(s.gaps.first()?.clone())
    })
    .await;
    assert_eq!(gap.from_revision, streamed + 1, "{gap:?}");
    assert!(gap.to_revision >= compacted, "the new base is past the compaction: {gap:?}");
    wait_event(&kit, &ns, "every-6h", |e| e.starts_with("Warning StreamGap")).await;
    wait_for("the gap counted", WAIT, || async {
        let metrics = operator_metrics(&kit).await;
        let counted = |l: &str| l.starts_with("etcdpilot_stream_gaps_total{") && l.contains(&ns) && l.ends_with(" 1");
        metrics.lines().any(counted).then_some(())
    })
    .await;
    // A point in the gap: refused, the gap named.
    let _: EtcdRestore = kit.create(&ns, restore_to("in-gap", json!({"revision": streamed + 5}))).await;
    let s = wait_restore(&kit, &ns, "in-gap").await.status.expect("status");
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.error.as_deref().unwrap_or_default().contains("falls in a gap"), "{s:?}");
    assert!(base < streamed);
    kit.delete_namespace(&ns).await;
}

async fn patch(kit: &Kit, ns: &str, spec: serde_json::Value) {
    let api: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), ns);
    api.patch("every-6h", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(json!({"spec": spec})))
        .await
        .expect("patch the schedule");
}
