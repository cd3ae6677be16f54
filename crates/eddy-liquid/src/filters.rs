//! Shopify Liquid 5's standard filters, with Ruby's semantics (integer division floors, float
//! math is decimal, `split` drops trailing empties), and Braze's own filters. An unknown filter
//! leaves its input as it is, as lax Liquid does; a wrong number of arguments is Ruby's error.

use std::borrow::Cow;
use std::cmp::Ordering;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::dialect::Dialect;
use crate::markup::{Arity, FilterKind};
use crate::stop::Stop;
use crate::value::{Number, Object, VALUE_BYTES, Value, arith, flatten, to_integer};

/// Applies the filter `name` to `input`.
pub fn apply(
    name: &str,
    kind: FilterKind,
    input: Value,
    mut args: Vec<Cow<'_, Value>>,
    kwargs: Vec<(String, Value)>,
    dialect: &dyn Dialect,
) -> Result<Value, Stop> {
    let (core, (min, max)) = match kind {
        FilterKind::Core(arity) => (true, arity),
        FilterKind::Dialect(arity) => (false, arity),
        FilterKind::Unknown => return Ok(input),
    };
    // Ruby passes keyword arguments as one more positional hash.
    if !kwargs.is_empty() {
        args.push(Cow::Owned(Value::object(kwargs.into_iter().collect())));
    }
    let given = args.len() + 1;
    if given < min || max.is_some_and(|m| given > m) {
        let expected = match max {
            Some(m) if m == min => format!("{min}"),
            Some(m) => format!("{min}..{m}"),
            None => format!("{min}+"),
        };
        return Err(Stop::Error(format!(
            "wrong number of arguments (given {given}, expected {expected})"
        )));
    }
    if !core {
        return dialect.filter(name, input, &args);
    }
    let arg = |i: usize| args.get(i).map(|a| a.as_ref());
    fn s(v: &Value) -> std::borrow::Cow<'_, str> {
        v.as_text()
    }
    Ok(match name {
        "size" => Value::Int(match &input {
            Value::Float(_) | Value::Nil | Value::Bool(_) => 0,
            other => other.size().unwrap_or(0) as i64,
        }),
        "downcase" => Value::Str(match &input {
            Value::Str(text) if text.is_ascii() => text.to_ascii_lowercase(),
            other => s(other).to_lowercase(),
        }),
        "upcase" => Value::Str(match &input {
            Value::Str(text) if text.is_ascii() => text.to_ascii_uppercase(),
            other => s(other).to_uppercase(),
        }),
        "capitalize" => Value::Str(capitalize(&s(&input))),
        "escape" | "h" => match input {
            Value::Nil => Value::Nil,
            // Most text has nothing to escape: it is passed on without a copy.
            Value::Str(text) if !text.contains(['&', '<', '>', '"', '\'']) => Value::Str(text),
            other => Value::Str(escape_html(&s(&other))),
        },
        "escape_once" => Value::Str(escape_once(&s(&input))),
        "url_encode" => match input {
            Value::Nil => Value::Nil,
            other => Value::Str(cgi_escape(&s(&other))),
        },
        "url_decode" => match input {
            Value::Nil => Value::Nil,
            other => Value::Str(cgi_unescape(&s(&other))?),
        },
        "base64_encode" => Value::Str(base64_encode(s(&input).as_bytes(), false)),
        "base64_url_safe_encode" => Value::Str(base64_encode(s(&input).as_bytes(), true)),
        "base64_decode" => Value::Str(
            base64_decode(&s(&input), false)
                .ok_or_else(|| Stop::Error("invalid base64 provided to base64_decode".into()))?,
        ),
        "base64_url_safe_decode" => {
            Value::Str(base64_decode(&s(&input), true).ok_or_else(|| {
                Stop::Error("invalid base64 provided to base64_url_safe_decode".into())
            })?)
        }
        "slice" => slice(&input, &args[0], arg(1))?,
        "truncate" => match input {
            Value::Nil => Value::Nil,
            other => truncate(&s(&other), arg(0), arg(1))?,
        },
        "truncatewords" => match input {
            Value::Nil => Value::Nil,
            other => truncatewords(&s(&other), arg(0), arg(1))?,
        },
        "split" => Value::array(
            ruby_split(&s(&input), &s(&args[0]))
                .into_iter()
                .map(Value::Str)
                .collect(),
        ),
        "strip" => Value::Str(ruby_strip(&s(&input), true, true)),
        "lstrip" => Value::Str(ruby_strip(&s(&input), true, false)),
        "rstrip" => Value::Str(ruby_strip(&s(&input), false, true)),
        "strip_html" => Value::Str(strip_html(&s(&input))),
        "strip_newlines" => Value::Str(s(&input).replace("\r\n", "").replace('\n', "")),
        "newline_to_br" => Value::Str(s(&input).replace("\r\n", "\n").replace('\n', "<br />\n")),
        "join" => {
            let glue = arg(0)
                .map(|g| g.to_string_lossy())
                .unwrap_or_else(|| " ".into());
            let mut out = String::new();
            for (i, item) in iterate(&input).iter().enumerate() {
                if i > 0 {
                    out.push_str(&glue);
                }
                item.to_s(&mut out);
            }
            Value::Str(out)
        }
        "sort" => sort(&input, arg(0), false)?,
        "sort_natural" => sort(&input, arg(0), true)?,
        "where" => where_(&input, &args[0], arg(1))?,
        "uniq" => uniq(&input, arg(0))?,
        "reverse" => {
            let mut items = iterate(&input);
            items.reverse();
            Value::array(items)
        }
        "map" => map(&input, &args[0])?,
        "compact" => compact(&input, arg(0))?,
        "replace" => {
            let with = arg(1).map(|r| r.to_string_lossy()).unwrap_or_default();
            Value::Str(s(&input).replace(s(&args[0]).as_ref(), &with))
        }
        "replace_first" => {
            let with = arg(1).map(|r| r.to_string_lossy()).unwrap_or_default();
            Value::Str(s(&input).replacen(s(&args[0]).as_ref(), &with, 1))
        }
        "replace_last" => Value::Str(replace_last(&s(&input), &s(&args[0]), &s(&args[1]))),
        "remove" => Value::Str(s(&input).replace(s(&args[0]).as_ref(), "")),
        "remove_first" => Value::Str(s(&input).replacen(s(&args[0]).as_ref(), "", 1)),
        "remove_last" => Value::Str(replace_last(&s(&input), &s(&args[0]), "")),
        "append" => Value::Str(s(&input).into_owned() + s(&args[0]).as_ref()),
        "prepend" => Value::Str(s(&args[0]).into_owned() + s(&input).as_ref()),
        "concat" => match args[0].as_ref() {
            Value::Array(more) => {
                let mut items = iterate(&input);
                items.extend(more.iter().cloned());
                Value::array(items)
            }
            _ => {
                return Err(Stop::Error(
                    "concat filter requires an array argument".into(),
                ));
            }
        },
        "date" => crate::dates::date_filter(input, &args[0]),
        "first" => match &input {
            Value::Array(a) => a.first().cloned().unwrap_or_default(),
            Value::Range(a, b) if a <= b => Value::Int(*a),
            Value::Object(o) => o
                .iter()
                .next()
                .map(|(k, v)| Value::array(vec![Value::str(k.clone()), v.clone()]))
                .unwrap_or_default(),
            _ => Value::Nil,
        },
        "last" => match &input {
            Value::Array(a) => a.last().cloned().unwrap_or_default(),
            Value::Range(_, b) => Value::Int(*b),
            _ => Value::Nil,
        },
        "abs" => match Number::from_value(&input) {
            _ if matches!(input, Value::Big(_)) => Value::integer(num_traits::Signed::abs(
                &input.as_integer().unwrap_or_default(),
            )),
            Number::Int(i) => match i.checked_abs() {
                Some(a) => Value::Int(a),
                None => Value::integer(num_bigint::BigInt::from(i).magnitude().clone().into()),
            },
            other => Value::Float(other.as_f64().abs()),
        },
        "plus" => match integer_arith(&input, &args[0], '+') {
            Some(exact) => exact?,
            None => arith(
                Number::from_value(&input),
                Number::from_value(&args[0]),
                '+',
            )
            .to_value(),
        },
        "minus" => match integer_arith(&input, &args[0], '-') {
            Some(exact) => exact?,
            None => arith(
                Number::from_value(&input),
                Number::from_value(&args[0]),
                '-',
            )
            .to_value(),
        },
        "times" => match integer_arith(&input, &args[0], '*') {
            Some(exact) => exact?,
            None => arith(
                Number::from_value(&input),
                Number::from_value(&args[0]),
                '*',
            )
            .to_value(),
        },
        "divided_by" => divide(&input, &args[0])?,
        "modulo" => modulo(&input, &args[0])?,
        "round" => round(&input, arg(0))?,
        // An integer past i64 is its own ceiling and floor.
        "ceil" | "floor" if matches!(input, Value::Big(_)) => input,
        "ceil" => Value::Int(finite(Number::from_value(&input))?.ceil() as i64),
        "floor" => Value::Int(finite(Number::from_value(&input))?.floor() as i64),
        "at_least" | "at_most"
            if matches!(input, Value::Big(_)) || matches!(args[0].as_ref(), Value::Big(_)) =>
        {
            let bound = args[0].as_ref();
            let take_bound = match bound.ruby_cmp(&input) {
                Some(Ordering::Greater) => name == "at_least",
                Some(Ordering::Less) => name == "at_most",
                _ => false,
            };
            if take_bound { bound.clone() } else { input }
        }
        "at_least" | "at_most" => {
            let bound = Number::from_value(&args[0]);
            let value = Number::from_value(&input);
            let take_bound = match bound.as_f64().partial_cmp(&value.as_f64()) {
                Some(Ordering::Greater) => name == "at_least",
                Some(Ordering::Less) => name == "at_most",
                _ => false,
            };
            if take_bound { bound } else { value }.to_value()
        }
        "default" => {
            let allow_false = matches!(
                args.get(1).map(|a| a.as_ref()),
                Some(Value::Object(o)) if o.get("allow_false").is_some_and(Value::truthy)
            );
            let fallback = arg(0).cloned().unwrap_or_else(|| Value::str(""));
            let missing = if allow_false {
                matches!(input, Value::Nil)
            } else {
                !input.truthy()
            };
            if missing || input.is_empty() == Some(true) {
                fallback
            } else {
                input
            }
        }
        _ => {
            debug_assert!(
                false,
                "filter {name} has a core arity but no core implementation"
            );
            input
        }
    })
}

/// (least, most) arguments of Liquid's standard filters, counting the input; `None` for
/// another name.
pub fn arity(name: &str) -> Option<Arity> {
    let one = (1, Some(1));
    let two = (2, Some(2));
    Some(match name {
        "size"
        | "downcase"
        | "upcase"
        | "capitalize"
        | "escape"
        | "h"
        | "escape_once"
        | "url_encode"
        | "url_decode"
        | "base64_encode"
        | "base64_decode"
        | "base64_url_safe_encode"
        | "base64_url_safe_decode"
        | "strip"
        | "lstrip"
        | "rstrip"
        | "strip_html"
        | "strip_newlines"
        | "reverse"
        | "newline_to_br"
        | "first"
        | "last"
        | "abs"
        | "ceil"
        | "floor" => one,
        "slice" => (2, Some(3)),
        "truncate" | "truncatewords" | "default" => (1, Some(3)),
        "split" | "map" | "remove" | "remove_first" | "remove_last" | "append" | "concat"
        | "prepend" | "date" | "plus" | "minus" | "times" | "divided_by" | "modulo"
        | "at_least" | "at_most" => two,
        "join" | "sort" | "sort_natural" | "uniq" | "compact" | "round" => (1, Some(2)),
        "where" | "replace" | "replace_first" => (2, Some(3)),
        "replace_last" => (3, Some(3)),
        _ => return None,
    })
}

/// `InputIterator`: arrays flattened, a hash as one element, nil as nothing.
/// At most how many bytes a filter's result may hold, for the filters whose result can be far
/// larger than what they are given (`replace` multiplies, `join` repeats its glue, a range's
/// elements are made one by one); `None` for the others, whose result is checked once made.
pub fn output_bound(name: &str, input: &Value, args: &[Cow<'_, Value>]) -> Option<usize> {
    // A range is made into its elements by the filters that iterate; an integer prints in at
    // most 20 bytes.
    let elements = |v: &Value| match v {
        Value::Range(a, b) => {
            let count = (i128::from(*b) - i128::from(*a) + 1).clamp(0, usize::MAX as i128);
            (count as usize).saturating_mul(VALUE_BYTES + 20)
        }
        other => other.weight(),
    };
    let arg = |i: usize| args.get(i).map_or(0, |a| elements(a));
    let bound = match name {
        "replace" => {
            let (text, pattern, with) = (elements(input), arg(0), arg(1));
            // An empty pattern matches between every two characters (Ruby's gsub).
            let matches = text.checked_div(pattern).unwrap_or(text + 1);
            text.saturating_add(matches.saturating_mul(with))
        }
        "join" => {
            let count = match input {
                Value::Array(items) => items.len(),
                Value::Range(..) => elements(input) / (VALUE_BYTES + 20),
                _ => 1,
            };
            elements(input).saturating_add(count.saturating_mul(arg(0)))
        }
        // Splitting into characters makes a string slot for each.
        "split" => elements(input).saturating_mul(VALUE_BYTES + 1),
        "sort" | "sort_natural" | "where" | "uniq" | "reverse" | "map" | "compact" | "concat"
            if matches!(input, Value::Range(..))
                || args.iter().any(|a| matches!(a.as_ref(), Value::Range(..))) =>
        {
            elements(input).saturating_add(arg(0))
        }
        _ => return None,
    };
    Some(bound)
}

fn iterate(input: &Value) -> Vec<Value> {
    match input {
        Value::Array(items) => flatten(items).into_iter().cloned().collect(),
        Value::Nil => Vec::new(),
        Value::Range(..) => input.to_items(),
        other => vec![other.clone()],
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.as_str().to_lowercase().chars())
            .collect(),
        None => String::new(),
    }
}

/// `CGI.escapeHTML`.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        out.push_str(entity);
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out
}

/// `["><']|&(?!([a-zA-Z]+|(#\d+));)` escaped.
fn escape_once(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => out.push_str("&quot;"),
            b'<' => out.push_str("&lt;"),
            b'>' => out.push_str("&gt;"),
            b'\'' => out.push_str("&#39;"),
            b'&' => {
                let rest = &s[i + 1..];
                let letters = rest.bytes().take_while(|c| c.is_ascii_alphabetic()).count();
                let entity = if letters > 0 {
                    rest.as_bytes().get(letters) == Some(&b';')
                } else if let Some(number) = rest.strip_prefix('#') {
                    let digits = number.bytes().take_while(|c| c.is_ascii_digit()).count();
                    digits > 0 && number.as_bytes().get(digits) == Some(&b';')
                } else {
                    false
                };
                out.push_str(if entity { "&" } else { "&amp;" });
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    out
}

/// `CGI.escape`: everything but `a-zA-Z0-9_.-~` percent-encoded, spaces as `+`.
pub fn cgi_escape(s: &str) -> String {
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    // A space is encoded as `%20` first; a `%20` in the input itself became `%2520`.
    utf8_percent_encode(s, ESCAPED)
        .to_string()
        .replace("%20", "+")
}

/// `CGI.unescape`: `+` is a space, `%XX` a byte; the bytes must be UTF-8.
fn cgi_unescape(s: &str) -> Result<String, Stop> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| Stop::Error("invalid byte sequence in UTF-8".into()))
}

/// Ruby's `Base64.strict_encode64` and `urlsafe_encode64` (padded, both).
pub fn base64_encode(bytes: &[u8], url_safe: bool) -> String {
    use base64::Engine as _;
    if url_safe {
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Ruby's `Base64.strict_decode64` (padding required) and `urlsafe_decode64` (padding
/// optional); both refuse stray bits in the last character, as Ruby's strict unpacking does.
fn base64_decode(s: &str, url_safe: bool) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(if url_safe {
        DecodePaddingMode::Indifferent
    } else {
        DecodePaddingMode::RequireCanonical
    });
    let alphabet = if url_safe {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    let bytes = GeneralPurpose::new(alphabet, config).decode(s).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn slice(input: &Value, offset: &Value, length: Option<&Value>) -> Result<Value, Stop> {
    let offset = to_integer(offset)?;
    let length = match length {
        Some(l) => to_integer(l)?,
        None => 1,
    };
    let window = |len: usize| -> Option<(usize, usize)> {
        let len = len as i64;
        let start = if offset < 0 { len + offset } else { offset };
        if start < 0 || start > len || length < 0 {
            return None;
        }
        let end = start.saturating_add(length).min(len);
        Some((start as usize, end as usize))
    };
    Ok(match input {
        Value::Array(items) => match window(items.len()) {
            Some((a, b)) => Value::array(items[a..b].to_vec()),
            None => Value::array(Vec::new()),
        },
        other => {
            let chars: Vec<char> = other.to_string_lossy().chars().collect();
            match window(chars.len()) {
                Some((a, b)) => Value::Str(chars[a..b].iter().collect()),
                None => Value::str(""),
            }
        }
    })
}

fn truncate(input: &str, length: Option<&Value>, ending: Option<&Value>) -> Result<Value, Stop> {
    let length = match length {
        Some(l) => to_integer(l)?,
        None => 50,
    };
    let ending = ending
        .map(|e| e.to_string_lossy())
        .unwrap_or_else(|| "...".into());
    let chars = |t: &str| {
        if t.is_ascii() {
            t.len()
        } else {
            t.chars().count()
        }
    };
    if (chars(input) as i64) <= length {
        return Ok(Value::str(input));
    }
    let keep = (length - chars(&ending) as i64).max(0) as usize;
    let cut = if input.is_ascii() {
        keep.min(input.len())
    } else {
        input
            .char_indices()
            .nth(keep)
            .map_or(input.len(), |(i, _)| i)
    };
    let mut out = String::with_capacity(cut + ending.len());
    out.push_str(&input[..cut]);
    out.push_str(&ending);
    Ok(Value::Str(out))
}

fn truncatewords(
    input: &str,
    words: Option<&Value>,
    ending: Option<&Value>,
) -> Result<Value, Stop> {
    let words = match words {
        Some(w) => to_integer(w)?,
        None => 15,
    }
    .max(1) as usize;
    let ending = ending
        .map(|e| e.to_string_lossy())
        .unwrap_or_else(|| "...".into());
    let list: Vec<&str> = input.split_ascii_whitespace().take(words + 1).collect();
    if list.len() <= words {
        return Ok(Value::str(input));
    }
    let mut out = list[..words].join(" ");
    out.push_str(&ending);
    Ok(Value::Str(out))
}

/// Ruby's `String#split(pattern)`: `" "` splits on whitespace runs, `""` into characters,
/// trailing empty strings are dropped.
pub fn ruby_split(input: &str, pattern: &str) -> Vec<String> {
    let mut parts: Vec<String> = if pattern == " " {
        input.split_ascii_whitespace().map(str::to_string).collect()
    } else if pattern.is_empty() {
        input.chars().map(|c| c.to_string()).collect()
    } else {
        input.split(pattern).map(str::to_string).collect()
    };
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts
}

fn ruby_strip(s: &str, left: bool, right: bool) -> String {
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | '\0');
    let mut t = s;
    if left {
        t = t.trim_start_matches(ws);
    }
    if right {
        t = t.trim_end_matches(ws);
    }
    t.to_string()
}

fn strip_html(s: &str) -> String {
    let mut text = s.to_string();
    for (open, close) in [
        ("<script", "</script>"),
        ("<!--", "-->"),
        ("<style", "</style>"),
    ] {
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find(open) {
            match rest[start + open.len()..].find(close) {
                Some(end) => {
                    out.push_str(&rest[..start]);
                    rest = &rest[start + open.len() + end + close.len()..];
                }
                None => break,
            }
        }
        out.push_str(rest);
        text = out;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find('<') {
        match rest[start..].find('>') {
            Some(end) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + end + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn replace_last(input: &str, pattern: &str, replacement: &str) -> String {
    match input.rfind(pattern) {
        Some(at) => format!(
            "{}{replacement}{}",
            &input[..at],
            &input[at + pattern.len()..]
        ),
        None => input.to_string(),
    }
}

/// `item[property]` as Ruby answers it for the array filters: a hash by key, a string by
/// substring; arrays and integers raise (`cannot select the property`); `Ok(None)` for values
/// without `[]` (nil, floats, booleans, ranges), which makes `where`, `uniq`, `compact` and
/// `sort` answer nil and `map` give nil for that element.
fn property_of(item: &Value, property: &Value) -> Result<Option<Value>, Stop> {
    match item {
        Value::Object(o) => Ok(Some(match property {
            Value::Str(k) => o.get(k).cloned().unwrap_or_default(),
            _ => Value::Nil,
        })),
        Value::Str(s) => Ok(Some(match property {
            Value::Str(p) if s.contains(p.as_str()) => Value::Str(p.clone()),
            _ => Value::Nil,
        })),
        Value::Array(_) | Value::Int(_) | Value::Big(_) => Err(Stop::Error(format!(
            "cannot select the property '{}'",
            property.to_string_lossy()
        ))),
        Value::Nil | Value::Bool(_) | Value::Float(_) | Value::Range(..) => Ok(None),
    }
}

fn sort(input: &Value, property: Option<&Value>, natural: bool) -> Result<Value, Stop> {
    let mut items = iterate(input);
    if items.is_empty() {
        return Ok(Value::array(Vec::new()));
    }
    let keys: Vec<Value> = match &property {
        None => items.clone(),
        Some(p) => {
            let mut keys = Vec::with_capacity(items.len());
            for item in &items {
                match property_of(item, p)? {
                    Some(k) => keys.push(k),
                    None => return Ok(Value::Nil),
                }
            }
            keys
        }
    };
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut failed = false;
    // Ruby's sort is not stable; eddy's is, which only differs among equal keys.
    order.sort_by(|&a, &b| {
        let (x, y) = (&keys[a], &keys[b]);
        if natural {
            return match (x, y) {
                (Value::Nil, Value::Nil) => Ordering::Equal,
                (Value::Nil, _) => Ordering::Greater,
                (_, Value::Nil) => Ordering::Less,
                _ => x
                    .to_string_lossy()
                    .to_ascii_lowercase()
                    .cmp(&y.to_string_lossy().to_ascii_lowercase()),
            };
        }
        match x.ruby_cmp(y) {
            Some(o) => o,
            None if matches!(x, Value::Nil) => Ordering::Greater,
            None if matches!(y, Value::Nil) => Ordering::Less,
            None => {
                failed = true;
                Ordering::Equal
            }
        }
    });
    if failed {
        return Err(Stop::Error(
            "cannot sort values of incompatible types".into(),
        ));
    }
    let sorted = order
        .into_iter()
        .map(|i| std::mem::take(&mut items[i]))
        .collect();
    Ok(Value::array(sorted))
}

fn where_(input: &Value, property: &Value, target: Option<&Value>) -> Result<Value, Stop> {
    let items = iterate(input);
    let mut out = Vec::new();
    for item in items {
        let Some(value) = property_of(&item, property)? else {
            return Ok(Value::Nil);
        };
        let keep = match &target {
            None | Some(Value::Nil) => value.truthy(),
            Some(t) => value.liquid_eq(t) && same_kind(&value, t),
        };
        if keep {
            out.push(item);
        }
    }
    Ok(Value::array(out))
}

/// Ruby's `==` between a string and a number is false even when they print alike.
fn same_kind(a: &Value, b: &Value) -> bool {
    !matches!(
        (a, b),
        (
            Value::Str(_),
            Value::Int(_) | Value::Big(_) | Value::Float(_)
        ) | (
            Value::Int(_) | Value::Big(_) | Value::Float(_),
            Value::Str(_)
        )
    )
}

/// A key equal for values Ruby's `uniq` takes as the same (`eql?`: 1 and 1.0 differ).
fn identity(v: &Value) -> String {
    let mut key = String::from(v.class_name());
    key.push(':');
    v.inspect(&mut key);
    key
}

fn uniq(input: &Value, property: Option<&Value>) -> Result<Value, Stop> {
    let items = iterate(input);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for item in items {
        let key = match &property {
            None => identity(&item),
            Some(p) => match property_of(&item, p)? {
                Some(v) => identity(&v),
                None => return Ok(Value::Nil),
            },
        };
        if seen.insert(key) {
            out.push(item);
        }
    }
    Ok(Value::array(out))
}

fn map(input: &Value, property: &Value) -> Result<Value, Stop> {
    let mut out = Vec::new();
    for item in iterate(input) {
        out.push(property_of(&item, property)?.unwrap_or_default());
    }
    Ok(Value::array(out))
}

fn compact(input: &Value, property: Option<&Value>) -> Result<Value, Stop> {
    let mut out = Vec::new();
    for item in iterate(input) {
        let missing = match &property {
            None => matches!(item, Value::Nil),
            Some(p) => match property_of(&item, p)? {
                Some(v) => matches!(v, Value::Nil),
                None => return Ok(Value::Nil),
            },
        };
        if !missing {
            out.push(item);
        }
    }
    Ok(Value::array(out))
}

/// `+`, `-`, `*` of two integers (Integers, or strings of digits) as Ruby makes them, of any
/// size; `None` when an operand is not an integer (the decimal and float rules apply).
fn integer_arith(a: &Value, b: &Value, op: char) -> Option<Result<Value, Stop>> {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let fits = match op {
            '+' => x.checked_add(*y),
            '-' => x.checked_sub(*y),
            _ => x.checked_mul(*y),
        };
        if let Some(r) = fits {
            return Some(Ok(Value::Int(r)));
        }
    }
    // Past i64, a big operand, or a string of digits: exact, as Ruby's Integer, up to a size
    // no template needs (past it, a multiplication alone could take the render's time).
    let (x, y) = (a.as_integer()?, b.as_integer()?);
    if x.bits() + y.bits() > MAX_INTEGER_BITS {
        return Some(Err(Stop::Fatal(format!(
            "an integer past {MAX_INTEGER_BITS} bits"
        ))));
    }
    Some(Ok(Value::integer(match op {
        '+' => x + y,
        '-' => x - y,
        _ => x * y,
    })))
}

/// The largest integer arithmetic makes, in bits (about 20,000 decimal digits).
pub const MAX_INTEGER_BITS: u64 = 1 << 16;

/// `divided_by` and `modulo` of two integers when one is past i64 (floored, as Ruby's).
fn big_division(a: &Value, b: &Value, modulo: bool) -> Option<Result<Value, Stop>> {
    if !matches!(a, Value::Big(_)) && !matches!(b, Value::Big(_)) {
        return None;
    }
    let (x, y) = (a.as_integer()?, b.as_integer()?);
    if num_traits::Zero::is_zero(&y) {
        return Some(Err(Stop::Error("divided by 0".into())));
    }
    Some(Ok(Value::integer(if modulo {
        num_integer::Integer::mod_floor(&x, &y)
    } else {
        num_integer::Integer::div_floor(&x, &y)
    })))
}

fn divide(input: &Value, operand: &Value) -> Result<Value, Stop> {
    if let Some(exact) = big_division(input, operand, false) {
        return exact;
    }
    let (a, b) = (Number::from_value(input), Number::from_value(operand));
    // Only integer division by zero raises; BigDecimal's gives Infinity or NaN.
    if matches!((a, b), (Number::Int(_), Number::Int(0))) {
        return Err(Stop::Error("divided by 0".into()));
    }
    Ok(match (a, b) {
        (Number::Int(x), Number::Int(y)) => {
            let q = x.wrapping_div(y);
            let floored = x % y != 0 && ((x < 0) != (y < 0));
            Value::Int(if floored { q - 1 } else { q })
        }
        _ => decimal_divide(a, b)
            .map(|n| n.to_value())
            .unwrap_or_else(|| Value::Float(a.as_f64() / b.as_f64())),
    })
}

/// Division as BigDecimal does it: exact to 20 and more significant digits, then to a float
/// (`3.14159 / 10` is 0.314159, not the float quotient 0.31415899999999997).
fn decimal_divide(a: Number, b: Number) -> Option<Number> {
    let ((xm, xs), (ym, ys)) = (decimal_parts(a)?, decimal_parts(b)?);
    if ym == 0 {
        return None;
    }
    // BigDecimal keeps the sign of a zero quotient.
    if xm == 0 && ym < 0 {
        return Some(Number::Float(-0.0));
    }
    for extra in (17..=24).rev() {
        let numerator = 10i128
            .checked_pow(ys + extra)
            .and_then(|p| xm.checked_mul(p));
        let denominator = 10i128.checked_pow(xs).and_then(|p| ym.checked_mul(p));
        if let (Some(n), Some(d)) = (numerator, denominator) {
            return Some(Number::Decimal(n / d, extra));
        }
    }
    None
}

fn modulo(input: &Value, operand: &Value) -> Result<Value, Stop> {
    if let Some(exact) = big_division(input, operand, true) {
        return exact;
    }
    let (a, b) = (Number::from_value(input), Number::from_value(operand));
    if b.as_f64() == 0.0 {
        return Err(Stop::Error("divided by 0".into()));
    }
    Ok(match (a, b) {
        (Number::Int(x), Number::Int(y)) => Value::Int(((x % y) + y) % y),
        _ => match decimal_modulo(a, b) {
            Some(n) => n.to_value(),
            None => {
                let (x, y) = (a.as_f64(), b.as_f64());
                Value::Float(x - y * (x / y).floor())
            }
        },
    })
}

/// `x % y` on exact decimals, with the sign of `y` (Ruby's modulo).
fn decimal_modulo(a: Number, b: Number) -> Option<Number> {
    let ((xm, xs), (ym, ys)) = (decimal_parts(a)?, decimal_parts(b)?);
    let scale = xs.max(ys);
    let x = xm.checked_mul(10i128.checked_pow(scale - xs)?)?;
    let y = ym.checked_mul(10i128.checked_pow(scale - ys)?)?;
    if y == 0 {
        return None;
    }
    Some(Number::Decimal(((x % y) + y) % y, scale))
}

fn decimal_parts(n: Number) -> Option<(i128, u32)> {
    match n {
        Number::Int(i) => Some((i as i128, 0)),
        Number::Decimal(m, s) => Some((m, s)),
        Number::Float(_) => None,
    }
}

fn finite(n: Number) -> Result<f64, Stop> {
    let f = n.as_f64();
    if f.is_nan() {
        return Err(Stop::Error("NaN".into()));
    }
    if f.is_infinite() {
        return Err(Stop::Error(
            if f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        ));
    }
    Ok(f)
}

fn round(input: &Value, digits: Option<&Value>) -> Result<Value, Stop> {
    let places = match &digits {
        Some(d) => match Number::from_value(d) {
            Number::Int(i) => i,
            other => other.as_f64() as i64,
        },
        None => 0,
    };
    let integer_result = matches!(digits, None | Some(Value::Int(0)));
    if matches!(input, Value::Big(_)) && places >= 0 {
        return Ok(input.clone());
    }
    let n = Number::from_value(input);
    let rounded = match n {
        Number::Int(i) if places >= 0 => Value::Int(i),
        Number::Int(i) => {
            let p = 10i64.saturating_pow((-places) as u32);
            let r = (i as f64 / p as f64).round() as i64 * p;
            Value::Int(r)
        }
        // BigDecimal#round answers an Integer for no decimal places.
        Number::Decimal(m, scale) if places <= 0 => {
            Value::Int(round_half_up(m, scale, places) as i64)
        }
        Number::Decimal(m, scale) => Value::Float(round_half_up(m, scale, places)),
        Number::Float(f) => Value::Float(finite(Number::Float(f))?),
    };
    Ok(match (rounded, integer_result) {
        (Value::Float(f), true) => Value::Int(finite(Number::Float(f))? as i64),
        (v, _) => v,
    })
}

/// BigDecimal's ROUND_HALF_UP of `mantissa × 10^-scale` to `places` decimals.
fn round_half_up(mantissa: i128, scale: u32, places: i64) -> f64 {
    let places = places.clamp(-30, 30);
    let drop = scale as i64 - places;
    if drop <= 0 {
        return Number::Decimal(mantissa, scale).as_f64();
    }
    let Some(p) = 10i128.checked_pow(drop as u32) else {
        return 0.0;
    };
    let q = mantissa / p;
    let r = (mantissa % p).abs();
    let q = if r * 2 >= p { q + mantissa.signum() } else { q };
    if places >= 0 {
        Number::Decimal(q, places as u32).as_f64()
    } else {
        (q as f64) * 10f64.powi((-places) as i32)
    }
}

/// Builds an object from pairs (for the filters that answer one).
pub fn object(pairs: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::object(pairs.into_iter().collect::<Object>())
}
