//! The catalog's timeline: the span its documents are dated in, and the date arithmetic and
//! formatting the other parts share.
//!
//! Times are milliseconds since the Unix epoch, in UTC. Every date the generator writes is
//! derived from the seed and this fixed span, never from the clock, so a catalog does not
//! change with the day it is generated.

use time::OffsetDateTime;

pub(super) const DAY_MS: i64 = 86_400_000;
/// 2004-01-01T00:00:00Z.
pub(super) const TIMELINE_START: i64 = 1_072_915_200_000;
/// 2025-06-30T00:00:00Z.
pub(super) const TIMELINE_END: i64 = 1_751_241_600_000;

/// `2005-09-22T00:05:11.471Z`, the form update documents use.
pub(super) fn iso8601(millis: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub(super) fn year_of(millis: i64) -> i32 {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map(|t| t.year())
        .unwrap_or(1970)
}

pub(super) fn year_start(year: i32) -> i64 {
    time::Date::from_calendar_date(year, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
        .unwrap_or(TIMELINE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_has_milliseconds() {
        assert_eq!(iso8601(1_127_347_511_471), "2005-09-22T00:05:11.471Z");
    }
}
