//! The index of a schedule's continuous backup: its bases (full backups, each at the
//! revision read from the snapshot itself) and its segments (see `segment`), kept as one
//! small object beside them so that a restore finds what it needs without listing the
//! bucket. Pure: where the stream resumes, what a restore can reach, the base and segments
//! for a point, what etcd-pilot's own compaction may not pass, what retention drops.

use serde::{Deserialize, Serialize};

/// A full backup the stream continues from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Base {
    pub key: String,
    /// The snapshot's own revision (read from the snapshot, never asked apart).
    pub revision: i64,
    /// When it was taken (Unix milliseconds).
    pub time_ms: i64,
    pub sha256: String,
}

/// A segment written to the store: revisions `first..=last`, whole and consecutive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRef {
    pub key: String,
    pub first: i64,
    pub last: i64,
    /// When its first and last revisions were received (Unix milliseconds).
    pub first_ms: i64,
    pub last_ms: i64,
    pub sha256: String,
}

/// Revisions no segment holds: the stream needed `from` after etcd had compacted it, and
/// a new base was taken at `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gap {
    pub from: i64,
    pub to: i64,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The index object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Oldest first.
    pub bases: Vec<Base>,
    /// Oldest first, never overlapping.
    pub segments: Vec<SegmentRef>,
    pub gaps: Vec<Gap>,
}

/// Where the stream goes on from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// No base yet: take one at once.
    NeedBase,
    /// Watch from this revision: the last durable revision + 1.
    From(i64),
}

/// A point a restore goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The last revision the stream made durable.
    Latest,
    Revision(i64),
    /// The last revision received at or before this time (Unix milliseconds).
    Time(i64),
}

/// What a restore to a point reads: a base, then segments in order, up to a revision, or
/// up to the last revision received by a time (known only once the last segment is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub base: Base,
    pub segments: Vec<SegmentRef>,
    pub upto: Upto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upto {
    Revision(i64),
    Time(i64),
}

/// Why a point cannot be restored to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreachable {
    #[error("no base backup yet: the window is empty")]
    Empty,
    #[error("{point} is outside the window: revisions {start} to {end} ({})", times(*start_ms, *end_ms))]
    Outside { point: String, start: i64, end: i64, start_ms: i64, end_ms: i64 },
    #[error("{point} falls in a gap of the stream: revisions {} to {} are in no segment ({})", gap.from, gap.to, times(gap.from_ms, gap.to_ms))]
    InGap { point: String, gap: Gap },
}

fn times(from_ms: i64, to_ms: i64) -> String {
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string());
    format!("{} to {}", at(from_ms), at(to_ms))
}

impl Index {
    /// The last revision the stream made durable (a segment's end, or a base's revision
    /// when it is newer).
    pub fn durable(&self) -> Option<i64> {
        let segments = self.segments.iter().map(|s| s.last);
        self.bases.iter().map(|b| b.revision).chain(segments).max()
    }

    /// Where the stream goes on from after any stop (a restart, a Lease handover, a
    /// member or leader change): what is durable + 1, so no revision is written twice
    /// or left out.
    pub fn resume(&self) -> Resume {
        match (self.bases.is_empty(), self.durable()) {
            (false, Some(durable)) => Resume::From(durable + 1),
            _ => Resume::NeedBase,
        }
    }

    /// The newest revision reachable from `base`: its segments followed without a break.
    fn reach(&self, base: &Base) -> (i64, i64) {
        let mut end = (base.revision, base.time_ms);
        for s in self.segments.iter().filter(|s| s.last > base.revision) {
            if s.first > end.0 + 1 {
                break;
            }
            end = (s.last, s.last_ms);
        }
        end
    }

    /// The window: from the oldest base to the newest revision any base reaches.
    pub fn window(&self) -> Option<(i64, i64, i64, i64)> {
        let oldest = self.bases.first()?;
        let (end, end_ms) = self.bases.iter().map(|b| self.reach(b)).max()?;
        Some((oldest.revision, end, oldest.time_ms, end_ms))
    }

    /// The base and segments a restore to `point` reads: the newest base at or before
    /// it, and the segments after it up to and including the one that holds the point.
    pub fn plan(&self, point: Point) -> Result<Plan, Unreachable> {
        let (start, end, start_ms, end_ms) = self.window().ok_or(Unreachable::Empty)?;
        let outside = |point: String| Unreachable::Outside { point, start, end, start_ms, end_ms };
        let (base, upto) = match point {
            Point::Latest => {
                let base = self.bases.iter().max_by_key(|b| self.reach(b)).ok_or(Unreachable::Empty)?;
                (base, Upto::Revision(end))
            }
            Point::Revision(r) => {
                let base = self.bases.iter().rev().find(|b| b.revision <= r);
                (base.ok_or_else(|| outside(format!("revision {r}")))?, Upto::Revision(r))
            }
            Point::Time(t) => {
                let base = self.bases.iter().rev().find(|b| b.time_ms <= t);
                (base.ok_or_else(|| outside(format!("time {}", times(t, t))))?, Upto::Time(t))
            }
        };
        let (reach, reach_ms) = self.reach(base);
        // Past what this base reaches: in a gap when more follows it, else past the end
        // (a time after the last durable revision cannot say what was written meanwhile).
        let beyond = match upto {
            Upto::Revision(r) => r > reach,
            Upto::Time(t) => t > reach_ms,
        };
        if beyond {
            let point = match upto {
                Upto::Revision(r) => format!("revision {r}"),
                Upto::Time(t) => format!("time {}", times(t, t)),
            };
            return Err(match self.gaps.iter().find(|g| g.from == reach + 1) {
                Some(gap) if reach < end => Unreachable::InGap { point, gap: gap.clone() },
                _ => outside(point),
            });
        }
        let segments = self
            .segments
            .iter()
            .filter(|s| s.last > base.revision && s.first <= reach)
            .take_while(|s| match upto {
                Upto::Revision(r) => s.first <= r,
                Upto::Time(t) => s.first_ms <= t,
            })
            .cloned()
            .collect();
        Ok(Plan { base: base.clone(), segments, upto })
    }

    /// What retention drops when only `kept` bases remain (by key): the other bases, and
    /// the segments that end at or before the oldest kept base (no restore reads them).
    pub fn prune(&self, kept: &[String]) -> (Index, Vec<String>) {
        let bases: Vec<Base> = self.bases.iter().filter(|b| kept.contains(&b.key)).cloned().collect();
        let floor = bases.iter().map(|b| b.revision).min();
        let (segments, dropped): (Vec<SegmentRef>, Vec<SegmentRef>) =
            self.segments.iter().cloned().partition(|s| floor.is_some_and(|f| s.last > f));
        let gaps = self.gaps.iter().filter(|g| floor.is_some_and(|f| g.to > f)).cloned().collect();
        let mut gone: Vec<String> =
            self.bases.iter().filter(|b| !kept.contains(&b.key)).map(|b| b.key.clone()).collect();
        gone.extend(dropped.into_iter().map(|s| s.key));
        (Index { bases, segments, gaps }, gone)
    }
}

/// The index after taking in the schedule's successful full backups (`candidates`), and
/// the segment objects it no longer names (retention):
/// - a base joins once the stream has made its revision durable (so a restart resumes
///   where the segments end, never past revisions only a newer base holds); the first
///   base joins at once; after a compaction the stream could not get past (`gap`: the
///   revision it needed and when the revision before it was received), the first
///   candidate at or past that revision joins and the gap is recorded;
/// - a base older than the newest one already in the index never joins (no segment links
///   it to the others);
/// - a base whose backup retention deleted leaves, with the segments that end at or before
///   the oldest base kept; the newest base always stays (a list that lost every backup at
///   once is not believed).
pub fn admit(index: &Index, candidates: &[Base], gap: Option<(i64, i64)>) -> (Index, Vec<String>, Option<Gap>) {
    let mut next = index.clone();
    let mut joined_gap = None;
    let segments_end = index.segments.last().map(|s| s.last);
    let mut fresh: Vec<&Base> = candidates.iter().filter(|c| !index.bases.iter().any(|b| b.key == c.key)).collect();
    fresh.sort_by_key(|b| b.revision);
    for c in fresh {
        let newest = next.bases.last().map(|b| b.revision);
        if newest.is_some_and(|n| c.revision < n) {
            continue;
        }
        let durable = segments_end.max(newest);
        let joins = match (newest, gap) {
            (None, _) => true,
            (Some(_), Some((needed, since_ms))) if c.revision + 1 >= needed && joined_gap.is_none() => {
                let g = Gap { from: needed, to: c.revision, from_ms: since_ms, to_ms: c.time_ms };
                next.gaps.push(g.clone());
                joined_gap = Some(g);
                true
            }
            _ => durable.is_some_and(|d| c.revision <= d),
        };
        if joins {
            next.bases.push(c.clone());
        }
    }
    let Some(newest) = next.bases.last().map(|b| b.key.clone()) else { return (next, Vec::new(), joined_gap) };
    let kept: Vec<String> = next
        .bases
        .iter()
        .filter(|b| b.key == newest || candidates.iter().any(|c| c.key == b.key))
        .map(|b| b.key.clone())
        .collect();
    if kept.len() == next.bases.len() {
        return (next, Vec::new(), joined_gap);
    }
    let (pruned, gone) = next.prune(&kept);
    // Bases' objects belong to their backups (deleted with them): only segments go here.
    let segments: Vec<String> = gone.into_iter().filter(|k| index.segments.iter().any(|s| &s.key == k)).collect();
    (pruned, segments, joined_gap)
}

/// The revision etcd-pilot's own compaction may go to: what it planned, never past what
/// the stream has made durable (a revision compacted before it is written is lost).
pub fn compaction_limit(planned: i64, streamed: Option<i64>) -> i64 {
    streamed.map_or(planned, |durable| planned.min(durable))
}

/// The last revision of `revisions` (with their received times, in order) received at or
/// before `t`, for a restore to a time.
pub fn resolve_time(revisions: impl IntoIterator<Item = (i64, i64)>, t: i64) -> Option<i64> {
    revisions.into_iter().take_while(|(_, received)| *received <= t).map(|(r, _)| r).last()
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
