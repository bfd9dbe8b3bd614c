//! The request time: SigV4's basic format (`20260101T000000Z`, from
//! `X-Amz-Date` or the query) and HTTP's IMF-fixdate (from `Date`), as
//! seconds since the Unix epoch. The calendar is the `time` crate's; HTTP
//! dates are `httpdate`'s.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcDateTime};

const BASIC_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Seconds since 1970-01-01T00:00:00Z, negative before it.
pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Parses SigV4's `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub(super) fn parse_amz_date(s: &str) -> Option<i64> {
    // The format description alone would also take a signed year; the basic
    // format is exactly sixteen characters of these kinds.
    let shape_ok = s.len() == 16
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let time = PrimitiveDateTime::parse(s, BASIC_FORMAT).ok()?;
    Some(time.assume_utc().unix_timestamp())
}

/// Formats seconds since the epoch as SigV4's `YYYYMMDDTHHMMSSZ`. Times
/// past what the calendar holds (years beyond ±9999, reachable only through
/// an absurd configured skew) are shown as its first or last second.
pub(super) fn format_amz_date(secs: i64) -> String {
    let time = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
        UtcDateTime::MIN.into()
    } else {
        UtcDateTime::MAX.into()
    });
    time.format(BASIC_FORMAT).unwrap_or_default()
}

/// Parses an HTTP `Date` header in the IMF-fixdate form
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form HTTP/1.1 senders use.
/// `httpdate` also reads the two obsolete forms; a date that does not
/// format back to the text received is not IMF-fixdate (or names the wrong
/// weekday), and is refused.
pub(super) fn parse_http_date(s: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(s).ok()?;
    (httpdate::fmt_http_date(time) == s).then(|| unix_seconds(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600;

    #[test]
    fn amz_dates_parse_and_format() {
        assert_eq!(parse_amz_date("20260101T000000Z"), Some(T0));
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(format_amz_date(1_709_251_199), "20240229T235959Z");
        assert_eq!(format_amz_date(-1), "19691231T235959Z");
        for secs in [0, 1, 86_399, 951_782_400, T0, 4_102_444_800] {
            assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
        }
    }

    #[test]
    fn times_past_the_calendar_are_clamped_when_formatted() {
        assert_eq!(format_amz_date(i64::MIN), "-99990101T000000Z");
        assert_eq!(format_amz_date(i64::MAX), "99991231T235959Z");
    }

    #[test]
    fn malformed_amz_dates_are_rejected() {
        for bad in [
            "",
            "20260101",
            "2026-01-01T00:00:00Z",
            "20260101T000000z",
            "20260101 000000Z",
            "20230229T000000Z",
            "20261301T000000Z",
            "20260001T000000Z",
            "20260100T000000Z",
            "20260431T000000Z",
            "20260101T240000Z",
            "20260101T006000Z",
            "20260101T000060Z",
            "2026+101T000000Z",
            "+2026101T000000Z",
            "20260101T00000\u{e9}",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT"), Some(T0));
        for bad in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }
}
