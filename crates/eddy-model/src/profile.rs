//! The stored profile, and how attribute operations, events, merges and exports act on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::attrs::{AttrValue, CustomOp, ObjectMatch, deep_merge, leaf_keys};
use crate::time::{format_braze_utc, format_iso};
use crate::track::{PushToken, StdOp};
use crate::usage::{Points, standard_field_billable};
use crate::wire::UserAlias;

/// Rules that a workspace may tune.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest scalar array kept; older values drop first.
    pub max_array_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_array_len: 25 }
    }
}

/// Days of per-day counts kept for `within_days` segment filters (Braze allows up to 30).
pub const RECENT_DAYS: i32 = 30;

/// First, last and count of an event name or product, with per-day counts of recent days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrences {
    /// First time, UTC ms.
    pub first: i64,
    /// Last time, UTC ms.
    pub last: i64,
    /// How many.
    pub count: u64,
    /// (days since the epoch, count) for the last [`RECENT_DAYS`] days before `last`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<(i32, u32)>,
}

/// UTC days since the epoch of a millisecond time.
pub fn epoch_day(ms: i64) -> i32 {
    ms.div_euclid(86_400_000) as i32
}

impl Occurrences {
    fn new(time_ms: i64) -> Occurrences {
        Occurrences {
            first: time_ms,
            last: time_ms,
            count: 0,
            recent: Vec::new(),
        }
    }

    fn record(&mut self, time_ms: i64, count: u64) {
        self.first = self.first.min(time_ms);
        self.last = self.last.max(time_ms);
        self.count += count;
        add_day(
            &mut self.recent,
            epoch_day(time_ms),
            count.min(u64::from(u32::MAX)) as u32,
        );
        let newest = epoch_day(self.last);
        self.recent.retain(|(day, _)| *day > newest - RECENT_DAYS);
    }

    fn absorb(&mut self, other: &Occurrences) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.count += other.count;
        for (day, n) in &other.recent {
            add_day(&mut self.recent, *day, *n);
        }
        let newest = epoch_day(self.last);
        self.recent.retain(|(day, _)| *day > newest - RECENT_DAYS);
    }

    /// Occurrences during the `days` days ending with `today` (1 ≤ days ≤ [`RECENT_DAYS`]).
    pub fn count_within(&self, today: i32, days: i32) -> u64 {
        self.recent
            .iter()
            .filter(|(day, _)| *day <= today && *day > today - days)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

fn add_day(recent: &mut Vec<(i32, u32)>, day: i32, n: u32) {
    match recent.binary_search_by_key(&day, |(d, _)| *d) {
        Ok(i) => recent[i].1 = recent[i].1.saturating_add(n),
        Err(i) => recent.insert(i, (day, n)),
    }
}

/// Most merges a profile remembers; older ones are forgotten first.
pub const MAX_MERGE_HISTORY: usize = 100;

/// A profile that was merged into another: who it was and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedProfile {
    /// Its braze id.
    pub braze_id: String,
    /// Its external id, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// When it was merged, UTC ms.
    pub at_ms: i64,
}

/// One user profile, keyed in the store by its dense internal id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// 24-hex id shown to clients.
    pub braze_id: String,
    /// The customer's id, once identified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Earlier external ids kept after a rename: they still name the user until removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deprecated_external_ids: Vec<String>,
    /// Aliases, at most one per label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<UserAlias>,
    /// Device ids seen for this user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Standard fields, normalized.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, Value>,
    /// Custom attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, AttrValue>,
    /// Subscription group id → `subscribed` | `unsubscribed`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subscription_groups: BTreeMap<String, String>,
    /// Push tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push_tokens: Vec<PushToken>,
    /// Custom events by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Occurrences>,
    /// Purchases by product id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub purchases: BTreeMap<String, Occurrences>,
    /// Sum of price × quantity.
    #[serde(default)]
    pub total_revenue: f64,
    /// The profiles merged into this one, oldest first (at most [`MAX_MERGE_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<MergedProfile>,
    /// Creation time, UTC ms.
    pub created_at: i64,
    /// Last change, UTC ms (decides "most recently updated").
    pub updated_at: i64,
}

/// A subscription change that becomes a Currents event.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionChange {
    /// `email_subscribe` or `push_subscribe` changed.
    Global {
        /// `email` or `push`.
        channel: &'static str,
        /// The new state as Braze names it.
        state: String,
    },
    /// A subscription group changed.
    Group {
        /// The group.
        id: String,
        /// `subscribed` | `unsubscribed`.
        state: String,
    },
}

impl Profile {
    /// A new, empty profile.
    pub fn new(braze_id: String, now_ms: i64) -> Profile {
        Profile {
            braze_id,
            created_at: now_ms,
            updated_at: now_ms,
            ..Profile::default()
        }
    }

    /// The email field, if set.
    pub fn email(&self) -> Option<&str> {
        self.fields.get("email").and_then(Value::as_str)
    }

    /// The phone field, if set.
    pub fn phone(&self) -> Option<&str> {
        self.fields.get("phone").and_then(Value::as_str)
    }

    /// Applies one standard field operation; counts its data points, reports subscription
    /// changes, and returns whether the profile changed.
    pub fn apply_standard(
        &mut self,
        op: &StdOp,
        points: &mut Points,
        changes: &mut Vec<SubscriptionChange>,
    ) -> bool {
        match op {
            StdOp::Set(field, value) => {
                let changed = self.fields.get(*field) != Some(value);
                if changed {
                    self.fields.insert((*field).to_string(), value.clone());
                    if let Some(channel) = global_channel(field) {
                        let state = value.as_str().unwrap_or_default().to_string();
                        changes.push(SubscriptionChange::Global { channel, state });
                    }
                }
                points.record(1, standard_field_billable(field), changed);
                changed
            }
            StdOp::Unset(field) => {
                let changed = self.fields.remove(*field).is_some();
                points.record(1, standard_field_billable(field), changed);
                changed
            }
            StdOp::SubscriptionGroup { id, state } => {
                let changed = self.subscription_groups.get(id) != Some(state);
                if changed {
                    self.subscription_groups.insert(id.clone(), state.clone());
                    changes.push(SubscriptionChange::Group {
                        id: id.clone(),
                        state: state.clone(),
                    });
                }
                points.record(1, false, changed);
                changed
            }
            StdOp::PushToken(token) => {
                // Push tokens are not data points.
                let mut token = token.clone();
                if let Some(existing) = self
                    .push_tokens
                    .iter_mut()
                    .find(|t| t.app_id == token.app_id && t.token == token.token)
                {
                    if token.device_id.is_some() && existing.device_id != token.device_id {
                        existing.device_id = token.device_id.take();
                        return true;
                    }
                    return false;
                }
                if token.device_id.is_none() {
                    token.device_id = Some(format!("{}-{}", self.braze_id, self.push_tokens.len()));
                }
                self.push_tokens.push(token);
                true
            }
        }
    }

    /// Applies one custom attribute operation and returns whether the profile changed. `Err`
    /// when it does not fit the stored type (an `inc` on a string, say): the op is skipped.
    pub fn apply_custom(
        &mut self,
        name: &str,
        op: &CustomOp,
        limits: Limits,
        points: &mut Points,
    ) -> Result<bool, String> {
        let old = self.custom.get(name);
        let (new, n) = next_value(name, old, op, limits)?;
        let changed = old != new.as_ref();
        if changed {
            match new {
                // Replace in place when the name exists: no new key allocation.
                Some(value) => match self.custom.get_mut(name) {
                    Some(slot) => *slot = value,
                    None => {
                        self.custom.insert(name.to_string(), value);
                    }
                },
                None => {
                    self.custom.remove(name);
                }
            }
        }
        points.record(n, true, changed);
        Ok(changed)
    }

    /// Records one custom event occurrence.
    pub fn record_event(&mut self, name: &str, time_ms: i64) {
        record_occurrence(&mut self.events, name, time_ms, 1);
    }

    /// Records a purchase of `quantity` units.
    pub fn record_purchase(&mut self, product_id: &str, price: f64, quantity: u32, time_ms: i64) {
        record_occurrence(
            &mut self.purchases,
            product_id,
            time_ms,
            u64::from(quantity),
        );
        self.total_revenue += price * f64::from(quantity);
    }

    /// Remembers that `other` was merged into this one at `now_ms`, with the merges it had
    /// itself absorbed before.
    pub fn remember_merge(&mut self, other: &Profile, now_ms: i64) {
        self.merged.extend(other.merged.iter().cloned());
        self.merged.push(MergedProfile {
            braze_id: other.braze_id.clone(),
            external_id: other.external_id.clone(),
            at_ms: now_ms,
        });
        self.merged.sort_by_key(|m| m.at_ms);
        let excess = self.merged.len().saturating_sub(MAX_MERGE_HISTORY);
        self.merged.drain(..excess);
    }

    /// Folds `other` (the profile being merged away) into this one, as Braze's merge does:
    /// fields empty here are filled from `other`, custom attributes missing here are copied,
    /// event and purchase history is summed, devices and push tokens are united.
    pub fn absorb(&mut self, other: &Profile) {
        for (field, value) in &other.fields {
            self.fields
                .entry(field.clone())
                .or_insert_with(|| value.clone());
        }
        for (name, value) in &other.custom {
            self.custom
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        for (id, state) in &other.subscription_groups {
            self.subscription_groups
                .entry(id.clone())
                .or_insert_with(|| state.clone());
        }
        for (name, occ) in &other.events {
            self.events
                .entry(name.clone())
                .and_modify(|o| o.absorb(occ))
                .or_insert_with(|| occ.clone());
        }
        for (name, occ) in &other.purchases {
            self.purchases
                .entry(name.clone())
                .and_modify(|o| o.absorb(occ))
                .or_insert_with(|| occ.clone());
        }
        self.total_revenue += other.total_revenue;
        for device in &other.devices {
            if !self.devices.contains(device) {
                self.devices.push(device.clone());
            }
        }
        for token in &other.push_tokens {
            if !self
                .push_tokens
                .iter()
                .any(|t| t.app_id == token.app_id && t.token == token.token)
            {
                self.push_tokens.push(token.clone());
            }
        }
        self.created_at = self.created_at.min(other.created_at);
    }

    /// The profile as `/users/export/ids` shows it; `fields` limits the keys when given.
    pub fn export(&self, fields: Option<&[String]>) -> Value {
        let wanted = |key: &str| fields.is_none_or(|f| f.iter().any(|k| k == key));
        let mut out = Map::new();
        if let Some(ext) = &self.external_id
            && wanted("external_id")
        {
            out.insert("external_id".into(), json!(ext));
        }
        if wanted("braze_id") {
            out.insert("braze_id".into(), json!(self.braze_id));
        }
        if wanted("user_aliases") && !self.aliases.is_empty() {
            out.insert("user_aliases".into(), json!(self.aliases));
        }
        for (field, value) in &self.fields {
            if wanted(field) {
                out.insert(field.clone(), value.clone());
            }
        }
        if wanted("custom_attributes") && !self.custom.is_empty() {
            let attrs: Map<String, Value> = self
                .custom
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect();
            out.insert("custom_attributes".into(), Value::Object(attrs));
        }
        if wanted("custom_events") && !self.events.is_empty() {
            out.insert("custom_events".into(), occurrences_json(&self.events));
        }
        if wanted("purchases") && !self.purchases.is_empty() {
            out.insert("purchases".into(), occurrences_json(&self.purchases));
        }
        if wanted("total_revenue") && self.total_revenue != 0.0 {
            out.insert("total_revenue".into(), json!(self.total_revenue));
        }
        if wanted("push_tokens") && !self.push_tokens.is_empty() {
            out.insert("push_tokens".into(), json!(self.push_tokens));
        }
        if wanted("subscription_groups") && !self.subscription_groups.is_empty() {
            let groups: Vec<Value> = self
                .subscription_groups
                .iter()
                .map(|(id, state)| json!({"id": id, "status": state}))
                .collect();
            out.insert("subscription_groups".into(), Value::Array(groups));
        }
        if wanted("devices") && !self.devices.is_empty() {
            let devices: Vec<Value> = self
                .devices
                .iter()
                .map(|d| json!({"device_id": d}))
                .collect();
            out.insert("devices".into(), Value::Array(devices));
        }
        if wanted("created_at") {
            out.insert(
                "created_at".into(),
                json!(format_braze_utc(self.created_at)),
            );
        }
        Value::Object(out)
    }
}

/// Counts `count` occurrences of `name` at `time_ms`, allocating a key only for a new name.
fn record_occurrence(
    map: &mut BTreeMap<String, Occurrences>,
    name: &str,
    time_ms: i64,
    count: u64,
) {
    match map.get_mut(name) {
        Some(occurrences) => occurrences.record(time_ms, count),
        None => {
            let mut occurrences = Occurrences::new(time_ms);
            occurrences.record(time_ms, count);
            map.insert(name.to_string(), occurrences);
        }
    }
}

fn occurrences_json(map: &BTreeMap<String, Occurrences>) -> Value {
    let items: Vec<Value> = map
        .iter()
        .map(|(name, o)| json!({"name": name, "first": format_iso(o.first), "last": format_iso(o.last), "count": o.count}))
        .collect();
    Value::Array(items)
}

fn global_channel(field: &str) -> Option<&'static str> {
    match field {
        "email_subscribe" => Some("email"),
        "push_subscribe" => Some("push"),
        _ => None,
    }
}

/// Computes the value after `op` and how many data points it costs.
fn next_value(
    name: &str,
    old: Option<&AttrValue>,
    op: &CustomOp,
    limits: Limits,
) -> Result<(Option<AttrValue>, u64), String> {
    let mismatch = || format!("custom attribute '{name}' holds another type");
    match op {
        CustomOp::Remove => Ok((None, 1)),
        CustomOp::Set(AttrValue::Array(items)) => Ok((
            Some(AttrValue::Array(keep_last(
                items.clone(),
                limits.max_array_len,
            ))),
            1,
        )),
        CustomOp::Set(value @ AttrValue::Object(map)) => {
            Ok((Some(value.clone()), leaf_keys(map).max(1)))
        }
        CustomOp::Set(value @ AttrValue::ObjectArray(items)) => {
            Ok((Some(value.clone()), object_keys(items).max(1)))
        }
        CustomOp::Set(value) => Ok((Some(value.clone()), 1)),
        CustomOp::Inc(n) => match old {
            None => Ok((Some(AttrValue::Int(*n)), 1)),
            Some(AttrValue::Int(i)) => Ok((Some(AttrValue::Int(i.saturating_add(*n))), 1)),
            Some(AttrValue::Float(f)) => Ok((Some(AttrValue::Float(f + *n as f64)), 1)),
            Some(_) => Err(mismatch()),
        },
        CustomOp::ArrayEdit { add, remove } => {
            let mut items = match old {
                None => Vec::new(),
                Some(AttrValue::Array(items)) => items.clone(),
                Some(_) => return Err(mismatch()),
            };
            for value in add {
                // Braze: adding a present value moves it to the end.
                items.retain(|v| v != value);
                items.push(value.clone());
            }
            items.retain(|v| !remove.contains(v));
            let items = keep_last(items, limits.max_array_len);
            let n = (add.len() + remove.len()).max(1) as u64;
            Ok((Some(AttrValue::Array(items)), n))
        }
        CustomOp::MergeObject(patch) => {
            let mut map = match old {
                None => Map::new(),
                Some(AttrValue::Object(map)) => map.clone(),
                Some(_) => return Err(mismatch()),
            };
            deep_merge(&mut map, patch);
            Ok((Some(AttrValue::Object(map)), leaf_keys(patch).max(1)))
        }
        CustomOp::ObjectsAdd(new_items) => {
            let mut items = object_array(old).ok_or_else(mismatch)?;
            items.extend(new_items.iter().cloned());
            Ok((
                Some(AttrValue::ObjectArray(items)),
                object_keys(new_items).max(1),
            ))
        }
        CustomOp::ObjectsUpdate(updates) => {
            let mut items = object_array(old).ok_or_else(mismatch)?;
            let mut n = 0;
            for (matcher, patch) in updates {
                for item in items
                    .iter_mut()
                    .filter(|item| matches_object(item, matcher))
                {
                    if let Value::Object(map) = item {
                        deep_merge(map, patch);
                        n += leaf_keys(patch);
                    }
                }
            }
            Ok((Some(AttrValue::ObjectArray(items)), n.max(1)))
        }
        CustomOp::ObjectsRemove(matchers) => {
            let mut items = object_array(old).ok_or_else(mismatch)?;
            items.retain(|item| !matchers.iter().any(|m| matches_object(item, m)));
            Ok((
                Some(AttrValue::ObjectArray(items)),
                matchers.len().max(1) as u64,
            ))
        }
    }
}

fn object_array(old: Option<&AttrValue>) -> Option<Vec<Value>> {
    match old {
        None => Some(Vec::new()),
        Some(AttrValue::ObjectArray(items)) => Some(items.clone()),
        Some(_) => None,
    }
}

fn matches_object(item: &Value, matcher: &ObjectMatch) -> bool {
    item.get(&matcher.key) == Some(&matcher.value)
}

fn object_keys(items: &[Value]) -> u64 {
    items
        .iter()
        .map(|item| item.as_object().map_or(1, leaf_keys))
        .sum()
}

fn keep_last(mut items: Vec<Value>, max: usize) -> Vec<Value> {
    if items.len() > max {
        items.drain(..items.len() - max);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::parse_custom;

    fn apply(p: &mut Profile, name: &str, v: Value, merge: bool) -> Points {
        let op = parse_custom(name, &v, merge).unwrap();
        let mut points = Points::default();
        p.apply_custom(name, &op, Limits::default(), &mut points)
            .unwrap();
        points
    }

    #[test]
    fn arrays_move_added_values_to_the_end_and_cap() {
        let mut p = Profile::default();
        apply(&mut p, "a", json!(["x", "y", "z"]), false);
        let points = apply(
            &mut p,
            "a",
            json!({"add": ["x", "w"], "remove": ["y"]}),
            false,
        );
        assert_eq!(
            p.custom["a"],
            AttrValue::Array(vec![json!("z"), json!("x"), json!("w")])
        );
        assert_eq!(
            points,
            Points {
                billable: 3,
                non_billable: 0
            }
        );
        let many: Vec<Value> = (0..30).map(|i| json!(i)).collect();
        apply(&mut p, "a", json!({"add": many}), false);
        let AttrValue::Array(items) = &p.custom["a"] else {
            panic!()
        };
        assert_eq!(items.len(), 25);
        assert_eq!(items[0], json!(5));
    }

    #[test]
    fn increments_and_no_ops() {
        let mut p = Profile::default();
        apply(&mut p, "n", json!({"inc": 2}), false);
        apply(&mut p, "n", json!({"inc": -5}), false);
        assert_eq!(p.custom["n"], AttrValue::Int(-3));
        let same = apply(&mut p, "n", json!(-3), false);
        assert_eq!(
            same,
            Points {
                billable: 0,
                non_billable: 1
            }
        );
        apply(&mut p, "s", json!("text"), false);
        let op = parse_custom("s", &json!({"inc": 1}), false).unwrap();
        assert!(
            p.apply_custom("s", &op, Limits::default(), &mut Points::default())
                .is_err()
        );
        apply(&mut p, "s", json!(null), false);
        assert!(!p.custom.contains_key("s"));
    }

    #[test]
    fn nested_merge_and_object_arrays() {
        let mut p = Profile::default();
        apply(
            &mut p,
            "car",
            json!({"make": "x", "spec": {"hp": 100, "doors": 4}}),
            false,
        );
        let points = apply(&mut p, "car", json!({"spec": {"hp": 120}}), true);
        assert_eq!(points.billable, 1);
        assert_eq!(
            p.custom["car"].to_json(),
            json!({"make": "x", "spec": {"hp": 120, "doors": 4}})
        );
        apply(
            &mut p,
            "pets",
            json!([{"id": 1, "type": "dog"}, {"id": 2, "type": "cat"}]),
            false,
        );
        apply(
            &mut p,
            "pets",
            json!({"$add": [{"id": 3, "type": "dog"}]}),
            false,
        );
        apply(
            &mut p,
            "pets",
            json!({"$update": [{"$identifier_key": "id", "$identifier_value": 2, "$new_object": {"breed": "siamese"}}]}),
            true,
        );
        apply(
            &mut p,
            "pets",
            json!({"$remove": [{"$identifier_key": "type", "$identifier_value": "dog"}]}),
            false,
        );
        assert_eq!(
            p.custom["pets"].to_json(),
            json!([{"id": 2, "type": "cat", "breed": "siamese"}])
        );
    }

    #[test]
    fn standard_fields_and_subscriptions() {
        let mut p = Profile::default();
        let mut points = Points::default();
        let mut changes = Vec::new();
        p.apply_standard(
            &StdOp::Set("email_subscribe", json!("opted_in")),
            &mut points,
            &mut changes,
        );
        p.apply_standard(
            &StdOp::Set("email_subscribe", json!("opted_in")),
            &mut points,
            &mut changes,
        );
        p.apply_standard(
            &StdOp::Set("first_name", json!("Jo")),
            &mut points,
            &mut changes,
        );
        p.apply_standard(
            &StdOp::SubscriptionGroup {
                id: "g".into(),
                state: "subscribed".into(),
            },
            &mut points,
            &mut changes,
        );
        assert_eq!(
            points,
            Points {
                billable: 1,
                non_billable: 3
            }
        );
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn absorb_fills_gaps_and_sums_history() {
        let mut keep = Profile::new("a".into(), 100);
        keep.fields.insert("first_name".into(), json!("Keep"));
        keep.record_event("open", 50);
        let mut gone = Profile::new("b".into(), 10);
        gone.fields.insert("first_name".into(), json!("Gone"));
        gone.fields.insert("last_name".into(), json!("Last"));
        gone.custom.insert("x".into(), AttrValue::Int(1));
        gone.record_event("open", 20);
        gone.record_event("open", 80);
        keep.absorb(&gone);
        assert_eq!(keep.fields["first_name"], json!("Keep"));
        assert_eq!(keep.fields["last_name"], json!("Last"));
        let open = &keep.events["open"];
        assert_eq!((open.first, open.last, open.count), (20, 80, 3));
        assert_eq!(open.recent, vec![(0, 3)]);
        assert_eq!(keep.created_at, 10);
        assert_eq!(keep.custom["x"], AttrValue::Int(1));
    }

    #[test]
    fn recent_days_are_counted_and_pruned() {
        let day = 86_400_000;
        let mut p = Profile::default();
        p.record_event("e", 100 * day);
        p.record_event("e", 100 * day + 5);
        p.record_event("e", 110 * day);
        p.record_event("e", 95 * day);
        let e = &p.events["e"];
        assert_eq!(e.count, 4);
        assert_eq!(e.recent, vec![(95, 1), (100, 2), (110, 1)]);
        assert_eq!(e.count_within(110, 1), 1);
        assert_eq!(e.count_within(110, 11), 3);
        assert_eq!(e.count_within(110, 30), 4);
        p.record_event("e", 140 * day);
        assert_eq!(
            p.events["e"].recent,
            vec![(140, 1)],
            "days older than 30 are dropped"
        );
        assert_eq!(p.events["e"].count, 5);
    }

    #[test]
    fn export_filters_fields() {
        let mut p = Profile::new("b1".into(), 0);
        p.external_id = Some("e".into());
        p.fields.insert("first_name".into(), json!("Jane"));
        p.custom.insert("pts".into(), AttrValue::Int(3));
        let all = p.export(None);
        assert_eq!(all["custom_attributes"]["pts"], 3);
        assert_eq!(all["created_at"], "1970-01-01 00:00:00.000 UTC");
        let some = p.export(Some(&["first_name".to_string()]));
        assert_eq!(some, json!({"first_name": "Jane"}));
    }
}
