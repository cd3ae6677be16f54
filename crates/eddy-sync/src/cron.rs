//! Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in a
//! time zone, with Vixie cron's rules: names for months and weekdays, `7` is Sunday, and when
//! both day fields are restricted a day matching either runs.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `30 8 * * *`, `*/15 9-17 * * mon-fri`, `@daily` and the like.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "'{expr}' must have five fields: minute hour day-of-month month day-of-week"
            ));
        }
        let mut weekdays = field(parts[4], 0, 7, &WEEKDAYS, "day-of-week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: field(parts[0], 0, 59, &[], "minute")?,
            hours: field(parts[1], 0, 23, &[], "hour")?,
            days: field(parts[2], 1, 31, &[], "day-of-month")?,
            months: field(parts[3], 1, 12, &MONTHS, "month")?,
            weekdays,
            days_restricted: !parts[2].starts_with('*'),
            weekdays_restricted: !parts[4].starts_with('*'),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first run strictly after `after`, in `tz`. A time skipped by a daylight-saving gap
    /// runs just after the gap; a time repeated by a fold runs once.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        // Five years of days is more than any valid expression needs (29 February).
        let limit = start.checked_add(5.years()).ok()?;
        while t <= limit {
            if self.months & (1 << t.month()) == 0 {
                let first = Date::new(t.year(), t.month(), 1).ok()?;
                t = first
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = next_hour(t)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let ts = tz.to_ambiguous_zoned(t).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn next_hour(t: DateTime) -> Option<DateTime> {
    t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()
}

fn field(text: &str, min: u32, max: u32, names: &[&str], what: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let err = || format!("{what} '{part}' is not valid ({min}-{max})");
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| err())?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(err());
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                value(a, min, names).ok_or_else(err)?,
                value(b, min, names).ok_or_else(err)?,
            )
        } else {
            let v = value(range, min, names).ok_or_else(err)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(err());
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, min: u32, names: &[&str]) -> Option<u32> {
    if let Ok(v) = text.parse::<u32>() {
        return Some(v);
    }
    let lower = text.to_ascii_lowercase();
    names
        .iter()
        .position(|n| *n == lower)
        .map(|i| i as u32 + min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        let after: Timestamp = after.parse().unwrap();
        let ts = Cron::parse(expr).unwrap().next_after(after, &tz).unwrap();
        ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M %a").to_string()
    }

    #[test]
    fn daily_and_weekly_in_a_time_zone() {
        assert_eq!(
            next("30 8 * * *", "2026-11-22T07:00:00Z", "UTC"),
            "2026-11-22 08:30 Sun"
        );
        assert_eq!(
            next("30 8 * * *", "2026-11-22T08:30:00Z", "UTC"),
            "2026-11-23 08:30 Mon"
        );
        assert_eq!(
            next("30 8 * * *", "2026-11-22T07:00:00Z", "America/Los_Angeles"),
            "2026-11-22 08:30 Sun"
        );
        assert_eq!(
            next("30 8 * * 1", "2026-11-22T07:00:00Z", "UTC"),
            "2026-11-23 08:30 Mon"
        );
        assert_eq!(
            next("30 8 * * MON", "2026-11-24T07:00:00Z", "UTC"),
            "2026-11-30 08:30 Mon"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-11-22T07:00:00Z", "UTC"),
            "2026-11-29 00:00 Sun"
        );
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2026-11-22T07:01:00Z", "UTC"),
            "2026-11-22 07:15 Sun"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-11-22T07:30:00Z", "UTC"),
            "2026-11-22 07:45 Sun"
        );
        assert_eq!(
            next("0 9-17 * * mon-fri", "2026-11-21T12:00:00Z", "UTC"),
            "2026-11-23 09:00 Mon"
        );
        assert_eq!(
            next("0 0 1,15 * *", "2026-11-02T00:00:00Z", "UTC"),
            "2026-11-15 00:00 Sun"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-11-02T00:00:00Z", "UTC"),
            "2027-01-01 00:00 Fri"
        );
        assert_eq!(
            next("@hourly", "2026-11-22T07:01:00Z", "UTC"),
            "2026-11-22 08:00 Sun"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"),
            "2028-02-29 00:00 Tue"
        );
    }

    #[test]
    fn either_day_field_matches_when_both_are_restricted() {
        // The 13th or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2026-11-01T00:00:00Z", "UTC"),
            "2026-11-06 00:00 Fri"
        );
        assert_eq!(
            next("0 0 13 * 5", "2026-11-12T00:00:00Z", "UTC"),
            "2026-11-13 00:00 Fri"
        );
    }

    #[test]
    fn daylight_saving_gaps_and_folds() {
        // 2026-03-08 02:30 does not exist in New York: it runs at 03:30 local (just after).
        assert_eq!(
            next("30 2 * * *", "2026-03-08T06:00:00Z", "America/New_York"),
            "2026-03-08 03:30 Sun"
        );
        // 2026-11-01 01:30 happens twice: one run, then the next day.
        let tz = TimeZone::get("America/New_York").unwrap();
        let cron = Cron::parse("30 1 * * *").unwrap();
        let first = cron
            .next_after("2026-11-01T04:00:00Z".parse().unwrap(), &tz)
            .unwrap();
        let second = cron.next_after(first, &tz).unwrap();
        assert_eq!(
            second.to_zoned(tz).strftime("%Y-%m-%d %H:%M").to_string(),
            "2026-11-02 01:30"
        );
    }

    #[test]
    fn refuses_invalid_expressions() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
            "* * * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Cron::parse("0 0 31 2 *")
                .unwrap()
                .next_after(Timestamp::UNIX_EPOCH, &TimeZone::UTC)
                .is_none()
        );
    }
}
