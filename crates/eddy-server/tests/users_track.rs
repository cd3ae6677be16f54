//! `/users/track` through HTTP: identifiers, creation rules, attribute types, events,
//! purchases, partial success, errors, limits, data points.

use eddy_model::track::{IDENTIFIER_REQUIRED, INVALID_EMAIL};
use eddy_testkit::{spawn_app, spawn_with};
use serde_json::{Value, json};

#[tokio::test]
async fn creates_users_and_answers_with_counts() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({
            "attributes": [{"external_id": "u1", "first_name": "Jane", "loyalty_points": 1982}],
            "events": [{"external_id": "u1", "name": "rented_movie", "time": "2013-07-16T19:20:45+01:00"}],
            "purchases": [{"external_id": "u1", "product_id": "backpack", "currency": "USD", "price": 40.0, "time": "2013-07-16T19:20:30+01:00"}]
        }))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        body,
        json!({"message": "success", "attributes_processed": 1, "events_processed": 1, "purchases_processed": 1})
    );
    let user = app.user("u1").await.expect("user exists");
    assert_eq!(user["first_name"], "Jane");
    assert_eq!(user["custom_attributes"]["loyalty_points"], 1982);
    assert_eq!(user["custom_events"][0]["name"], "rented_movie");
    assert_eq!(
        user["custom_events"][0]["first"],
        "2013-07-16T18:20:45.000Z"
    );
    assert_eq!(user["purchases"][0]["name"], "backpack");
    assert_eq!(user["braze_id"].as_str().map(str::len), Some(24));
}

#[tokio::test]
async fn only_present_arrays_get_counts() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"events": [{"external_id": "u", "name": "e", "time": "2020-01-01"}]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body, json!({"message": "success", "events_processed": 1}));
}

#[tokio::test]
async fn invalid_objects_never_cost_valid_ones() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({
            "attributes": [
                {"external_id": "ok1", "a": 1},
                {"first_name": "nobody"},
                {"external_id": "bad-email", "email": "not-an-email"},
                {"external_id": "ok2", "a": 2}
            ],
            "purchases": [{"external_id": "ok1", "product_id": "p", "currency": "USD", "price": 1, "quantity": 0, "time": "2020-01-01"}]
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["attributes_processed"], 2);
    assert_eq!(body["purchases_processed"], 0);
    assert_eq!(
        body["errors"],
        json!([
            {"type": IDENTIFIER_REQUIRED, "input_array": "attributes", "index": 1},
            {"type": INVALID_EMAIL, "input_array": "attributes", "index": 2},
            {"type": "'quantity' is not valid", "input_array": "purchases", "index": 0}
        ])
    );
    assert_eq!(app.user("ok1").await.unwrap()["custom_attributes"]["a"], 1);
    assert_eq!(app.user("ok2").await.unwrap()["custom_attributes"]["a"], 2);
    assert!(app.user("bad-email").await.is_none());
}

#[tokio::test]
async fn nothing_valid_is_a_400_with_braze_text() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"events": [{"name": "x", "time": "2020-01-01"}]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
    );
    assert_eq!(
        body["errors"],
        json!([{"type": IDENTIFIER_REQUIRED, "input_array": "events", "index": 0}])
    );
    let (status, body) = app.track(json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"], json!([]));
}

#[tokio::test]
async fn more_than_75_objects_is_rejected() {
    let app = spawn_app().await;
    let objects: Vec<Value> = (0..76)
        .map(|i| json!({"external_id": format!("u{i}"), "x": 1}))
        .collect();
    let (status, body) = app.track(json!({"attributes": objects})).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "Max Input Length Exceeded");
    assert!(app.user("u0").await.is_none());
    let objects: Vec<Value> = (0..75)
        .map(|i| json!({"external_id": format!("u{i}"), "x": 1}))
        .collect();
    assert_eq!(app.track(json!({"attributes": objects})).await.0, 201);
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/users/track"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{\"attributes\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON in request body"),
        "{body}"
    );
}

#[tokio::test]
async fn update_existing_only_rules() {
    let app = spawn_app().await;
    // Aliases default to update-only: nothing is created.
    let alias = json!({"alias_name": "a@b.co", "alias_label": "email"});
    let (status, _) = app
        .track(json!({"attributes": [{"user_alias": alias, "x": 1}]}))
        .await;
    assert_eq!(status, 201);
    assert!(
        app.user_by(json!({"user_aliases": [alias]}))
            .await
            .is_none()
    );
    // With _update_existing_only false an alias-only profile is created.
    app.track(
        json!({"attributes": [{"user_alias": alias, "_update_existing_only": false, "x": 1}]}),
    )
    .await;
    let user = app
        .user_by(json!({"user_aliases": [alias]}))
        .await
        .expect("alias-only profile");
    assert_eq!(user["user_aliases"], json!([alias]));
    assert!(user.get("external_id").is_none());
    // Events on aliases are update-only too, and then land on the existing profile.
    app.track(json!({"events": [{"user_alias": alias, "name": "e", "time": "2020-01-01"}]}))
        .await;
    let user = app.user_by(json!({"user_aliases": [alias]})).await.unwrap();
    assert_eq!(user["custom_events"][0]["count"], 1);
    // External ids are created unless update-only is asked for.
    app.track(
        json!({"attributes": [{"external_id": "ghost", "_update_existing_only": true, "x": 1}]}),
    )
    .await;
    assert!(app.user("ghost").await.is_none());
    // An unknown braze_id names nobody.
    let (status, _) = app
        .track(json!({"attributes": [{"braze_id": "000000000000000000000000", "x": 1}]}))
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn email_identifies_and_prefers_the_identified_profile() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"email": "Jo@Example.com", "first_name": "EmailOnly"}]}))
        .await;
    let user = app
        .user_by(json!({"email_address": "jo@example.com"}))
        .await
        .expect("email-only user");
    assert_eq!(user["first_name"], "EmailOnly");
    assert!(user.get("external_id").is_none());
    // A second profile with the same email and an external id takes precedence.
    app.track(json!({"attributes": [{"external_id": "jo", "email": "jo@example.com"}]}))
        .await;
    app.track(json!({"attributes": [{"email": "jo@example.com", "last_name": "Routed"}]}))
        .await;
    assert_eq!(app.user("jo").await.unwrap()["last_name"], "Routed");
    // Phone works the same; email wins when both are given.
    app.track(json!({"attributes": [{"phone": "+15555550100", "first_name": "Phone"}]}))
        .await;
    assert_eq!(
        app.user_by(json!({"phone": "+15555550100"})).await.unwrap()["first_name"],
        "Phone"
    );
}

#[tokio::test]
async fn custom_attribute_types() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"attributes": [{
            "external_id": "u",
            "s": "text", "i": 7, "f": 1.5, "b": true, "d": "2021-12-01T10:00:00Z", "us_date": "12/1/2021",
            "arr": ["hotdog", "hotdog", "pizza"],
            "counter": {"inc": 5},
            "car": {"make": "Volvo", "bought": {"$time": "2020-05-28"}, "spec": {"hp": 100, "doors": 4}},
            "pets": [{"id": 1, "type": "dog"}, {"id": 2, "type": "cat"}],
            "gone": "soon"
        }]}))
        .await;
    assert_eq!(status, 201, "{body}");
    app.track(json!({"attributes": [{
        "external_id": "u",
        "_merge_objects": true,
        "arr": {"add": ["sushi", "hotdog"], "remove": ["pizza"]},
        "counter": {"inc": -2},
        "car": {"spec": {"hp": 120}},
        "pets": {"$update": [{"$identifier_key": "id", "$identifier_value": 2, "$new_object": {"breed": "siamese"}}]},
        "gone": null
    }]}))
    .await;
    app.track(
        json!({"attributes": [{"external_id": "u", "pets": {"$add": [{"id": 3, "type": "dog"}]}}]}),
    )
    .await;
    app.track(json!({"attributes": [{"external_id": "u", "pets": {"$remove": [{"$identifier_key": "type", "$identifier_value": "dog"}]}}]}))
        .await;
    let attrs = app.user("u").await.unwrap()["custom_attributes"].clone();
    assert_eq!(attrs["s"], "text");
    assert_eq!(attrs["i"], 7);
    assert_eq!(attrs["f"], 1.5);
    assert_eq!(attrs["b"], true);
    assert_eq!(attrs["d"], "2021-12-01T10:00:00.000Z");
    assert_eq!(attrs["us_date"], "2021-12-01T00:00:00.000Z");
    assert_eq!(attrs["arr"], json!(["sushi", "hotdog"]));
    assert_eq!(attrs["counter"], 3);
    assert_eq!(
        attrs["car"],
        json!({"make": "Volvo", "bought": {"$time": "2020-05-28T00:00:00.000Z"}, "spec": {"hp": 120, "doors": 4}})
    );
    assert_eq!(
        attrs["pets"],
        json!([{"id": 2, "type": "cat", "breed": "siamese"}])
    );
    assert!(attrs.get("gone").is_none());
}

#[tokio::test]
async fn arrays_are_capped_oldest_first() {
    let app = spawn_with(|c| c.max_array_length = 3).await;
    app.track(json!({"attributes": [{"external_id": "u", "arr": ["a", "b", "c"]}]}))
        .await;
    app.track(json!({"attributes": [{"external_id": "u", "arr": {"add": ["d"]}}]}))
        .await;
    assert_eq!(
        app.user("u").await.unwrap()["custom_attributes"]["arr"],
        json!(["b", "c", "d"])
    );
}

#[tokio::test]
async fn invalid_nested_attribute_drops_every_nested_update_of_the_request() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"attributes": [
            {"external_id": "a", "car": {"make": "x"}, "plain": 1},
            {"external_id": "b", "bad": {"when": {"$time": "not a time"}}}
        ]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["errors"][0]["index"], 1);
    let attrs = app.user("a").await.unwrap()["custom_attributes"].clone();
    assert_eq!(attrs, json!({"plain": 1}));
}

#[tokio::test]
async fn type_mismatch_is_reported_and_the_rest_applies() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u", "name_attr": "text"}]}))
        .await;
    let (status, body) = app
        .track(json!({"attributes": [{"external_id": "u", "name_attr": {"inc": 1}, "other": 2}]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        body["errors"][0]["type"],
        "custom attribute 'name_attr' holds another type"
    );
    assert_eq!(
        app.user("u").await.unwrap()["custom_attributes"]["other"],
        2
    );
}

#[tokio::test]
async fn standard_fields_are_validated_and_mapped() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"attributes": [{
            "external_id": "u", "country": "Australia", "language": "pt-BR", "gender": "F", "dob": "1980-12-21",
            "time_zone": "Not/AZone", "home_city": "Paris", "email_subscribe": "opted_in",
            "current_location": {"longitude": -73.991443, "latitude": 40.753824},
            "subscription_groups": [{"subscription_group_id": "sg1", "subscription_state": "subscribed"}],
            "push_tokens": [{"app_id": "app", "token": "tok"}]
        }]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let user = app.user("u").await.unwrap();
    assert_eq!(user["country"], "AU");
    assert_eq!(user["language"], "pt");
    assert_eq!(user["gender"], "F");
    assert_eq!(user["dob"], "1980-12-21");
    assert!(user.get("time_zone").is_none());
    assert_eq!(user["email_subscribe"], "opted_in");
    assert_eq!(
        user["subscription_groups"],
        json!([{"id": "sg1", "status": "subscribed"}])
    );
    assert_eq!(user["push_tokens"][0]["token"], "tok");
    assert!(
        user.get("custom_attributes").is_none(),
        "standard fields are not custom attributes"
    );
    // An unmappable country becomes null; a bad dob fails the object.
    let (_, body) = app.track(json!({"attributes": [{"external_id": "u", "country": "Atlantis"}, {"external_id": "u", "dob": "21/12/1980"}]})).await;
    assert_eq!(
        body["errors"],
        json!([{"type": "'dob' is not valid", "input_array": "attributes", "index": 1}])
    );
    assert!(app.user("u").await.unwrap().get("country").is_none());
}

#[tokio::test]
async fn event_rules() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({"events": [
            {"external_id": "u", "name": "future", "time": "2999-01-01T00:00:00Z"},
            {"external_id": "u", "name": "bad", "time": "2020-01-01", "properties": {"event_name": 1}},
            {"external_id": "u", "name": "bad", "time": "2020-01-01", "properties": {"$x": 1}},
            {"external_id": "u", "name": "e", "time": "07/16/2013", "properties": {"nested": {"a": [1, 2]}}}
        ]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["events_processed"], 2);
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    let user = app.user("u").await.unwrap();
    let future = user["custom_events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "future")
        .unwrap()
        .clone();
    assert!(
        future["first"].as_str().unwrap() < "2999",
        "future times are clamped to now: {future}"
    );
}

#[tokio::test]
async fn purchases_count_quantity_and_revenue() {
    let app = spawn_app().await;
    app.track(json!({"purchases": [
        {"external_id": "u", "product_id": "p", "currency": "usd", "price": 2.5, "quantity": 4, "time": "2020-01-01"}
    ]}))
    .await;
    let user = app.user("u").await.unwrap();
    assert_eq!(user["purchases"][0]["count"], 4);
    assert_eq!(user["total_revenue"], 10.0);
}

#[tokio::test]
async fn data_points_file_no_op_writes_as_non_billable() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u", "first_name": "A", "x": 1, "email_subscribe": "subscribed"}]})).await;
    // external_id (non-billable) + first_name + x (billable) + email_subscribe (non-billable).
    assert_eq!(app.usage_total().await, (2, 2));
    app.track(json!({"attributes": [{"external_id": "u", "first_name": "A", "x": 1}]}))
        .await;
    assert_eq!(
        app.usage_total().await,
        (2, 4),
        "unchanged values are non-billable"
    );
    app.track(json!({"attributes": [{"external_id": "u", "arr": {"add": ["a", "b", "c"]}}]}))
        .await;
    assert_eq!(
        app.usage_total().await,
        (5, 4),
        "incremental array adds cost one point per value"
    );
    app.track(json!({"events": [{"external_id": "u", "name": "e", "time": "2020-01-01"}]}))
        .await;
    assert_eq!(app.usage_total().await, (6, 4));
}
