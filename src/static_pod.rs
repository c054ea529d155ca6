//! `etcd-pilot wire-static-pod`: writes the wiring etcd-pilot publishes (the Secret in
//! `status.apiServer.secretName`) into a kube-apiserver static pod manifest of kubeadm's
//! form. Idempotent (nothing is written when nothing changes, so the kubelet does not
//! restart kube-apiserver for nothing), keeps a backup of the manifest it replaces, and
//! touches only the etcd flags and the mount of the certificate directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod, Secret, Volume, VolumeMount};

/// The volume (and mount) holding the certificates written next to the manifest.
pub const VOLUME: &str = "etcd-pilot-certs";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Secret as `kubectl get secret -o yaml` prints it: {source}")]
    Secret {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("the Secret lacks {0}: is it the one named in status.apiServer.secretName?")]
    MissingKey(&'static str),
    #[error("{path} is not a pod manifest: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("the manifest has no container named kube-apiserver")]
    NoApiServer,
}

/// What the Secret carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wiring {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub etcd_servers: String,
    pub overrides: String,
}

impl Wiring {
    pub fn from_secret(secret: &Secret) -> Result<Wiring, Error> {
        let data = secret.data.clone().unwrap_or_default();
        let string = secret.string_data.clone().unwrap_or_default();
        let get = |k: &'static str| -> Result<Vec<u8>, Error> {
            data.get(k)
                .map(|b| b.0.clone())
                .or_else(|| string.get(k).map(|s| s.clone().into_bytes()))
                .ok_or(Error::MissingKey(k))
        };
        Ok(Wiring {
            ca: get("ca.crt")?,
            cert: get("tls.crt")?,
            key: get("tls.key")?,
            etcd_servers: String::from_utf8_lossy(&get("etcd-servers")?).trim().to_string(),
            overrides: String::from_utf8_lossy(&get("etcd-servers-overrides")?).trim().to_string(),
        })
    }
}

/// The manifest with the wiring in it, or `None` when it is in already. `cert_dir` is
/// where the certificate files are (mounted read-only at the same path).
pub fn wire(pod: &Pod, w: &Wiring, cert_dir: &str) -> Result<Option<Pod>, Error> {
    let mut out = pod.clone();
    let spec = out.spec.as_mut().ok_or(Error::NoApiServer)?;
    let c = spec.containers.iter_mut().find(|c| c.name == "kube-apiserver").ok_or(Error::NoApiServer)?;
    let mut flags: BTreeMap<&str, Option<String>> = BTreeMap::from([
        ("--etcd-servers", Some(w.etcd_servers.clone())),
        ("--etcd-servers-overrides", (!w.overrides.is_empty()).then(|| w.overrides.clone())),
        ("--etcd-cafile", Some(format!("{cert_dir}/ca.crt"))),
        ("--etcd-certfile", Some(format!("{cert_dir}/apiserver-etcd-client.crt"))),
        ("--etcd-keyfile", Some(format!("{cert_dir}/apiserver-etcd-client.key"))),
    ]);
    // kubeadm writes flags into `command`; some manifests use `args`.
    let list = if c.command.as_ref().is_some_and(|cmd| cmd.iter().any(|a| a.starts_with("--"))) {
        c.command.get_or_insert_with(Vec::new)
    } else {
        c.args.get_or_insert_with(Vec::new)
    };
    let mut kept = Vec::new();
    for arg in list.iter() {
        let name = arg.split('=').next().unwrap_or_default();
        match flags.get_mut(name) {
            // The first occurrence is replaced in place, later ones dropped.
            Some(value) => {
                if let Some(v) = value.take() {
                    kept.push(format!("{name}={v}"));
                }
            }
            None => kept.push(arg.clone()),
        }
    }
    for (name, value) in flags {
        if let Some(v) = value {
            kept.push(format!("{name}={v}"));
        }
    }
    *list = kept;
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    mounts.retain(|m| m.name != VOLUME);
    mounts.push(VolumeMount {
        name: VOLUME.into(),
        mount_path: cert_dir.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != VOLUME);
    volumes.push(Volume {
        name: VOLUME.into(),
        host_path: Some(HostPathVolumeSource { path: cert_dir.into(), type_: Some("DirectoryOrCreate".into()) }),
        ..Volume::default()
    });
    Ok((out != *pod).then_some(out))
}

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
pub struct Done {
    pub certificates_written: bool,
    /// Where the previous manifest was saved, when the manifest changed.
    pub backup: Option<PathBuf>,
}

fn write_if_changed(path: &Path, data: &[u8], mode: u32) -> Result<bool, Error> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    let tmp = path.with_extension("etcd-pilot.tmp");
    let err = |source| Error::Write { path: path.to_path_buf(), source };
    std::fs::write(&tmp, data).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(true)
}

/// Writes the certificates into `cert_dir` and the wiring into `manifest`, saving the
/// manifest it replaces into `backup_dir` (outside the kubelet's manifest directory:
/// the kubelet would run a copy there as a second static pod).
pub fn run(secret_file: &Path, manifest: &Path, cert_dir: &Path, backup_dir: &Path) -> Result<Done, Error> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| Error::Read { path: p.to_path_buf(), source });
    let secret: Secret = serde_norway::from_str(&read(secret_file)?)
        .map_err(|source| Error::Secret { path: secret_file.into(), source })?;
    let w = Wiring::from_secret(&secret)?;
    let pod: Pod =
        serde_norway::from_str(&read(manifest)?).map_err(|source| Error::Manifest { path: manifest.into(), source })?;
    std::fs::create_dir_all(cert_dir).map_err(|source| Error::Write { path: cert_dir.into(), source })?;
    let mut certificates_written = false;
    for (name, data, mode) in [
        ("ca.crt", &w.ca, 0o644),
        ("apiserver-etcd-client.crt", &w.cert, 0o644),
        ("apiserver-etcd-client.key", &w.key, 0o600),
    ] {
        certificates_written |= write_if_changed(&cert_dir.join(name), data, mode)?;
    }
    let dir = cert_dir.display().to_string();
    let Some(wired) = wire(&pod, &w, &dir)? else { return Ok(Done { certificates_written, backup: None }) };
    std::fs::create_dir_all(backup_dir).map_err(|source| Error::Write { path: backup_dir.into(), source })?;
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let file = manifest.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "manifest.yaml".into());
    let backup = backup_dir.join(format!("{file}.{stamp}"));
    std::fs::copy(manifest, &backup).map_err(|source| Error::Write { path: backup.clone(), source })?;
    let yaml = serde_norway::to_string(&wired).map_err(|source| Error::Manifest { path: manifest.into(), source })?;
    write_if_changed(manifest, yaml.as_bytes(), 0o600)?;
    Ok(Done { certificates_written, backup: Some(backup) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube-apiserver's manifest as kubeadm 1.20 writes it (trimmed).
    const KUBEADM: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.10
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:2379
    - --secure-port=6443
    image: k8s.gcr.io/kube-apiserver:v1.20.2
    name: kube-apiserver
    volumeMounts:
    - mountPath: /etc/kubernetes/pki
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  volumes:
  - hostPath:
      path: /etc/kubernetes/pki
      type: DirectoryOrCreate
    name: k8s-certs
"#;

    fn wiring(overrides: &str) -> Wiring {
        Wiring {
            ca: b"CA".to_vec(),
            cert: b"CERT".to_vec(),
            key: b"KEY".to_vec(),
            etcd_servers: "https://main-client.kube-system.svc:2379".into(),
            overrides: overrides.into(),
        }
    }

    fn command(p: &Pod) -> Vec<String> {
        p.spec.as_ref().unwrap().containers[0].command.clone().unwrap()
    }

    #[test]
    fn only_the_etcd_flags_and_the_mount_change_and_a_second_run_changes_nothing() {
        let pod: Pod = serde_norway::from_str(KUBEADM).unwrap();
        let dir = "/etc/kubernetes/pki/etcd-pilot";
        let wired = wire(&pod, &wiring("/events#https://events-client.kube-system.svc:2379"), dir).unwrap().unwrap();
        assert_eq!(
            command(&wired),
            [
                "kube-apiserver",
                "--advertise-address=10.0.0.10",
                "--etcd-cafile=/etc/kubernetes/pki/etcd-pilot/ca.crt",
                "--etcd-certfile=/etc/kubernetes/pki/etcd-pilot/apiserver-etcd-client.crt",
                "--etcd-keyfile=/etc/kubernetes/pki/etcd-pilot/apiserver-etcd-client.key",
                "--etcd-servers=https://main-client.kube-system.svc:2379",
                "--secure-port=6443",
                "--etcd-servers-overrides=/events#https://events-client.kube-system.svc:2379",
            ]
        );
        let spec = wired.spec.as_ref().unwrap();
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 2);
        assert_eq!(spec.containers[0].volume_mounts.as_ref().unwrap()[1].mount_path, dir);
        assert_eq!(spec.host_network, Some(true), "everything else as it was");
        assert_eq!(spec.containers[0].image.as_deref(), Some("k8s.gcr.io/kube-apiserver:v1.20.2"));
        assert_eq!(
            wire(&wired, &wiring("/events#https://events-client.kube-system.svc:2379"), dir).unwrap(),
            None,
            "idempotent"
        );
        // Overrides gone: the flag goes.
        let plain = wire(&wired, &wiring(""), dir).unwrap().unwrap();
        assert!(!command(&plain).iter().any(|a| a.starts_with("--etcd-servers-overrides")));
    }

    #[test]
    fn files_backup_and_idempotence_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let manifest = manifests.join("kube-apiserver.yaml");
        std::fs::write(&manifest, KUBEADM).unwrap();
        let secret = tmp.path().join("wiring.yaml");
        std::fs::write(
            &secret,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: main-apiserver-etcd}\ndata:\n  ca.crt: Q0E=\n  tls.crt: Q0VSVA==\n  tls.key: S0VZ\n  etcd-servers: aHR0cHM6Ly9tYWluLWNsaWVudC5rdWJlLXN5c3RlbS5zdmM6MjM3OQ==\n  etcd-servers-overrides: \"\"\n",
        )
        .unwrap();
        let certs = tmp.path().join("pki");
        let backups = tmp.path().join("backup");
        let first = run(&secret, &manifest, &certs, &backups).unwrap();
        assert!(first.certificates_written);
        let backup = first.backup.expect("a backup of the manifest replaced");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), KUBEADM);
        assert_eq!(std::fs::read(certs.join("apiserver-etcd-client.key")).unwrap(), b"KEY");
        let written = std::fs::read_to_string(&manifest).unwrap();
        assert!(written.contains("--etcd-servers=https://main-client.kube-system.svc:2379"), "{written}");
        assert_eq!(std::fs::read_dir(&manifests).unwrap().count(), 1, "nothing else in the kubelet's directory");
        let second = run(&secret, &manifest, &certs, &backups).unwrap();
        assert_eq!(second, Done { certificates_written: false, backup: None }, "a second run writes nothing");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), written);
        std::fs::write(&secret, "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata: {ca.crt: Q0E=}\n").unwrap();
        assert!(matches!(run(&secret, &manifest, &certs, &backups), Err(Error::MissingKey("tls.crt"))));
    }
}
