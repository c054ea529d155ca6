//! `etcd-pilot-image`: writes the operator image as a docker-archive tarball
//! (`make image`). No Docker engine or registry needed; load it with `docker load -i`,
//! `podman load -i`, or push it with `skopeo copy docker-archive:<file> docker://<repo>:<tag>`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Write the etcd-pilot operator image as a docker-archive tarball")]
struct Args {
    /// The image's name and tag, as the chart's image.repository:image.tag.
    #[arg(long)]
    tag: String,
    /// The etcd-pilot binary (`target/release/etcd-pilot`).
    #[arg(long)]
    binary: PathBuf,
    /// An etcdutl 3.5 binary, which seeds restored members.
    #[arg(long)]
    etcdutl: PathBuf,
    /// An etcd 3.5 server binary, in which a restore to a point replays segments.
    #[arg(long)]
    etcd: PathBuf,
    /// Where to write the tarball.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("etcd-pilot-image: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    match etcd_pilot_image::operator(&args.tag, &args.binary, &args.etcdutl, &args.etcd)
        .and_then(|i| i.write(&args.out))
    {
        Ok(()) => {
            println!("{} written as {}", args.tag, args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("etcd-pilot-image: {e}");
            ExitCode::FAILURE
        }
    }
}
