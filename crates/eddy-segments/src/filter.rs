//! The segment filter language (nodes `and`/`or`/`not`, attribute, cohort and count leaves; the
//! README's "Segments" lists every operator): parsing with clear errors, and the
//! per-profile predicate that is the oracle every faster evaluation is checked against.

use std::collections::BTreeMap;

use eddy_model::attrs::AttrValue;
use eddy_model::profile::{Occurrences, Profile, RECENT_DAYS, epoch_day};
use eddy_model::time::parse_time;
use serde_json::Value;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// An attribute operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Same value (numbers by value, strings exactly, times by instant).
    Equals,
    /// Not the same value; profiles without the attribute match.
    NotEquals,
    /// Number strictly above.
    GreaterThan,
    /// Number strictly below.
    LessThan,
    /// Number at or above.
    AtLeast,
    /// Number at or below.
    AtMost,
    /// The attribute is set.
    Exists,
    /// The attribute is not set.
    NotExists,
    /// String contains a substring.
    Contains,
    /// String matches a regular expression.
    MatchesRegex,
    /// Array (or cohort list) holds the value.
    IncludesValue,
    /// Time strictly before.
    Before,
    /// Time strictly after.
    After,
    /// Time earlier than N days before now.
    MoreThanDaysAgo,
    /// Time within the last N days.
    LessThanDaysAgo,
}

/// Every operator with its name in the filter language: one table for parsing and for errors.
const OP_NAMES: [(Op, &str); 15] = [
    (Op::Equals, "equals"),
    (Op::NotEquals, "not_equals"),
    (Op::GreaterThan, "greater_than"),
    (Op::LessThan, "less_than"),
    (Op::AtLeast, "at_least"),
    (Op::AtMost, "at_most"),
    (Op::Exists, "exists"),
    (Op::NotExists, "not_exists"),
    (Op::Contains, "contains"),
    (Op::MatchesRegex, "matches_regex"),
    (Op::IncludesValue, "includes_value"),
    (Op::Before, "before"),
    (Op::After, "after"),
    (Op::MoreThanDaysAgo, "more_than_days_ago"),
    (Op::LessThanDaysAgo, "less_than_days_ago"),
];

impl Op {
    fn parse(s: &str) -> Option<Op> {
        OP_NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(op, _)| *op)
    }

    /// The operator's name in the filter language (`greater_than`).
    pub fn name(self) -> &'static str {
        OP_NAMES
            .iter()
            .find(|(op, _)| *op == self)
            .map_or("unknown", |(_, name)| name)
    }
}

/// The operand of an attribute leaf, checked against its operator at parse time.
#[derive(Debug, Clone)]
pub enum Operand {
    /// No operand (`exists`, `not_exists`).
    None,
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// An instant, UTC ms (`before`, `after`).
    Time(i64),
    /// A number of days.
    Days(f64),
    /// A compiled regular expression.
    Regex(regex::Regex),
}

/// `count_at_least` or `count_at_most`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOp {
    /// At least N.
    AtLeast,
    /// At most N (users who never did it match).
    AtMost,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every child matches.
    And(Vec<Filter>),
    /// Any child matches.
    Or(Vec<Filter>),
    /// The child does not match.
    Not(Box<Filter>),
    /// A standard field or custom attribute.
    Attr {
        /// Attribute name.
        name: String,
        /// Operator.
        op: Op,
        /// Operand.
        value: Operand,
    },
    /// `<partner>_cohorts`: the cohorts of a partner the profile belongs to.
    Cohort {
        /// Partner name, e.g. `amplitude`.
        partner: String,
        /// `includes_value`, `exists` or `not_exists` (and their negations).
        op: Op,
        /// The cohort id for `includes_value`.
        cohort_id: Option<String>,
    },
    /// Custom event counts.
    Event {
        /// Event name.
        name: String,
        /// At least or at most.
        op: CountOp,
        /// N.
        count: u64,
        /// Only the last D days (1..=30).
        within_days: Option<i32>,
    },
    /// Purchase counts, of one product or of all.
    Purchase {
        /// Product id, or every product.
        product: Option<String>,
        /// At least or at most.
        op: CountOp,
        /// N.
        count: u64,
        /// Only the last D days (1..=30).
        within_days: Option<i32>,
    },
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;

impl Filter {
    /// Parses and checks a filter.
    pub fn parse(value: &Value) -> Result<Filter, FilterError> {
        parse_node(value, 0)
    }

    /// Every cohort `(partner, cohort_id)` the filter mentions.
    pub fn cohorts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.walk(&mut |f| {
            if let Filter::Cohort {
                partner,
                cohort_id: Some(id),
                ..
            } = f
            {
                out.push((partner.clone(), id.clone()));
            }
        });
        out
    }

    fn walk(&self, visit: &mut impl FnMut(&Filter)) {
        visit(self);
        match self {
            Filter::And(children) | Filter::Or(children) => {
                children.iter().for_each(|c| c.walk(visit))
            }
            Filter::Not(child) => child.walk(visit),
            _ => {}
        }
    }
}

fn parse_node(value: &Value, depth: usize) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return err("nested too deeply");
    }
    let Value::Object(map) = value else {
        return err("each node must be an object");
    };
    if let Some(children) = map.get("and").or_else(|| map.get("or")) {
        if map.len() != 1 {
            return err("'and' and 'or' nodes take no other keys");
        }
        let Value::Array(items) = children else {
            return err("'and' and 'or' take an array");
        };
        if items.is_empty() {
            return err("'and' and 'or' need at least one child");
        }
        let parsed = items
            .iter()
            .map(|c| parse_node(c, depth + 1))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if map.contains_key("and") {
            Filter::And(parsed)
        } else {
            Filter::Or(parsed)
        });
    }
    if let Some(child) = map.get("not") {
        if map.len() != 1 {
            return err("'not' nodes take no other keys");
        }
        return Ok(Filter::Not(Box::new(parse_node(child, depth + 1)?)));
    }
    if map.contains_key("event") || map.contains_key("purchase") {
        return parse_count(map);
    }
    let Some(Value::String(name)) = map.get("attribute") else {
        return err("a leaf needs 'attribute', 'event' or 'purchase'");
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "attribute" | "op" | "value") {
            return err(format!("unknown key '{key}' in an attribute leaf"));
        }
    }
    let Some(op_name) = map.get("op").and_then(Value::as_str) else {
        return err("a leaf needs 'op'");
    };
    let Some(op) = Op::parse(op_name) else {
        return err(format!("unknown operator '{op_name}'"));
    };
    let value = map.get("value").unwrap_or(&Value::Null);
    if let Some(partner) = name.strip_suffix("_cohorts") {
        return parse_cohort(partner, op, value);
    }
    let operand = operand(op, value, name)?;
    Ok(Filter::Attr {
        name: name.clone(),
        op,
        value: operand,
    })
}

fn parse_cohort(partner: &str, op: Op, value: &Value) -> Result<Filter, FilterError> {
    if partner.is_empty() {
        return err("'_cohorts' needs a partner name before it");
    }
    let cohort_id = match op {
        Op::IncludesValue | Op::Equals | Op::NotEquals => match value {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => return err(format!("'{partner}_cohorts' needs a cohort id string")),
        },
        Op::Exists | Op::NotExists => None,
        _ => {
            return err(format!(
                "'{partner}_cohorts' supports includes_value, exists and not_exists"
            ));
        }
    };
    // equals / not_equals on a cohort list read as includes / does not include.
    let base = match op {
        Op::Equals | Op::NotEquals | Op::IncludesValue => Op::IncludesValue,
        other => other,
    };
    let filter = Filter::Cohort {
        partner: partner.to_string(),
        op: base,
        cohort_id,
    };
    Ok(if op == Op::NotEquals {
        Filter::Not(Box::new(filter))
    } else {
        filter
    })
}

fn operand(op: Op, value: &Value, name: &str) -> Result<Operand, FilterError> {
    let bad = |what: &str| err(format!("'{name}' with {} needs {what}", op.name()));
    match op {
        Op::Exists | Op::NotExists => Ok(Operand::None),
        Op::Equals | Op::NotEquals | Op::IncludesValue => match value {
            Value::String(s) => Ok(Operand::Str(s.clone())),
            Value::Number(n) => Ok(Operand::Num(n.as_f64().unwrap_or(0.0))),
            Value::Bool(b) => Ok(Operand::Bool(*b)),
            _ => bad("a string, number or boolean"),
        },
        Op::GreaterThan | Op::LessThan | Op::AtLeast | Op::AtMost => match value.as_f64() {
            Some(n) => Ok(Operand::Num(n)),
            None => bad("a number"),
        },
        Op::Contains => match value {
            Value::String(s) => Ok(Operand::Str(s.clone())),
            _ => bad("a string"),
        },
        Op::MatchesRegex => match value.as_str().map(regex::Regex::new) {
            Some(Ok(re)) => Ok(Operand::Regex(re)),
            Some(Err(e)) => err(format!("'{name}': invalid regular expression: {e}")),
            None => bad("a regular expression string"),
        },
        Op::Before | Op::After => match value.as_str().and_then(parse_time) {
            Some(ms) => Ok(Operand::Time(ms)),
            None => bad("a date or time string"),
        },
        Op::MoreThanDaysAgo | Op::LessThanDaysAgo => match value.as_f64() {
            Some(days) if days >= 0.0 => Ok(Operand::Days(days)),
            _ => bad("a number of days"),
        },
    }
}

fn parse_count(map: &serde_json::Map<String, Value>) -> Result<Filter, FilterError> {
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "event" | "purchase" | "op" | "value" | "within_days"
        ) {
            return err(format!("unknown key '{key}' in an event or purchase leaf"));
        }
    }
    let op = match map.get("op").and_then(Value::as_str) {
        Some("count_at_least") => CountOp::AtLeast,
        Some("count_at_most") => CountOp::AtMost,
        _ => return err("event and purchase leaves take 'count_at_least' or 'count_at_most'"),
    };
    let Some(count) = map.get("value").and_then(Value::as_u64) else {
        return err("event and purchase leaves need a non-negative integer 'value'");
    };
    let within_days = match map.get("within_days") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(d) if (1..=i64::from(RECENT_DAYS)).contains(&d) => Some(d as i32),
            _ => {
                return err(format!(
                    "'within_days' must be an integer from 1 to {RECENT_DAYS}"
                ));
            }
        },
    };
    if let Some(event) = map.get("event") {
        let Some(name) = event.as_str().filter(|s| !s.is_empty()) else {
            return err("'event' must be a name");
        };
        return Ok(Filter::Event {
            name: name.to_string(),
            op,
            count,
            within_days,
        });
    }
    let product = match map.get("purchase") {
        Some(Value::String(p)) if !p.is_empty() => Some(p.clone()),
        Some(Value::Null) => None,
        _ => return err("'purchase' must be a product id or null"),
    };
    Ok(Filter::Purchase {
        product,
        op,
        count,
        within_days,
    })
}

/// A profile value as filters see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// An instant, UTC ms.
    Time(i64),
    /// An array of scalars.
    List(Vec<Value>),
}

/// Standard fields that hold dates, compared as instants.
const DATE_FIELDS: &[&str] = &[
    "dob",
    "date_of_first_session",
    "date_of_last_session",
    "marked_email_as_spam_at",
];

/// A profile value as filters see it, borrowed from the profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValRef<'a> {
    /// A string.
    Str(&'a str),
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// An instant, UTC ms.
    Time(i64),
    /// An array of scalars.
    List(&'a [Value]),
}

impl ValRef<'_> {
    /// An owned copy.
    pub fn to_owned(self) -> Val {
        match self {
            ValRef::Str(s) => Val::Str(s.to_string()),
            ValRef::Num(n) => Val::Num(n),
            ValRef::Bool(b) => Val::Bool(b),
            ValRef::Time(t) => Val::Time(t),
            ValRef::List(items) => Val::List(items.to_vec()),
        }
    }
}

/// Names that are not stored as fields or custom attributes but are filterable.
pub const SPECIAL_ATTRIBUTES: [&str; 4] =
    ["external_id", "braze_id", "created_at", "total_revenue"];

/// The value of a standard field or custom attribute, as filters compare it.
pub fn attribute(profile: &Profile, name: &str) -> Option<Val> {
    attribute_ref(profile, name).map(ValRef::to_owned)
}

/// [`attribute`] without copying.
pub fn attribute_ref<'a>(profile: &'a Profile, name: &str) -> Option<ValRef<'a>> {
    match name {
        "external_id" => return profile.external_id.as_deref().map(ValRef::Str),
        "braze_id" => return Some(ValRef::Str(&profile.braze_id)),
        "created_at" => return Some(ValRef::Time(profile.created_at)),
        "total_revenue" => return Some(ValRef::Num(profile.total_revenue)),
        _ => {}
    }
    if let Some(value) = profile.fields.get(name) {
        if DATE_FIELDS.contains(&name) {
            return value.as_str().and_then(parse_time).map(ValRef::Time);
        }
        return match value {
            Value::String(s) => Some(ValRef::Str(s)),
            Value::Number(n) => n.as_f64().map(ValRef::Num),
            Value::Bool(b) => Some(ValRef::Bool(*b)),
            _ => None,
        };
    }
    match profile.custom.get(name)? {
        AttrValue::String(s) => Some(ValRef::Str(s)),
        AttrValue::Int(i) => Some(ValRef::Num(*i as f64)),
        AttrValue::Float(f) => Some(ValRef::Num(*f)),
        AttrValue::Bool(b) => Some(ValRef::Bool(*b)),
        AttrValue::Time(ms) => Some(ValRef::Time(*ms)),
        AttrValue::Array(items) => Some(ValRef::List(items)),
        // Nested objects are not filterable here.
        AttrValue::Object(_) | AttrValue::ObjectArray(_) => None,
    }
}

/// Calls `visit` with every filterable attribute of a profile.
pub fn for_each_attribute<'a>(profile: &'a Profile, mut visit: impl FnMut(&'a str, ValRef<'a>)) {
    let names = SPECIAL_ATTRIBUTES
        .iter()
        .copied()
        .chain(profile.fields.keys().map(String::as_str))
        .chain(
            profile
                .custom
                .keys()
                .map(String::as_str)
                .filter(|k| !profile.fields.contains_key(*k)),
        );
    for name in names {
        if let Some(value) = attribute_ref(profile, name) {
            visit(name, value);
        }
    }
}

/// Whether an array item equals an operand (strings exactly, numbers by value).
pub fn item_matches(item: &Value, operand: &Operand) -> bool {
    match (item, operand) {
        (Value::String(s), Operand::Str(v)) => s == v,
        (Value::Number(n), Operand::Num(v)) => n.as_f64() == Some(*v),
        (Value::Bool(b), Operand::Bool(v)) => b == v,
        _ => false,
    }
}

/// Whether a value satisfies an attribute leaf at time `now_ms`. `None` is an absent attribute.
pub fn value_matches(value: Option<&Val>, op: Op, operand: &Operand, now_ms: i64) -> bool {
    match op {
        Op::Exists => return value.is_some(),
        Op::NotExists => return value.is_none(),
        Op::NotEquals => return !value_matches(value, Op::Equals, operand, now_ms),
        _ => {}
    }
    let Some(value) = value else { return false };
    match (op, value, operand) {
        (Op::Equals, Val::Str(s), Operand::Str(v)) => s == v,
        (Op::Equals, Val::Num(n), Operand::Num(v)) => n == v,
        (Op::Equals, Val::Bool(b), Operand::Bool(v)) => b == v,
        (Op::Equals, Val::Time(t), Operand::Str(v)) => parse_time(v) == Some(*t),
        (Op::GreaterThan, Val::Num(n), Operand::Num(v)) => n > v,
        (Op::LessThan, Val::Num(n), Operand::Num(v)) => n < v,
        (Op::AtLeast, Val::Num(n), Operand::Num(v)) => n >= v,
        (Op::AtMost, Val::Num(n), Operand::Num(v)) => n <= v,
        (Op::Contains, Val::Str(s), Operand::Str(v)) => s.contains(v.as_str()),
        (Op::MatchesRegex, Val::Str(s), Operand::Regex(re)) => re.is_match(s),
        (Op::IncludesValue, Val::List(items), operand) => {
            items.iter().any(|i| item_matches(i, operand))
        }
        (Op::Before, Val::Time(t), Operand::Time(v)) => t < v,
        (Op::After, Val::Time(t), Operand::Time(v)) => t > v,
        (Op::MoreThanDaysAgo, Val::Time(t), Operand::Days(d)) => {
            (*t as f64) < now_ms as f64 - d * DAY_MS as f64
        }
        (Op::LessThanDaysAgo, Val::Time(t), Operand::Days(d)) => {
            (*t as f64) > now_ms as f64 - d * DAY_MS as f64
        }
        _ => false,
    }
}

/// How many occurrences count for a leaf: all time, or the last `within_days` days.
pub fn occurrences_count(occ: Option<&Occurrences>, within_days: Option<i32>, now_ms: i64) -> u64 {
    match (occ, within_days) {
        (None, _) => 0,
        (Some(o), None) => o.count,
        (Some(o), Some(days)) => o.count_within(epoch_day(now_ms), days),
    }
}

/// Whether a count satisfies a count leaf.
pub fn count_matches(count: u64, op: CountOp, n: u64) -> bool {
    match op {
        CountOp::AtLeast => count >= n,
        CountOp::AtMost => count <= n,
    }
}

/// The oracle: does `profile`, member of `cohorts` (partner → cohort ids), match `filter` at `now_ms`?
pub fn matches(
    filter: &Filter,
    profile: &Profile,
    cohorts: &BTreeMap<String, Vec<String>>,
    now_ms: i64,
) -> bool {
    match filter {
        Filter::And(children) => children
            .iter()
            .all(|c| matches(c, profile, cohorts, now_ms)),
        Filter::Or(children) => children
            .iter()
            .any(|c| matches(c, profile, cohorts, now_ms)),
        Filter::Not(child) => !matches(child, profile, cohorts, now_ms),
        Filter::Attr { name, op, value } => {
            value_matches(attribute(profile, name).as_ref(), *op, value, now_ms)
        }
        Filter::Cohort {
            partner,
            op,
            cohort_id,
        } => {
            let ids = cohorts.get(partner).map(Vec::as_slice).unwrap_or_default();
            match (op, cohort_id) {
                (Op::Exists, _) => !ids.is_empty(),
                (Op::NotExists, _) => ids.is_empty(),
                (_, Some(id)) => ids.contains(id),
                _ => false,
            }
        }
        Filter::Event {
            name,
            op,
            count,
            within_days,
        } => count_matches(
            occurrences_count(profile.events.get(name), *within_days, now_ms),
            *op,
            *count,
        ),
        Filter::Purchase {
            product,
            op,
            count,
            within_days,
        } => {
            let total = match product {
                Some(p) => occurrences_count(profile.purchases.get(p), *within_days, now_ms),
                None => profile
                    .purchases
                    .values()
                    .map(|o| occurrences_count(Some(o), *within_days, now_ms))
                    .sum(),
            };
            count_matches(total, *op, *count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Filter, FilterError> {
        Filter::parse(&v)
    }

    #[test]
    fn parses_every_node() {
        let f = parse(json!({"and": [
            {"attribute": "amplitude_cohorts", "op": "includes_value", "value": "abcd1234"},
            {"attribute": "score", "op": "at_least", "value": 10},
            {"not": {"attribute": "vip", "op": "equals", "value": true}},
            {"or": [{"event": "played", "op": "count_at_least", "value": 2, "within_days": 7},
                    {"purchase": null, "op": "count_at_most", "value": 0}]}
        ]}))
        .unwrap();
        assert_eq!(
            f.cohorts(),
            vec![("amplitude".to_string(), "abcd1234".to_string())]
        );
        // Every node, with every field read as written.
        let Filter::And(children) = &f else {
            panic!("the root is 'and': {f:?}");
        };
        assert_eq!(children.len(), 4);
        assert!(
            matches!(&children[0], Filter::Cohort { partner, op: Op::IncludesValue, cohort_id: Some(id) }
            if partner == "amplitude" && id == "abcd1234")
        );
        assert!(
            matches!(&children[1], Filter::Attr { name, op: Op::AtLeast, value: Operand::Num(n) }
            if name == "score" && *n == 10.0)
        );
        let Filter::Not(inner) = &children[2] else {
            panic!("'not': {:?}", children[2]);
        };
        assert!(
            matches!(inner.as_ref(), Filter::Attr { name, op: Op::Equals, value: Operand::Bool(true) }
            if name == "vip")
        );
        let Filter::Or(either) = &children[3] else {
            panic!("'or': {:?}", children[3]);
        };
        assert!(
            matches!(&either[0], Filter::Event { name, op: CountOp::AtLeast, count: 2, within_days: Some(7) }
            if name == "played")
        );
        assert!(matches!(
            &either[1],
            Filter::Purchase {
                product: None,
                op: CountOp::AtMost,
                count: 0,
                within_days: None
            }
        ));
    }

    #[test]
    fn errors_name_operators_as_the_api_does() {
        let error = parse(json!({"attribute": "score", "op": "greater_than", "value": "x"}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("greater_than"), "{error}");
        for (op, name) in OP_NAMES {
            assert_eq!(Op::parse(name), Some(op));
            assert_eq!(op.name(), name);
        }
    }

    #[test]
    fn refuses_bad_filters_clearly() {
        let cases = [
            (
                json!({"attribute": "x", "op": "nope", "value": 1}),
                "unknown operator 'nope'",
            ),
            (
                json!({"attribute": "x", "op": "greater_than", "value": "a"}),
                "needs a number",
            ),
            (
                json!({"attribute": "x", "op": "matches_regex", "value": "("}),
                "invalid regular expression",
            ),
            (json!({"and": []}), "at least one child"),
            (
                json!({"event": "e", "op": "count_at_least", "value": 1, "within_days": 31}),
                "from 1 to 30",
            ),
            (
                json!({"attribute": "x", "op": "equals", "value": 1, "extra": 2}),
                "unknown key 'extra'",
            ),
            (json!([1]), "must be an object"),
        ];
        for (filter, text) in cases {
            let e = parse(filter.clone()).unwrap_err();
            assert!(e.0.contains(text), "{filter}: {e}");
        }
    }

    fn profile() -> Profile {
        let mut p = Profile::new("b".into(), 0);
        p.external_id = Some("e".into());
        p.fields.insert("first_name".into(), json!("Ada"));
        p.fields.insert("dob".into(), json!("1980-12-21"));
        p.custom.insert("score".into(), AttrValue::Int(12));
        p.custom.insert("vip".into(), AttrValue::Bool(false));
        p.custom
            .insert("tags".into(), AttrValue::Array(vec![json!("a"), json!(2)]));
        p.custom.insert("seen".into(), AttrValue::Time(10 * DAY_MS));
        p
    }

    fn check(filter: Value, now_ms: i64) -> bool {
        let mut cohorts = BTreeMap::new();
        cohorts.insert("amplitude".to_string(), vec!["c1".to_string()]);
        matches(&parse(filter).unwrap(), &profile(), &cohorts, now_ms)
    }

    #[test]
    fn oracle_semantics() {
        assert!(check(
            json!({"attribute": "first_name", "op": "equals", "value": "Ada"}),
            0
        ));
        assert!(check(
            json!({"attribute": "missing", "op": "not_equals", "value": "Ada"}),
            0
        ));
        assert!(check(
            json!({"attribute": "score", "op": "greater_than", "value": 11.5}),
            0
        ));
        assert!(!check(
            json!({"attribute": "score", "op": "less_than", "value": 12}),
            0
        ));
        assert!(check(
            json!({"attribute": "score", "op": "at_most", "value": 12}),
            0
        ));
        assert!(check(
            json!({"attribute": "vip", "op": "equals", "value": false}),
            0
        ));
        assert!(check(
            json!({"attribute": "tags", "op": "includes_value", "value": 2}),
            0
        ));
        assert!(!check(
            json!({"attribute": "tags", "op": "includes_value", "value": "2"}),
            0
        ));
        assert!(check(
            json!({"attribute": "first_name", "op": "contains", "value": "d"}),
            0
        ));
        assert!(check(
            json!({"attribute": "first_name", "op": "matches_regex", "value": "^A.a$"}),
            0
        ));
        assert!(check(
            json!({"attribute": "dob", "op": "before", "value": "1981-01-01"}),
            0
        ));
        assert!(check(
            json!({"attribute": "dob", "op": "equals", "value": "1980-12-21"}),
            0
        ));
        assert!(check(
            json!({"attribute": "seen", "op": "more_than_days_ago", "value": 5}),
            20 * DAY_MS
        ));
        assert!(check(
            json!({"attribute": "seen", "op": "less_than_days_ago", "value": 11}),
            20 * DAY_MS
        ));
        assert!(check(
            json!({"attribute": "amplitude_cohorts", "op": "includes_value", "value": "c1"}),
            0
        ));
        assert!(!check(
            json!({"attribute": "mixpanel_cohorts", "op": "exists"}),
            0
        ));
        assert!(check(
            json!({"attribute": "amplitude_cohorts", "op": "not_equals", "value": "c2"}),
            0
        ));
        assert!(check(
            json!({"event": "never", "op": "count_at_most", "value": 0}),
            0
        ));
        assert!(!check(
            json!({"purchase": null, "op": "count_at_least", "value": 1}),
            0
        ));
        assert!(check(
            json!({"attribute": "external_id", "op": "equals", "value": "e"}),
            0
        ));
    }
}
