use std::time::Duration;

/// What can go wrong talking to etcd, with the operation and endpoint it happened on.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoints to talk to")]
    NoEndpoints,
    #[error("cannot connect to etcd at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("connecting to etcd at {endpoint} timed out after {after:?}")]
    ConnectTimeout { endpoint: String, after: Duration },
    #[error("etcd {op} at {endpoint} failed: {source}")]
    Rpc {
        op: &'static str,
        endpoint: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op} at {endpoint} timed out after {after:?}")]
    Timeout { op: &'static str, endpoint: String, after: Duration },
    #[error("refusing {op} at {endpoint}: the member there is a learner")]
    Learner { op: &'static str, endpoint: String },
    #[error("etcd {op} failed at every endpoint: {}", join(.errors))]
    AllEndpointsFailed { op: &'static str, errors: Vec<EtcdError> },
    #[error("etcd member {id:x} is not in the member list")]
    MemberNotFound { id: u64 },
    #[error("the etcd cluster has no leader")]
    NoLeader,
    #[error("leader {id:x} advertises no client URL")]
    LeaderUnreachable { id: u64 },
    #[error("snapshot from {endpoint} is corrupt or incomplete: {detail}")]
    SnapshotCorrupt { endpoint: String, detail: String },
    #[error("invalid TLS material for etcd: {0}")]
    Tls(String),
}

fn join(errors: &[EtcdError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl EtcdError {
    /// True when the request surely did not reach an etcd that could apply it: it is then
    /// safe to send a write to the next endpoint. A timeout is not such a case.
    pub fn not_applied(&self) -> bool {
        match self {
            EtcdError::Connect { .. } | EtcdError::ConnectTimeout { .. } | EtcdError::Learner { .. } => true,
            EtcdError::Rpc { source, .. } => is_learner_refusal(source) || is_unavailable(source),
            _ => false,
        }
    }

    /// True when etcd refused because the member is a learner.
    pub fn is_learner_refusal(&self) -> bool {
        match self {
            EtcdError::Learner { .. } => true,
            EtcdError::Rpc { source, .. } => is_learner_refusal(source),
            _ => false,
        }
    }

    /// The gRPC message etcd sent, if any (e.g. `etcdserver: too many learner members`).
    pub fn etcd_message(&self) -> Option<&str> {
        match self {
            EtcdError::Rpc { source: etcd_client::Error::GRpcStatus(s), .. } => Some(s.message()),
            _ => None,
        }
    }
}

pub(super) fn is_learner_refusal(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("not supported for learner"))
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && !s.message().contains("etcdserver:")
        }
        _ => false,
    }
}
