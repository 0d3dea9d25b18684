//! JobSchedules end to end through the binary: the operator fires a schedule's events through
//! matching into runs, on kube-sim and on the real control plane. The operator's clock for
//! schedules runs fast (`--test-clock START*SCALE`, hidden, for tests), so an hour of slots takes
//! seconds; everything else (the API server, the Lease, the Jobs) runs in real time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use support::cluster::ClusterHarness;
use support::{Harness, Operator, Replicas};

const GROUP: &str = "job-executor.dev";

/// carts' config: one action on the schedules' event type, one quick task.
fn config(name: &str) -> PathBuf {
    let dir = support::fresh_dir(&format!("schedule-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        r#"apiVersion: v2
actions:
  - name: nightly
    events: [{name: sh.keptn.event.nightly.triggered}]
    tasks:
      - {name: load, image: alpine}
"#,
    )
    .unwrap();
    dir
}

/// A JobSchedule of carts' nightly event, its source `test/NAME`; `extra`: more spec lines.
fn schedule_yaml(name: &str, cron: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: job-executor.dev/v1alpha1
kind: JobSchedule
metadata:
  name: {name}
spec:
  schedule: "{cron}"
  event:
    type: sh.keptn.event.nightly.triggered
    source: test/{name}
    data: {{project: sockshop, stage: dev, service: carts}}
{extra}
"#
    )
}

/// Applies the JobSchedules `yaml` (one document or several), as an administrator would.
fn apply(server: &impl Replicas, yaml: &str) {
    server.admin_shell(
        &format!("kubectl apply -n \"$NAMESPACE\" -f - <<'EOF'\n{yaml}EOF"),
        &[],
    );
}

/// Applies [`schedule_yaml`].
fn apply_schedule(server: &impl Replicas, name: &str, cron: &str, extra: &str) {
    apply(server, &schedule_yaml(name, cron, extra));
}

fn schedule(server: &impl Replicas, name: &str) -> Value {
    server
        .objects(GROUP, "jobschedules")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no JobSchedule {name}"))
}

fn time(value: &Value) -> Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

/// The slots the runs of schedule `name` fired for (their events' `time`), as made: repeated
/// slots stay repeated.
fn fired(server: &impl Replicas, name: &str) -> Vec<Timestamp> {
    let mut slots: Vec<Timestamp> = server
        .jobruns()
        .iter()
        .filter(|run| run["spec"]["event"]["source"] == format!("test/{name}"))
        .map(|run| time(&run["spec"]["event"]["time"]))
        .collect();
    slots.sort();
    slots
}

/// The multiples of `every` in `(after, until]`.
fn boundaries(after: Timestamp, until: Timestamp, every: Duration) -> Vec<Timestamp> {
    let every = every.as_secs() as i64;
    let mut slot = (after.as_second() / every + 1) * every;
    let mut slots = Vec::new();
    while slot <= until.as_second() {
        slots.push(Timestamp::from_second(slot).unwrap());
        slot += every;
    }
    slots
}

fn ready(schedule: &Value) -> (String, String, String) {
    let condition = schedule["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let text = |key: &str| condition[key].as_str().unwrap_or_default().to_string();
    (text("status"), text("reason"), text("message"))
}

fn rfc3339(at: Timestamp) -> String {
    at.to_string()
}

/// An hour of `*/5` slots at 120 times real speed, with the leader SIGKILLed half-way: every
/// slot fires exactly once (the standby fires what passed during the takeover, within the
/// look-back window), each run succeeds, and nothing is missed.
async fn every_slot_of_an_hour_fires_once(server: impl Replicas, long: Duration) {
    apply_schedule(
        &server,
        "hourly",
        "*/5 * * * *",
        "  missedSlots: {policy: all, lookbackSeconds: 3600}",
    );
    let created = time(&schedule(&server, "hourly")["metadata"]["creationTimestamp"]);
    // The schedules' clock: what it shows `real` after `began`, 120 times as fast.
    let (start, began) = (Timestamp::now(), Instant::now());
    let on_clock = |real: Duration| start + SignedDuration::try_from(real * 120).unwrap();
    let mut replicas = Vec::new();
    for identity in ["hourly-a", "hourly-b"] {
        let mut replica = server.replica(identity, server.kubeconfig.clone()).await;
        for pair in support::SHORT_LEASE.chunks(2) {
            replica.set_flag(pair[0], pair[1]);
        }
        // Each replica's clock starts where the others' are.
        let clock = format!("{}*120", rfc3339(on_clock(began.elapsed())));
        replica.set_flag("--test-clock", &clock);
        replica.start_operator().await;
        replicas.push(replica);
    }
    // Half an hour of slots, then the leader dies.
    tokio::time::sleep_until((began + Duration::from_secs(15)).into()).await;
    let leader = leader_of(&replicas).await;
    replicas[leader].kill_operator();
    let end = start + SignedDuration::from_mins(61);
    let expected = boundaries(created, end, Duration::from_secs(300));
    assert!(expected.len() >= 12, "{expected:?}");
    support::wait_patiently("every slot of the hour fired", long, || {
        fired(&server, "hourly").len() >= expected.len()
    })
    .await;
    // Once the clock is past the hour, nothing but the hour's slots may have fired.
    tokio::time::sleep_until((began + Duration::from_millis(61 * 60 * 1000 / 120 + 500)).into())
        .await;
    let slots: Vec<Timestamp> = fired(&server, "hourly")
        .into_iter()
        .filter(|slot| *slot <= end)
        .collect();
    assert_eq!(
        slots,
        expected,
        "on {}: each slot once, none missing",
        server.name()
    );
    let status = schedule(&server, "hourly")["status"].clone();
    assert_eq!(status["missed"], 0, "{status:#}");
    assert_eq!(ready(&schedule(&server, "hourly")).0, "True", "{status:#}");
    // Each run of the hour ran its one Job once, and succeeded. The runs of slots past the
    // hour are left out: one fires every 2.5 s, so on a busy machine some run is always under
    // way.
    support::wait_patiently("the hour's runs finished", long, || {
        server
            .jobruns()
            .iter()
            .filter(|run| time(&run["spec"]["event"]["time"]) <= end)
            .all(|run| run["status"]["phase"] == "Succeeded")
    })
    .await;
    // The clock goes on: a slot past the hour fires every 2.5 s, and its run and Job may be
    // made between two reads. The Jobs are read first, so each has its run in the later list.
    let jobs = server.jobs_created();
    let runs = server.jobruns();
    assert_eq!(
        jobs.iter().collect::<BTreeSet<_>>().len(),
        jobs.len(),
        "no Job made twice: {jobs:?}"
    );
    let run_names: BTreeSet<&str> = runs
        .iter()
        .filter_map(|run| run["metadata"]["name"].as_str())
        .collect();
    for job in &jobs {
        let run = job.strip_suffix("-0").unwrap_or(job);
        assert!(
            run_names.contains(run),
            "{job}: not a Job of a run: {run_names:?}"
        );
    }
    // A create cut short by the leader's SIGKILL may be recorded without its 201 though the
    // API server made the Job (the standby adopts it): the Jobs there count too.
    let existing: BTreeSet<String> = server
        .objects("batch", "jobs")
        .iter()
        .filter_map(|job| job["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for run in &runs {
        let in_hour = time(&run["spec"]["event"]["time"]) <= end;
        let name = run["metadata"]["name"].as_str().unwrap();
        let job = format!("{name}-0");
        if in_hour {
            assert!(
                jobs.contains(&job) || existing.contains(&job),
                "{name}: no Job: {jobs:?} {existing:?}"
            );
        }
    }
    drop(replicas);
}

/// The replica that leads, as `/readyz` says.
async fn leader_of(replicas: &[Operator]) -> usize {
    for _ in 0..100 {
        for (index, replica) in replicas.iter().enumerate() {
            if replica.leads().await == Some(true) {
                return index;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_of_an_hour_fires_once_across_a_takeover_on_kube_sim() {
    let server = Harness::for_replicas(&config("hourly-sim"), &[]).await;
    every_slot_of_an_hour_fires_once(server, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_of_an_hour_fires_once_across_a_takeover_on_the_real_control_plane() {
    let server = ClusterHarness::install("hourly", &config("hourly-real"), &[]).await;
    every_slot_of_an_hour_fires_once(server, Duration::from_secs(120)).await;
}

/// An operator for `server`'s namespace whose schedules' clock is `clock`. A restart keeps
/// its identity, so it goes on leading at once, as a pod whose container restarted.
async fn operator_with_clock(server: &impl Replicas, identity: &str, clock: &str) -> Operator {
    let mut op = server.replica(identity, server.kubeconfig.clone()).await;
    op.set_flag("--test-clock", clock);
    op.start_operator().await;
    op
}

/// The clock of an operator that shows `at` as it starts, and runs at real speed.
fn clock_showing(at: Timestamp) -> String {
    format!("{at}*1")
}

/// The operator is down for ten `*/5` slots: `skip` fires none of them, `latest` the newest
/// within the look-back window, `all` each within it; the rest are counted as missed, in the
/// status and a Warning Event. Then a restart that lost its last status write (the status set
/// back, as if the operator died between firing and recording) fires those slots again, and each
/// is a duplicate: no new run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_ten_missed_slots_each_policy_does_what_it_says() {
    let server = Harness::for_replicas(&config("policies"), &[]).await;
    // One apply: the three are made at the same moment, so the same slot is the first of each.
    let schedules: Vec<String> = ["skip", "latest", "all"]
        .iter()
        .map(|policy| {
            schedule_yaml(
                policy,
                "*/5 * * * *",
                &format!("  missedSlots: {{policy: {policy}, lookbackSeconds: 1200}}"),
            )
        })
        .collect();
    apply(&server, &schedules.join("---\n"));
    // The first operator fires the first slot of each, fast, and dies. Its clock starts two
    // minutes before that slot, at 20 times real speed: the slot comes 6 s after the start, past
    // the operator's first look at the schedules, and is on time (within a minute, 3 s here)
    // when fired. A clock started at an arbitrary moment could put the slot within the
    // operator's start, fired late and counted as missed.
    let created = ["skip", "latest", "all"]
        .map(|name| time(&schedule(&server, name)["metadata"]["creationTimestamp"]))
        .into_iter()
        .max()
        .unwrap();
    let first_slot = boundaries(
        created,
        created + SignedDuration::from_mins(5),
        Duration::from_secs(300),
    )[0];
    let first = operator_with_clock(
        &server,
        "policies",
        &format!("{}*20", first_slot - SignedDuration::from_mins(2)),
    )
    .await;
    // Fired and recorded: the status write follows the run's creation, and on two busy cores
    // a kill in between left one schedule a slot behind the others.
    support::wait_patiently(
        "each schedule fired once and recorded it",
        Duration::from_secs(30),
        || {
            ["skip", "latest", "all"].iter().all(|name| {
                let slots = fired(&server, name);
                let handled = &schedule(&server, name)["status"]["handledUntil"];
                slots.len() == 1 && handled.as_str().is_some() && time(handled) >= slots[0]
            })
        },
    )
    .await;
    first.kill_operator();
    let handled = |name: &str| time(&schedule(&server, name)["status"]["handledUntil"]);
    let last = handled("all");
    for name in ["skip", "latest"] {
        assert_eq!(handled(name), last, "the same slots: {name}");
    }
    // Ten slots later, and two minutes past the tenth (no longer on time).
    let back = last + SignedDuration::from_mins(52);
    let second = operator_with_clock(&server, "policies", &clock_showing(back)).await;
    support::wait_patiently(
        "each schedule handled the outage",
        Duration::from_secs(30),
        || {
            ["skip", "latest", "all"]
                .iter()
                .all(|name| handled(name) >= last + SignedDuration::from_mins(50))
        },
    )
    .await;
    let slot = |minutes: i64| last + SignedDuration::from_mins(minutes);
    assert_eq!(fired(&server, "skip"), [last]);
    assert_eq!(fired(&server, "latest"), [last, slot(50)]);
    // Within 20 minutes of the clock (02:00 after the tenth): the last four.
    assert_eq!(
        fired(&server, "all"),
        [last, slot(35), slot(40), slot(45), slot(50)]
    );
    let missed = |name: &str| {
        schedule(&server, name)["status"]["missed"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        (missed("skip"), missed("latest"), missed("all")),
        (10, 9, 6)
    );
    let (_, metrics) = second.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(&metrics, "job_executor_schedule_missed_slots_total "),
        25,
        "{metrics}"
    );
    // The Events are written in the background, after the status.
    support::wait_patiently("the MissedSlots Events", Duration::from_secs(30), || {
        let events = server.admin_shell(
            r#"kubectl get events -n "$NAMESPACE" --field-selector reason=MissedSlots -o jsonpath='{range .items[*]}{.involvedObject.name}: {.message}{"\n"}{end}'"#,
            &[],
        );
        // Up to the newest slot missed: under `latest` and `all` the slots fired come after.
        [("skip", 10, 50), ("latest", 9, 45), ("all", 6, 30)]
            .iter()
            .all(|(name, count, up_to)| {
                events.contains(&format!("{name}: {count} slot(s) up to {} ", slot(*up_to)))
            })
    })
    .await;
    second.kill_operator();

    // The status of `all` set back to before its four re-fired slots.
    let runs = server.jobruns().len();
    server.admin_shell(
        &format!(
            r#"kubectl patch jobschedule all -n "$NAMESPACE" --subresource=status --type=merge -p '{{"status":{{"handledUntil":"{}"}}}}'"#,
            slot(30)
        ),
        &[],
    );
    let third = operator_with_clock(&server, "policies", &clock_showing(back)).await;
    support::wait_patiently(
        "the slots were fired again",
        Duration::from_secs(30),
        || handled("all") >= slot(50),
    )
    .await;
    let (_, metrics) = third.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_schedule_fires_total{outcome=\"duplicate\"} "
        ),
        4,
        "{metrics}"
    );
    assert_eq!(server.jobruns().len(), runs, "no new run");
    assert_eq!(missed("all"), 6, "nothing more missed");
}

/// A catch-up refused part way (here by `--max-runs-in-flight`) is handled up to the slot
/// fired last: the retry fires the rest, never a fired slot again, and the slots counted as
/// missed are those that never fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_refused_part_way_goes_on_from_the_slot_fired_last() {
    let server = Harness::for_replicas(&config("part-way"), &["--max-runs-in-flight", "2"]).await;
    server.sim.runtime().set(
        kube_sim::ImageRule::image("alpine"),
        kube_sim::Behavior::hold(),
    );
    apply_schedule(
        &server,
        "all",
        "*/5 * * * *",
        "  missedSlots: {policy: all, lookbackSeconds: 1200}",
    );
    let created = time(&schedule(&server, "all")["metadata"]["creationTimestamp"]);
    // Two minutes past the twelfth slot since: the last four are within the look-back.
    let first_slot = boundaries(
        created,
        created + SignedDuration::from_mins(5),
        Duration::from_secs(300),
    )[0];
    let slot = |index: i32| first_slot + SignedDuration::from_mins(5 * i64::from(index));
    let op = operator_with_clock(
        &server,
        "part-way",
        &clock_showing(slot(11) + SignedDuration::from_mins(2)),
    )
    .await;
    support::wait_patiently(
        "a slot refused for the runs in flight",
        Duration::from_secs(30),
        || ready(&schedule(&server, "all")).1 == "FireFailed",
    )
    .await;
    // The slots before the refused one fired (as many as the limit let in), and the status
    // is handled up to the last of them.
    let before = fired(&server, "all");
    let count = i32::try_from(before.len()).unwrap();
    assert!((1..4).contains(&count), "{before:?}");
    assert_eq!(before, (8..8 + count).map(slot).collect::<Vec<_>>());
    let status = schedule(&server, "all")["status"].clone();
    assert_eq!(time(&status["handledUntil"]), slot(7 + count), "{status}");
    assert_eq!(time(&status["nextFireTime"]), slot(8 + count), "{status}");
    assert_eq!(status["missed"], 8, "{status}");
    // The runs end: the rest fire.
    for held in server.sim.runtime().held() {
        server.sim.release(&held.1);
    }
    support::wait_patiently("the last two slots fired", Duration::from_secs(60), || {
        for held in server.sim.runtime().held() {
            server.sim.release(&held.1);
        }
        fired(&server, "all").len() == 4
    })
    .await;
    assert_eq!(
        fired(&server, "all"),
        [slot(8), slot(9), slot(10), slot(11)]
    );
    let (_, metrics) = op.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_schedule_fires_total{outcome=\"duplicate\"} "
        ),
        0,
        "no slot fired twice:\n{metrics}"
    );
    assert_eq!(schedule(&server, "all")["status"]["missed"], 8);
}

/// An edit whose first firing is refused (here the API server refuses the run) fires the slot
/// due as it came once the refusal is over, and none of the old spec's: the status written with
/// the refusal, which records the edit as seen, says where the new spec's slots start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_whose_firing_is_refused_fires_none_of_the_old_spec_s_slots() {
    let server = Harness::for_replicas(&config("edit-refused"), &[]).await;
    let policy = "  missedSlots: {policy: all, lookbackSeconds: 86400}";
    apply_schedule(&server, "edited", "0 3 * * *", policy);
    // As the operator left it: the old spec seen, its 03:00 slot fired.
    server.admin_shell(
        r#"kubectl patch jobschedule edited -n "$NAMESPACE" --subresource=status --type=merge -p '{"status":{"handledUntil":"2027-01-10T03:00:00Z","observedGeneration":1}}'"#,
        &[],
    );
    apply_schedule(&server, "edited", "0 * * * *", policy);
    assert_eq!(schedule(&server, "edited")["metadata"]["generation"], 2);
    server.sim.faults().fail_next(
        kube_sim::FaultRule::new(503)
            .verb("create")
            .resource("jobruns")
            .times(1_000_000),
    );
    // Seen twenty seconds after the 10:00 slot, which is due.
    let op = operator_with_clock(&server, "edit-refused", "2027-01-10T10:00:20Z*1").await;
    support::wait_patiently("the firing refused", Duration::from_secs(30), || {
        ready(&schedule(&server, "edited")).1 == "FireFailed"
    })
    .await;
    let status = schedule(&server, "edited")["status"].clone();
    assert_eq!(status["observedGeneration"], 2, "{status}");
    assert!(
        time(&status["handledUntil"]) > time(&"2027-01-10T09:00:00Z".into()),
        "{status}"
    );
    server.sim.faults().clear();
    support::wait_patiently("the slot fired", Duration::from_secs(30), || {
        !fired(&server, "edited").is_empty()
    })
    .await;
    // A retry more: none of 04:00 to 09:00 comes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        fired(&server, "edited"),
        [time(&"2027-01-10T10:00:00Z".into())]
    );
    assert_eq!(schedule(&server, "edited")["status"]["missed"], 0);
    drop(op);
}

/// Daylight-saving time in Europe/Berlin: 02:30 does not exist on 2027-03-28 (it fires at
/// 03:30), and occurs twice on 2027-10-31 (it fires once). A schedule with a time zone that does
/// not exist says so in its status; a suspended one fires nothing, and once resumed does not
/// fire what passed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_keeps_its_wall_clock_across_daylight_saving_changes() {
    let server = Harness::for_replicas(&config("dst"), &[]).await;
    let berlin = "  timeZone: Europe/Berlin\n  missedSlots: {lookbackSeconds: 3600}";
    apply_schedule(&server, "spring", "30 2 * * *", berlin);
    apply_schedule(&server, "autumn", "30 2 * * *", berlin);
    apply_schedule(
        &server,
        "mars",
        "30 2 * * *",
        "  timeZone: Mars/Olympus_Mons",
    );
    let set_handled = |name: &str, at: &str| {
        server.admin_shell(
            &format!(
                r#"kubectl patch jobschedule {name} -n "$NAMESPACE" --subresource=status --type=merge -p '{{"status":{{"handledUntil":"{at}"}}}}'"#
            ),
            &[],
        );
    };
    apply_schedule(&server, "minutely", "* * * * *", "  suspend: true");
    set_handled("spring", "2027-03-28T00:00:00Z");
    set_handled("autumn", "2027-10-31T00:00:00Z");

    // Spring: the clock starts a minute before 03:30 CEST (01:30 UTC).
    let op_started = Instant::now();
    let op = operator_with_clock(&server, "dst", "2027-03-28T01:29:00Z*60").await;
    support::wait_patiently("spring fired", Duration::from_secs(30), || {
        !fired(&server, "spring").is_empty()
    })
    .await;
    assert_eq!(
        fired(&server, "spring"),
        [time(&"2027-03-28T01:30:00Z".into())]
    );
    // The status is written after the run is made; each schedule's is written at the
    // operator's first look.
    support::wait_patiently("the statuses written", Duration::from_secs(30), || {
        schedule(&server, "spring")["status"]["lastFireTime"].is_string()
            && schedule(&server, "autumn")["status"]["nextFireTime"].is_string()
            && !ready(&schedule(&server, "mars")).0.is_empty()
            && !ready(&schedule(&server, "minutely")).0.is_empty()
    })
    .await;
    let spring = schedule(&server, "spring");
    assert_eq!(spring["status"]["lastFireTime"], "2027-03-28T01:30:00Z");
    // The next night is summer time: 02:30 CEST.
    assert_eq!(spring["status"]["nextFireTime"], "2027-03-29T00:30:00Z");
    assert_eq!(ready(&spring).2, "next slot 2027-03-29 02:30 CEST");
    // Autumn's slot lies ahead of this clock: it waits for it.
    let autumn = schedule(&server, "autumn");
    assert_eq!(autumn["status"]["nextFireTime"], "2027-10-31T00:30:00Z");
    assert!(fired(&server, "autumn").is_empty());
    let mars = ready(&schedule(&server, "mars"));
    assert_eq!(
        (mars.0.as_str(), mars.1.as_str()),
        ("False", "InvalidSchedule")
    );
    assert!(mars.2.contains("Mars/Olympus_Mons"), "{mars:?}");

    // Suspended, a minutely schedule fires nothing while minutes pass (a second each);
    // resumed, it does not fire what passed meanwhile.
    assert_eq!(ready(&schedule(&server, "minutely")).1, "Suspended");
    let status_writes = || {
        server
            .sim
            .requests()
            .iter()
            .filter(|r| {
                r.verb == "patch"
                    && r.resource == "jobschedules"
                    && r.subresource == "status"
                    && r.name == "minutely"
            })
            .count()
    };
    let writes = status_writes();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(fired(&server, "minutely").is_empty());
    assert_eq!(
        status_writes(),
        writes,
        "a suspended schedule's status stays as it is"
    );
    // An invalid spec fixed while suspended is suspended again, not invalid.
    let set_cron = |cron: &str| {
        server.admin_shell(
            &format!(
                r#"kubectl patch jobschedule minutely -n "$NAMESPACE" --type=merge -p '{{"spec":{{"schedule":"{cron}"}}}}'"#
            ),
            &[],
        );
    };
    set_cron("61 * * * *");
    support::wait_patiently("minutely invalid", Duration::from_secs(10), || {
        ready(&schedule(&server, "minutely")).1 == "InvalidSchedule"
    })
    .await;
    set_cron("* * * * *");
    support::wait_patiently("minutely suspended again", Duration::from_secs(10), || {
        ready(&schedule(&server, "minutely")).1 == "Suspended"
    })
    .await;
    let resumed = Instant::now();
    server.admin_shell(
        r#"kubectl patch jobschedule minutely -n "$NAMESPACE" --type=merge -p '{"spec":{"suspend":false}}'"#,
        &[],
    );
    support::wait_patiently("minutely fires again", Duration::from_secs(10), || {
        !fired(&server, "minutely").is_empty()
    })
    .await;
    let first = fired(&server, "minutely")[0];
    let clock_at_resume = time(&"2027-03-28T01:29:00Z".into())
        + SignedDuration::try_from((resumed - op_started) * 60).unwrap();
    assert!(
        first > clock_at_resume - SignedDuration::from_secs(60),
        "fired {first}, resumed at about {clock_at_resume}"
    );
    assert_eq!(schedule(&server, "minutely")["status"]["missed"], 0);
    server.admin_shell(
        r#"kubectl delete jobschedule minutely -n "$NAMESPACE""#,
        &[],
    );
    op.kill_operator();

    // Autumn: 02:30 CEST (00:30 UTC) fires; 02:30 CET (01:30 UTC), an hour later, does not.
    let op = operator_with_clock(&server, "dst", "2027-10-31T00:29:00Z*600").await;
    support::wait_patiently("autumn fired", Duration::from_secs(30), || {
        !fired(&server, "autumn").is_empty()
    })
    .await;
    // 65 minutes of this clock: past the repeated 02:30.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    assert_eq!(
        fired(&server, "autumn"),
        [time(&"2027-10-31T00:30:00Z".into())]
    );
    assert_eq!(
        schedule(&server, "autumn")["status"]["nextFireTime"],
        "2027-11-01T01:30:00Z"
    );

    drop(op);
}

/// The next 02:30 in Berlin at least a minute after `after`.
fn next_half_past_two_in_berlin(after: Timestamp) -> Timestamp {
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let mut day = after.to_zoned(berlin.clone()).date();
    loop {
        let at = day.at(2, 30, 0, 0).to_zoned(berlin.clone()).unwrap();
        if at.timestamp() > after + SignedDuration::from_mins(1) {
            return at.timestamp();
        }
        day = day.tomorrow().unwrap();
    }
}

/// docs/schedules.md's commands, as written, against an operator installed by the chart: the
/// example applies, `kubectl get` shows the printer columns, the schedule says when it fires,
/// and once it fired (the operator's clock set just before the slot), `kubectl describe`
/// tells the story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_page_commands_work_on_the_real_control_plane() {
    let server =
        ClusterHarness::install("docs-schedule", &support::root().join("examples"), &[]).await;
    let slot = next_half_past_two_in_berlin(Timestamp::now());
    let _op = operator_with_clock(
        &server,
        "docs-schedule",
        &clock_showing(slot - SignedDuration::from_secs(5)),
    )
    .await;
    let block = support::doc_sh_block("docs/schedules.md", "## A JobSchedule");
    let shown = server.admin_shell(&block, &[]);
    for column in [
        "SCHEDULE",
        "TIME ZONE",
        "SUSPEND",
        "LAST FIRE",
        "NEXT FIRE",
        "MISSED",
    ] {
        assert!(shown.contains(column), "{shown}");
    }
    assert!(
        shown.contains("carts-nightly") && shown.contains("30 2 * * *"),
        "{shown}"
    );
    support::wait_patiently(
        "the schedule fired and says when it fires next",
        Duration::from_secs(30),
        || {
            let schedule = schedule(&server, "carts-nightly");
            ready(&schedule).0 == "True"
                && schedule["status"]["lastFireTime"]
                    .as_str()
                    .map(str::to_string)
                    == Some(slot.to_string())
        },
    )
    .await;
    let status = schedule(&server, "carts-nightly")["status"].clone();
    let next = time(&status["nextFireTime"]);
    // 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer, the next day's (23 to 25
    // hours on, across a change of the clocks).
    let utc = next.to_string();
    assert!(
        utc.ends_with("T01:30:00Z") || utc.ends_with("T00:30:00Z"),
        "{status:#}"
    );
    assert_eq!(next, next_half_past_two_in_berlin(slot), "{status:#}");
    let (_, _, message) = ready(&schedule(&server, "carts-nightly"));
    assert!(
        message.starts_with("next slot ") && message.contains(" 02:30 CE"),
        "{message}"
    );
    // "`kubectl describe jobschedule NAME` tells the story": the Event of the firing, with the
    // slot and the run it made (written in the background, after the status).
    let runs = status["lastRuns"].to_string();
    let mut described = String::new();
    support::wait_patiently("the Fired Event", Duration::from_secs(30), || {
        described = server.admin_shell(
            r#"kubectl describe jobschedule carts-nightly -n "$NAMESPACE""#,
            &[],
        );
        described.lines().any(|line| {
            line.contains("Normal")
                && line.contains("Fired")
                && line.contains(&format!("slot {slot}"))
        })
    })
    .await;
    let run = status["lastRuns"][0].as_str().unwrap_or_default();
    assert!(
        !run.is_empty() && described.contains(run),
        "{runs}\n{described}"
    );
}
