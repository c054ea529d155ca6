//! Why a pass of the EtcdBackup controller failed: one variant per step. A backup that
//! fails is not a pass that fails: that is the backup's `Failed` phase. These are the
//! passes that could not even record what happened.

use crate::runtime::runner::{Category, PassError};

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
    #[error("operation slot: {0}")]
    Slot(#[source] kube::Error),
    #[error("cleanup: deleting the backup's object: {0}")]
    Cleanup(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl PassError for Error {
    fn step(&self) -> &'static str {
        match self {
            Error::Lease(_) => "lease",
            Error::Observe { .. } => "observe",
            Error::Slot(_) => "slot",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
            Error::Status(_) => "status",
        }
    }

    fn lease(error: kube::Error) -> Self {
        Error::Lease(error)
    }

    fn category(&self) -> Category {
        match self {
            Error::Cleanup(_) => Category::ObjectStore,
            Error::Lease(_) | Error::Observe { .. } | Error::Slot(_) | Error::Finalizer(_) | Error::Status(_) => {
                Category::Kubernetes
            }
        }
    }
}

pub fn observe(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Observe { what, source }
}
