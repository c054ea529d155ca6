//! The EtcdCluster reconciler: observe -> plan -> act -> status. [`plan`] is the pure
//! core; the rest talks to Kubernetes and etcd.

pub mod build;
pub mod observe;
pub mod plan;
