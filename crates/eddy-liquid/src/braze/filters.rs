//! Braze's filters: hashes and HMACs, URL and JSON escaping, `property_accessor`,
//! `number_with_delimiter`, `time_zone`.

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Digest;

use crate::filters::{base64_encode, cgi_escape};
use crate::markup::Arity;
use crate::stop::Stop;
use crate::value::{Number, Value};

/// (least, most) arguments of Braze's filters, counting the input.
pub fn arity(name: &str) -> Option<Arity> {
    Some(match name {
        "md5"
        | "sha1"
        | "sha2"
        | "url_escape"
        | "url_param_escape"
        | "json_escape"
        | "number_with_delimiter" => (1, Some(1)),
        "hmac_sha1_hex" | "hmac_sha1_base64" | "hmac_sha256_hex" | "hmac_sha256_base64"
        | "property_accessor" | "time_zone" => (2, Some(2)),
        _ => return None,
    })
}

/// Applies one of Braze's filters (arity already checked).
pub fn apply(name: &str, input: Value, args: &[Cow<'_, Value>]) -> Result<Value, Stop> {
    let text = input.to_string_lossy();
    let key = || {
        args.first()
            .map(|a| a.to_string_lossy())
            .unwrap_or_default()
    };
    Ok(match name {
        "md5" => Value::Str(hex::encode(md5::Md5::digest(text.as_bytes()))),
        "sha1" => Value::Str(hex::encode(sha1::Sha1::digest(text.as_bytes()))),
        "sha2" => Value::Str(hex::encode(sha2::Sha256::digest(text.as_bytes()))),
        "hmac_sha1_hex" => Value::Str(hex::encode(hmac_sha1(&key(), &text))),
        "hmac_sha1_base64" => Value::Str(base64_encode(&hmac_sha1(&key(), &text), false)),
        "hmac_sha256_hex" => Value::Str(hex::encode(hmac_sha256(&key(), &text))),
        "hmac_sha256_base64" => Value::Str(base64_encode(&hmac_sha256(&key(), &text), false)),
        "url_escape" => Value::Str(url_escape(&text)),
        "url_param_escape" => Value::Str(cgi_escape(&text).replace('+', "%20")),
        "json_escape" => Value::Str(json_escape(&text)),
        "property_accessor" => match (&input, args.first().map(|a| a.as_ref())) {
            (Value::Object(o), Some(Value::Str(k))) => o.get(k).cloned().unwrap_or_default(),
            _ => Value::Nil,
        },
        "number_with_delimiter" => number_with_delimiter(&input),
        "time_zone" => crate::dates::time_zone_filter(input, &key()),
        _ => input,
    })
}

/// HMAC of the message under the key (HMAC takes keys of any length, so it cannot fail).
fn hmac<M: Mac + KeyInit>(key: &str, message: &str) -> Vec<u8> {
    match <M as KeyInit>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hmac_sha1(key: &str, message: &str) -> Vec<u8> {
    hmac::<Hmac<sha1::Sha1>>(key, message)
}

fn hmac_sha256(key: &str, message: &str) -> Vec<u8> {
    hmac::<Hmac<sha2::Sha256>>(key, message)
}

/// Ruby's `URI::DEFAULT_PARSER.escape`: characters outside the URI's reserved and unreserved
/// sets are percent-encoded; `/ : ? & = #` stay.
fn url_escape(s: &str) -> String {
    const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b';')
        .remove(b'/')
        .remove(b'?')
        .remove(b':')
        .remove(b'@')
        .remove(b'&')
        .remove(b'=')
        .remove(b'+')
        .remove(b'$')
        .remove(b',')
        .remove(b'[')
        .remove(b']')
        .remove(b'#');
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// The text escaped for a JSON string (without the surrounding quotes).
fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// `1234567.891` → `1,234,567.891`.
fn number_with_delimiter(input: &Value) -> Value {
    let text = match input {
        Value::Int(_) | Value::Big(_) | Value::Float(_) => input.to_string_lossy(),
        Value::Str(s)
            if matches!(
                Number::from_value(input),
                Number::Int(_) | Number::Decimal(..)
            ) && !s.trim().is_empty() =>
        {
            s.trim().to_string()
        }
        other => return other.clone(),
    };
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if !int.bytes().all(|b| b.is_ascii_digit()) {
        return input.clone();
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    Value::Str(out)
}
