//! Property tests: every validation function answers `Ok` or a typed error for any input, and
//! never panics. Inputs are arbitrary JSON built around the shapes the endpoints expect, with
//! strings around every length limit.

use eddy_model::limits::{MAX_IDENTIFIER_BYTES, check_identifier, check_name};
use eddy_model::track::validate_track;
use eddy_model::users::{
    parse_merge, validate_alias_new, validate_alias_update, validate_delete, validate_export_ids,
    validate_identify,
};
use eddy_model::wire::TrackRequest;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,12}",
        Just(String::new()),
        (0usize..3).prop_map(|k| "x".repeat(MAX_IDENTIFIER_BYTES - 1 + k)),
        (0usize..3).prop_map(|k| "é".repeat(127 + k)),
        Just("x".repeat(70_000)),
        Just("2024-01-01T00:00:00Z".to_string()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "external_id",
            "braze_id",
            "user_alias",
            "alias_name",
            "alias_label",
            "email",
            "phone",
            "name",
            "time",
            "properties",
            "product_id",
            "currency",
            "price",
            "quantity",
            "app_id",
            "push_tokens",
            "token",
            "device_id",
            "subscription_groups",
            "subscription_group_id",
            "subscription_state",
            "first_name",
            "dob",
            "country",
            "gender",
            "current_location",
            "inc",
            "add",
            "remove",
            "$add",
            "$update",
            "$remove",
            "$time",
            "_merge_objects",
            "_update_existing_only",
            "identifier_to_merge",
            "identifier_to_keep",
            "prioritization",
            "merge_updates",
            "aliases_to_identify",
            "user_aliases",
            "alias_updates",
            "external_ids",
        ])
        .prop_map(str::to_string),
        text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn track_validation_never_panics(attributes in prop::collection::vec(json_value(), 0..4),
                                     events in prop::collection::vec(json_value(), 0..4),
                                     purchases in prop::collection::vec(json_value(), 0..4)) {
        let sizes = [("attributes", attributes.len()), ("events", events.len()), ("purchases", purchases.len())];
        let req = TrackRequest { attributes: Some(attributes), events: Some(events), purchases: Some(purchases) };
        match validate_track(&req, 1_700_000_000_000) {
            Ok(batch) => {
                // What is kept is at most what was sent, and each refusal names a real object.
                prop_assert!(batch.attributes.len() <= sizes[0].1);
                prop_assert!(batch.events.len() <= sizes[1].1);
                prop_assert!(batch.purchases.len() <= sizes[2].1);
                for error in &batch.response.errors {
                    let size = sizes.iter().find(|(name, _)| *name == error.input_array);
                    prop_assert!(size.is_some_and(|(_, n)| error.index < *n), "{:?}", error);
                    prop_assert!(!error.kind.is_empty());
                }
            }
            // A request is refused as the caller's fault, never as eddy's.
            Err(e) => prop_assert!((400..500).contains(&e.status()), "{:?}", e),
        }
    }

    #[test]
    fn body_validation_never_panics(body in json_value()) {
        // Every refusal is the caller's (a 4xx), never an internal failure.
        let callers = |result: Result<(), eddy_model::ApiError>| match result {
            Ok(()) => Ok(()),
            Err(e) if (400..500).contains(&e.status()) => Ok(()),
            Err(e) => Err(TestCaseError::fail(format!("{e:?} is not a 4xx"))),
        };
        callers(parse_merge(&body).map(|_| ()))?;
        let wrapped = json!({"merge_updates": [body.clone()]});
        callers(parse_merge(&wrapped).map(|_| ()))?;
        if let Ok(req) = serde_json::from_value(body.clone()) { callers(validate_identify(&req))?; }
        if let Ok(req) = serde_json::from_value(body.clone()) { callers(validate_alias_new(&req))?; }
        if let Ok(req) = serde_json::from_value(body.clone()) { callers(validate_alias_update(&req))?; }
        if let Ok(req) = serde_json::from_value(body.clone()) { callers(validate_delete(&req))?; }
        if let Ok(req) = serde_json::from_value(body) { callers(validate_export_ids(&req))?; }
    }

    #[test]
    fn limits_hold_for_any_string(s in text()) {
        let identifier = check_identifier("f", &s);
        prop_assert_eq!(identifier.is_ok(), !s.is_empty() && s.len() <= MAX_IDENTIFIER_BYTES);
        let name = check_name("f", &s);
        prop_assert!(name.is_err() || (s.len() <= 255 && !s.is_empty()));
    }
}
