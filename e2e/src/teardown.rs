//! Taking a testbed down: its processes stopped in order, its network rules and mounts
//! removed, its directory deleted; also a half-started one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::layout::*;
use crate::procs::{self, link_exists};

/// Stops everything a testbed started and removes its state. Safe to run twice, and on
/// a half-started testbed.
pub fn down(dir: &Path) {
    let state = State::load(dir).ok();
    let named = |prefix: &str| -> Vec<u32> {
        state.iter().flat_map(|s| s.processes.iter()).filter(|p| p.name.starts_with(prefix)).map(|p| p.pid).collect()
    };
    let grace = Duration::from_secs(5);
    // Order: what uses the API first; containers before their runtimes; etcd last.
    procs::stop_all(&named("agent"), grace);
    procs::stop_all(&named("kube-proxy"), grace);
    procs::stop_all(&named("kubelet"), grace);
    let dir_str = dir.display().to_string();
    // Shims and containers of this testbed (their command lines name its directory).
    let containerd: Vec<u32> = named("containerd");
    let shims: Vec<u32> = procs::trees_mentioning(&dir_str).into_iter().filter(|p| !containerd.contains(p)).collect();
    procs::stop_all(&shims, Duration::from_secs(1));
    procs::stop_all(&containerd, grace);
    for name in ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "dnsmasq", "s3s-fs", "etcd"] {
        procs::stop_all(&named(name), grace);
    }
    // Anything left that names the directory (e.g. from a crashed up).
    procs::stop_all(&procs::trees_mentioning(&dir_str), grace);
    if let Some(s) = &state {
        let _ = Command::new(s.tools.join("kube-proxy")).arg("--cleanup").output();
    }
    remove_iptables_rules();
    unmount_under(dir);
    let mut links = vec![BRIDGE.to_string()];
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        links.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(POD_BRIDGE_PREFIX)),
        );
    }
    for l in links.iter().filter(|l| link_exists(l)) {
        let _ = Command::new("ip").args(["link", "del", l]).output();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Takes out every chain and rule the kubelets, kube-proxy and the CNI plugins added
/// (`KUBE-*`, `CNI-*`), in both address families; the rest of the rules stay as they were.
fn remove_iptables_rules() {
    for (save, restore) in [("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")] {
        let Ok(out) = Command::new(save).output() else { continue };
        let rules = String::from_utf8_lossy(&out.stdout);
        if !rules.contains("KUBE-") && !rules.contains("CNI-") {
            continue;
        }
        let kept: String =
            rules.lines().filter(|l| !l.contains("KUBE-") && !l.contains("CNI-")).map(|l| format!("{l}\n")).collect();
        let child = Command::new(restore).stdin(std::process::Stdio::piped()).spawn();
        if let Ok(mut child) = child {
            if let Some(stdin) = child.stdin.as_mut() {
                use std::io::Write;
                let _ = stdin.write_all(kept.as_bytes());
            }
            let _ = child.wait();
        }
    }
}

fn unmount_under(dir: &Path) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.display().to_string();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            // SAFETY: umount2 with a valid C string; MNT_DETACH lets busy mounts go lazily.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}
