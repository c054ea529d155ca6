//! A segment of a cluster's change stream (continuous backup): every revision from
//! `first` to `last`, whole, as etcd's watch over the whole key space delivered them
//! (a watch never splits one revision's events, and every revision changes at least one
//! key, so the revisions of a segment are consecutive), each with the time it was
//! received, and the lease table as of `last`. Encoded with protobuf (prost); what the
//! store keeps is these bytes, and the SHA-256 recorded is theirs.
//!
//! Pure: [`Builder`] takes whole revisions and says when a segment is due;
//! [`encode`] / [`decode`] turn a segment into bytes and back, refusing any that is not
//! one unbroken run of whole revisions.

use prost::Message;

/// Format version, first field of every segment: a reader refuses one it does not know.
pub const FORMAT: u32 = 1;

/// One key changed by a revision.
#[derive(Clone, PartialEq, Message)]
pub struct Change {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// A put's value; empty for a delete.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// A delete (no value, no lease).
    #[prost(bool, tag = "3")]
    pub delete: bool,
    /// The key's `create_revision` after this put (its `mod_revision` is the revision).
    #[prost(int64, tag = "4")]
    pub create_revision: i64,
    /// The key's `version` after this put.
    #[prost(int64, tag = "5")]
    pub version: i64,
    /// The lease the key is attached to (0: none).
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// One revision: every key it changed, in etcd's order.
#[derive(Clone, PartialEq, Message)]
pub struct Revision {
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// When the stream received it (Unix milliseconds, the operator's clock).
    #[prost(int64, tag = "2")]
    pub received_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub changes: Vec<Change>,
}

/// A lease as of the segment's last revision.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Lease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// The TTL it was granted with (seconds).
    #[prost(int64, tag = "2")]
    pub granted_ttl: i64,
    /// What was left of it when read (seconds).
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// A segment: whole revisions `first..=last`, consecutive, and the leases as of `last`.
#[derive(Clone, PartialEq, Message)]
pub struct Segment {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    #[prost(int64, tag = "2")]
    pub first: i64,
    #[prost(int64, tag = "3")]
    pub last: i64,
    #[prost(message, repeated, tag = "4")]
    pub revisions: Vec<Revision>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
}

/// Why bytes are not a segment.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("not a segment: {0}")]
    Decode(String),
    #[error("segment format {0}: this build reads format {FORMAT}")]
    Format(u32),
    #[error("segment says revisions {first}..={last} but holds none")]
    Empty { first: i64, last: i64 },
    #[error("segment says it starts at revision {said}, its first revision is {found}")]
    First { said: i64, found: i64 },
    #[error("segment says it ends at revision {said}, its last revision is {found}")]
    Last { said: i64, found: i64 },
    #[error("revision {after} is followed by {found}, not {}: a revision is missing or repeated", after + 1)]
    Broken { after: i64, found: i64 },
    #[error("revision {0} changes no key")]
    NoChange(i64),
}

/// The bytes the store keeps.
pub fn encode(segment: &Segment) -> Vec<u8> {
    segment.encode_to_vec()
}

/// A segment from the store's bytes, checked: the format known, the revisions whole,
/// consecutive, and those the segment says.
pub fn decode(bytes: &[u8]) -> Result<Segment, Invalid> {
    let segment = Segment::decode(bytes).map_err(|e| Invalid::Decode(e.to_string()))?;
    check(&segment)?;
    Ok(segment)
}

/// What [`decode`] checks, for a segment at hand.
pub fn check(segment: &Segment) -> Result<(), Invalid> {
    if segment.format != FORMAT {
        return Err(Invalid::Format(segment.format));
    }
    let (Some(head), Some(tail)) = (segment.revisions.first(), segment.revisions.last()) else {
        return Err(Invalid::Empty { first: segment.first, last: segment.last });
    };
    if head.revision != segment.first {
        return Err(Invalid::First { said: segment.first, found: head.revision });
    }
    if tail.revision != segment.last {
        return Err(Invalid::Last { said: segment.last, found: tail.revision });
    }
    for pair in segment.revisions.windows(2) {
        if pair[1].revision != pair[0].revision + 1 {
            return Err(Invalid::Broken { after: pair[0].revision, found: pair[1].revision });
        }
    }
    match segment.revisions.iter().find(|r| r.changes.is_empty()) {
        Some(r) => Err(Invalid::NoChange(r.revision)),
        None => Ok(()),
    }
}

/// A key as a replay must leave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyState {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// Applies one revision to `state` (key -> what it holds): the model every replay and
/// every test of the stream is held to.
pub fn apply(state: &mut std::collections::BTreeMap<Vec<u8>, KeyState>, revision: &Revision) {
    for c in &revision.changes {
        if c.delete {
            state.remove(&c.key);
        } else {
            let held = KeyState {
                value: c.value.clone(),
                create_revision: c.create_revision,
                mod_revision: revision.revision,
                version: c.version,
                lease: c.lease,
            };
            state.insert(c.key.clone(), held);
        }
    }
}

/// When an open segment is written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushRule {
    /// The oldest revision of an open segment waits at most this long (ms).
    pub max_age_ms: i64,
    /// An open segment past this many bytes (keys and values) is written at once.
    pub max_bytes: usize,
}

/// The open segment of one cluster's stream: whole revisions appended in order, from the
/// revision the stream resumes at.
#[derive(Clone, Debug, PartialEq)]
pub struct Builder {
    next: i64,
    revisions: Vec<Revision>,
    bytes: usize,
}

/// Why a revision cannot be appended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the stream expects revision {expected}, the watch gave {found}")]
    OutOfOrder { expected: i64, found: i64 },
    #[error("revision {0} changes no key")]
    NoChange(i64),
}

impl Builder {
    /// An empty segment whose first revision will be `from` (the last durable segment's
    /// end + 1, or the base's revision + 1).
    pub fn new(from: i64) -> Self {
        Builder { next: from, revisions: Vec::new(), bytes: 0 }
    }

    /// The revision the stream expects next.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Whether nothing was appended since the last cut.
    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// Appends one whole revision: exactly the one expected, never one twice.
    pub fn push(&mut self, revision: Revision) -> Result<(), Refused> {
        if revision.revision != self.next {
            return Err(Refused::OutOfOrder { expected: self.next, found: revision.revision });
        }
        if revision.changes.is_empty() {
            return Err(Refused::NoChange(revision.revision));
        }
        self.bytes += revision.changes.iter().map(|c| c.key.len() + c.value.len()).sum::<usize>();
        self.next += 1;
        self.revisions.push(revision);
        Ok(())
    }

    /// Whether the open segment is due at `now_ms` under `rule`.
    pub fn due(&self, rule: FlushRule, now_ms: i64) -> bool {
        match self.revisions.first() {
            None => false,
            Some(oldest) => self.bytes >= rule.max_bytes || now_ms - oldest.received_ms >= rule.max_age_ms,
        }
    }

    /// The segment of what was appended, with the leases as of its last revision, and an
    /// empty builder that continues after it; `None` (and the builder unchanged) when
    /// nothing was appended.
    pub fn cut(&mut self, leases: Vec<Lease>) -> Option<Segment> {
        let first = self.revisions.first()?.revision;
        let revisions = std::mem::take(&mut self.revisions);
        self.bytes = 0;
        Some(Segment { format: FORMAT, first, last: self.next - 1, revisions, leases })
    }
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
