//! etcd-pilot: a Kubernetes operator that runs etcd clusters.

pub mod api;
pub mod crdgen;
pub mod etcd;
pub mod pki;
pub mod backup_store;
