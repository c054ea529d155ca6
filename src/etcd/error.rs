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

    /// What etcd refused the request with, when it is one of the refusals etcd-pilot acts on.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            EtcdError::Learner { .. } => Some(Refusal::NotForLearner),
            _ => self.etcd_message().and_then(Refusal::of),
        }
    }
}

/// A request etcd refused, as etcd names it. etcd's gRPC errors are fixed descriptions
/// (`rpctypes` in etcd's source), which is how etcd's own client tells them apart; they
/// are read here, once, into a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Membership changes are refused for a few seconds after a member (re)connected.
    UnhealthyCluster,
    /// A learner is promoted only once it caught up with the leader.
    LearnerNotInSync,
    /// One learner at a time.
    TooManyLearners,
    MemberNotFound,
    /// The member asked is a learner, which serves no such request.
    NotForLearner,
    /// The NOSPACE alarm is raised: writes are refused.
    NoSpace,
    /// The revision asked for was compacted away.
    Compacted,
    /// The revision asked for is in the future.
    FutureRevision,
}

impl Refusal {
    const DESCRIPTIONS: [(Refusal, &'static str); 8] = [
        (Refusal::UnhealthyCluster, "etcdserver: unhealthy cluster"),
        (Refusal::LearnerNotInSync, "etcdserver: can only promote a learner member which is in sync with leader"),
        (Refusal::TooManyLearners, "etcdserver: too many learner members in cluster"),
        (Refusal::MemberNotFound, "etcdserver: member not found"),
        (Refusal::NotForLearner, "etcdserver: rpc not supported for learner"),
        (Refusal::NoSpace, "etcdserver: mvcc: database space exceeded"),
        (Refusal::Compacted, "etcdserver: mvcc: required revision has been compacted"),
        (Refusal::FutureRevision, "etcdserver: mvcc: required revision is a future revision"),
    ];

    /// The refusal etcd's message names, if it is one of these.
    pub fn of(message: &str) -> Option<Refusal> {
        Self::DESCRIPTIONS.iter().find(|(_, d)| *d == message.trim()).map(|(r, _)| *r)
    }

    /// "Not yet": etcd will accept the same request a little later.
    pub fn is_not_yet(self) -> bool {
        matches!(self, Refusal::UnhealthyCluster | Refusal::LearnerNotInSync)
    }
}

pub(super) fn is_learner_refusal(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if Refusal::of(s.message()) == Some(Refusal::NotForLearner))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(msg: &str) -> EtcdError {
        EtcdError::Rpc {
            op: "member add",
            endpoint: "e".into(),
            source: etcd_client::Error::GRpcStatus(tonic::Status::unavailable(msg)),
        }
    }

    #[test]
    fn refusals_are_read_once_into_a_type() {
        for (msg, want) in [
            ("etcdserver: unhealthy cluster", Some(Refusal::UnhealthyCluster)),
            (
                "etcdserver: can only promote a learner member which is in sync with leader",
                Some(Refusal::LearnerNotInSync),
            ),
            ("etcdserver: too many learner members in cluster", Some(Refusal::TooManyLearners)),
            ("etcdserver: member not found", Some(Refusal::MemberNotFound)),
            ("etcdserver: rpc not supported for learner", Some(Refusal::NotForLearner)),
            ("etcdserver: mvcc: database space exceeded", Some(Refusal::NoSpace)),
            ("etcdserver: request timed out", None),
            ("something else", None),
        ] {
            assert_eq!(refused(msg).refusal(), want, "{msg}");
        }
        assert_eq!(EtcdError::Learner { op: "status", endpoint: "e".into() }.refusal(), Some(Refusal::NotForLearner));
        assert_eq!(EtcdError::NoLeader.refusal(), None);
        assert!(Refusal::UnhealthyCluster.is_not_yet() && Refusal::LearnerNotInSync.is_not_yet());
        assert!(!Refusal::MemberNotFound.is_not_yet() && !Refusal::TooManyLearners.is_not_yet());
        assert!(refused("etcdserver: rpc not supported for learner").is_learner_refusal());
    }
}
