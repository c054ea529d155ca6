//! The `etcd-pilot` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use etcd_pilot::{apidoc, crdgen, manager};

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

/// Host name and process id: unique enough outside a pod.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    etcd_pilot::install_crypto_provider();
    init_logging(cli.log_json);
    let result = match cli.command {
        Command::Crds { out_dir, api_doc } => crds(out_dir, api_doc),
        Command::Run {
            listen,
            etcd_image_repository,
            lease_namespace,
            lease_name,
            identity,
            cluster_domain,
            watch_namespaces,
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
