//! Backup path benchmarks with real servers: the S3 store's streamed upload (throughput
//! and the memory it holds, which must stay about one part whatever the size), and a
//! snapshot of a real etcd streamed into S3. `make bench` runs this and writes the
//! table into docs/benchmarks.md. Figures are measurements, never test assertions.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use etcd_pilot::backup_store::{BackupStore, StoreConfig};
use support::etcd::Cluster;
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

const MIB: usize = 1024 * 1024;

/// Peak resident memory of this process so far, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `total` bytes of pseudo-random data, generated 32 KiB at a time as etcd streams it,
/// so the source itself holds no more than one chunk.
fn source(total: usize) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut left = total;
    futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(32 * 1024);
        let mut chunk = Vec::with_capacity(n);
        for _ in 0..n / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.extend_from_slice(&x.to_le_bytes());
        }
        left -= n;
        std::task::Poll::Ready(Some(Ok(Bytes::from(chunk))))
    })
}

async fn store(server: &S3Server, part_mib: usize) -> BackupStore {
    BackupStore::new(StoreConfig {
        part_size: part_mib * MIB,
        ..StoreConfig::s3_compatible(&server.endpoint, "bench", ACCESS_KEY, SECRET_KEY)
    })
    .await
    .expect("store")
}

#[tokio::main]
async fn main() {
    etcd_pilot::install_crypto_provider();
    let server = S3Server::start().await;
    server.create_bucket("bench");
    let mut rows = Vec::new();

    // First, while the process is small (peak RSS is process-wide): a real snapshot, 3-member etcd 3.4 with about 64 MiB of keys.
    let cluster = Cluster::start_with(3, &["--quota-backend-bytes", "4294967296"], false).await;
    let mut kv = cluster.kv().await;
    let value = vec![b'v'; 64 * 1024];
    for i in 0..1024 {
        kv.put(format!("/registry/configmaps/bench/c{i}"), value.clone(), None).await.expect("put");
    }
    let admin = cluster.admin();
    let snap_store = store(&server, 16).await;
    let t = Instant::now();
    let snap = admin.snapshot(&cluster.endpoints()[1]).await.expect("snapshot");
    let up = snap_store.upload("snapshot.db", snap.stream, HashMap::new()).await.expect("upload snapshot");
    let secs = t.elapsed().as_secs_f64();
    rows.push(format!(
        "| etcd snapshot streamed to S3, {} MiB db | {secs:.2} s | {:.0} MiB/s | {} parts | peak RSS {} MiB |",
        up.size / MIB as u64,
        up.size as f64 / MIB as f64 / secs,
        up.parts,
        peak_rss_kib() / 1024
    ));

    // Encryption at rest, side by side in this run: the same member's snapshot streamed
    // to S3 plain and sealed (AES-256-GCM), alternating, five of each; medians.
    let key = etcd_pilot::backup_store::crypt::NamedKey::from_secret("bench/k1", &[7u8; 32]).expect("key");
    let sealed_store = snap_store.clone().with_keys(vec![key.clone()]);
    let (mut plain, mut sealed) = (Vec::new(), Vec::new());
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        for (name, s) in [("plain", &snap_store), ("sealed", &sealed_store)] {
            let t = Instant::now();
            let snap = admin.snapshot(&cluster.endpoints()[1]).await.expect("snapshot");
            let up =
                s.upload(&format!("snapshot-{name}-{round}.db"), snap.stream, HashMap::new()).await.expect("upload");
            let rate = up.size as f64 / MIB as f64 / t.elapsed().as_secs_f64();
            if name == "plain" { plain.push(rate) } else { sealed.push(rate) }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (sealed_rate, plain_rate) = (median(&mut sealed), median(&mut plain));
    // The cipher alone, in memory, in the 32 KiB pieces etcd streams.
    let piece = vec![0x5au8; 32 * 1024];
    let t = Instant::now();
    let mut sealer = etcd_pilot::backup_store::crypt::Sealer::new(&key).expect("sealer");
    let mut out = 0usize;
    for _ in 0..(256 * MIB / piece.len()) {
        out += sealer.push(&piece).expect("seal").iter().map(|b| b.len()).sum::<usize>();
    }
    out += sealer.finish().expect("seal").iter().map(|b| b.len()).sum::<usize>();
    let cipher_rate = out as f64 / MIB as f64 / t.elapsed().as_secs_f64();
    rows.push(format!(
        "| etcd snapshot streamed to S3 sealed (AES-256-GCM) vs plain, alternating, {ROUNDS} each, medians: {:.2}x (target >= 0.9x); sealing alone in memory {cipher_rate:.0} MiB/s | | {sealed_rate:.0} vs {plain_rate:.0} MiB/s | | peak RSS {} MiB |",
        sealed_rate / plain_rate,
        peak_rss_kib() / 1024
    ));

    for (size_mib, part_mib) in [(64, 16), (256, 16), (512, 16), (256, 64)] {
        let store = store(&server, part_mib).await;
        let before = peak_rss_kib();
        let t = Instant::now();
        let up = store
            .upload(&format!("bench-{size_mib}-{part_mib}.db"), source(size_mib * MIB), HashMap::new())
            .await
            .expect("upload");
        let secs = t.elapsed().as_secs_f64();
        let peak = peak_rss_kib();
        rows.push(format!(
            "| S3 upload, {size_mib} MiB in {part_mib} MiB parts | {secs:.2} s | {:.0} MiB/s | {} parts | peak RSS {} MiB (+{} MiB) |",
            size_mib as f64 / secs,
            up.parts,
            peak / 1024,
            peak.saturating_sub(before) / 1024
        ));
        let t = Instant::now();
        let mut dl = store.download(&up.key).await.expect("download");
        let mut n = 0usize;
        use futures::StreamExt;
        while let Some(c) = dl.stream.next().await {
            n += c.expect("verified").len();
        }
        let secs = t.elapsed().as_secs_f64();
        rows.push(format!(
            "| S3 verified download, {size_mib} MiB | {secs:.2} s | {:.0} MiB/s | | peak RSS {} MiB |",
            n as f64 / MIB as f64 / secs,
            peak_rss_kib() / 1024
        ));
        store.delete(&up.key).await.expect("delete");
    }

    println!("| what | time | throughput | parts | memory |\n|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
