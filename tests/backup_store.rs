//! The backup store against a real S3-compatible server (s3s-fs), started on a free
//! port with its data in a temp dir.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use etcd_pilot::backup_store::{BackupStore, StoreConfig, StoreError};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "etcd-backups";

fn config(server: &S3Server, access_key: &str, secret: &str) -> StoreConfig {
    StoreConfig {
        prefix: Some("it".into()),
        part_size: 8 * MIB,
        ..StoreConfig::s3_compatible(&server.endpoint, BUCKET, access_key, secret)
    }
}

async fn store(server: &S3Server) -> BackupStore {
    server.create_bucket(BUCKET);
    BackupStore::new(config(server, ACCESS_KEY, SECRET_KEY)).await.expect("store")
}

/// A deterministic pseudo-random payload, in chunks the size etcd streams (32 KiB), so
/// that nothing compresses and every part differs.
fn payload(total: usize, seed: u64) -> Vec<Bytes> {
    let mut x = seed | 1;
    let mut out = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(32 * 1024);
        let mut chunk = Vec::with_capacity(n);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.push(x as u8);
        }
        out.push(Bytes::from(chunk));
        left -= n;
    }
    out
}

fn sha256(chunks: &[Bytes]) -> String {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c);
    }
    hex::encode(h.finalize())
}

fn ok_stream(chunks: Vec<Bytes>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn a_50_mib_snapshot_goes_up_in_parts_and_comes_back_verified() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    let data = payload(50 * MIB, 7);
    let key = store.backup_key("default", "main", "20261122T101500Z", "nightly");
    assert_eq!(key, "it/default/main/20261122T101500Z-nightly.db");

    let meta = HashMap::from([("etcd-revision".to_string(), "4242".to_string())]);
    let up = store.upload(&key, ok_stream(data.clone()), meta).await.expect("upload");
    assert_eq!(up.size, 50 * MIB as u64);
    assert_eq!(up.parts, 7, "50 MiB in 8 MiB parts");
    assert_eq!(up.sha256, sha256(&data));

    let listed = store.list("it/default/main/").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.as_str(), listed[0].size), (key.as_str(), 50 * MIB as u64));

    let mut dl = store.download(&key).await.expect("download");
    assert_eq!(dl.sha256, up.sha256, "hash recorded beside the object");
    assert_eq!(dl.metadata.get("etcd-revision").map(String::as_str), Some("4242"), "caller metadata kept");
    let mut got = Vec::new();
    while let Some(chunk) = dl.stream.next().await {
        got.extend_from_slice(&chunk.expect("verified chunk"));
    }
    assert_eq!(got.len(), 50 * MIB);
    assert_eq!(hex::encode(Sha256::digest(&got)), up.sha256);

    let file = server.root.path().with_extension("restore.db");
    store.download_to_file(&key, &file).await.expect("download to file");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 50 * MIB as u64);
    let _ = std::fs::remove_file(&file);

    store.delete(&key).await.expect("delete");
    assert!(store.list("it/").await.unwrap().is_empty());
    assert!(matches!(store.download(&key).await, Err(StoreError::NoSuchKey { .. })));
}

#[tokio::test]
async fn a_small_snapshot_is_one_put_with_its_hash() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    let data = payload(3 * MIB, 11);
    let up = store.upload("small.db", ok_stream(data.clone()), HashMap::new()).await.unwrap();
    assert_eq!(up.parts, 0);
    let dl = store.download("small.db").await.unwrap();
    assert_eq!(dl.sha256, sha256(&data));
    let empty = store.upload("empty.db", ok_stream(Vec::new()), HashMap::new()).await.unwrap();
    assert_eq!(empty.size, 0);
}

#[tokio::test]
async fn the_hash_object_beside_a_multipart_upload_marks_it_finished() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    let data = payload(20 * MIB, 5);
    let key = "it/default/main/big.db";
    let up = store.upload(key, ok_stream(data.clone()), HashMap::new()).await.unwrap();
    assert!(up.parts > 1, "a multipart upload");
    // In sha256sum's format beside the object, so `sha256sum -c` checks a downloaded copy;
    // not listed as a backup.
    let line = std::fs::read_to_string(server.object_path(BUCKET, "it/default/main/big.db.sha256")).expect("hash");
    assert_eq!(line, format!("{}  big.db\n", sha256(&data)));
    let listed: Vec<String> = store.list("it/").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, vec![key.to_string()]);
    let mut dl = store.download(key).await.unwrap();
    assert_eq!(dl.sha256, up.sha256);
    let mut n = 0;
    while let Some(c) = dl.stream.next().await {
        n += c.expect("verified").len();
    }
    assert_eq!(n, 20 * MIB);
    // Without its hash object the object is an unfinished upload: never served.
    std::fs::remove_file(server.object_path(BUCKET, "it/default/main/big.db.sha256")).unwrap();
    let err = store.download(key).await.err().expect("refused");
    assert!(matches!(err, StoreError::MissingChecksum { .. }), "{err}");
    // Deleting takes both away.
    let again = store.upload(key, ok_stream(data), HashMap::new()).await.unwrap();
    assert_eq!(again.sha256, up.sha256);
    store.delete(key).await.unwrap();
    assert!(!server.object_path(BUCKET, key).exists());
    assert!(!server.object_path(BUCKET, "it/default/main/big.db.sha256").exists());
}

#[tokio::test]
async fn a_corrupted_object_is_refused_with_a_clear_error() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    let up = store.upload("rot.db", ok_stream(payload(12 * MIB, 3)), HashMap::new()).await.unwrap();

    // Bit rot on the server's disk: one byte in the middle flips.
    let path = server.object_path(BUCKET, "rot.db");
    let mut bytes = std::fs::read(&path).expect("object file");
    bytes[6 * MIB] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let mut dl = store.download("rot.db").await.unwrap();
    let mut last = None;
    while let Some(c) = dl.stream.next().await {
        if let Err(e) = c {
            last = Some(e);
        }
    }
    let err = last.expect("the stream must end in an error");
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") && msg.contains(&up.sha256), "{msg}");

    let file = server.root.path().with_extension("rot.db");
    assert!(store.download_to_file("rot.db", &file).await.is_err());
    assert!(!file.exists(), "a corrupt download never appears as a file");
    assert!(!file.with_extension("partial").exists());
}

#[tokio::test]
async fn an_upload_that_fails_midway_leaves_no_object() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    // The snapshot source breaks after 20 MiB: two parts are already up.
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = payload(20 * MIB, 9).into_iter().map(Ok).collect();
    chunks.push(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "etcd went away")));
    let err = store
        .upload("broken.db", futures::stream::iter(chunks), HashMap::new())
        .await
        .expect_err("the upload must fail");
    assert!(matches!(err, StoreError::Source(_)), "{err}");
    assert!(err.to_string().contains("etcd went away"));
    assert!(store.list("").await.unwrap().is_empty(), "no object left behind");
    assert!(!server.object_path(BUCKET, "broken.db").exists());
    assert!(matches!(store.download("broken.db").await, Err(StoreError::NoSuchKey { .. })));
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error() {
    let server = S3Server::start().await;
    server.create_bucket(BUCKET);
    let store = BackupStore::new(config(&server, ACCESS_KEY, "not-the-secret")).await.unwrap();
    let err = store.upload("x.db", ok_stream(payload(MIB, 1)), HashMap::new()).await.expect_err("refused");
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err}");
    assert!(err.to_string().contains("check the access key and secret"), "{err}");

    let stranger = BackupStore::new(config(&server, "nobody", SECRET_KEY)).await.unwrap();
    assert!(matches!(stranger.check().await, Err(StoreError::AccessDenied { .. })));
    let listed = stranger.list("").await;
    assert!(matches!(listed, Err(StoreError::AccessDenied { .. })), "{listed:?}");
}

#[tokio::test]
async fn an_object_without_a_recorded_hash_is_not_served() {
    let server = S3Server::start().await;
    let store = store(&server).await;
    // Written by someone else, without etcd-pilot's metadata.
    std::fs::write(server.object_path(BUCKET, "foreign.db"), b"not a backup").unwrap();
    let err = store.download("foreign.db").await.err().expect("refused");
    assert!(matches!(err, StoreError::MissingChecksum { .. }), "{err}");
}

/// Encryption at rest: a store with keys seals what it writes (the object on the
/// server's disk holds none of the plaintext; the SHA-256 recorded is the stored bytes');
/// it comes back whole by download, to a file and by ranged reads across chunk
/// boundaries; after a rotation (a new key first, the old one kept) both objects open;
/// a store without the sealing key, or with a wrong key under its name, refuses it with
/// the key named; objects written before encryption was on still read.
#[tokio::test]
async fn encrypted_objects_hide_their_bytes_come_back_whole_and_refuse_a_wrong_key() {
    use etcd_pilot::backup_store::crypt::NamedKey;
    let server = S3Server::start().await;
    let plain_store = store(&server).await;
    let k1 = NamedKey::from_secret("backup-keys/k1", &[1u8; 32]).unwrap();
    let k2 = NamedKey::from_secret("backup-keys/k2", &[2u8; 32]).unwrap();
    let sealed_by_k1 = plain_store.clone().with_keys(vec![k1.clone()]);
    let mut data = payload(3 * MIB + 12345, 11);
    data.insert(5, Bytes::from_static(b"/registry/secrets/default/db: hunter2-password"));
    let whole: Vec<u8> = data.iter().flat_map(|c| c.iter().copied()).collect();
    let key = "it/enc/one.db";
    let up = sealed_by_k1.upload(key, ok_stream(data.clone()), HashMap::new()).await.expect("upload");
    let on_disk = std::fs::read(server.object_path(BUCKET, key)).expect("object on disk");
    assert!(!on_disk.windows(8).any(|w| w == b"hunter2-"), "the plaintext is not in the stored object");
    assert_eq!(hex::encode(Sha256::digest(&on_disk)), up.sha256, "the recorded hash is the stored bytes'");
    assert!(on_disk.len() > whole.len());

    let read_all = |s: BackupStore, k: &'static str| async move {
        let mut dl = s.download(k).await?;
        let mut got = Vec::new();
        while let Some(c) = dl.stream.next().await {
            got.extend_from_slice(&c?);
        }
        Ok::<Vec<u8>, StoreError>(got)
    };
    assert_eq!(read_all(sealed_by_k1.clone(), key).await.expect("download"), whole);
    let file = server.root.path().with_extension("enc.db");
    sealed_by_k1.download_to_file(key, &file).await.expect("to a file");
    assert_eq!(std::fs::read(&file).unwrap(), whole);
    let _ = std::fs::remove_file(&file);
    for (offset, len) in [(0usize, 4096usize), (65536 - 10, 100), (3 * 65536 + 7, 200_000), (whole.len() - 50, 4096)] {
        let got = sealed_by_k1.read_range(key, offset as u64, len).await.expect("ranged read");
        assert_eq!(got, whole[offset..(offset + len).min(whole.len())], "{offset}+{len}");
    }

    // Rotation: k2 first, k1 kept.
    let rotated = plain_store.clone().with_keys(vec![k2.clone(), k1.clone()]);
    let key2 = "it/enc/two.db";
    rotated.upload(key2, ok_stream(data.clone()), HashMap::new()).await.expect("upload");
    assert_eq!(read_all(rotated.clone(), key).await.expect("the old object"), whole);
    assert_eq!(read_all(rotated.clone(), key2).await.expect("the new object"), whole);
    let e = read_all(sealed_by_k1.clone(), key2).await.expect_err("k1 alone cannot open k2's object");
    assert!(e.to_string().contains("backup-keys/k2"), "{e}");
    let impostor = NamedKey::from_secret("backup-keys/k1", &[9u8; 32]).unwrap();
    let e = read_all(plain_store.clone().with_keys(vec![impostor]), key).await.expect_err("a wrong key");
    assert!(e.to_string().contains("failed authentication with key backup-keys/k1"), "{e}");
    let e = read_all(plain_store.clone(), key).await.expect_err("no key");
    assert!(e.to_string().contains("backup-keys/k1"), "{e}");

    // Written before encryption was turned on: read as it is.
    let old = "it/enc/plain.db";
    plain_store.upload(old, ok_stream(data.clone()), HashMap::new()).await.expect("upload");
    assert_eq!(read_all(rotated, old).await.expect("a plain object"), whole);
}
