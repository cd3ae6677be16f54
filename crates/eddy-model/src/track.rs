//! Validation of `/users/track` objects into typed operations, one object at a time.
//!
//! An invalid object becomes an [`ObjectError`] at its index and never costs the valid objects
//! beside it. The writer only ever sees validated operations.

use serde_json::{Map, Value};

use crate::attrs::{CustomOp, MAX_STRING_CHARS, parse_custom};
use crate::geo::{country_code, language_code};
use crate::limits::check_identifier;
use crate::time::{format_iso, parse_dob, parse_time};
use crate::wire::{TrackRequest, TrackResponse, UserAlias};
use crate::{ApiError, ObjectError};

/// Most objects per array in one request.
pub const MAX_OBJECTS_PER_ARRAY: usize = 75;
/// Largest event properties payload with arrays or objects, serialized.
pub const MAX_EVENT_PROPERTIES_BYTES: usize = 100 * 1024;
/// Largest purchase properties payload with arrays or objects, serialized.
pub const MAX_PURCHASE_PROPERTIES_BYTES: usize = 50 * 1024;

/// Braze's error text for an object without any identifier.
pub const IDENTIFIER_REQUIRED: &str =
    "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required";
/// Braze's error text for an invalid email.
pub const INVALID_EMAIL: &str = "The value provided for the 'email' field is not a valid email.";

/// How an object names its user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// The customer's id.
    ExternalId(String),
    /// eddy's own id for the profile.
    BrazeId(String),
    /// An alias name under a label.
    Alias(UserAlias),
    /// An email address (stored lowercase for lookup).
    Email(String),
    /// A phone number.
    Phone(String),
}

/// The user an object applies to and whether it may create one.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The identifier chosen by Braze's precedence.
    pub ident: Identifier,
    /// `_update_existing_only` (default true for aliases, false otherwise).
    pub update_existing_only: bool,
}

/// A push token registration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PushToken {
    /// The app the token belongs to.
    pub app_id: String,
    /// The token.
    pub token: String,
    /// The device; generated when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// One validated operation on a standard profile field.
#[derive(Debug, Clone, PartialEq)]
pub enum StdOp {
    /// Set a field to a normalized JSON value.
    Set(&'static str, Value),
    /// Remove a field (`null`, or a country Braze cannot map).
    Unset(&'static str),
    /// Set a subscription group state (`subscribed` or `unsubscribed`).
    SubscriptionGroup {
        /// The group id.
        id: String,
        /// The new state.
        state: String,
    },
    /// Register a push token.
    PushToken(PushToken),
}

/// A validated user attributes object.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributesUpdate {
    /// Position in the request's `attributes` array, for errors found while applying.
    pub index: usize,
    /// Whom it updates.
    pub target: Target,
    /// Standard field operations, in request order.
    pub standard: Vec<StdOp>,
    /// Custom attribute operations, in request order.
    pub custom: Vec<(String, CustomOp)>,
}

/// A validated event object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInput {
    /// Whose event it is.
    pub target: Target,
    /// The app it came from.
    pub app_id: Option<String>,
    /// The event name.
    pub name: String,
    /// UTC milliseconds, clamped to now.
    pub time_ms: i64,
    /// Event properties.
    pub properties: Map<String, Value>,
}

/// A validated purchase object.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseInput {
    /// Whose purchase it is.
    pub target: Target,
    /// The app it came from.
    pub app_id: Option<String>,
    /// The product.
    pub product_id: String,
    /// ISO 4217 code, uppercase.
    pub currency: String,
    /// Unit price.
    pub price: f64,
    /// 1 to 100.
    pub quantity: u32,
    /// UTC milliseconds, clamped to now.
    pub time_ms: i64,
    /// Purchase properties.
    pub properties: Map<String, Value>,
}

/// A whole validated request: what to apply and the answer's counts and errors.
#[derive(Debug, Clone, Default)]
pub struct TrackBatch {
    /// Valid attributes objects.
    pub attributes: Vec<AttributesUpdate>,
    /// Valid events.
    pub events: Vec<EventInput>,
    /// Valid purchases.
    pub purchases: Vec<PurchaseInput>,
    /// The 201 body to answer once the batch is durable.
    pub response: TrackResponse,
}

/// Validates a whole request; `Err` only when nothing in it is valid or it is over the limits.
pub fn validate_track(req: &TrackRequest, now_ms: i64) -> Result<TrackBatch, ApiError> {
    let attributes = req.attributes.as_deref().unwrap_or_default();
    let events = req.events.as_deref().unwrap_or_default();
    let purchases = req.purchases.as_deref().unwrap_or_default();
    if attributes.len() > MAX_OBJECTS_PER_ARRAY
        || events.len() > MAX_OBJECTS_PER_ARRAY
        || purchases.len() > MAX_OBJECTS_PER_ARRAY
    {
        return Err(ApiError::MaxInputLength);
    }
    let mut batch = TrackBatch::default();
    let mut errors = Vec::new();
    let mut nested_invalid = false;
    for (index, object) in attributes.iter().enumerate() {
        match validate_attributes(object) {
            Ok((mut update, nested_error)) => {
                update.index = index;
                if let Some(message) = nested_error {
                    nested_invalid = true;
                    errors.push(object_error(message, "attributes", index));
                }
                batch.attributes.push(update);
            }
            Err(message) => errors.push(object_error(message, "attributes", index)),
        }
    }
    if nested_invalid {
        // Braze: one invalid nested attribute drops every nested update of the request.
        for update in &mut batch.attributes {
            update.custom.retain(|(_, op)| !op.is_nested());
        }
    }
    for (index, object) in events.iter().enumerate() {
        match validate_event(object, now_ms) {
            Ok(event) => batch.events.push(event),
            Err(message) => errors.push(object_error(message, "events", index)),
        }
    }
    for (index, object) in purchases.iter().enumerate() {
        match validate_purchase(object, now_ms) {
            Ok(purchase) => batch.purchases.push(purchase),
            Err(message) => errors.push(object_error(message, "purchases", index)),
        }
    }
    if batch.attributes.is_empty() && batch.events.is_empty() && batch.purchases.is_empty() {
        return Err(ApiError::NoValidTrackData(errors));
    }
    batch.response = TrackResponse {
        message: "success".into(),
        attributes_processed: req.attributes.as_ref().map(|_| batch.attributes.len()),
        events_processed: req.events.as_ref().map(|_| batch.events.len()),
        purchases_processed: req.purchases.as_ref().map(|_| batch.purchases.len()),
        errors,
    };
    Ok(batch)
}

fn object_error(message: String, array: &str, index: usize) -> ObjectError {
    ObjectError {
        kind: message,
        input_array: array.to_string(),
        index,
    }
}

/// Keys of an attributes object that are never custom attributes.
const CONTROL_KEYS: &[&str] = &[
    "external_id",
    "braze_id",
    "user_alias",
    "_update_existing_only",
    "_merge_objects",
    "push_token_import",
    "app_id",
    "alias_name",
    "alias_label",
    // Braze removed `bio` and does not process it as a custom attribute.
    "bio",
];

/// Validates one attributes object. The second value is a nested-attribute error that drops
/// the request's nested updates without failing the object.
pub fn validate_attributes(object: &Value) -> Result<(AttributesUpdate, Option<String>), String> {
    let Value::Object(map) = object else {
        return Err("attributes objects must be JSON objects".into());
    };
    let target = target_of(map)?;
    let merge_objects = match map.get("_merge_objects") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'_merge_objects' must be a boolean".into()),
    };
    let mut update = AttributesUpdate {
        index: 0,
        target,
        standard: Vec::new(),
        custom: Vec::new(),
    };
    let mut nested_error = None;
    for (key, value) in map {
        if CONTROL_KEYS.contains(&key.as_str()) {
            continue;
        }
        let is_identifier = matches!(
            (&update.target.ident, key.as_str()),
            (Identifier::Email(_), "email") | (Identifier::Phone(_), "phone")
        );
        if is_identifier {
            continue;
        }
        if let Some(field) = standard_field(key) {
            validate_standard(field, value, &mut update.standard)?;
            continue;
        }
        match parse_custom(key, value, merge_objects) {
            Ok(op) => update.custom.push((key.clone(), op)),
            Err(e) if e.nested => {
                nested_error.get_or_insert(e.message);
            }
            Err(e) => return Err(e.message),
        }
    }
    Ok((update, nested_error))
}

/// Picks the identifier by Braze's precedence: external_id, braze_id, user_alias, email, phone.
fn target_of(map: &Map<String, Value>) -> Result<Target, String> {
    let ident = identifier_of(map)?;
    let default_update_only = matches!(ident, Identifier::Alias(_));
    let update_existing_only = match map.get("_update_existing_only") {
        None | Some(Value::Null) => default_update_only,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'_update_existing_only' must be a boolean".into()),
    };
    Ok(Target {
        ident,
        update_existing_only,
    })
}

fn identifier_of(map: &Map<String, Value>) -> Result<Identifier, String> {
    if let Some(value) = present(map, "external_id") {
        return non_empty_string(value, "external_id").map(Identifier::ExternalId);
    }
    if let Some(value) = present(map, "braze_id") {
        return non_empty_string(value, "braze_id").map(Identifier::BrazeId);
    }
    if let Some(value) = present(map, "user_alias") {
        return parse_alias(value).map(Identifier::Alias);
    }
    if let Some(value) = present(map, "email") {
        let email = value.as_str().ok_or_else(|| INVALID_EMAIL.to_string())?;
        return normalize_email(email)
            .map(Identifier::Email)
            .ok_or_else(|| INVALID_EMAIL.to_string());
    }
    if let Some(value) = present(map, "phone") {
        return non_empty_string(value, "phone").map(Identifier::Phone);
    }
    Err(IDENTIFIER_REQUIRED.into())
}

fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn non_empty_string(value: &Value, field: &str) -> Result<String, String> {
    match value.as_str() {
        Some(s) if !s.is_empty() => {
            check_identifier(field, s)?;
            Ok(s.to_string())
        }
        _ => Err(format!("'{field}' is not valid")),
    }
}

/// Parses `{"alias_name": …, "alias_label": …}`; both must be non-empty strings within
/// [`crate::limits::MAX_IDENTIFIER_BYTES`].
pub fn parse_alias(value: &Value) -> Result<UserAlias, String> {
    let name = value
        .get("alias_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let label = value
        .get("alias_label")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (name, label) {
        (Some(name), Some(label)) => {
            check_identifier("alias_name", name)?;
            check_identifier("alias_label", label)?;
            Ok(UserAlias {
                alias_name: name.into(),
                alias_label: label.into(),
            })
        }
        _ => Err("'user_alias' must have string 'alias_name' and 'alias_label'".into()),
    }
}

/// Lowercases and checks an email address; `None` when it is not one.
pub fn normalize_email(input: &str) -> Option<String> {
    let email = input.trim();
    if email.len() > 255 || email.chars().any(char::is_whitespace) {
        return None;
    }
    let (local, domain) = email.rsplit_once('@')?;
    if local.is_empty() || local.contains('@') || domain.len() < 3 || !domain.contains('.') {
        return None;
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return None;
    }
    Some(email.to_ascii_lowercase())
}

/// The standard profile fields (Braze's names, lowercase and case-sensitive).
pub const STANDARD_FIELDS: &[&str] = &[
    "country",
    "current_location",
    "date_of_first_session",
    "date_of_last_session",
    "dob",
    "email",
    "email_subscribe",
    "email_open_tracking_disabled",
    "email_click_tracking_disabled",
    "facebook",
    "first_name",
    "gender",
    "home_city",
    "image_url",
    "language",
    "last_name",
    "marked_email_as_spam_at",
    "phone",
    "push_subscribe",
    "push_tokens",
    "subscription_groups",
    "time_zone",
    "twitter",
];

fn standard_field(key: &str) -> Option<&'static str> {
    STANDARD_FIELDS.iter().copied().find(|f| *f == key)
}

fn invalid(field: &str) -> String {
    format!("'{field}' is not valid")
}

fn validate_standard(
    field: &'static str,
    value: &Value,
    out: &mut Vec<StdOp>,
) -> Result<(), String> {
    if value.is_null() {
        if matches!(field, "push_tokens" | "subscription_groups") {
            return Ok(());
        }
        out.push(StdOp::Unset(field));
        return Ok(());
    }
    match field {
        "first_name" | "last_name" | "home_city" | "phone" => {
            let s = value
                .as_str()
                .filter(|s| s.chars().count() <= MAX_STRING_CHARS)
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(s.to_string())));
        }
        "image_url" => {
            let s = value
                .as_str()
                .filter(|s| s.chars().count() <= 1024)
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(s.to_string())));
        }
        "email" => {
            let email = value
                .as_str()
                .and_then(normalize_email)
                .ok_or_else(|| INVALID_EMAIL.to_string())?;
            out.push(StdOp::Set(field, Value::String(email)));
        }
        "country" => {
            // Braze: a country it cannot map is set to null.
            match value.as_str().and_then(country_code) {
                Some(code) => out.push(StdOp::Set(field, Value::String(code.into()))),
                None => out.push(StdOp::Unset(field)),
            }
        }
        "language" => {
            if let Some(code) = value.as_str().and_then(language_code) {
                out.push(StdOp::Set(field, Value::String(code.into())));
            }
        }
        "time_zone" => {
            // Braze: only valid time zone values are set.
            if let Some(tz) = value.as_str().and_then(time_zone_name) {
                out.push(StdOp::Set(field, Value::String(tz)));
            }
        }
        "dob" => {
            let date = value
                .as_str()
                .and_then(parse_dob)
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(date.to_string())));
        }
        "gender" => {
            let g = value
                .as_str()
                .and_then(gender_code)
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(g.into())));
        }
        "email_subscribe" | "push_subscribe" => {
            let s = value
                .as_str()
                .filter(|s| matches!(*s, "opted_in" | "unsubscribed" | "subscribed"))
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(s.into())));
        }
        "date_of_first_session" | "date_of_last_session" | "marked_email_as_spam_at" => {
            let ms = value
                .as_str()
                .and_then(parse_time)
                .ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::String(format_iso(ms))));
        }
        "email_open_tracking_disabled" | "email_click_tracking_disabled" => {
            let b = value.as_bool().ok_or_else(|| invalid(field))?;
            out.push(StdOp::Set(field, Value::Bool(b)));
        }
        "current_location" => {
            let lon = value
                .get("longitude")
                .and_then(Value::as_f64)
                .filter(|v| (-180.0..=180.0).contains(v));
            let lat = value
                .get("latitude")
                .and_then(Value::as_f64)
                .filter(|v| (-90.0..=90.0).contains(v));
            let (Some(lon), Some(lat)) = (lon, lat) else {
                return Err(invalid(field));
            };
            out.push(StdOp::Set(
                field,
                serde_json::json!({"longitude": lon, "latitude": lat}),
            ));
        }
        "facebook" => out.push(StdOp::Set(
            field,
            social(
                value,
                field,
                &[("id", 's'), ("likes", 'a'), ("num_friends", 'i')],
            )?,
        )),
        "twitter" => out.push(StdOp::Set(
            field,
            social(
                value,
                field,
                &[
                    ("id", 'i'),
                    ("screen_name", 's'),
                    ("followers_count", 'i'),
                    ("friends_count", 'i'),
                    ("statuses_count", 'i'),
                ],
            )?,
        )),
        "subscription_groups" => {
            let Value::Array(items) = value else {
                return Err(invalid(field));
            };
            for item in items {
                let id = item
                    .get("subscription_group_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                let state = item
                    .get("subscription_state")
                    .and_then(Value::as_str)
                    .filter(|s| matches!(*s, "subscribed" | "unsubscribed"));
                let (Some(id), Some(state)) = (id, state) else {
                    return Err(invalid(field));
                };
                check_identifier("subscription_group_id", id)?;
                out.push(StdOp::SubscriptionGroup {
                    id: id.into(),
                    state: state.into(),
                });
            }
        }
        "push_tokens" => {
            let Value::Array(items) = value else {
                return Err(invalid(field));
            };
            for item in items {
                let token: PushToken =
                    serde_json::from_value(item.clone()).map_err(|_| invalid(field))?;
                if token.app_id.is_empty() || token.token.is_empty() {
                    return Err(invalid(field));
                }
                check_identifier("app_id", &token.app_id)?;
                // Web push subscriptions are longer than device tokens; 4 KiB holds any.
                if token.token.len() > 4096 {
                    return Err("'token' is longer than 4096 bytes".into());
                }
                if let Some(device_id) = &token.device_id {
                    check_identifier("device_id", device_id)?;
                }
                out.push(StdOp::PushToken(token));
            }
        }
        _ => return Err(invalid(field)),
    }
    Ok(())
}

/// Checks a `facebook`/`twitter` hash: known keys only, each of its kind (s string, i integer, a string array).
fn social(value: &Value, field: &str, keys: &[(&str, char)]) -> Result<Value, String> {
    let Value::Object(map) = value else {
        return Err(invalid(field));
    };
    for (key, v) in map {
        let Some((_, kind)) = keys.iter().find(|(k, _)| k == key) else {
            return Err(invalid(field));
        };
        let ok = match kind {
            's' => v.is_string(),
            'i' => v.is_i64() || v.is_u64(),
            _ => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        };
        if !ok {
            return Err(invalid(field));
        }
    }
    Ok(value.clone())
}

/// Maps Braze's gender values (and their spelled-out forms) to the stored letter.
pub fn gender_code(input: &str) -> Option<&'static str> {
    match input.trim().to_ascii_lowercase().as_str() {
        "m" | "male" => Some("M"),
        "f" | "female" => Some("F"),
        "o" | "other" => Some("O"),
        "n" | "not_applicable" => Some("N"),
        "p" | "prefer_not_to_say" => Some("P"),
        _ => None,
    }
}

/// Rails-style zone names that Braze also accepts, mapped to IANA names.
const RAILS_ZONES: &[(&str, &str)] = &[
    ("Eastern Time (US & Canada)", "America/New_York"),
    ("Central Time (US & Canada)", "America/Chicago"),
    ("Mountain Time (US & Canada)", "America/Denver"),
    ("Pacific Time (US & Canada)", "America/Los_Angeles"),
    ("Alaska", "America/Juneau"),
    ("Hawaii", "Pacific/Honolulu"),
    ("Arizona", "America/Phoenix"),
    ("Atlantic Time (Canada)", "America/Halifax"),
    ("London", "Europe/London"),
    ("Paris", "Europe/Paris"),
    ("Berlin", "Europe/Berlin"),
    ("Madrid", "Europe/Madrid"),
    ("Tokyo", "Asia/Tokyo"),
    ("Sydney", "Australia/Sydney"),
    ("UTC", "Etc/UTC"),
];

/// Validates an IANA zone name (or a Rails-style name) and returns the IANA name.
pub fn time_zone_name(input: &str) -> Option<String> {
    if let Some((_, iana)) = RAILS_ZONES.iter().find(|(rails, _)| *rails == input) {
        return Some((*iana).to_string());
    }
    if input.is_empty() || input.len() > 64 {
        return None;
    }
    jiff::tz::TimeZone::get(input)
        .ok()
        .map(|_| input.to_string())
}

fn validate_event(object: &Value, now_ms: i64) -> Result<EventInput, String> {
    let Value::Object(map) = object else {
        return Err("event objects must be JSON objects".into());
    };
    let target = target_of(map)?;
    let name = match map.get("name") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_STRING_CHARS => {
            s.clone()
        }
        Some(_) => return Err(invalid("name")),
        None => return Err("'name' is required".into()),
    };
    let time_ms = event_time(map, now_ms)?;
    let properties = properties_of(map, MAX_EVENT_PROPERTIES_BYTES)?;
    Ok(EventInput {
        target,
        app_id: app_id_of(map)?,
        name,
        time_ms,
        properties,
    })
}

fn validate_purchase(object: &Value, now_ms: i64) -> Result<PurchaseInput, String> {
    let Value::Object(map) = object else {
        return Err("purchase objects must be JSON objects".into());
    };
    let target = target_of(map)?;
    let product_id = match map.get("product_id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_STRING_CHARS => {
            s.clone()
        }
        Some(_) => return Err(invalid("product_id")),
        None => return Err("'product_id' is required".into()),
    };
    let currency = match map.get("currency") {
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
            s.to_ascii_uppercase()
        }
        Some(_) => return Err(invalid("currency")),
        None => return Err("'currency' is required".into()),
    };
    let price = match map.get("price") {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|p| p.is_finite())
            .ok_or_else(|| invalid("price"))?,
        Some(_) => return Err(invalid("price")),
        None => return Err("'price' is required".into()),
    };
    let quantity = match map.get("quantity") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(q) if (1..=100).contains(&q) => q as u32,
            _ => return Err(invalid("quantity")),
        },
    };
    let time_ms = event_time(map, now_ms)?;
    let properties = properties_of(map, MAX_PURCHASE_PROPERTIES_BYTES)?;
    Ok(PurchaseInput {
        target,
        app_id: app_id_of(map)?,
        product_id,
        currency,
        price,
        quantity,
        time_ms,
        properties,
    })
}

fn app_id_of(map: &Map<String, Value>) -> Result<Option<String>, String> {
    match map.get("app_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_identifier("app_id", s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(invalid("app_id")),
    }
}

/// Braze: events with timestamps in the future default to the current time.
fn event_time(map: &Map<String, Value>, now_ms: i64) -> Result<i64, String> {
    let ms = match map.get("time") {
        Some(Value::String(s)) => parse_time(s).ok_or_else(|| invalid("time"))?,
        Some(_) => return Err(invalid("time")),
        None => return Err("'time' is required".into()),
    };
    Ok(ms.min(now_ms))
}

fn properties_of(map: &Map<String, Value>, max_bytes: usize) -> Result<Map<String, Value>, String> {
    let props = match map.get("properties") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(props)) => props,
        Some(_) => return Err("'properties' must be an object".into()),
    };
    let mut complex = false;
    for (key, value) in props {
        if key.is_empty() || key.chars().count() > MAX_STRING_CHARS || key.starts_with('$') {
            return Err(format!(
                "property name '{key}' must be 1 to 255 characters without a leading '$'"
            ));
        }
        if key == "time" || key == "event_name" {
            return Err(format!("property name '{key}' is reserved"));
        }
        match value {
            Value::String(s) if s.chars().count() > MAX_STRING_CHARS => {
                return Err(format!("property '{key}' is longer than 255 characters"));
            }
            Value::Array(_) | Value::Object(_) => complex = true,
            _ => {}
        }
    }
    if complex {
        let size = serde_json::to_vec(props)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(format!(
                "'properties' is larger than {} KB",
                max_bytes / 1024
            ));
        }
    }
    Ok(props.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;

    fn track(body: Value) -> Result<TrackBatch, ApiError> {
        let req: TrackRequest = serde_json::from_value(body).unwrap();
        validate_track(&req, NOW)
    }

    #[test]
    fn identifier_precedence() {
        let map = json!({"external_id": "e", "braze_id": "b", "email": "A@B.co"});
        let (update, _) = validate_attributes(&map).unwrap();
        assert_eq!(update.target.ident, Identifier::ExternalId("e".into()));
        assert!(
            update
                .standard
                .contains(&StdOp::Set("email", json!("a@b.co")))
        );
        let (update, _) =
            validate_attributes(&json!({"email": "x@y.io", "phone": "+1555"})).unwrap();
        assert_eq!(update.target.ident, Identifier::Email("x@y.io".into()));
        assert!(
            update
                .standard
                .contains(&StdOp::Set("phone", json!("+1555")))
        );
    }

    #[test]
    fn update_existing_only_defaults() {
        let (u, _) = validate_attributes(&json!({"external_id": "e"})).unwrap();
        assert!(!u.target.update_existing_only);
        let alias = json!({"user_alias": {"alias_name": "n", "alias_label": "l"}});
        let (u, _) = validate_attributes(&alias).unwrap();
        assert!(u.target.update_existing_only);
        let alias = json!({"user_alias": {"alias_name": "n", "alias_label": "l"}, "_update_existing_only": false});
        let (u, _) = validate_attributes(&alias).unwrap();
        assert!(!u.target.update_existing_only);
    }

    #[test]
    fn partial_success_keeps_indexes() {
        let batch = track(json!({
            "attributes": [{"external_id": "a", "x": 1}, {"first_name": "no id"}, {"external_id": "c", "email": "bad"}],
            "events": [{"external_id": "a", "name": "e", "time": "2020-01-01T00:00:00Z"}],
            "purchases": [{"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 101,
                           "time": "2020-01-01"}]
        }))
        .unwrap();
        assert_eq!(batch.response.attributes_processed, Some(1));
        assert_eq!(batch.response.events_processed, Some(1));
        assert_eq!(batch.response.purchases_processed, Some(0));
        let errs: Vec<_> = batch
            .response
            .errors
            .iter()
            .map(|e| (e.kind.as_str(), e.input_array.as_str(), e.index))
            .collect();
        assert_eq!(
            errs,
            vec![
                (IDENTIFIER_REQUIRED, "attributes", 1),
                (INVALID_EMAIL, "attributes", 2),
                ("'quantity' is not valid", "purchases", 0)
            ]
        );
    }

    #[test]
    fn nothing_valid_is_fatal() {
        let err = track(json!({"events": [{"name": "x", "time": "2020-01-01"}]})).unwrap_err();
        assert_eq!(err.status(), 400);
        let body = err.body();
        assert_eq!(
            body["message"],
            "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
        );
        assert_eq!(body["errors"][0]["type"], IDENTIFIER_REQUIRED);
        assert!(track(json!({})).is_err());
        let too_many: Vec<Value> = (0..76)
            .map(|i| json!({"external_id": i.to_string()}))
            .collect();
        assert_eq!(
            track(json!({"attributes": too_many})).unwrap_err(),
            ApiError::MaxInputLength
        );
    }

    #[test]
    fn standard_fields() {
        let (u, _) = validate_attributes(&json!({
            "external_id": "e", "country": "Australia", "language": "pt-BR", "gender": "female",
            "time_zone": "Mars/Olympus", "dob": "1980-12-21", "home_city": null,
            "subscription_groups": [{"subscription_group_id": "g", "subscription_state": "subscribed"}],
            "bio": "dropped"
        }))
        .unwrap();
        assert!(u.standard.contains(&StdOp::Set("country", json!("AU"))));
        assert!(u.standard.contains(&StdOp::Set("language", json!("pt"))));
        assert!(u.standard.contains(&StdOp::Set("gender", json!("F"))));
        assert!(u.standard.contains(&StdOp::Unset("home_city")));
        assert!(
            !u.standard
                .iter()
                .any(|op| matches!(op, StdOp::Set("time_zone", _)))
        );
        assert!(u.custom.is_empty());
        let (u, _) =
            validate_attributes(&json!({"external_id": "e", "country": "Atlantis"})).unwrap();
        assert_eq!(u.standard, vec![StdOp::Unset("country")]);
        assert_eq!(
            time_zone_name("Eastern Time (US & Canada)").as_deref(),
            Some("America/New_York")
        );
        assert_eq!(
            time_zone_name("Europe/Paris").as_deref(),
            Some("Europe/Paris")
        );
        for bad in [
            json!({"dob": "12/21/1980"}),
            json!({"gender": "X"}),
            json!({"email_subscribe": "yes"}),
        ] {
            let mut obj = bad.as_object().unwrap().clone();
            obj.insert("external_id".into(), json!("e"));
            assert!(validate_attributes(&Value::Object(obj)).is_err(), "{bad}");
        }
    }

    #[test]
    fn nested_errors_drop_all_nested_updates() {
        let batch = track(json!({"attributes": [
            {"external_id": "a", "car": {"make": "x"}, "plain": 1},
            {"external_id": "b", "bad": {"when": {"$time": "never"}}}
        ]}))
        .unwrap();
        assert_eq!(batch.response.attributes_processed, Some(2));
        assert_eq!(batch.response.errors.len(), 1);
        assert_eq!(batch.response.errors[0].index, 1);
        assert_eq!(batch.attributes[0].custom.len(), 1);
        assert_eq!(batch.attributes[0].custom[0].0, "plain");
    }

    #[test]
    fn events_and_purchases() {
        let batch = track(json!({
            "events": [
                {"external_id": "a", "name": "e", "time": "2999-01-01T00:00:00Z"},
                {"external_id": "a", "name": "e", "time": "2020-01-01", "properties": {"time": 1}},
                {"external_id": "a", "name": "e", "time": "nope"},
                {"external_id": "a", "time": "2020-01-01"}
            ],
            "purchases": [{"external_id": "a", "product_id": "p", "currency": "usd", "price": 2.5, "time": "2020-01-01"}]
        }))
        .unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].time_ms, NOW);
        assert_eq!(batch.purchases[0].currency, "USD");
        assert_eq!(batch.purchases[0].quantity, 1);
        let kinds: Vec<_> = batch
            .response
            .errors
            .iter()
            .map(|e| e.kind.clone())
            .collect();
        assert_eq!(
            kinds,
            vec![
                "property name 'time' is reserved",
                "'time' is not valid",
                "'name' is required"
            ]
        );
    }
}
