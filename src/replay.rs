//! A restore to a point: a schedule's base snapshot brought forward to a revision by
//! replaying its continuous backup's segments, in a scratch etcd of its own, before the
//! restored member is seeded from the result (by `etcd-pilot seed-member`).
//!
//! The base is restored without a bump into a scratch data dir and served by a local
//! etcd on 127.0.0.1 (nothing else can reach it). Each source revision after the base,
//! up to and including the target, is applied as one transaction, and etcd must answer
//! with exactly that revision: the base holds the source's state at its revision, so by
//! induction every key's value, `create_revision`, `mod_revision` and `version` equal
//! the source's at every revision replayed. Leases are granted, under their source ids,
//! before the first key that uses them, with the TTL they had left at the target (as the
//! segment's lease table says), and kept alive while the replay runs so that none expires
//! and moves the revision; leases that no longer exist at the target and hold no key are
//! revoked (which changes no revision). The scratch etcd's snapshot is the result: the
//! seed then restores it with the revision bumped and older revisions marked compacted,
//! as for any restore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, LeaseGrantOptions, PutOptions, Txn, TxnOp};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::backup_store::{BackupStore, StoreError};
use crate::shared::segment::{self, Lease, Segment};
use crate::shared::stream;
use crate::shared::window::{Index, SegmentRef};

/// What a seed replays: the segments of the stream under `prefix` after the base's
/// revision, up to and including `upto`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayTo {
    /// The stream's prefix in the bucket (its index and segments).
    pub prefix: String,
    pub base_revision: i64,
    pub upto: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("read s3://{bucket}/{key}: {source}")]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("the stream's index: {0}")]
    Index(#[source] Box<stream::StreamError>),
    #[error("segment {key}: its SHA-256 is {actual}, the index recorded {expected}")]
    Mismatch { key: String, expected: String, actual: String },
    #[error("segment {key}: {source}")]
    Invalid {
        key: String,
        #[source]
        source: segment::Invalid,
    },
    #[error("the segments do not reach revision {upto} from the base at {base}: {detail}")]
    Coverage { base: i64, upto: i64, detail: String },
    #[error("the scratch etcd: {0}")]
    Scratch(String),
    #[error("revision {revision}: {source}")]
    Apply {
        revision: i64,
        #[source]
        source: etcd_client::Error,
    },
    #[error(
        "revision {revision} of the source became revision {got} in the replay: the base or a segment does not match the source"
    )]
    Diverged { revision: i64, got: i64 },
    #[error("lease {id}: {source}")]
    Lease {
        id: i64,
        #[source]
        source: etcd_client::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub segments: usize,
    pub revisions: i64,
    pub leases: usize,
    /// The revision the scratch etcd holds at the end (the target).
    pub revision: i64,
}

/// The segments a replay from `base_revision` to `upto` reads, checked to cover every
/// revision in between exactly once.
pub fn segments_for(index: &Index, base_revision: i64, upto: i64) -> Result<Vec<SegmentRef>, ReplayError> {
    let mut out: Vec<SegmentRef> = Vec::new();
    let mut next = base_revision + 1;
    for s in index.segments.iter().filter(|s| s.last > base_revision && s.first <= upto) {
        if s.first > next {
            return Err(ReplayError::Coverage {
                base: base_revision,
                upto,
                detail: format!("revisions {next} to {} are in no segment", s.first - 1),
            });
        }
        next = s.last + 1;
        out.push(s.clone());
    }
    if upto >= next {
        return Err(ReplayError::Coverage {
            base: base_revision,
            upto,
            detail: format!("the segments end at revision {}", next - 1),
        });
    }
    Ok(out)
}

/// Reads one segment through its checks: the SHA-256 the index recorded, and whole,
/// consecutive revisions.
pub async fn read_segment(store: &BackupStore, s: &SegmentRef) -> Result<Segment, ReplayError> {
    let read =
        |source| ReplayError::Read { bucket: store.bucket().to_string(), key: s.key.clone(), source: Box::new(source) };
    let mut dl = store.download(&s.key).await.map_err(read)?;
    // The SHA-256 recorded with the stored bytes must be the index's; the download
    // checks the stored bytes against it as they end (and opens them when sealed).
    if dl.sha256 != s.sha256 {
        return Err(ReplayError::Mismatch { key: s.key.clone(), expected: s.sha256.clone(), actual: dl.sha256 });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = dl.stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(read)?);
    }
    segment::decode(&bytes).map_err(|source| ReplayError::Invalid { key: s.key.clone(), source })
}

/// The last revision received at or before `t_ms` (Unix ms) within `segments` (read in
/// order); the base's revision when none was.
pub fn revision_at(segments: &[Segment], base_revision: i64, t_ms: i64) -> i64 {
    let all = segments.iter().flat_map(|s| s.revisions.iter().map(|r| (r.revision, r.received_ms)));
    crate::shared::window::resolve_time(all.filter(|(r, _)| *r > base_revision), t_ms).unwrap_or(base_revision)
}

/// Leases kept alive while a replay runs: each sent a keep-alive a third of its TTL
/// after the last.
struct Keeper {
    client: Client,
    due: HashMap<i64, (i64, tokio::time::Instant)>,
    keepers: HashMap<i64, etcd_client::LeaseKeeper>,
}

impl Keeper {
    async fn add(&mut self, id: i64, ttl: i64) -> Result<(), ReplayError> {
        let (keeper, mut responses) =
            self.client.lease_keep_alive(id).await.map_err(|source| ReplayError::Lease { id, source })?;
        // Answers are not needed: drained so the stream never backs up.
        tokio::spawn(async move { while let Ok(Some(_)) = responses.message().await {} });
        self.keepers.insert(id, keeper);
        self.due.insert(id, (ttl, tokio::time::Instant::now()));
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), ReplayError> {
        let now = tokio::time::Instant::now();
        for (id, (ttl, last)) in self.due.iter_mut() {
            let every = Duration::from_millis(u64::try_from(*ttl).unwrap_or(1).max(1) * 1000 / 3);
            if now.duration_since(*last) >= every
                && let Some(k) = self.keepers.get_mut(id)
            {
                k.keep_alive().await.map_err(|source| ReplayError::Lease { id: *id, source })?;
                *last = now;
            }
        }
        Ok(())
    }
}

/// A replay under way onto what a client serves (the base at `base_revision`): segments
/// are applied one at a time, in order, so memory holds one segment.
pub struct Replayer {
    base_revision: i64,
    upto: i64,
    at_target: BTreeMap<i64, Lease>,
    keeper: Keeper,
    granted: HashSet<i64>,
    last_tick: tokio::time::Instant,
    pub done: Replayed,
}

impl Replayer {
    /// Starts a replay onto `client`: the base's leases are kept alive from now on (etcd
    /// gave each its whole TTL when it started). `leases` is the lease table at the target.
    pub async fn new(
        client: &mut Client,
        base_revision: i64,
        upto: i64,
        leases: &[Lease],
    ) -> Result<Self, ReplayError> {
        let mut keeper = Keeper { client: client.clone(), due: HashMap::new(), keepers: HashMap::new() };
        let existing = client.leases().await.map_err(|source| ReplayError::Lease { id: 0, source })?;
        let mut granted = HashSet::new();
        for l in existing.leases() {
            let ttl = client
                .lease_time_to_live(l.id(), None)
                .await
                .map_err(|source| ReplayError::Lease { id: l.id(), source })?;
            keeper.add(l.id(), ttl.granted_ttl().max(1)).await?;
            granted.insert(l.id());
        }
        Ok(Replayer {
            base_revision,
            upto,
            at_target: leases.iter().map(|l| (l.id, l.clone())).collect(),
            keeper,
            granted,
            last_tick: tokio::time::Instant::now(),
            done: Replayed::default(),
        })
    }

    /// Applies the revisions of `segment` after the base and up to the target, each as one
    /// transaction that must become exactly that revision.
    pub async fn apply(&mut self, client: &mut Client, segment: &Segment) -> Result<(), ReplayError> {
        self.done.segments += 1;
        let wanted = |r: &&segment::Revision| r.revision > self.base_revision && r.revision <= self.upto;
        for r in segment.revisions.iter().filter(wanted) {
            for c in r.changes.iter().filter(|c| !c.delete && c.lease != 0) {
                if self.granted.insert(c.lease) {
                    // The TTL left at the target; a lease gone by then gets a minute.
                    let ttl = self.at_target.get(&c.lease).map_or(60, |l| l.remaining_ttl.max(1));
                    client
                        .lease_grant(ttl, Some(LeaseGrantOptions::new().with_id(c.lease)))
                        .await
                        .map_err(|source| ReplayError::Lease { id: c.lease, source })?;
                    self.keeper.add(c.lease, ttl).await?;
                }
            }
            let ops: Vec<TxnOp> = r
                .changes
                .iter()
                .map(|c| {
                    if c.delete {
                        TxnOp::delete(c.key.clone(), None)
                    } else {
                        let options = (c.lease != 0).then(|| PutOptions::new().with_lease(c.lease));
                        TxnOp::put(c.key.clone(), c.value.clone(), options)
                    }
                })
                .collect();
            let answer = client
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|source| ReplayError::Apply { revision: r.revision, source })?;
            let got = answer.header().map_or(0, |h| h.revision());
            if got != r.revision {
                return Err(ReplayError::Diverged { revision: r.revision, got });
            }
            self.done.revisions += 1;
            if self.last_tick.elapsed() >= Duration::from_millis(250) {
                self.keeper.tick().await?;
                self.last_tick = tokio::time::Instant::now();
            }
        }
        Ok(())
    }

    /// The leases as at the target: those of its table no key used are granted too; those
    /// gone by then that hold no key are revoked (a revocation without keys makes no
    /// revision). Checks that the target revision was reached.
    pub async fn finish(mut self, client: &mut Client) -> Result<Replayed, ReplayError> {
        let missing: Vec<Lease> = self.at_target.values().filter(|l| !self.granted.contains(&l.id)).cloned().collect();
        for l in missing {
            client
                .lease_grant(l.remaining_ttl.max(1), Some(LeaseGrantOptions::new().with_id(l.id)))
                .await
                .map_err(|source| ReplayError::Lease { id: l.id, source })?;
            self.granted.insert(l.id);
        }
        for id in self.granted.iter().filter(|id| !self.at_target.contains_key(id)) {
            let held = client
                .lease_time_to_live(*id, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .map_err(|source| ReplayError::Lease { id: *id, source })?;
            if held.keys().is_empty() && held.ttl() >= 0 {
                client.lease_revoke(*id).await.map_err(|source| ReplayError::Lease { id: *id, source })?;
            }
        }
        self.done.leases = self.at_target.len();
        // Any read answers with the current revision in its header.
        let now = client.get("/", Some(etcd_client::GetOptions::new().with_keys_only().with_limit(1))).await;
        self.done.revision = now
            .map_err(|source| ReplayError::Apply { revision: self.upto, source })?
            .header()
            .map_or(0, |h| h.revision());
        if self.done.revision != self.upto {
            return Err(ReplayError::Diverged { revision: self.upto, got: self.done.revision });
        }
        Ok(self.done)
    }
}

/// A scratch etcd serving a data dir on 127.0.0.1, killed when dropped.
pub struct Scratch {
    child: tokio::process::Child,
    pub endpoint: String,
}

fn free_port() -> Result<u16, ReplayError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ReplayError::Scratch(format!("no free port: {e}")))
}

impl Scratch {
    /// Restores `snapshot` (no bump) into `dir` and starts `etcd` on it.
    pub async fn start(etcd: &Path, etcdutl: &Path, snapshot: &Path, dir: &Path) -> Result<Scratch, ReplayError> {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let peer = format!("http://127.0.0.1:{peer_port}");
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let data = dir.join("data");
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|source| ReplayError::Io { path: dir.display().to_string(), source })?;
        }
        let out = tokio::process::Command::new(etcdutl)
            .args([
                "snapshot".to_string(),
                "restore".into(),
                snapshot.display().to_string(),
                format!("--data-dir={}", data.display()),
                "--name=replay".into(),
                format!("--initial-cluster=replay={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
            ])
            .output()
            .await
            .map_err(|source| ReplayError::Io { path: etcdutl.display().to_string(), source })?;
        if !out.status.success() {
            return Err(ReplayError::Scratch(format!(
                "etcdutl snapshot restore: {}",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
            )));
        }
        let log = std::fs::File::create(dir.join("etcd.log"))
            .map_err(|source| ReplayError::Io { path: dir.display().to_string(), source })?;
        let child = tokio::process::Command::new(etcd)
            .args([
                "--name=replay".to_string(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={endpoint}"),
                format!("--advertise-client-urls={endpoint}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=replay={peer}"),
                // A source revision is one transaction, however many keys it changed.
                "--max-txn-ops=1000000".into(),
                "--max-request-bytes=67108864".into(),
                "--quota-backend-bytes=8589934592".into(),
                // Scratch data: what counts is the snapshot taken at the end.
                "--unsafe-no-fsync".into(),
                "--snapshot-count=1000000".into(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ReplayError::Io { path: etcd.display().to_string(), source })?;
        Ok(Scratch { child, endpoint })
    }

    /// A client once the scratch etcd answers (within a minute).
    pub async fn client(&mut self) -> Result<Client, ReplayError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ReplayError::Scratch(format!("etcd exited: {status}")));
            }
            let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
            if let Ok(mut c) = Client::connect([self.endpoint.as_str()], Some(options)).await
                && c.status().await.is_ok()
            {
                return Ok(c);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ReplayError::Scratch("etcd did not answer within a minute".into()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Writes a snapshot of what `client` serves to `path` (etcd's SHA-256 appended, as
/// `etcdutl snapshot restore` checks).
pub async fn snapshot_to_file(client: &mut Client, path: &Path) -> Result<u64, ReplayError> {
    use tokio::io::AsyncWriteExt;
    let io = |source| ReplayError::Io { path: path.display().to_string(), source };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = client.snapshot().await.map_err(|source| ReplayError::Apply { revision: 0, source })?;
    let mut size = 0u64;
    while let Some(part) = stream.message().await.map_err(|source| ReplayError::Apply { revision: 0, source })? {
        size += part.blob().len() as u64;
        file.write_all(part.blob()).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(size)
}

/// The whole replay of a seed: the base at `base` (a snapshot file) brought to
/// `to.upto` with the segments under `to.prefix`, written as a snapshot to `out`.
pub async fn to_point(
    store: &BackupStore,
    to: &ReplayTo,
    base: &Path,
    out: &Path,
    etcd: &Path,
    etcdutl: &Path,
) -> Result<Replayed, ReplayError> {
    let index = stream::read_index(store, &to.prefix).await.map_err(|e| ReplayError::Index(Box::new(e)))?;
    let refs = segments_for(&index, to.base_revision, to.upto)?;
    // The lease table at the target is in the last segment: read (and checked) first.
    let leases = match refs.last() {
        Some(last) => read_segment(store, last).await?.leases,
        None => Vec::new(),
    };
    let dir: PathBuf = out.with_extension("scratch");
    let mut scratch = Scratch::start(etcd, etcdutl, base, &dir).await?;
    let result = async {
        let mut client = scratch.client().await?;
        let mut replayer = Replayer::new(&mut client, to.base_revision, to.upto, &leases).await?;
        for r in &refs {
            let segment = read_segment(store, r).await?;
            replayer.apply(&mut client, &segment).await?;
        }
        let done = replayer.finish(&mut client).await?;
        snapshot_to_file(&mut client, out).await?;
        Ok(done)
    }
    .await;
    scratch.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
