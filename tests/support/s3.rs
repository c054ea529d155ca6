use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

pub const ACCESS_KEY: &str = "etcdpilot-test";
pub const SECRET_KEY: &str = "etcdpilot-test-secret-key";

/// A real S3-compatible server (`s3s-fs`, installed by `make deps`) on a free port, with
/// its data in a temp dir. Killed on drop.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    child: Child,
}

impl S3Server {
    pub async fn start() -> S3Server {
        let root = tempfile::Builder::new().prefix("etcd-pilot-s3-").tempdir().expect("temp dir");
        let port = free_port();
        let log = std::fs::File::create(root.path().with_extension("log")).expect("log");
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("s3s-fs on PATH (make deps installs it)");
        let server = S3Server { endpoint: format!("http://127.0.0.1:{port}"), root, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Where s3s-fs keeps an object's bytes, to damage them in tests.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// A new bucket and the store of it, without a key prefix.
    #[allow(dead_code)]
    pub async fn store(&self, bucket: &str) -> etcd_pilot::backup_store::BackupStore {
        use etcd_pilot::backup_store::{BackupStore, StoreConfig};
        self.create_bucket(bucket);
        let config =
            StoreConfig { prefix: None, ..StoreConfig::s3_compatible(&self.endpoint, bucket, ACCESS_KEY, SECRET_KEY) };
        BackupStore::new(config).await.expect("store")
    }

    /// Makes a bucket (the store under test never creates buckets).
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).expect("bucket dir");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
