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
