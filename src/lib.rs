//! etcd-pilot: a Kubernetes operator that runs etcd clusters.

// kube's `printcolumn(type_ = ..)` repeats per column by design; clippy reads it as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod api;
pub mod apidoc;
pub mod backup_store;
pub mod crdgen;
pub mod etcd;
pub mod http_server;
pub mod manager;
pub mod metrics;
pub mod pki;
pub mod reconcile;
