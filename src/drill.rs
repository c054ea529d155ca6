//! A restore drill, inside its pod (`etcd-pilot verify-backup`): the backup downloaded
//! as a restore downloads it (its recorded SHA-256, the restore's expected one, opened
//! with its keys), restored with `etcdutl snapshot restore` (which checks etcd's own
//! hash at the end of the snapshot) into a scratch single-member etcd on 127.0.0.1, and
//! measured there: its revision, its key count, and `HashKV` at its revision. The
//! scratch member is not bumped or marked compacted (nobody watches it), so its revision
//! is the snapshot's own. What it found is the pod's termination message ([`Outcome`]);
//! the drill controller compares it with what the backup claims and with a live member.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backup_store::{Credentials, StoreError};
use crate::replay::{ReplayError, Scratch};
use crate::seed::SeedSource;

/// What the scratch member holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Its revision: the snapshot's.
    pub revision: i64,
    /// Keys at that revision.
    pub key_count: i64,
    /// `HashKV` at that revision, and the compact revision it starts from.
    pub hash: u32,
    pub compact_revision: i64,
    /// Seconds from the first byte downloaded to the last measurement.
    pub seconds: f64,
}

/// The pod's verdict on the restore itself: restored (and measured), or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Restored(Report),
    Failed(String),
}

/// The most of a termination message the kubelet keeps (4096 bytes).
const MESSAGE_MAX: usize = 4000;

impl Outcome {
    /// As the termination message: JSON, a long error cut to fit.
    pub fn message(&self) -> String {
        let cut = match self {
            Outcome::Failed(e) if e.len() > MESSAGE_MAX - 100 => {
                let mut end = MESSAGE_MAX - 100;
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                Outcome::Failed(format!("{}...", &e[..end]))
            }
            other => other.clone(),
        };
        serde_json::to_string(&cut).unwrap_or_default()
    }

    /// Reads a termination message; anything else (a crash's log tail) is a failure
    /// that quotes it.
    pub fn parse(message: &str) -> Outcome {
        serde_json::from_str(message.trim())
            .unwrap_or_else(|_| Outcome::Failed(format!("the drill ended without a verdict: {}", message.trim())))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("download: {0}")]
    Download(#[from] StoreError),
    #[error("the object's SHA-256 is {actual}, the backup recorded {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("restore into the scratch member: {0}")]
    Restore(#[from] ReplayError),
    #[error("{what} on the scratch member: {source}")]
    Measure {
        what: &'static str,
        #[source]
        source: etcd_client::Error,
    },
}

/// Runs the drill in `dir` (removed again at the end).
pub async fn run(
    source: &SeedSource,
    credentials: Credentials,
    keys: Vec<crate::backup_store::crypt::NamedKey>,
    dir: &Path,
    (etcdutl, etcd): (&Path, &Path),
) -> Result<Report, DrillError> {
    let started = Instant::now();
    let io = |source| DrillError::Io { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let result = async {
        let store = source.store(credentials, keys).await?;
        let snapshot = dir.join("backup.db");
        let dl = store.download_to_file(&source.key, &snapshot).await?;
        if dl.sha256 != source.sha256 {
            return Err(DrillError::Mismatch { expected: source.sha256.clone(), actual: dl.sha256 });
        }
        let mut scratch = Scratch::start(etcd, etcdutl, &snapshot, &dir.join("scratch")).await?;
        let measured = measure(&mut scratch).await;
        scratch.stop().await;
        let (revision, key_count, hash, compact_revision) = measured?;
        Ok(Report { revision, key_count, hash, compact_revision, seconds: started.elapsed().as_secs_f64() })
    }
    .await;
    let _ = std::fs::remove_dir_all(dir);
    result
}

async fn measure(scratch: &mut Scratch) -> Result<(i64, i64, u32, i64), DrillError> {
    let mut c = scratch.client().await?;
    let m = |what| move |source| DrillError::Measure { what, source };
    let status = c.status().await.map_err(m("status"))?;
    let revision = status.header().map(|h| h.revision()).unwrap_or_default();
    let keys = crate::etcd::count_at(&mut c, revision).await.map_err(m("count keys"))?;
    let hk = c.hash_kv(revision).await.map_err(m("HashKV"))?;
    Ok((revision, keys, hk.hash(), hk.compact_version()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_termination_message_round_trips_and_fits() {
        let r = Outcome::Restored(Report { revision: 7, key_count: 3, hash: 42, compact_revision: 1, seconds: 1.5 });
        assert_eq!(Outcome::parse(&r.message()), r);
        let long = Outcome::Failed("é".repeat(5000));
        assert!(long.message().len() <= 4096);
        assert!(matches!(Outcome::parse(&long.message()), Outcome::Failed(m) if m.ends_with("...")));
        assert_eq!(
            Outcome::parse("panicked at main.rs\n"),
            Outcome::Failed("the drill ended without a verdict: panicked at main.rs".into())
        );
    }
}
