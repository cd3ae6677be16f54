//! Braze's accepted date and time formats, parsed to UTC milliseconds.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Parses any format Braze accepts for event times and date attributes.
///
/// Accepted: ISO 8601 with an offset or `Z`; `yyyy-MM-ddTHH:mm:ss:SSSZ` (colon before millis);
/// `yyyy-MM-ddTHH:mm:ss`; `yyyy-MM-dd HH:mm:ss`; `yyyy-MM-dd`; `MM/dd/yyyy`;
/// `ddd MM dd HH:mm:ss.TZD YYYY` and its `ddd MMM dd HH:mm:ss TZD YYYY` variant.
/// A value without a zone is UTC; a date without a time is midnight UTC.
pub fn parse_time(input: &str) -> Option<i64> {
    let s = input.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts.as_millisecond());
    }
    if let Some(fixed) = colon_millis(s)
        && let Ok(ts) = fixed.parse::<Timestamp>()
    {
        return Some(ts.as_millisecond());
    }
    if let Some(ms) = parse_civil(s) {
        return Some(ms);
    }
    if let Some(ms) = parse_slash_date(s, '/') {
        return Some(ms);
    }
    for fmt in [
        "%a %m %d %H:%M:%S.%:z %Y",
        "%a %b %d %H:%M:%S %z %Y",
        "%a %b %d %H:%M:%S %Y",
    ] {
        if let Ok(zoned) = jiff::fmt::strtime::parse(fmt, s) {
            if let Ok(ts) = zoned.to_timestamp() {
                return Some(ts.as_millisecond());
            }
            if let Ok(dt) = zoned.to_datetime() {
                return civil_to_ms(dt);
            }
        }
    }
    None
}

/// Parses a string custom attribute that looks like a date ("12-1-2021", "12/1/2021", ISO).
///
/// Braze turns such strings into time attributes unless the year is outside 0..=3000.
pub fn parse_date_like(input: &str) -> Option<i64> {
    let s = input.trim();
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let ms = parse_time(s).or_else(|| parse_slash_date(s, '-'))?;
    let year = Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .year();
    if (0..=3000).contains(&year) {
        Some(ms)
    } else {
        None
    }
}

/// Parses a `YYYY-MM-DD` date of birth, strictly.
pub fn parse_dob(input: &str) -> Option<Date> {
    let b = input.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    input.parse::<Date>().ok()
}

/// Formats milliseconds as ISO 8601 UTC with milliseconds, as Braze's exports do.
pub fn format_iso(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => String::new(),
    }
}

/// Formats milliseconds the way Braze shows `created_at` in exports: `2020-07-10 15:00:00.000 UTC`.
pub fn format_braze_utc(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        Err(_) => String::new(),
    }
}

/// Days since the Unix epoch of a UTC millisecond timestamp, formatted `YYYY-MM-DD`.
pub fn utc_day(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%d").to_string(),
        Err(_) => String::from("1970-01-01"),
    }
}

/// The current time in UTC milliseconds.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Turns `2013-07-16T19:20:45:123Z` into `2013-07-16T19:20:45.123Z`.
fn colon_millis(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() >= 23 && b[10] == b'T' && b[19] == b':' && b[20..23].iter().all(u8::is_ascii_digit) {
        let mut fixed = s.to_string();
        fixed.replace_range(19..20, ".");
        return Some(fixed);
    }
    None
}

fn parse_civil(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 10 {
        let date = s.parse::<Date>().ok()?;
        return civil_to_ms(date.to_datetime(jiff::civil::Time::midnight()));
    }
    if b.len() >= 19 && (b[10] == b'T' || b[10] == b' ') {
        let dt = s.parse::<DateTime>().ok()?;
        return civil_to_ms(dt);
    }
    None
}

/// `MM/dd/yyyy` (or `M-d-yyyy` with `sep = '-'`), midnight UTC.
fn parse_slash_date(s: &str, sep: char) -> Option<i64> {
    let mut parts = s.split(sep);
    let month: i8 = parts.next()?.parse().ok()?;
    let day: i8 = parts.next()?.parse().ok()?;
    let year_part = parts.next()?;
    if parts.next().is_some() || year_part.len() != 4 {
        return None;
    }
    let year: i16 = year_part.parse().ok()?;
    let date = Date::new(year, month, day).ok()?;
    civil_to_ms(date.to_datetime(jiff::civil::Time::midnight()))
}

fn civil_to_ms(dt: DateTime) -> Option<i64> {
    let zoned = dt.to_zoned(TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_373_998_845_000; // 2013-07-16T18:20:45Z

    #[test]
    fn iso_with_offsets() {
        assert_eq!(parse_time("2013-07-16T19:20:45+01:00"), Some(T));
        assert_eq!(parse_time("2013-07-16T18:20:45Z"), Some(T));
        assert_eq!(parse_time("2013-07-16T18:20:45.250Z"), Some(T + 250));
        assert_eq!(
            parse_time("2020-01-24T11:59:02.403+05:30"),
            Some(1_579_847_342_403)
        );
    }

    #[test]
    fn braze_specific_formats() {
        assert_eq!(parse_time("2013-07-16T18:20:45:250Z"), Some(T + 250));
        assert_eq!(parse_time("2013-07-16T18:20:45"), Some(T));
        assert_eq!(parse_time("2013-07-16 18:20:45"), Some(T));
        assert_eq!(
            parse_time("2013-07-16"),
            Some(T - (18 * 3600 + 20 * 60 + 45) * 1000)
        );
        assert_eq!(parse_time("07/16/2013"), parse_time("2013-07-16"));
        assert_eq!(parse_time("Tue Jul 16 19:20:45 +0100 2013"), Some(T));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2013-13-01",
            "2013-02-30",
            "16/07/2013",
            "12345",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn date_like_strings() {
        assert_eq!(parse_date_like("12-1-2021"), parse_time("2021-12-01"));
        assert_eq!(parse_date_like("12/1/2021"), parse_time("2021-12-01"));
        assert_eq!(parse_date_like("hello"), None);
        assert_eq!(parse_date_like("3001-01-01"), None);
    }

    #[test]
    fn dob_is_strict() {
        assert!(parse_dob("1980-12-21").is_some());
        assert!(parse_dob("1980-2-21").is_none());
        assert!(parse_dob("12/21/1980").is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(format_iso(T + 32), "2013-07-16T18:20:45.032Z");
        assert_eq!(format_braze_utc(T), "2013-07-16 18:20:45.000 UTC");
        assert_eq!(utc_day(T), "2013-07-16");
    }
}
