//! The pure rules of a schedule's continuous backup: whether its stream runs, when a base
//! (a full backup) is taken at once, which backups the stream may take as bases, and the
//! status the schedule shows.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::Phase;
use crate::api::schedule::{ContinuousStatus, StreamCopy, StreamGap, WindowEdge};
use crate::shared::stream::Progress;
use crate::shared::window::Base;

/// A backup the schedule made, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    pub name: String,
    pub phase: Phase,
    pub deleting: bool,
    /// Set once it succeeded: its object, SHA-256, the snapshot's own revision, and when
    /// it finished (Unix ms).
    pub base: Option<Base>,
}

/// What the pass sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `continuous.enabled`, not suspended, not being deleted.
    pub wanted: bool,
    /// Why it cannot stream (no such cluster, no target).
    pub problem: Option<String>,
    /// The stream's settings now: a running stream with others is restarted.
    pub settings: Settings,
    /// The running stream's settings, if one runs.
    pub running: Option<Settings>,
    pub made: Vec<Made>,
    /// Where the running stream stands.
    pub progress: Option<Progress>,
}

/// What a stream is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub cluster: String,
    /// The target, as JSON (compared, not read).
    pub target: String,
    pub flush_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// None runs and none should.
    Idle,
    Start,
    Keep,
    /// Settings changed: stop the old stream (it makes what it holds durable) and start anew.
    Restart,
    Stop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub task: Task,
    /// Take a base now, and why.
    pub base: Option<String>,
    /// The bases the stream may take into its index: the successful backups.
    pub bases: Vec<Base>,
}

pub fn plan(o: &Observation) -> Plan {
    let bases: Vec<Base> = o.made.iter().filter(|m| !m.deleting).filter_map(|m| m.base.clone()).collect();
    if !o.wanted || o.problem.is_some() {
        let task = if o.running.is_some() { Task::Stop } else { Task::Idle };
        return Plan { task, base: None, bases };
    }
    let task = match &o.running {
        None => Task::Start,
        Some(s) if *s == o.settings => Task::Keep,
        Some(_) => Task::Restart,
    };
    let busy = o.made.iter().any(|m| !m.phase.is_finished() && !m.deleting);
    let indexed = o.progress.as_ref().is_some_and(|p| !p.index.bases.is_empty());
    let base = if busy {
        None
    } else if !indexed && bases.is_empty() {
        Some("the continuous backup has no base yet: a full backup first".to_string())
    } else {
        match o.progress.as_ref().and_then(|p| p.gap) {
            Some((needed, _)) if !bases.iter().any(|b| b.revision + 1 >= needed) => Some(format!(
                "revisions from {needed} on were compacted before the stream read them: a new base, the gap recorded"
            )),
            _ => None,
        }
    };
    Plan { task, base, bases }
}

/// The status of a suspended stream: the window as it was, nothing streaming.
pub fn suspended(old: ContinuousStatus) -> ContinuousStatus {
    ContinuousStatus {
        lag_seconds: None,
        state: Some("Suspended".into()),
        message: Some("spec.suspend: nothing is streamed; the window ends where it ended".into()),
        ..old
    }
}

fn time(ms: i64) -> Option<Time> {
    jiff::Timestamp::from_millisecond(ms).ok().map(Time)
}

/// The schedule's `status.continuous` from where the stream stands at `now_ms`.
pub fn status(progress: Option<&Progress>, problem: Option<&str>, now_ms: i64) -> ContinuousStatus {
    let Some(p) = progress else {
        return ContinuousStatus {
            state: Some(if problem.is_some() { "Blocked" } else { "Starting" }.into()),
            message: problem.map(str::to_string),
            ..ContinuousStatus::default()
        };
    };
    let index = &p.index;
    let last = index.segments.last();
    let (last_revision, last_ms) = match (last, index.bases.last()) {
        (Some(s), Some(b)) if b.revision > s.last => (Some(b.revision), Some(b.time_ms)),
        (Some(s), _) => (Some(s.last), Some(s.last_ms)),
        (None, Some(b)) => (Some(b.revision), Some(b.time_ms)),
        (None, None) => (None, None),
    };
    let window = index.window();
    ContinuousStatus {
        last_revision,
        last_time: last_ms.and_then(time),
        lag_seconds: p.caught_up_ms.map(|t| ((now_ms - t) / 1000).max(0)),
        window_start: window.map(|(start, _, start_ms, _)| WindowEdge { revision: start, time: time(start_ms) }),
        window_end: window.map(|(_, end, _, end_ms)| WindowEdge { revision: end, time: time(end_ms) }),
        gaps: index
            .gaps
            .iter()
            .map(|g| StreamGap {
                from_revision: g.from,
                to_revision: g.to,
                from_time: time(g.from_ms),
                to_time: time(g.to_ms),
            })
            .collect(),
        copies: p
            .copies
            .iter()
            .map(|c| StreamCopy { bucket: c.bucket.clone(), last_revision: c.last_revision, message: c.error.clone() })
            .collect(),
        state: Some(p.state.to_string()).filter(|s| !s.is_empty()),
        message: Some(p.message.clone()).filter(|m| !m.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::window::{Index, SegmentRef};

    fn settings() -> Settings {
        Settings { cluster: "main".into(), target: "{}".into(), flush_ms: 5000 }
    }

    fn base(key: &str, revision: i64) -> Base {
        Base { key: key.into(), revision, time_ms: revision * 10, sha256: String::new() }
    }

    fn made(name: &str, phase: Phase, base: Option<Base>) -> Made {
        Made { name: name.into(), phase, deleting: false, base }
    }

    fn progress(bases: Vec<Base>, gap: Option<(i64, i64)>) -> Progress {
        Progress { index: Index { bases, ..Index::default() }, gap, ..Progress::default() }
    }

    fn obs() -> Observation {
        Observation { wanted: true, problem: None, settings: settings(), running: None, made: vec![], progress: None }
    }

    /// Every transition: started, kept, restarted on new settings, stopped when turned
    /// off or blocked; a base at once when there is none, none while a backup runs, one
    /// after a gap until a backup past the gap succeeded; a crash between creating the
    /// base and seeing it (the backup exists, running) takes no second one.
    #[test]
    fn the_plan_table() {
        let ok = |name, rev| made(name, Phase::Succeeded, Some(base(name, rev)));
        let cases: Vec<(&str, Observation, Task, bool)> = vec![
            ("new: start, and a base at once", obs(), Task::Start, true),
            (
                "running, same settings",
                Observation { running: Some(settings()), made: vec![ok("b1", 10)], ..obs() },
                Task::Keep,
                false,
            ),
            (
                "settings changed: restart",
                Observation {
                    running: Some(Settings { flush_ms: 1000, ..settings() }),
                    made: vec![ok("b1", 10)],
                    ..obs()
                },
                Task::Restart,
                false,
            ),
            ("turned off", Observation { wanted: false, running: Some(settings()), ..obs() }, Task::Stop, false),
            ("off and not running", Observation { wanted: false, ..obs() }, Task::Idle, false),
            (
                "the cluster is gone",
                Observation { problem: Some("no cluster".into()), running: Some(settings()), ..obs() },
                Task::Stop,
                false,
            ),
            (
                "the base is being taken (also: a crash right after creating it)",
                Observation { made: vec![made("b1", Phase::Running, None)], ..obs() },
                Task::Start,
                false,
            ),
            (
                "a base in the index already (its backup listed late)",
                Observation {
                    running: Some(settings()),
                    progress: Some(progress(vec![base("b1", 10)], None)),
                    ..obs()
                },
                Task::Keep,
                false,
            ),
            (
                "a gap: a new base",
                Observation {
                    running: Some(settings()),
                    made: vec![ok("b1", 10)],
                    progress: Some(progress(vec![base("b1", 10)], Some((50, 400)))),
                    ..obs()
                },
                Task::Keep,
                true,
            ),
            (
                "a gap, and a backup past it succeeded: no more",
                Observation {
                    running: Some(settings()),
                    made: vec![ok("b1", 10), ok("b2", 60)],
                    progress: Some(progress(vec![base("b1", 10)], Some((50, 400)))),
                    ..obs()
                },
                Task::Keep,
                false,
            ),
            (
                "a failed backup does not count as a base",
                Observation { made: vec![made("b1", Phase::Failed, None)], ..obs() },
                Task::Start,
                true,
            ),
        ];
        for (name, o, task, base) in cases {
            let p = plan(&o);
            assert_eq!(p.task, task, "{name}");
            assert_eq!(p.base.is_some(), base, "{name}: {:?}", p.base);
        }
    }

    #[test]
    fn status_names_the_window_the_lag_and_the_gaps() {
        let mut p = progress(vec![base("b1", 100), base("b3", 400)], None);
        p.index.segments = vec![
            SegmentRef { key: "s".into(), first: 101, last: 300, first_ms: 1010, last_ms: 3000, sha256: String::new() },
            SegmentRef { key: "t".into(), first: 401, last: 450, first_ms: 4010, last_ms: 4500, sha256: String::new() },
        ];
        p.index.gaps = vec![crate::shared::window::Gap { from: 301, to: 400, from_ms: 3000, to_ms: 4000 }];
        p.caught_up_ms = Some(9_000);
        p.state = "Streaming";
        let s = status(Some(&p), None, 12_500);
        assert_eq!(s.last_revision, Some(450));
        assert_eq!(s.lag_seconds, Some(3));
        assert_eq!(s.window_start.map(|w| w.revision), Some(100));
        assert_eq!(s.window_end.map(|w| w.revision), Some(450));
        assert_eq!(s.gaps.iter().map(|g| (g.from_revision, g.to_revision)).collect::<Vec<_>>(), [(301, 400)]);
        assert_eq!(s.state.as_deref(), Some("Streaming"));
        let blocked = status(None, Some("no target"), 0);
        assert_eq!((blocked.state.as_deref(), blocked.message.as_deref()), (Some("Blocked"), Some("no target")));
    }
}
