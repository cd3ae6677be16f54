//! The names a Braze template reads: `${first_name}` and friends, `custom_attribute`, and the
//! variables a user's profile gives a template.

use sha2::Digest;

use crate::value::{Object, Value};

/// Rewrites each `${…}` into `["…"]`, so that Braze's names (with spaces too) read as one
/// quoted key: `{{${first_name}}}` → `{{["first_name"]}}`, `custom_attribute.${Shoe Size}` →
/// `custom_attribute["Shoe Size"]`. Quotes inside strings are left alone.
pub fn protect_braze_names(markup: &str) -> std::borrow::Cow<'_, str> {
    if !markup.contains("${") {
        return std::borrow::Cow::Borrowed(markup);
    }
    let mut out = String::with_capacity(markup.len() + 8);
    let bytes = markup.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            out.push(b as char);
            i += 1;
            continue;
        }
        if b == b'"' || b == b'\'' {
            // Only a quote that closes later opens a string, as in QuotedString.
            if markup[i + 1..].contains(b as char) {
                quote = Some(b);
            }
            out.push(b as char);
            i += 1;
            continue;
        }
        if b == b'$'
            && bytes.get(i + 1) == Some(&b'{')
            && let Some(end) = markup[i + 2..].find('}')
        {
            let name = &markup[i + 2..i + 2 + end];
            let q = if name.contains('"') { '\'' } else { '"' };
            // `a.${b}` reads as `a["b"]`.
            if out.ends_with('.') {
                out.pop();
            }
            out.push('[');
            out.push(q);
            out.push_str(name);
            out.push(q);
            out.push(']');
            i += 2 + end + 1;
            continue;
        }
        let ch = markup[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    std::borrow::Cow::Owned(out)
}

/// The fields of a user's `/users/export/ids` object that [`user_variables`] reads: exporting
/// only these keeps a user's events and purchases out of every render.
pub const USER_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "email",
    "phone",
    "external_id",
    "braze_id",
    "home_city",
    "country",
    "dob",
    "gender",
    "language",
    "time_zone",
    "random_bucket",
    "email_subscribe",
    "push_subscribe",
    "custom_attributes",
    "devices",
    "subscription_groups",
];

/// The variables a Braze template sees for a user, from the user's `/users/export/ids` object:
/// the standard tags (`first_name`, `email_address`, `user_id`…) and `custom_attribute`.
pub fn user_variables(user: &serde_json::Value) -> Object {
    let mut vars = Object::default();
    let field = |name: &str| user.get(name).map(Value::from_json).unwrap_or_default();
    let standard = [
        ("first_name", "first_name"),
        ("last_name", "last_name"),
        ("email_address", "email"),
        ("phone_number", "phone"),
        ("user_id", "external_id"),
        ("braze_id", "braze_id"),
        ("city", "home_city"),
        ("country", "country"),
        ("date_of_birth", "dob"),
        ("gender", "gender"),
        ("language", "language"),
        ("time_zone", "time_zone"),
        ("random_bucket_number", "random_bucket"),
        ("email_subscribe", "email_subscribe"),
        ("push_subscribe", "push_subscribe"),
    ];
    for (tag, export) in standard {
        vars.insert(tag.to_string(), field(export));
    }
    let custom = match user.get("custom_attributes") {
        Some(serde_json::Value::Object(o)) => {
            Value::from_json(&serde_json::Value::Object(o.clone()))
        }
        _ => Value::object(Object::default()),
    };
    vars.insert("custom_attribute".into(), custom);
    // eddy keeps a profile's device ids only: the most recent one is `${id}`.
    if let Some(serde_json::Value::Array(devices)) = user.get("devices")
        && let Some(last) = devices.last()
    {
        let mut device = Object::default();
        if let Some(id) = last.get("device_id") {
            device.insert("id".into(), Value::from_json(id));
        }
        vars.insert("most_recently_used_device".into(), Value::object(device));
    }
    // Braze gives every user a fixed bucket in 0..=9999; eddy derives it from the braze id.
    if matches!(vars.get("random_bucket_number"), None | Some(Value::Nil))
        && let Some(braze_id) = user.get("braze_id").and_then(|v| v.as_str())
    {
        let digest = sha2::Sha256::digest(braze_id.as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        vars.insert(
            "random_bucket_number".into(),
            Value::Int((n % 10_000) as i64),
        );
    }
    if let Some(serde_json::Value::Array(groups)) = user.get("subscription_groups") {
        let mut states = Object::default();
        for g in groups {
            if let (Some(id), Some(state)) = (
                g.get("id").and_then(|v| v.as_str()),
                g.get("status").and_then(|v| v.as_str()),
            ) {
                states.insert(id.to_string(), Value::str(state.to_ascii_lowercase()));
            }
        }
        vars.insert("subscribed_state".into(), Value::object(states));
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braze_names_become_quoted_keys() {
        assert_eq!(protect_braze_names("${first_name}"), "[\"first_name\"]");
        assert_eq!(
            protect_braze_names("custom_attribute.${Shoe Size} | default: '${x}'"),
            "custom_attribute[\"Shoe Size\"] | default: '${x}'"
        );
    }
}
