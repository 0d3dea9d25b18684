//! The cron language of schedules: five fields (minute, hour, day of month, month, day of
//! week) or one of the `@hourly`-style macros, as crontab(5) has them. Parsing says which field
//! is wrong and why; matching is over civil (wall-clock) date-times.

use jiff::ToSpan;
use jiff::civil::{Date, DateTime, Time};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "{text:?} has {count} field(s): a schedule has 5 (minute hour day-of-month month \
         day-of-week), e.g. \"30 2 * * 1-5\", or is one of @yearly, @monthly, @weekly, @daily, \
         @hourly"
    )]
    FieldCount { text: String, count: usize },
    #[error(
        "unknown macro {0:?}: use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    UnknownMacro(String),
    #[error("the {field} field {value:?}: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0:?} never fires (no date has that day in those months)")]
    NeverFires(String),
}

/// One field's allowed values as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field(u64);

impl Field {
    fn has(self, value: u8) -> bool {
        value < 64 && self.0 & (1 << value) != 0
    }
}

/// How each field is read: its name, its range, and the names it takes.
struct Spec {
    name: &'static str,
    min: u8,
    max: u8,
    /// Where `*` and `N/S` end: the range's end but for the day of week, where 7 is only
    /// Sunday's other number (`1/2` is Monday, Wednesday and Friday, not Sunday too).
    last: u8,
    names: &'static [&'static str],
}

const MINUTE: Spec = Spec {
    name: "minute",
    min: 0,
    max: 59,
    last: 59,
    names: &[],
};
const HOUR: Spec = Spec {
    name: "hour",
    min: 0,
    max: 23,
    last: 23,
    names: &[],
};
const DAY_OF_MONTH: Spec = Spec {
    name: "day-of-month",
    min: 1,
    max: 31,
    last: 31,
    names: &[],
};
const MONTH: Spec = Spec {
    name: "month",
    min: 1,
    max: 12,
    last: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 0 and 7 are Sunday.
const DAY_OF_WEEK: Spec = Spec {
    name: "day-of-week",
    min: 0,
    max: 7,
    last: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Field,
    hours: Field,
    days: Field,
    months: Field,
    weekdays: Field,
    /// Both day fields restricted: a day matches either (crontab(5)).
    either_day: bool,
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(CronError::UnknownMacro(text.to_string()));
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(CronError::FieldCount {
                text: text.to_string(),
                count: fields.len(),
            });
        };
        let mut weekdays = parse_field(weekday, &DAY_OF_WEEK)?;
        if weekdays.has(7) {
            weekdays.0 = (weekdays.0 | 1) & !(1 << 7);
        }
        let cron = Cron {
            minutes: parse_field(minute, &MINUTE)?,
            hours: parse_field(hour, &HOUR)?,
            days: parse_field(day, &DAY_OF_MONTH)?,
            months: parse_field(month, &MONTH)?,
            weekdays,
            either_day: !day.starts_with('*') && !weekday.starts_with('*'),
        };
        // A day that no month of the schedule has (the 30th of February) never comes.
        let longest = (1..=12u8)
            .filter(|m| cron.months.has(*m))
            .map(|m| {
                if m == 2 {
                    29
                } else if [4, 6, 9, 11].contains(&m) {
                    30
                } else {
                    31
                }
            })
            .max()
            .unwrap_or(0);
        let any_day = (1..=longest).any(|d| cron.days.has(d));
        if !any_day && !cron.either_day {
            return Err(CronError::NeverFires(text.to_string()));
        }
        Ok(cron)
    }

    fn day_matches(&self, date: Date) -> bool {
        let day = self.days.has(date.day() as u8);
        let weekday = self
            .weekdays
            .has(date.weekday().to_sunday_zero_offset() as u8);
        if self.either_day {
            day || weekday
        } else {
            day && weekday
        }
    }

    /// Whether the schedule names this wall-clock minute.
    pub fn matches(&self, at: DateTime) -> bool {
        self.months.has(at.month() as u8)
            && self.day_matches(at.date())
            && self.hours.has(at.hour() as u8)
            && self.minutes.has(at.minute() as u8)
    }

    /// The first wall-clock minute after `after` that the schedule names; `None` past the
    /// end of jiff's calendar.
    pub fn next_civil(&self, after: DateTime) -> Option<DateTime> {
        let mut at = after
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        // Each step moves to the next month, day, hour or minute that can match: a schedule
        // that fires is found within a few hundred steps.
        loop {
            if !self.months.has(at.month() as u8) {
                at = at
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Time::midnight());
            } else if !self.day_matches(at.date()) {
                at = at.date().tomorrow().ok()?.to_datetime(Time::midnight());
            } else if !self.hours.has(at.hour() as u8) {
                at = at
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
            } else if !self.minutes.has(at.minute() as u8) {
                at = at.checked_add(1.minute()).ok()?;
            } else {
                return Some(at);
            }
        }
    }
}

fn parse_field(text: &str, spec: &Spec) -> Result<Field, CronError> {
    let invalid = |reason: String| CronError::Field {
        field: spec.name,
        value: text.to_string(),
        reason,
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                // A step past the range's end leaves its start alone, as in cron.
                // Digits only (a `+` is no cron syntax); a step too large for a number here
                // is past every range's end, as a large one is.
                let digits = !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit());
                let step: u32 = match step.parse::<u32>() {
                    Ok(n) if digits && n > 0 => n,
                    Err(_) if digits && step.bytes().any(|b| b != b'0') => u32::MAX,
                    _ => {
                        return Err(invalid(format!(
                            "the step {step:?} is not a number above 0"
                        )));
                    }
                };
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.last)
        } else if let Some((low, high)) = range.split_once('-') {
            if low.is_empty() || high.is_empty() {
                return Err(invalid(format!(
                    "the range {range:?} needs a value on each side of `-`"
                )));
            }
            (value(low, spec, &invalid)?, value(high, spec, &invalid)?)
        } else {
            let low = value(range, spec, &invalid)?;
            // `N/S` runs from N to the end of the range.
            (
                low,
                if item.contains('/') {
                    spec.last.max(low)
                } else {
                    low
                },
            )
        };
        if low > high {
            return Err(invalid(format!("the range {range:?} runs backwards")));
        }
        for v in (low..=high).step_by(usize::try_from(step).unwrap_or(usize::MAX)) {
            bits |= 1 << v;
        }
    }
    Ok(Field(bits))
}

fn value(text: &str, spec: &Spec, invalid: &impl Fn(String) -> CronError) -> Result<u8, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = spec.names.iter().position(|n| *n == lower) {
        // Names count from the range's start: JAN is 1, SUN is 0.
        return Ok(spec.min + index as u8);
    }
    // Read wide, so that `300` is said to be out of range rather than not a number.
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let number: u64 = text.parse().ok().filter(|_| digits).ok_or_else(|| {
        let names = if spec.names.is_empty() {
            String::new()
        } else {
            format!(" or a name ({})", spec.names.join(", "))
        };
        invalid(format!("{text:?} is not a number{names}"))
    })?;
    match u8::try_from(number) {
        Ok(number) if (spec.min..=spec.max).contains(&number) => Ok(number),
        _ => Err(invalid(format!(
            "{number} is outside {}-{}",
            spec.min, spec.max
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn next(cron: &str, after: DateTime) -> DateTime {
        Cron::parse(cron).unwrap().next_civil(after).unwrap()
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        let at = date(2026, 12, 1).at(10, 7, 30, 0);
        assert_eq!(next("* * * * *", at), date(2026, 12, 1).at(10, 8, 0, 0));
        assert_eq!(next("*/15 * * * *", at), date(2026, 12, 1).at(10, 15, 0, 0));
        assert_eq!(next("5/20 * * * *", at), date(2026, 12, 1).at(10, 25, 0, 0));
        assert_eq!(
            next("0 9-17/4 * * *", at),
            date(2026, 12, 1).at(13, 0, 0, 0)
        );
        assert_eq!(
            next("0,30 10 * * *", at),
            date(2026, 12, 1).at(10, 30, 0, 0)
        );
        // 2026-12-01 is a Tuesday.
        assert_eq!(
            next("0 8 * * MON-FRI", at),
            date(2026, 12, 2).at(8, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 * * 7", at),
            date(2026, 12, 6).at(0, 0, 0, 0),
            "7 is Sunday"
        );
        assert_eq!(next("0 0 1 jan *", at), date(2027, 1, 1).at(0, 0, 0, 0));
        // From Monday every other day: Monday, Wednesday, Friday; Sunday is 7 only by name.
        let weekdays = Cron::parse("0 0 * * 1/2").unwrap();
        assert_eq!(weekdays, Cron::parse("0 0 * * 1,3,5").unwrap());
        assert_eq!(
            Cron::parse("0 0 * * 2/5").unwrap(),
            Cron::parse("0 0 * * 2").unwrap()
        );
        assert_eq!(
            Cron::parse("0 0 * * 7/2").unwrap(),
            Cron::parse("0 0 * * 0").unwrap()
        );
        // A step past the range's end leaves its start.
        assert_eq!(next("*/300 * * * *", at), date(2026, 12, 1).at(11, 0, 0, 0));
        assert_eq!(next("@hourly", at), date(2026, 12, 1).at(11, 0, 0, 0));
        assert_eq!(next("@weekly", at), date(2026, 12, 6).at(0, 0, 0, 0));
        assert_eq!(next("@yearly", at), date(2027, 1, 1).at(0, 0, 0, 0));
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        let at = date(2026, 12, 1).at(0, 0, 0, 0);
        // The 15th, or any Friday (the 4th).
        assert_eq!(next("0 0 15 * fri", at), date(2026, 12, 4).at(0, 0, 0, 0));
        // Only the day of month restricted.
        assert_eq!(next("0 0 15 * *", at), date(2026, 12, 15).at(0, 0, 0, 0));
        // A field that starts with `*` is not restricted (crontab(5)): Mondays of odd date.
        assert_eq!(next("0 0 */2 * mon", at), date(2026, 12, 7).at(0, 0, 0, 0));
        // The 29th of February comes in a leap year.
        assert_eq!(next("0 0 29 2 *", at), date(2028, 2, 29).at(0, 0, 0, 0));
    }

    #[test]
    fn bad_schedules_say_which_field_and_why() {
        let error = |text: &str| Cron::parse(text).unwrap_err().to_string();
        assert!(
            error("* * * *").contains("has 4 field(s)"),
            "{}",
            error("* * * *")
        );
        assert_eq!(
            error("@often"),
            "unknown macro \"@often\": use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
        );
        assert_eq!(
            error("60 * * * *"),
            "the minute field \"60\": 60 is outside 0-59"
        );
        // Past what a field's type holds: out of range all the same.
        assert_eq!(
            error("0 300 * * *"),
            "the hour field \"300\": 300 is outside 0-23"
        );
        assert_eq!(
            error("0 0 * 99999999999 *"),
            "the month field \"99999999999\": 99999999999 is outside 1-12"
        );
        assert_eq!(
            error("* * * foo *"),
            "the month field \"foo\": \"foo\" is not a number or a name (jan, feb, mar, apr, may, jun, jul, aug, sep, oct, nov, dec)"
        );
        assert_eq!(
            error("*/0 * * * *"),
            "the minute field \"*/0\": the step \"0\" is not a number above 0"
        );
        assert_eq!(
            error("+5 * * * *"),
            "the minute field \"+5\": \"+5\" is not a number"
        );
        assert_eq!(
            error("*/+5 * * * *"),
            "the minute field \"*/+5\": the step \"+5\" is not a number above 0"
        );
        // A step past every range's end, however large, leaves the start alone.
        assert_eq!(
            Cron::parse("*/99999999999 * * * *").map(|cron| cron.minutes),
            Cron::parse("0 * * * *").map(|cron| cron.minutes)
        );
        assert_eq!(
            error("* 5-2 * * *"),
            "the hour field \"5-2\": the range \"5-2\" runs backwards"
        );
        for (cron, range) in [("-5 * * * *", "-5"), ("1- * * * *", "1-")] {
            assert_eq!(
                error(cron),
                format!(
                    "the minute field \"{range}\": the range \"{range}\" needs a value on each \
                     side of `-`"
                )
            );
        }
        assert_eq!(
            error("0 0 30 2 *"),
            "\"0 0 30 2 *\" never fires (no date has that day in those months)"
        );
    }
}
