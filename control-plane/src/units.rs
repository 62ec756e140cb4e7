//! Times, durations and schedules as operators type and read them.
//!
//! Durations are a number and a unit, possibly several (`90s`, `30m`, `1h30m`, `7d`, `2w`);
//! times are RFC 3339 in UTC. Schedules use the node's own spelling (`7d`, `12h`, `2w`,
//! `cron:0 3 * * 0`), so what `settings get --output json` prints, `settings set --schedule`
//! accepts. A change-log position is `log-id:sequence` both ways, so the target `export
//! inspect` prints is what `export --since-anchor` takes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitesync_metadata::Timestamp;
use sitesync_proto::convert::timestamp_from_wire;
use sitesync_proto::v1;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

const DURATION_EXAMPLES: &str = "write a number and a unit such as 90s, 30m, 1h, 7d or 2w";

/// Parses `90s`, `30m`, `1h30m`, `7d`, `2w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let refuse = |why: &str| format!("`{text}` is not a duration: {why}; {DURATION_EXAMPLES}");
    if trimmed.is_empty() {
        return Err(refuse("it is empty"));
    }
    let mut seconds: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(refuse("expected a number"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_seconds = match unit.trim() {
            "s" => 1,
            "m" | "min" => MINUTE,
            "h" => HOUR,
            "d" => DAY,
            "w" => WEEK,
            "" => return Err(refuse("the number has no unit")),
            other => return Err(refuse(&format!("`{other}` is not a unit"))),
        };
        let amount: u64 = number
            .parse()
            .map_err(|_| refuse("the number is too large"))?;
        seconds = amount
            .checked_mul(unit_seconds)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(|| refuse("it is too long"))?;
        rest = after;
    }
    Ok(Duration::from_secs(seconds))
}

/// Parses a repeating interval (`--interval`): a duration as [`parse_duration`] reads it, of
/// at least a second.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval.is_zero() {
        return Err(format!("`{text}` is no interval: give at least 1s"));
    }
    Ok(interval)
}

/// The compact form of a duration: `7d`, `60m` is `1h`, `1h30m`, `45s`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return if duration.is_zero() {
            "0s".to_owned()
        } else {
            format!("{}ms", duration.as_millis())
        };
    }
    let mut out = String::new();
    for (unit, size) in [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// A wire duration as a std one; negative or malformed durations are `None`.
pub fn duration_from_wire(wire: &prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(wire.seconds).ok()?;
    let nanos = u32::try_from(wire.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

/// A std duration on the wire.
pub fn duration_to_wire(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// The current time, in milliseconds since the epoch.
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis)
}

/// `--since` and `--until`: an RFC 3339 time, or a duration before `now`.
pub fn parse_when(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(ago) = parse_duration(text) {
        let millis = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(Timestamp::from_unix_millis(
            now.unix_millis().saturating_sub(millis),
        ));
    }
    Timestamp::parse_iso8601(text.trim()).ok_or_else(|| {
        format!(
            "`{text}` is neither a time (RFC 3339, such as 2025-01-31T08:00:00Z) nor a \
             duration ago (such as 90m, 1h or 7d)"
        )
    })
}

/// A wire timestamp in RFC 3339, full precision: what JSON output carries.
pub fn rfc3339(wire: &prost_types::Timestamp) -> String {
    match timestamp_from_wire(*wire) {
        Ok(time) => time.to_string(),
        Err(_) => format!("(invalid time {}s {}ns)", wire.seconds, wire.nanos),
    }
}

/// An optional wire timestamp for JSON: RFC 3339 or null.
pub fn rfc3339_opt(wire: Option<&prost_types::Timestamp>) -> Option<String> {
    wire.map(rfc3339)
}

/// A wire timestamp for tables: RFC 3339 to the second, `-` when absent.
pub fn short_time(wire: Option<&prost_types::Timestamp>) -> String {
    match wire {
        Some(wire) => rfc3339(&prost_types::Timestamp {
            seconds: wire.seconds,
            nanos: 0,
        }),
        None => "-".to_owned(),
    }
}

/// An RFC 3339 time as tables show it, without its fraction of a second
/// (`2025-01-31T08:00:12.5Z` is `2025-01-31T08:00:12Z`). Text that is not such a time is
/// returned as it is.
pub fn to_the_second(time: &str) -> std::borrow::Cow<'_, str> {
    match time.split_once('.') {
        Some((seconds, fraction)) => {
            let zone = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{seconds}{zone}").into()
        }
        None => time.into(),
    }
}

/// How long from `from` to `to`, when both are valid and in order.
pub fn between(from: &prost_types::Timestamp, to: &prost_types::Timestamp) -> Option<Duration> {
    let from = timestamp_from_wire(*from).ok()?.unix_millis();
    let to = timestamp_from_wire(*to).ok()?.unix_millis();
    u64::try_from(to.checked_sub(from)?)
        .ok()
        .map(Duration::from_millis)
}

/// A duration for people, with a fraction under a minute: `12.3 s`, `4m 10s`, `2h 5m`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        return format!("{:.1} s", duration.as_secs_f64());
    }
    if seconds < HOUR {
        return format!("{}m {}s", seconds / MINUTE, seconds % MINUTE);
    }
    if seconds < DAY {
        return format!("{}h {}m", seconds / HOUR, (seconds % HOUR) / MINUTE);
    }
    format!("{}d {}h", seconds / DAY, (seconds % DAY) / HOUR)
}

/// `in 3h 10m` or `5m 2s ago`, relative to `now`.
pub fn relative(wire: &prost_types::Timestamp, now: Timestamp) -> Option<String> {
    let then = timestamp_from_wire(*wire).ok()?.unix_millis();
    let delta = then.checked_sub(now.unix_millis())?;
    let magnitude = human_duration(Duration::from_millis(delta.unsigned_abs()));
    Some(if delta >= 0 {
        format!("in {magnitude}")
    } else {
        format!("{magnitude} ago")
    })
}

/// `--schedule`: `manual` (or `none`) for no schedule; `cron:EXPR`, a bare five-field
/// expression or a nickname (`@daily`) for cron; otherwise an interval of whole minutes, hours, days or weeks, kept in
/// the unit given (`48h` stays 48 hours).
pub fn parse_schedule(text: &str) -> Result<Option<v1::SyncSchedule>, String> {
    use v1::sync_schedule::Kind;
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("manual") || trimmed.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let cron = trimmed.strip_prefix("cron:").map(str::trim).or_else(|| {
        (trimmed.contains(char::is_whitespace) || trimmed.starts_with('@')).then_some(trimmed)
    });
    if let Some(expression) = cron {
        // A nickname (`@daily`, `@weekly`) the node's cron parser knows.
        if expression.starts_with('@') && !expression.contains(char::is_whitespace) {
            return Ok(Some(v1::SyncSchedule {
                kind: Some(Kind::Cron(expression.to_owned())),
            }));
        }
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "`{text}` is not a cron schedule: it has {fields} fields, a cron expression has \
                 five (minute hour day-of-month month day-of-week), such as \"0 3 * * 0\""
            ));
        }
        let normalized = expression.split_whitespace().collect::<Vec<_>>().join(" ");
        return Ok(Some(v1::SyncSchedule {
            kind: Some(Kind::Cron(normalized)),
        }));
    }
    let refuse = |why: &str| {
        format!(
            "`{text}` is not a sync schedule: {why}; write an interval such as 12h, 7d or 2w, \
             a cron expression such as \"0 3 * * 0\", or manual"
        )
    };
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let every: u32 = number
        .parse()
        .map_err(|_| refuse("expected a number and a unit"))?;
    if every == 0 {
        return Err(refuse("the interval must be at least 1"));
    }
    let (every, unit) = match unit {
        "h" => (every, v1::IntervalUnit::Hours),
        "d" => (every, v1::IntervalUnit::Days),
        "w" => (every, v1::IntervalUnit::Weeks),
        "m" => (every, v1::IntervalUnit::Minutes),
        _ => return Err(refuse("the unit must be m, h, d or w")),
    };
    Ok(Some(v1::SyncSchedule {
        kind: Some(Kind::Interval(v1::ScheduleInterval {
            every,
            unit: unit.into(),
        })),
    }))
}

/// A schedule in the form `--schedule` accepts: `7d`, `12h`, `2w`, `cron:0 3 * * 0`;
/// `manual` when there is none.
pub fn format_schedule(schedule: Option<&v1::SyncSchedule>) -> String {
    use v1::sync_schedule::Kind;
    match schedule.and_then(|s| s.kind.as_ref()) {
        None => "manual".to_owned(),
        Some(Kind::Cron(expression)) => format!("cron:{expression}"),
        Some(Kind::Interval(interval)) => {
            let unit = match interval.unit() {
                v1::IntervalUnit::Minutes => "m",
                v1::IntervalUnit::Hours => "h",
                v1::IntervalUnit::Days => "d",
                v1::IntervalUnit::Weeks => "w",
                v1::IntervalUnit::Unspecified => "?",
            };
            format!("{}{unit}", interval.every)
        }
    }
}

/// Whether two schedules run at the same times: intervals of the same length in any unit
/// (`2w` and `14d`), the same cron expression up to spacing, or both none.
pub fn same_schedule(a: Option<&v1::SyncSchedule>, b: Option<&v1::SyncSchedule>) -> bool {
    use v1::sync_schedule::Kind;
    fn seconds(interval: &v1::ScheduleInterval) -> Option<u64> {
        let unit = match interval.unit() {
            v1::IntervalUnit::Minutes => MINUTE,
            v1::IntervalUnit::Hours => HOUR,
            v1::IntervalUnit::Days => DAY,
            v1::IntervalUnit::Weeks => WEEK,
            v1::IntervalUnit::Unspecified => return None,
        };
        Some(u64::from(interval.every) * unit)
    }
    match (
        a.and_then(|s| s.kind.as_ref()),
        b.and_then(|s| s.kind.as_ref()),
    ) {
        (None, None) => true,
        (Some(Kind::Interval(a)), Some(Kind::Interval(b))) => {
            seconds(a).is_some() && seconds(a) == seconds(b)
        }
        (Some(Kind::Cron(a)), Some(Kind::Cron(b))) => a.split_whitespace().eq(b.split_whitespace()),
        _ => false,
    }
}

/// A schedule for people: `every 7 days`, `cron 0 3 * * 0 (UTC)`, `manual only`.
pub fn describe_schedule(schedule: Option<&v1::SyncSchedule>) -> String {
    use v1::sync_schedule::Kind;
    match schedule.and_then(|s| s.kind.as_ref()) {
        None => "manual only (no schedule)".to_owned(),
        Some(Kind::Cron(expression)) => format!("cron {expression} (UTC)"),
        Some(Kind::Interval(interval)) => {
            let unit = match interval.unit() {
                v1::IntervalUnit::Minutes => "minute",
                v1::IntervalUnit::Hours => "hour",
                v1::IntervalUnit::Days => "day",
                v1::IntervalUnit::Weeks => "week",
                v1::IntervalUnit::Unspecified => "(unknown unit)",
            };
            match interval.every {
                1 => format!("every {unit}"),
                n => format!("every {n} {unit}s"),
            }
        }
    }
}

/// A change-log position as operators read and type it: `log-id:sequence`. A position
/// inside a snapshot (never a file's base or target) says so.
pub fn anchor_text(anchor: &v1::Anchor) -> String {
    match anchor.snapshot_through {
        None => format!("{}:{}", anchor.log_id, anchor.sequence),
        Some(_) => format!("{}:{} (inside a snapshot)", anchor.log_id, anchor.sequence),
    }
}

/// `--since-anchor`: `log-id:sequence`, as [`anchor_text`] writes it.
pub fn parse_anchor(text: &str) -> Result<v1::Anchor, String> {
    let refuse = |why: &str| {
        format!(
            "`{text}` is not a change-log position: {why}; write LOG_ID:SEQUENCE as `export \
             inspect` prints a file's target"
        )
    };
    let (log_id, sequence) = text
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| refuse("there is no `:`"))?;
    if log_id.is_empty() {
        return Err(refuse("the log id is empty"));
    }
    let sequence = sequence
        .parse()
        .map_err(|_| refuse("the sequence is not a whole number"))?;
    Ok(v1::Anchor {
        log_id: log_id.to_owned(),
        sequence,
        snapshot_through: None,
    })
}

/// The last second of the day `date` (`YYYY-MM-DD`, UTC), given as `flag`.
pub fn end_of_day(date: &str, flag: &str) -> anyhow::Result<time::OffsetDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date, &format)
        .map_err(|e| anyhow::anyhow!("{flag} {date}: not a date as YYYY-MM-DD ({e})"))?;
    Ok(day
        .with_hms(23, 59, 59)
        .expect("23:59:59 is a time")
        .assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_read_back_as_they_are_written() {
        let anchor = parse_anchor("0b1c8e3a-7d1e-4e55-9a59-3c2e0b0d8f11:40").unwrap();
        assert_eq!(anchor.log_id, "0b1c8e3a-7d1e-4e55-9a59-3c2e0b0d8f11");
        assert_eq!(anchor.sequence, 40);
        assert_eq!(parse_anchor(&anchor_text(&anchor)), Ok(anchor));
        for bad in ["", "log", ":5", "log:", "log:-1", "log:x"] {
            assert!(parse_anchor(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_parse() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("60m"), Ok(3600));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("7d"), Ok(7 * 86_400));
        assert_eq!(secs("2w"), Ok(14 * 86_400));
        assert_eq!(secs("0s"), Ok(0));
        for bad in ["", "h", "10", "10x", "1.5h", "-1h", "99999999999999999999w"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("is not a duration"), "{bad:?}: {error}");
        }
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_interval("0s").unwrap_err().contains("at least 1s"));
        assert!(parse_interval("2").is_err());
    }

    #[test]
    fn durations_format_compactly() {
        let f = |s| format_duration(Duration::from_secs(s));
        assert_eq!(f(3600), "1h");
        assert_eq!(f(5400), "1h30m");
        assert_eq!(f(7 * 86_400), "7d");
        assert_eq!(f(45), "45s");
        assert_eq!(f(0), "0s");
        for text in ["1h30m", "7d", "45s", "1d2h3m4s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn when_is_a_time_or_a_duration_ago() {
        let now = Timestamp::parse_iso8601("2025-01-31T10:00:00Z").unwrap();
        assert_eq!(
            parse_when("1h", now).unwrap().to_string(),
            "2025-01-31T09:00:00Z"
        );
        assert_eq!(
            parse_when("2025-01-30T08:00:00+01:00", now)
                .unwrap()
                .to_string(),
            "2025-01-30T07:00:00Z"
        );
        assert!(
            parse_when("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn times_print_as_rfc3339() {
        let wire = prost_types::Timestamp {
            seconds: 1_738_317_600,
            nanos: 250_000_000,
        };
        assert_eq!(rfc3339(&wire), "2025-01-31T10:00:00.25Z");
        assert_eq!(short_time(Some(&wire)), "2025-01-31T10:00:00Z");
        assert_eq!(short_time(None), "-");
        assert_eq!(
            to_the_second("2025-01-31T10:00:00.25Z"),
            "2025-01-31T10:00:00Z"
        );
        assert_eq!(
            to_the_second("2025-01-31T10:00:00.25+01:00"),
            "2025-01-31T10:00:00+01:00"
        );
        assert_eq!(
            to_the_second("2025-01-31T10:00:00Z"),
            "2025-01-31T10:00:00Z"
        );
        let later = prost_types::Timestamp {
            seconds: wire.seconds + 75,
            nanos: 0,
        };
        assert_eq!(between(&wire, &later), Some(Duration::from_millis(74_750)));
        assert_eq!(between(&later, &wire), None);
        let now = timestamp_from_wire(wire).unwrap();
        assert_eq!(relative(&later, now).unwrap(), "in 1m 14s");
    }

    #[test]
    fn schedules_round_trip() {
        for text in [
            "7d",
            "12h",
            "2w",
            "90m",
            "cron:0 3 * * 0",
            "cron:@daily",
            "manual",
        ] {
            let parsed = parse_schedule(text).unwrap();
            assert_eq!(format_schedule(parsed.as_ref()), text);
        }
        let bare = parse_schedule("0  3 * * 0").unwrap();
        assert_eq!(format_schedule(bare.as_ref()), "cron:0 3 * * 0");
        assert_eq!(describe_schedule(bare.as_ref()), "cron 0 3 * * 0 (UTC)");
        assert_eq!(
            describe_schedule(parse_schedule("7d").unwrap().as_ref()),
            "every 7 days"
        );
        assert_eq!(
            describe_schedule(parse_schedule("1w").unwrap().as_ref()),
            "every week"
        );
        let same = |a: &str, b: &str| {
            same_schedule(
                parse_schedule(a).unwrap().as_ref(),
                parse_schedule(b).unwrap().as_ref(),
            )
        };
        assert!(same("2w", "14d"));
        assert!(same("1h", "60m"));
        assert!(same("0 3 * * 0", "cron:0  3 * * 0"));
        assert!(same("manual", "none"));
        assert!(!same("7d", "manual"));
        assert!(!same("7d", "6d"));
        for bad in ["0d", "7y", "d", "1h30m", "cron:0 3 * *", "* * *"] {
            assert!(parse_schedule(bad).is_err(), "{bad:?} accepted");
        }
    }
}
