//! The testbed: a real multi-node Kubernetes cluster (v1.20.2 built from Debian's source
//! package) on one bare Debian 12 machine, and helpers for the end-to-end tests.

pub mod agent;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod fixtures;
pub mod images;
pub mod layout;
pub mod nodes;
pub mod probe;
pub mod procs;
pub mod teardown;
pub mod traffic;

/// Default directory of the testbed's state (outside the repository).
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("ETCD_PILOT_TESTBED_DIR")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/etcd-pilot-testbed"))
}

/// Default directory of the tools `e2e/hack/install.sh` gathers.
pub fn default_tools() -> std::path::PathBuf {
    let cache = std::env::var_os("ETCD_PILOT_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/etcd-pilot")
    });
    cache.join("bin")
}
pub mod kit;
