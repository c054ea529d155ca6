use super::*;

#[test]
fn the_slot_is_given_back_when_idle_or_when_quorum_is_lost_for_good() {
    let remove = Step::RemoveMember { id: 1, name: "main-0".into(), reason: "r".into() };
    let wait = Step::Wait("w".into());
    let blocked = Step::Blocked("b".into());
    let recreate = Step::RecreatePod { name: "main-1".into() };
    for (step, lost, unplaceable, releases) in [
        (&Step::Idle, false, false, true),
        (&Step::Idle, true, false, true),
        (&wait, false, false, false),
        (&remove, false, false, false),
        (&wait, true, false, true),
        (&blocked, true, false, true),
        (&recreate, true, false, true),
        (&remove, true, false, false),
        // Waiting for a node to take a member: nothing is under way.
        (&wait, false, true, true),
        (&remove, false, true, false),
    ] {
        assert_eq!(
            releases_slot(step, lost, unplaceable),
            releases,
            "{step:?}, quorum lost for good: {lost}, unplaceable: {unplaceable}"
        );
    }
}

const C: &str = "main";
const T: u64 = 300;

fn want(size: usize) -> Desired {
    Desired {
        size,
        version: "3.4.23".into(),
        spec_hash: "h1".into(),
        trust: None,
        paused: false,
        replace_unhealthy_after_secs: T,
        learner_retry_after_secs: 60,
        memory: false,
        allow_data_loss: false,
        maintenance: None,
        one_per_node: false,
    }
}

fn pod(name: &str) -> PodState {
    PodState {
        name: name.into(),
        ready: true,
        terminating: false,
        failed: false,
        version: "3.4.23".into(),
        spec_hash: Some("h1".into()),
        trust: None,
        down_for_secs: 0,
        node: None,
        unplaced: None,
        one_per_node: false,
        containers_gone: false,
    }
}

fn member(id: u64, name: &str) -> MemberState {
    MemberState { id, name: name.into(), learner: false, healthy: true, leader: id == 1, unhealthy_for_secs: 0 }
}

/// A healthy cluster of `n` members `main-0..`, ids 1.., member 1 leading, with pods
/// and volumes.
fn healthy(n: u64) -> Observation {
    let names: Vec<String> = (0..n).map(|i| member_name(C, i as u32)).collect();
    Observation {
        pods: names.iter().map(|n| pod(n)).collect(),
        volumes: names.iter().cloned().collect(),
        members: Some((0..n).map(|i| member(i + 1, &names[i as usize])).collect()),
        formed: true,
        highest_ordinal: Some(n as u32 - 1),
        ..Observation::default()
    }
}

fn members(o: &mut Observation) -> &mut Vec<MemberState> {
    o.members.as_mut().unwrap()
}

fn without_pod(mut o: Observation, name: &str) -> Observation {
    o.pods.retain(|p| p.name != name);
    o
}

/// Member `i` down for `secs`: etcd has no answer from it and its pod is not ready.
fn down(mut o: Observation, i: usize, secs: u64) -> Observation {
    members(&mut o)[i].healthy = false;
    members(&mut o)[i].unhealthy_for_secs = secs;
    o.pods[i].ready = false;
    o.pods[i].down_for_secs = secs;
    o
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

// Rows are pushed one by one because many build on the observation of the row before.
#[allow(clippy::vec_init_then_push)]
#[test]
fn table() {
    let mut cases: Vec<(&str, Desired, Observation, Step)> = Vec::new();

    cases.push(("paused does nothing, whatever it sees", Desired { paused: true, ..want(5) }, healthy(3), Step::Idle));
    cases.push(("steady state", want(3), healthy(3), Step::Idle));
    cases.push((
        "another controller holds the operation slot (a restore): stand down",
        want(5),
        Observation { slot_busy: Some("restore Restore".into()), ..healthy(3) },
        Step::Wait("restore Restore is under way; membership changes wait for it".into()),
    ));

    // Bootstrap, and the durable evidence that keeps it from ever happening twice.
    cases.push((
        "a new cluster starts as one member; the others join as learners",
        want(3),
        Observation::default(),
        Step::Bootstrap { members: names(&["main-0"]), create: names(&["main-0"]) },
    ));
    cases.push((
        "... whatever the size",
        want(7),
        Observation::default(),
        Step::Bootstrap { members: names(&["main-0"]), create: names(&["main-0"]) },
    ));
    cases.push((
        "the first member formed the cluster: the second joins as a learner",
        want(3),
        healthy(1),
        Step::AddLearner { name: "main-1".into() },
    ));
    let unplaced_boot = Observation {
        pods: vec![PodState {
            ready: false,
            unplaced: Some("0/6 nodes are available: 6 Insufficient memory.".into()),
            ..pod("main-0")
        }],
        volumes: BTreeSet::from(["main-0".into()]),
        bootstrap: Some(names(&["main-0"])),
        ..Observation::default()
    };
    cases.push((
        "no node takes the bootstrap member: wait, in the scheduler's words",
        want(3),
        unplaced_boot.clone(),
        Step::Wait("bootstrapping: main-0 cannot be placed: 0/6 nodes are available: 6 Insufficient memory.".into()),
    ));
    cases.push((
        "... and once the spec changes, its pod is replaced by one from the new spec",
        Desired { spec_hash: "h2".into(), ..want(3) },
        unplaced_boot,
        Step::ReplacePod { name: "main-0".into(), initial: Some(names(&["main-0"])) },
    ));
    cases.push((
        "two of three gone with their volumes: quorum lost for good, nothing done",
        want(3),
        {
            let mut o = without_pod(without_pod(healthy(3), "main-1"), "main-2");
            o.volumes = BTreeSet::from(["main-0".into()]);
            members(&mut o)[1].healthy = false;
            members(&mut o)[2].healthy = false;
            o
        },
        Step::Blocked("quorum lost for good: 2 of 3 voting members are gone with their volumes (main-1, main-2); nothing is done on its own: recover with an EtcdRestore (mode InPlace, source.member a survivor, or source.backup)".into()),
    ));
    cases.push((
        "after an in-place restore (every member replaced): the new members take new ordinals",
        want(3),
        Observation { highest_ordinal: Some(2), ..Observation::default() },
        Step::Bootstrap { members: names(&["main-3"]), create: names(&["main-3"]) },
    ));
    cases.push((
        "crash during a bootstrap of several (recorded by an earlier version): only the missing pods are created",
        want(3),
        Observation {
            pods: vec![pod("main-0")],
            volumes: BTreeSet::from(["main-0".into()]),
            bootstrap: Some(names(&["main-0", "main-1", "main-2"])),
            ..Observation::default()
        },
        Step::Bootstrap { members: names(&["main-0", "main-1", "main-2"]), create: names(&["main-1", "main-2"]) },
    ));
    cases.push((
        "bootstrap pods exist: wait for them to form the cluster",
        want(1),
        Observation { pods: vec![pod("main-0")], bootstrap: Some(names(&["main-0"])), ..Observation::default() },
        Step::Wait("bootstrapping: waiting for the members to form the cluster".into()),
    ));
    cases.push((
        "a size change during a recorded bootstrap keeps the recorded members",
        want(5),
        Observation { pods: vec![pod("main-0")], bootstrap: Some(names(&["main-0"])), ..Observation::default() },
        Step::Wait("bootstrapping: waiting for the members to form the cluster".into()),
    ));
    let mut status_lost = healthy(3);
    status_lost.members = None;
    cases.push((
        "formed (id on the volumes), etcd silent, status gone: never bootstrap, wait",
        want(3),
        status_lost.clone(),
        Step::Wait("no etcd member answers; waiting for a quorum of members to run".into()),
    ));
    let mut no_record = status_lost.clone();
    no_record.formed = false;
    cases.push((
        "volumes but no record of a bootstrap or of a formed cluster: refuse to bootstrap beside them",
        want(3),
        no_record.clone(),
        Step::Blocked("member pods or volumes exist, but nothing records that this cluster was bootstrapped or formed: refusing to start a new cluster beside that data".into()),
    ));
    let mut only_volumes = no_record;
    only_volumes.pods.clear();
    cases.push((
        "only volumes left, nothing recorded: still refused",
        want(3),
        only_volumes,
        Step::Blocked("member pods or volumes exist, but nothing records that this cluster was bootstrapped or formed: refusing to start a new cluster beside that data".into()),
    ));

    // etcd unreachable after bootstrap.
    let mut all_gone = healthy(3);
    all_gone.pods.clear();
    all_gone.members = None;
    cases.push((
        "all pods gone, volumes kept: recreate them",
        want(3),
        all_gone,
        Step::RecreatePod { name: "main-0".into() },
    ));

    // Pod deleted, volume kept: it comes back with its data.
    cases.push((
        "member pod deleted: recreate it on its volume",
        want(3),
        without_pod(healthy(3), "main-2"),
        Step::RecreatePod { name: "main-2".into() },
    ));
    let mut terminating = healthy(3);
    terminating.pods[2].terminating = true;
    cases.push((
        "a pod terminating: wait",
        want(3),
        terminating.clone(),
        Step::Wait("pod main-2 is terminating".into()),
    ));
    let mut gone_container = terminating.clone();
    gone_container.pods[2].containers_gone = true;
    cases.push((
        "... its containers gone, its volume kept: still waited for (it comes back on that volume)",
        want(3),
        gone_container.clone(),
        Step::Wait("pod main-2 is terminating".into()),
    ));
    let mut over = gone_container.clone();
    over.volumes.remove("main-2");
    members(&mut over)[2].healthy = false;
    cases.push((
        "... its containers gone and its volume deleted: over for good, removed at once (replaced by a new name)",
        want(3),
        over.clone(),
        Step::RemoveMember { id: 3, name: "main-2".into(), reason: "its pod and volume are gone".into() },
    ));
    let mut still_running = over.clone();
    still_running.pods[2].containers_gone = false;
    cases.push((
        "... volume deleted but its etcd still running (the kubelet says so): wait",
        want(3),
        still_running,
        Step::Wait("pod main-2 is terminating".into()),
    ));
    let mut removed_stuck = healthy(3);
    removed_stuck.pods[2].terminating = true;
    members(&mut removed_stuck).pop();
    removed_stuck.volumes.remove("main-2");
    cases.push((
        "a removed member's pod stuck terminating (lost node): healing goes on",
        want(3),
        removed_stuck,
        Step::AddLearner { name: "main-3".into() },
    ));

    // Pod and volume deleted: replace (remove, then add a learner).
    let mut lost = without_pod(healthy(3), "main-2");
    lost.volumes.remove("main-2");
    members(&mut lost)[2].healthy = false;
    cases.push((
        "pod and volume gone: remove the member",
        want(3),
        lost,
        Step::RemoveMember { id: 3, name: "main-2".into(), reason: "its pod and volume are gone".into() },
    ));
    let mut replaced = healthy(3);
    replaced.pods.pop();
    replaced.volumes.remove("main-2");
    members(&mut replaced).pop();
    cases.push((
        "after the removal a fresh learner is added, with a new ordinal",
        want(3),
        replaced.clone(),
        Step::AddLearner { name: "main-3".into() },
    ));
    cases.push((
        "crash after the removal, before the pod delete: the pod goes (with its volume per retention)",
        want(3),
        {
            let mut o = healthy(3);
            members(&mut o).pop();
            o
        },
        Step::DeletePod { name: "main-2".into(), delete_volume: true },
    ));

    let mut orphan_volume = healthy(3);
    members(&mut orphan_volume).pop();
    orphan_volume.pods.pop();
    cases.push((
        "crash after the pod delete, before the volume's: the volume goes per retention",
        want(3),
        orphan_volume.clone(),
        Step::DeletePod { name: "main-2".into(), delete_volume: true },
    ));
    assert_eq!(
        plan(C, &want(3), &orphan_volume, false),
        Step::DeletePod { name: "main-2".into(), delete_volume: false },
        "with whenScaled: Retain it is marked and kept"
    );

    // A follower's list (no leader answered) may lack a member just added: its pod and
    // volume are never deleted on that word.
    let mut lagging = healthy(3);
    members(&mut lagging).pop();
    lagging.members_unconfirmed = true;
    cases.push((
        "a pod missing from a follower's list: wait for the leader's",
        want(3),
        lagging,
        Step::Wait("main-2 is not in a follower's member list; waiting for the leader's".into()),
    ));
    cases.push((
        "a volume missing from a follower's list: wait for the leader's",
        want(3),
        Observation { members_unconfirmed: true, ..orphan_volume },
        Step::Wait("main-2 is not in a follower's member list; waiting for the leader's".into()),
    ));
    cases.push((
        "a follower's list with every member: planning goes on",
        want(5),
        Observation { members_unconfirmed: true, ..healthy(3) },
        Step::AddLearner { name: "main-3".into() },
    ));

    // Scale up through a learner, with crashes between the steps.
    cases.push(("scale up: add a learner", want(5), healthy(3), Step::AddLearner { name: "main-3".into() }));
    let mut added = healthy(3);
    members(&mut added).push(MemberState { learner: true, healthy: false, ..member(9, "main-3") });
    added.highest_ordinal = Some(3);
    cases.push((
        "crash after member add, before the pod: create the learner's pod",
        want(5),
        added.clone(),
        Step::CreateLearnerPod { name: "main-3".into() },
    ));
    let mut podless = added.clone();
    members(&mut podless)[3].unhealthy_for_secs = T;
    cases.push((
        "a learner whose pod cannot be created (quota) is given up after the deadline",
        want(5),
        podless,
        Step::RemoveMember {
            id: 9,
            name: "main-3".into(),
            reason: "learner main-3 has no pod after 300s; removing it to try again later".into(),
        },
    ));
    let mut catching_up = added.clone();
    catching_up.pods.push(PodState { ready: false, ..pod("main-3") });
    catching_up.volumes.insert("main-3".into());
    cases.push((
        "learner catching up: wait",
        want(5),
        catching_up.clone(),
        Step::Wait("learner main-3 is catching up".into()),
    ));
    let mut in_sync = catching_up.clone();
    members(&mut in_sync)[3].healthy = true;
    cases.push((
        "learner in sync: promote (also after a crash that left it unpromoted)",
        want(5),
        in_sync.clone(),
        Step::Promote { id: 9, name: "main-3".into() },
    ));
    let mut learner_failed = catching_up.clone();
    learner_failed.pods[3].failed = true;
    cases.push((
        "a learner whose pod fails is given time (it may join on a restart)",
        want(5),
        learner_failed.clone(),
        Step::Wait("learner main-3's pod fails; it is restarted, and given up after 300s".into()),
    ));
    members(&mut learner_failed)[3].unhealthy_for_secs = T;
    cases.push((
        "... and removed to try again once past the deadline",
        want(5),
        learner_failed,
        Step::RemoveMember {
            id: 9,
            name: "main-3".into(),
            reason: "learner main-3 is not healthy after 300s (pod failed); removing it to try again later".into(),
        },
    ));
    let mut stuck = catching_up.clone();
    members(&mut stuck)[3].unhealthy_for_secs = T;
    cases.push((
        "a learner stuck past the deadline (pod Pending, image not pulled) is removed",
        want(5),
        stuck,
        Step::RemoveMember {
            id: 9,
            name: "main-3".into(),
            reason: "learner main-3 is not healthy after 300s (pod not ready); removing it to try again later".into(),
        },
    ));
    // A learner no node takes: it waits without voting, past any deadline.
    let mut unplaced = catching_up.clone();
    unplaced.pods[3].unplaced = Some(
        "0/6 nodes are available: 3 node(s) didn't match pod anti-affinity rules, 3 node(s) had taint {node-role.kubernetes.io/control-plane: }, that the pod didn't tolerate.".into(),
    );
    members(&mut unplaced)[3].unhealthy_for_secs = 10 * T;
    cases.push((
        "a learner no node takes waits, never given up on (it does not vote)",
        want(5),
        unplaced.clone(),
        Step::Wait("learner main-3 cannot be placed: 0/6 nodes are available: 3 node(s) didn't match pod anti-affinity rules, 3 node(s) had taint {node-role.kubernetes.io/control-plane: }, that the pod didn't tolerate.".into()),
    ));
    cases.push((
        "... its pod is replaced once the spec changes (anti-affinity relaxed)",
        Desired { spec_hash: "h2".into(), ..want(5) },
        unplaced.clone(),
        Step::ReplacePod { name: "main-3".into(), initial: None },
    ));
    // The anti-affinity relaxed (Required -> Preferred): the learner, built from the
    // new spec, is kept out by the members' own pods, still built one per node.
    let mut kept_out = unplaced.clone();
    for p in kept_out.pods.iter_mut().take(3) {
        p.one_per_node = true;
    }
    cases.push((
        "a learner kept out by the members' own one-per-node pods: they roll meanwhile, followers first",
        Desired { spec_hash: "h2".into(), ..want(5) },
        {
            let mut o = kept_out.clone();
            o.pods[3].spec_hash = Some("h2".into());
            o
        },
        Step::Restart { name: "main-1".into(), reason: "the spec of its pod changed".into() },
    ));
    cases.push((
        "... not while the spec still asks one per node (the learner is kept out by that)",
        Desired { spec_hash: "h2".into(), one_per_node: true, ..want(5) },
        {
            let mut o = kept_out.clone();
            o.pods[3].spec_hash = Some("h2".into());
            o
        },
        Step::Wait("learner main-3 cannot be placed: 0/6 nodes are available: 3 node(s) didn't match pod anti-affinity rules, 3 node(s) had taint {node-role.kubernetes.io/control-plane: }, that the pod didn't tolerate.".into()),
    ));
    cases.push((
        "... nor when the members' pods never required a node each (e.g. a request no node can give): no voter is restarted onto it",
        Desired { spec_hash: "h2".into(), ..want(5) },
        {
            let mut o = unplaced.clone();
            o.pods[3].spec_hash = Some("h2".into());
            o
        },
        Step::Wait("learner main-3 cannot be placed: 0/6 nodes are available: 3 node(s) didn't match pod anti-affinity rules, 3 node(s) had taint {node-role.kubernetes.io/control-plane: }, that the pod didn't tolerate.".into()),
    ));
    let mut placed_now = unplaced.clone();
    placed_now.pods[3].unplaced = None;
    placed_now.pods[3].node = Some("w4".into());
    members(&mut placed_now)[3].healthy = true;
    members(&mut placed_now)[3].unhealthy_for_secs = 0;
    cases.push((
        "a node took it and it caught up: promoted",
        want(5),
        placed_now,
        Step::Promote { id: 9, name: "main-3".into() },
    ));
    cases.push((
        "a voter failed while a learner waits for a node: the voter is replaced first",
        want(5),
        down(unplaced, 2, T + 5),
        Step::RemoveMember { id: 3, name: "main-2".into(), reason: "it has been down for 305s".into() },
    ));

    // One member per node (anti-affinity Required, or Stacked): no learner that no
    // node can take.
    let on_nodes = |mut o: Observation, nodes: &[&str]| {
        let spare = ["w1", "w2", "w3", "w4", "w5"];
        let stacked = nodes.first().is_some_and(|n| n.starts_with("cp"));
        for (p, n) in o.pods.iter_mut().zip(if stacked { nodes } else { &spare[..] }) {
            p.node = Some(n.to_string());
        }
        o.placeable_nodes = Some(names(nodes));
        o
    };
    cases.push((
        "size 5, one per node, 3 nodes, all taken: wait (no learner added)",
        want(5),
        on_nodes(healthy(3), &["w1", "w2", "w3"]),
        Step::Wait("3 of 5 members run, one per node, and no other node can take one".into()),
    ));
    cases.push((
        "... a fourth node: a learner is added",
        want(5),
        on_nodes(healthy(3), &["w1", "w2", "w3", "w4"]),
        Step::AddLearner { name: "main-3".into() },
    ));
    cases.push((
        "... a node a member left (cordoned, its member elsewhere) is no free node",
        want(5),
        on_nodes(healthy(3), &["w1", "w2"]),
        Step::Wait("3 of 5 members run, one per node, and no other node can take one".into()),
    ));
    cases.push((
        "Stacked, size 5 on 3 control-plane nodes: the same",
        want(5),
        on_nodes(healthy(3), &["cp1", "cp2", "cp3"]),
        Step::Wait("3 of 5 members run, one per node, and no other node can take one".into()),
    ));
    cases.push((
        "a healthy cluster of its size is not held back by the node count",
        want(3),
        on_nodes(healthy(3), &["w1", "w2"]),
        Step::Idle,
    ));
    cases.push((
        "no node at all: the first member is still created (its pod says why it waits)",
        want(3),
        Observation { placeable_nodes: Some(vec![]), ..Observation::default() },
        Step::Bootstrap { members: names(&["main-0"]), create: names(&["main-0"]) },
    ));

    let mut stuck_and_voter_pod_gone = without_pod(catching_up.clone(), "main-1");
    members(&mut stuck_and_voter_pod_gone)[1].healthy = false;
    cases.push((
        "a voter's pod vanished while a learner is stuck: the voter comes back first",
        want(5),
        stuck_and_voter_pod_gone,
        Step::RecreatePod { name: "main-1".into() },
    ));
    let stuck_and_voter_down = down(catching_up.clone(), 2, T + 5);
    cases.push((
        "a voter failed while a learner is stuck: the voter is replaced first",
        want(5),
        stuck_and_voter_down,
        Step::RemoveMember { id: 3, name: "main-2".into(), reason: "it has been down for 305s".into() },
    ));
    cases.push((
        "a learner was given up on recently: wait before adding another",
        want(5),
        Observation { since_learner_given_up: Some(20), ..healthy(3) },
        Step::Wait("a learner was given up on 20s ago; adding another in 40s".into()),
    ));
    cases.push((
        "the retry delay has passed: add a learner again",
        want(5),
        Observation { since_learner_given_up: Some(61), ..healthy(3) },
        Step::AddLearner { name: "main-3".into() },
    ));
    cases.push((
        "a learner blocks a scale-down until promoted: finish first",
        want(3),
        in_sync.clone(),
        Step::Promote { id: 9, name: "main-3".into() },
    ));
    let mut unhealthy_voter = healthy(3);
    members(&mut unhealthy_voter)[1].healthy = false;
    members(&mut unhealthy_voter)[1].unhealthy_for_secs = 10;
    cases.push((
        "no learner is added while a voter is unhealthy",
        want(5),
        unhealthy_voter,
        Step::Wait("waiting for every member to be healthy before adding one".into()),
    ));

    // Scale down: an unhealthy member first; else leader moved first, highest ordinal.
    cases.push((
        "scale down removes the highest ordinal",
        want(3),
        healthy(5),
        Step::RemoveMember { id: 5, name: "main-4".into(), reason: "scaling down".into() },
    ));
    cases.push((
        "5 -> 3 with one member briefly down: that member goes first, not a healthy one",
        want(3),
        down(healthy(5), 1, 20),
        Step::RemoveMember {
            id: 2,
            name: "main-1".into(),
            reason: "scaling down: the unhealthy member goes first".into(),
        },
    ));
    let mut after_sick_removed = healthy(5);
    members(&mut after_sick_removed).remove(1);
    after_sick_removed.pods.remove(1);
    after_sick_removed.volumes.remove("main-1");
    cases.push((
        "then the highest ordinal of the healthy rest",
        want(3),
        after_sick_removed,
        Step::RemoveMember { id: 5, name: "main-4".into(), reason: "scaling down".into() },
    ));
    let mut leader_last = healthy(5);
    for m in members(&mut leader_last) {
        m.leader = m.id == 5;
    }
    cases.push((
        "the member to remove leads: move leadership first",
        want(3),
        leader_last,
        Step::MoveLeader { to: 1, to_name: "main-0".into(), reason: "main-4 leads and is being removed".into() },
    ));
    let mut removed = healthy(5);
    members(&mut removed).pop();
    cases.push((
        "crash after member remove, before the pod delete: delete the pod",
        want(3),
        removed,
        Step::DeletePod { name: "main-4".into(), delete_volume: true },
    ));

    // Replacement needs etcd and the pod to agree, for long enough; quorum is never risked.
    cases.push((
        "two of three down: removing one would not help quorum",
        want(3),
        down(down(healthy(3), 1, 400), 2, 400),
        Step::Blocked(
            "removing main-1 (it has been down for 400s) would leave 1 healthy of 2 members, short of quorum".into(),
        ),
    ));
    cases.push((
        "one of three down for too long: replace it",
        want(3),
        down(healthy(3), 2, 400),
        Step::RemoveMember { id: 3, name: "main-2".into(), reason: "it has been down for 400s".into() },
    ));
    cases.push(("briefly down: no replacement yet", want(3), down(healthy(3), 2, 20), Step::Idle));
    let mut crashloop_but_answers = healthy(3);
    crashloop_but_answers.pods[2].failed = true;
    crashloop_but_answers.pods[2].ready = false;
    cases.push((
        "the pod says crash-looping but etcd answers for the member: not replaced",
        want(3),
        crashloop_but_answers,
        Step::Idle,
    ));
    let mut etcd_only = healthy(3);
    members(&mut etcd_only)[2].healthy = false;
    members(&mut etcd_only)[2].unhealthy_for_secs = 400;
    cases.push((
        "etcd says unhealthy but the pod is ready: not replaced (the views disagree)",
        want(3),
        etcd_only,
        Step::Idle,
    ));
    let mut just_recreated = down(healthy(3), 2, 400);
    just_recreated.pods[2].down_for_secs = 5;
    cases.push((
        "down long in etcd's view, but its pod was just recreated: it gets the whole deadline",
        want(3),
        just_recreated,
        Step::Idle,
    ));
    let mut leader_down = down(healthy(3), 0, 400);
    leader_down.pods[0].failed = true;
    cases.push((
        "the leader is down: leadership moves before it is replaced",
        want(3),
        leader_down,
        Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 is failing".into() },
    ));
    cases.push((
        "a single member is never removed",
        want(1),
        down(healthy(1), 0, 400),
        Step::Blocked(
            "removing main-0 (it has been down for 400s) would leave 0 healthy of 0 members, short of quorum".into(),
        ),
    ));

    // Rolling restarts: version or pod spec; followers first, the leader last.
    let upgrade = Desired { version: "3.5.1".into(), ..want(3) };
    cases.push((
        "upgrade starts with a follower",
        upgrade.clone(),
        healthy(3),
        Step::Restart { name: "main-1".into(), reason: "etcd 3.4.23 -> 3.5.1".into() },
    ));
    let mut followers_done = healthy(3);
    followers_done.pods[1].version = "3.5.1".into();
    followers_done.pods[2].version = "3.5.1".into();
    cases.push((
        "only the leader is old: move leadership to an upgraded member",
        upgrade.clone(),
        followers_done.clone(),
        Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 leads and is restarted last".into() },
    ));
    let mut moved = followers_done.clone();
    for m in members(&mut moved) {
        m.leader = m.id == 2;
    }
    cases.push((
        "leadership moved: restart the former leader",
        upgrade.clone(),
        moved,
        Step::Restart { name: "main-0".into(), reason: "etcd 3.4.23 -> 3.5.1".into() },
    ));
    let mut restarting = healthy(3);
    restarting.pods[1].version = "3.5.1".into();
    restarting.pods[1].ready = false;
    cases.push((
        "the restarted member is not ready yet: wait",
        upgrade.clone(),
        restarting,
        Step::Wait("waiting for every member to be healthy before restarting the next".into()),
    ));
    cases.push((
        "a single member is upgraded in place",
        Desired { version: "3.5.1".into(), ..want(1) },
        healthy(1),
        Step::Restart { name: "main-0".into(), reason: "etcd 3.4.23 -> 3.5.1".into() },
    ));
    let tuned = Desired { spec_hash: "h2".into(), ..want(3) };
    cases.push((
        "a spec change that reaches the pod (quota, resources, ...) restarts a follower first",
        tuned.clone(),
        healthy(3),
        Step::Restart { name: "main-1".into(), reason: "the spec of its pod changed".into() },
    ));
    let mut tuned_followers = healthy(3);
    tuned_followers.pods[1].spec_hash = Some("h2".into());
    tuned_followers.pods[2].spec_hash = Some("h2".into());
    cases.push((
        "spec change: the leader last, leadership moved first",
        tuned.clone(),
        tuned_followers,
        Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 leads and is restarted last".into() },
    ));
    let mut unhashed = healthy(3);
    for p in &mut unhashed.pods {
        p.spec_hash = None;
    }
    cases.push((
        "pods from before spec hashes were recorded are not restarted for that alone",
        tuned.clone(),
        unhashed,
        Step::Idle,
    ));
    let rotating = Desired { trust: Some("both".into()), ..want(3) };
    let why = "the CA rotation changed the CAs members trust";
    cases.push((
        "a CA rotation restarts members that do not trust its CAs, a follower first",
        rotating.clone(),
        healthy(3),
        Step::Restart { name: "main-1".into(), reason: why.into() },
    ));
    let mut trusting_followers = healthy(3);
    trusting_followers.pods[1].trust = Some("both".into());
    trusting_followers.pods[2].trust = Some("both".into());
    cases.push((
        "CA rotation: the leader last, leadership moved first",
        rotating.clone(),
        trusting_followers.clone(),
        Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 leads and is restarted last".into() },
    ));
    let mut trusting = trusting_followers.clone();
    trusting.pods[0].trust = Some("both".into());
    cases.push(("CA rotation: every member trusts its CAs", rotating.clone(), trusting, Step::Idle));
    let mut trust_restarting = trusting_followers;
    trust_restarting.pods[1].ready = false;
    cases.push((
        "CA rotation: the restarted member is not ready yet: wait",
        rotating,
        trust_restarting,
        Step::Wait("waiting for every member to be healthy before restarting the next".into()),
    ));
    let mut annotated = healthy(3);
    annotated.pods[0].trust = Some("anything".into());
    cases.push(("no rotation under way: trust annotations are not compared", want(3), annotated, Step::Idle));
    let memory_one = Desired { version: "3.5.1".into(), memory: true, ..want(1) };
    cases.push((
        "the only member of a Memory cluster is not restarted (its data would be lost)",
        memory_one.clone(),
        healthy(1),
        Step::Blocked("restarting the only member of a Memory cluster would lose all its data; set spec.storage.allowDataLoss: true to accept that, or grow the cluster first".into()),
    ));
    cases.push((
        "... unless the user accepts the loss",
        Desired { allow_data_loss: true, ..memory_one },
        healthy(1),
        Step::Restart { name: "main-0".into(), reason: "etcd 3.4.23 -> 3.5.1".into() },
    ));

    let mut failures = Vec::new();
    for (what, want, obs, expected) in cases {
        let got = plan(C, &want, &obs, true);
        if got != expected {
            failures.push(format!("{what}:\n   got {got:?}\n  want {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn members_that_cannot_be_placed_are_named() {
    let with_nodes = |o: Observation, nodes: &[&str]| Observation { placeable_nodes: Some(names(nodes)), ..o };
    let mut unplaced = healthy(3);
    unplaced.pods.push(PodState {
        ready: false,
        unplaced: Some("0/6 nodes are available: 6 Insufficient cpu.".into()),
        ..pod("main-3")
    });
    type Row<'a> = (&'a str, usize, Observation, Option<(&'a str, &'a str)>);
    let rows: Vec<Row> = vec![
        ("members may share nodes", 5, healthy(3), None),
        ("enough nodes", 5, with_nodes(healthy(3), &["a", "b", "c", "d", "e"]), None),
        (
            "size 5 on 3 nodes",
            5,
            with_nodes(healthy(3), &["w1", "w2", "w3"]),
            Some((
                "NotEnoughNodes",
                "main-3 and main-4 cannot be placed: size 5 needs a node per member (anti-affinity Required, or Stacked), and 3 nodes can take one (w1, w2, w3); the cluster runs with the members it can place and grows when nodes are added",
            )),
        ),
        (
            "a fresh cluster of 3 on one node",
            3,
            with_nodes(Observation::default(), &["cp1"]),
            Some((
                "NotEnoughNodes",
                "main-0 and main-1 cannot be placed: size 3 needs a node per member (anti-affinity Required, or Stacked), and 1 node can take one (cp1); the cluster runs with the members it can place and grows when nodes are added",
            )),
        ),
        (
            "a pod the scheduler left unplaced, in its words",
            5,
            unplaced,
            Some(("Unschedulable", "main-3 cannot be placed: 0/6 nodes are available: 6 Insufficient cpu.")),
        ),
    ];
    for (what, size, obs, want) in rows {
        let got = placement(C, size, &obs);
        assert_eq!(got.as_ref().map(|(r, m)| (*r, m.as_str())), want, "{what}");
    }
}

#[test]
fn disruptive_steps_are_the_ones_that_change_membership_or_take_a_member_down() {
    assert!(Step::ReplacePod { name: "m".into(), initial: None }.disruptive());
    assert!(Step::RemoveMember { id: 1, name: "m".into(), reason: String::new() }.disruptive());
    assert!(Step::Restart { name: "m".into(), reason: String::new() }.disruptive());
    assert!(Step::AddLearner { name: "m".into() }.disruptive());
    assert!(!Step::RecreatePod { name: "m".into() }.disruptive());
    assert!(!Step::Wait(String::new()).disruptive());
    assert!(!Step::Bootstrap { members: vec![], create: vec![] }.disruptive());
}

#[test]
fn quorum_is_lost_for_good_only_when_a_majority_is_gone_with_its_volumes() {
    let lost = |o: &Observation| quorum_lost_for_good(o);
    assert_eq!(lost(&healthy(3)), None);
    let one_gone = without_pod(healthy(3), "main-2");
    let mut o = one_gone.clone();
    o.volumes.remove("main-2");
    assert_eq!(lost(&o), None, "one of three gone: quorum stays");
    let mut two = without_pod(o.clone(), "main-1");
    assert_eq!(lost(&two), None, "main-1's volume remains: it may come back");
    two.volumes.remove("main-1");
    assert_eq!(lost(&two), Some(vec!["main-1".to_string(), "main-2".to_string()]));
    let pending = without_pod(without_pod(healthy(3), "main-1"), "main-2");
    assert_eq!(lost(&pending), None, "pods gone (or Pending) with volumes kept: never");
    let mut five = healthy(5);
    for m in ["main-3", "main-4"] {
        five = without_pod(five, m);
        five.volumes.remove(m);
    }
    assert_eq!(lost(&five), None, "two of five gone: three keep quorum");
}

#[test]
fn quorum_sizes() {
    assert_eq!([1, 2, 3, 4, 5, 7].map(quorum), [1, 2, 2, 3, 3, 4]);
}

#[test]
fn names_and_ordinals() {
    assert_eq!(member_name("my-etcd", 12), "my-etcd-12");
    assert_eq!(ordinal_of("my-etcd-12"), Some(12));
    assert_eq!(ordinal_of("weird"), None);
}

#[test]
fn maintenance_comes_last_and_never_while_paused_busy_or_unhealthy() {
    const MIB: i64 = 1024 * 1024;
    let mut w = want(3);
    w.maintenance = Some(maintenance::Policy {
        defrag_enabled: true,
        threshold_percent: 50,
        min_db_size: 64 * MIB,
        retain_revisions: 0,
        remediate_no_space: true,
        quota: 256 * MIB,
    });
    let mut o = healthy(3);
    o.maintenance = Some(maintenance::Observed {
        now: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        members: (0..3u64)
            .map(|i| maintenance::MemberDb {
                name: member_name(C, i as u32),
                id: i + 1,
                leader: i == 0,
                db_size: 200 * MIB,
                in_use: 20 * MIB,
                last_defrag: None,
                failures: 0,
                last_failure: None,
            })
            .collect(),
        no_space: false,
        corrupt: false,
        recovery: None,
        revision: 100,
        defrag_slot: None,
        compaction_due: false,
        streamed: None,
    });
    let defrag = Step::Defragment {
        id: 2,
        name: "main-1".into(),
        reason: "90% of its 200.0 MiB db file is free (threshold 50%)".into(),
    };
    assert_eq!(plan(C, &w, &o, false), defrag);
    let mut stale = o.clone();
    stale.pods[2].spec_hash = Some("old".into());
    assert!(matches!(plan(C, &w, &stale, false), Step::Restart { .. }), "a rolling restart first");
    let mut small = want(5);
    small.maintenance = w.maintenance.clone();
    assert!(matches!(plan(C, &small, &o, false), Step::AddLearner { .. }), "membership first");
    let mut paused = w.clone();
    paused.paused = true;
    assert_eq!(plan(C, &paused, &o, false), Step::Idle, "paused: no maintenance at all");
    let mut busy = o.clone();
    busy.slot_busy = Some("backup/nightly Snapshot".into());
    assert!(matches!(plan(C, &w, &busy, false), Step::Wait(_)), "another operation holds the slot");
    let mut unready = o.clone();
    unready.pods[1].ready = false;
    assert_eq!(plan(C, &w, &unready, false), Step::Idle, "not while a pod is not ready");
    assert!(defrag.disruptive(), "takes the operation slot, fenced");
    assert!(Step::Compact { revision: 1, all_history: true, reason: String::new() }.disruptive());
    assert!(Step::Disarm { reason: String::new() }.disruptive());
}

#[test]
fn ordinals_count_once_given() {
    let add = Step::AddLearner { name: "main-5".into() };
    assert_eq!(highest_ordinal(Some(4), &add, true), Some(5));
    assert_eq!(highest_ordinal(Some(4), &add, false), Some(4), "a refused add takes no ordinal");
    let boot = Step::Bootstrap { members: vec!["main-0".into(), "main-1".into(), "main-2".into()], create: vec![] };
    assert_eq!(highest_ordinal(None, &boot, true), Some(2));
    assert_eq!(highest_ordinal(Some(7), &Step::Idle, true), Some(7));
    assert_eq!(highest_ordinal(None, &Step::Wait("w".into()), false), None);
}
