//! The continuous backup's copies (`copyTo`): the segments the stream made durable,
//! copied into each further store as they are stored ([`BackupStore::copy_to`], checked
//! against their SHA-256 there), then the index, its keys moved under the copy's prefix
//! ([`translate`]), so that a restore to a point can read the copy alone. Segments the
//! index let go are deleted from the copy too. The copy is written with the original
//! target's keys: a copy is read with them.
//!
//! It runs beside the stream every flush period, and once more after the stream made
//! its last segment durable; a store that does not answer is retried the next time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::api::S3Target;
use crate::backup_store::BackupStore;
use crate::runtime::Runtime;
use crate::runtime::s3;
use crate::shared::stream::{self, CopyProgress, Progress};
use crate::shared::window::Index;

/// `index` as the copy holds it: every key (bases' and segments') moved by `key_in`.
pub fn translate(index: &Index, key_in: impl Fn(&str) -> String) -> Index {
    let mut out = index.clone();
    for b in &mut out.bases {
        b.key = key_in(&b.key);
    }
    for s in &mut out.segments {
        s.key = key_in(&s.key);
    }
    out
}

/// One copy of a stream, its store opened.
pub struct Copy {
    store: BackupStore,
    prefix: String,
    /// The index as last written to the copy.
    mirrored: Index,
    /// The stream's index it was made from.
    seen: Option<Index>,
}

impl Copy {
    /// The copy in `store` under `prefix` (the stream prefix there), as far as it got.
    pub async fn open(store: BackupStore, prefix: String) -> Result<Copy, stream::StreamError> {
        let mirrored = stream::read_index(&store, &prefix).await?;
        Ok(Copy { store, prefix, mirrored, seen: None })
    }

    /// The last revision the copy's index reaches.
    pub fn last_revision(&self) -> Option<i64> {
        self.mirrored.segments.last().map(|s| s.last)
    }

    /// Brings the copy up to `index`, the stream's in `primary`: new segments copied and
    /// checked, then the index, then the segments it let go deleted.
    pub async fn sync(&mut self, primary: &BackupStore, index: &Index) -> Result<(), String> {
        if self.seen.as_ref() == Some(index) {
            return Ok(());
        }
        let translated = translate(index, |k| primary.key_in(k, &self.store));
        for (s, t) in index.segments.iter().zip(&translated.segments) {
            if !self.mirrored.segments.iter().any(|m| m.key == t.key && m.sha256 == t.sha256) {
                primary.copy_to(&s.key, &self.store).await.map_err(|e| format!("segment {}: {e}", s.key))?;
            }
        }
        stream::write_index(&self.store, &self.prefix, &translated).await.map_err(|e| e.to_string())?;
        for gone in self.mirrored.segments.iter().filter(|m| !translated.segments.iter().any(|t| t.key == m.key)) {
            if let Err(e) = self.store.delete(&gone.key).await {
                tracing::warn!(key = %gone.key, error = %e, "could not delete a segment the copy's index let go");
            }
        }
        self.mirrored = translated;
        self.seen = Some(index.clone());
        Ok(())
    }
}

/// Which stream is copied, from where, to where.
#[derive(Clone, Debug)]
pub struct Spec {
    pub namespace: String,
    pub cluster: String,
    pub schedule: String,
    /// The stream's own target.
    pub target: S3Target,
    pub copies: Vec<S3Target>,
    pub flush_ms: i64,
}

pub struct Mirror {
    rt: Arc<Runtime>,
    spec: Spec,
    primary: Option<BackupStore>,
    copies: Vec<Option<Copy>>,
    progress: Arc<Mutex<Progress>>,
}

impl Mirror {
    pub fn new(rt: Arc<Runtime>, spec: Spec, progress: Arc<Mutex<Progress>>) -> Mirror {
        let copies = spec.copies.iter().map(|_| None).collect();
        {
            let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
            p.copies =
                spec.copies.iter().map(|t| CopyProgress { bucket: t.bucket.clone(), ..Default::default() }).collect();
        }
        Mirror { rt, spec, primary: None, copies, progress }
    }

    /// Every flush period until `stop` turns true; returns itself for the last sync.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Mirror {
        let every = Duration::from_millis(u64::try_from(self.spec.flush_ms).unwrap_or(5000).max(1000));
        while !self.spec.copies.is_empty() && !*stop.borrow() {
            self.sync().await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
        self
    }

    /// Brings every copy up to the stream's durable index.
    pub async fn sync(&mut self) {
        let index = self.progress.lock().unwrap_or_else(PoisonError::into_inner).index.clone();
        if index.bases.is_empty() && index.segments.is_empty() {
            return;
        }
        for i in 0..self.spec.copies.len() {
            let result = self.sync_one(i, &index).await;
            let last = self.copies[i].as_ref().and_then(Copy::last_revision);
            let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = p.copies.get_mut(i) {
                c.last_revision = last.or(c.last_revision);
                c.error = result.err();
            }
        }
    }

    async fn sync_one(&mut self, i: usize, index: &Index) -> Result<(), String> {
        if self.primary.is_none() {
            let store = s3::open(&self.rt.client, &self.spec.namespace, &self.spec.target).await;
            self.primary = Some(store.map_err(|e| format!("the stream's own store: {e}"))?);
        }
        if self.copies[i].is_none() {
            // Written with the original's keys, whatever the copy target says: a copy
            // is read with them.
            let target = S3Target { encryption: self.spec.target.encryption.clone(), ..self.spec.copies[i].clone() };
            let store = s3::open(&self.rt.client, &self.spec.namespace, &target).await.map_err(|e| e.to_string())?;
            let prefix = store.stream_prefix(&self.spec.namespace, &self.spec.cluster, &self.spec.schedule);
            self.copies[i] = Some(Copy::open(store, prefix).await.map_err(|e| e.to_string())?);
        }
        match (self.primary.as_ref(), self.copies[i].as_mut()) {
            (Some(primary), Some(copy)) => copy.sync(primary, index).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::window::{Base, SegmentRef};

    #[test]
    fn the_copys_index_names_the_copys_keys_and_nothing_else_changes() {
        let index = Index {
            bases: vec![Base { key: "p/ns/main/b1.db".into(), revision: 10, time_ms: 1, sha256: "a".into() }],
            segments: vec![SegmentRef {
                key: "p/ns/main/streams/s/segments/1.seg".into(),
                first: 11,
                last: 20,
                first_ms: 2,
                last_ms: 3,
                sha256: "b".into(),
            }],
            gaps: Vec::new(),
        };
        let moved = translate(&index, |k| k.replacen("p/", "dr/", 1));
        assert_eq!(moved.bases[0].key, "dr/ns/main/b1.db");
        assert_eq!(moved.segments[0].key, "dr/ns/main/streams/s/segments/1.seg");
        let back = translate(&moved, |k| k.replacen("dr/", "p/", 1));
        assert_eq!(back, index, "only the keys moved");
    }
}
