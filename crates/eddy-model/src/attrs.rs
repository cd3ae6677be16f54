//! Custom attribute values, the operations `/users/track` can apply to them, and their rules.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::{format_iso, parse_date_like, parse_time};

/// Longest string value (custom attribute, nested value, property) Braze keeps.
pub const MAX_STRING_CHARS: usize = 255;
/// Largest nested object or array of objects, serialized.
pub const MAX_OBJECT_BYTES: usize = 100 * 1024;

/// A stored custom attribute value, typed as Braze types it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum AttrValue {
    /// A string of at most 255 characters.
    #[serde(rename = "s")]
    String(String),
    /// An integer (can be incremented).
    #[serde(rename = "i")]
    Int(i64),
    /// A float.
    #[serde(rename = "f")]
    Float(f64),
    /// A boolean.
    #[serde(rename = "b")]
    Bool(bool),
    /// A time, UTC milliseconds.
    #[serde(rename = "d")]
    Time(i64),
    /// An array of scalars, a set in insertion order.
    #[serde(rename = "a")]
    Array(Vec<Value>),
    /// A nested object; dates inside are `{"$time": iso}`.
    #[serde(rename = "o")]
    Object(Map<String, Value>),
    /// An array of objects.
    #[serde(rename = "oa")]
    ObjectArray(Vec<Value>),
}

impl AttrValue {
    /// The value as exports show it.
    pub fn to_json(&self) -> Value {
        match self {
            AttrValue::String(s) => Value::String(s.clone()),
            AttrValue::Int(i) => Value::from(*i),
            AttrValue::Float(f) => Value::from(*f),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Time(ms) => Value::String(format_iso(*ms)),
            AttrValue::Array(items) => Value::Array(items.clone()),
            AttrValue::Object(map) => Value::Object(map.clone()),
            AttrValue::ObjectArray(items) => Value::Array(items.clone()),
        }
    }
}

/// Identifies objects of an array of objects for `$update` and `$remove`.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectMatch {
    /// `$identifier_key`.
    pub key: String,
    /// `$identifier_value`.
    pub value: Value,
}

/// One validated operation on one custom attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomOp {
    /// Replace the value.
    Set(AttrValue),
    /// `null`: remove the attribute.
    Remove,
    /// `{"inc": n}`.
    Inc(i64),
    /// `{"add": […], "remove": […]}` on a scalar array.
    ArrayEdit {
        /// Values to append (or move to the end).
        add: Vec<Value>,
        /// Values to remove.
        remove: Vec<Value>,
    },
    /// A nested object deep-merged into the stored one (`_merge_objects: true`).
    MergeObject(Map<String, Value>),
    /// `{"$add": […]}` on an array of objects.
    ObjectsAdd(Vec<Value>),
    /// `{"$update": […]}` on an array of objects (needs `_merge_objects: true`).
    ObjectsUpdate(Vec<(ObjectMatch, Map<String, Value>)>),
    /// `{"$remove": […]}`: removes every object that matches any entry.
    ObjectsRemove(Vec<ObjectMatch>),
}

impl CustomOp {
    /// True for operations on nested objects, which Braze drops as a group when one is invalid.
    pub fn is_nested(&self) -> bool {
        matches!(
            self,
            CustomOp::Set(AttrValue::Object(_))
                | CustomOp::Set(AttrValue::ObjectArray(_))
                | CustomOp::MergeObject(_)
                | CustomOp::ObjectsAdd(_)
                | CustomOp::ObjectsUpdate(_)
                | CustomOp::ObjectsRemove(_)
        )
    }
}

/// Why a custom attribute value was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomError {
    /// True when the value is a nested object or array of objects.
    pub nested: bool,
    /// The text reported in `errors[].type`.
    pub message: String,
}

fn plain(message: String) -> CustomError {
    CustomError {
        nested: false,
        message,
    }
}

fn nested(name: &str, why: &str) -> CustomError {
    CustomError {
        nested: true,
        message: format!("nested custom attribute '{name}' is invalid: {why}"),
    }
}

/// Validates a custom attribute name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("custom attribute names must be non-empty strings".into());
    }
    if name.chars().count() > MAX_STRING_CHARS {
        return Err(format!(
            "custom attribute name '{}…' is longer than 255 characters",
            truncate(name, 32)
        ));
    }
    if name.starts_with('$') {
        return Err(format!(
            "custom attribute name '{name}' must not start with '$'"
        ));
    }
    Ok(())
}

/// Parses one custom attribute's JSON value into an operation.
pub fn parse_custom(
    name: &str,
    value: &Value,
    merge_objects: bool,
) -> Result<CustomOp, CustomError> {
    check_name(name).map_err(plain)?;
    match value {
        Value::Null => Ok(CustomOp::Remove),
        Value::Bool(b) => Ok(CustomOp::Set(AttrValue::Bool(*b))),
        Value::Number(n) => Ok(CustomOp::Set(number_value(n))),
        Value::String(s) => parse_string(name, s).map(CustomOp::Set),
        Value::Array(items) => parse_array(name, items),
        Value::Object(map) => parse_object(name, map, merge_objects),
    }
}

fn number_value(n: &serde_json::Number) -> AttrValue {
    match n.as_i64() {
        Some(i) => AttrValue::Int(i),
        None => AttrValue::Float(n.as_f64().unwrap_or(0.0)),
    }
}

fn parse_string(name: &str, s: &str) -> Result<AttrValue, CustomError> {
    if s.chars().count() > MAX_STRING_CHARS {
        return Err(plain(format!(
            "custom attribute '{name}' is longer than 255 characters"
        )));
    }
    if let Some(ms) = parse_date_like(s) {
        return Ok(AttrValue::Time(ms));
    }
    Ok(AttrValue::String(s.to_string()))
}

fn parse_array(name: &str, items: &[Value]) -> Result<CustomOp, CustomError> {
    if !items.is_empty() && items.iter().all(Value::is_object) {
        check_object_array(name, items)?;
        return Ok(CustomOp::Set(AttrValue::ObjectArray(items.to_vec())));
    }
    let set = scalar_items(name, items)?;
    Ok(CustomOp::Set(AttrValue::Array(set)))
}

/// Checks array elements are scalars and returns them deduplicated, first occurrence kept.
fn scalar_items(name: &str, items: &[Value]) -> Result<Vec<Value>, CustomError> {
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) if s.chars().count() > MAX_STRING_CHARS => {
                return Err(plain(format!(
                    "custom attribute '{name}' has an array value longer than 255 characters"
                )));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(plain(format!(
                    "custom attribute '{name}' arrays may only hold strings, numbers and booleans"
                )));
            }
        }
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    Ok(out)
}

fn parse_object(
    name: &str,
    map: &Map<String, Value>,
    merge_objects: bool,
) -> Result<CustomOp, CustomError> {
    if map.len() == 1
        && let Some(inc) = map.get("inc")
    {
        return match inc.as_i64() {
            Some(n) => Ok(CustomOp::Inc(n)),
            None => Err(plain(format!(
                "custom attribute '{name}' must be incremented by an integer"
            ))),
        };
    }
    let is_array_edit = !map.is_empty() && map.keys().all(|k| k == "add" || k == "remove");
    if is_array_edit {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for (key, list) in map {
            let Value::Array(items) = list else {
                return Err(plain(format!(
                    "custom attribute '{name}' {key} must be an array"
                )));
            };
            let items = scalar_items(name, items)?;
            if key == "add" {
                add = items;
            } else {
                remove = items;
            }
        }
        return Ok(CustomOp::ArrayEdit { add, remove });
    }
    if map.len() == 1
        && let Some((key, arg)) = map.iter().next()
        && key.starts_with('$')
    {
        return parse_object_array_op(name, key, arg, merge_objects);
    }
    if map.len() == 1
        && let Some(Value::String(t)) = map.get("$time")
    {
        return match parse_time(t) {
            Some(ms) => Ok(CustomOp::Set(AttrValue::Time(ms))),
            None => Err(plain(format!(
                "custom attribute '{name}' has an invalid $time"
            ))),
        };
    }
    let mut normalized = map.clone();
    check_nested(name, &mut normalized, 0)?;
    if serialized_len(&Value::Object(normalized.clone())) > MAX_OBJECT_BYTES {
        return Err(nested(name, "larger than 100 KB"));
    }
    if merge_objects {
        Ok(CustomOp::MergeObject(normalized))
    } else {
        Ok(CustomOp::Set(AttrValue::Object(normalized)))
    }
}

fn parse_object_array_op(
    name: &str,
    op: &str,
    arg: &Value,
    merge_objects: bool,
) -> Result<CustomOp, CustomError> {
    let Value::Array(items) = arg else {
        return Err(nested(name, &format!("{op} must be an array")));
    };
    match op {
        "$add" => {
            if !items.iter().all(Value::is_object) {
                return Err(nested(name, "$add must hold objects"));
            }
            check_object_array(name, items)?;
            Ok(CustomOp::ObjectsAdd(items.clone()))
        }
        "$update" => {
            if !merge_objects {
                return Err(nested(name, "$update requires '_merge_objects': true"));
            }
            let mut updates = Vec::with_capacity(items.len());
            for item in items {
                let matcher = object_match(name, item)?;
                let Some(Value::Object(new_object)) = item.get("$new_object") else {
                    return Err(nested(name, "$update entries need a '$new_object' object"));
                };
                let mut new_object = new_object.clone();
                check_nested(name, &mut new_object, 0)?;
                updates.push((matcher, new_object));
            }
            Ok(CustomOp::ObjectsUpdate(updates))
        }
        "$remove" => {
            let mut matchers = Vec::with_capacity(items.len());
            for item in items {
                matchers.push(object_match(name, item)?);
            }
            Ok(CustomOp::ObjectsRemove(matchers))
        }
        _ => Err(nested(name, &format!("unknown operator {op}"))),
    }
}

fn object_match(name: &str, item: &Value) -> Result<ObjectMatch, CustomError> {
    let key = item.get("$identifier_key").and_then(Value::as_str);
    let value = item.get("$identifier_value");
    match (key, value) {
        (Some(key), Some(value)) if !value.is_null() => Ok(ObjectMatch {
            key: key.to_string(),
            value: value.clone(),
        }),
        _ => Err(nested(
            name,
            "entries need '$identifier_key' and '$identifier_value'",
        )),
    }
}

fn check_object_array(name: &str, items: &[Value]) -> Result<(), CustomError> {
    for item in items {
        if let Value::Object(map) = item {
            let mut copy = map.clone();
            check_nested(name, &mut copy, 0)?;
        }
    }
    if serialized_len(&Value::Array(items.to_vec())) > MAX_OBJECT_BYTES {
        return Err(nested(name, "larger than 100 KB"));
    }
    Ok(())
}

/// Validates a nested object in place: key rules, string lengths, `$time` values, no nulls.
fn check_nested(name: &str, map: &mut Map<String, Value>, depth: usize) -> Result<(), CustomError> {
    if depth > 50 {
        return Err(nested(name, "nested too deeply"));
    }
    for (key, value) in map.iter_mut() {
        if key.is_empty() || key.contains(' ') || key.contains('.') || key.starts_with('$') {
            return Err(nested(
                name,
                &format!("key '{key}' must be non-empty without spaces, '.' or a leading '$'"),
            ));
        }
        if key.chars().count() > MAX_STRING_CHARS {
            return Err(nested(name, "keys must be at most 255 characters"));
        }
        check_nested_value(name, value, depth)?;
    }
    Ok(())
}

fn check_nested_value(name: &str, value: &mut Value, depth: usize) -> Result<(), CustomError> {
    match value {
        Value::Null => Err(nested(name, "null values are not allowed inside objects")),
        Value::String(s) if s.chars().count() > MAX_STRING_CHARS => {
            Err(nested(name, "string values must be at most 255 characters"))
        }
        Value::Object(inner) if inner.contains_key("$time") => {
            let parsed = match inner.get("$time") {
                Some(Value::String(t)) if inner.len() == 1 => parse_time(t),
                _ => None,
            };
            match parsed {
                Some(ms) => {
                    inner.insert("$time".into(), Value::String(format_iso(ms)));
                    Ok(())
                }
                None => Err(nested(name, "$time must be a valid time string")),
            }
        }
        Value::Object(inner) => check_nested(name, inner, depth + 1),
        Value::Array(items) => {
            for item in items.iter_mut() {
                check_nested_value(name, item, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

fn truncate(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

/// Deep-merges `patch` into `target`: objects merge key by key, anything else replaces.
pub fn deep_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match (target.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(incoming))
                if !incoming.contains_key("$time") =>
            {
                deep_merge(existing, incoming);
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Counts the leaf keys of an object: Braze bills one data point per key.
pub fn leaf_keys(map: &Map<String, Value>) -> u64 {
    let mut count = 0;
    for value in map.values() {
        match value {
            Value::Object(inner) if !inner.contains_key("$time") => {
                count += leaf_keys(inner).max(1)
            }
            _ => count += 1,
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(v: Value) -> Result<CustomOp, CustomError> {
        parse_custom("attr", &v, false)
    }

    #[test]
    fn scalars() {
        assert_eq!(op(json!(true)), Ok(CustomOp::Set(AttrValue::Bool(true))));
        assert_eq!(op(json!(12)), Ok(CustomOp::Set(AttrValue::Int(12))));
        assert_eq!(op(json!(1.5)), Ok(CustomOp::Set(AttrValue::Float(1.5))));
        assert_eq!(
            op(json!("x")),
            Ok(CustomOp::Set(AttrValue::String("x".into())))
        );
        assert_eq!(op(json!(null)), Ok(CustomOp::Remove));
        assert!(matches!(
            op(json!("2021-12-01")),
            Ok(CustomOp::Set(AttrValue::Time(_)))
        ));
        assert!(matches!(
            op(json!("12/1/2021")),
            Ok(CustomOp::Set(AttrValue::Time(_)))
        ));
        assert!(op(json!("x".repeat(256))).is_err());
        assert!(op(json!("é".repeat(255))).is_ok());
    }

    #[test]
    fn arrays_are_sets() {
        assert_eq!(
            op(json!(["hotdog", "hotdog", "pizza", "hotdog"])),
            Ok(CustomOp::Set(AttrValue::Array(vec![
                json!("hotdog"),
                json!("pizza")
            ])))
        );
        assert!(op(json!([["nested"]])).is_err());
        assert_eq!(
            op(json!({"add": ["a"], "remove": ["b"]})),
            Ok(CustomOp::ArrayEdit {
                add: vec![json!("a")],
                remove: vec![json!("b")]
            })
        );
        assert!(op(json!({"add": "a"})).is_err());
    }

    #[test]
    fn increments() {
        assert_eq!(op(json!({"inc": -3})), Ok(CustomOp::Inc(-3)));
        assert!(op(json!({"inc": 1.5})).is_err());
    }

    #[test]
    fn nested_objects() {
        let ok = op(json!({"brand": "x", "when": {"$time": "2020-05-28"}})).unwrap();
        let CustomOp::Set(AttrValue::Object(map)) = ok else {
            panic!("not an object: {ok:?}")
        };
        assert_eq!(map["when"], json!({"$time": "2020-05-28T00:00:00.000Z"}));
        for bad in [
            json!({"a b": 1}),
            json!({"a.b": 1}),
            json!({"$x": 1}),
            json!({"a": null}),
            json!({"a": {"$time": "nope"}}),
            json!({"a": {"$time": null}}),
        ] {
            let err = op(bad.clone()).unwrap_err();
            assert!(err.nested, "{bad}");
        }
        let merged = parse_custom("attr", &json!({"a": 1}), true).unwrap();
        assert!(matches!(merged, CustomOp::MergeObject(_)));
    }

    #[test]
    fn object_arrays() {
        assert!(matches!(
            op(json!([{"id": 1}, {"id": 2}])),
            Ok(CustomOp::Set(AttrValue::ObjectArray(_)))
        ));
        assert!(matches!(
            op(json!({"$add": [{"id": 3}]})),
            Ok(CustomOp::ObjectsAdd(_))
        ));
        assert!(op(json!({"$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {}}]})).is_err());
        let update = parse_custom(
            "attr",
            &json!({"$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {"b": 2}}]}),
            true,
        );
        assert!(matches!(update, Ok(CustomOp::ObjectsUpdate(_))));
        assert!(matches!(
            op(json!({"$remove": [{"$identifier_key": "id", "$identifier_value": 1}]})),
            Ok(CustomOp::ObjectsRemove(_))
        ));
        assert!(op(json!({"$remove": [{"$identifier_key": "id"}]})).is_err());
    }

    #[test]
    fn names() {
        assert!(parse_custom("", &json!(1), false).is_err());
        assert!(parse_custom("$x", &json!(1), false).is_err());
        assert!(parse_custom("One and Done", &json!(1), false).is_ok());
    }

    #[test]
    fn merge_and_leaves() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": 1})
            .as_object()
            .unwrap()
            .clone();
        let patch = json!({"a": {"b": 9}, "e": 5}).as_object().unwrap().clone();
        deep_merge(&mut target, &patch);
        assert_eq!(
            Value::Object(target.clone()),
            json!({"a": {"b": 9, "c": 2}, "d": 1, "e": 5})
        );
        assert_eq!(leaf_keys(&target), 4);
    }
}
