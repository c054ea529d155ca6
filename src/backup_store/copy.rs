//! A copy of an object into another store: the very bytes stored (sealed or not),
//! streamed through with the memory of one upload part, and checked there against the
//! original's SHA-256, so that one store's loss loses no backup.

use super::*;

/// `prefix` without its slashes, `None` when nothing is left.
fn trimmed(prefix: Option<&str>) -> Option<&str> {
    prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty())
}

impl BackupStore {
    /// Where `key` of this store goes in `dest`: the same path, under `dest`'s prefix.
    pub fn key_in(&self, key: &str, dest: &BackupStore) -> String {
        let rest = match trimmed(self.prefix.as_deref()) {
            Some(p) => key.strip_prefix(p).map(|r| r.trim_start_matches('/')).unwrap_or(key),
            None => key,
        };
        match trimmed(dest.prefix.as_deref()) {
            Some(p) => format!("{p}/{rest}"),
            None => rest.to_string(),
        }
    }

    /// Copies `key` into `dest` (at [`Self::key_in`]) as it is stored, metadata and all.
    /// The copy counts only once the bytes written there hash to what was recorded for
    /// the original; otherwise, or on any error, nothing is left in `dest`.
    pub async fn copy_to(&self, key: &str, dest: &BackupStore) -> Result<Uploaded, StoreError> {
        let dl = self.download_stored(key).await?;
        let to = self.key_in(key, dest);
        let mut metadata = dl.metadata.clone();
        // Written afresh from the bytes that arrive.
        metadata.remove(SHA256_METADATA);
        let up = dest.upload_stored(&to, dl.stream, metadata).await?;
        if up.sha256 != dl.sha256 {
            let _ = dest.delete(&to).await;
            return Err(StoreError::ChecksumMismatch { key: to, expected: dl.sha256, actual: up.sha256 });
        }
        Ok(up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(prefix: Option<&str>) -> BackupStore {
        let config = StoreConfig {
            prefix: prefix.map(Into::into),
            ..StoreConfig::s3_compatible("http://127.0.0.1:1", "b", "ak", "sk")
        };
        BackupStore::new(config).await.expect("store")
    }

    #[tokio::test]
    async fn a_copy_keeps_the_path_under_the_other_prefix() {
        let rows = [
            (Some("prod/etcd"), Some("dr"), "prod/etcd/ns/main/s-b.db", "dr/ns/main/s-b.db"),
            (Some("/prod/"), None, "prod/ns/main/s-b.db", "ns/main/s-b.db"),
            (None, Some("dr/"), "ns/main/s-b.db", "dr/ns/main/s-b.db"),
            (None, None, "ns/main/s-b.db", "ns/main/s-b.db"),
            (Some("a"), Some("b"), "other/ns/x.db", "b/other/ns/x.db"),
        ];
        for (from, to, key, want) in rows {
            assert_eq!(store(from).await.key_in(key, &store(to).await), want, "{from:?} -> {to:?}: {key}");
        }
    }
}
