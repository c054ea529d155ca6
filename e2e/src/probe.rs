//! Runs inside pods for the smoke tests: each subcommand checks one thing a real
//! cluster gives a pod, and exits non-zero with the reason when it does not.

use std::process::ExitCode;
use std::time::Duration;

fn usage() -> String {
    "probe resolve NAME | probe tcp HOST:PORT | probe s3-put ENDPOINT BUCKET KEY | probe api".to_string()
}

async fn run(args: &[String]) -> Result<String, String> {
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["resolve", name] => {
            let addrs: Vec<_> = tokio::net::lookup_host(format!("{name}:0"))
                .await
                .map_err(|e| format!("resolve {name}: {e}"))?
                .map(|a| a.ip().to_string())
                .collect();
            Ok(addrs.join(","))
        }
        ["tcp", addr] => {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect {addr}: timed out"))?
                .map_err(|e| format!("connect {addr}: {e}"))?;
            Ok(format!("connected to {addr}"))
        }
        ["s3-put", endpoint, bucket, key] => {
            use etcd_pilot::backup_store::{BackupStore, StoreConfig};
            let env = |k: &str| std::env::var(k).map_err(|_| format!("{k} not set"));
            let store = BackupStore::new(StoreConfig {
                part_size: 5 * 1024 * 1024,
                ..StoreConfig::s3_compatible(
                    endpoint,
                    bucket,
                    &env("AWS_ACCESS_KEY_ID")?,
                    &env("AWS_SECRET_ACCESS_KEY")?,
                )
            })
            .await
            .map_err(|e| e.to_string())?;
            let body =
                bytes::Bytes::from(format!("uploaded from pod {}\n", std::env::var("HOSTNAME").unwrap_or_default()));
            let up = store
                .upload(key, futures::stream::iter([Ok::<_, std::io::Error>(body)]), Default::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("uploaded {} bytes sha256 {}", up.size, up.sha256))
        }
        ["api"] => {
            // In-cluster config: the ServiceAccount token and CA the kubelet mounts.
            let client = kube::Client::try_default().await.map_err(|e| format!("in-cluster config: {e}"))?;
            let v = client.apiserver_version().await.map_err(|e| format!("API: {e}"))?;
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(client);
            let n = pods.list(&Default::default()).await.map_err(|e| format!("list pods: {e}"))?.items.len();
            Ok(format!("API {}.{} as the pod's ServiceAccount; {n} pods", v.major, v.minor))
        }
        _ => Err(usage()),
    }
}

/// Runs the probe the command line names.
pub fn main() -> ExitCode {
    etcd_pilot::run_to_end("probe", false, command())
}

async fn command() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::FAILURE
        }
    }
}
