//! Types shared by more than one kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where snapshots live: a bucket in S3 or any S3-compatible store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Bucket name. The bucket must exist; etcd-pilot never creates buckets.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix for every object written, without a leading slash (e.g. `prod/etcd`).
    /// Objects are written as `<prefix>/<namespace>/<cluster>/<timestamp>-<backup>.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint URL of an S3-compatible store (e.g. `https://minio.storage:9000`).
    /// Unset means AWS S3 in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region to sign requests for. Most S3-compatible stores accept any value.
    #[serde(default = "default_region")]
    pub region: String,
    /// Use path-style addressing (`endpoint/bucket/key`) instead of virtual-hosted
    /// style. Most S3-compatible stores need this. Defaults to true when `endpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// A Secret in the same namespace holding static credentials. Unset means the standard
    /// AWS credential chain of the operator pod (environment, web identity / IRSA,
    /// container or instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsSecret>,
    /// Size in MiB of each part of a multipart upload; snapshots smaller than one part
    /// are uploaded with a single PUT. Memory used by an upload is about two parts (one
    /// is sent while the next is read).
    #[serde(default = "default_part_size_mib")]
    #[schemars(range(min = 5, max = 5120))]
    pub part_size_mib: i32,
    /// Encryption at rest by etcd-pilot: what is written here (snapshots, the continuous
    /// backup's segments and index) is sealed with AES-256-GCM, chunk by chunk, before it
    /// leaves the operator; anyone who can read the bucket reads no Secret of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// S3 server-side encryption, asked of the store for every object written (for stores
    /// that offer it; bucket policies often demand it). Independent of `encryption`, which
    /// etcd-pilot does itself: the two may be combined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
}

/// S3 server-side encryption of the objects written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSideEncryption {
    /// `AES256` (SSE-S3: keys the store manages) or `aws:kms` (SSE-KMS).
    #[serde(rename = "type")]
    pub kind: SseType,
    /// The KMS key for `aws:kms` (id, ARN or alias); unset: the bucket's default key.
    /// Refused with `AES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// A kind of S3 server-side encryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SseType {
    /// SSE-S3: AES-256 under keys the store manages.
    #[serde(rename = "AES256")]
    Aes256,
    /// SSE-KMS: under a KMS key.
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl ServerSideEncryption {
    /// Why the settings cannot be sent as they are, if they cannot.
    pub fn problem(&self) -> Option<String> {
        (self.kind == SseType::Aes256 && self.kms_key_id.is_some()).then(|| {
            "serverSideEncryption.kmsKeyId is for type aws:kms; type AES256 uses the store's own keys".to_string()
        })
    }
}

/// The keys of a target's encryption at rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// 256-bit keys, each an entry of a Secret in the same namespace: 32 raw bytes, or
    /// their base64 or hex text (`openssl rand -base64 32`). The first seals what is
    /// written; every one may open what is read. To rotate: put the new key first and keep
    /// the old ones for as long as backups they sealed are kept.
    #[schemars(length(min = 1))]
    pub keys: Vec<EncryptionKey>,
}

/// One key: an entry of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionKey {
    /// The Secret, in the namespace of the resource that names the target.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The entry of the Secret that holds the key.
    #[schemars(length(min = 1))]
    pub key: String,
}

impl EncryptionKey {
    /// How objects name the key: `<secret>/<entry>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.secret_name, self.key)
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_part_size_mib() -> i32 {
    16
}

impl S3Target {
    /// Path-style addressing unless the user said otherwise: on for custom endpoints
    /// (what S3-compatible stores need), off for AWS itself.
    pub fn path_style(&self) -> bool {
        self.force_path_style.unwrap_or(self.endpoint.is_some())
    }
}

/// A reference to a Secret with S3 credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsSecret {
    /// Name of the Secret, in the namespace of the resource that refers to it.
    pub name: String,
    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
    /// Key of an optional session token in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_string()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_string()
}

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where a job-like resource (backup, restore) is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not started yet.
    #[default]
    Pending,
    /// Under way.
    Running,
    /// Finished and verified.
    Succeeded,
    /// Stopped with an error; see `status.error`.
    Failed,
}

impl Phase {
    /// True once nothing more will happen to the resource.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the schema lets through as a cron expression, at admission: five fields of cron
/// characters, or a nickname. The API server refuses anything else (`every hour`) with
/// this pattern in its message; `validation::parse_cron` then judges the fields themselves (a
/// condition, as before).
pub const CRON_PATTERN: &str =
    r"^\s*((?i:@(yearly|annually|monthly|weekly|daily|hourly))|[0-9A-Za-z*?,/#-]+(\s+[0-9A-Za-z*?,/#-]+){4})\s*$";
