//! Container images without a registry or a Docker engine: a docker-archive tarball
//! (one layer, a config naming its diff id, a manifest with its tag) built from files of
//! this machine. `docker load`, `podman load`, `skopeo copy docker-archive:...` and
//! `ctr images import` all read it.
//!
//! `make image` builds the operator's image with [`operator`]; the testbed builds the
//! same image (and its etcd, pause and toolbox images) with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// What goes wrong building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ImageError>;

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.into();
    move |source| ImageError::Io { path, source }
}

/// The uid (and gid) the operator runs as: distroless's `nonroot`.
pub const NONROOT: u32 = 65532;

/// The operator image: etcd-pilot, a current `etcdutl` that seeds restored members
/// (`snapshot restore --bump-revision --mark-compacted`, for 3.4 and 3.5 snapshots alike),
/// and a current `etcd`, the scratch server a restore to a point replays segments in,
/// with the shared libraries they load; non-root.
pub fn operator(tag: &str, binary: &Path, etcdutl: &Path, etcd: &Path) -> Result<Image> {
    Ok(Image::new(tag, &["/usr/local/bin/etcd-pilot"])
        .binary(binary, "/usr/local/bin/etcd-pilot")?
        .binary(etcdutl, "/usr/local/bin/etcdutl")?
        .binary(etcd, "/usr/local/bin/etcd")?
        .user(NONROOT))
}

/// One file in an image.
pub struct File {
    pub from: PathBuf,
    pub to: String,
    pub mode: u32,
}

/// What goes into an image.
pub struct Image {
    pub tag: String,
    pub files: Vec<File>,
    /// (path in the image, target)
    pub symlinks: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    /// Run as this uid (0 = root).
    pub user: u32,
}

impl Image {
    pub fn new(tag: &str, entrypoint: &[&str]) -> Image {
        Image {
            tag: tag.to_string(),
            files: Vec::new(),
            symlinks: Vec::new(),
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            user: 0,
        }
    }

    /// Adds an executable and, for a dynamic one, the shared libraries `ldd` names.
    pub fn binary(mut self, from: &Path, to: &str) -> Result<Image> {
        self.files.push(File { from: from.to_path_buf(), to: to.to_string(), mode: 0o755 });
        for lib in shared_libraries(from)? {
            let to = lib.display().to_string();
            if !self.files.iter().any(|f| f.to == to) {
                self.files.push(File { from: lib, to, mode: 0o755 });
            }
        }
        Ok(self)
    }

    pub fn link(mut self, path: &str, target: &str) -> Image {
        self.symlinks.push((path.to_string(), target.to_string()));
        self
    }

    pub fn user(mut self, uid: u32) -> Image {
        self.user = uid;
        self
    }

    /// Writes the docker-archive tarball.
    pub fn write(&self, out: &Path) -> Result<()> {
        let layer = self.layer()?;
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "User": self.user.to_string(),
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = serde_json::to_vec(&config).unwrap_or_default();
        let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
        let manifest = serde_json::to_vec(
            &serde_json::json!([{"Config": config_name, "RepoTags": [self.tag], "Layers": ["layer.tar"]}]),
        )
        .unwrap_or_default();
        let f = std::fs::File::create(out).map_err(io(out))?;
        let mut tar = tar::Builder::new(f);
        for (name, data) in [(config_name.as_str(), &config), ("layer.tar", &layer), ("manifest.json", &manifest)] {
            append(&mut tar, name, data, 0o644).map_err(io(out))?;
        }
        tar.finish().map_err(io(out))
    }

    fn layer(&self) -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs: Vec<String> = vec!["tmp".into(), "etc".into()];
        for f in &self.files {
            let rel = f.to.trim_start_matches('/');
            let mut p = Path::new(rel).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.push(d.display().to_string());
                p = d.parent();
            }
        }
        for (path, _) in &self.symlinks {
            if let Some(d) = Path::new(path.trim_start_matches('/')).parent().filter(|d| !d.as_os_str().is_empty()) {
                dirs.push(d.display().to_string());
            }
        }
        dirs.sort();
        dirs.dedup();
        for d in &dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(if d == "tmp" { 0o1777 } else { 0o755 });
            h.set_size(0);
            h.set_mtime(0);
            tar.append_data(&mut h, format!("{d}/"), std::io::empty()).map_err(io(d))?;
        }
        let etc = b"root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n";
        append(&mut tar, "etc/passwd", etc, 0o644).map_err(io("etc/passwd"))?;
        append(&mut tar, "etc/group", b"root:x:0:\nnonroot:x:65532:\n", 0o644).map_err(io("etc/group"))?;
        append(&mut tar, "etc/nsswitch.conf", b"hosts: files dns\n", 0o644).map_err(io("etc/nsswitch.conf"))?;
        for f in &self.files {
            let data = std::fs::read(&f.from).map_err(io(&f.from))?;
            append(&mut tar, f.to.trim_start_matches('/'), &data, f.mode).map_err(io(&f.from))?;
        }
        for (path, target) in &self.symlinks {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_mtime(0);
            tar.append_link(&mut h, path.trim_start_matches('/'), target).map_err(io(path))?;
        }
        tar.into_inner().map_err(io("layer"))
    }
}

fn append<W: std::io::Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
}

/// The shared libraries a dynamic executable loads, by absolute path (none if static).
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().map_err(io("ldd"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
