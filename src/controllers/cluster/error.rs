//! Why a pass of the EtcdCluster controller failed: one variant per step, named in the
//! log and in the `step` label of `etcdpilot_reconcile_errors_total`.

use crate::etcd::EtcdError;
use crate::pki::PkiError;
use crate::runtime::runner::{Category, PassError};
use crate::shared::secrets::AccessError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: cannot read the Lease: {0}")]
    Lease(#[source] kube::Error),
    #[error("observe: {what}: {source}")]
    Observe {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("observe: took longer than {0:?}; a pass must finish well inside the Lease")]
    ObserveTimeout(std::time::Duration),
    #[error("certificates: {0}")]
    Certificates(#[from] PkiError),
    #[error("certificates: {0}")]
    ClientSecret(#[from] AccessError),
    #[error("objects: {what}: {source}")]
    Objects {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("record: {what}: {source}")]
    Record {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("act: {what}: {source}")]
    ActKube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("act: {what}: {source}")]
    ActEtcd {
        what: String,
        #[source]
        source: EtcdError,
    },
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl PassError for Error {
    fn step(&self) -> &'static str {
        match self {
            Error::Lease(_) => "lease",
            Error::Observe { .. } | Error::ObserveTimeout(_) => "observe",
            Error::Certificates(_) | Error::ClientSecret(_) => "certificates",
            Error::Objects { .. } => "objects",
            Error::Record { .. } => "record",
            Error::ActKube { .. } | Error::ActEtcd { .. } => "act",
            Error::Status(_) => "status",
        }
    }

    fn lease(error: kube::Error) -> Self {
        Error::Lease(error)
    }

    fn category(&self) -> Category {
        match self {
            Error::ActEtcd { .. } => Category::Etcd,
            Error::Certificates(_) | Error::ClientSecret(AccessError::Missing(_) | AccessError::Incomplete(_)) => {
                Category::Certificates
            }
            Error::Lease(_)
            | Error::Observe { .. }
            | Error::ObserveTimeout(_)
            | Error::ClientSecret(AccessError::Read { .. })
            | Error::Objects { .. }
            | Error::Record { .. }
            | Error::ActKube { .. }
            | Error::Status(_) => Category::Kubernetes,
        }
    }
}

/// `map_err` helpers that say what was being done.
pub fn observe(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Observe { what, source }
}

pub fn objects(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Objects { what, source }
}

pub fn record(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Record { what, source }
}

pub fn act_kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::ActKube { what, source }
}

pub fn act_etcd(what: impl Into<String>) -> impl FnOnce(EtcdError) -> Error {
    let what = what.into();
    move |source| Error::ActEtcd { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_names_its_step() {
        let e = act_etcd("remove member main-4")(EtcdError::NoLeader);
        assert_eq!((e.step(), e.category()), ("act", Category::Etcd), "the same step, on etcd");
        let k = act_kube("create pod main-4")(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!((k.step(), k.category()), ("act", Category::Kubernetes), "the same step, on Kubernetes");
        assert!(e.to_string().starts_with("act: remove member main-4: "), "{e}");
        assert_eq!(Error::ObserveTimeout(std::time::Duration::from_secs(10)).step(), "observe");
        assert_eq!(Error::ClientSecret(AccessError::Missing("c".into())).step(), "certificates");
    }
}
