//! One schedule's stream, as a task of the leader replica: the store opened, the index
//! read, bases taken in, the cluster's etcd watched from the last durable revision + 1
//! ([`stream::run`]), and after any stop (the watch ended or failed, the store failed, a
//! member or leader changed) the same again from the index. A compaction it cannot get
//! past is reported and waited out until a new base joins.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use tokio::sync::watch;

use crate::api::{EtcdCluster, S3Target};
use crate::etcd::EtcdAdmin;
use crate::runtime::Runtime;
use crate::runtime::s3;
use crate::shared::segment::FlushRule;
use crate::shared::stream::{self, Feed, Stop, StreamError};

/// A segment past this many bytes of keys and values is written at once.
pub const MAX_SEGMENT_BYTES: usize = 1 << 20;

/// What one stream is started with.
#[derive(Clone, Debug)]
pub struct Spec {
    pub namespace: String,
    pub schedule: String,
    pub cluster: String,
    pub target: S3Target,
    pub flush_ms: i64,
    /// Further targets the segments and index are copied to (the mirror).
    pub copies: Vec<S3Target>,
}

#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error("open the store: {0}")]
    Store(String),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("read the EtcdCluster: {0}")]
    Cluster(String),
    #[error("reach etcd: {0}")]
    Etcd(String),
}

fn set(feed: &Feed, state: &'static str, message: String) {
    let mut p = feed.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    p.state = state;
    p.message = message;
}

/// Waits until the bases change, `stop` turns true, or `most` passed.
async fn wait(feed: &mut Feed, stop: &mut watch::Receiver<bool>, most: Duration) {
    let bases = async {
        match feed.bases.as_mut() {
            Some(rx) => {
                // Only a change after this moment ends the wait (one seen already would
                // end it at once, over and over).
                rx.borrow_and_update();
                let _ = rx.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = bases => {}
        _ = stop.wait_for(|s| *s) => {}
        _ = tokio::time::sleep(most) => {}
    }
}

/// Runs until `stop` turns true (what is open is made durable first, and copied).
pub async fn run(rt: Arc<Runtime>, spec: Spec, feed: Feed, stop: watch::Receiver<bool>) {
    let copies = super::mirror::Spec {
        namespace: spec.namespace.clone(),
        cluster: spec.cluster.clone(),
        schedule: spec.schedule.clone(),
        target: spec.target.clone(),
        copies: spec.copies.clone(),
        flush_ms: spec.flush_ms,
    };
    let mirror = super::mirror::Mirror::new(rt.clone(), copies, feed.progress.clone());
    let mirroring = tokio::spawn(mirror.run(stop.clone()));
    stream(&rt, &spec, feed, stop).await;
    if let Ok(mut mirror) = mirroring.await {
        // The last segment, made durable after the stop, copied too.
        mirror.sync().await;
    }
}

async fn stream(rt: &Runtime, spec: &Spec, mut feed: Feed, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match once(rt, spec, &mut feed, &mut stop).await {
            Ok(Stop::Shutdown) => return,
            Ok(Stop::Ended) => {}
            Ok(Stop::Compacted { needed, compacted }) => {
                {
                    let mut p = feed.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let since = match (p.index.segments.last(), p.index.bases.last()) {
                        (Some(s), Some(b)) if s.last < b.revision => b.time_ms,
                        (Some(s), _) => s.last_ms,
                        (None, b) => b.map_or(0, |b| b.time_ms),
                    };
                    p.gap = Some((needed, since));
                }
                set(
                    &feed,
                    "Gap",
                    format!(
                        "etcd compacted up to revision {compacted} before the stream read revision {needed}: taking a new base"
                    ),
                );
                wait(&mut feed, &mut stop, Duration::from_secs(5)).await;
            }
            Err(e) => {
                tracing::info!(schedule = %spec.schedule, namespace = %spec.namespace, error = %e, "stream stopped; resuming from the index");
                set(&feed, "Retrying", e.to_string());
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    }
}

async fn once(rt: &Runtime, spec: &Spec, feed: &mut Feed, stop: &mut watch::Receiver<bool>) -> Result<Stop, TaskError> {
    let store =
        s3::open(&rt.client, &spec.namespace, &spec.target).await.map_err(|e| TaskError::Store(e.to_string()))?;
    let prefix = store.stream_prefix(&spec.namespace, &spec.cluster, &spec.schedule);
    let mut index = stream::read_index(&store, &prefix).await?;
    let before = index.clone();
    let dropped = feed.admit(&mut index);
    if index != before || !dropped.is_empty() {
        stream::write_index(&store, &prefix, &index).await?;
        for key in dropped {
            let _ = store.delete(&key).await;
        }
    }
    {
        let mut p = feed.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.index = index.clone();
    }
    let waiting_gap = feed.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).gap;
    if let Some((needed, _)) = waiting_gap {
        set(feed, "Gap", format!("revision {needed} was compacted before the stream read it: waiting for a new base"));
        wait(feed, stop, Duration::from_secs(5)).await;
        return Ok(Stop::Ended);
    }
    if index.bases.is_empty() {
        set(feed, "WaitingForBase", "the stream starts after its first full backup".into());
        wait(feed, stop, Duration::from_secs(5)).await;
        return Ok(Stop::Ended);
    }
    let clusters: Api<EtcdCluster> = Api::namespaced(rt.client.clone(), &spec.namespace);
    let ec = clusters
        .get_opt(&spec.cluster)
        .await
        .map_err(|e| TaskError::Cluster(e.to_string()))?
        .ok_or_else(|| TaskError::Cluster(format!("EtcdCluster {} does not exist", spec.cluster)))?;
    let endpoints: Vec<String> = ec
        .status
        .as_ref()
        .map(|s| {
            s.members
                .iter()
                .filter(|m| !m.learner && !m.id.is_empty())
                .filter_map(|m| m.client_urls.first().cloned())
                .collect()
        })
        .unwrap_or_default();
    let config =
        crate::shared::secrets::etcd_config(&rt.client, &ec, None).await.map_err(|e| TaskError::Etcd(e.to_string()))?;
    let mut client = EtcdAdmin::new(endpoints, config).dedicated().await.map_err(|e| TaskError::Etcd(e.to_string()))?;
    set(feed, "Streaming", String::new());
    let rule = FlushRule { max_age_ms: spec.flush_ms, max_bytes: MAX_SEGMENT_BYTES };
    Ok(stream::run(&mut client, &store, &prefix, &mut index, rule, stop.clone(), feed).await?)
}
