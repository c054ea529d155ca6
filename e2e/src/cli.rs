//! `testbed up | down | status | load-image`: a real Kubernetes cluster on this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{agent, cluster, default_dir, default_tools, images, teardown};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "testbed", about = "A real multi-node Kubernetes cluster on this machine")]
struct Cli {
    /// State directory (never inside the repository).
    #[arg(long, global = true, env = "ETCD_PILOT_TESTBED_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the cluster; refuses if anything of a testbed is in the way.
    Up {
        /// Where e2e/hack/install.sh put the Kubernetes binaries and helm.
        #[arg(long, env = "ETCD_PILOT_TOOLS", default_value_os_t = default_tools())]
        tools: PathBuf,
        #[arg(long, env = "TESTBED_CONTROL_PLANES", default_value_t = 3)]
        control_planes: u8,
        #[arg(long, env = "TESTBED_WORKERS", default_value_t = 3)]
        workers: u8,
        /// etcd-pilot binary to build the operator image from.
        #[arg(long)]
        operator: Option<PathBuf>,
        /// probe binary for the toolbox image.
        #[arg(long)]
        probe: Option<PathBuf>,
    },
    /// Stop everything the testbed started and remove its state.
    Down,
    /// What runs, and how to use it.
    Status {
        /// Exit non-zero unless every process runs and every node is Ready.
        #[arg(long)]
        check: bool,
    },
    /// Import an image tarball into every node.
    LoadImage { tarball: PathBuf },
    /// Build the etcd-pilot image from this binary and import it into every node.
    LoadOperator {
        /// The tarball `make image` wrote (tagged etcd-pilot.local/etcd-pilot:dev), or the
        /// operator binary to build the image from.
        path: PathBuf,
    },
    /// The agent (cluster DNS and volume provisioner); `up` starts it.
    #[command(hide = true)]
    Agent,
}

/// Parses the command line and runs the command to its end.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    etcd_pilot::run_to_end("testbed", true, command(cli))
}

async fn command(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Up { tools, control_planes, workers, operator, probe } => cluster::up(cluster::UpOptions {
            dir: cli.dir.clone(),
            tools,
            control_planes,
            workers,
            operator_binary: operator,
            probe_binary: probe,
        })
        .await
        .map(|state| print!("{}", cluster::usage(&state))),
        Command::Down => {
            teardown::down(&cli.dir);
            println!("testbed: down, {} removed", cli.dir.display());
            Ok(())
        }
        Command::Status { check } => cluster::status(&cli.dir, check).await.map(|s| print!("{s}")),
        Command::LoadImage { tarball } => images::load_image(&cli.dir, &tarball),
        Command::LoadOperator { path } => images::load_operator(&cli.dir, &path),
        Command::Agent => agent::run(&cli.dir).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed: {e}");
            ExitCode::FAILURE
        }
    }
}
