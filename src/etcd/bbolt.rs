//! The revision a snapshot holds, read from the snapshot itself (issue 23, "the base is
//! exact"): etcd's snapshot is its bbolt file, and the revision it was taken at is the
//! largest revision key of its `key` bucket, or the revision it was last compacted at
//! when that is larger (a compaction drops the tombstones of deleted keys, so the newest
//! revision may have no key left). Read by walking the file's B+tree from its meta page
//! along the rightmost path, a few pages in all, through [`Pages`]: a file on disk, or
//! ranged reads of the object in a store. A revision asked of the member in a separate
//! call may be newer than the snapshot (writes go on meanwhile): a stream resumed from
//! it would leave revisions out.
//!
//! Only live pages are read: a page the tree does not reach may hold anything, newer
//! revisions included (bbolt reuses free pages while a snapshot is copied).

use std::hash::Hasher;

/// bbolt's magic number and file format version (bbolt 1.3, etcd 3.4 to 3.6).
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_FLAG: u32 = 0x01;
/// The meta page's fields before its checksum (magic .. txid).
const META_CHECKED: usize = 4 + 4 + 4 + 4 + 16 + 8 + 8 + 8;
/// A tree deeper than this is not a bbolt file.
const MAX_DEPTH: usize = 64;

/// Random access to a snapshot's bytes.
pub trait Pages {
    type Error: std::fmt::Display;
    /// `len` bytes at `offset` (fewer only at the end of the file).
    fn read(
        &mut self,
        offset: u64,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// Why no revision could be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreadable {
    #[error("reading the snapshot at byte {offset}: {detail}")]
    Read { offset: u64, detail: String },
    #[error("not an etcd snapshot (bbolt file): {0}")]
    Format(String),
    #[error("the snapshot has no `{0}` bucket")]
    NoBucket(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn format(what: impl Into<String>) -> Unreadable {
    Unreadable::Format(what.into())
}

/// A meta page's page size and root bucket page, if it is valid (magic, version, FNV-1a
/// checksum).
pub fn meta(page: &[u8]) -> Result<(u32, u64, u64), Unreadable> {
    let flags = u16_at(page, 8).ok_or_else(|| format("short meta page"))?;
    if flags & META == 0 {
        return Err(format(format!("page 0 is not a meta page (flags {flags:#x})")));
    }
    let m = PAGE_HEADER;
    let body = page.get(m..m + META_CHECKED + 8).ok_or_else(|| format("short meta page"))?;
    let (magic, version) = (u32_at(body, 0).unwrap_or(0), u32_at(body, 4).unwrap_or(0));
    if magic != MAGIC || version != VERSION {
        return Err(format(format!("magic {magic:#x} version {version}")));
    }
    let mut fnv = fnv::FnvHasher::default();
    fnv.write(&body[..META_CHECKED]);
    if fnv.finish() != u64_at(body, META_CHECKED).unwrap_or(0) {
        return Err(format("meta page checksum does not match"));
    }
    let page_size = u32_at(body, 8).unwrap_or(0);
    let root = u64_at(body, 16).unwrap_or(0);
    let txid = u64_at(body, 48).unwrap_or(0);
    Ok((page_size, root, txid))
}

/// One page's elements: (flags or 0, key, value or child pgid as bytes).
struct Page {
    flags: u16,
    bytes: Vec<u8>,
    count: usize,
}

impl Page {
    fn parse(bytes: Vec<u8>) -> Result<Page, Unreadable> {
        let flags = u16_at(&bytes, 8).ok_or_else(|| format("short page"))?;
        let count = usize::from(u16_at(&bytes, 10).ok_or_else(|| format("short page"))?);
        if flags & (BRANCH | LEAF) == 0 {
            return Err(format(format!("expected a branch or leaf page, found flags {flags:#x}")));
        }
        Ok(Page { flags, bytes, count })
    }

    fn element(&self, i: usize) -> Option<usize> {
        let at = PAGE_HEADER + i * ELEMENT;
        (at + ELEMENT <= self.bytes.len()).then_some(at)
    }

    /// A branch element's key and child page.
    fn branch(&self, i: usize) -> Option<(&[u8], u64)> {
        let at = self.element(i)?;
        let (pos, ksize) = (u32_at(&self.bytes, at)? as usize, u32_at(&self.bytes, at + 4)? as usize);
        let child = u64_at(&self.bytes, at + 8)?;
        Some((self.bytes.get(at + pos..at + pos + ksize)?, child))
    }

    /// A leaf element's flags, key and value.
    fn leaf(&self, i: usize) -> Option<(u32, &[u8], &[u8])> {
        let at = self.element(i)?;
        let flags = u32_at(&self.bytes, at)?;
        let (pos, ksize, vsize) = (
            u32_at(&self.bytes, at + 4)? as usize,
            u32_at(&self.bytes, at + 8)? as usize,
            u32_at(&self.bytes, at + 12)? as usize,
        );
        let key = self.bytes.get(at + pos..at + pos + ksize)?;
        let value = self.bytes.get(at + pos + ksize..at + pos + ksize + vsize)?;
        Some((flags, key, value))
    }
}

/// Reads the page `pgid` (with its overflow pages).
async fn page<P: Pages>(src: &mut P, page_size: u32, pgid: u64) -> Result<Page, Unreadable> {
    let offset = pgid * u64::from(page_size);
    let read_err = |detail: String| Unreadable::Read { offset, detail };
    let first = src.read(offset, page_size as usize).await.map_err(|e| read_err(e.to_string()))?;
    if u64_at(&first, 0) != Some(pgid) {
        return Err(format(format!("page {pgid} says it is page {:?}", u64_at(&first, 0))));
    }
    let overflow = u32_at(&first, 12).ok_or_else(|| format("short page"))?;
    if overflow == 0 {
        return Page::parse(first);
    }
    let rest = u64::from(overflow) * u64::from(page_size);
    let more = src.read(offset + u64::from(page_size), rest as usize).await.map_err(|e| read_err(e.to_string()))?;
    let mut bytes = first;
    bytes.extend_from_slice(&more);
    Page::parse(bytes)
}

/// Where a bucket's tree is: a page of the file, or inline in its parent's value.
enum Tree {
    At(u64),
    Inline(Vec<u8>),
}

impl Tree {
    /// The tree's top node.
    async fn top<P: Pages>(self, src: &mut P, page_size: u32) -> Result<Page, Unreadable> {
        match self {
            Tree::At(pgid) => page(src, page_size, pgid).await,
            Tree::Inline(bytes) => Page::parse(bytes),
        }
    }
}

/// The element `key` of the tree: its flags and value.
async fn lookup<P: Pages>(
    src: &mut P,
    page_size: u32,
    tree: Tree,
    key: &[u8],
) -> Result<Option<(u32, Vec<u8>)>, Unreadable> {
    let mut node = tree.top(src, page_size).await?;
    for _ in 0..MAX_DEPTH {
        if node.flags & LEAF != 0 {
            for i in 0..node.count {
                let (flags, k, v) = node.leaf(i).ok_or_else(|| format("bad leaf element"))?;
                if k == key {
                    return Ok(Some((flags, v.to_vec())));
                }
            }
            return Ok(None);
        }
        // The child whose range holds `key`: the last element whose key is <= it.
        let mut child = None;
        for i in 0..node.count {
            let (k, pgid) = node.branch(i).ok_or_else(|| format("bad branch element"))?;
            if k <= key || child.is_none() {
                child = Some(pgid);
            }
            if k > key {
                break;
            }
        }
        node = page(src, page_size, child.ok_or_else(|| format("empty branch page"))?).await?;
    }
    Err(format("tree too deep"))
}

/// Bucket `name` of the tree at `root` (the root bucket).
async fn bucket<P: Pages>(src: &mut P, page_size: u32, root: Tree, name: &'static str) -> Result<Tree, Unreadable> {
    match lookup(src, page_size, root, name.as_bytes()).await? {
        Some((flags, value)) if flags & BUCKET_FLAG != 0 => {
            let root = u64_at(&value, 0).ok_or_else(|| format("short bucket header"))?;
            Ok(if root == 0 { Tree::Inline(value[16..].to_vec()) } else { Tree::At(root) })
        }
        _ => Err(Unreadable::NoBucket(name)),
    }
}

/// The last key of the tree: the rightmost path down to its last leaf element.
async fn last_key<P: Pages>(src: &mut P, page_size: u32, tree: Tree) -> Result<Option<Vec<u8>>, Unreadable> {
    let mut node = tree.top(src, page_size).await?;
    for _ in 0..MAX_DEPTH {
        if node.count == 0 {
            return Ok(None);
        }
        if node.flags & LEAF != 0 {
            return Ok(node.leaf(node.count - 1).map(|(_, k, _)| k.to_vec()));
        }
        let (_, child) = node.branch(node.count - 1).ok_or_else(|| format("bad branch element"))?;
        node = page(src, page_size, child).await?;
    }
    Err(format("tree too deep"))
}

/// The main revision of an mvcc revision key (8 bytes big-endian, `_`, 8 bytes sub
/// revision, and a `t` on tombstones).
pub fn main_revision(key: &[u8]) -> Option<i64> {
    if key.len() < 17 || key[8] != b'_' {
        return None;
    }
    Some(i64::from_be_bytes(key[..8].try_into().ok()?))
}

/// The revision the snapshot was taken at: the largest main revision in its `key`
/// bucket, or the revision it was last compacted at when larger; 1 for an empty store.
pub async fn snapshot_revision<P: Pages>(src: &mut P) -> Result<i64, Unreadable> {
    let first = src.read(0, 4096).await.map_err(|e| Unreadable::Read { offset: 0, detail: e.to_string() })?;
    let (page_size, _, _) = meta(&first)?;
    if !(512..=65536).contains(&page_size) {
        return Err(format(format!("page size {page_size}")));
    }
    // Both meta pages; the valid one of the newest transaction.
    let second = src
        .read(u64::from(page_size), page_size as usize)
        .await
        .map_err(|e| Unreadable::Read { offset: u64::from(page_size), detail: e.to_string() })?;
    let (_, root, _) = [meta(&first), meta(&second)]
        .into_iter()
        .filter_map(Result::ok)
        .max_by_key(|m| m.2)
        .ok_or_else(|| format("no valid meta page"))?;
    let keys = bucket(src, page_size, Tree::At(root), "key").await?;
    let newest = last_key(src, page_size, keys).await?.as_deref().and_then(main_revision);
    let meta_bucket = bucket(src, page_size, Tree::At(root), "meta").await?;
    let compacted =
        lookup(src, page_size, meta_bucket, b"finishedCompactRev").await?.and_then(|(_, v)| main_revision(&v));
    Ok(newest.max(compacted).unwrap_or(1).max(1))
}

/// A snapshot file on disk as [`Pages`].
pub struct FilePages(pub std::fs::File);

impl Pages for FilePages {
    type Error = std::io::Error;
    fn read(
        &mut self,
        offset: u64,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        let result = self.0.read_at(&mut buf, offset).map(|n| {
            buf.truncate(n);
            buf
        });
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys() {
        let mut k = 41i64.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&3i64.to_be_bytes());
        assert_eq!(main_revision(&k), Some(41));
        k.push(b't');
        assert_eq!(main_revision(&k), Some(41), "a tombstone");
        assert_eq!(main_revision(b"finishedCompactRev"), None);
        assert_eq!(main_revision(&[0; 16]), None);
    }

    #[test]
    fn meta_pages_are_checked() {
        let mut page = vec![0u8; 4096];
        page[8..10].copy_from_slice(&META.to_le_bytes());
        let m = PAGE_HEADER;
        page[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
        page[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
        page[m + 8..m + 12].copy_from_slice(&4096u32.to_le_bytes());
        page[m + 16..m + 24].copy_from_slice(&3u64.to_le_bytes());
        page[m + 48..m + 56].copy_from_slice(&9u64.to_le_bytes());
        let mut fnv = fnv::FnvHasher::default();
        fnv.write(&page[m..m + META_CHECKED]);
        let sum = fnv.finish();
        page[m + META_CHECKED..m + META_CHECKED + 8].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(meta(&page), Ok((4096, 3, 9)));
        page[m + 16] = 4;
        assert_eq!(meta(&page), Err(format("meta page checksum does not match")));
        assert!(meta(&[0u8; 8]).is_err());
    }
}
