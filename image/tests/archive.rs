//! The operator image as written: a docker-archive whose manifest, config and layer say
//! what `docker load`/`ctr images import` need, non-root, with the binaries and the
//! shared libraries they load.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

fn entries(data: &[u8]) -> BTreeMap<String, (Vec<u8>, u32, tar::EntryType)> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(data);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let (mode, kind) = (e.header().mode().unwrap(), e.header().entry_type());
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        out.insert(name, (bytes, mode, kind));
    }
    out
}

#[test]
fn the_operator_image_is_a_loadable_non_root_archive_with_its_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("etcd-pilot.tar");
    // Any dynamic executables stand in for etcd-pilot and etcdutl.
    let (bin, etcdutl, etcd) = (Path::new("/bin/true"), Path::new("/bin/echo"), Path::new("/bin/cat"));
    etcd_pilot_image::operator("registry.example/etcd-pilot:1.2.3", bin, etcdutl, etcd).unwrap().write(&out).unwrap();

    let outer = entries(&std::fs::read(&out).unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&outer["manifest.json"].0).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "registry.example/etcd-pilot:1.2.3");
    let config_name = manifest[0]["Config"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&outer[config_name].0).unwrap();
    assert_eq!(config["config"]["User"], "65532", "non-root");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/etcd-pilot");
    let layer = &outer["layer.tar"].0;
    assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{}", hex::encode(Sha256::digest(layer))));
    assert_eq!(config_name, format!("{}.json", hex::encode(Sha256::digest(&outer[config_name].0))));

    let files = entries(layer);
    let (data, mode, _) = &files["usr/local/bin/etcd-pilot"];
    assert_eq!(data, &std::fs::read(bin).unwrap());
    assert_eq!(mode & 0o755, 0o755);
    assert_eq!(files["usr/local/bin/etcdutl"].0, std::fs::read(etcdutl).unwrap());
    assert_eq!(files["usr/local/bin/etcd"].0, std::fs::read(etcd).unwrap());
    for lib in etcd_pilot_image::shared_libraries(bin).unwrap() {
        let name = lib.display().to_string();
        assert!(files.contains_key(name.trim_start_matches('/')), "{name} is in the image");
    }
    assert!(String::from_utf8_lossy(&files["etc/passwd"].0).contains("nonroot:x:65532:65532"));
    assert_eq!(files["tmp/"].1, 0o1777);
    // Nothing else: no shell, no package manager.
    assert!(!files.keys().any(|f| f.starts_with("bin/") || f.starts_with("usr/bin/")), "{:?}", files.keys());
}
