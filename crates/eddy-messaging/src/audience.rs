//! Braze's connected-audience filter (`audience` of the send endpoints), compiled onto eddy's
//! segment filters so that it is evaluated by the same index as segments.

use serde_json::{Value, json};

use crate::MessagingError;

/// Deepest nesting accepted, as segment filters.
const MAX_DEPTH: usize = 32;

/// Translates a connected audience object into an eddy segment filter (JSON, for
/// `eddy_segments::Filter::parse`).
pub fn compile(audience: &Value) -> Result<Value, MessagingError> {
    node(audience, 0)
}

fn node(value: &Value, depth: usize) -> Result<Value, MessagingError> {
    if depth > MAX_DEPTH {
        return Err(MessagingError::invalid("audience: nested too deeply"));
    }
    let Value::Object(map) = value else {
        return Err(MessagingError::invalid(
            "audience: each filter is an object",
        ));
    };
    if map.len() != 1 {
        return Err(MessagingError::invalid(
            "audience: each filter object has exactly one key (AND, OR or a filter name)",
        ));
    }
    let Some((key, inner)) = map.iter().next() else {
        return Err(MessagingError::invalid("audience: empty filter"));
    };
    match key.as_str() {
        "AND" | "OR" => {
            let Value::Array(items) = inner else {
                return Err(MessagingError::invalid(format!(
                    "audience: {key} takes an array"
                )));
            };
            if items.is_empty() {
                return Err(MessagingError::invalid(format!(
                    "audience: {key} needs at least one filter"
                )));
            }
            let children = items
                .iter()
                .map(|c| node(c, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({key.to_ascii_lowercase(): children}))
        }
        "custom_attribute" => custom_attribute(inner),
        "email_subscription_status" => subscription_status("email_subscribe", inner),
        "push_subscription_status" => subscription_status("push_subscribe", inner),
        "last_used_app" | "interacted_with_campaign" | "interacted_with_canvas" => {
            Err(MessagingError::invalid(format!(
                "audience: '{key}' needs app sessions or message interactions, which eddy's segments do not index"
            )))
        }
        other => Err(MessagingError::invalid(format!(
            "audience: '{other}' is not a connected audience filter"
        ))),
    }
}

fn custom_attribute(inner: &Value) -> Result<Value, MessagingError> {
    let name = inner
        .get("custom_attribute_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            MessagingError::invalid("audience: custom_attribute needs 'custom_attribute_name'")
        })?;
    let comparison = inner
        .get("comparison")
        .and_then(Value::as_str)
        .ok_or_else(|| MessagingError::invalid("audience: custom_attribute needs 'comparison'"))?;
    let value = inner.get("value").cloned().unwrap_or(Value::Null);
    let leaf = |op: &str, value: Value| json!({"attribute": name, "op": op, "value": value});
    let not = |filter: Value| json!({"not": filter});
    let compiled = match comparison {
        "equals" => leaf("equals", value),
        "not_equal" | "does_not_equal" => leaf("not_equals", value),
        "greater_than" => leaf("greater_than", value),
        "less_than" => leaf("less_than", value),
        "exists" => leaf("exists", Value::Null),
        "does_not_exist" => leaf("not_exists", Value::Null),
        "matches_regex" => leaf("matches_regex", value),
        "does_not_match_regex" => not(leaf("matches_regex", value)),
        "includes_value" => leaf("includes_value", value),
        "does_not_include_value" => not(leaf("includes_value", value)),
        "after" => leaf("after", value),
        "before" => leaf("before", value),
        "less_than_x_days_ago" => leaf("less_than_days_ago", value),
        "greater_than_x_days_ago" => leaf("more_than_days_ago", value),
        other => {
            return Err(MessagingError::invalid(format!(
                "audience: comparison '{other}' is not supported for custom_attribute '{name}'"
            )));
        }
    };
    Ok(compiled)
}

fn subscription_status(attribute: &str, inner: &Value) -> Result<Value, MessagingError> {
    let comparison = inner.get("comparison").and_then(Value::as_str);
    let value = inner.get("value").and_then(Value::as_str);
    let (Some(comparison), Some(value)) = (comparison, value) else {
        return Err(MessagingError::invalid(format!(
            "audience: {attribute} status needs 'comparison' (is, is_not) and 'value'"
        )));
    };
    if !matches!(value, "opted_in" | "subscribed" | "unsubscribed") {
        return Err(MessagingError::invalid(format!(
            "audience: '{value}' is not opted_in, subscribed or unsubscribed"
        )));
    }
    let op = match comparison {
        "is" => "equals",
        "is_not" => "not_equals",
        other => {
            return Err(MessagingError::invalid(format!(
                "audience: comparison '{other}' is not is or is_not"
            )));
        }
    };
    Ok(json!({"attribute": attribute, "op": op, "value": value}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braze_example_compiles_to_a_segment_filter() {
        let audience = json!({"AND": [
            {"custom_attribute": {"custom_attribute_name": "eye_color", "comparison": "equals", "value": "blue"}},
            {"custom_attribute": {"custom_attribute_name": "favorite_foods", "comparison": "does_not_include_value", "value": "pizza"}},
            {"OR": [
                {"custom_attribute": {"custom_attribute_name": "age", "comparison": "greater_than", "value": 30}},
                {"email_subscription_status": {"comparison": "is", "value": "opted_in"}}
            ]}
        ]});
        let compiled = compile(&audience).unwrap();
        assert_eq!(
            compiled,
            json!({"and": [
                {"attribute": "eye_color", "op": "equals", "value": "blue"},
                {"not": {"attribute": "favorite_foods", "op": "includes_value", "value": "pizza"}},
                {"or": [
                    {"attribute": "age", "op": "greater_than", "value": 30},
                    {"attribute": "email_subscribe", "op": "equals", "value": "opted_in"}
                ]}
            ]})
        );
        eddy_segments::filter::Filter::parse(&compiled).unwrap();
    }

    #[test]
    fn unknown_filters_and_comparisons_are_named() {
        let err = compile(&json!({"last_used_app": {"comparison": "after", "value": "x"}}));
        assert!(err.unwrap_err().to_string().contains("last_used_app"));
        let err = compile(
            &json!({"custom_attribute": {"custom_attribute_name": "a", "comparison": "sounds_like", "value": 1}}),
        );
        assert!(err.unwrap_err().to_string().contains("sounds_like"));
        assert!(compile(&json!({"AND": []})).is_err());
        assert!(compile(&json!([])).is_err());
    }
}
