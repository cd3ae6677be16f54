//! Liquid's values and the Ruby semantics Shopify Liquid gives them: what renders as what
//! (`Float#to_s`, `Hash#inspect`), what is truthy (only `nil` and `false` are not), how values
//! compare across types, and how filters read numbers (`Utils.to_number`).

use std::cmp::Ordering;
use std::fmt::Write;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::stop::Stop;

/// The bytes of one value's slot in an array or object.
pub const VALUE_BYTES: usize = std::mem::size_of::<Value>();
/// The bytes an object adds per entry beyond its value (the key's `String` and hash slot).
const ENTRY_BYTES: usize = std::mem::size_of::<String>() + 8;

/// An object's entries, in insertion order (as a Ruby Hash keeps them), with a fast seeded hash.
pub type Object = IndexMap<String, Value, foldhash::fast::RandomState>;

/// A Liquid value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `nil`.
    #[default]
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// An integer outside `i64` (Ruby's integers have no bound); one inside is always `Int`.
    Big(Arc<num_bigint::BigInt>),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// An array (shared: copying a value never copies its elements).
    Array(Arc<Vec<Value>>),
    /// An object (a Ruby Hash), shared likewise.
    Object(Arc<Object>),
    /// An integer range `(a..b)`, both ends included.
    Range(i64, i64),
}

impl Value {
    /// Whether Liquid takes the value as true: everything but `nil` and `false`.
    pub fn truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// An integer value: `Int` when it fits, `Big` otherwise.
    pub fn integer(n: num_bigint::BigInt) -> Value {
        match i64::try_from(&n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Big(Arc::new(n)),
        }
    }

    /// The value as an integer, when Ruby's `Utils.to_number` makes one of it: an Integer, or a
    /// string of digits (any length).
    pub fn as_integer(&self) -> Option<num_bigint::BigInt> {
        match self {
            Value::Int(i) => Some((*i).into()),
            Value::Big(b) => Some(b.as_ref().clone()),
            Value::Str(s) => {
                let digits = s.strip_prefix('-').unwrap_or(s);
                // Longer than arithmetic allows: read as a float, as parsing would cost more
                // than the text is long.
                if digits.is_empty()
                    || digits.len() > 20_000
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                s.parse().ok()
            }
            _ => None,
        }
    }

    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// An array value.
    pub fn array(items: Vec<Value>) -> Value {
        Value::Array(Arc::new(items))
    }

    /// An object value.
    pub fn object(entries: Object) -> Value {
        Value::Object(Arc::new(entries))
    }

    /// The entries of an object value (copied only if shared).
    pub fn into_object(self) -> Option<Object> {
        match self {
            Value::Object(o) => Some(Arc::try_unwrap(o).unwrap_or_else(|shared| (*shared).clone())),
            _ => None,
        }
    }

    /// About how many bytes the value holds beyond its own slot: a string's text, an array's or
    /// object's slots and contents. A range holds none (its elements are counted, not kept).
    pub fn weight(&self) -> usize {
        match self {
            Value::Str(text) => text.len(),
            Value::Array(items) => items.iter().fold(items.len() * VALUE_BYTES, |sum, item| {
                sum.saturating_add(item.weight())
            }),
            Value::Object(entries) => entries.iter().fold(
                entries.len() * (VALUE_BYTES + ENTRY_BYTES),
                |sum, (key, value)| sum.saturating_add(key.len() + value.weight()),
            ),
            Value::Big(b) => b.bits().div_ceil(8) as usize,
            Value::Nil | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Range(..) => 0,
        }
    }

    /// The value as `{{ }}` renders it: nil is nothing, arrays are their elements joined.
    pub fn render(&self, out: &mut String) {
        match self {
            Value::Nil => {}
            Value::Array(items) => {
                for item in flatten(items) {
                    item.to_s(out);
                }
            }
            other => other.to_s(out),
        }
    }

    /// Ruby's `to_s`.
    pub fn to_s(&self, out: &mut String) {
        match self {
            Value::Nil => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::Big(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Float(f) => format_float(*f, out),
            Value::Str(s) => out.push_str(s),
            // Ruby's Array#to_s is #inspect.
            Value::Array(_) | Value::Object(_) => self.inspect(out),
            Value::Range(a, b) => {
                let _ = write!(out, "{a}..{b}");
            }
        }
    }

    /// The value as text (Ruby's `to_s`), borrowed when it is a string.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Value::Str(s) => std::borrow::Cow::Borrowed(s),
            other => std::borrow::Cow::Owned(other.to_string_lossy()),
        }
    }

    /// The value as a string (Ruby's `to_s`).
    pub fn to_string_lossy(&self) -> String {
        let mut out = String::new();
        self.to_s(&mut out);
        out
    }

    /// Ruby's `inspect` (Ruby 3.1 and 3.3: `{"a"=>1}`, `[1, "x", nil]`).
    pub fn inspect(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("nil"),
            Value::Str(s) => inspect_str(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.inspect(out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    inspect_str(k, out);
                    out.push_str("=>");
                    v.inspect(out);
                }
                out.push('}');
            }
            other => other.to_s(out),
        }
    }

    /// Liquid's `size`: characters of a string, elements of an array, entries of an object.
    pub fn size(&self) -> Option<usize> {
        match self {
            Value::Str(s) => Some(s.chars().count()),
            Value::Array(a) => Some(a.len()),
            Value::Object(o) => Some(o.len()),
            Value::Range(a, b) => Some(if b >= a { (b - a + 1) as usize } else { 0 }),
            // Integer#size is its width in bytes.
            Value::Int(_) => Some(8),
            Value::Big(b) => Some(b.bits().div_ceil(8) as usize),
            _ => None,
        }
    }

    /// Ruby's `empty?`, where the value has it.
    pub fn is_empty(&self) -> Option<bool> {
        match self {
            Value::Str(s) => Some(s.is_empty()),
            Value::Array(a) => Some(a.is_empty()),
            Value::Object(o) => Some(o.is_empty()),
            Value::Range(a, b) => Some(b < a),
            _ => None,
        }
    }

    /// ActiveSupport-style `blank?` as Liquid defines it for the `blank` literal.
    pub fn is_blank(&self) -> Option<bool> {
        match self {
            Value::Nil => Some(true),
            Value::Bool(b) => Some(!b),
            Value::Str(s) => Some(s.trim().is_empty()),
            Value::Array(a) => Some(a.is_empty()),
            Value::Object(o) => Some(o.is_empty()),
            _ => None,
        }
    }

    /// The elements a `for` loop or an array filter walks.
    pub fn to_items(&self) -> Vec<Value> {
        match self {
            Value::Array(a) => a.as_ref().clone(),
            Value::Range(a, b) => (*a..=*b).map(Value::Int).collect(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| Value::array(vec![Value::str(k.clone()), v.clone()]))
                .collect(),
            Value::Nil => Vec::new(),
            Value::Str(s) if s.is_empty() => Vec::new(),
            other => vec![other.clone()],
        }
    }

    /// Ruby's `==` as Liquid's conditions use it.
    pub fn liquid_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => {
                (*a as f64) == *b
            }
            (Value::Big(a), Value::Float(b)) | (Value::Float(b), Value::Big(a)) => {
                big_to_f64(a) == *b
            }
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.liquid_eq(y))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.get(k).is_some_and(|w| v.liquid_eq(w)))
            }
            (Value::Range(a, b), Value::Range(c, d)) => a == c && b == d,
            _ => self == other,
        }
    }

    /// Ruby's `<=>` between two values; `None` where Ruby answers nil (incomparable).
    pub fn ruby_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Big(_), Value::Int(_) | Value::Big(_)) | (Value::Int(_), Value::Big(_)) => {
                Some(self.as_integer()?.cmp(&other.as_integer()?))
            }
            (Value::Big(a), Value::Float(b)) => big_to_f64(a).partial_cmp(b),
            (Value::Float(a), Value::Big(b)) => a.partial_cmp(&big_to_f64(b)),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Array(a), Value::Array(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    match x.ruby_cmp(y)? {
                        Ordering::Equal => {}
                        other => return Some(other),
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            (Value::Bool(a), Value::Bool(b)) if a == b => Some(Ordering::Equal),
            (Value::Nil, Value::Nil) => Some(Ordering::Equal),
            _ => None,
        }
    }

    /// Ruby's class name, for error messages.
    pub fn class_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(true) => "true",
            Value::Bool(false) => "false",
            Value::Int(_) | Value::Big(_) => "Integer",
            Value::Float(_) => "Float",
            Value::Str(_) => "String",
            Value::Array(_) => "Array",
            Value::Object(_) => "Hash",
            Value::Range(_, _) => "Range",
        }
    }

    /// Converts JSON into a Liquid value (integers stay integers, objects keep their order).
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::array(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// The value as JSON (ranges become arrays).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            // JSON numbers here are 64-bit: a big integer is its nearest float.
            Value::Big(b) => serde_json::Number::from_f64(big_to_f64(b))
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(Value::to_json).collect()),
            Value::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::Range(a, b) => {
                serde_json::Value::Array((*a..=*b).map(serde_json::Value::from).collect())
            }
        }
    }
}

/// Nested arrays flattened, as `Array#join` walks them.
pub fn flatten(items: &[Value]) -> Vec<&Value> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(inner) => out.extend(flatten(inner)),
            other => out.push(other),
        }
    }
    out
}

fn inspect_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '#' => out.push('#'),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Ruby's `Float#to_s`: the shortest digits that read back to the same float, in fixed
/// notation with at least one decimal between 1e-4 and 1e16, else `1.0e+16`.
pub fn format_float(f: f64, out: &mut String) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f == 0.0 {
        out.push_str(if f.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    let mut buffer = [0u8; 40];
    let (digits, exp) = shortest_digits(f.abs(), &mut buffer);
    if f < 0.0 {
        out.push('-');
    }
    // Ruby: decimal exponent (of 0.ddd form) in -3..=16 prints fixed.
    let decpt = exp + 1;
    if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(digits);
        } else if decpt as usize >= digits.len() {
            out.push_str(digits);
            for _ in 0..(decpt as usize - digits.len()) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt as usize]);
            out.push('.');
            out.push_str(&digits[decpt as usize..]);
        }
        return;
    }
    out.push_str(&digits[..1]);
    out.push('.');
    if digits.len() > 1 {
        out.push_str(&digits[1..]);
    } else {
        out.push('0');
    }
    let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
}

/// The shortest digits that read back as `f` (positive, finite), in `buffer`, and the decimal
/// exponent of the first: 1234.5 → ("12345", 3).
fn shortest_digits(f: f64, buffer: &mut [u8; 40]) -> (&str, i32) {
    let mut ryu_buffer = ryu::Buffer::new();
    let text = ryu_buffer.format_finite(f);
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut len = 0;
    for b in int.bytes().chain(frac.bytes()).take(buffer.len()) {
        buffer[len] = b;
        len += 1;
    }
    // The first significant digit's position relative to the point.
    let leading_zeros = buffer[..len].iter().take_while(|b| **b == b'0').count();
    let exponent = exp + int.len() as i32 - 1 - leading_zeros as i32;
    let mut end = len;
    while end > leading_zeros && buffer[end - 1] == b'0' {
        end -= 1;
    }
    let digits = std::str::from_utf8(&buffer[leading_zeros..end]).unwrap_or("0");
    (if digits.is_empty() { "0" } else { digits }, exponent)
}

/// A number as Liquid's math filters read their operands (`Utils.to_number`): floats are exact
/// decimals (Ruby uses BigDecimal), strings that look like decimals are decimals, other strings
/// are their leading integer, anything else is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// An integer.
    Int(i64),
    /// A decimal `mantissa × 10^-scale`, exact (from a float's shortest digits or a string).
    Decimal(i128, u32),
    /// A float too large for an exact decimal.
    Float(f64),
}

impl Number {
    /// `Utils.to_number` (an integer past `i64` reads as the float nearest it: the integer
    /// filters handle such integers before they get here).
    pub fn from_value(value: &Value) -> Number {
        match value {
            Value::Int(i) => Number::Int(*i),
            Value::Big(b) => Number::Float(big_to_f64(b)),
            Value::Float(f) => decimal_of_float(*f),
            Value::Str(s) => number_of_str(s),
            _ => Number::Int(0),
        }
    }

    /// The number as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Decimal(m, s) => decimal_to_f64(m, s),
            Number::Float(f) => f,
        }
    }

    /// Back to a Liquid value: integers stay integers, decimals become floats.
    pub fn to_value(self) -> Value {
        match self {
            Number::Int(i) => Value::Int(i),
            other => Value::Float(other.as_f64()),
        }
    }

    /// Whether it is an integer.
    pub fn is_int(self) -> bool {
        matches!(self, Number::Int(_))
    }
}

/// The float nearest a big integer.
pub fn big_to_f64(n: &num_bigint::BigInt) -> f64 {
    num_traits::ToPrimitive::to_f64(n).unwrap_or(f64::NAN)
}

fn decimal_to_f64(mantissa: i128, scale: u32) -> f64 {
    // Both exact in a double: one correctly rounded division is the nearest double, as parsing
    // the decimal text would give.
    const EXACT: i128 = 1 << 53;
    if mantissa.abs() < EXACT && scale <= 22 {
        return mantissa as f64 / 10f64.powi(scale as i32);
    }
    // Through the decimal string, so 0.3 reads back as the float nearest 0.3.
    let text = if scale == 0 {
        mantissa.to_string()
    } else {
        let negative = mantissa < 0;
        let digits = mantissa.unsigned_abs().to_string();
        let scale = scale as usize;
        let padded = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale - digits.len() + 1), digits)
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{}{int}.{frac}", if negative { "-" } else { "" })
    };
    text.parse().unwrap_or(0.0)
}

/// The exact decimal a float prints as.
pub fn decimal_of_float(f: f64) -> Number {
    // A decimal has no negative zero; BigDecimal does.
    if !f.is_finite() || (f == 0.0 && f.is_sign_negative()) {
        return Number::Float(f);
    }
    // The shortest decimal that reads back as `f` has the fewest decimal places; for values a
    // double holds exactly scaled, find it without printing.
    let mut scale = 1.0f64;
    for places in 0..=9u32 {
        let m = (f * scale).round();
        if m.abs() < (1u64 << 53) as f64 && m / scale == f {
            return Number::Decimal(m as i128, places);
        }
        scale *= 10.0;
    }
    let mut text = String::new();
    format_float(f, &mut text);
    match parse_decimal(&text) {
        Some((m, s)) => Number::Decimal(m, s),
        None => Number::Float(f),
    }
}

/// `-?\d+\.\d+` (or an integer) to a decimal; exponents are not decimals here.
fn parse_decimal(text: &str) -> Option<(i128, u32)> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 30 {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mantissa: i128 = digits.parse().ok()?;
    Some((
        if negative { -mantissa } else { mantissa },
        frac.len() as u32,
    ))
}

fn number_of_str(s: &str) -> Number {
    let t = s.trim();
    let looks_decimal = {
        let body = t.strip_prefix('-').unwrap_or(t);
        match body.split_once('.') {
            Some((i, f)) => {
                !i.is_empty()
                    && !f.is_empty()
                    && i.bytes().all(|b| b.is_ascii_digit())
                    && f.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        }
    };
    if looks_decimal {
        return match parse_decimal(t) {
            Some((m, sc)) => Number::Decimal(m, sc),
            None => Number::Float(t.parse().unwrap_or(0.0)),
        };
    }
    Number::Int(leading_int(s))
}

/// Ruby's `String#to_i`: optional whitespace, a sign, digits (underscores between digits);
/// 0 when there are none.
pub fn leading_int(s: &str) -> i64 {
    let s = s.trim_start();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    let mut last_digit = false;
    for b in rest.bytes() {
        match b {
            b'0'..=b'9' => {
                value = value.saturating_mul(10).saturating_add((b - b'0') as i64);
                last_digit = true;
            }
            b'_' if last_digit => last_digit = false,
            _ => break,
        }
    }
    if negative { -value } else { value }
}

/// Adds, subtracts or multiplies as Ruby does: integers exactly, decimals exactly.
pub fn arith(a: Number, b: Number, op: char) -> Number {
    use Number::*;
    match (a, b) {
        (Int(x), Int(y)) => {
            let r = match op {
                '+' => x.checked_add(y),
                '-' => x.checked_sub(y),
                _ => x.checked_mul(y),
            };
            match r {
                Some(r) => Int(r),
                None => Float(float_op(x as f64, y as f64, op)),
            }
        }
        (Float(_), _) | (_, Float(_)) => Float(float_op(a.as_f64(), b.as_f64(), op)),
        _ => {
            let (xm, xs) = as_decimal(a);
            let (ym, ys) = as_decimal(b);
            let exact = match op {
                '*' => xm.checked_mul(ym).map(|m| (m, xs + ys)),
                _ => {
                    let scale = xs.max(ys);
                    let xa = xm.checked_mul(10i128.checked_pow(scale - xs).unwrap_or(0));
                    let ya = ym.checked_mul(10i128.checked_pow(scale - ys).unwrap_or(0));
                    match (xa, ya) {
                        (Some(xa), Some(ya)) => if op == '+' {
                            xa.checked_add(ya)
                        } else {
                            xa.checked_sub(ya)
                        }
                        .map(|m| (m, scale)),
                        _ => None,
                    }
                }
            };
            match exact {
                // BigDecimal keeps the sign of a zero product: 0 * -0.25 is -0.0.
                Some((0, _)) if op == '*' && ((xm < 0) != (ym < 0)) => Float(-0.0),
                Some((m, s)) if s <= 36 => Decimal(m, s),
                _ => Float(float_op(a.as_f64(), b.as_f64(), op)),
            }
        }
    }
}

fn as_decimal(n: Number) -> (i128, u32) {
    match n {
        Number::Int(i) => (i as i128, 0),
        Number::Decimal(m, s) => (m, s),
        Number::Float(f) => (f as i128, 0),
    }
}

fn float_op(x: f64, y: f64, op: char) -> f64 {
    match op {
        '+' => x + y,
        '-' => x - y,
        _ => x * y,
    }
}

/// `Utils.to_integer`: integers as they are, anything else through `Integer(to_s)`.
pub fn to_integer(v: &Value) -> Result<i64, Stop> {
    match v {
        Value::Int(i) => Ok(*i),
        other => {
            let s = other.to_string_lossy();
            let t = s.trim();
            let body = t.strip_prefix(['-', '+']).unwrap_or(t);
            if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
                let digits: String = t.chars().filter(|c| *c != '_').collect();
                return digits
                    .parse()
                    .map_err(|_| Stop::Error("invalid integer".into()));
            }
            Err(Stop::Error("invalid integer".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut s = String::new();
        format_float(x, &mut s);
        s
    }

    #[test]
    fn floats_print_as_ruby_prints_them() {
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f(1e16), "1.0e+16");
        assert_eq!(f(1e15), "1000000000000000.0");
        assert_eq!(f(123456.789), "123456.789");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1.0e-05");
        assert_eq!(f(-2.5), "-2.5");
        assert_eq!(f(1.5e300), "1.5e+300");
    }

    #[test]
    fn decimal_arithmetic_is_exact_like_bigdecimal() {
        let a = Number::from_value(&Value::Float(0.1));
        let b = Number::from_value(&Value::Float(0.2));
        assert_eq!(arith(a, b, '+').to_value(), Value::Float(0.3));
        let c = Number::from_value(&Value::str("1.10"));
        assert_eq!(arith(c, Number::Int(3), '*').to_value(), Value::Float(3.3));
        assert_eq!(leading_int(" 12abc"), 12);
        assert_eq!(leading_int("1_000"), 1000);
        assert_eq!(leading_int("abc"), 0);
    }
}
