//! Source cells to the JSON values Braze expects, by column type.

use serde::Deserialize;
use serde_json::{Number, Value};

/// The column types of Braze's partner page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// `true`/`false` (also `t`/`f`, `1`/`0`, `yes`/`no`).
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    /// An instant, sent as ISO-8601 UTC.
    Datetime,
    /// A fixed-point number, sent as a JSON number.
    Decimal,
    /// A floating-point number.
    Float,
    /// A 64-bit integer.
    Integer,
    /// Text.
    String,
    /// Text (Amperity's name for bounded strings).
    Varchar,
}

/// Encodes one non-null cell; the error says what is wrong with it.
pub fn encode(ty: ColumnType, column: &str, text: &str) -> Result<Value, String> {
    let fail = |what: &str| Err(format!("column '{column}': '{text}' is not {what}"));
    match ty {
        ColumnType::Boolean => match parse_bool(text) {
            Some(b) => Ok(Value::Bool(b)),
            None => fail("a boolean"),
        },
        ColumnType::Integer => match text.trim().parse::<i64>() {
            Ok(i) => Ok(Value::from(i)),
            Err(_) => fail("an integer"),
        },
        ColumnType::Float | ColumnType::Decimal => {
            match text.trim().parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) if looks_numeric(text.trim()) => Ok(Value::Number(n)),
                _ => fail("a number"),
            }
        }
        ColumnType::Date => match parse_date(text) {
            Some(d) => Ok(Value::String(d.to_string())),
            None => fail("a date (YYYY-MM-DD)"),
        },
        ColumnType::Datetime => match parse_datetime(text) {
            Some(ts) => Ok(Value::String(format_utc(ts))),
            None => fail("a date and time"),
        },
        ColumnType::String | ColumnType::Varchar => Ok(Value::String(text.to_string())),
    }
}

/// Rust's float parser also takes `inf` and `NaN`; Braze wants plain decimal numbers.
fn looks_numeric(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
}

/// A truthy or falsy cell; `None` when it is neither.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

fn parse_date(text: &str) -> Option<jiff::civil::Date> {
    let text = text.trim();
    if let Ok(d) = text.parse::<jiff::civil::Date>() {
        return Some(d);
    }
    if let Some(ts) = parse_datetime(text) {
        return Some(ts.to_zoned(jiff::tz::TimeZone::UTC).date());
    }
    None
}

/// An instant: RFC 3339 / ISO-8601 with an offset, a civil date-time (taken as UTC), a date
/// (midnight UTC) or epoch seconds.
pub fn parse_datetime(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok());
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    // PostgreSQL prints offsets as `+00`, which RFC 3339 parsers refuse.
    if let Ok(z) = jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S%.f%#z", text)
        && let Ok(ts) = z.to_timestamp()
    {
        return Some(ts);
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    None
}

fn format_utc(ts: jiff::Timestamp) -> String {
    if ts.subsec_nanosecond() == 0 {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// Names users write for Braze's standard fields; such a column becomes a custom attribute.
const LOOKALIKES: &[(&str, &str)] = &[
    ("birthday", "dob"),
    ("birthdate", "dob"),
    ("birth_date", "dob"),
    ("date_of_birth", "dob"),
    ("given_name", "first_name"),
    ("firstname", "first_name"),
    ("surname", "last_name"),
    ("lastname", "last_name"),
    ("family_name", "last_name"),
    ("city", "home_city"),
    ("email_address", "email"),
    ("phone_number", "phone"),
    ("mobile", "phone"),
    ("mobile_phone", "phone"),
    ("sex", "gender"),
    ("timezone", "time_zone"),
    ("tz", "time_zone"),
    ("locale", "language"),
    ("lang", "language"),
    ("country_code", "country"),
];

/// A warning when an attribute name looks like a standard field spelled another way.
pub fn lookalike_warning(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let standard = eddy_model::track::STANDARD_FIELDS;
    if standard.contains(&name) {
        return None;
    }
    if let Some(field) = standard.iter().find(|f| **f == lower) {
        return Some(format!(
            "attribute '{name}' will be a custom attribute: Braze's standard field is '{field}' (lowercase)"
        ));
    }
    let squashed = lower.replace([' ', '-'], "_");
    for (alias, field) in LOOKALIKES {
        if squashed == *alias {
            return Some(format!(
                "attribute '{name}' will be a custom attribute: did you mean Braze's standard field '{field}'?"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(ty: ColumnType, text: &str) -> Value {
        encode(ty, "c", text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn booleans() {
        for t in ["true", "TRUE", "t", "1", "yes", " Y "] {
            assert_eq!(ok(ColumnType::Boolean, t), json!(true), "{t}");
        }
        for t in ["false", "f", "0", "no", "N"] {
            assert_eq!(ok(ColumnType::Boolean, t), json!(false), "{t}");
        }
        assert!(encode(ColumnType::Boolean, "c", "maybe").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(ok(ColumnType::Integer, "42"), json!(42));
        assert_eq!(ok(ColumnType::Integer, "-7"), json!(-7));
        assert!(encode(ColumnType::Integer, "c", "4.2").is_err());
        assert!(encode(ColumnType::Integer, "c", "x").is_err());
        assert_eq!(ok(ColumnType::Decimal, "345.47"), json!(345.47));
        assert_eq!(ok(ColumnType::Float, "1e3"), json!(1000.0));
        for bad in ["NaN", "inf", "-infinity", "1,5", ""] {
            assert!(encode(ColumnType::Float, "c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_and_datetimes() {
        assert_eq!(ok(ColumnType::Date, "1980-12-21"), json!("1980-12-21"));
        assert_eq!(
            ok(ColumnType::Date, "1980-12-21T23:00:00Z"),
            json!("1980-12-21")
        );
        assert!(encode(ColumnType::Date, "c", "21/12/1980").is_err());
        assert!(encode(ColumnType::Date, "c", "1980-02-30").is_err());
        let dt = |t| ok(ColumnType::Datetime, t);
        assert_eq!(dt("2024-05-01T17:03:00Z"), json!("2024-05-01T17:03:00Z"));
        assert_eq!(
            dt("2024-05-01T19:03:00+02:00"),
            json!("2024-05-01T17:03:00Z")
        );
        assert_eq!(dt("2024-05-01 17:03:00+00"), json!("2024-05-01T17:03:00Z"));
        assert_eq!(
            dt("2024-05-01 17:03:00.25+00"),
            json!("2024-05-01T17:03:00.250Z")
        );
        assert_eq!(dt("2024-05-01 17:03:00"), json!("2024-05-01T17:03:00Z"));
        assert_eq!(dt("2024-05-01"), json!("2024-05-01T00:00:00Z"));
        assert_eq!(dt("1714582980"), json!("2024-05-01T17:03:00Z"));
        assert!(encode(ColumnType::Datetime, "c", "yesterday").is_err());
    }

    #[test]
    fn strings_pass_through() {
        assert_eq!(ok(ColumnType::String, " a b "), json!(" a b "));
        assert_eq!(ok(ColumnType::Varchar, "é"), json!("é"));
    }

    #[test]
    fn warns_about_lookalikes_of_standard_fields() {
        assert!(lookalike_warning("dob").is_none());
        assert!(lookalike_warning("L12M_monetary").is_none());
        assert!(lookalike_warning("birthday").unwrap().contains("'dob'"));
        assert!(
            lookalike_warning("Date of Birth")
                .unwrap()
                .contains("'dob'")
        );
        assert!(lookalike_warning("Email").unwrap().contains("lowercase"));
        assert!(lookalike_warning("city").unwrap().contains("home_city"));
    }
}
