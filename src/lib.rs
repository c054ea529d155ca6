//! etcd-pilot: a Kubernetes operator that runs etcd clusters.

// kube's `printcolumn(type_ = ..)` repeats per column by design; clippy reads it as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod api;
pub mod apidoc;
pub mod backup_store;
pub mod cli;
pub mod controllers;
pub mod crdgen;
pub mod etcd;
pub mod http_server;
pub mod manager;
pub mod metrics;
pub mod pki;
pub mod runtime;
pub mod seed;
pub mod shared;
pub mod static_pod;

/// Picks rustls' process-wide crypto provider, ring (the only one linked in: kube, etcd
/// and the S3 client all use it), so that no feature another crate turns on can make
/// rustls refuse to guess: every binary calls this first. Calling it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
