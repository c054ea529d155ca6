//! Seeding a member's volume from a snapshot in S3, before its etcd starts: what a
//! restore asks of every member of the cluster it creates.
//!
//! The cluster controller gives each bootstrap member of a cluster that carries
//! [`ANNOTATION`] an init container running `etcd-pilot seed-member` from the operator
//! image. It downloads the object to the member's volume (streamed, checked against the
//! SHA-256 recorded when it was written, never held in memory) and runs `etcdutl
//! snapshot restore` with the member's name, peer URL and the cluster's initial members
//! and token, `--bump-revision` and `--mark-compacted`: the restored data starts above
//! every revision the old cluster served, and watchers resuming from an older one are
//! told to relist. `etcdutl` 3.5 restores 3.4 snapshots into data that etcd 3.4 runs
//! (proven by the e2e on both), so one tool serves every member version. A volume that
//! already holds data is left alone, so a restarted pod never restores twice.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use serde::{Deserialize, Serialize};

use crate::api::S3CredentialsSecret;
use crate::backup_store::{BackupStore, Credentials, StoreConfig, StoreError};

/// Where the seed finds the restore's encryption keys: `<dir>/<n>/key`, the n-th key of
/// the source's target (a Secret volume each).
pub const KEYS_DIR: &str = "/var/run/etcd-pilot/keys";

/// Annotation of an EtcdCluster created by a restore: where its members' data comes from.
pub const ANNOTATION: &str = "etcdpilot.io/restore-source";

/// What a restore recorded for the members to seed from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedSource {
    /// The EtcdRestore that asked for it.
    pub restore: String,
    pub bucket: String,
    pub key: String,
    /// SHA-256 of the whole object, as recorded when it was written.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsSecret>,
    /// Added to the snapshot's revision.
    pub bump_revision: i64,
    /// For an in-place restore: the id of the etcd cluster the restore replaces. Records
    /// that the cluster formed with this id no longer count, so the controller bootstraps
    /// the restored members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// A restore to a point: the snapshot is a base, brought forward by replaying its
    /// schedule's segments ([`crate::replay`]) before the member is seeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayTo>,
    /// The source target's encryption keys (Secret entries, mounted into the seed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_keys: Vec<crate::api::EncryptionKey>,
}

impl SeedSource {
    /// The store the source is in, reading with `keys`.
    pub async fn store(
        &self,
        credentials: Credentials,
        keys: Vec<crate::backup_store::crypt::NamedKey>,
    ) -> Result<BackupStore, StoreError> {
        let config = StoreConfig {
            bucket: self.bucket.clone(),
            prefix: None,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            part_size: crate::backup_store::MIN_PART_SIZE,
            credentials,
            // Reads need nothing of server-side encryption (the store decrypts).
            sse: None,
        };
        Ok(BackupStore::new(config).await?.with_keys(keys))
    }

    pub fn from_cluster<K: kube::Resource>(obj: &K) -> Option<SeedSource> {
        obj.meta().annotations.as_ref()?.get(ANNOTATION).and_then(|v| serde_json::from_str(v).ok())
    }
}

/// The environment of a pod that reads the source: the source itself
/// (`ETCD_PILOT_SEED_SOURCE`) and the S3 credentials from their Secret.
pub fn pod_env(source: &SeedSource) -> Vec<EnvVar> {
    let mut env = vec![EnvVar {
        name: "ETCD_PILOT_SEED_SOURCE".into(),
        value: Some(serde_json::to_string(source).unwrap_or_default()),
        ..EnvVar::default()
    }];
    if let Some(c) = &source.credentials_secret {
        let from = |name: &str, key: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: c.name.clone(), key: key.into(), optional: None }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        env.push(from("AWS_ACCESS_KEY_ID", &c.access_key_id_key));
        env.push(from("AWS_SECRET_ACCESS_KEY", &c.secret_access_key_key));
        if let Some(k) = &c.session_token_key {
            env.push(from("AWS_SESSION_TOKEN", k));
        }
    }
    env
}

/// The source's encryption keys as Secret volumes (`<name>-<i>`, the entry alone) and
/// their mounts at `KEYS_DIR/<i>`, where [`read_keys`] finds them.
pub fn key_volumes(source: &SeedSource, name: &str) -> (Vec<Volume>, Vec<VolumeMount>) {
    let volumes = source
        .encryption_keys
        .iter()
        .enumerate()
        .map(|(i, k)| Volume {
            name: format!("{name}-{i}"),
            secret: Some(SecretVolumeSource {
                secret_name: Some(k.secret_name.clone()),
                items: Some(vec![KeyToPath { key: k.key.clone(), path: "key".into(), mode: None }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        })
        .collect();
    let mounts = (0..source.encryption_keys.len())
        .map(|i| VolumeMount {
            name: format!("{name}-{i}"),
            mount_path: format!("{KEYS_DIR}/{i}"),
            read_only: Some(true),
            ..VolumeMount::default()
        })
        .collect();
    (volumes, mounts)
}

/// The source's encryption keys, as the pod's Secret volumes hold them.
pub fn read_keys(source: &SeedSource) -> Result<Vec<crate::backup_store::crypt::NamedKey>, String> {
    let mut keys = Vec::new();
    for (i, k) in source.encryption_keys.iter().enumerate() {
        let path = Path::new(KEYS_DIR).join(i.to_string()).join("key");
        let bytes = std::fs::read(&path).map_err(|e| format!("encryption key {}: {}: {e}", k.id(), path.display()))?;
        keys.push(
            crate::backup_store::crypt::NamedKey::from_secret(&k.id(), &bytes)
                .map_err(|e| format!("encryption key {}: {e}", k.id()))?,
        );
    }
    Ok(keys)
}

/// What a member is, for etcdutl.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub peer_url: String,
    /// `name=url,...` of every initial member.
    pub initial_cluster: String,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("download: {0}")]
    Download(#[from] StoreError),
    #[error("the object's SHA-256 is {actual}, the restore expected {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object {key:?} is not a whole etcd snapshot: its last 32 bytes are not the SHA-256 of the rest")]
    NotASnapshot { key: String },
    #[error("etcdutl snapshot restore failed ({status}): {stderr}")]
    Restore { status: String, stderr: String },
    #[error("replay to revision {upto}: {source}")]
    Replay {
        upto: i64,
        #[source]
        source: crate::replay::ReplayError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SeedError + '_ {
    move |source| SeedError::Io { path: path.display().to_string(), source }
}

/// The `etcdutl snapshot restore` arguments for one member.
pub fn restore_args(snapshot: &Path, data_dir: &Path, member: &Member, bump: i64) -> Vec<String> {
    vec![
        "snapshot".into(),
        "restore".into(),
        snapshot.display().to_string(),
        format!("--data-dir={}", data_dir.display()),
        format!("--name={}", member.name),
        format!("--initial-cluster={}", member.initial_cluster),
        format!("--initial-cluster-token={}", member.token),
        format!("--initial-advertise-peer-urls={}", member.peer_url),
        format!("--bump-revision={bump}"),
        "--mark-compacted".into(),
    ]
}

/// Seeds `data_dir` (e.g. `/var/lib/etcd/data`) unless it holds data already. The
/// snapshot is downloaded next to it and removed once restored; the restore is written
/// to a sibling directory and renamed into place, so a crash never leaves half a data
/// dir behind.
pub async fn seed_member(
    source: &SeedSource,
    credentials: Credentials,
    data_dir: &Path,
    member: &Member,
    (etcdutl, etcd): (&Path, &Path),
    keys: Vec<crate::backup_store::crypt::NamedKey>,
) -> Result<bool, SeedError> {
    if data_dir.join("member").exists() {
        return Ok(false);
    }
    let parent = data_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let snapshot = parent.join("restore.db");
    let staging = parent.join("data.restoring");
    let store = source.store(credentials, keys).await?;
    let dl = store.download_to_file(&source.key, &snapshot).await?;
    if dl.sha256 != source.sha256 {
        let _ = std::fs::remove_file(&snapshot);
        return Err(SeedError::Mismatch { expected: source.sha256.clone(), actual: dl.sha256 });
    }
    // A restore to a point: the base brought forward first, in a scratch etcd.
    let snapshot = match &source.replay {
        None => snapshot,
        Some(to) => {
            let replayed = parent.join("replayed.db");
            let done = crate::replay::to_point(&store, to, &snapshot, &replayed, etcd, etcdutl)
                .await
                .map_err(|source| SeedError::Replay { upto: to.upto, source })?;
            tracing::info!(
                segments = done.segments,
                revisions = done.revisions,
                leases = done.leases,
                revision = done.revision,
                "replayed the continuous backup onto the base"
            );
            std::fs::remove_file(&snapshot).map_err(io(&snapshot))?;
            replayed
        }
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let out = tokio::process::Command::new(etcdutl)
        .args(restore_args(&snapshot, &staging, member, source.bump_revision))
        .output()
        .await
        .map_err(io(etcdutl))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(SeedError::Restore {
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    if data_dir.exists() {
        // An empty leftover (no `member` inside): replaced.
        std::fs::remove_dir_all(data_dir).map_err(io(data_dir))?;
    }
    std::fs::rename(&staging, data_dir).map_err(io(data_dir))?;
    std::fs::remove_file(&snapshot).map_err(io(&snapshot))?;
    Ok(true)
}

/// Reads a whole object through both checks a restore relies on: the object's SHA-256
/// against what was recorded when it was written (and against `expected`, when the
/// restore names a backup), and etcd's own SHA-256 of the db in its last 32 bytes.
/// Nothing is kept: the bytes are hashed and dropped. Returns the object's size, SHA-256
/// and user metadata.
pub async fn verify_object(
    store: &BackupStore,
    key: &str,
    expected: Option<&str>,
) -> Result<(u64, String, std::collections::HashMap<String, String>), SeedError> {
    use futures::StreamExt;
    use sha2::{Digest, Sha256};
    let mut dl = store.download(key).await?;
    if let Some(e) = expected
        && e != dl.sha256
    {
        return Err(SeedError::Mismatch { expected: e.to_string(), actual: dl.sha256 });
    }
    let mut db = Sha256::new();
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    let mut size = 0u64;
    while let Some(chunk) = dl.stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > crate::etcd::snapshot::HASH_LEN {
            let keep = tail.split_off(tail.len() - crate::etcd::snapshot::HASH_LEN);
            db.update(&tail);
            tail = keep;
        }
    }
    if tail.len() < crate::etcd::snapshot::HASH_LEN || db.finalize().as_slice() != tail.as_slice() {
        return Err(SeedError::NotASnapshot { key: key.to_string() });
    }
    Ok((size, dl.sha256, dl.metadata))
}
