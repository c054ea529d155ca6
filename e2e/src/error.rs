use std::path::PathBuf;

/// What stops the testbed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("missing prerequisite: {0} (run `make testbed-up`, which installs it)")]
    Prereq(String),
    #[error("refusing to start: {0}")]
    Busy(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {output}")]
    Command { cmd: String, status: String, output: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("timed out after {secs}s waiting for {what}; logs in {logs}")]
    Timeout { what: String, secs: u64, logs: String },
    #[error("{0}")]
    Other(String),
    #[error("image: {0}")]
    Image(#[from] etcd_pilot_image::ImageError),
}

pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

/// Maps an io::Error to one that names the path.
pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TestbedError {
    let path = path.into();
    move |source| TestbedError::Io { path, source }
}
