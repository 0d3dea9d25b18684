//! `job-executor schedule`: when a cron schedule fires, in its time zone — to check a
//! schedule before it is committed.

use std::process::ExitCode;

use jiff::Timestamp;

use super::ScheduleArgs;
use crate::schedule::{Schedule, ScheduleError};

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("--from {0:?} is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z)")]
    From(String),
    #[error("--time-zone {zone:?} is not an IANA time zone ({reason}); e.g. Europe/Berlin, UTC")]
    TimeZone { zone: String, reason: String },
}

/// Prints the next `--count` slots after `--from` (default: now), one a line: the instant in
/// UTC and the schedule's wall clock.
pub fn run_schedule(args: &ScheduleArgs) -> Result<ExitCode, PreviewError> {
    let schedule =
        Schedule::new(&args.cron, args.time_zone.as_deref()).map_err(|error| match error {
            ScheduleError::TimeZone { zone, reason } => PreviewError::TimeZone { zone, reason },
            other => PreviewError::Schedule(other),
        })?;
    let from = match &args.from {
        Some(text) => text
            .parse::<Timestamp>()
            .map_err(|_| PreviewError::From(text.clone()))?,
        None => Timestamp::now(),
    };
    let slots = std::iter::successors(schedule.next_after(from), |slot| schedule.next_after(*slot))
        .take(usize::from(args.count));
    for slot in slots {
        let local = schedule.local(slot);
        crate::outln!(
            "{}  {}",
            slot.strftime("%Y-%m-%dT%H:%M:%SZ"),
            local.strftime("%a %Y-%m-%d %H:%M %Z (%:z)")
        );
    }
    Ok(ExitCode::SUCCESS)
}
