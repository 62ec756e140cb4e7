//! When a top site's scheduled syncs run (S2), and when a failed sync is retried (S9).
//!
//! A [`Schedule`] is what an operator configures on the update point: a simple interval
//! (`7d`, ConfigMgr 2007's default; `12h`, `2w`, `90m`) or a cron expression evaluated in
//! UTC (`cron:0 3 * * 0`, Sundays at 03:00). It parses from and prints as that text, also
//! through serde, so it lives as a string in the node's TOML config and in the `Admin`
//! settings. The sync manager asks [`Schedule::next_after`] when the next scheduled sync is
//! due, given when the last one ran, and sleeps on the [`Clock`](crate::clock::Clock) until
//! then. After a failure it asks [`RetryPolicy::retry_at`] instead.
//!
//! Missed runs are not caught up one by one: a node that was down across one or more
//! scheduled times runs a single sync as soon as it is back, because each scheduled sync
//! is full (S3) and covers everything since the previous one anyway.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sitesync_metadata::Timestamp;

use crate::clock::TimestampExt;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const WEEK: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The shortest interval accepted: a sync more often than every minute would only queue.
pub const MIN_INTERVAL: Duration = MINUTE;
/// The longest interval accepted: a year.
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// ConfigMgr 2007's default sync schedule: every 7 days.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// S9: a failed sync is retried 60 minutes after the failure.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(60 * 60);

const EXAMPLES: &str = "write an interval such as `7d` (every 7 days, the default), `12h`, `2w` or `90m`, \
     or a cron expression in UTC such as `cron:0 3 * * 0` (Sundays at 03:00)";

/// A schedule or delay that could not be parsed; the message names the input and shows
/// what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("`{input}` is not a sync schedule: {reason}; {EXAMPLES}")]
    Schedule { input: String, reason: String },
    #[error(
        "`{input}` is not a retry delay: {reason}; write a duration such as `60m` (the default), `30m`, `2h` or `1d`"
    )]
    RetryDelay { input: String, reason: String },
}

/// When scheduled syncs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every so long after the last scheduled sync: whole minutes, between
    /// [`MIN_INTERVAL`] and [`MAX_INTERVAL`] when parsed.
    Interval(Duration),
    /// At the times a cron expression matches, in UTC.
    Cron(CronSchedule),
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Interval(DEFAULT_INTERVAL)
    }
}

impl Schedule {
    /// When the next scheduled sync is due.
    ///
    /// `last_run` is when the last scheduled sync *started* (`None` if this site has never
    /// synced); `now` is the clock's current time. The result is never before `now`:
    ///
    /// - A site that has never synced is due at once, so a fresh node becomes useful
    ///   without waiting a week.
    /// - An interval is due `interval` after `last_run`. If that moment has passed (the
    ///   node was down), it is due now — once, not once per missed interval. If `last_run`
    ///   lies in the future (the wall clock was stepped back), it is due at most one
    ///   interval from now, so a clock step cannot postpone syncs indefinitely.
    /// - A cron schedule is due at the first matching time after `now`, or now if a
    ///   matching time passed since `last_run` without a sync (the node was down).
    pub fn next_after(&self, last_run: Option<Timestamp>, now: Timestamp) -> Timestamp {
        let Some(last_run) = last_run else {
            return now;
        };
        match self {
            Schedule::Interval(interval) => last_run
                .saturating_add(*interval)
                .clamp(now, now.saturating_add(*interval)),
            Schedule::Cron(cron) => {
                if cron
                    .previous_at_or_before(now)
                    .is_some_and(|missed| missed > last_run)
                {
                    return now;
                }
                cron.next_after(now).unwrap_or_else(|| {
                    // Parsing checked that the expression matches some time; one that
                    // stops matching (past the year 5000) falls back to the default.
                    tracing::warn!(
                        schedule = %cron,
                        "the cron schedule has no time after {now}; using the default interval"
                    );
                    now.saturating_add(DEFAULT_INTERVAL)
                })
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// Accepts `cron:EXPR`, anything that looks like a cron expression (five fields, or an
    /// `@daily`-style nickname), or an interval: a whole number followed by `m`, `h`, `d`
    /// or `w` (or the words minutes, hours, days, weeks), optionally with a space between.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ScheduleError::Schedule {
            input: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        if let Some(expression) = trimmed.strip_prefix("cron:") {
            return CronSchedule::parse(expression.trim())
                .map(Schedule::Cron)
                .map_err(error);
        }
        if trimmed.starts_with('@') || trimmed.split_whitespace().count() > 2 {
            return CronSchedule::parse(trimmed)
                .map(Schedule::Cron)
                .map_err(error);
        }
        let interval = parse_duration(trimmed).map_err(error)?;
        check_interval_bounds(interval).map_err(error)?;
        Ok(Schedule::Interval(interval))
    }
}

impl fmt::Display for Schedule {
    /// Prints the text an operator would type for this schedule, which parses back to it:
    /// an interval in the largest of minutes, hours or days that expresses it exactly
    /// (`7d`, `12h`, `90m`; `2w` prints as `14d`), a cron expression as `cron:EXPR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(interval) => f.write_str(&format_duration(*interval)),
            Schedule::Cron(cron) => write!(f, "cron:{cron}"),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A parsed cron expression (five fields: minute, hour, day of month, month, day of week;
/// or a nickname such as `@daily`), evaluated in UTC.
#[derive(Clone)]
pub struct CronSchedule {
    /// What the operator wrote (trimmed), kept so that printing shows their text rather
    /// than the parser's upper-cased, expanded form.
    expression: String,
    /// Boxed: croner's parsed form is large, and `Schedule` is passed around by value.
    cron: Box<Cron>,
}

impl CronSchedule {
    fn parse(expression: &str) -> Result<Self, String> {
        if expression.is_empty() {
            return Err("the cron expression is empty".to_owned());
        }
        // Five fields only: a sixth field would be read as seconds by croner and as a year
        // by other tools, and neither belongs in a sync schedule.
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| format!("the cron expression does not parse ({e})"))?;
        let schedule = Self {
            expression: expression.to_owned(),
            cron: Box::new(cron),
        };
        // An expression such as `0 0 30 2 *` (30 February) parses but never matches.
        let reference = Timestamp::from_unix_millis(946_684_800_000); // 2000-01-01T00:00:00Z
        if schedule.next_after(reference).is_none() {
            return Err("the cron expression never matches a real date".to_owned());
        }
        Ok(schedule)
    }

    /// The expression as the operator wrote it.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first matching time strictly after `time`.
    pub fn next_after(&self, time: Timestamp) -> Option<Timestamp> {
        let start = to_datetime(time)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(Timestamp::from_unix_millis(next.timestamp_millis()))
    }

    /// The last matching time at or before `time`.
    pub fn previous_at_or_before(&self, time: Timestamp) -> Option<Timestamp> {
        let start = to_datetime(time)?;
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        Some(Timestamp::from_unix_millis(previous.timestamp_millis()))
    }
}

/// The time in whole seconds, rounded down: croner carries a start time's fraction of a
/// second into the times it finds, and matching times are whole minutes.
fn to_datetime(time: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(time.unix_millis().div_euclid(1000), 0)
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule")
            .field(&self.expression)
            .finish()
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Eq for CronSchedule {}

/// How long after a failed sync the sync manager tries again (S9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delay: DEFAULT_RETRY_DELAY,
        }
    }
}

impl RetryPolicy {
    /// When to retry a sync that failed at `failed_at`.
    pub fn retry_at(&self, failed_at: Timestamp) -> Timestamp {
        failed_at.saturating_add(self.delay)
    }
}

impl FromStr for RetryPolicy {
    type Err = ScheduleError;

    /// A duration such as `60m`, `2h` or `1d`, with the same units as a schedule interval.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ScheduleError::RetryDelay {
            input: text.to_owned(),
            reason,
        };
        let delay = parse_duration(text.trim()).map_err(error)?;
        check_interval_bounds(delay).map_err(error)?;
        Ok(Self { delay })
    }
}

impl fmt::Display for RetryPolicy {
    /// The delay as an operator would type it (`1h` for the default 60 minutes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.delay))
    }
}

impl Serialize for RetryPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetryPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `<whole number><unit>`, with an optional space, where the unit is m, h, d or w
/// or a word for it, case-insensitively.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit"))?;
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err("it does not start with a whole number".to_owned());
    }
    let unit_length = match unit.trim_start().to_ascii_lowercase().as_str() {
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "wk" | "wks" | "week" | "weeks" => WEEK,
        "s" | "sec" | "secs" | "second" | "seconds" | "ms" => {
            return Err("seconds are too fine for a sync; the smallest unit is minutes".to_owned());
        }
        other => {
            return Err(format!(
                "unknown unit `{other}` (use m for minutes, h for hours, d for days, w for weeks)"
            ));
        }
    };
    let count: u32 = number
        .parse()
        .map_err(|_| format!("{number} is too large"))?;
    unit_length
        .checked_mul(count)
        .ok_or_else(|| format!("{number} is too large"))
}

fn check_interval_bounds(interval: Duration) -> Result<(), String> {
    if interval < MIN_INTERVAL {
        Err("it must be at least 1 minute".to_owned())
    } else if interval > MAX_INTERVAL {
        Err("it must be at most 365 days".to_owned())
    } else {
        Ok(())
    }
}

/// The duration in the largest of days, hours or minutes that expresses it exactly.
/// Weeks are read but not printed, so the default prints as ConfigMgr shows it: 7 days.
/// A duration that is not whole minutes (only possible when built in code, as tests do)
/// prints in milliseconds, which is exact but does not parse back.
fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, suffix) in [(DAY, "d"), (HOUR, "h"), (MINUTE, "m")] {
        let unit = unit.as_millis();
        if millis >= unit && millis.is_multiple_of(unit) {
            return format!("{}{suffix}", millis / unit);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_iso8601(text).unwrap()
    }

    fn schedule(text: &str) -> Schedule {
        text.parse()
            .unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
    }

    #[test]
    fn the_default_is_every_seven_days_and_prints_as_7d() {
        assert_eq!(Schedule::default(), Schedule::Interval(7 * DAY));
        assert_eq!(Schedule::default().to_string(), "7d");
        assert_eq!(RetryPolicy::default().delay, 60 * MINUTE);
        assert_eq!(RetryPolicy::default().to_string(), "1h");
    }

    #[test]
    fn intervals_parse_in_minutes_hours_days_and_weeks() {
        for (text, expected) in [
            ("7d", 7 * DAY),
            ("12h", 12 * HOUR),
            ("2w", 2 * WEEK),
            ("90m", 90 * MINUTE),
            (" 7D ", 7 * DAY),
            ("7 days", 7 * DAY),
            ("1 week", WEEK),
            ("36 hours", 36 * HOUR),
            ("365d", MAX_INTERVAL),
            ("1m", MIN_INTERVAL),
        ] {
            assert_eq!(schedule(text), Schedule::Interval(expected), "{text}");
        }
    }

    #[test]
    fn intervals_print_in_the_largest_exact_unit() {
        for (text, printed) in [
            ("7d", "7d"),
            ("2w", "14d"),
            ("12h", "12h"),
            ("48h", "2d"),
            ("90m", "90m"),
            ("120m", "2h"),
        ] {
            assert_eq!(schedule(text).to_string(), printed);
        }
    }

    #[test]
    fn bad_schedules_name_the_input_and_show_examples() {
        for (text, reason) in [
            ("", "empty"),
            ("7", "has no unit"),
            ("d", "whole number"),
            ("7x", "unknown unit `x`"),
            ("30s", "seconds are too fine"),
            ("0d", "at least 1 minute"),
            ("53w", "at most 365 days"),
            ("99999999999d", "too large"),
            ("-7d", "whole number"),
            ("cron:", "empty"),
            ("cron:61 * * * *", "does not parse"),
            ("0 0 30 2 *", "never matches"),
            ("0 0 3 * * 0", "does not parse"),
        ] {
            let message = text.parse::<Schedule>().unwrap_err().to_string();
            assert!(
                message.contains(&format!("`{text}`")),
                "{message} names the input"
            );
            assert!(message.contains(reason), "{message} says `{reason}`");
            assert!(message.contains("`7d`") && message.contains("cron:0 3 * * 0"));
        }
    }

    #[test]
    fn cron_expressions_parse_with_or_without_the_prefix_and_print_with_it() {
        let weekly = schedule("cron:0 3 * * 0");
        assert_eq!(weekly.to_string(), "cron:0 3 * * 0");
        assert_eq!(schedule("0 3 * * 0"), weekly);
        assert_eq!(schedule("cron: 0 3 * * 0 "), weekly);
        assert_eq!(schedule("@daily").to_string(), "cron:@daily");
        assert_eq!(schedule(&weekly.to_string()), weekly);
        // The operator's spelling is kept.
        assert_eq!(schedule("0 3 * * sun").to_string(), "cron:0 3 * * sun");
    }

    #[test]
    fn cron_runs_at_the_next_matching_utc_time_after_now() {
        // 2024-01-01 is a Monday.
        let sundays = schedule("cron:0 3 * * 0");
        let last = at("2023-12-31T03:00:00Z");
        assert_eq!(
            sundays.next_after(Some(last), at("2024-01-01T12:00:00Z")),
            at("2024-01-07T03:00:00Z")
        );
        // Exactly at a matching time, having just run: the next one.
        let now = at("2024-01-07T03:00:00Z");
        assert_eq!(
            sundays.next_after(Some(now), now),
            at("2024-01-14T03:00:00Z")
        );

        let every_six_hours = schedule("0 */6 * * *");
        let last = at("2024-03-10T06:00:00Z");
        assert_eq!(
            every_six_hours.next_after(Some(last), at("2024-03-10T07:59:59.999Z")),
            at("2024-03-10T12:00:00Z")
        );

        let month_end = schedule("30 23 L * *");
        let last = at("2024-01-31T23:30:00Z");
        assert_eq!(
            month_end.next_after(Some(last), at("2024-02-01T00:00:00Z")),
            at("2024-02-29T23:30:00Z")
        );
    }

    #[test]
    fn cron_runs_once_at_once_after_missing_its_time() {
        let sundays = schedule("cron:0 3 * * 0");
        // Down from Saturday to the Tuesday after: the Sunday run was missed.
        let last = at("2023-12-31T03:00:00Z");
        let now = at("2024-01-09T10:00:00Z");
        assert_eq!(sundays.next_after(Some(last), now), now);
        // Having run then, the next is the following Sunday.
        assert_eq!(
            sundays.next_after(Some(now), now),
            at("2024-01-14T03:00:00Z")
        );
    }

    #[test]
    fn a_site_that_never_synced_syncs_now() {
        let now = at("2024-01-01T12:00:00Z");
        assert_eq!(Schedule::default().next_after(None, now), now);
        assert_eq!(schedule("cron:0 3 * * 0").next_after(None, now), now);
    }

    #[test]
    fn intervals_run_after_the_last_run_and_once_when_overdue() {
        let weekly = Schedule::default();
        let last = at("2024-01-01T00:00:00Z");
        assert_eq!(
            weekly.next_after(Some(last), at("2024-01-03T00:00:00Z")),
            at("2024-01-08T00:00:00Z")
        );
        // Down for three weeks: due now, once.
        let now = at("2024-01-22T05:00:00Z");
        assert_eq!(weekly.next_after(Some(last), now), now);
        // The wall clock stepped back a year: at most one interval away.
        let stepped_back = at("2023-01-01T00:00:00Z");
        assert_eq!(
            weekly.next_after(Some(last), stepped_back),
            at("2023-01-08T00:00:00Z")
        );
    }

    #[test]
    fn a_retry_is_due_sixty_minutes_after_the_failure_by_default() {
        let failed = at("2024-01-01T10:15:00Z");
        assert_eq!(
            RetryPolicy::default().retry_at(failed),
            at("2024-01-01T11:15:00Z")
        );
        let policy: RetryPolicy = "30m".parse().unwrap();
        assert_eq!(policy.retry_at(failed), at("2024-01-01T10:45:00Z"));
        let message = "soon".parse::<RetryPolicy>().unwrap_err().to_string();
        assert!(
            message.contains("`soon`") && message.contains("`60m`"),
            "{message}"
        );
    }

    #[test]
    fn schedules_and_retry_policies_live_in_toml_as_strings() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Config {
            schedule: Schedule,
            retry: RetryPolicy,
        }
        let config: Config = toml::from_str("schedule = \"12h\"\nretry = \"90m\"\n").unwrap();
        assert_eq!(
            config,
            Config {
                schedule: Schedule::Interval(12 * HOUR),
                retry: RetryPolicy { delay: 90 * MINUTE },
            }
        );
        let config: Config =
            toml::from_str("schedule = \"cron:0 3 * * 0\"\nretry = \"1h\"\n").unwrap();
        let written = toml::to_string(&config).unwrap();
        assert_eq!(written, "schedule = \"cron:0 3 * * 0\"\nretry = \"1h\"\n");
        assert_eq!(toml::from_str::<Config>(&written).unwrap(), config);

        let error = toml::from_str::<Config>("schedule = \"weekly\"\nretry = \"1h\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`weekly` is not a sync schedule"), "{error}");
    }

    fn unit() -> impl Strategy<Value = (&'static str, Duration)> {
        prop_oneof![
            Just(("m", MINUTE)),
            Just(("h", HOUR)),
            Just(("d", DAY)),
            Just(("w", WEEK)),
        ]
    }

    proptest! {
        #[test]
        fn interval_text_round_trips((suffix, unit) in unit(), count in 1u32..=525_600) {
            let text = format!("{count}{suffix}");
            let interval = unit * count;
            match text.parse::<Schedule>() {
                Ok(parsed) => {
                    prop_assert!((MIN_INTERVAL..=MAX_INTERVAL).contains(&interval));
                    prop_assert_eq!(&parsed, &Schedule::Interval(interval));
                    prop_assert_eq!(parsed.to_string().parse::<Schedule>().unwrap(), parsed);
                }
                Err(_) => prop_assert!(interval > MAX_INTERVAL),
            }
        }

        #[test]
        fn interval_next_after_is_the_interval_after_the_last_run_clamped_to_now(
            minutes in 1u64..=525_600,
            last in -4_000_000_000_000i64..4_000_000_000_000,
            offset in -40_000_000_000i64..40_000_000_000,
        ) {
            let interval = MINUTE * u32::try_from(minutes).unwrap();
            let schedule = Schedule::Interval(interval);
            let last = Timestamp(last);
            let now = Timestamp(last.0 + offset);
            let next = schedule.next_after(Some(last), now);
            let due = last.saturating_add(interval);

            prop_assert!(next >= now, "never in the past");
            prop_assert!(next <= now.saturating_add(interval), "never more than one interval away");
            if last <= now && due > now {
                prop_assert_eq!(next, due, "on time when not overdue");
            }
            if due <= now {
                prop_assert_eq!(next, now, "overdue runs now, once");
            }
        }

        #[test]
        fn cron_next_after_is_a_matching_time_in_the_future(
            now in 0i64..4_000_000_000_000,
            hour in 0u32..24,
            weekday in 0u32..7,
        ) {
            let schedule = schedule(&format!("0 {hour} * * {weekday}"));
            let Schedule::Cron(cron) = &schedule else { unreachable!() };
            let now = Timestamp(now);
            let next = schedule.next_after(Some(now), now);
            prop_assert!(next > now);
            prop_assert!(next <= now.saturating_add(WEEK));
            prop_assert_eq!(cron.previous_at_or_before(next), Some(next));
            prop_assert_eq!(next.0 % HOUR.as_millis() as i64, 0);
        }
    }
}
