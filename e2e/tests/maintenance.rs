//! Maintenance on the testbed, with the operator installed from the chart: threshold
//! defragmentation (the leader last, no acknowledged write lost), NOSPACE recovered
//! without anyone acting, scheduled compaction, and nothing at all on a paused cluster.
//! What etcd-pilot did is read from its Events and status and from etcd itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions};
use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::traffic::*;
use serde_json::json;

const MIB: i64 = 1024 * 1024;

/// A value of `len` bytes that differs per `seed` (etcd stores it as is).
fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `n` keys of `len` bytes under `prefix`, deletes them and compacts all history:
/// the db file keeps its size while little of it is in use.
async fn fragment(c: &mut Client, prefix: &str, n: u64, len: usize) {
    for i in 0..n {
        c.put(format!("{prefix}{i:06}"), value(i, len), None).await.expect("put");
    }
    c.delete(prefix, Some(DeleteOptions::new().with_prefix())).await.expect("delete");
    let rev = c.get("nothing", None).await.expect("get").header().expect("header").revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    // bbolt returns freed pages to its freelist at a later commit: a few writes, a
    // batch interval (100 ms) apart, and the free space shows as not in use.
    for i in 0..5 {
        c.put("settle", format!("{i}"), None).await.expect("put");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until the cluster's status satisfies `pred`.
async fn wait_status(
    kit: &etcd_pilot_e2e::kit::Kit,
    ns: &str,
    name: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&EtcdCluster) -> bool,
) -> EtcdCluster {
    let deadline = Instant::now() + within;
    loop {
        let ec = clusters(kit, ns).get(name).await.expect("get EtcdCluster");
        if pred(&ec) {
            return ec;
        }
        if Instant::now() > deadline {
            panic!(
                "{ns}/{name}: {what} not within {within:?}\nstatus: {:#?}\nevents:\n{}",
                ec.status,
                events(kit, ns, name).await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn defragmented(ec: &EtcdCluster) -> usize {
    ec.status.iter().flat_map(|s| &s.members).filter(|m| m.last_defragmentation.is_some()).count()
}

#[tokio::test]
async fn fragmented_members_are_defragmented_one_at_a_time_the_leader_last() {
    let (kit, ns) = setup("maint-defrag").await;
    let spec = json!({"defrag": {"fragmentationThresholdPercent": 40, "minDbSizeBytes": 4 * MIB}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    writer.wait_acked(20).await;
    let mut c = etcd(&kit, &ns, "main").await;
    fragment(&mut c, "frag/", 600, 32 * 1024).await;
    let done = wait_status(&kit, &ns, "main", Duration::from_secs(240), "every member defragmented", |ec| {
        defragmented(ec) == 3
    })
    .await;
    writer.finish(&kit, &ns, "main").await;

    // One at a time, in the order of the Events; none while it led (the leader it
    // reported, read from the member itself right before); the leader last, after
    // leadership was moved away from it.
    let ev = events(&kit, &ns, "main").await;
    let order: Vec<(String, String)> = ev
        .iter()
        .filter_map(|e| e.strip_prefix("Normal Defragmented: defragmented "))
        .map(|rest| {
            let member = rest.split(':').next().unwrap_or_default().to_string();
            let led_by = rest.rsplit("leader ").next().unwrap_or_default().to_string();
            (member, led_by)
        })
        .collect();
    assert_eq!(order.len(), 3, "three defragmentations: {ev:#?}");
    for (member, led_by) in &order {
        assert_ne!(member, led_by, "{member} was defragmented while it led: {ev:#?}");
    }
    // The leader when the round began (as the first member reported it) goes last.
    assert_eq!(order[2].0, order[0].1, "the leader of the start goes last: {order:?}");
    let moved = ev.iter().position(|e| e.contains("MovingLeader") && e.contains("is defragmented last"));
    let last = ev.iter().rposition(|e| e.starts_with("Normal Defragmented:"));
    assert!(moved.is_some() && moved < last, "leadership was moved before the last defragmentation: {ev:#?}");
    // Each member's db file shrank; the status says by how much and how long it was blocked.
    for m in done.status.iter().flat_map(|s| &s.members) {
        let d = m.last_defragmentation.as_ref().expect("record");
        assert!(d.db_size_after < d.db_size_before / 2, "{} shrank: {d:?}", m.name);
        assert!(d.blocked_millis > 0, "{d:?}");
    }
    // Times recorded one after another, a settle time apart.
    let mut times: Vec<jiff::Timestamp> = done
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter_map(|m| m.last_defragmentation.as_ref().map(|d| d.time.0))
        .collect();
    times.sort();
    assert!(times.windows(2).all(|w| w[1].duration_since(w[0]).as_secs() >= 4), "{times:?}");
    let metrics = operator_metrics(&kit).await;
    assert!(
        metrics
            .contains(&format!("etcdpilot_defrags_total{{namespace=\"{ns}\",cluster=\"main\",result=\"success\"}} 3")),
        "defragmentations counted"
    );
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn nospace_is_recovered_without_anyone_acting() {
    let (kit, ns) = setup("maint-nospace").await;
    let spec = json!({"etcd": {"quotaBackendBytes": 16 * MIB}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    // Overwrite 20 keys until etcd refuses: history, not data, fills the quota.
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut i = 0u64;
    // The write etcd refused: refused before it was proposed, or applied and then
    // answered NOSPACE (etcd's apply-time quota check applies the put, then raises the
    // alarm), so its key may hold either value.
    let (refused, refused_at) = loop {
        let key = format!("k/{:02}", i % 20);
        let v = value(i, 64 * 1024);
        match c.put(key.clone(), v.clone(), None).await {
            Ok(_) => {
                latest.insert(key, v);
            }
            Err(e) if e.to_string().contains("database space exceeded") => break ((key, v), Instant::now()),
            Err(e) => panic!("put {i}: {e}"),
        }
        i += 1;
        assert!(i < 5000, "etcd never raised NOSPACE");
    };
    // Reads are served while the alarm stands.
    let got = c.get("k/", Some(GetOptions::new().with_prefix())).await.expect("a read under NOSPACE");
    assert_eq!(got.kvs().len(), 20);
    // Writes come back by themselves.
    let deadline = Instant::now() + Duration::from_secs(240);
    let writable_after = loop {
        match c.put("after", "ok", None).await {
            Ok(_) => break refused_at.elapsed(),
            Err(e) if Instant::now() > deadline => {
                panic!("still refused: {e}\nevents:\n{}", events(&kit, &ns, "main").await.join("\n"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    println!("NOSPACE -> writable again without anyone acting: {writable_after:?}");
    assert!(
        c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None)
            .await
            .expect("alarms")
            .alarms()
            .is_empty()
    );
    // Every key's latest value is intact.
    for (k, v) in &latest {
        let got = c.get(k.as_str(), None).await.expect("get");
        let have = got.kvs()[0].value();
        let applied_when_refused = refused.0 == *k && have == refused.1.as_slice();
        assert!(
            have == v.as_slice() || applied_when_refused,
            "{k}: neither its last acknowledged value nor the refused one"
        );
    }
    // The status says what happened and how much space came back; every member was
    // defragmented after the compaction.
    let ec = wait_status(&kit, &ns, "main", Duration::from_secs(60), "a finished recovery", |ec| {
        ec.status.as_ref().and_then(|s| s.maintenance.as_ref()).is_some_and(|m| m.last_no_space_recovery.is_some())
    })
    .await;
    let r = ec.status.as_ref().and_then(|s| s.maintenance.clone()).and_then(|m| m.last_no_space_recovery).unwrap();
    let compacted = r.compacted.clone().expect("compacted").0;
    assert!(r.db_size_after.unwrap_or(i64::MAX) < r.db_size_before / 2, "{r:?}");
    for m in ec.status.iter().flat_map(|s| &s.members) {
        let d = m.last_defragmentation.as_ref().unwrap_or_else(|| panic!("{} defragmented", m.name));
        assert!(d.time.0 >= compacted, "{} defragmented after the compaction", m.name);
    }
    let ev = wait_event(&kit, &ns, "main", |e| e.starts_with("Normal NoSpaceRecovered: NOSPACE recovered in")).await;
    assert!(ev.iter().any(|e| e.contains("freed")), "{ev:#?}");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn scheduled_compaction_keeps_the_retained_window() {
    let (kit, ns) = setup("maint-compact").await;
    let spec = json!({"compaction": {"schedule": "* * * * *", "retainRevisions": 20}});
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", spec)).await;
    wait_ready(&kit, &ns, "main", 1).await;
    let mut c = etcd(&kit, &ns, "main").await;
    let mut last = 0;
    for i in 0..100 {
        last = c.put("c", format!("{i}"), None).await.expect("put").header().expect("header").revision();
    }
    // The next slot compacts to (current - 20): no write since, so to `last - 20`.
    let ec = wait_status(&kit, &ns, "main", Duration::from_secs(150), "a compaction after the writes", |ec| {
        ec.status
            .as_ref()
            .and_then(|s| s.maintenance.as_ref())
            .and_then(|m| m.last_compaction.as_ref())
            .is_some_and(|lc| lc.revision >= last - 20)
    })
    .await;
    let compacted = ec.status.and_then(|s| s.maintenance).and_then(|m| m.last_compaction).unwrap().revision;
    assert_eq!(compacted, last - 20, "the window kept is retainRevisions");
    let old = c.get("c", Some(GetOptions::new().with_revision(compacted - 5))).await;
    assert!(old.as_ref().is_err_and(|e| e.to_string().contains("compacted")), "older than the window: {old:?}");
    let inside = c.get("c", Some(GetOptions::new().with_revision(last - 10))).await.expect("inside the window");
    assert_eq!(inside.kvs()[0].value_str().unwrap(), "89");
    assert!(events(&kit, &ns, "main").await.iter().any(|e| e.contains("Compacted: compacted history below revision")));
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_paused_cluster_gets_no_maintenance() {
    let (kit, ns) = setup("maint-paused").await;
    // Two like clusters, fragmented alike; one paused. The other one's defragmentation
    // shows the operator had its chance.
    let spec = json!({"defrag": {"fragmentationThresholdPercent": 40, "minDbSizeBytes": 4 * MIB}});
    for name in ["paused", "twin"] {
        create_cluster(&kit, &ns, cluster_manifest(name, 1, "3.4.23", spec.clone())).await;
    }
    for name in ["paused", "twin"] {
        wait_ready(&kit, &ns, name, 1).await;
    }
    patch_spec(&kit, &ns, "paused", json!({"paused": true})).await;
    wait_status(&kit, &ns, "paused", Duration::from_secs(60), "Progressing: Paused", |ec| {
        condition(ec, "Progressing").is_some_and(|c| c.1 == "Paused")
    })
    .await;
    for name in ["paused", "twin"] {
        let mut c = etcd(&kit, &ns, name).await;
        fragment(&mut c, "frag/", 400, 32 * 1024).await;
    }
    wait_status(&kit, &ns, "twin", Duration::from_secs(180), "the twin defragmented", |ec| defragmented(ec) == 1).await;
    // The paused cluster's status shows it fragmented (the operator saw it), and passes
    // went by since.
    wait_status(&kit, &ns, "paused", Duration::from_secs(60), "fragmentation seen", |ec| {
        ec.status.iter().flat_map(|s| &s.members).all(|m| m.fragmentation_percent.is_some_and(|p| p >= 40))
    })
    .await;
    wait_passes(&kit, &ns, "paused", 2).await;
    let ec = clusters(&kit, &ns).get("paused").await.expect("paused");
    assert_eq!(defragmented(&ec), 0);
    let mut c = etcd(&kit, &ns, "paused").await;
    let s = c.status().await.expect("status");
    assert!(
        s.db_size() > 8 * MIB && (s.db_size() - s.raft_used_db_size()) * 100 / s.db_size() >= 40,
        "still fragmented"
    );
    let ev = events(&kit, &ns, "paused").await;
    assert!(!ev.iter().any(|e| e.contains("Defragment") || e.contains("Compacted")), "{ev:#?}");
    kit.delete_namespace(&ns).await;
}
