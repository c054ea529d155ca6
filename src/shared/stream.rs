//! One cluster's change stream into a store (issue 23): a watch over the whole key
//! space from the revision after what is durable, cut into segments of whole revisions
//! ([`segment`]), each written before the index that names it ([`window::Index`]): the
//! index is the commit point, so a stream stopped anywhere (an operator restart, a
//! Lease handover, a member or leader change, a store that failed) resumes from the
//! index's last durable revision + 1 and writes no revision twice or leaves one out.
//!
//! What is pure (grouping a watch response into revisions, the flush rule, where to
//! resume) is in [`revisions`], [`segment`] and [`window`]; this module only moves bytes.

use std::collections::HashMap;

use bytes::Bytes;
use etcd_client::{Client, EventType, WatchOptions};
use futures::StreamExt;

use super::segment::{self, Builder, Change, FlushRule, Lease, Revision, Segment};
use super::window::{self, Base, Gap, Index, Resume, SegmentRef};
use crate::backup_store::{BackupStore, StoreError};

/// The index object under a stream's prefix.
pub fn index_key(prefix: &str) -> String {
    format!("{prefix}index.json")
}

/// A segment's object: its revisions in the name, zero-padded so that keys sort by
/// revision.
pub fn segment_key(prefix: &str, first: i64, last: i64) -> String {
    format!("{prefix}segments/{first:020}-{last:020}.seg")
}

/// Why a stream stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no base backup in the index: the stream starts after one")]
    NeedBase,
    #[error("read the index s3://{bucket}/{key}: {source}")]
    ReadIndex {
        bucket: String,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("the index s3://{bucket}/{key} is not valid: {detail}")]
    BadIndex { bucket: String, key: String, detail: String },
    #[error("write {what} s3://{bucket}/{key}: {source}")]
    Write {
        what: &'static str,
        bucket: String,
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("watch from revision {from}: {source}")]
    Watch {
        from: i64,
        #[source]
        source: etcd_client::Error,
    },
    #[error("read the lease table: {0}")]
    Leases(#[source] etcd_client::Error),
    #[error("the watch broke the stream's order: {0}")]
    Order(#[from] segment::Refused),
}

/// How a stream that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Asked to stop: everything received was made durable first.
    Shutdown,
    /// The revision the stream needed is compacted: a gap from `needed` until a new
    /// base, which the caller takes.
    Compacted { needed: i64, compacted: i64 },
    /// The watch ended (the member closed it): the caller starts again from the index.
    Ended,
}

/// What a running stream shares with whoever runs it: the bases it may take into its
/// index (the schedule's successful full backups), a compaction it could not get past,
/// and how far it is, read by the controller for status and metrics.
#[derive(Default)]
pub struct Feed {
    /// The schedule's successful full backups, as last observed.
    pub bases: Option<tokio::sync::watch::Receiver<Vec<Base>>>,
    /// Where the stream stands.
    pub progress: std::sync::Arc<std::sync::Mutex<Progress>>,
    /// The lease table of the last flush.
    pub leases: Vec<Lease>,
}

/// Where a stream stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The index as last written.
    pub index: Index,
    /// When everything received had last been made durable (Unix ms): the lag is the
    /// time since.
    pub caught_up_ms: Option<i64>,
    /// A compaction the stream could not get past: the revision it needed and when the
    /// revision before it was received; cleared once a new base joined.
    pub gap: Option<(i64, i64)>,
    /// Gaps recorded by this stream (for Events and metrics), taken by the reader.
    pub new_gaps: Vec<Gap>,
    /// What it is doing and why.
    pub state: &'static str,
    pub message: String,
    /// The copies of the stream (`copyTo`), in order.
    pub copies: Vec<CopyProgress>,
}

/// Where one copy of the stream stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyProgress {
    pub bucket: String,
    /// The last revision the copy's index reaches.
    pub last_revision: Option<i64>,
    /// Why the last attempt to bring it up to date failed.
    pub error: Option<String>,
}

impl Feed {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the candidates' bases into `index` (see [`window::admit`]); the segment
    /// objects retention let go. Records a gap it closed.
    pub fn admit(&self, index: &mut Index) -> Vec<String> {
        let candidates = match &self.bases {
            Some(rx) => rx.borrow().clone(),
            None => return Vec::new(),
        };
        let gap = self.progress().gap;
        let (next, dropped, closed) = window::admit(index, &candidates, gap);
        *index = next;
        if let Some(g) = closed {
            let mut p = self.progress();
            p.gap = None;
            p.new_gaps.push(g);
        }
        dropped
    }

    /// Whether the bases changed since they were last read.
    fn bases_changed(&self) -> bool {
        self.bases.as_ref().is_some_and(|rx| rx.has_changed().unwrap_or(false))
    }

    fn mark_bases_seen(&mut self) {
        if let Some(rx) = self.bases.as_mut() {
            rx.borrow_and_update();
        }
    }

    fn written(&self, index: &Index, caught_up: bool) {
        let mut p = self.progress();
        p.index = index.clone();
        if caught_up {
            p.caught_up_ms = Some(now_ms());
        }
    }
}

/// Writes the index (after taking in the bases) and then deletes the segments it let go.
pub async fn commit(store: &BackupStore, prefix: &str, index: &mut Index, feed: &mut Feed) -> Result<(), StreamError> {
    feed.mark_bases_seen();
    let dropped = feed.admit(index);
    write_index(store, prefix, index).await?;
    for key in dropped {
        // A leftover is harmless (no index names it) and swept by the next retention.
        if let Err(e) = store.delete(&key).await {
            tracing::warn!(key, error = %e, "could not delete a segment retention let go");
        }
    }
    Ok(())
}

/// Reads the index under `prefix`; none yet is an empty index.
pub async fn read_index(store: &BackupStore, prefix: &str) -> Result<Index, StreamError> {
    let key = index_key(prefix);
    let read_err = |source| StreamError::ReadIndex { bucket: store.bucket().to_string(), key: key.clone(), source };
    let mut download = match store.download(&key).await {
        Ok(d) => d,
        Err(StoreError::NoSuchKey { .. }) => return Ok(Index::default()),
        Err(e) => return Err(read_err(e)),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = download.stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(read_err)?);
    }
    serde_json::from_slice(&bytes).map_err(|e| StreamError::BadIndex {
        bucket: store.bucket().to_string(),
        key: key.clone(),
        detail: e.to_string(),
    })
}

/// Writes the index under `prefix` (after the segments it names).
pub async fn write_index(store: &BackupStore, prefix: &str, index: &Index) -> Result<(), StreamError> {
    let key = index_key(prefix);
    let bytes = serde_json::to_vec(index).unwrap_or_default();
    put(store, &key, "the index", bytes).await.map(|_| ())
}

async fn put(store: &BackupStore, key: &str, what: &'static str, bytes: Vec<u8>) -> Result<String, StreamError> {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
    store.upload(key, body, HashMap::new()).await.map(|u| u.sha256).map_err(|source| StreamError::Write {
        what,
        bucket: store.bucket().to_string(),
        key: key.to_string(),
        source,
    })
}

/// The whole revisions of one watch response, in order, received at `received_ms`. etcd
/// sends all of a revision's events in one response (a watch never splits a revision
/// unless fragmentation is asked for, which the stream does not), so grouping by
/// `mod_revision` within a response is exact.
pub fn revisions(events: &[etcd_client::Event], received_ms: i64) -> Vec<Revision> {
    let mut out: Vec<Revision> = Vec::new();
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let delete = event.event_type() == EventType::Delete;
        let change = Change {
            key: kv.key().to_vec(),
            value: if delete { Vec::new() } else { kv.value().to_vec() },
            delete,
            create_revision: kv.create_revision(),
            version: kv.version(),
            lease: kv.lease(),
        };
        match out.last_mut() {
            Some(r) if r.revision == kv.mod_revision() => r.changes.push(change),
            _ => out.push(Revision { revision: kv.mod_revision(), received_ms, changes: vec![change] }),
        }
    }
    out
}

/// The lease table now: every lease with its granted and remaining TTL (a lease that
/// expired between the list and its own question is left out).
pub async fn lease_table(client: &mut Client) -> Result<Vec<Lease>, StreamError> {
    let ids: Vec<i64> = client.leases().await.map_err(StreamError::Leases)?.leases().iter().map(|l| l.id()).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let ttl = client.lease_time_to_live(id, None).await.map_err(StreamError::Leases)?;
        // etcd answers -1 for a lease that is gone.
        if ttl.ttl() >= 0 {
            out.push(Lease { id, granted_ttl: ttl.granted_ttl(), remaining_ttl: ttl.ttl() });
        }
    }
    out.sort_by_key(|l| l.id);
    Ok(out)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Writes the open segment out (segment first, then the index that names it); the index
/// alone when only the bases changed; nothing when neither.
async fn flush(
    client: &mut Client,
    store: &BackupStore,
    prefix: &str,
    index: &mut Index,
    open: &mut Builder,
    feed: &mut Feed,
) -> Result<Option<SegmentRef>, StreamError> {
    if open.is_empty() {
        if feed.bases_changed() {
            commit(store, prefix, index, feed).await?;
        }
        feed.written(index, true);
        return Ok(None);
    }
    // The lease table as of now; from the last flush when the cluster cannot say (a
    // cluster that is going away): its revisions are written all the same.
    let leases = match tokio::time::timeout(LEASE_TABLE_WAIT, lease_table(client)).await {
        Ok(Ok(leases)) => {
            feed.leases.clone_from(&leases);
            leases
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "segment written with the lease table of the flush before");
            feed.leases.clone()
        }
        Err(_) => {
            tracing::warn!("the lease table did not come in time: segment written with the one of the flush before");
            feed.leases.clone()
        }
    };
    let Some(segment) = open.cut(leases) else { return Ok(None) };
    let reference = write_segment(store, prefix, &segment).await?;
    index.segments.push(reference.clone());
    commit(store, prefix, index, feed).await?;
    feed.written(index, true);
    Ok(Some(reference))
}

/// Writes one segment; its reference for the index.
pub async fn write_segment(store: &BackupStore, prefix: &str, segment: &Segment) -> Result<SegmentRef, StreamError> {
    let key = segment_key(prefix, segment.first, segment.last);
    let first_ms = segment.revisions.first().map_or(0, |r| r.received_ms);
    let last_ms = segment.revisions.last().map_or(0, |r| r.received_ms);
    let sha256 = put(store, &key, "a segment", segment::encode(segment)).await?;
    Ok(SegmentRef { key, first: segment.first, last: segment.last, first_ms, last_ms, sha256 })
}

/// Resolves once `shutdown` is true; never when its sender is gone without saying so.
async fn asked_to_stop(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How long a flush waits for the lease table before it writes the segment with the one
/// it had.
const LEASE_TABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How often the open segment is checked against the flush rule.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Streams `client`'s changes into `store` under `prefix` from where `index` says, until
/// `shutdown` turns true, the watch ends, or the revision it needs is compacted. Every
/// segment written is in `index` (and in the stored index) when this returns, also with
/// an error: a caller starts again from it.
pub async fn run(
    client: &mut Client,
    store: &BackupStore,
    prefix: &str,
    index: &mut Index,
    rule: FlushRule,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    feed: &mut Feed,
) -> Result<Stop, StreamError> {
    let from = match index.resume() {
        Resume::From(r) => r,
        Resume::NeedBase => return Err(StreamError::NeedBase),
    };
    let mut open = Builder::new(from);
    let options = WatchOptions::new().with_all_keys().with_start_revision(from).with_progress_notify();
    let mut watch = client.watch("", Some(options)).await.map_err(|source| StreamError::Watch { from, source })?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = watch.message() => {
                let response = match message {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        flush(client, store, prefix, index, &mut open, feed).await?;
                        return Ok(Stop::Ended);
                    }
                    Err(source) => {
                        flush(client, store, prefix, index, &mut open, feed).await?;
                        return Err(StreamError::Watch { from: open.next(), source });
                    }
                };
                if response.canceled() {
                    flush(client, store, prefix, index, &mut open, feed).await?;
                    return Ok(if response.compact_revision() > 0 {
                        Stop::Compacted { needed: open.next(), compacted: response.compact_revision() }
                    } else {
                        Stop::Ended
                    });
                }
                for revision in revisions(response.events(), now_ms()) {
                    open.push(revision)?;
                }
                // A progress notification with nothing open: everything up to now is durable.
                if open.is_empty() {
                    feed.written(index, true);
                }
                if open.due(rule, now_ms()) {
                    flush(client, store, prefix, index, &mut open, feed).await?;
                }
            }
            _ = tick.tick() => {
                if open.due(rule, now_ms()) || (open.is_empty() && feed.bases_changed()) {
                    flush(client, store, prefix, index, &mut open, feed).await?;
                } else if open.is_empty() {
                    // Nothing received is waiting: the store is as current as the watch.
                    feed.written(index, true);
                }
            }
            _ = asked_to_stop(&mut shutdown) => {
                flush(client, store, prefix, index, &mut open, feed).await?;
                return Ok(Stop::Shutdown);
            }
        }
    }
}
