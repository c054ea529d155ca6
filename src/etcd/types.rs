//! What etcd-pilot reads from etcd and how it reaches it: TLS material, members,
//! a member's status, alarms, a snapshot stream.

use std::time::Duration;

use bytes::Bytes;
use etcd_client::AlarmType;
use futures::Stream;

use super::error::EtcdError;

/// PEM material for mutual TLS with etcd.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA that signed the members' server certificates.
    pub ca_pem: Vec<u8>,
    /// Client certificate (chain) presented to etcd.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// Name to check the server certificate against, when it differs from the endpoint host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Timeouts and TLS for every call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Time to open a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time for one ordinary request.
    pub request_timeout: Duration,
    /// Time for a defragmentation, which blocks the member while it rewrites its db file.
    pub defrag_timeout: Duration,
    /// Longest pause between two chunks of a snapshot stream.
    pub snapshot_idle_timeout: Duration,
    /// Mutual TLS, for `https://` endpoints.
    pub tls: Option<TlsMaterial>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            defrag_timeout: Duration::from_secs(300),
            snapshot_idle_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// A member as the member list reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started once.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started once.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl From<&etcd_client::Member> for Member {
    fn from(m: &etcd_client::Member) -> Self {
        Self {
            id: m.id(),
            name: m.name().to_string(),
            peer_urls: m.peer_urls().to_vec(),
            client_urls: m.client_urls().to_vec(),
            is_learner: m.is_learner(),
        }
    }
}

/// What one member says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: u64,
    /// Id of the cluster the member belongs to.
    pub cluster_id: u64,
    pub version: String,
    /// Size of the db file.
    pub db_size: i64,
    /// Bytes of the db file in use; `db_size - db_size_in_use` is what defragmentation frees.
    pub db_size_in_use: i64,
    /// Id of the leader this member follows; 0 when it knows of none.
    pub leader: u64,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    /// Errors the member reports (e.g. an active alarm).
    pub errors: Vec<String>,
    /// The store's revision when the member answered.
    pub revision: i64,
}

impl EndpointStatus {
    /// The member leads the cluster.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }

    /// The one definition of member health, used by the planner, the status and the
    /// timers: answered, knows a leader, and reports no error of its own. Alarms are
    /// not member health: etcd puts every active alarm of the cluster (NOSPACE, CORRUPT)
    /// into every member's errors, so they are cluster state ([`Self::alarms`]).
    pub fn is_healthy(&self) -> bool {
        self.leader != 0 && self.own_errors().next().is_none()
    }

    /// A learner is healthy when it answers with no error of its own (it may not know a
    /// leader yet while it catches up).
    pub fn is_healthy_learner(&self) -> bool {
        self.own_errors().next().is_none()
    }

    /// Errors that are not alarms.
    pub fn own_errors(&self) -> impl Iterator<Item = &String> {
        self.errors.iter().filter(|e| !e.contains("alarm:"))
    }

    /// The alarms this member reports (`NOSPACE`, `CORRUPT`), which are the cluster's.
    pub fn alarms(&self) -> Vec<String> {
        self.errors
            .iter()
            .filter_map(|e| e.split("alarm:").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

/// An active alarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    pub member_id: u64,
    pub kind: AlarmKind,
}

/// The alarms etcd raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// The backend quota is exhausted: etcd refuses writes until space is freed and the
    /// alarm disarmed.
    NoSpace,
    /// Corruption detected.
    Corrupt,
}

impl AlarmKind {
    pub(super) fn to_pb(self) -> AlarmType {
        match self {
            AlarmKind::NoSpace => AlarmType::Nospace,
            AlarmKind::Corrupt => AlarmType::Corrupt,
        }
    }
}

/// A snapshot being streamed from one member.
pub struct Snapshot {
    /// Member the snapshot comes from.
    pub endpoint: String,
    pub member_id: u64,
    /// etcd version of that member.
    pub version: String,
    /// The db file followed by etcd's SHA-256 of it, chunk by chunk, checked as it flows
    /// ([`super::snapshot::verify_stream`]). An error ends it; a stream that ends without
    /// error is whole and matched etcd's hash.
    pub stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, EtcdError>> + Send>>,
}
