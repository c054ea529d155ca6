//! Traffic under which e2e tests run: a writer that records every write etcd
//! acknowledged, and a watcher that records every event it saw, so a test can assert
//! that an operation lost no acknowledged write and split no revision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::fixtures::*;
use crate::kit::Kit;

/// Writes `w/<n>` keys until stopped, recording every write etcd acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Writes acknowledged so far.
    progress: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(Vec<String>, usize)>,
}

impl Writer {
    pub async fn start(kit: &Kit, ns: &str, name: &str) -> Writer {
        Self::start_with(kit, ns, name, false).await
    }

    /// A writer that, after a failed write, connects again with the client Secret of the
    /// moment: a client that follows a CA rotation.
    pub async fn start_refreshing(kit: &Kit, ns: &str, name: &str) -> Writer {
        Self::start_with(kit, ns, name, true).await
    }

    async fn start_with(kit: &Kit, ns: &str, name: &str, refresh: bool) -> Writer {
        let mut client = etcd(kit, ns, name).await;
        let (kube, ns_, name_) = (kit.client.clone(), ns.to_string(), name.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = progress.clone();
        let task = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let key = format!("w/{i:08}");
                match client.put(key.clone(), format!("v{i}"), None).await {
                    Ok(_) => {
                        acked.push(key);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if refresh && let Some(c) = connect_once(&kube, &ns_, &name_).await {
                            client = c;
                        }
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failed)
        });
        Writer { stop, progress, task }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until `n` writes were acknowledged (the writer is under way).
    pub async fn wait_acked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.progress.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the writer got fewer than {n} writes acknowledged in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops and checks that every acknowledged write is there.
    pub async fn finish(self, kit: &Kit, ns: &str, name: &str) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let (acked, failed) = self.task.await.expect("writer");
        let mut client = etcd(kit, ns, name).await;
        let got = client
            .get("w/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
            .await
            .expect("read back");
        let have: BTreeSet<String> =
            got.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
        let lost: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(acked.len() > 50, "the writer made progress: {} acknowledged, {failed} failed", acked.len());
        (acked.len(), failed)
    }
}

/// What a watcher saw of the membership while a change ran.
#[derive(Debug, Default)]
pub struct Seen {
    pub max_learners: usize,
    /// Members removed while they were the last known leader.
    pub removed_leaders: Vec<String>,
    /// Member pods that began terminating while their member led.
    pub restarted_leaders: Vec<String>,
    /// Member pod names in the order they began terminating.
    pub terminated: Vec<String>,
    pub removed: Vec<String>,
}

/// Polls etcd and the member pods every 100 ms until stopped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub async fn start(kit: &Kit, ns: &str, name: &str) -> Watcher {
        Self::start_with(kit, ns, name, false).await
    }

    /// A watcher that connects again with the client Secret of the moment when etcd does
    /// not answer it (see [`Writer::start_refreshing`]).
    pub async fn start_refreshing(kit: &Kit, ns: &str, name: &str) -> Watcher {
        Self::start_with(kit, ns, name, true).await
    }

    async fn start_with(kit: &Kit, ns: &str, name: &str, refresh: bool) -> Watcher {
        let mut client = etcd(kit, ns, name).await;
        let (kube, ns_, name_) = (kit.client.clone(), ns.to_string(), name.to_string());
        let pods_api: Api<Pod> = Api::namespaced(kit.client.clone(), ns);
        let lp = ListParams::default()
            .labels(&format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=member"));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (flag, out) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut members: BTreeMap<u64, String> = BTreeMap::new();
            let mut leader: Option<u64> = None;
            let mut terminating: BTreeSet<String> = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                let listed = client.member_list().await;
                if listed.is_err()
                    && refresh
                    && let Some(c) = connect_once(&kube, &ns_, &name_).await
                {
                    client = c;
                }
                if let Ok(list) = listed {
                    let now: BTreeMap<u64, String> = list
                        .members()
                        .iter()
                        .map(|m| {
                            let name = m
                                .peer_urls()
                                .first()
                                .and_then(|u| u.split("//").nth(1))
                                .and_then(|h| h.split('.').next());
                            (m.id(), name.unwrap_or_default().to_string())
                        })
                        .collect();
                    let learners = list.members().iter().filter(|m| m.is_learner()).count();
                    let mut s = out.lock().unwrap();
                    s.max_learners = s.max_learners.max(learners);
                    for (id, n) in &members {
                        if !now.contains_key(id) {
                            s.removed.push(n.clone());
                            if leader == Some(*id) {
                                s.removed_leaders.push(n.clone());
                            }
                        }
                    }
                    members = now;
                }
                if let Ok(st) = client.status().await
                    && st.leader() != 0
                {
                    leader = Some(st.leader());
                }
                if let Ok(pods) = pods_api.list(&lp).await {
                    for p in pods.items.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
                        let pn = p.name_any();
                        if terminating.insert(pn.clone()) {
                            let mut s = out.lock().unwrap();
                            s.terminated.push(pn.clone());
                            if leader.and_then(|l| members.get(&l)) == Some(&pn) {
                                s.restarted_leaders.push(pn);
                            }
                        }
                    }
                    let present: BTreeSet<String> = pods
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_some())
                        .map(|p| p.name_any())
                        .collect();
                    terminating.retain(|t| present.contains(t));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Watcher { stop, seen, task }
    }

    pub async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// A ready 3-member cluster `main` on 3.4.23, a writer on it and a watcher of it.
pub async fn three_members_under_writes(prefix: &str) -> (Kit, String, Writer, Watcher) {
    let (kit, ns) = setup(prefix).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    let watcher = Watcher::start(&kit, &ns, "main").await;
    writer.wait_acked(20).await;
    (kit, ns, writer, watcher)
}
