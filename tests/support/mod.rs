//! Real servers for integration tests: etcd from Debian's packages, an S3-compatible
//! store. Each gets free ports and a temp dir; each is killed when its handle drops,
//! including when a test panics.
#![allow(dead_code)]

pub mod etcd;
pub mod ports;
pub mod s3;

/// Kills and reaps a child process when dropped, also when a test panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcd and etcdutl 3.5.30, as the operator image carries them (fetched by the same
/// script as `make image`): the directory that holds both.
pub fn etcd35() -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .args(["hack/debian-etcd.sh", "3.5.30", "3.5.30-2"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hack/debian-etcd.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
