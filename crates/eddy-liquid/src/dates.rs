//! The `date` filter (Ruby's `strftime` over what `Time.parse` reads) and Braze's `time_zone`.
//! Times are UTC unless the text carries an offset, as on a server whose zone is UTC (Braze's).

use jiff::Timestamp;
use jiff::Zoned;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};

use crate::value::Value;

/// `date: format`: the input as a time (`now`, epoch seconds, or a date/time text), formatted;
/// anything else is returned as it came.
pub fn date_filter(input: Value, format: &Value) -> Value {
    let format = format.as_text();
    if format.is_empty() {
        return input;
    }
    let Some(time) = to_time(&input) else {
        return input;
    };
    match strftime(&time, &format) {
        Some(text) => Value::Str(text),
        None => input,
    }
}

/// `time_zone: 'America/New_York'`: the time in that zone, as text `date` reads back with its
/// offset (`2024-03-01 07:00:00 -0500`).
pub fn time_zone_filter(input: Value, zone: &str) -> Value {
    let Some(time) = to_time(&input) else {
        return input;
    };
    let Ok(tz) = TimeZone::get(zone) else {
        return input;
    };
    let zoned = time.timestamp().to_zoned(tz);
    match strftime(&zoned, "%Y-%m-%d %H:%M:%S %z") {
        Some(text) => Value::Str(text),
        None => input,
    }
}

/// `Utils.to_date`.
fn to_time(input: &Value) -> Option<Zoned> {
    match input {
        Value::Int(secs) => Timestamp::from_second(*secs)
            .ok()
            .map(|t| t.to_zoned(TimeZone::UTC)),
        Value::Str(s) if s.is_empty() => None,
        Value::Str(s) => {
            let lower = s.to_ascii_lowercase();
            if lower == "now" || lower == "today" {
                return Some(Timestamp::now().to_zoned(TimeZone::UTC));
            }
            if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
                let secs: i64 = lower.parse().ok()?;
                return Timestamp::from_second(secs)
                    .ok()
                    .map(|t| t.to_zoned(TimeZone::UTC));
            }
            parse_time(s.trim())
        }
        _ => None,
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// The formats `Time.parse` reads that templates use: ISO 8601 dates and times (with `T` or a
/// space, fractions, `Z`, `±hh:mm`, `UTC`), `YYYY/MM/DD`, RFC 2822, `Month D, YYYY` and
/// `D Month YYYY`, each with an optional time.
fn parse_time(text: &str) -> Option<Zoned> {
    let mut words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    // A leading weekday (RFC 2822) says nothing.
    if words.first().is_some_and(|w| {
        let l = w.to_ascii_lowercase();
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .iter()
            .any(|d| l.starts_with(d))
    }) {
        words.remove(0);
    }
    let mut date: Option<Date> = None;
    let mut time: Option<Time> = None;
    let mut offset: Option<Offset> = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if date.is_none() {
            if let Some((d, rest)) = iso_date(w) {
                date = Some(d);
                if let Some(rest) = rest {
                    let (t, o) = clock(rest)?;
                    time = Some(t);
                    offset = o.or(offset);
                }
                i += 1;
                continue;
            }
            // Month D YYYY / D Month YYYY
            if let Some(d) = words_date(&words[i..]) {
                date = Some(d);
                i += 3;
                continue;
            }
        }
        if time.is_none()
            && w.contains(':')
            && let Some((t, o)) = clock(w)
        {
            time = Some(t);
            offset = o.or(offset);
            i += 1;
            continue;
        }
        if let Some(o) = zone_word(w) {
            offset = Some(o);
            i += 1;
            continue;
        }
        return None;
    }
    let date = date?;
    let dt = DateTime::from_parts(date, time.unwrap_or(Time::midnight()));
    let tz = match offset {
        Some(o) => TimeZone::fixed(o),
        None => TimeZone::UTC,
    };
    dt.to_zoned(tz).ok()
}

/// `YYYY-MM-DD` or `YYYY/MM/DD`, and what follows a `T`.
fn iso_date(w: &str) -> Option<(Date, Option<&str>)> {
    let (day_part, rest) = match w.find(['T', 't']) {
        Some(at) if at == 10 => (&w[..at], Some(&w[at + 1..])),
        _ => (w, None),
    };
    let sep = if day_part.contains('-') { '-' } else { '/' };
    let mut it = day_part.split(sep);
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || y.len() != 4 {
        return None;
    }
    let date = Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()?;
    Some((date, rest))
}

fn words_date(words: &[&str]) -> Option<Date> {
    if words.len() < 3 {
        return None;
    }
    let month_of = |w: &str| {
        let l = w.to_ascii_lowercase();
        MONTHS
            .iter()
            .position(|m| l.starts_with(m))
            .map(|i| i as i8 + 1)
    };
    let (month, day) = match (month_of(words[0]), month_of(words[1])) {
        (Some(m), _) => (m, words[1].parse::<i8>().ok()?),
        (None, Some(m)) => (m, words[0].parse::<i8>().ok()?),
        _ => return None,
    };
    let year: i16 = words[2].parse().ok()?;
    Date::new(year, month, day).ok()
}

/// `HH:MM[:SS[.fff]]` with an optional `Z` or `±hh:mm` / `±hhmm` glued on.
fn clock(w: &str) -> Option<(Time, Option<Offset>)> {
    let (clock_part, zone) = match w.find(['Z', 'z', '+', '-']) {
        Some(at) => (&w[..at], Some(&w[at..])),
        None => (w, None),
    };
    let mut it = clock_part.split(':');
    let h: i8 = it.next()?.parse().ok()?;
    let m: i8 = it.next()?.parse().ok()?;
    let (s, nanos) = match it.next() {
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let digits: String = frac.chars().take(9).collect();
            let nanos = if digits.is_empty() {
                0
            } else {
                format!("{digits:0<9}").parse::<i32>().ok()?
            };
            (whole.parse::<i8>().ok()?, nanos)
        }
        None => (0, 0),
    };
    let time = Time::new(h, m, s, nanos).ok()?;
    let offset = match zone {
        Some(z) => Some(zone_word(z)?),
        None => None,
    };
    Some((time, offset))
}

fn zone_word(w: &str) -> Option<Offset> {
    match w.to_ascii_uppercase().as_str() {
        "Z" | "UTC" | "GMT" => return Some(Offset::UTC),
        _ => {}
    }
    let (sign, rest) = match w.as_bytes().first()? {
        b'+' => (1, &w[1..]),
        b'-' => (-1, &w[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    Offset::from_seconds(sign * (hours * 3600 + minutes * 60)).ok()
}

/// The widest padding a directive may ask for (`%10d`): Ruby pads to any width, which would let
/// one filter allocate gigabytes; past this the date is left as it was given.
const MAX_PADDING: usize = 1024;

/// The largest width among the format's directives.
fn widest_padding(format: &str) -> usize {
    format
        .split('%')
        .skip(1)
        .map(|directive| {
            let digits: String = directive
                .trim_start_matches(['-', '_', '0', '^', '#'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits
                .parse::<usize>()
                .unwrap_or(if digits.is_empty() { 0 } else { usize::MAX })
        })
        .max()
        .unwrap_or(0)
}

/// Ruby's `strftime`, through jiff's, with Ruby's expansions of `%c`, `%x`, `%X`, `%D` and
/// `%L` (milliseconds); `None` if jiff cannot format it.
fn strftime(time: &Zoned, format: &str) -> Option<String> {
    if widest_padding(format) > MAX_PADDING {
        return None;
    }
    let needs_translation = format.split('%').skip(1).any(|d| {
        d.trim_start_matches(['-', '_', '0', '^', '#'])
            .starts_with(['c', 'x', 'X', 'D', 'L', 'Z'])
    });
    if !needs_translation {
        return jiff::fmt::strtime::format(format, time).ok();
    }
    let mut ruby = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            ruby.push(c);
            continue;
        }
        // Flags and width stay with their directive.
        let mut spec = String::from("%");
        while let Some(&f) = chars.peek() {
            if matches!(f, '-' | '_' | '0' | '^' | '#') || f.is_ascii_digit() {
                spec.push(f);
                chars.next();
            } else {
                break;
            }
        }
        match chars.next() {
            Some('c') => ruby.push_str("%a %b %e %H:%M:%S %Y"),
            Some('x') | Some('D') => ruby.push_str("%m/%d/%y"),
            Some('X') => ruby.push_str("%H:%M:%S"),
            Some('L') => ruby.push_str("%3f"),
            Some('Z') if time.offset() == Offset::UTC => ruby.push_str("UTC"),
            Some('Z') => ruby.push_str("%z"),
            Some(d) => {
                ruby.push_str(&spec);
                ruby.push(d);
            }
            None => ruby.push_str(&spec),
        }
    }
    jiff::fmt::strtime::format(ruby.as_str(), time).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(input: &str, format: &str) -> String {
        date_filter(Value::str(input), &Value::str(format)).to_string_lossy()
    }

    #[test]
    fn reads_the_formats_templates_use() {
        assert_eq!(date("2024-03-05", "%Y/%m/%d"), "2024/03/05");
        assert_eq!(date("2024-03-05T14:07:09Z", "%H:%M:%S"), "14:07:09");
        assert_eq!(date("2024-03-05 14:07:09 -0500", "%H %z"), "14 -0500");
        assert_eq!(date("March 5, 2024", "%b %-d %Y"), "Mar 5 2024");
        assert_eq!(date("Tue, 05 Mar 2024 10:00:00 +0000", "%a %d"), "Tue 05");
        assert_eq!(date("not a date", "%Y"), "not a date");
        assert_eq!(date("0", "%Y-%m-%d"), "1970-01-01");
        assert_eq!(date("2024-03-05", "%5d"), "00005");
        assert_eq!(date("2024-03-05", "%999999999d"), "2024-03-05");
    }

    #[test]
    fn time_zone_keeps_the_offset_for_date() {
        let shifted = time_zone_filter(Value::str("2024-01-15T12:00:00Z"), "America/New_York");
        assert_eq!(shifted.to_string_lossy(), "2024-01-15 07:00:00 -0500");
        assert_eq!(
            date_filter(shifted, &Value::str("%H:%M")).to_string_lossy(),
            "07:00"
        );
    }
}
