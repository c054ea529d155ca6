//! Starting, finding and stopping the testbed's processes.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, TestbedError, io};

/// Starts `cmd` detached (own process group, so it outlives `up`), logging to `log`.
pub fn spawn(cmd: &mut Command, log: &Path) -> Result<u32> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io(log))?;
    let err = file.try_clone().map_err(io(log))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| TestbedError::Other(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    Ok(child.id())
}

/// Runs a command to completion; its output goes into the error when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| TestbedError::Other(format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            cmd: format!("{:?}", cmd),
            status: out.status.to_string(),
            output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: i32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns once all are gone.
pub fn stop_all(pids: &[u32], grace: Duration) {
    for &p in pids {
        signal(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids.iter().filter(|&&p| alive(p)) {
        signal(p, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (pid, parent pid, command line) of every process.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push((pid, ppid.unwrap_or(0), cmdline));
    }
    out
}

/// Processes whose command line mentions `needle`, and all their descendants
/// (containerd shims are re-parented to init, and containers are their children).
pub fn trees_mentioning(needle: &str) -> Vec<u32> {
    let procs = processes();
    let me = std::process::id();
    let mut found: Vec<u32> =
        procs.iter().filter(|(p, _, c)| *p != me && c.contains(needle)).map(|(p, _, _)| *p).collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (p, pp, _) in &procs {
            if *pp == parent && !found.contains(p) && *p != me {
                found.push(*p);
            }
        }
        i += 1;
    }
    found
}

/// Waits until a TCP port accepts connections.
pub async fn wait_tcp(addr: &str, within: Duration, what: &str, logs: &Path) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(timeout(what, within, logs));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn timeout(what: &str, within: Duration, logs: &Path) -> TestbedError {
    TestbedError::Timeout { what: what.to_string(), secs: within.as_secs(), logs: logs.display().to_string() }
}

/// A free TCP port on `ip` (the kernel picks; never a fixed port).
pub fn free_port(ip: &str) -> Result<u16> {
    let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| TestbedError::Other(format!("bind {ip}:0: {e}")))?;
    Ok(l.local_addr().map_err(|e| TestbedError::Other(e.to_string()))?.port())
}

/// Resident memory of a process in KiB (0 if gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

/// Whether a network link of this name exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}
