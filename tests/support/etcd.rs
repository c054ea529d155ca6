use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use etcd_pilot::etcd::{AdminConfig, EtcdAdmin, TlsMaterial};
use etcd_pilot::pki;

use super::ports::free_port;

static RUN: AtomicU32 = AtomicU32::new(0);

/// TLS files a member is started with.
pub struct MemberTls {
    /// The CA and its key.
    pub ca_pair: pki::CertPair,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: TlsMaterial,
}

/// One etcd process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the process and waits for it, so that a new one may use its ports and dir.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops (`frozen`) or resumes the process: a member that hangs rather than refuses.
    pub fn freeze(&mut self, frozen: bool) {
        if let Some(pid) = self.pid() {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
            assert_eq!(rc, 0, "signal {signal} to etcd {pid}");
        }
    }

    /// True once the process has exited (e.g. after being removed from the cluster).
    pub fn has_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real etcd cluster of local processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub token: String,
    pub members: Vec<Member>,
    pub tls: Option<MemberTls>,
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` members as one new cluster and waits until it has a leader.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[], false).await
    }

    /// Like [`start`], with extra etcd flags and optionally mutual TLS on both ports.
    pub async fn start_with(n: usize, extra_args: &[&str], tls: bool) -> Cluster {
        let dir = tempfile::Builder::new().prefix("etcd-pilot-it-").tempdir().expect("temp dir");
        // A token per run: a stale process of an earlier run can never join this cluster.
        let token = format!("it-{}-{}", std::process::id(), RUN.fetch_add(1, Ordering::SeqCst));
        let tls = tls.then(|| make_tls(dir.path()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members: Vec<Member> = (0..n).map(|i| new_member(dir.path(), &format!("m{i}"), scheme)).collect();
        let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let mut cluster = Cluster {
            dir,
            token,
            members: Vec::new(),
            tls,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for m in &mut members {
            cluster.spawn(m, &initial.join(","), "new");
        }
        cluster.members = members;
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client_url.clone()).collect()
    }

    pub fn admin_config(&self) -> AdminConfig {
        AdminConfig { tls: self.tls.as_ref().map(|t| t.client.clone()), ..AdminConfig::default() }
    }

    pub fn admin(&self) -> EtcdAdmin {
        EtcdAdmin::new(self.endpoints(), self.admin_config())
    }

    /// A KV client for writes and reads in tests.
    pub async fn kv(&self) -> etcd_client::Client {
        let mut opts = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(5));
        if let Some(t) = &self.tls {
            opts = opts.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&t.client.ca_pem))
                    .identity(etcd_client::Identity::from_pem(&t.client.cert_pem, &t.client.key_pem)),
            );
        }
        etcd_client::Client::connect(self.endpoints(), Some(opts)).await.expect("kv client")
    }

    /// A member not yet started, with its own ports and data dir.
    pub fn prepare_member(&self, name: &str) -> Member {
        new_member(self.dir.path(), name, if self.tls.is_some() { "https" } else { "http" })
    }

    /// Starts a member that joins the existing cluster (after `member add`).
    pub fn join(&mut self, mut m: Member, initial_cluster: &str) {
        self.spawn(&mut m, initial_cluster, "existing");
        self.members.push(m);
    }

    pub fn member(&mut self, name: &str) -> &mut Member {
        self.members.iter_mut().find(|m| m.name == name).expect("member by name")
    }

    fn spawn(&self, m: &mut Member, initial_cluster: &str, state: &str) {
        let log = std::fs::File::create(&m.log).expect("log file");
        let mut cmd = Command::new("etcd");
        cmd.args([
            "--name",
            &m.name,
            "--data-dir",
            m.data_dir.to_str().expect("utf-8 path"),
            "--listen-client-urls",
            &m.client_url,
            "--advertise-client-urls",
            &m.client_url,
            "--listen-peer-urls",
            &m.peer_url,
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]);
        if let Some(t) = &self.tls {
            let (ca, cert, key) = (t.ca.to_str().unwrap(), t.cert.to_str().unwrap(), t.key.to_str().unwrap());
            cmd.args(["--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key]);
            cmd.args(["--peer-client-cert-auth", "--peer-trusted-ca-file", ca, "--peer-cert-file", cert]);
            cmd.args(["--peer-key-file", key]);
        }
        cmd.args(&self.extra_args);
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("log fd")).stderr(log);
        m.child = Some(cmd.spawn().expect("etcd from Debian's etcd-server package (make deps)"));
    }

    /// Waits until some member reports a leader.
    pub async fn wait_for_leader(&self, within: Duration) {
        let admin = self.admin();
        let deadline = Instant::now() + within;
        loop {
            if admin.leader().await.is_ok_and(|s| s.leader != 0) {
                return;
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}; logs in {}", self.dir.path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of a member's log, for assertion messages.
    pub fn log_tail(&self, name: &str) -> String {
        let m = self.members.iter().find(|m| m.name == name).expect("member");
        let text = std::fs::read_to_string(&m.log).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

fn new_member(dir: &Path, name: &str, scheme: &str) -> Member {
    Member {
        name: name.to_string(),
        client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
        peer_url: format!("{scheme}://127.0.0.1:{}", free_port()),
        data_dir: dir.join(format!("{name}.etcd")),
        log: dir.join(format!("{name}.log")),
        child: None,
    }
}

/// One CA, one certificate for every member (server and client auth, valid for
/// 127.0.0.1 and localhost), and a client certificate for the admin.
fn make_tls(dir: &Path) -> MemberTls {
    let year = Duration::from_secs(365 * 86400);
    let ca = pki::generate_ca("etcd-pilot test CA", year).expect("CA");
    let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let member = pki::issue(&ca, "etcd member", &sans, pki::Usage::Peer, year).expect("member cert");
    let client = pki::issue(&ca, "etcd-pilot", &[], pki::Usage::Client, year).expect("client cert");
    let write = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).expect("write pem");
        p
    };
    MemberTls {
        ca_pair: ca.clone(),
        ca: write("ca.crt", &ca.cert_pem),
        cert: write("member.crt", &member.cert_pem),
        key: write("member.key", &member.key_pem),
        client: TlsMaterial {
            ca_pem: ca.cert_pem.into_bytes(),
            cert_pem: client.cert_pem.into_bytes(),
            key_pem: client.key_pem.into_bytes(),
            server_name: None,
        },
    }
}
