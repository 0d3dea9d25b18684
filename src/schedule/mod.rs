//! Schedules: when a `JobSchedule` fires, as pure functions of its cron, its time zone, the
//! last slot it fired for and the time now.
//!
//! - A slot is a wall-clock minute the cron names, in the schedule's IANA time zone. A time the
//!   clocks skip (the hour lost when daylight-saving time starts) fires as much later as the
//!   change skipped (02:30 becomes 03:30); a time that occurs twice (the hour repeated when it
//!   ends) fires once, at its first occurrence.
//! - Each slot's event id is derived from the schedule's uid and the slot, so a repeated firing
//!   (a restart, a second replica, a re-fire after an outage) makes the same run name: a
//!   duplicate, not a second run.
//! - Slots missed while the operator was away are fired or counted by the schedule's policy.

pub mod cron;

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

pub use cron::{Cron, CronError};

/// How late a slot may be fired and still count as on time (a busy controller, a restart).
pub const ON_TIME: Duration = Duration::from_secs(60);
/// The default look-back window for missed slots (as Spinnaker Echo's missed-cron scheduler).
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(300);

/// How far back a review counts passed slots as missed: a year (527,040 slots of a schedule
/// of every minute, walked in about a second).
const MOST_PAST_COUNTED: jiff::SignedDuration = jiff::SignedDuration::from_hours(366 * 24);
/// The most slots one plan fires (a look-back window over a minutely schedule).
pub const MOST_FIRES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error(
        "timeZone {zone:?} is not an IANA time zone ({reason}); e.g. \"Europe/Berlin\", \"UTC\""
    )]
    TimeZone { zone: String, reason: String },
}

/// What to do with slots that passed while nobody fired them.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MissedPolicy {
    /// Fire none of them.
    Skip,
    /// Fire the most recent one, if it is within the look-back window.
    #[default]
    Latest,
    /// Fire each one within the look-back window, oldest first.
    All,
}

impl MissedPolicy {
    /// As the JobSchedule spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::Latest => "latest",
            MissedPolicy::All => "all",
        }
    }
}

/// The IANA time zone `name`, spelt as the database spells it. The database's lookup ignores
/// case and holds the host's own zone under names of files beside the zones: a CronJob's
/// `timeZone` is read by Go, which takes a name as the file is named, and Kubernetes refuses
/// `Local`; `localtime` and `posixrules` are the machine's zone, not one of IANA's.
fn zone(name: &str) -> Result<TimeZone, String> {
    if ["local", "localtime", "posixrules"]
        .iter()
        .any(|host| name.eq_ignore_ascii_case(host))
    {
        return Err(
            "that is the zone of the machine the operator runs on, not a zone's name".into(),
        );
    }
    let zone = TimeZone::get(name).map_err(|e| e.to_string())?;
    match zone.iana_name() {
        Some(spelt) if spelt != name => Err(format!("the name is {spelt:?}")),
        _ => Ok(zone),
    }
}

/// A cron in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

impl Schedule {
    /// `time_zone`: an IANA name; `None` is UTC.
    pub fn new(cron: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let cron = Cron::parse(cron)?;
        let zone = match time_zone.filter(|z| !z.is_empty()) {
            None => TimeZone::UTC,
            Some(name) => zone(name).map_err(|reason| ScheduleError::TimeZone {
                zone: name.to_string(),
                reason,
            })?,
        };
        Ok(Schedule { cron, zone })
    }

    /// The first slot after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut civil = after.to_zoned(self.zone.clone()).datetime();
        // Just after clocks moved forward, a slot in the skipped hour (02:30, fired at 03:30)
        // may still be ahead while its wall-clock time is behind: look from where the clock
        // stood before the change.
        let moved = self.zone.to_offset(after).seconds()
            - self
                .zone
                .to_offset(
                    after
                        .checked_sub(jiff::SignedDuration::from_hours(24))
                        .ok()?,
                )
                .seconds();
        if moved > 0 {
            civil = civil
                .checked_sub(jiff::SignedDuration::from_secs(i64::from(moved)))
                .ok()?;
        }
        loop {
            civil = self.cron.next_civil(civil)?;
            // A skipped time moves forward by the gap; a repeated one takes its first instant.
            let zoned = self.zone.to_ambiguous_zoned(civil).compatible().ok()?;
            let instant = zoned.timestamp();
            if instant <= after {
                continue;
            }
            // Moved forward, it may come after a later time of the schedule past the gap (a
            // gap of half an hour, 02:00 to 02:30: 02:20 moved to 02:50 comes after 02:35).
            let moved_to = zoned.datetime();
            let mut first = instant;
            let mut later = civil;
            while let Some(next) = self.cron.next_civil(later).filter(|next| *next < moved_to) {
                later = next;
                if let Ok(zoned) = self.zone.to_ambiguous_zoned(next).compatible() {
                    let instant = zoned.timestamp();
                    if instant > after && instant < first {
                        first = instant;
                    }
                }
            }
            return Some(first);
        }
    }

    /// The slots in `(after, until]`, oldest first.
    pub fn slots(
        &self,
        after: Timestamp,
        until: Timestamp,
    ) -> impl Iterator<Item = Timestamp> + '_ {
        std::iter::successors(self.next_after(after), move |slot| self.next_after(*slot))
            .take_while(move |slot| *slot <= until)
    }

    /// A slot as the schedule's wall clock shows it.
    pub fn local(&self, slot: Timestamp) -> Zoned {
        slot.to_zoned(self.zone.clone())
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots to fire now, oldest first.
    pub fire: Vec<Timestamp>,
    /// Slots passed that are not fired (the policy, or older than the look-back window).
    pub missed: u64,
    /// The newest of them, if any.
    pub last_missed: Option<Timestamp>,
    /// The slot fired last after this plan (what the status records), if any was.
    pub last: Option<Timestamp>,
    /// When to look again: the next slot.
    pub next: Option<Timestamp>,
}

/// Which slots in `(since, now]` to fire. `since` is the slot fired last (or when the schedule
/// began). A slot within [`ON_TIME`] of now is due and fired under every policy; older ones were
/// missed and handled by `policy` within `lookback`.
pub fn plan(
    schedule: &Schedule,
    since: Timestamp,
    now: Timestamp,
    policy: MissedPolicy,
    lookback: Duration,
) -> Plan {
    let age =
        |slot: Timestamp| -> Duration { now.duration_since(slot).try_into().unwrap_or_default() };
    // Counted as they pass, only the slots that may fire kept (at most MOST_FIRES): after a
    // long outage of a frequent schedule, the slots since `since` are many.
    let mut passed: u64 = 0;
    let mut latest = None;
    let mut fire: std::collections::VecDeque<Timestamp> = std::collections::VecDeque::new();
    // The newest slots passed, one more than may fire: every policy fires the newest slots
    // passed, so the one before those fired is the newest missed.
    let mut newest: std::collections::VecDeque<Timestamp> = std::collections::VecDeque::new();
    for slot in schedule.slots(since, now) {
        passed += 1;
        latest = Some(slot);
        if newest.len() > MOST_FIRES {
            newest.pop_front();
        }
        newest.push_back(slot);
        if age(slot) <= ON_TIME || (policy == MissedPolicy::All && age(slot) <= lookback) {
            keep_newest(&mut fire, slot);
        }
    }
    if policy == MissedPolicy::Latest
        && let Some(slot) = latest
        && age(slot) <= lookback
        && fire.back() != Some(&slot)
    {
        keep_newest(&mut fire, slot);
    }
    let fire: Vec<Timestamp> = fire.into();
    let missed = passed - fire.len() as u64;
    let last_missed = (missed > 0)
        .then(|| newest.len().checked_sub(fire.len() + 1))
        .flatten()
        .and_then(|index| newest.get(index).copied());
    Plan {
        last_missed,
        // Every slot passed is handled now: fired or counted.
        last: latest,
        // A schedule handled up to a time still to come (a clock set back) waits for it.
        next: schedule.next_after(now.max(since)),
        fire,
        missed,
    }
}

/// Adds `slot` to the slots to fire. Past the most one plan fires, the oldest are missed: the
/// slot due now always fires.
fn keep_newest(fire: &mut std::collections::VecDeque<Timestamp>, slot: Timestamp) {
    if fire.len() == MOST_FIRES {
        fire.pop_front();
    }
    fire.push_back(slot);
}

/// The id of the event fired for `slot`: the same for every firing of that slot.
pub fn event_id(schedule_uid: &str, slot: Timestamp) -> String {
    crate::event::derived_id(&format!("{schedule_uid}/{}", slot.as_second()))
}

/// The time a schedule is judged by. Real unless the operator was started with a fast clock
/// for tests (`--test-clock START*SCALE`), which starts at `START` and runs `SCALE` times as fast.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    fast: Option<FastClock>,
}

#[derive(Debug, Clone)]
struct FastClock {
    origin: std::time::Instant,
    start: Timestamp,
    scale: u32,
}

impl Clock {
    /// `START*SCALE`: `START` an RFC 3339 time or `now`, `SCALE` a whole number from 1.
    pub fn parse(text: &str) -> Result<Clock, String> {
        let (start, scale) = text
            .split_once('*')
            .ok_or_else(|| format!("{text:?} is not START*SCALE (e.g. now*60)"))?;
        let start = match start.trim() {
            "now" => Timestamp::now(),
            other => other
                .parse()
                .map_err(|e| format!("{other:?} is not an RFC 3339 time: {e}"))?,
        };
        let scale: u32 = scale
            .trim()
            .parse()
            .ok()
            .filter(|scale| *scale >= 1)
            .ok_or_else(|| format!("{scale:?} is not a whole number from 1"))?;
        Ok(Clock {
            fast: Some(FastClock {
                origin: std::time::Instant::now(),
                start,
                scale,
            }),
        })
    }

    pub fn now(&self) -> Timestamp {
        match &self.fast {
            None => Timestamp::now(),
            Some(fast) => {
                let elapsed = fast.origin.elapsed() * fast.scale;
                fast.start
                    .checked_add(jiff::SignedDuration::try_from(elapsed).unwrap_or_default())
                    .unwrap_or(fast.start)
            }
        }
    }

    /// How long to wait, in real time, until this clock shows `at`.
    pub fn real_wait(&self, at: Timestamp) -> Duration {
        let ahead: Duration = at.duration_since(self.now()).try_into().unwrap_or_default();
        match &self.fast {
            None => ahead,
            Some(fast) => ahead / fast.scale,
        }
    }
}

/// What a schedule's controller does now.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The cron, time zone or event cannot be used; the message says which and why.
    Invalid(String),
    /// Nothing fires while suspended.
    Suspended,
    /// Fire these slots (maybe none) and record the rest.
    Fire {
        schedule: Box<Schedule>,
        plan: Plan,
        /// Every slot up to here is handled before any slot of the plan fires: the slots an
        /// edit or a resume left behind are (a firing refused does not bring them back).
        handled_before: Timestamp,
        /// Every slot up to here is handled once the plan is carried out.
        handled_until: Timestamp,
    },
}

/// Decides what a JobSchedule does at `now`, from its spec and what its status says was done.
pub fn review(schedule: &crate::crd::JobSchedule, created: Timestamp, now: Timestamp) -> Verdict {
    let spec = &schedule.spec;
    let status = schedule.status.clone().unwrap_or_default();
    let parsed = match Schedule::new(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(parsed) => parsed,
        // Named by its field, as the condition on the JobSchedule is read without the spec.
        Err(ScheduleError::Cron(problem)) => {
            return Verdict::Invalid(format!("spec.schedule {:?}: {problem}", spec.schedule));
        }
        Err(problem) => return Verdict::Invalid(format!("spec.{problem}")),
    };
    if let Err(problem) = scheduled_event(schedule, now) {
        return Verdict::Invalid(problem);
    }
    if spec.suspend {
        return Verdict::Suspended;
    }
    let edited = status
        .observed_generation
        .is_some_and(|seen| Some(seen) != schedule.metadata.generation);
    // Slots that passed while suspended, or under an earlier spec, are not this spec's to fire;
    // after an edit, a slot still on time (due as the edit came, not yet fired) is: an edit of
    // the event's data just before a slot drops nothing.
    // Slots older than a year are not walked, so not counted: a `handledUntil` edited to the
    // year 1 would walk a billion slots of a schedule of every minute.
    let oldest_counted = now.checked_sub(MOST_PAST_COUNTED).unwrap_or(Timestamp::MIN);
    let recorded = status
        .handled_until
        .as_deref()
        .and_then(|at| at.parse().ok())
        .unwrap_or(created);
    let handled_until = recorded.max(oldest_counted);
    let since = if status.suspended {
        now
    } else if edited {
        let on_time = jiff::SignedDuration::try_from(ON_TIME)
            .ok()
            .and_then(|on_time| now.checked_sub(on_time).ok())
            .unwrap_or(now);
        handled_until.max(on_time).min(now)
    } else {
        handled_until
    };
    let missed = spec.missed_slots.clone().unwrap_or_default();
    let lookback = missed
        .lookback_seconds
        .map_or(DEFAULT_LOOKBACK, Duration::from_secs);
    let plan = plan(&parsed, since, now, missed.policy, lookback);
    // The year's bound alone moves with `now`: recorded, it would change the status at every
    // review, each write waking the next (a schedule of the 29th of February between its
    // slots). What an edit or a resume moved is recorded once: the next review starts there.
    let handled_before = if since == handled_until {
        recorded
    } else {
        since
    };
    Verdict::Fire {
        handled_until: plan.last.map_or(handled_before, |last| last.max(since)),
        handled_before,
        schedule: Box::new(parsed),
        plan,
    }
}

/// Attributes a schedule's `extensions` cannot set: the event's own.
const CORE_ATTRIBUTES: [&str; 10] = [
    "id",
    "source",
    "specversion",
    "type",
    "time",
    "datacontenttype",
    "dataschema",
    "subject",
    "data",
    "data_base64",
];

/// The event a JobSchedule fires for `slot`: its id derived from the schedule's uid and the
/// slot, its time the slot. A Keptn event without a `shkeptncontext` gets one (its id), as a
/// sequence Keptn starts would.
pub fn scheduled_event(
    schedule: &crate::crd::JobSchedule,
    slot: Timestamp,
) -> Result<crate::event::CloudEvent, String> {
    use serde_json::{Map, Value};
    let spec = &schedule.spec.event;
    let meta = &schedule.metadata;
    let id = event_id(meta.uid.as_deref().unwrap_or_default(), slot);
    let mut event = Map::new();
    event.insert("specversion".into(), "1.0".into());
    event.insert("id".into(), id.clone().into());
    event.insert("type".into(), spec.event_type.clone().into());
    let source = spec.source.clone().unwrap_or_else(|| {
        format!(
            "job-executor/schedule/{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    });
    event.insert("source".into(), source.into());
    event.insert("time".into(), slot.to_string().into());
    for (name, value) in &spec.extensions {
        if CORE_ATTRIBUTES.contains(&name.as_str()) {
            let instead = match name.as_str() {
                "type" | "source" | "data" => format!("set spec.event.{name} instead"),
                "data_base64" => "set spec.event.data instead".to_string(),
                "id" | "time" => "the slot sets it".to_string(),
                "specversion" | "datacontenttype" => "the operator sets it".to_string(),
                _ => "a scheduled event does not carry it".to_string(),
            };
            return Err(format!(
                "spec.event.extensions.{name} is one of the event's own attributes: {instead}"
            ));
        }
        event.insert(name.clone(), value.clone().into());
    }
    if spec.event_type.starts_with("sh.keptn.") && !event.contains_key("shkeptncontext") {
        event.insert("shkeptncontext".into(), id.into());
    }
    if let Some(data) = &spec.data {
        if !data.is_object() {
            return Err(format!(
                "spec.event.data must be an object, found {}",
                crate::event::json_kind(data)
            ));
        }
        event.insert("datacontenttype".into(), "application/json".into());
        event.insert("data".into(), data.clone());
    }
    crate::event::CloudEvent::from_value(Value::Object(event)).map_err(|problem| {
        // The field of the JobSchedule that holds the attribute.
        let field = match &problem {
            crate::event::EventError::InvalidAttribute { name, .. } => match name.as_str() {
                "type" | "source" => format!("spec.event.{name}: "),
                "data" => "spec.event.data: ".to_string(),
                other => format!("spec.event.extensions.{other}: "),
            },
            _ => String::new(),
        };
        format!("{field}the event cannot be sent: {problem}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn local(schedule: &Schedule, slots: &[Timestamp]) -> Vec<String> {
        slots
            .iter()
            .map(|s| schedule.local(*s).strftime("%F %T %Z").to_string())
            .collect()
    }

    #[test]
    fn a_slot_in_the_skipped_hour_is_next_until_it_fired() {
        // 02:30 does not exist in Berlin on 2027-03-28; it fires at 03:30 CEST (01:30 UTC), also
        // when looked for at 03:29 CEST, after the wall clock has passed 02:30.
        let schedule = Schedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            schedule.next_after(at("2027-03-28T01:29:00Z")),
            Some(at("2027-03-28T01:30:00Z"))
        );
        assert_eq!(
            schedule.next_after(at("2027-03-28T01:30:00Z")),
            Some(at("2027-03-29T00:30:00Z"))
        );
        let planned = plan(
            &schedule,
            at("2027-03-28T01:00:00Z"),
            at("2027-03-28T01:30:30Z"),
            MissedPolicy::Skip,
            DEFAULT_LOOKBACK,
        );
        assert_eq!(planned.fire, [at("2027-03-28T01:30:00Z")]);
    }

    /// A gap shorter than an hour (Lord Howe Island moves from 02:00 to 02:30): a time in it
    /// moved forward comes after a later time of the schedule past it; both fire, in the order
    /// they come.
    #[test]
    fn a_slot_moved_past_a_later_one_by_a_short_gap_still_fires() {
        let schedule = Schedule::new("20,35 2 * * *", Some("Australia/Lord_Howe")).unwrap();
        let slots: Vec<Timestamp> = schedule
            .slots(at("2027-10-02T15:00:00Z"), at("2027-10-03T16:00:00Z"))
            .collect();
        assert_eq!(
            slots,
            [
                // 02:35 (+11:00), then 02:20 moved to 02:50 (+11:00), on 3 October.
                at("2027-10-02T15:35:00Z"),
                at("2027-10-02T15:50:00Z"),
                // The next day as usual.
                at("2027-10-03T15:20:00Z"),
                at("2027-10-03T15:35:00Z"),
            ]
        );
    }

    #[test]
    fn a_schedule_fires_in_its_time_zone() {
        let schedule = Schedule::new("0 9 * * MON-FRI", Some("Europe/Berlin")).unwrap();
        let slots: Vec<Timestamp> = schedule
            .slots(at("2026-12-04T00:00:00Z"), at("2026-12-08T00:00:00Z"))
            .collect();
        // Friday, then Monday: 09:00 in Berlin is 08:00 UTC in winter.
        assert_eq!(
            slots,
            [at("2026-12-04T08:00:00Z"), at("2026-12-07T08:00:00Z")]
        );
        let utc = Schedule::new("0 9 * * *", None).unwrap();
        assert_eq!(
            utc.next_after(at("2026-12-04T09:00:00Z")),
            Some(at("2026-12-05T09:00:00Z"))
        );
    }

    #[test]
    fn a_skipped_time_fires_after_the_gap_and_a_repeated_one_once() {
        // New York: clocks go from 02:00 to 03:00 on 2026-03-08, and from 02:00 back to 01:00
        // on 2026-11-01.
        let daily = Schedule::new("30 2 * * *", Some("America/New_York")).unwrap();
        let spring: Vec<Timestamp> = daily
            .slots(at("2026-03-07T12:00:00Z"), at("2026-03-09T12:00:00Z"))
            .collect();
        assert_eq!(
            local(&daily, &spring),
            ["2026-03-08 03:30:00 EDT", "2026-03-09 02:30:00 EDT"]
        );
        let half_hourly = Schedule::new("*/30 1 * * *", Some("America/New_York")).unwrap();
        let fall: Vec<Timestamp> = half_hourly
            .slots(at("2026-11-01T00:00:00Z"), at("2026-11-02T00:00:00Z"))
            .collect();
        assert_eq!(
            local(&half_hourly, &fall),
            ["2026-11-01 01:00:00 EDT", "2026-11-01 01:30:00 EDT"],
            "01:00 and 01:30 come twice and fire once"
        );
    }

    #[test]
    fn a_schedule_fires_on_time_for_an_hour() {
        let schedule = Schedule::new("*/5 * * * *", None).unwrap();
        let mut since = at("2026-12-01T10:00:00Z");
        let mut fired: Vec<Timestamp> = Vec::new();
        // A controller woken at each plan's next slot, a second late.
        for _ in 0..12 {
            let now = plan(
                &schedule,
                since,
                since,
                MissedPolicy::Skip,
                DEFAULT_LOOKBACK,
            )
            .next
            .unwrap()
                + jiff::SignedDuration::from_secs(1);
            let plan = plan(&schedule, since, now, MissedPolicy::Skip, DEFAULT_LOOKBACK);
            assert_eq!(plan.missed, 0);
            fired.extend(&plan.fire);
            since = plan.last.unwrap();
        }
        let expected: Vec<Timestamp> = (1..=12)
            .map(|i| at("2026-12-01T10:00:00Z") + jiff::SignedDuration::from_mins(5 * i))
            .collect();
        assert_eq!(fired, expected);
    }

    #[test]
    fn missed_slots_follow_the_policy() {
        // Every minute; the operator was away from 10:00 to 10:10 (10 slots), the look-back is
        // 5 minutes.
        let schedule = Schedule::new("* * * * *", None).unwrap();
        let since = at("2026-12-01T10:00:00Z");
        let now = at("2026-12-01T10:10:20Z");
        let lookback = DEFAULT_LOOKBACK;
        let skip = plan(&schedule, since, now, MissedPolicy::Skip, lookback);
        assert_eq!(
            (skip.fire.clone(), skip.missed),
            (vec![at("2026-12-01T10:10:00Z")], 9),
            "only the due one"
        );
        assert_eq!(skip.last_missed, Some(at("2026-12-01T10:09:00Z")));
        let latest = plan(&schedule, since, now, MissedPolicy::Latest, lookback);
        assert_eq!(
            (latest.fire.clone(), latest.missed),
            (vec![at("2026-12-01T10:10:00Z")], 9)
        );
        let all = plan(&schedule, since, now, MissedPolicy::All, lookback);
        let within: Vec<Timestamp> = (6..=10)
            .map(|m| at("2026-12-01T10:00:00Z") + jiff::SignedDuration::from_mins(m))
            .collect();
        assert_eq!(
            (all.fire.clone(), all.missed),
            (within, 5),
            "10:06 to 10:10; 10:01 to 10:05 missed"
        );
        assert_eq!(all.last, Some(at("2026-12-01T10:10:00Z")));
        assert_eq!(all.last_missed, Some(at("2026-12-01T10:05:00Z")));
        assert_eq!(all.next, Some(at("2026-12-01T10:11:00Z")));

        // Away past the slot, nothing due now: `latest` fires the last missed one within the
        // window, `skip` counts it, and both move past it.
        let hourly = Schedule::new("0 * * * *", None).unwrap();
        let now = at("2026-12-01T10:03:00Z");
        let latest = plan(
            &hourly,
            at("2026-12-01T09:00:00Z"),
            now,
            MissedPolicy::Latest,
            lookback,
        );
        assert_eq!(latest.fire, [at("2026-12-01T10:00:00Z")]);
        let skip = plan(
            &hourly,
            at("2026-12-01T09:00:00Z"),
            now,
            MissedPolicy::Skip,
            lookback,
        );
        assert_eq!(
            (skip.fire.len(), skip.missed, skip.last),
            (0, 1, Some(at("2026-12-01T10:00:00Z")))
        );
        assert_eq!(skip.last_missed, Some(at("2026-12-01T10:00:00Z")));
        let none = plan(
            &hourly,
            at("2026-12-01T10:00:00Z"),
            now,
            MissedPolicy::All,
            lookback,
        );
        assert_eq!((none.fire.len(), none.missed, none.last), (0, 0, None));
        assert_eq!(none.last_missed, None);
    }

    #[test]
    fn past_the_most_one_plan_fires_the_oldest_slots_are_missed() {
        // Every minute, away for 150 minutes, a look-back of a day: 150 slots to fire under
        // `all`, of which the newest 100, the one due now among them, fire, oldest first.
        let schedule = Schedule::new("* * * * *", None).unwrap();
        let since = at("2026-12-01T10:00:00Z");
        let now = at("2026-12-01T12:30:10Z");
        let all = plan(
            &schedule,
            since,
            now,
            MissedPolicy::All,
            Duration::from_secs(86_400),
        );
        assert_eq!((all.fire.len(), all.missed), (MOST_FIRES, 50));
        assert_eq!(all.fire.first(), Some(&at("2026-12-01T10:51:00Z")));
        assert_eq!(all.last_missed, Some(at("2026-12-01T10:50:00Z")));
        assert_eq!(all.fire.last(), Some(&at("2026-12-01T12:30:00Z")));
        assert!(all.fire.is_sorted());
        assert_eq!(all.last, Some(at("2026-12-01T12:30:00Z")));
    }

    /// A month away from a minutely schedule: every slot counted, only the window's fired.
    #[test]
    fn a_long_outage_is_counted_not_kept() {
        let schedule = Schedule::new("* * * * *", None).unwrap();
        let all = plan(
            &schedule,
            at("2026-11-01T00:00:00Z"),
            at("2026-12-01T00:00:30Z"),
            MissedPolicy::All,
            DEFAULT_LOOKBACK,
        );
        assert_eq!(all.fire.first(), Some(&at("2026-11-30T23:56:00Z")));
        assert_eq!((all.fire.len(), all.missed), (5, 30 * 1440 - 5));
        assert_eq!(all.last_missed, Some(at("2026-11-30T23:55:00Z")));
        assert_eq!(all.last, Some(at("2026-12-01T00:00:00Z")));
    }

    #[test]
    fn a_slot_s_event_id_is_the_same_at_every_firing() {
        let slot = at("2026-12-01T10:00:00Z");
        let id = event_id("3f1c", slot);
        assert_eq!(id, event_id("3f1c", slot));
        assert_ne!(id, event_id("3f1c", at("2026-12-01T10:01:00Z")));
        assert_ne!(id, event_id("other", slot));
        assert_eq!(id.len(), 36);
    }

    /// What makes a schedule invalid is named by its field in the condition, with what to do.
    #[test]
    fn an_invalid_schedule_names_its_field() {
        let schedule = |cron: &str, extension: &str| {
            serde_json::from_value::<crate::crd::JobSchedule>(serde_json::json!({
                "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobSchedule",
                "metadata": {"name": "s", "namespace": "n", "uid": "u"},
                "spec": {
                    "schedule": cron,
                    "event": {"type": "sh.keptn.event.test.triggered", "extensions": {extension: "x"}}
                }
            }))
            .unwrap()
        };
        let now = at("2026-12-01T10:00:00Z");
        let invalid =
            |cron: &str, extension: &str| match review(&schedule(cron, extension), now, now) {
                Verdict::Invalid(message) => message,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            invalid("60 * * * *", "team"),
            "spec.schedule \"60 * * * *\": the minute field \"60\": 60 is outside 0-59"
        );
        assert_eq!(
            invalid("@daily", "subject"),
            "spec.event.extensions.subject is one of the event's own attributes: a scheduled \
             event does not carry it"
        );
        assert_eq!(
            invalid("@daily", "source"),
            "spec.event.extensions.source is one of the event's own attributes: set \
             spec.event.source instead"
        );
        // What the event's own rules refuse, named by the field that holds it.
        assert_eq!(
            invalid("@daily", "Team"),
            "spec.event.extensions.Team: the event cannot be sent: attribute \"Team\" is not a \
             valid extension name (lower-case letters and digits only)"
        );
        let mut sourceless = schedule("@daily", "team");
        sourceless.spec.event.source = Some(String::new());
        assert_eq!(
            match review(&sourceless, now, now) {
                Verdict::Invalid(message) => message,
                other => panic!("{other:?}"),
            },
            "spec.event.source: the event cannot be sent: attribute \"source\" must not be empty"
        );
    }

    /// An edit seen just after a slot came (before its timer fired it) fires it under the new
    /// spec; the slots before it, older than on time, are the old spec's and are not.
    #[test]
    fn an_edit_keeps_the_slot_due_as_it_came() {
        let edited = |status: serde_json::Value| {
            serde_json::from_value::<crate::crd::JobSchedule>(serde_json::json!({
                "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobSchedule",
                "metadata": {"name": "s", "namespace": "n", "uid": "u", "generation": 2},
                "spec": {
                    "schedule": "30 2 * * *",
                    "missedSlots": {"policy": "all"},
                    "event": {"type": "sh.keptn.event.test.triggered"}
                },
                "status": status,
            }))
            .unwrap()
        };
        let fired = |schedule: &crate::crd::JobSchedule, now: &str| match review(
            schedule,
            at("2026-11-01T00:00:00Z"),
            at(now),
        ) {
            Verdict::Fire { plan, .. } => plan.fire,
            other => panic!("{other:?}"),
        };
        let handled = serde_json::json!({
            "observedGeneration": 1, "handledUntil": "2026-11-30T02:30:00Z"
        });
        assert_eq!(
            fired(&edited(handled.clone()), "2026-12-01T02:30:00.010Z"),
            [at("2026-12-01T02:30:00Z")]
        );
        // Seen a minute and more after the slot: the old spec's, not fired.
        assert!(fired(&edited(handled.clone()), "2026-12-01T02:31:30Z").is_empty());
        // Not edited, the same status fires it (the policy `all`, within the look-back).
        let mut kept = edited(handled);
        kept.metadata.generation = Some(1);
        assert_eq!(
            fired(&kept, "2026-12-01T02:31:30Z"),
            [at("2026-12-01T02:30:00Z")]
        );
        // Resumed: from then, strictly.
        let resumed = edited(serde_json::json!({
            "observedGeneration": 1, "handledUntil": "2026-11-30T02:30:00Z", "suspended": true
        }));
        assert!(fired(&resumed, "2026-12-01T02:30:00.010Z").is_empty());
    }

    /// A `handledUntil` edited to the year 1 walks a year of slots, not a billion: the slots of
    /// the last year are counted as missed, the older ones not.
    #[test]
    fn slots_older_than_a_year_are_not_walked() {
        let ancient: crate::crd::JobSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobSchedule",
            "metadata": {"name": "s", "namespace": "n", "uid": "u", "generation": 1},
            "spec": {
                "schedule": "0 * * * *",
                "missedSlots": {"policy": "skip"},
                "event": {"type": "sh.keptn.event.test.triggered"}
            },
            "status": {"observedGeneration": 1, "handledUntil": "0001-01-01T00:00:00Z"},
        }))
        .unwrap();
        let now = at("2026-12-01T10:30:00Z");
        match review(&ancient, at("2026-11-01T00:00:00Z"), now) {
            Verdict::Fire { plan, .. } => {
                assert_eq!(plan.missed, 366 * 24, "{plan:?}");
                assert_eq!(plan.last, Some(at("2026-12-01T10:00:00Z")));
            }
            other => panic!("{other:?}"),
        }
    }

    fn schedule_with(cron: &str, status: serde_json::Value) -> crate::crd::JobSchedule {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobSchedule",
            "metadata": {"name": "s", "namespace": "n", "uid": "u", "generation": 2},
            "spec": {
                "schedule": cron,
                "missedSlots": {"policy": "all", "lookbackSeconds": 86400},
                "event": {"type": "sh.keptn.event.test.triggered"}
            },
            "status": status,
        }))
        .unwrap()
    }

    fn fire_verdict(schedule: &crate::crd::JobSchedule, now: &str) -> (Plan, Timestamp, Timestamp) {
        match review(schedule, at("2026-01-01T00:00:00Z"), at(now)) {
            Verdict::Fire {
                plan,
                handled_before,
                handled_until,
                ..
            } => (plan, handled_before, handled_until),
            other => panic!("{other:?}"),
        }
    }

    /// A schedule whose slots lie more than a year apart (the 29th of February) records the
    /// same status at every review between them: a status that changed with the clock would
    /// be written at every review, each write waking the next.
    #[test]
    fn a_review_between_slots_a_year_apart_records_what_it_did() {
        let leap = schedule_with(
            "0 0 29 2 *",
            serde_json::json!({"observedGeneration": 2, "handledUntil": "2028-02-29T00:00:00Z"}),
        );
        let (plan, before, until) = fire_verdict(&leap, "2029-08-22T10:00:00Z");
        assert!(plan.fire.is_empty(), "{plan:?}");
        assert_eq!(plan.next, Some(at("2032-02-29T00:00:00Z")));
        assert_eq!(
            (before, until),
            (at("2028-02-29T00:00:00Z"), at("2028-02-29T00:00:00Z"))
        );
        let (_, _, a_second_later) = fire_verdict(&leap, "2029-08-22T10:00:01Z");
        assert_eq!(a_second_later, until);
    }

    /// An edit whose first firing is refused keeps the old spec's slots behind it: the status
    /// written with the refusal (which records the generation as seen) says where it starts.
    #[test]
    fn an_edit_whose_firing_is_refused_does_not_fire_the_old_spec_s_slots() {
        let edited = schedule_with(
            "0 * * * *",
            serde_json::json!({"observedGeneration": 1, "handledUntil": "2026-12-01T03:00:00Z"}),
        );
        let (plan, before, _) = fire_verdict(&edited, "2026-12-01T10:00:05Z");
        assert_eq!(plan.fire, [at("2026-12-01T10:00:00Z")]);
        assert_eq!(before, at("2026-12-01T09:59:05Z"));
        // Refused: the status says the generation was seen and where the slots start.
        let after_refusal = schedule_with(
            "0 * * * *",
            serde_json::json!({"observedGeneration": 2, "handledUntil": before.to_string()}),
        );
        let (plan, _, until) = fire_verdict(&after_refusal, "2026-12-01T10:00:10Z");
        assert_eq!(plan.fire, [at("2026-12-01T10:00:00Z")]);
        assert_eq!(plan.missed, 0);
        assert_eq!(until, at("2026-12-01T10:00:00Z"));
    }

    #[test]
    fn an_unknown_time_zone_is_named() {
        let error = Schedule::new("@daily", Some("Mars/Olympus"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("timeZone \"Mars/Olympus\" is not an IANA time zone"),
            "{error}"
        );
        // The database finds these too, but a CronJob's `timeZone` does not take them.
        for (name, why) in [
            ("europe/berlin", "the name is \"Europe/Berlin\""),
            ("localtime", "the machine the operator runs on"),
            ("posixrules", "the machine the operator runs on"),
            ("Local", "the machine the operator runs on"),
        ] {
            let error = Schedule::new("@daily", Some(name)).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("timeZone {name:?} is not an IANA time zone"))
                    && error.contains(why),
                "{error}"
            );
        }
        assert!(Schedule::new("@daily", Some("Europe/Berlin")).is_ok());
        assert!(Schedule::new("@daily", Some("UTC")).is_ok());
    }
}
