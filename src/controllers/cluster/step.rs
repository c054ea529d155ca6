//! The steps of a cluster: what the planner (and maintenance, its low-priority part)
//! can ask for, one per pass. Both speak this vocabulary; neither imports the other.

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Something is under way; look again soon.
    Wait(String),
    /// Create the missing pods of a new cluster: all of `members` form the initial
    /// cluster (state `new`).
    Bootstrap {
        members: Vec<String>,
        create: Vec<String>,
    },
    /// Recreate the pod of a member on its surviving volume: same member, same data.
    RecreatePod {
        name: String,
    },
    /// `member add --learner` for a new member.
    AddLearner {
        name: String,
    },
    /// Create the pod of a learner etcd knows (state `existing`).
    CreateLearnerPod {
        name: String,
    },
    Promote {
        id: u64,
        name: String,
    },
    MoveLeader {
        to: u64,
        to_name: String,
        reason: String,
    },
    RemoveMember {
        id: u64,
        name: String,
        reason: String,
    },
    /// Delete the pod (and its volume when `delete_volume`) of a member etcd no longer has.
    DeletePod {
        name: String,
        delete_volume: bool,
    },
    /// Restart a member's pod from the current spec (its volume is kept).
    Restart {
        name: String,
        reason: String,
    },
    /// Replace the pod of a member that never ran (no node took it) by one built from
    /// the current spec: a learner's (`initial: None`), or a bootstrap member's (the
    /// recorded initial cluster).
    ReplacePod {
        name: String,
        initial: Option<Vec<String>>,
    },
    /// Compact history below `revision` (maintenance).
    Compact {
        revision: i64,
        /// Nothing but the current revision is kept.
        all_history: bool,
        reason: String,
    },
    /// Defragment one member (it is blocked while etcd rewrites its db file).
    Defragment {
        id: u64,
        name: String,
        reason: String,
    },
    /// Disarm the NOSPACE alarm, space having been freed.
    Disarm {
        reason: String,
    },
    /// The next step would risk quorum or data: do nothing, say why.
    Blocked(String),
}

impl Step {
    /// Steps that change membership or take a member down: they take the cluster's
    /// operation slot, and are fenced (intent recorded, Lease re-checked) before they run.
    pub fn disruptive(&self) -> bool {
        matches!(
            self,
            Step::AddLearner { .. }
                | Step::Promote { .. }
                | Step::MoveLeader { .. }
                | Step::RemoveMember { .. }
                | Step::DeletePod { .. }
                | Step::Restart { .. }
                | Step::ReplacePod { .. }
                | Step::Compact { .. }
                | Step::Defragment { .. }
                | Step::Disarm { .. }
        )
    }

    /// The member a step is about, if one.
    pub fn member(&self) -> Option<&str> {
        match self {
            Step::RecreatePod { name }
            | Step::AddLearner { name }
            | Step::CreateLearnerPod { name }
            | Step::Promote { name, .. }
            | Step::RemoveMember { name, .. }
            | Step::DeletePod { name, .. }
            | Step::Restart { name, .. }
            | Step::ReplacePod { name, .. }
            | Step::Defragment { name, .. } => Some(name),
            Step::MoveLeader { to_name, .. } => Some(to_name),
            _ => None,
        }
    }
}
