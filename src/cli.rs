//! The `etcd-pilot` command, in the library so that the async code it runs is compiled
//! once, here, and not again in the binary (`src/main.rs` only calls [`main`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{apidoc, crdgen, manager};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "etcd-pilot", version, about = "A Kubernetes operator that runs etcd clusters")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "ETCD_PILOT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller manager (kubeconfig or in-cluster config).
    Run {
        /// Address of the /healthz, /readyz and /metrics server.
        #[arg(long, default_value = "0.0.0.0:8080", env = "ETCD_PILOT_LISTEN")]
        listen: SocketAddr,
        /// Repository of etcd images; members run `<repository>:v<version>` unless their
        /// EtcdCluster names an image.
        #[arg(long, default_value = "quay.io/coreos/etcd", env = "ETCD_PILOT_ETCD_IMAGE_REPOSITORY")]
        etcd_image_repository: String,
        /// Namespace of the leader-election Lease (in-cluster: the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "etcd-pilot-leader", env = "ETCD_PILOT_LEASE_NAME")]
        lease_name: String,
        /// This replica's identity in the Lease (in-cluster: the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// The cluster's DNS domain (fully qualified names in member certificates).
        #[arg(long, default_value = "cluster.local", env = "ETCD_PILOT_CLUSTER_DOMAIN")]
        cluster_domain: String,
        /// Watch and act only in these namespaces (comma-separated); unset: every
        /// namespace. With the chart's `watchNamespaces` the operator needs Roles in
        /// those namespaces only.
        #[arg(long, env = "ETCD_PILOT_WATCH_NAMESPACES", value_delimiter = ',')]
        watch_namespaces: Vec<String>,
        /// This operator's own image: restored members seed their volumes with it.
        #[arg(long, env = "ETCD_PILOT_OPERATOR_IMAGE", default_value = "etcd-pilot:latest")]
        operator_image: String,
        /// At start, bring installed CRDs of an older etcd-pilot to this version's
        /// (server-side apply; newer ones are left alone). `helm upgrade` never updates
        /// CRDs; the chart turns this on (`crds.apply`).
        #[arg(long, env = "ETCD_PILOT_APPLY_CRDS")]
        apply_crds: bool,
    },
    /// Seed a restored member's data dir from a snapshot in S3 (the init container of
    /// a restored cluster's members; credentials from the AWS environment variables).
    SeedMember {
        /// The restore's source, as recorded on the EtcdCluster (JSON).
        #[arg(long, env = "ETCD_PILOT_SEED_SOURCE")]
        source: String,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        peer_url: String,
        #[arg(long)]
        initial_cluster: String,
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "/usr/local/bin/etcdutl")]
        etcdutl: PathBuf,
        /// The etcd a restore to a point replays its segments in (a scratch server on
        /// 127.0.0.1).
        #[arg(long, default_value = "/usr/local/bin/etcd")]
        etcd: PathBuf,
    },
    /// Restore a backup into a scratch single-member etcd and measure it (a restore
    /// drill's pod; the source as a seed's, credentials from the AWS environment
    /// variables). The verdict is written as JSON to the termination log.
    VerifyBackup {
        /// The backup, as a seed reads it (JSON).
        #[arg(long, env = "ETCD_PILOT_SEED_SOURCE")]
        source: String,
        /// Scratch space (the pod's own volume).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "/usr/local/bin/etcdutl")]
        etcdutl: PathBuf,
        #[arg(long, default_value = "/usr/local/bin/etcd")]
        etcd: PathBuf,
        #[arg(long, default_value = "/dev/termination-log")]
        termination_log: PathBuf,
    },
    /// Write the kube-apiserver wiring etcd-pilot published (the Secret named in an
    /// EtcdCluster's status.apiServer.secretName, as `kubectl get secret -o yaml` prints
    /// it) into a kube-apiserver static pod manifest: the etcd flags and the certificate
    /// mount only; idempotent; the replaced manifest is kept in --backup-dir.
    WireStaticPod {
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long, default_value = "/etc/kubernetes/manifests/kube-apiserver.yaml")]
        manifest: PathBuf,
        #[arg(long, default_value = "/etc/kubernetes/pki/etcd-pilot")]
        cert_dir: PathBuf,
        #[arg(long, default_value = "/etc/kubernetes/etcd-pilot-backup")]
        backup_dir: PathBuf,
    },
    /// Print every CRD as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<name>.yaml` files here instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Also refresh the generated field reference in this Markdown file.
        #[arg(long)]
        api_doc: Option<PathBuf>,
    },
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json { builder.json().init() } else { builder.init() }
}

fn crds(out_dir: Option<PathBuf>, api_doc: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(doc) = api_doc {
        let text = std::fs::read_to_string(&doc).map_err(|e| format!("{}: {e}", doc.display()))?;
        let fresh = apidoc::splice(&text)
            .ok_or_else(|| format!("{}: no {} / {} markers", doc.display(), apidoc::BEGIN, apidoc::END))?;
        std::fs::write(&doc, fresh)?;
    }
    let Some(dir) = out_dir else {
        print!("{}", crdgen::all_yaml()?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    for crd in crdgen::all() {
        let path = dir.join(crdgen::file_name(&crd));
        std::fs::write(&path, crdgen::to_yaml(&crd)?).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn seed(
    source: &str,
    data_dir: &std::path::Path,
    member: crate::seed::Member,
    tools: (&std::path::Path, &std::path::Path),
) -> Result<(), Box<dyn std::error::Error>> {
    let source: crate::seed::SeedSource =
        serde_json::from_str(source).map_err(|e| format!("--source is not a restore source: {e}"))?;
    let creds = crate::backup_store::Credentials::DefaultChain;
    // The encryption keys, as the seed's Secret volumes hold them.
    let keys = crate::seed::read_keys(&source)?;
    let started = std::time::Instant::now();
    match crate::seed::seed_member(&source, creds, data_dir, &member, tools, keys).await? {
        true => eprintln!(
            "etcd-pilot: {} seeded from s3://{}/{} (sha256 {}, revision bumped by {}) in {:.1}s",
            member.name,
            source.bucket,
            source.key,
            source.sha256,
            source.bump_revision,
            started.elapsed().as_secs_f64()
        ),
        false => eprintln!("etcd-pilot: {} holds data already; not seeding", data_dir.display()),
    }
    Ok(())
}

async fn verify_backup(
    source: &str,
    dir: &std::path::Path,
    tools: (&std::path::Path, &std::path::Path),
    termination_log: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::drill::Outcome;
    let outcome = async {
        let source: crate::seed::SeedSource =
            serde_json::from_str(source).map_err(|e| format!("--source is not a backup source: {e}"))?;
        let keys = crate::seed::read_keys(&source)?;
        crate::drill::run(&source, crate::backup_store::Credentials::DefaultChain, keys, dir, tools)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let outcome = match outcome {
        Ok(report) => Outcome::Restored(report),
        Err(e) => Outcome::Failed(e),
    };
    let message = outcome.message();
    println!("{message}");
    std::fs::write(termination_log, &message).map_err(|e| format!("{}: {e}", termination_log.display()))?;
    match outcome {
        Outcome::Restored(_) => Ok(()),
        Outcome::Failed(e) => Err(e.into()),
    }
}

/// Host name and process id: unique enough outside a pod.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// Parses the command line and runs the command to its end.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::run_to_end("etcd-pilot", true, command(cli))
}

async fn command(cli: Cli) -> ExitCode {
    init_logging(cli.log_json);
    let result = match cli.command {
        Command::Crds { out_dir, api_doc } => crds(out_dir, api_doc),
        Command::WireStaticPod { secret_file, manifest, cert_dir, backup_dir } => {
            match crate::static_pod::run(&secret_file, &manifest, &cert_dir, &backup_dir) {
                Ok(done) => {
                    match &done.backup {
                        Some(b) => eprintln!(
                            "etcd-pilot: {} rewired (previous manifest kept in {}); the kubelet restarts kube-apiserver",
                            manifest.display(),
                            b.display()
                        ),
                        None if done.certificates_written => eprintln!(
                            "etcd-pilot: certificates in {} renewed; the manifest was current: restart kube-apiserver to load them",
                            cert_dir.display()
                        ),
                        None => eprintln!("etcd-pilot: {} is wired already; nothing written", manifest.display()),
                    }
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::SeedMember { source, data_dir, name, peer_url, initial_cluster, token, etcdutl, etcd } => {
            let member = crate::seed::Member { name, peer_url, initial_cluster, token };
            seed(&source, &data_dir, member, (&etcdutl, &etcd)).await
        }
        Command::VerifyBackup { source, dir, etcdutl, etcd, termination_log } => {
            verify_backup(&source, &dir, (&etcdutl, &etcd), &termination_log).await
        }
        Command::Run {
            listen,
            etcd_image_repository,
            lease_namespace,
            lease_name,
            identity,
            cluster_domain,
            watch_namespaces,
            operator_image,
            apply_crds,
        } => {
            let identity = identity.unwrap_or_else(default_identity);
            let config = manager::RunConfig {
                listen,
                etcd_image_repository,
                lease_namespace,
                lease_name,
                identity,
                cluster_domain,
                watch_namespaces: watch_namespaces.into_iter().filter(|n| !n.trim().is_empty()).collect(),
                operator_image,
                apply_crds,
            };
            manager::run(config).await.map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-pilot: {e}");
            ExitCode::FAILURE
        }
    }
}
