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
pub mod drill;
pub mod etcd;
pub mod http_server;
pub mod manager;
pub mod metrics;
pub mod pki;
pub mod replay;
pub mod runtime;
pub mod seed;
pub mod shared;
pub mod static_pod;

/// Runs a command's async body to its end on a new tokio runtime (`threads`: a
/// multi-threaded one, else one on this thread), after picking the crypto provider: the
/// one start of every binary of the workspace (`name` prefixes a failure to start).
pub fn run_to_end(
    name: &str,
    threads: bool,
    body: impl std::future::Future<Output = std::process::ExitCode>,
) -> std::process::ExitCode {
    install_crypto_provider();
    let runtime = match threads {
        true => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        false => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(body),
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Picks rustls' process-wide crypto provider, ring (the only one linked in: kube, etcd
/// and the S3 client all use it), so that no feature another crate turns on can make
/// rustls refuse to guess: every binary calls this first. Calling it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
