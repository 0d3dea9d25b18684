//! The newest status this process wrote per run. The watch cache that hands runs to
//! `reconcile` can still hold an older copy than the one just written: reconciling from it
//! would repeat a step. What is kept of a run goes once the cache has caught up, or the run has
//! left the watch (done or deleted), also when it left while the watch was re-listing. What is
//! kept belongs to one object (its uid): a run re-created later under the same name is not
//! taken for the one written here. Each copy comes with the resourceVersion it was read or
//! written at: the next write is made on that version only (a precondition), so a write
//! decided on a copy someone else has changed since is refused, not laid over their change.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::crd::{JobRun, JobRunStatus, RunPhase};

#[derive(Debug, Default)]
pub(super) struct WrittenStatuses(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// By run name: the uid of the object written, and what was written.
    runs: HashMap<String, (String, Written)>,
    /// While the watch re-lists: the runs listed so far, and those written since it began
    /// (created after the list was taken, they come as changes once it is done). What is
    /// kept of the others goes when the list is done: a run that left the watch meanwhile
    /// has no deletion event.
    listing: Option<HashSet<String>>,
}

impl State {
    fn insert(&mut self, run: &str, uid: &str, written: Written) {
        if let Some(listing) = self.listing.as_mut() {
            listing.insert(run.to_string());
        }
        self.runs
            .insert(run.to_string(), (uid.to_string(), written));
    }

    /// What was written of this object (`uid`) of the run. What was written of another object
    /// of the same name is not removed here (the copy asked with may be the older object's): the
    /// next write of the run replaces it, and the run leaving the watch removes it.
    fn of(&self, run: &str, uid: &str) -> Option<&Written> {
        match self.runs.get(run)? {
            (of, written) if of == uid => Some(written),
            _ => None,
        }
    }
}

/// A run's status as of one of its resourceVersions.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatusAt {
    pub status: JobRunStatus,
    pub version: String,
}

#[derive(Debug, Clone)]
enum Written {
    InFlight(Box<StatusAt>),
    /// The run is over; only its last revision is kept.
    Done(u64),
}

impl WrittenStatuses {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        // A panic elsewhere while the lock was held poisons it; what is kept here is only an
        // optimisation over the cache, so it is then not consulted.
        self.0.lock().ok()
    }

    /// Follows the run watch: a run that left it (done, or deleted) is reconciled no more, so
    /// what this process wrote of it is not needed to tell a stale copy.
    pub(super) fn record(&self, event: &Result<watcher::Event<JobRun>, watcher::Error>) {
        let (Ok(event), Some(mut state)) = (event, self.lock()) else {
            return;
        };
        match event {
            watcher::Event::Delete(run) => {
                state.runs.remove(&run.name_any());
            }
            watcher::Event::Init => state.listing = Some(HashSet::new()),
            watcher::Event::InitApply(run) => {
                if let Some(listing) = state.listing.as_mut() {
                    listing.insert(run.name_any());
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.runs.retain(|run, _| listing.contains(run));
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }

    /// The status to continue from: the cached copy's, or this process's newer write. `None`
    /// when this process already finished the run and the cache is behind.
    pub(super) fn newest(&self, run: &str, uid: &str, cached: StatusAt) -> Option<StatusAt> {
        let Some(mut state) = self.lock() else {
            return Some(cached);
        };
        let cached_revision = cached.status.revision;
        match state.of(run, uid) {
            Some(Written::InFlight(written)) if written.status.revision > cached_revision => {
                Some((**written).clone())
            }
            Some(Written::Done(revision)) if *revision > cached_revision => None,
            // The cache caught up with what this process wrote: the copy is not needed.
            Some(Written::InFlight(_) | Written::Done(_)) => {
                state.runs.remove(run);
                Some(cached)
            }
            None => Some(cached),
        }
    }

    /// The run's phase as this process last wrote it, if that is newer than the cached
    /// revision. Of a finished run, which way it ended is not kept: only that it did.
    pub(super) fn phase_ahead_of(
        &self,
        run: &str,
        uid: &str,
        cached_revision: u64,
    ) -> Option<RunPhase> {
        match self.lock()?.of(run, uid)? {
            Written::InFlight(written) if written.status.revision > cached_revision => {
                Some(written.status.phase)
            }
            Written::Done(revision) if *revision > cached_revision => Some(RunPhase::Succeeded),
            _ => None,
        }
    }

    /// Keeps a status just written of a run in flight, with the version the write made.
    pub(super) fn remember(&self, run: &str, uid: &str, written: StatusAt) {
        if let Some(mut state) = self.lock() {
            state.insert(run, uid, Written::InFlight(Box::new(written)));
        }
    }

    /// Lets go of what was written of the run: another writer changed it since (a status
    /// write was refused), so the cache's copy, once it has the change, is the newest. Kept,
    /// it would be taken for newer than a copy whose revision another writer set lower.
    pub(super) fn let_go(&self, run: &str) {
        if let Some(mut state) = self.lock() {
            state.runs.remove(run);
        }
    }

    /// Keeps only the revision of a run just written done, while it is still `watched` (in
    /// the cache). Asked under the lock [`Self::record`] takes too, so a run that leaves the
    /// watch meanwhile is either still watched here or already gone: nothing of it stays.
    pub(super) fn forget(
        &self,
        run: &str,
        uid: &str,
        revision: u64,
        watched: impl FnOnce() -> bool,
    ) {
        if let Some(mut state) = self.lock() {
            if watched() {
                state.insert(run, uid, Written::Done(revision));
            } else {
                state.runs.remove(run);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map_or(0, |state| state.runs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status, at a version that follows its revision (as when only this process writes).
    fn status(revision: u64, phase: RunPhase) -> StatusAt {
        StatusAt {
            status: JobRunStatus {
                revision,
                phase,
                ..JobRunStatus::default()
            },
            version: format!("{}", 100 + revision),
        }
    }

    fn named(name: &str) -> JobRun {
        let mut run = crate::controller::decide::tests::triggered(1);
        run.metadata.name = Some(name.into());
        run
    }

    fn deleted(name: &str) -> Result<watcher::Event<JobRun>, watcher::Error> {
        Ok(watcher::Event::Delete(named(name)))
    }

    /// The watch re-lists, finding these runs; `meanwhile` runs between its start and end.
    fn relist(written: &WrittenStatuses, listed: &[&str], meanwhile: impl FnOnce()) {
        written.record(&Ok(watcher::Event::Init));
        for name in listed {
            written.record(&Ok(watcher::Event::InitApply(named(name))));
        }
        meanwhile();
        written.record(&Ok(watcher::Event::InitDone));
    }

    #[test]
    fn a_write_ahead_of_the_cache_is_continued_from_until_the_cache_catches_up() {
        let written = WrittenStatuses::default();
        assert_eq!(
            written.newest("a", "u1", status(1, RunPhase::Pending)),
            Some(status(1, RunPhase::Pending))
        );
        written.remember("a", "u1", status(3, RunPhase::Running));
        // The cache is behind: the write is newer.
        assert_eq!(
            written.newest("a", "u1", status(2, RunPhase::Pending)),
            Some(status(3, RunPhase::Running))
        );
        assert_eq!(
            written.phase_ahead_of("a", "u1", 2),
            Some(RunPhase::Running)
        );
        assert_eq!(written.phase_ahead_of("b", "u1", 0), None);
        // The cache caught up: its copy is used, and the write is let go. Its version is the
        // one the next write is made on: a later edit of the run (a label) moved it on.
        let edited = StatusAt {
            version: "200".into(),
            ..status(3, RunPhase::Running)
        };
        assert_eq!(written.newest("a", "u1", edited.clone()), Some(edited));
        assert_eq!(written.len(), 0);
        assert_eq!(written.phase_ahead_of("a", "u1", 2), None);
    }

    #[test]
    fn a_run_finished_here_is_not_continued_from_a_stale_copy() {
        let written = WrittenStatuses::default();
        written.remember("a", "u1", status(4, RunPhase::Running));
        written.forget("a", "u1", 5, || true);
        assert_eq!(
            written.newest("a", "u1", status(4, RunPhase::Running)),
            None
        );
        assert_eq!(
            written.phase_ahead_of("a", "u1", 4),
            Some(RunPhase::Succeeded)
        );
        // Leaving the watch lets it go.
        written.record(&deleted("a"));
        assert_eq!(written.len(), 0);
        assert_eq!(
            written.newest("a", "u1", status(4, RunPhase::Running)),
            Some(status(4, RunPhase::Running))
        );
    }

    #[test]
    fn nothing_is_kept_of_a_run_that_already_left_the_watch() {
        let written = WrittenStatuses::default();
        written.remember("a", "u1", status(4, RunPhase::Running));
        written.forget("a", "u1", 5, || false);
        assert_eq!(written.len(), 0);
        // A run deleted while in flight goes too; others stay.
        written.remember("b", "u1", status(2, RunPhase::Running));
        written.remember("c", "u1", status(2, RunPhase::Running));
        written.record(&deleted("b"));
        assert_eq!(written.len(), 1);
        assert_eq!(
            written.phase_ahead_of("c", "u1", 1),
            Some(RunPhase::Running)
        );
    }

    #[test]
    fn a_relist_lets_go_of_runs_that_left_the_watch_meanwhile() {
        let written = WrittenStatuses::default();
        written.remember("listed", "u1", status(3, RunPhase::Running));
        written.remember("deleted", "u1", status(3, RunPhase::Running));
        written.forget("done", "u1", 5, || true);
        relist(&written, &["listed"], || {
            // Created after the list was taken: it comes as a change once the list is done.
            written.remember("created", "u1", status(1, RunPhase::Running));
        });
        assert_eq!(written.len(), 2);
        assert_eq!(
            written.phase_ahead_of("listed", "u1", 2),
            Some(RunPhase::Running)
        );
        assert_eq!(
            written.phase_ahead_of("created", "u1", 0),
            Some(RunPhase::Running)
        );
        // A run re-created under a name written here before is not taken for that one.
        assert_eq!(
            written.newest("done", "u1", status(0, RunPhase::Pending)),
            Some(status(0, RunPhase::Pending))
        );
        assert_eq!(
            written.newest("deleted", "u1", status(0, RunPhase::Pending)),
            Some(status(0, RunPhase::Pending))
        );
        // Written during one re-list and listed by none: gone after the next.
        relist(&written, &["listed"], || {});
        assert_eq!(written.len(), 1);
        assert_eq!(written.phase_ahead_of("created", "u1", 0), None);
        // Events between re-lists are followed as before.
        written.record(&deleted("listed"));
        assert_eq!(written.len(), 0);
    }

    #[test]
    fn what_was_written_of_a_run_is_not_taken_for_a_run_re_created_under_its_name() {
        let written = WrittenStatuses::default();
        written.remember("a", "u1", status(3, RunPhase::Running));
        written.forget("a", "u1", 5, || true);
        assert_eq!(written.phase_ahead_of("a", "u2", 0), None);
        assert_eq!(
            written.newest("a", "u2", status(0, RunPhase::Pending)),
            Some(status(0, RunPhase::Pending))
        );
        // The first run's write still counts for a copy of it, until the new one writes.
        assert_eq!(
            written.newest("a", "u1", status(4, RunPhase::Running)),
            None
        );
        written.remember("a", "u2", status(1, RunPhase::Running));
        assert_eq!(written.phase_ahead_of("a", "u1", 0), None);
        assert_eq!(
            written.phase_ahead_of("a", "u2", 0),
            Some(RunPhase::Running)
        );
    }
}
