//! The EtcdCluster reconciler: observe -> plan -> act -> status. [`plan`], [`observe`],
//! [`build`], [`status`] and [`tls`] are pure; [`controller`] talks to Kubernetes and etcd.

pub mod build;
pub mod controller;
pub mod observe;
pub mod plan;
pub mod status;
pub mod tls;
