//! etcd's own integrity check of a snapshot stream.
//!
//! etcd's Snapshot RPC sends the db file and then, as its last 32 bytes, the SHA-256 of
//! everything before them (`etcdctl snapshot restore` and `etcdutl` check it again when
//! they restore). [`verify_stream`] passes every byte through unchanged, hash included,
//! holding back the last 32 until the stream ends; a stream that ends with a hash that
//! does not match what came before it, or shorter than a hash, ends with an error item
//! instead of its last bytes. A consumer that stops at the first error (an upload) thus
//! never finishes a truncated or corrupt snapshot.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::EtcdError;

/// Length of the hash etcd appends.
pub const HASH_LEN: usize = 32;

/// Checks the SHA-256 etcd appends to a snapshot stream, as the bytes flow.
pub fn verify_stream<S>(endpoint: String, inner: S) -> impl Stream<Item = Result<Bytes, EtcdError>> + Send
where
    S: Stream<Item = Result<Bytes, EtcdError>> + Send + Unpin + 'static,
{
    struct State<S> {
        inner: S,
        hasher: Sha256,
        /// The bytes not passed on yet: at most the last [`HASH_LEN`] seen.
        tail: BytesMut,
        total: u64,
        done: bool,
    }
    let state = State { inner, hasher: Sha256::new(), tail: BytesMut::new(), total: 0, done: false };
    futures::stream::unfold(state, move |mut st| {
        let endpoint = endpoint.clone();
        async move {
            if st.done {
                return None;
            }
            loop {
                match st.inner.next().await {
                    Some(Ok(chunk)) => {
                        st.total += chunk.len() as u64;
                        st.tail.extend_from_slice(&chunk);
                        if st.tail.len() > HASH_LEN {
                            let out = st.tail.split_to(st.tail.len() - HASH_LEN).freeze();
                            st.hasher.update(&out);
                            return Some((Ok(out), st));
                        }
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                    None => {
                        st.done = true;
                        if st.tail.len() < HASH_LEN {
                            let total = st.total;
                            return Some((
                                Err(EtcdError::SnapshotCorrupt {
                                    endpoint,
                                    detail: format!("the stream ended after {total} bytes, before etcd's SHA-256"),
                                }),
                                st,
                            ));
                        }
                        let actual = st.hasher.clone().finalize();
                        if actual.as_slice() != &st.tail[..] {
                            let detail = format!(
                                "etcd's appended SHA-256 {} does not match the {} bytes received ({})",
                                hex::encode(&st.tail),
                                st.total - HASH_LEN as u64,
                                hex::encode(actual)
                            );
                            return Some((Err(EtcdError::SnapshotCorrupt { endpoint, detail }), st));
                        }
                        let out = st.tail.split().freeze();
                        return Some((Ok(out), st));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(db: &[u8]) -> Vec<u8> {
        let mut v = db.to_vec();
        v.extend_from_slice(&Sha256::digest(db));
        v
    }

    async fn run(bytes: Vec<u8>, chunk: usize, fail_after: Option<usize>) -> (Vec<u8>, Option<String>) {
        let mut items: Vec<Result<Bytes, EtcdError>> =
            bytes.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        if let Some(n) = fail_after {
            items.truncate(n);
            items.push(Err(EtcdError::NoEndpoints));
        }
        let mut s = Box::pin(verify_stream("e".into(), futures::stream::iter(items)));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_whole_snapshot_passes_unchanged_whatever_the_chunking() {
        let db: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let whole = snapshot(&db);
        for chunk in [1, 7, 31, 32, 33, 4096, 100_000] {
            let (out, err) = run(whole.clone(), chunk, None).await;
            assert_eq!(err, None, "chunk {chunk}");
            assert_eq!(out, whole, "chunk {chunk}: every byte, hash included");
        }
    }

    #[tokio::test]
    async fn truncation_corruption_and_short_streams_end_in_an_error() {
        let db: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let whole = snapshot(&db);
        let (out, err) = run(whole[..4000].to_vec(), 100, None).await;
        assert!(err.unwrap().contains("does not match"), "truncated");
        assert!(out.len() <= 4000 - HASH_LEN, "the last bytes of a bad stream are held back");
        let mut flipped = whole.clone();
        flipped[1234] ^= 1;
        assert!(run(flipped, 512, None).await.1.unwrap().contains("does not match"), "a bit flipped");
        assert!(run(vec![1, 2, 3], 2, None).await.1.unwrap().contains("before etcd's SHA-256"));
        assert!(run(Vec::new(), 2, None).await.1.unwrap().contains("ended after 0 bytes"));
        let (_, err) = run(whole, 100, Some(3)).await;
        assert!(err.unwrap().contains("no etcd endpoints"), "the source's own error is passed on");
    }
}
