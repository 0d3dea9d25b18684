//! A model-based property test of a concurrency group's admission: runs arrive (their events
//! accepted in order), reach the watch's cache late and in any order, are reconciled at random
//! (a reconcile's status write may fail after the run was let start), end, and the operator
//! crashes (everything in memory lost; the watch lists again). Whatever happens, a run starts
//! only while fewer than `limit` runs run and no run that arrived before it waits where the cache
//! shows it; and once the watch has caught up, the runs woken by their group's changes (and by
//! their own status writes) all get their turn: nothing waits for ever. A run let start records
//! its start in a write of its own, so other reconciles happen between the decision and the
//! write, as they do in the operator (which reconciles several runs at once).

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::*;

/// What happens to the group.
#[derive(Debug, Clone)]
enum Op {
    /// The next event is accepted: a run is created, not yet in the cache.
    Arrive,
    /// The watch shows the `i`-th run whose cached copy is behind the API server.
    Deliver(usize),
    /// The `i`-th cached run is reconciled: it asks its group whether it may start.
    Reconcile(usize),
    /// The `i`-th run let start writes its start; the write fails when `fails`.
    Write { run: usize, fails: bool },
    /// The `i`-th running run ends.
    Finish(usize),
    /// The operator restarts.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Arrive),
        4 => (0usize..8).prop_map(Op::Deliver),
        5 => (0usize..8).prop_map(Op::Reconcile),
        4 => (0usize..8, prop::bool::weighted(0.2))
            .prop_map(|(run, fails)| Op::Write { run, fails }),
        2 => (0usize..8).prop_map(Op::Finish),
        1 => Just(Op::Crash),
    ]
}

/// A run: its phase in the API server (`None`: no status yet) and in the cache (`None`: not
/// there; `Some(None)`: there without a status).
#[derive(Debug, Clone)]
struct ModelRun {
    name: String,
    api: Option<RunPhase>,
    cache: Option<Option<RunPhase>>,
}

fn object(index: usize, name: &str, phase: Option<RunPhase>, limit: u32) -> JobRun {
    super::tests::grouped_run(name, arrival(index), phase, limit)
}

/// Run `index` arrived `index` seconds in.
fn arrival(index: usize) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + index as i64).unwrap()
}

fn waits(phase: Option<RunPhase>) -> bool {
    matches!(phase, None | Some(RunPhase::Pending | RunPhase::Queued))
}

struct Model {
    limit: u32,
    runs: Vec<ModelRun>,
    groups: Groups,
    woken: mpsc::UnboundedReceiver<ObjectRef<JobRun>>,
    /// Runs due for a reconcile: their own watch event, or woken by their group.
    due: BTreeSet<usize>,
    /// Runs let start whose start is not written yet.
    starting: BTreeSet<usize>,
}

impl Model {
    fn new(limit: u32) -> Model {
        let (groups, woken) = Groups::new("ns");
        Model {
            limit,
            runs: Vec::new(),
            groups,
            woken,
            due: BTreeSet::new(),
            starting: BTreeSet::new(),
        }
    }

    fn concurrency(&self) -> RunConcurrency {
        RunConcurrency {
            group: "g".into(),
            limit: self.limit,
            policy: ConcurrencyPolicy::Queue,
        }
    }

    fn collect_woken(&mut self) {
        while let Ok(object) = self.woken.try_recv() {
            if let Some(index) = self.runs.iter().position(|r| r.name == object.name) {
                self.due.insert(index);
            }
        }
    }

    fn arrive(&mut self) {
        let index = self.runs.len();
        self.runs.push(ModelRun {
            name: format!("run-{index:02}"),
            api: None,
            cache: None,
        });
    }

    /// The watch catches up with run `index`: a watch event, and a reconcile of the run.
    fn deliver(&mut self, index: usize) {
        let run = &mut self.runs[index];
        run.cache = Some(run.api);
        let object = object(index, &run.name, run.api, self.limit);
        self.groups.record(&Ok(watcher::Event::Apply(object)));
        self.due.insert(index);
        self.collect_woken();
    }

    fn behind(&self) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&i| self.runs[i].cache != Some(self.runs[i].api))
            .collect()
    }

    /// The executor's part: the run, as initialised, asks its group; let start, its start is
    /// to be written; waiting, it records `Queued`.
    fn reconcile(&mut self, index: usize) {
        self.due.remove(&index);
        let run = &self.runs[index];
        // A reconcile of a run is never concurrent with another of the same run.
        if run.cache.is_none()
            || run.api.is_some_and(RunPhase::is_finished)
            || self.starting.contains(&index)
        {
            return;
        }
        let phase = match run.api {
            None | Some(RunPhase::Pending) => RunPhase::Queued,
            Some(phase) => phase,
        };
        let me = Member {
            name: run.name.clone(),
            arrived: Some(arrival(index)),
            phase,
        };
        let runs = &self.runs;
        // This process's own writes are ahead of the cache: the newest phase is the API's.
        let member = |name: &str| {
            let position = runs.iter().position(|r| r.name == name)?;
            let other = &runs[position];
            other.cache?;
            Some(Member {
                name: name.to_string(),
                arrived: Some(arrival(position)),
                phase: other.api.unwrap_or_default(),
            })
        };
        let group = self.groups.admit(&self.concurrency(), &me, member);
        self.collect_woken();
        if phase == RunPhase::Queued && group.admits(&self.concurrency()) {
            let runs = &self.runs;
            let running = runs
                .iter()
                .filter(|r| r.api == Some(RunPhase::Running))
                .count();
            let earlier_waiting: Vec<&str> = runs[..index]
                .iter()
                .filter(|r| r.cache.is_some() && waits(r.api))
                .map(|r| r.name.as_str())
                .collect();
            assert!(
                running + earlier_waiting.len() < self.limit as usize,
                "{} starts with {running} running and {earlier_waiting:?} waiting ahead of it \
                 (limit {}): {:?}",
                me.name,
                self.limit,
                self.runs
            );
            self.starting.insert(index);
        } else if self.runs[index].api.is_none() {
            self.runs[index].api = Some(RunPhase::Queued);
        }
    }

    /// The start of a run let start is written, or the write fails (the error policy looks at
    /// the run again later).
    fn write(&mut self, index: usize, fails: bool) {
        self.starting.remove(&index);
        if fails {
            self.due.insert(index);
        } else {
            self.runs[index].api = Some(RunPhase::Running);
        }
    }

    fn finish(&mut self, index: usize) {
        self.runs[index].api = Some(RunPhase::Succeeded);
    }

    /// A new process: nothing in memory; the watch lists every run as the API server has it,
    /// and every run is reconciled.
    fn crash(&mut self) {
        let (groups, woken) = Groups::new("ns");
        self.groups = groups;
        self.woken = woken;
        self.groups.record(&Ok(watcher::Event::Init));
        for (index, run) in self.runs.iter_mut().enumerate() {
            run.cache = Some(run.api);
            let object = object(index, &run.name, run.api, self.limit);
            self.groups.record(&Ok(watcher::Event::InitApply(object)));
        }
        self.groups.record(&Ok(watcher::Event::InitDone));
        self.due = (0..self.runs.len()).collect();
        self.starting.clear();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Arrive => self.arrive(),
            Op::Deliver(k) => {
                let behind = self.behind();
                if !behind.is_empty() {
                    self.deliver(behind[k % behind.len()]);
                }
            }
            Op::Reconcile(run) => {
                let cached: Vec<usize> = (0..self.runs.len())
                    .filter(|&i| self.runs[i].cache.is_some())
                    .collect();
                if !cached.is_empty() {
                    self.reconcile(cached[run % cached.len()]);
                }
            }
            Op::Write { run, fails } => {
                let starting: Vec<usize> = self.starting.iter().copied().collect();
                if !starting.is_empty() {
                    self.write(starting[run % starting.len()], fails);
                }
            }
            Op::Finish(k) => {
                let running: Vec<usize> = (0..self.runs.len())
                    .filter(|&i| self.runs[i].api == Some(RunPhase::Running))
                    .collect();
                if !running.is_empty() {
                    self.finish(running[k % running.len()]);
                }
            }
            Op::Crash => self.crash(),
        }
        let running = self
            .runs
            .iter()
            .filter(|r| r.api == Some(RunPhase::Running))
            .count();
        assert!(running <= self.limit as usize, "{:?}", self.runs);
    }

    /// No more trouble: the watch catches up, due runs are reconciled, running runs end. Every
    /// run must get its turn without any other reconcile than those its events cause.
    fn settle(&mut self) {
        for _ in 0..(4 * self.runs.len() + 4) {
            for index in self.behind() {
                self.deliver(index);
            }
            while let Some(index) = self.due.pop_first() {
                self.reconcile(index);
            }
            while let Some(index) = self.starting.pop_first() {
                self.write(index, false);
            }
            let running: Vec<usize> = (0..self.runs.len())
                .filter(|&i| self.runs[i].api == Some(RunPhase::Running))
                .collect();
            for index in running {
                self.finish(index);
            }
            if self.behind().is_empty()
                && self.due.is_empty()
                && self.starting.is_empty()
                && self.runs.iter().all(|r| r.api == Some(RunPhase::Succeeded))
            {
                return;
            }
        }
        panic!("runs wait for ever: {:?}", self.runs);
    }
}

fn config() -> Config {
    Config {
        cases: 500,
        rng_seed: RngSeed::Fixed(0x6772_6f75_7073),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_group_never_runs_more_than_its_limit_nor_out_of_turn_and_never_stalls(
        limit in 1u32..=3,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        let mut model = Model::new(limit);
        for op in &ops {
            model.apply(op);
        }
        model.settle();
    }
}

/// The case the random search reaches rarely: `b` is let start, its write fails, and `a`, which
/// arrived earlier, shows up and waits behind `b`'s place. `b`, looked at again, gives the place
/// up and must wake `a`, which nothing else would.
#[test]
fn a_run_whose_start_was_not_written_gives_way_and_wakes_the_earlier_run() {
    let mut model = Model::new(1);
    for op in [
        Op::Arrive,
        Op::Arrive,
        Op::Deliver(1),
        Op::Reconcile(0),
        Op::Write {
            run: 0,
            fails: true,
        },
        Op::Deliver(0),
        Op::Reconcile(0),
        Op::Deliver(0),
        Op::Reconcile(0),
    ] {
        model.apply(&op);
    }
    assert_eq!(model.runs[0].api, Some(RunPhase::Queued));
    assert_eq!(model.runs[0].cache, Some(Some(RunPhase::Queued)));
    model.due.remove(&0);
    model.reconcile(1);
    assert!(model.due.contains(&0), "a is woken: {:?}", model.due);
    model.settle();
}
