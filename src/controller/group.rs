//! Concurrency groups: which runs share a group, which of them hold a place, and which wait
//! ahead of a run. The order of a queue is the order the events arrived (`spec.arrivedAt`, the
//! run's name breaking ties), kept in the API server, so it survives restarts.
//!
//! [`view`] is pure. [`Groups`] is fed by the JobRun watch: it knows each group's unfinished
//! runs, wakes the runs of a group when one of them ends or a new one arrives, and remembers the
//! runs this process let start until the watch shows them running, so two runs reconciled at
//! the same time cannot both take the last place.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::config::ConcurrencyPolicy;
use crate::crd::{JobRun, RunConcurrency, RunPhase};

/// A run of a group, as far as its place in it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub arrived: Option<Timestamp>,
    pub phase: RunPhase,
}

impl Member {
    pub fn of(run: &JobRun, phase: RunPhase) -> Member {
        Member {
            name: run.metadata.name.clone().unwrap_or_default(),
            arrived: run.spec.arrived_at.as_deref().and_then(|t| t.parse().ok()),
            phase,
        }
    }

    /// Whether this run arrived before `other`.
    fn before(&self, other: &Member) -> bool {
        (self.arrived, &self.name) < (other.arrived, &other.name)
    }
}

/// What a run sees of its concurrency group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// The other runs of the group that run (started and not finished).
    pub running: Vec<String>,
    /// How many other runs wait and arrived before this one.
    pub ahead: usize,
    /// The other unfinished runs that arrived after this one, oldest first.
    pub newer: Vec<String>,
}

impl Group {
    /// Whether a place is free for this run: the runs that run and those ahead of it leave one.
    pub fn has_room(&self, limit: u32) -> bool {
        self.running.len() + self.ahead < limit as usize
    }

    /// Whether the group's newer runs displace this one (`cancel-in-progress`).
    pub fn superseded(&self, concurrency: &RunConcurrency) -> bool {
        concurrency.policy == ConcurrencyPolicy::CancelInProgress
            && self.newer.len() >= concurrency.limit as usize
    }

    /// Whether this run, waiting, may start now.
    pub fn admits(&self, concurrency: &RunConcurrency) -> bool {
        self.has_room(concurrency.limit) && !self.superseded(concurrency)
    }
}

/// How `me` stands among the other runs of its group. Finished runs do not count; runs in
/// `admitted` (let start, the watch not showing it yet) count as running.
pub fn view(me: &Member, others: &[Member], admitted: &BTreeSet<String>) -> Group {
    let mut group = Group::default();
    let mut newer: Vec<&Member> = Vec::new();
    for other in others {
        if other.name == me.name || other.phase.is_finished() {
            continue;
        }
        let running = other.phase == RunPhase::Running || admitted.contains(&other.name);
        if running {
            group.running.push(other.name.clone());
        }
        if me.before(other) {
            newer.push(other);
        } else if !running {
            group.ahead += 1;
        }
    }
    group.running.sort();
    newer.sort_by(|a, b| (a.arrived, &a.name).cmp(&(b.arrived, &b.name)));
    group.newer = newer.into_iter().map(|m| m.name.clone()).collect();
    group
}

#[derive(Default)]
struct State {
    /// The unfinished runs of each group, by name.
    members: HashMap<String, BTreeSet<String>>,
    /// The runs of each group this process let start that the watch does not show running.
    admitted: HashMap<String, BTreeSet<String>>,
    /// The members a re-list under way found so far, swapped in when it is done: until then
    /// the groups keep their members, so no run is let start for want of the others.
    listing: Option<HashMap<String, BTreeSet<String>>>,
}

/// The groups' members, fed by the JobRun watch, and the runs let start.
pub struct Groups {
    namespace: String,
    state: Mutex<State>,
    wake: mpsc::UnboundedSender<ObjectRef<JobRun>>,
}

impl Groups {
    /// The groups of runs in `namespace`, and the stream of runs to look at again.
    pub fn new(namespace: &str) -> (Groups, mpsc::UnboundedReceiver<ObjectRef<JobRun>>) {
        let (wake, woken) = mpsc::unbounded_channel();
        let groups = Groups {
            namespace: namespace.to_string(),
            state: Mutex::new(State::default()),
            wake,
        };
        (groups, woken)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing is left half-changed under this lock: a panic elsewhere does not void it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the JobRun watch. A run that arrives wakes the older runs of its group (they may
    /// have to give way); a run that ends or is deleted wakes the others (a place is free).
    pub fn record(&self, event: &Result<watcher::Event<JobRun>, watcher::Error>) {
        let (run, fresh) = match event {
            Ok(watcher::Event::Init) => {
                // The watch lists again: members are rebuilt from what it lists, and used once
                // the list is whole (a list takes a request per page, and reconciles go on).
                self.state().listing = Some(HashMap::new());
                return;
            }
            Ok(watcher::Event::InitApply(run)) => (run, false),
            Ok(watcher::Event::Apply(run)) => (run, true),
            Ok(watcher::Event::Delete(run)) => {
                self.leave(run);
                return;
            }
            Ok(watcher::Event::InitDone) => {
                let mut state = self.state();
                if let Some(listing) = state.listing.take() {
                    state.members = listing;
                }
                return;
            }
            Err(_) => return,
        };
        let (Some(concurrency), Some(name)) = (&run.spec.action.concurrency, &run.metadata.name)
        else {
            return;
        };
        // A run being deleted takes no step more, so it would never leave on its own while a
        // finalizer keeps it: it leaves its group now.
        let finished =
            run.status.as_ref().is_some_and(|s| s.phase.is_finished()) || run.is_being_deleted();
        if finished {
            self.leave(run);
            return;
        }
        let others = {
            let mut state = self.state();
            if !fresh && let Some(listing) = state.listing.as_mut() {
                listing
                    .entry(concurrency.group.clone())
                    .or_default()
                    .insert(name.clone());
                return;
            }
            let members = state.members.entry(concurrency.group.clone()).or_default();
            let new = members.insert(name.clone());
            if fresh && new && run.status.is_none() {
                members.iter().filter(|m| *m != name).cloned().collect()
            } else {
                Vec::new()
            }
        };
        self.wake_all(others);
    }

    /// A run ended or was deleted: it leaves its group, and the others are woken.
    fn leave(&self, run: &JobRun) {
        let (Some(concurrency), Some(name)) = (&run.spec.action.concurrency, &run.metadata.name)
        else {
            return;
        };
        let others: Vec<String> = {
            let mut state = self.state();
            if let Some(admitted) = state.admitted.get_mut(&concurrency.group) {
                admitted.remove(name);
                if admitted.is_empty() {
                    state.admitted.remove(&concurrency.group);
                }
            }
            let Some(members) = state.members.get_mut(&concurrency.group) else {
                return;
            };
            if !members.remove(name) {
                return;
            }
            let others = members.iter().cloned().collect();
            if members.is_empty() {
                state.members.remove(&concurrency.group);
            }
            others
        };
        self.wake_all(others);
    }

    fn wake_all(&self, names: Vec<String>) {
        for name in names {
            // The receiver lives as long as the controller; after it, nothing needs waking.
            let _ = self
                .wake
                .send(ObjectRef::new(&name).within(&self.namespace));
        }
    }

    /// How `me` stands in its group: the other members as `member` reads them (`None` for runs
    /// the cache no longer has). When `me` waits and may start, it is let start at once, under
    /// the same lock, so a run reconciled at the same time counts it.
    pub fn admit(
        &self,
        concurrency: &RunConcurrency,
        me: &Member,
        member: impl Fn(&str) -> Option<Member>,
    ) -> Group {
        let mut state = self.state();
        let names = state
            .members
            .get(&concurrency.group)
            .cloned()
            .unwrap_or_default();
        let others: Vec<Member> = names
            .iter()
            .filter(|name| **name != me.name)
            .filter_map(|name| member(name))
            .collect();
        let admitted = state.admitted.entry(concurrency.group.clone()).or_default();
        // Once the watch shows a run running (or ended, or gone), it is no longer only known here.
        admitted.retain(|name| {
            *name == me.name
                || others.iter().any(|m| {
                    m.name == *name && matches!(m.phase, RunPhase::Pending | RunPhase::Queued)
                })
        });
        let group = view(me, &others, admitted);
        let waits = matches!(me.phase, RunPhase::Pending | RunPhase::Queued);
        let mut wake = Vec::new();
        if waits && group.admits(concurrency) {
            admitted.insert(me.name.clone());
        } else if waits && admitted.remove(&me.name) {
            // Let start before, but its start was never recorded (the write failed), and now
            // others come first: they are woken to take the place.
            wake = others.iter().map(|m| m.name.clone()).collect();
        }
        drop(state);
        self.wake_all(wake);
        group
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, second: i64, phase: RunPhase) -> Member {
        Member {
            name: name.into(),
            arrived: Some(Timestamp::from_second(second).unwrap()),
            phase,
        }
    }

    fn concurrency(limit: u32, policy: ConcurrencyPolicy) -> RunConcurrency {
        RunConcurrency {
            group: "g".into(),
            limit,
            policy,
        }
    }

    #[test]
    fn a_run_sees_who_runs_who_is_ahead_and_who_came_after() {
        let me = member("m", 10, RunPhase::Queued);
        let others = [
            member("done", 1, RunPhase::Succeeded),
            member("early-running", 2, RunPhase::Running),
            member("early-queued", 3, RunPhase::Queued),
            member("early-new", 4, RunPhase::Pending),
            // The same second: the name breaks the tie.
            member("a", 10, RunPhase::Queued),
            member("z", 10, RunPhase::Queued),
            member("late-running", 20, RunPhase::Running),
            member("late-queued", 12, RunPhase::Queued),
            member("late-cancelled", 13, RunPhase::Cancelled),
            member("m", 10, RunPhase::Running),
        ];
        let group = view(&me, &others, &BTreeSet::new());
        assert_eq!(group.running, ["early-running", "late-running"]);
        assert_eq!(group.ahead, 3, "early-queued, early-new, a");
        assert_eq!(group.newer, ["z", "late-queued", "late-running"]);
        assert!(!group.has_room(5));
        assert!(group.has_room(6));
    }

    #[test]
    fn a_run_let_start_counts_as_running_before_the_watch_shows_it() {
        let me = member("b", 2, RunPhase::Queued);
        // `a` arrived later but was let start first (it reached the cache first).
        let others = [member("a", 3, RunPhase::Queued)];
        let alone = view(&me, &others, &BTreeSet::new());
        assert!(alone.has_room(1));
        let admitted = BTreeSet::from(["a".to_string()]);
        let group = view(&me, &others, &admitted);
        assert_eq!(group.running, ["a"]);
        assert!(!group.has_room(1));
    }

    #[test]
    fn the_newest_runs_displace_the_older_ones_only_when_cancelling_in_progress() {
        let group = Group {
            running: vec![],
            ahead: 0,
            newer: vec!["n1".into()],
        };
        assert!(group.superseded(&concurrency(1, ConcurrencyPolicy::CancelInProgress)));
        assert!(!group.superseded(&concurrency(2, ConcurrencyPolicy::CancelInProgress)));
        assert!(!group.superseded(&concurrency(1, ConcurrencyPolicy::Queue)));
        assert!(!group.admits(&concurrency(1, ConcurrencyPolicy::CancelInProgress)));
        assert!(group.admits(&concurrency(1, ConcurrencyPolicy::Skip)));
    }

    /// A run of the group "g" of `limit` (queue), arrived at `arrived`, with `phase` recorded.
    pub(crate) fn grouped_run(
        name: &str,
        arrived: Timestamp,
        phase: Option<RunPhase>,
        limit: u32,
    ) -> JobRun {
        let mut run: JobRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobRun",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "event": {"specversion": "1.0", "id": name, "source": "s", "type": "t"},
                "action": {"index": 0, "name": "a", "tasks": [],
                           "concurrency": {"group": "g", "limit": limit, "policy": "queue"}},
                "arrivedAt": arrived.to_string(),
            }
        }))
        .unwrap();
        run.status = phase.map(|phase| crate::crd::JobRunStatus {
            phase,
            ..Default::default()
        });
        run
    }

    fn run(name: &str, second: i64, phase: Option<RunPhase>) -> JobRun {
        grouped_run(name, Timestamp::from_second(second).unwrap(), phase, 1)
    }

    /// The watch shows run `name` (arrived at `second`) in `phase`.
    fn apply(groups: &Groups, name: &str, second: i64, phase: Option<RunPhase>) {
        groups.record(&Ok(watcher::Event::Apply(run(name, second, phase))));
    }

    fn woken(rx: &mut mpsc::UnboundedReceiver<ObjectRef<JobRun>>) -> Vec<String> {
        let mut names = Vec::new();
        while let Ok(object) = rx.try_recv() {
            names.push(object.name);
        }
        names.sort();
        names
    }

    #[test]
    fn arrivals_wake_the_older_runs_and_ends_wake_the_rest() {
        let (groups, mut rx) = Groups::new("ns");
        groups.record(&Ok(watcher::Event::InitApply(run(
            "a",
            1,
            Some(RunPhase::Running),
        ))));
        assert!(woken(&mut rx).is_empty(), "a relist wakes no one");
        apply(&groups, "b", 2, None);
        assert_eq!(woken(&mut rx), ["a"]);
        apply(&groups, "b", 2, Some(RunPhase::Queued));
        assert!(woken(&mut rx).is_empty(), "a status write wakes no one");
        apply(&groups, "c", 3, None);
        assert_eq!(woken(&mut rx), ["a", "b"]);
        apply(&groups, "a", 1, Some(RunPhase::Succeeded));
        assert_eq!(woken(&mut rx), ["b", "c"]);
        groups.record(&Ok(watcher::Event::Delete(run("c", 3, None))));
        assert_eq!(woken(&mut rx), ["b"]);
        groups.record(&Ok(watcher::Event::Delete(run("b", 2, None))));
        assert!(woken(&mut rx).is_empty());
        assert!(groups.state().members.is_empty());
    }

    /// A run being deleted, held by someone's finalizer, takes no step more: it leaves its
    /// group at once (the others are woken), not once it is gone.
    #[test]
    fn a_run_being_deleted_leaves_its_group() {
        let (groups, mut rx) = Groups::new("ns");
        apply(&groups, "a", 1, Some(RunPhase::Running));
        apply(&groups, "b", 2, Some(RunPhase::Queued));
        woken(&mut rx);
        let mut deleting = run("a", 1, Some(RunPhase::Running));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(5).unwrap(),
            ));
        groups.record(&Ok(watcher::Event::Apply(deleting)));
        assert_eq!(woken(&mut rx), ["b"]);
        assert_eq!(
            groups.state().members["g"].iter().collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[test]
    fn of_two_runs_admitted_at_once_only_one_takes_the_last_place() {
        let (groups, _rx) = Groups::new("ns");
        for (name, second) in [("a", 1), ("b", 2)] {
            groups.record(&Ok(watcher::Event::Apply(run(name, second, None))));
        }
        let queue = concurrency(1, ConcurrencyPolicy::Queue);
        let queued = |name: &str| {
            let second = if name == "a" { 1 } else { 2 };
            Some(member(name, second, RunPhase::Queued))
        };
        // `b` is looked at while the cache does not have `a` yet: it starts.
        let b = groups.admit(&queue, &member("b", 2, RunPhase::Queued), |_| None);
        assert!(b.admits(&queue));
        // `a` arrived earlier, but `b` holds the place now.
        let a = groups.admit(&queue, &member("a", 1, RunPhase::Queued), queued);
        assert_eq!(a.running, ["b"]);
        assert!(!a.admits(&queue));
        // Once the watch shows `b` running, it counts from there; ended, it frees the place.
        let running = |name: &str| (name == "b").then(|| member("b", 2, RunPhase::Running));
        let a = groups.admit(&queue, &member("a", 1, RunPhase::Queued), running);
        assert_eq!(a.running, ["b"]);
        assert!(groups.state().admitted["g"].is_empty());
        apply(&groups, "b", 2, Some(RunPhase::Succeeded));
        let a = groups.admit(&queue, &member("a", 1, RunPhase::Queued), |_| None);
        assert!(a.admits(&queue));
    }

    /// While the watch lists again (its history expired), a run woken in between still sees
    /// the others: the groups keep their members until the list is whole.
    #[test]
    fn a_re_list_under_way_lets_no_run_start_past_the_limit() {
        let (groups, _rx) = Groups::new("ns");
        apply(&groups, "a", 1, Some(RunPhase::Running));
        apply(&groups, "b", 2, Some(RunPhase::Queued));
        let queue = concurrency(1, ConcurrencyPolicy::Queue);
        let cached = |name: &str| match name {
            "a" => Some(member("a", 1, RunPhase::Running)),
            "b" => Some(member("b", 2, RunPhase::Queued)),
            _ => None,
        };
        let b = || groups.admit(&queue, &member("b", 2, RunPhase::Queued), cached);
        groups.record(&Ok(watcher::Event::Init));
        assert!(!b().admits(&queue), "before the list's first page");
        groups.record(&Ok(watcher::Event::InitApply(run(
            "b",
            2,
            Some(RunPhase::Queued),
        ))));
        assert!(!b().admits(&queue), "between its pages");
        groups.record(&Ok(watcher::Event::InitApply(run(
            "a",
            1,
            Some(RunPhase::Running),
        ))));
        groups.record(&Ok(watcher::Event::InitDone));
        assert!(!b().admits(&queue), "once it is whole");
        apply(&groups, "a", 1, Some(RunPhase::Succeeded));
        assert!(b().admits(&queue));
    }
}
