//! Encryption at rest of what etcd-pilot writes to a store (issue 24): streaming
//! authenticated encryption, AES-256-GCM in the STREAM construction (RustCrypto's
//! `aead::stream`, big-endian 32-bit counter and last-chunk flag), so that a snapshot of
//! any size is encrypted and decrypted chunk by chunk, never held whole, and a truncated,
//! reordered or altered object fails authentication.
//!
//! An encrypted object is a header and the sealed chunks:
//!
//! ```text
//! "EPENC1\n"                        magic and format version (7 bytes)
//! u16 BE  length of the key id, then the key id (UTF-8, `<secret>/<key>`)
//! 7 bytes nonce prefix (random per object)
//! u32 BE  plaintext chunk size
//! chunks: each `chunk size + 16` bytes (the last one shorter, possibly just its tag)
//! ```
//!
//! The whole header is the associated data of every chunk: the key id and chunk size
//! cannot be changed without failing authentication. The key id says which of a
//! target's keys sealed the object (the first key encrypts, every key may decrypt: key
//! rotation). The SHA-256 a backup records is that of the stored (encrypted) bytes;
//! etcd's own hash of the snapshot is checked after decryption, as before.

use aes_gcm::aead::stream::{DecryptorBE32, NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::aead::{KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Magic and format version at the start of every encrypted object.
pub const MAGIC: &[u8; 7] = b"EPENC1\n";
/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const NONCE_PREFIX: usize = 7;

/// A 256-bit key and the id objects name it by.
#[derive(Clone)]
pub struct NamedKey {
    pub id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedKey({})", self.id)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("key {id}: {why}")]
    BadKey { id: String, why: String },
    #[error("not an object etcd-pilot encrypted (no header)")]
    NotEncrypted,
    #[error("the object's header is damaged")]
    Header,
    #[error("the object was sealed with key {0}, which this target does not list")]
    UnknownKey(String),
    #[error("no random nonce: {0}")]
    Random(String),
    #[error("sealing chunk {chunk} failed (an object of more than 2^32 chunks?)")]
    Seal { chunk: u64 },
    #[error(
        "chunk {chunk} failed authentication with key {key}: the wrong key, or the object was truncated or altered"
    )]
    Auth { chunk: u64, key: String },
}

impl NamedKey {
    /// A key from a Secret entry's bytes: 32 raw bytes, or their base64 or hex text (as
    /// `openssl rand -base64 32` / `-hex 32` print it, trailing newline allowed).
    pub fn from_secret(id: &str, bytes: &[u8]) -> Result<NamedKey, CryptError> {
        use base64::Engine;
        let bad = |why: &str| CryptError::BadKey { id: id.to_string(), why: why.to_string() };
        let key: Vec<u8> = if bytes.len() == 32 {
            bytes.to_vec()
        } else {
            let text = std::str::from_utf8(bytes).map_err(|_| bad("neither 32 bytes nor base64 or hex text"))?.trim();
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(text).map_err(|_| bad("bad hex"))?
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| bad("neither 32 bytes nor base64 or hex text"))?
            }
        };
        let key: [u8; 32] = key.try_into().map_err(|_| bad("not 256 bits (32 bytes)"))?;
        Ok(NamedKey { id: id.to_string(), key })
    }

    #[cfg(test)]
    pub fn raw(id: &str, key: [u8; 32]) -> NamedKey {
        NamedKey { id: id.to_string(), key }
    }
}

fn header(key_id: &str, prefix: &[u8; NONCE_PREFIX]) -> Vec<u8> {
    let mut h = Vec::with_capacity(MAGIC.len() + 2 + key_id.len() + NONCE_PREFIX + 4);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&u16::try_from(key_id.len()).unwrap_or(u16::MAX).to_be_bytes());
    h.extend_from_slice(&key_id.as_bytes()[..key_id.len().min(usize::from(u16::MAX))]);
    h.extend_from_slice(prefix);
    h.extend_from_slice(&u32::try_from(CHUNK).unwrap_or(u32::MAX).to_be_bytes());
    h
}

/// Seals a stream of plaintext chunks (any sizes) as it flows: push bytes in, take
/// sealed bytes out; [`Sealer::finish`] seals the last chunk.
pub struct Sealer {
    key: ring::aead::LessSafeKey,
    prefix: [u8; NONCE_PREFIX],
    aad: Vec<u8>,
    /// The chunk being filled, with room for its tag: sealed in place once full and
    /// more follows (one copy of each byte, no other).
    pending: Vec<u8>,
    header_out: Option<Vec<u8>>,
    /// Chunks sealed so far: the next one's counter.
    sealed: u32,
}

impl Sealer {
    pub fn new(key: &NamedKey) -> Result<Sealer, CryptError> {
        let mut prefix = [0u8; NONCE_PREFIX];
        getrandom::fill(&mut prefix).map_err(|e| CryptError::Random(e.to_string()))?;
        Sealer::with_prefix(key, prefix)
    }

    fn with_prefix(key: &NamedKey, prefix: [u8; NONCE_PREFIX]) -> Result<Sealer, CryptError> {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key.key)
            .map_err(|_| CryptError::BadKey { id: key.id.clone(), why: "not an AES-256 key".into() })?;
        let aad = header(&key.id, &prefix);
        Ok(Sealer {
            key: ring::aead::LessSafeKey::new(unbound),
            prefix,
            header_out: Some(aad.clone()),
            aad,
            pending: Vec::with_capacity(CHUNK + TAG),
            sealed: 0,
        })
    }

    /// Seals `chunk` in place: the nonce is STREAM's (aead's `StreamBE32`): the object's
    /// prefix, the chunk's counter big-endian, 1 for the last chunk.
    fn seal(&mut self, chunk: &mut Vec<u8>, last: bool) -> Result<(), CryptError> {
        let failed = CryptError::Seal { chunk: u64::from(self.sealed) };
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX].copy_from_slice(&self.prefix);
        nonce[NONCE_PREFIX..NONCE_PREFIX + 4].copy_from_slice(&self.sealed.to_be_bytes());
        nonce[11] = u8::from(last);
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        self.key.seal_in_place_append_tag(nonce, ring::aead::Aad::from(&self.aad), chunk).map_err(|_| failed)?;
        // The counter never wraps: a second use of a nonce would break the cipher.
        self.sealed = self.sealed.checked_add(1).ok_or(CryptError::Seal { chunk: u64::from(u32::MAX) })?;
        Ok(())
    }

    /// Takes `plain`; returns what is sealed so far (the header first), chunk by chunk.
    pub fn push(&mut self, mut plain: &[u8]) -> Result<Vec<Bytes>, CryptError> {
        let mut out: Vec<Bytes> = self.header_out.take().map(Bytes::from).into_iter().collect();
        while !plain.is_empty() {
            // A full chunk is sealed only once more follows: the last one is sealed apart.
            if self.pending.len() == CHUNK {
                let mut full = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK + TAG));
                self.seal(&mut full, false)?;
                out.push(Bytes::from(full));
            }
            let take = (CHUNK - self.pending.len()).min(plain.len());
            self.pending.extend_from_slice(&plain[..take]);
            plain = &plain[take..];
        }
        Ok(out)
    }

    /// Seals what is left as the last chunk.
    pub fn finish(mut self) -> Result<Vec<Bytes>, CryptError> {
        let mut out: Vec<Bytes> = self.header_out.take().map(Bytes::from).into_iter().collect();
        let mut last = std::mem::take(&mut self.pending);
        self.seal(&mut last, true)?;
        out.push(Bytes::from(last));
        Ok(out)
    }
}

/// `body` sealed by `sealer` as it flows.
pub(super) fn sealed<S, E>(
    body: S,
    sealer: Sealer,
) -> impl Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Out = Vec<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>;
    let all = |r: Result<Vec<Bytes>, CryptError>| -> Out {
        match r {
            Ok(v) => v.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(Box::new(e))],
        }
    };
    let pieces = futures::stream::unfold((body, Some(sealer)), move |(mut body, sealer)| async move {
        let mut sealer = sealer?;
        match body.next().await {
            Some(Ok(c)) => Some((all(sealer.push(&c)), (body, Some(sealer)))),
            Some(Err(e)) => Some((vec![Err(e.into())], (body, None))),
            None => Some((all(sealer.finish()), (body, None))),
        }
    });
    Box::pin(pieces.flat_map(futures::stream::iter))
}

/// Opens a sealed stream as it flows with whichever of `keys` sealed it.
pub struct Opener {
    keys: Vec<NamedKey>,
    dec: Option<(DecryptorBE32<Aes256Gcm>, String)>,
    aad: Vec<u8>,
    buf: BytesMut,
    chunk: u64,
}

impl Opener {
    pub fn new(keys: Vec<NamedKey>) -> Opener {
        Opener { keys, dec: None, aad: Vec::new(), buf: BytesMut::new(), chunk: 0 }
    }

    /// The key id an object's first bytes name, once the header is in.
    pub fn key_id(head: &[u8]) -> Result<Option<String>, CryptError> {
        Ok(parse_header(head)?.map(|(id, _, _)| id))
    }

    /// Takes sealed bytes; returns the plaintext opened so far.
    pub fn push(&mut self, sealed: &[u8]) -> Result<Bytes, CryptError> {
        self.buf.extend_from_slice(sealed);
        if self.dec.is_none() {
            let Some((id, prefix, len)) = parse_header(&self.buf)? else { return Ok(Bytes::new()) };
            let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| CryptError::UnknownKey(id.clone()))?;
            self.aad = self.buf.split_to(len).to_vec();
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.key));
            self.dec = Some((DecryptorBE32::from_aead(cipher, (&prefix).into()), id));
        }
        let mut out = BytesMut::new();
        while self.buf.len() > CHUNK + TAG {
            let sealed = self.buf.split_to(CHUNK + TAG);
            let Some((dec, id)) = self.dec.as_mut() else { break };
            let plain = dec
                .decrypt_next(Payload { msg: &sealed, aad: &self.aad })
                .map_err(|_| CryptError::Auth { chunk: self.chunk, key: id.clone() })?;
            self.chunk += 1;
            out.extend_from_slice(&plain);
        }
        Ok(out.freeze())
    }

    /// Opens the last chunk: fails when the object ended early (a truncation).
    pub fn finish(mut self) -> Result<Bytes, CryptError> {
        let Some((dec, id)) = self.dec.take() else { return Err(CryptError::NotEncrypted) };
        dec.decrypt_last(Payload { msg: &self.buf, aad: &self.aad })
            .map(Bytes::from)
            .map_err(|_| CryptError::Auth { chunk: self.chunk, key: id })
    }
}

/// An encrypted object's header, as read from its first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_id: String,
    prefix: [u8; NONCE_PREFIX],
    /// The header's bytes (the associated data of every chunk).
    raw: Vec<u8>,
}

/// The longest header: the magic, a key id of at most 1 KiB, the nonce prefix, the size.
pub const MAX_HEADER: usize = MAGIC.len() + 2 + 1024 + NONCE_PREFIX + 4;

impl Header {
    /// The header at the start of `head`; `None` when `head` is not an encrypted object.
    pub fn read(head: &[u8]) -> Result<Option<Header>, CryptError> {
        match parse_header(head) {
            Ok(Some((key_id, prefix, len))) => Ok(Some(Header { key_id, prefix, raw: head[..len].to_vec() })),
            Ok(None) => Err(CryptError::Header),
            Err(CryptError::NotEncrypted) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn len(&self) -> usize {
        self.raw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Chunks and plaintext length of an object of `sealed_len` bytes with this header.
    pub fn layout(&self, sealed_len: u64) -> Result<(u64, u64), CryptError> {
        let body = sealed_len.checked_sub(self.raw.len() as u64).ok_or(CryptError::Header)?;
        let whole = (CHUNK + TAG) as u64;
        // Every chunk but the last is whole; the last holds 0 to CHUNK bytes and its tag
        // (a sealer seals a full chunk as the last when nothing follows it).
        let (chunks, last) = match body % whole {
            0 if body > 0 => (body / whole, whole),
            rest => (body / whole + 1, rest),
        };
        if last < TAG as u64 {
            return Err(CryptError::Auth { chunk: chunks - 1, key: self.key_id.clone() });
        }
        Ok((chunks, (chunks - 1) * CHUNK as u64 + last - TAG as u64))
    }

    /// Where chunk `index` lies in the object: (offset, length).
    pub fn chunk_range(&self, index: u64, sealed_len: u64) -> (u64, usize) {
        let start = self.raw.len() as u64 + index * (CHUNK + TAG) as u64;
        (start, usize::try_from((sealed_len - start).min((CHUNK + TAG) as u64)).unwrap_or(0))
    }

    /// Opens chunk `index` alone (`last`: the object's last chunk) with its key from `keys`.
    pub fn open_chunk(&self, keys: &[NamedKey], index: u64, last: bool, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        let key =
            keys.iter().find(|k| k.id == self.key_id).ok_or_else(|| CryptError::UnknownKey(self.key_id.clone()))?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.key));
        let stream = StreamBE32::from_aead(cipher, (&self.prefix).into());
        let position = u32::try_from(index).map_err(|_| CryptError::Header)?;
        stream
            .decrypt(position, last, Payload { msg: sealed, aad: &self.raw })
            .map_err(|_| CryptError::Auth { chunk: index, key: self.key_id.clone() })
    }
}

/// The header at the start of `buf`: (key id, nonce prefix, header length), or `None`
/// while it is not all in yet.
fn parse_header(buf: &[u8]) -> Result<Option<(String, [u8; NONCE_PREFIX], usize)>, CryptError> {
    if buf.len() < MAGIC.len() + 2 {
        return if MAGIC.starts_with(&buf[..buf.len().min(MAGIC.len())]) {
            Ok(None)
        } else {
            Err(CryptError::NotEncrypted)
        };
    }
    if &buf[..MAGIC.len()] != MAGIC {
        return Err(CryptError::NotEncrypted);
    }
    let id_len = usize::from(u16::from_be_bytes([buf[MAGIC.len()], buf[MAGIC.len() + 1]]));
    let total = MAGIC.len() + 2 + id_len + NONCE_PREFIX + 4;
    if buf.len() < total {
        return Ok(None);
    }
    let id_at = MAGIC.len() + 2;
    let id = String::from_utf8(buf[id_at..id_at + id_len].to_vec()).map_err(|_| CryptError::Header)?;
    let mut prefix = [0u8; NONCE_PREFIX];
    prefix.copy_from_slice(&buf[id_at + id_len..id_at + id_len + NONCE_PREFIX]);
    let chunk = u32::from_be_bytes(buf[total - 4..total].try_into().map_err(|_| CryptError::Header)?);
    if usize::try_from(chunk).ok() != Some(CHUNK) {
        return Err(CryptError::Header);
    }
    Ok(Some((id, prefix, total)))
}

/// What a download yields: the stored bytes (verified against the recorded SHA-256 by
/// `stored`), opened with `keys` when the object was sealed; an object that was not is
/// passed through as it is (backups written before encryption was turned on).
pub(super) fn opened(
    key: &str,
    stored: impl Stream<Item = Result<Bytes, super::StoreError>> + Send + 'static,
    keys: std::sync::Arc<Vec<NamedKey>>,
) -> Pin<Box<dyn Stream<Item = Result<Bytes, super::StoreError>> + Send>> {
    enum Mode {
        /// Not known yet: the first bytes are held until the magic can be compared.
        Sniff(BytesMut),
        Plain,
        Open(Box<Opener>),
        Done,
    }
    let key = key.to_string();
    let err =
        move |key: &str, e: CryptError| super::StoreError::Encryption { key: key.to_string(), detail: e.to_string() };
    let stored = Box::pin(stored);
    Box::pin(futures::stream::unfold((stored, Mode::Sniff(BytesMut::new())), move |(mut stored, mode)| {
        let (key, keys) = (key.clone(), keys.clone());
        async move {
            let mut mode = mode;
            loop {
                match mode {
                    Mode::Done => return None,
                    Mode::Plain => return stored.next().await.map(|item| (item, (stored, Mode::Plain))),
                    Mode::Sniff(mut held) => match stored.next().await {
                        Some(Ok(c)) => {
                            held.extend_from_slice(&c);
                            if held.len() < MAGIC.len() {
                                mode = Mode::Sniff(held);
                                continue;
                            }
                            if &held[..MAGIC.len()] != MAGIC {
                                return Some((Ok(held.freeze()), (stored, Mode::Plain)));
                            }
                            let mut opener = Opener::new(keys.to_vec());
                            match opener.push(&held) {
                                Ok(plain) => return Some((Ok(plain), (stored, Mode::Open(Box::new(opener))))),
                                Err(e) => return Some((Err(err(&key, e)), (stored, Mode::Done))),
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), (stored, Mode::Done))),
                        // Shorter than the magic: not sealed.
                        None if held.is_empty() => return None,
                        None => return Some((Ok(held.freeze()), (stored, Mode::Done))),
                    },
                    Mode::Open(mut opener) => match stored.next().await {
                        Some(Ok(c)) => match opener.push(&c) {
                            Ok(plain) => return Some((Ok(plain), (stored, Mode::Open(opener)))),
                            Err(e) => return Some((Err(err(&key, e)), (stored, Mode::Done))),
                        },
                        Some(Err(e)) => return Some((Err(e), (stored, Mode::Done))),
                        None => {
                            return match opener.finish() {
                                Ok(plain) => Some((Ok(plain), (stored, Mode::Done))),
                                Err(e) => Some((Err(err(&key, e)), (stored, Mode::Done))),
                            };
                        }
                    },
                }
            }
        }
    }))
}

/// `len` bytes from `offset` of the plaintext of `key`: only the chunks that hold them
/// are read (ranged GETs) and opened, each alone; an object that was not sealed is read as
/// it is.
pub(super) async fn read_range(
    store: &super::BackupStore,
    key: &str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, super::StoreError> {
    use super::StoreError;
    let this = store;
    // An encrypted object: the chunks that hold the range, each opened alone.
    let head = this.read_stored_range(key, 0, MAX_HEADER).await?;
    let crypt_err = |e: CryptError| StoreError::Encryption { key: key.to_string(), detail: e.to_string() };
    let Some(header) = Header::read(&head).map_err(crypt_err)? else {
        return this.read_stored_range(key, offset, len).await;
    };
    let sealed_len = this
        .client
        .head_object()
        .bucket(&this.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| this.err("HeadObject", key, e))?
        .content_length
        .unwrap_or_default()
        .max(0) as u64;
    let (chunks, plain_len) = header.layout(sealed_len).map_err(crypt_err)?;
    let end = (offset + len as u64).min(plain_len);
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while at < end {
        let index = at / CHUNK as u64;
        let (start, n) = header.chunk_range(index, sealed_len);
        let sealed = this.read_stored_range(key, start, n).await?;
        let plain = header.open_chunk(&this.keys, index, index + 1 == chunks, &sealed).map_err(crypt_err)?;
        let from = usize::try_from(at - index * CHUNK as u64).unwrap_or(0);
        let to = usize::try_from((end - index * CHUNK as u64).min(plain.len() as u64)).unwrap_or(0);
        out.extend_from_slice(&plain[from.min(to)..to]);
        at = (index + 1) * CHUNK as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &NamedKey, plain: &[u8], pieces: usize) -> Vec<u8> {
        let mut s = Sealer::new(key).unwrap();
        let mut out = Vec::new();
        for part in plain.chunks(pieces.max(1)) {
            s.push(part).unwrap().iter().for_each(|b| out.extend_from_slice(b));
        }
        s.finish().unwrap().iter().for_each(|b| out.extend_from_slice(b));
        out
    }

    fn open(keys: &[NamedKey], sealed: &[u8], pieces: usize) -> Result<Vec<u8>, CryptError> {
        let mut o = Opener::new(keys.to_vec());
        let mut out = Vec::new();
        for part in sealed.chunks(pieces.max(1)) {
            out.extend_from_slice(&o.push(part)?);
        }
        out.extend_from_slice(&o.finish()?);
        Ok(out)
    }

    fn k(id: &str, b: u8) -> NamedKey {
        NamedKey::raw(id, [b; 32])
    }

    #[test]
    fn the_sealer_writes_exactly_what_aeads_stream_writes() {
        use aes_gcm::aead::stream::EncryptorBE32;
        let key = k("backup-key/k1", 9);
        let prefix = [3u8; NONCE_PREFIX];
        for len in [0, 5, CHUNK, CHUNK + 1, 2 * CHUNK + 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut s = Sealer::with_prefix(&key, prefix).unwrap();
            let mut ours = Vec::new();
            s.push(&plain).unwrap().iter().for_each(|b| ours.extend_from_slice(b));
            s.finish().unwrap().iter().for_each(|b| ours.extend_from_slice(b));
            let aad = header(&key.id, &prefix);
            let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.key));
            let mut enc = EncryptorBE32::from_aead(cipher, (&prefix).into());
            let mut theirs = aad.clone();
            let mut chunks: Vec<&[u8]> = plain.chunks(CHUNK).collect();
            let last = chunks.pop().unwrap_or_default();
            for c in chunks {
                theirs.extend_from_slice(&enc.encrypt_next(Payload { msg: c, aad: &aad }).unwrap());
            }
            theirs.extend_from_slice(&enc.encrypt_last(Payload { msg: last, aad: &aad }).unwrap());
            assert_eq!(ours, theirs, "{len} bytes");
        }
    }

    #[test]
    fn round_trips_whatever_the_sizes_and_the_piecing() {
        let key = k("backup-key/k1", 7);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for pieces in [1, 1000, CHUNK, CHUNK + 16, 5 * CHUNK] {
                let sealed = seal(&key, &plain, pieces);
                assert!(sealed.len() >= plain.len() + 16, "a tag at least");
                assert_eq!(open(std::slice::from_ref(&key), &sealed, pieces.max(7)).unwrap(), plain, "{len}/{pieces}");
            }
        }
    }

    #[test]
    fn the_plaintext_is_not_in_the_sealed_bytes() {
        let plain = b"/registry/secrets/default/db-password: hunter2".repeat(100);
        let sealed = seal(&k("s/k", 1), &plain, 64);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn rotation_any_listed_key_opens_the_object_it_sealed() {
        let (old, new) = (k("s/old", 1), k("s/new", 2));
        let by_old = seal(&old, b"before", 10);
        let by_new = seal(&new, b"after", 10);
        let both = [new.clone(), old.clone()];
        assert_eq!(open(&both, &by_old, 3).unwrap(), b"before");
        assert_eq!(open(&both, &by_new, 3).unwrap(), b"after");
        assert_eq!(open(std::slice::from_ref(&new), &by_old, 3), Err(CryptError::UnknownKey("s/old".into())));
    }

    #[test]
    fn a_wrong_key_truncation_or_alteration_fails_authentication() {
        let key = k("s/k", 3);
        let plain: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 13) as u8).collect();
        let sealed = seal(&key, &plain, 4096);
        let impostor = NamedKey::raw("s/k", [9; 32]);
        assert!(matches!(open(&[impostor], &sealed, 4096), Err(CryptError::Auth { chunk: 0, .. })));
        // Cut at a chunk boundary: what is left ends in a chunk not sealed as the last.
        let header_len = MAGIC.len() + 2 + 3 + NONCE_PREFIX + 4;
        let cut = &sealed[..header_len + 2 * (CHUNK + TAG)];
        assert!(matches!(open(std::slice::from_ref(&key), cut, 4096), Err(CryptError::Auth { .. })));
        let mut flipped = sealed.clone();
        let at = flipped.len() / 2;
        flipped[at] ^= 1;
        assert!(matches!(open(std::slice::from_ref(&key), &flipped, 4096), Err(CryptError::Auth { .. })));
        // The header is bound too: another chunk size is refused.
        let mut other = sealed.clone();
        other[header_len - 1] ^= 1;
        assert!(open(std::slice::from_ref(&key), &other, 4096).is_err());
        assert_eq!(open(std::slice::from_ref(&key), b"etcd snapshot bytes", 4), Err(CryptError::NotEncrypted));
    }

    #[test]
    fn any_chunk_opens_alone_for_ranged_reads() {
        let key = k("s/k", 4);
        for len in [0, 10, CHUNK, 2 * CHUNK + 100] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let sealed = seal(&key, &plain, 1000);
            let header = Header::read(&sealed[..MAX_HEADER.min(sealed.len())]).unwrap().expect("a header");
            let (chunks, plain_len) = header.layout(sealed.len() as u64).unwrap();
            assert_eq!(plain_len, len as u64);
            let mut whole = Vec::new();
            for i in 0..chunks {
                let (at, n) = header.chunk_range(i, sealed.len() as u64);
                let at = usize::try_from(at).unwrap();
                whole.extend(
                    header.open_chunk(std::slice::from_ref(&key), i, i + 1 == chunks, &sealed[at..at + n]).unwrap(),
                );
            }
            assert_eq!(whole, plain, "{len}");
        }
        assert_eq!(Header::read(b"plain etcd snapshot").unwrap(), None);
    }

    #[test]
    fn keys_come_raw_base64_or_hex() {
        assert!(NamedKey::from_secret("s/k", &[5u8; 32]).is_ok());
        let b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert_eq!(
            NamedKey::from_secret("s/k", b64.as_bytes()).unwrap().key,
            NamedKey::from_secret("s/k", hex.as_bytes()).unwrap().key
        );
        let short = NamedKey::from_secret("s/k", b"c2hvcnQ=").unwrap_err();
        assert!(short.to_string().contains("not 256 bits"), "{short}");
    }
}
