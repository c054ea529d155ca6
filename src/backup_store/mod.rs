//! Snapshots in S3 or any S3-compatible store.
//!
//! Uploads stream: memory is about two parts, whatever the snapshot's size. The SHA-256
//! of the whole object is written beside it, after it, as `<key>.sha256` (in
//! `sha256sum`'s format, so `sha256sum -c` checks a downloaded copy), and every download
//! is checked against it. The hash object is what marks an upload finished: an object
//! without one is never served. (A multipart upload only learns the hash at its end,
//! after the object's metadata was fixed; copying the object onto itself to add it would
//! write every byte once more. Single-PUT objects carry it in their metadata as well,
//! `x-amz-meta-sha256`, which downloads also accept.)

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Metadata key of the whole object's SHA-256, hex.
pub const SHA256_METADATA: &str = "sha256";
/// User metadata naming the key that sealed an object (encryption at rest).
pub const ENCRYPTION_METADATA: &str = "encryption-key";
/// S3's smallest part (but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// What a key's hash object adds to it.
pub const SHA256_SUFFIX: &str = ".sha256";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

mod config;
mod copy;
pub mod crypt;
use config::sse_headers;
pub use config::{Credentials, StoreConfig, StoreError};

/// An object as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// A finished, verified upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// Parts used; 0 for a single PUT.
    pub parts: usize,
}

/// A download under way. Its stream fails at the end if the bytes do not match the
/// recorded SHA-256, so a consumer must treat what it got as valid only once the stream
/// ended without error.
pub struct Download {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub metadata: HashMap<String, String>,
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>,
}

/// Snapshots in one bucket.
#[derive(Clone, Debug)]
pub struct BackupStore {
    client: Client,
    bucket: String,
    prefix: Option<String>,
    part_size: usize,
    /// Encryption at rest: the first key seals what is written; any of them opens what
    /// is read. None: objects are written as they are (and encrypted ones cannot be read).
    keys: std::sync::Arc<Vec<crypt::NamedKey>>,
    /// S3 server-side encryption asked for every object written.
    sse: Option<crate::api::ServerSideEncryption>,
}

impl BackupStore {
    pub async fn new(config: StoreConfig) -> Result<BackupStore, StoreError> {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        // HTTPS on rustls with ring, the crypto provider the rest of the operator uses.
        let https =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        BackupStore::with_http(config, https).await
    }

    /// A store whose requests go through `https` (the tests' recording client).
    pub(crate) async fn with_http(
        config: StoreConfig,
        https: impl aws_smithy_runtime_api::client::http::HttpClient + 'static,
    ) -> Result<BackupStore, StoreError> {
        if config.part_size < MIN_PART_SIZE {
            return Err(StoreError::PartTooSmall(config.part_size));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region))
            .http_client(https);
        if let Credentials::Static { access_key_id, secret_access_key, session_token } = config.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                access_key_id,
                secret_access_key,
                session_token,
                None,
                "etcd-pilot",
            ));
        }
        let shared = loader.load().await;
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // S3-compatible stores often reject the newer default checksum trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build());
        if let Some(ep) = config.endpoint {
            s3 = s3.endpoint_url(ep);
        }
        Ok(BackupStore {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket,
            prefix: config.prefix,
            part_size: config.part_size,
            keys: std::sync::Arc::default(),
            sse: config.sse,
        })
    }

    /// This store with encryption at rest by `keys` (see [`crypt`]).
    pub fn with_keys(mut self, keys: Vec<crypt::NamedKey>) -> BackupStore {
        self.keys = std::sync::Arc::new(keys);
        self
    }

    /// The key that seals what this store writes, if any.
    pub fn sealing_key(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key of a backup: `<prefix>/<namespace>/<cluster>/<stamp>-<backup>.db`.
    pub fn backup_key(&self, namespace: &str, cluster: &str, stamp: &str, backup: &str) -> String {
        object_key(self.prefix.as_deref(), namespace, cluster, stamp, backup)
    }

    /// Where a schedule's continuous backup lives: `<prefix>/<namespace>/<cluster>/streams/<schedule>/`
    /// (its index and its `segments/`).
    pub fn stream_prefix(&self, namespace: &str, cluster: &str, schedule: &str) -> String {
        let mut parts: Vec<&str> =
            self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()).into_iter().collect();
        parts.extend([namespace, cluster, "streams", schedule]);
        format!("{}/", parts.join("/"))
    }

    fn err<E>(&self, op: &'static str, key: &str, e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        // HEAD answers have no body, hence no code: fall back to the HTTP status.
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = match (e.code(), status) {
            (Some(c), _) => c.to_string(),
            (None, Some(403)) => "AccessDenied".to_string(),
            (None, Some(404)) if key.is_empty() => "NoSuchBucket".to_string(),
            (None, Some(404)) => "NoSuchKey".to_string(),
            (None, _) => String::new(),
        };
        match code.as_str() {
            // Every 403 is about who is asking (unknown key, bad signature, no permission,
            // expired token); stores differ in the code they pick.
            _ if status == Some(403) => StoreError::AccessDenied { op, bucket: self.bucket.clone(), code },
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken" => {
                StoreError::AccessDenied { op, bucket: self.bucket.clone(), code }
            }
            "NoSuchBucket" => StoreError::NoSuchBucket { bucket: self.bucket.clone() },
            "NoSuchKey" | "NotFound" => StoreError::NoSuchKey { bucket: self.bucket.clone(), key: key.to_string() },
            _ => StoreError::Request {
                op,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                detail: DisplayErrorContext(&e).to_string(),
            },
        }
    }

    /// Uploads a stream under `key` with `metadata` plus the SHA-256 of the bytes stored;
    /// sealed on the way by the store's first key, if it has keys. On any error the
    /// upload is aborted and no object is left behind.
    pub async fn upload<S, E>(
        &self,
        key: &str,
        body: S,
        mut metadata: HashMap<String, String>,
    ) -> Result<Uploaded, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        let Some(first) = self.keys.first() else { return self.upload_stored(key, body, metadata).await };
        let sealer = crypt::Sealer::new(first).map_err(|e| StoreError::Source(Box::new(e)))?;
        metadata.insert(ENCRYPTION_METADATA.to_string(), first.id.clone());
        self.upload_stored(key, crypt::sealed(body, sealer), metadata).await
    }

    /// Uploads the bytes to store as they are.
    async fn upload_stored<S, E>(
        &self,
        key: &str,
        mut body: S,
        metadata: HashMap<String, String>,
    ) -> Result<Uploaded, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BoxError>,
    {
        let mut hasher = Sha256::new();
        let mut buf = BytesMut::with_capacity(self.part_size);
        let mut size: u64 = 0;
        let mut multipart: Option<Multipart> = None;
        // One part uploads while the next is read from the source: reading and sending
        // overlap, with at most two parts in memory.
        let mut in_flight: Option<InFlight> = None;
        loop {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    let err = StoreError::Source(e.into());
                    if let Some(m) = multipart {
                        if let Some(f) = in_flight {
                            f.task.abort();
                        }
                        self.abort(key, &m.upload_id).await;
                    }
                    return Err(err);
                }
                None => break,
            };
            hasher.update(&chunk);
            size += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= self.part_size {
                let part = buf.split_to(self.part_size).freeze();
                if multipart.is_none() {
                    multipart = Some(self.start_multipart(key, &metadata).await?);
                }
                if let Some(m) = multipart.as_mut() {
                    let done = match in_flight.take() {
                        Some(f) => self.finish_part(key, m, f).await,
                        None => Ok(()),
                    };
                    if let Err(e) = done {
                        self.abort(key, &m.upload_id).await;
                        return Err(e);
                    }
                    in_flight = Some(self.start_part(key, m, part));
                }
            }
        }
        if let (Some(m), Some(f)) = (multipart.as_mut(), in_flight.take())
            && let Err(e) = self.finish_part(key, m, f).await
        {
            self.abort(key, &m.upload_id).await;
            return Err(e);
        }
        let sha256 = hex::encode(hasher.finalize());
        let mut meta = metadata;
        meta.insert(SHA256_METADATA.to_string(), sha256.clone());

        let Some(mut m) = multipart else {
            // Smaller than one part: one PUT, metadata and all.
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .set_server_side_encryption(sse_headers(&self.sse).0)
                .set_ssekms_key_id(sse_headers(&self.sse).1)
                .set_metadata(Some(meta))
                .content_length(buf.len() as i64)
                .body(ByteStream::from(buf.freeze()))
                .send()
                .await
                .map_err(|e| self.err("PutObject", key, e))?;
            self.finish(key, &sha256).await?;
            return Ok(Uploaded { key: key.to_string(), size, sha256, parts: 0 });
        };
        if !buf.is_empty()
            && let Err(e) = self.upload_part(key, &mut m, buf.freeze()).await
        {
            self.abort(key, &m.upload_id).await;
            return Err(e);
        }
        let parts = m.parts.len();
        if let Err(e) = self.complete(key, &m).await {
            self.abort(key, &m.upload_id).await;
            return Err(e);
        }
        self.finish(key, &sha256).await?;
        Ok(Uploaded { key: key.to_string(), size, sha256, parts })
    }

    async fn start_multipart(&self, key: &str, metadata: &HashMap<String, String>) -> Result<Multipart, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_server_side_encryption(sse_headers(&self.sse).0)
            .set_ssekms_key_id(sse_headers(&self.sse).1)
            .set_metadata(Some(metadata.clone()))
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = out.upload_id.ok_or_else(|| StoreError::Request {
            op: "CreateMultipartUpload",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            detail: "no upload id in the answer".into(),
        })?;
        Ok(Multipart { upload_id, parts: Vec::new() })
    }

    async fn upload_part(&self, key: &str, m: &mut Multipart, part: Bytes) -> Result<(), StoreError> {
        let f = self.start_part(key, m, part);
        self.finish_part(key, m, f).await
    }

    /// Starts sending the next part in a task of its own.
    fn start_part(&self, key: &str, m: &Multipart, part: Bytes) -> InFlight {
        let number = i32::try_from(m.parts.len() + 1).unwrap_or(i32::MAX);
        let send = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&m.upload_id)
            .part_number(number)
            .content_length(part.len() as i64)
            .body(ByteStream::from(part))
            .send();
        InFlight { number, task: tokio::spawn(send) }
    }

    /// Waits for a part started by [`Self::start_part`] and records it.
    async fn finish_part(&self, key: &str, m: &mut Multipart, f: InFlight) -> Result<(), StoreError> {
        let out = f
            .task
            .await
            .map_err(|e| StoreError::Request {
                op: "UploadPart",
                bucket: self.bucket.clone(),
                key: key.to_string(),
                detail: format!("the upload task ended: {e}"),
            })?
            .map_err(|e| self.err("UploadPart", key, e))?;
        m.parts.push(CompletedPart::builder().set_e_tag(out.e_tag).part_number(f.number).build());
        Ok(())
    }

    async fn complete(&self, key: &str, m: &Multipart) -> Result<(), StoreError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&m.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(m.parts.clone())).build())
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    /// Best effort: a failed abort leaves parts the bucket's lifecycle rules must reap,
    /// never an object.
    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) =
            self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(upload_id).send().await
        {
            tracing::warn!(key, error = %DisplayErrorContext(&e), "aborting a multipart upload failed");
        }
    }

    /// Writes the object's hash object, which marks it finished; when that fails, the
    /// object is taken away again.
    async fn finish(&self, key: &str, sha256: &str) -> Result<(), StoreError> {
        let line = format!("{sha256}  {}\n", key.rsplit('/').next().unwrap_or(key));
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(hash_key(key))
            .set_server_side_encryption(sse_headers(&self.sse).0)
            .set_ssekms_key_id(sse_headers(&self.sse).1)
            .content_type("text/plain")
            .body(ByteStream::from(line.into_bytes()))
            .send()
            .await
            .map_err(|e| self.err("PutObject", &hash_key(key), e));
        if let Err(e) = put {
            let _ = self.delete(key).await;
            return Err(e);
        }
        Ok(())
    }

    /// The SHA-256 recorded for `key`: its metadata's, else its hash object's.
    async fn recorded_hash(&self, key: &str, metadata: &HashMap<String, String>) -> Result<String, StoreError> {
        if let Some(h) = metadata.get(SHA256_METADATA) {
            return Ok(h.clone());
        }
        let sidecar = hash_key(key);
        let out = match self.client.get_object().bucket(&self.bucket).key(&sidecar).send().await {
            Ok(o) => o,
            Err(e) => {
                return match self.err("GetObject", &sidecar, e) {
                    StoreError::NoSuchKey { .. } => Err(StoreError::MissingChecksum { key: key.to_string() }),
                    other => Err(other),
                };
            }
        };
        let body = out.body.collect().await.map_err(|e| StoreError::Request {
            op: "GetObject",
            bucket: self.bucket.clone(),
            key: sidecar.clone(),
            detail: e.to_string(),
        })?;
        parse_hash_line(&body.into_bytes()).ok_or_else(|| StoreError::MissingChecksum { key: key.to_string() })
    }

    /// Objects under `prefix` (relative to the bucket, not the store's prefix), by key;
    /// hash objects are not listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            for o in page.contents.unwrap_or_default() {
                if o.key.as_deref().is_some_and(|k| k.ends_with(SHA256_SUFFIX)) {
                    continue;
                }
                out.push(ObjectInfo {
                    key: o.key.unwrap_or_default(),
                    size: o.size.unwrap_or_default().max(0) as u64,
                    last_modified: o.last_modified.map(|t| t.secs()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `len` bytes of `key` from `offset` (one ranged GET; fewer at the end of the
    /// object). Not verified: for reading a few pages of a large object (a snapshot's
    /// revision), whose whole hash was checked when it was written.
    pub async fn read_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if self.keys.is_empty() {
            return self.read_stored_range(key, offset, len).await;
        }
        crypt::read_range(self, key, offset, len).await
    }

    async fn read_stored_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let last = offset + len as u64 - 1;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, e))?;
        let body = out.body.collect().await.map_err(|e| StoreError::Request {
            op: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            detail: e.to_string(),
        })?;
        let mut bytes = body.into_bytes().to_vec();
        // A store that ignores the range sends the whole object.
        if bytes.len() > len {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
            bytes = bytes[start..(start + len).min(bytes.len())].to_vec();
        }
        Ok(bytes)
    }

    /// Starts a download; the stream verifies the SHA-256 as it ends, and opens what is
    /// sealed.
    pub async fn download(&self, key: &str) -> Result<Download, StoreError> {
        let dl = self.download_stored(key).await?;
        Ok(Download { stream: crypt::opened(key, dl.stream, self.keys.clone()), ..dl })
    }

    /// Starts a download of the bytes stored, sealed or not, verified as they end.
    async fn download_stored(&self, key: &str) -> Result<Download, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, e))?;
        let metadata = out.metadata.clone().unwrap_or_default();
        let expected = self.recorded_hash(key, &metadata).await?;
        let size = out.content_length.unwrap_or_default().max(0) as u64;
        let body = out.body;
        let key_owned = key.to_string();
        let bucket = self.bucket.clone();
        let verify_expected = expected.clone();
        let stream = futures::stream::unfold(Some((body, Sha256::new(), 0u64)), move |state| {
            let key = key_owned.clone();
            let bucket = bucket.clone();
            let expected = verify_expected.clone();
            async move {
                let (mut body, mut hasher, mut got) = state?;
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        hasher.update(&chunk);
                        got += chunk.len() as u64;
                        Some((Ok(chunk), Some((body, hasher, got))))
                    }
                    Ok(None) if got != size => Some((Err(StoreError::Truncated { key, expected: size, got }), None)),
                    Ok(None) => {
                        let actual = hex::encode(hasher.finalize());
                        if actual == expected {
                            None
                        } else {
                            Some((Err(StoreError::ChecksumMismatch { key, expected, actual }), None))
                        }
                    }
                    Err(e) => {
                        Some((Err(StoreError::Request { op: "GetObject", bucket, key, detail: e.to_string() }), None))
                    }
                }
            }
        });
        Ok(Download { key: key.to_string(), size, sha256: expected, metadata, stream: Box::pin(stream) })
    }

    /// Downloads to `path`, which appears only once the bytes are verified (written to a
    /// `.partial` file first, removed on any error).
    pub async fn download_to_file(&self, key: &str, path: &Path) -> Result<Download, StoreError> {
        let partial = path.with_extension("partial");
        let result = async {
            let mut dl = self.download(key).await?;
            let mut file = tokio::fs::File::create(&partial).await.map_err(StoreError::io(&partial))?;
            while let Some(chunk) = dl.stream.next().await {
                file.write_all(&chunk?).await.map_err(StoreError::io(&partial))?;
            }
            file.sync_all().await.map_err(StoreError::io(&partial))?;
            tokio::fs::rename(&partial, path).await.map_err(StoreError::io(path))?;
            Ok(dl)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    /// Deletes an object and its hash object. Deleting a missing object succeeds, as in
    /// S3.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        for k in [key.to_string(), hash_key(key)] {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(&k)
                .send()
                .await
                .map_err(|e| self.err("DeleteObject", &k, e))?;
        }
        Ok(())
    }

    /// Checks that the bucket exists and the credentials are good.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| self.err("HeadBucket", "", e)) {
            Ok(_) => Ok(()),
            // A HEAD of a missing bucket comes back as a bare 404 (`NotFound`).
            Err(StoreError::NoSuchKey { .. }) => Err(StoreError::NoSuchBucket { bucket: self.bucket.clone() }),
            Err(e) => Err(e),
        }
    }
}

struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

/// A part being sent.
struct InFlight {
    number: i32,
    task: tokio::task::JoinHandle<
        Result<
            aws_sdk_s3::operation::upload_part::UploadPartOutput,
            SdkError<aws_sdk_s3::operation::upload_part::UploadPartError, aws_smithy_runtime_api::http::Response>,
        >,
    >,
}

/// The key of `key`'s hash object.
pub fn hash_key(key: &str) -> String {
    format!("{key}{SHA256_SUFFIX}")
}

/// The hex SHA-256 at the start of a `sha256sum` line.
fn parse_hash_line(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let hash = text.split_whitespace().next()?.to_ascii_lowercase();
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

/// `<prefix>/<namespace>/<cluster>/<stamp>-<backup>.db`, with no empty segments.
pub fn object_key(prefix: Option<&str>, namespace: &str, cluster: &str, stamp: &str, backup: &str) -> String {
    let mut parts: Vec<&str> = prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()).into_iter().collect();
    parts.extend([namespace, cluster]);
    format!("{}/{stamp}-{backup}.db", parts.join("/"))
}

#[cfg(test)]
mod tests;
