//! identify, alias, delete, merge, export, auth, limits, gzip, durability and the outbox.

use std::io::Write;

use eddy_server::config::RateLimit;
use eddy_testkit::{spawn_app, spawn_with, start};
use serde_json::{Value, json};

fn alias(name: &str, label: &str) -> Value {
    json!({"alias_name": name, "alias_label": label})
}

#[tokio::test]
async fn identify_merges_alias_profile_and_keeps_history() {
    let app = spawn_app().await;
    let a = alias("amp-1", "amplitude_id");
    app.track(json!({
        "attributes": [{"user_alias": a, "_update_existing_only": false, "from_alias": true, "first_name": "Anon"}]
    }))
    .await;
    app.track(json!({"events": [{"user_alias": a, "name": "open", "time": "2020-01-01"}]}))
        .await;
    app.track(json!({
        "attributes": [{"external_id": "u1", "first_name": "Known"}],
        "events": [{"external_id": "u1", "name": "open", "time": "2021-01-01"}]
    }))
    .await;
    let (status, body) = app
        .post(
            "/users/identify",
            json!({"aliases_to_identify": [{"external_id": "u1", "user_alias": a}]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (201, json!({"aliases_processed": 1, "message": "success"}))
    );
    let user = app.user("u1").await.unwrap();
    assert_eq!(
        user["first_name"], "Known",
        "the identified profile's fields win"
    );
    assert_eq!(
        user["custom_attributes"]["from_alias"], true,
        "missing attributes come from the alias profile"
    );
    assert_eq!(
        user["custom_events"][0]["count"], 2,
        "event history is summed"
    );
    assert_eq!(
        user["custom_events"][0]["first"],
        "2020-01-01T00:00:00.000Z"
    );
    assert_eq!(user["user_aliases"], json!([a]));
    // The alias now names the identified profile; the alias-only profile is gone.
    let by_alias = app.user_by(json!({"user_aliases": [a]})).await.unwrap();
    assert_eq!(by_alias["external_id"], "u1");
}

#[tokio::test]
async fn identify_assigns_external_id_when_it_is_new() {
    let app = spawn_app().await;
    let a = alias("x", "l");
    app.track(json!({"attributes": [{"user_alias": a, "_update_existing_only": false, "k": 1}]}))
        .await;
    app.post(
        "/users/identify",
        json!({"aliases_to_identify": [{"external_id": "fresh", "user_alias": a}]}),
    )
    .await;
    let user = app.user("fresh").await.unwrap();
    assert_eq!(user["custom_attributes"]["k"], 1);
    // An identified user with another alias of the same label is not combined.
    let b = alias("y", "l");
    app.track(json!({"attributes": [{"user_alias": b, "_update_existing_only": false, "k": 2}]}))
        .await;
    app.post(
        "/users/identify",
        json!({"aliases_to_identify": [{"external_id": "fresh", "user_alias": b}]}),
    )
    .await;
    assert_eq!(
        app.user("fresh").await.unwrap()["custom_attributes"]["k"],
        1
    );
    assert!(
        app.user_by(json!({"user_aliases": [b]}))
            .await
            .unwrap()
            .get("external_id")
            .is_none()
    );
}

#[tokio::test]
async fn identify_by_email() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"email": "e@x.io", "src": "email"}]}))
        .await;
    app.track(json!({"attributes": [{"external_id": "u", "first_name": "U"}]}))
        .await;
    let (status, _) = app
        .post(
            "/users/identify",
            json!({"emails_to_identify": [{"external_id": "u", "email": "e@x.io", "prioritization": ["unidentified", "most_recently_updated"]}]}),
        )
        .await;
    assert_eq!(status, 201);
    let user = app.user("u").await.unwrap();
    assert_eq!(user["custom_attributes"]["src"], "email");
    assert_eq!(user["email"], "e@x.io");
}

#[tokio::test]
async fn identify_validation() {
    let app = spawn_app().await;
    let (status, _) = app.post("/users/identify", json!({})).await;
    assert_eq!(status, 400);
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"external_id": "u", "user_alias": alias(&i.to_string(), "l")}))
        .collect();
    let (status, body) = app
        .post("/users/identify", json!({"aliases_to_identify": many}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "The max number of external_ids and aliases per request was exceeded"
    );
}

#[tokio::test]
async fn alias_new_and_update() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u", "x": 1}]}))
        .await;
    let (status, body) = app
        .post(
            "/users/alias/new",
            json!({"user_aliases": [
                {"external_id": "u", "alias_name": "n1", "alias_label": "crm"},
                {"alias_name": "anon", "alias_label": "crm"},
                {"external_id": "missing", "alias_name": "n2", "alias_label": "crm"}
            ]}),
        )
        .await;
    assert_eq!((status, body["aliases_processed"].clone()), (201, json!(3)));
    assert_eq!(
        app.user_by(json!({"user_aliases": [alias("n1", "crm")]}))
            .await
            .unwrap()["external_id"],
        "u"
    );
    assert!(
        app.user_by(json!({"user_aliases": [alias("anon", "crm")]}))
            .await
            .is_some(),
        "alias-only user created"
    );
    assert!(
        app.user_by(json!({"user_aliases": [alias("n2", "crm")]}))
            .await
            .is_none(),
        "unknown external id: not added"
    );
    let (status, _) = app
        .post("/users/alias/update", json!({"alias_updates": [{"alias_label": "crm", "old_alias_name": "n1", "new_alias_name": "n9"}]}))
        .await;
    assert_eq!(status, 201);
    assert!(
        app.user_by(json!({"user_aliases": [alias("n1", "crm")]}))
            .await
            .is_none()
    );
    assert_eq!(
        app.user("u").await.unwrap()["user_aliases"],
        json!([alias("n9", "crm")])
    );
}

#[tokio::test]
async fn delete_removes_profiles_and_identifiers() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [
        {"external_id": "a", "email": "a@x.io"},
        {"external_id": "b"},
        {"user_alias": alias("c", "l"), "_update_existing_only": false}
    ]}))
    .await;
    let (status, body) = app
        .post(
            "/users/delete",
            json!({"external_ids": ["a", "b", "zzz"], "user_aliases": [alias("c", "l")]}),
        )
        .await;
    assert_eq!(
        (status, body),
        (201, json!({"deleted": 3, "message": "success"}))
    );
    assert!(app.user("a").await.is_none());
    assert!(
        app.user_by(json!({"email_address": "a@x.io"}))
            .await
            .is_none()
    );
    // The external id is free again: a new profile with a new braze id.
    app.track(json!({"attributes": [{"external_id": "a", "x": 1}]}))
        .await;
    assert_eq!(
        app.user("a").await.unwrap()["custom_attributes"],
        json!({"x": 1})
    );
    let (status, _) = app.post("/users/delete", json!({})).await;
    assert_eq!(status, 400);
}

/// Braze's migration period: after a rename the user answers to both ids, writes by either
/// reach the same profile, and only the deprecated one can be removed.
#[tokio::test]
async fn external_ids_are_renamed_then_the_deprecated_ones_removed() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [
        {"external_id": "old-1", "plan": "gold"},
        {"external_id": "taken"}
    ]}))
    .await;
    // Braze's documented request example's shape, with one entry per rule it names.
    let (status, body) = app
        .post(
            "/users/external_ids/rename",
            json!({"external_id_renames": [
                {"current_external_id": "old-1", "new_external_id": "new-1"},
                {"current_external_id": "taken", "new_external_id": "taken"},
                {"current_external_id": "taken", "new_external_id": "new-1"},
                {"current_external_id": "nobody", "new_external_id": "x"},
                {"current_external_id": "old-1", "new_external_id": "newer-1"}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "success");
    assert_eq!(body["external_ids"], json!(["old-1"]));
    let refused: Vec<u64> = body["rename_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [1, 2, 3, 4], "{body}");
    assert!(
        body["rename_errors"][3][1]
            .as_str()
            .unwrap()
            .contains("deprecated"),
        "a deprecated id cannot be renamed again: {body}"
    );

    // Both ids name the user, whose primary id is the new one.
    let by_new = app.user("new-1").await.unwrap();
    assert_eq!(by_new["external_id"], "new-1");
    assert_eq!(app.user("old-1").await.unwrap(), by_new);
    // A write by the old id lands on the same profile.
    app.track(json!({"attributes": [{"external_id": "old-1", "visits": 3}]}))
        .await;
    assert_eq!(
        app.user("new-1").await.unwrap()["custom_attributes"]["visits"],
        3
    );

    let (status, body) = app
        .post(
            "/users/external_ids/remove",
            json!({"external_ids": ["old-1", "new-1", "ghost"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed_ids"], json!(["old-1"]));
    let refused: Vec<u64> = body["removal_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [1, 2], "a primary id is never removed: {body}");
    assert!(app.user("old-1").await.is_none());
    assert_eq!(
        app.user("new-1").await.unwrap()["custom_attributes"]["plan"],
        "gold"
    );
    // The removed id is free again: it makes a new user.
    app.track(json!({"attributes": [{"external_id": "old-1", "plan": "free"}]}))
        .await;
    assert_ne!(
        app.user("old-1").await.unwrap()["braze_id"],
        app.user("new-1").await.unwrap()["braze_id"]
    );

    // Deleting a renamed user frees its deprecated ids too.
    app.post(
        "/users/external_ids/rename",
        json!({"external_id_renames": [{"current_external_id": "new-1", "new_external_id": "new-2"}]}),
    )
    .await;
    let (status, _) = app
        .post("/users/delete", json!({"external_ids": ["new-2"]}))
        .await;
    assert_eq!(status, 201);
    assert!(app.user("new-1").await.is_none());

    // Braze's documented examples, as written.
    app.track(json!({"attributes": [{"external_id": "existing_external_id"}]}))
        .await;
    let (status, body) = app
        .post(
            "/users/external_ids/rename",
            json!({"external_id_renames" :[{"current_external_id": "existing_external_id", "new_external_id" : "new_external_id"}]}),
        )
        .await;
    assert_eq!(
        (status, &body["external_ids"]),
        (200, &json!(["existing_external_id"])),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/users/external_ids/remove",
            json!({"external_ids" :["existing_deprecated_external_id_string"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["removal_errors"][0][0], 0,
        "an id nobody has is refused by index: {body}"
    );

    for body in [
        json!({"external_id_renames": []}),
        json!({"external_id_renames": [{"current_external_id": "a"}]}),
        json!({"external_id_renames": (0..51).map(|i| json!({"current_external_id": format!("a{i}"), "new_external_id": format!("b{i}")})).collect::<Vec<_>>()}),
    ] {
        let (status, answer) = app.post("/users/external_ids/rename", body).await;
        assert_eq!(status, 400, "{answer}");
    }
    let (status, answer) = app
        .post("/users/external_ids/remove", json!({"external_ids": []}))
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn merge_folds_profiles_with_braze_texts() {
    let app = spawn_app().await;
    app.track(json!({
        "attributes": [{"external_id": "old", "only_old": 1, "first_name": "Old"}, {"external_id": "new", "first_name": "New"}],
        "purchases": [{"external_id": "old", "product_id": "p", "currency": "USD", "price": 3, "time": "2020-01-01"}]
    }))
    .await;
    let (status, body) = app
        .post("/users/merge", json!({"merge_updates": [{"identifier_to_merge": {"external_id": "old"}, "identifier_to_keep": {"external_id": "new"}}]}))
        .await;
    assert_eq!((status, body), (202, json!({"message": "success"})));
    assert!(app.user("old").await.is_none());
    let user = app.user("new").await.unwrap();
    assert_eq!(user["first_name"], "New");
    assert_eq!(user["custom_attributes"]["only_old"], 1);
    assert_eq!(user["purchases"][0]["count"], 1);
    let (status, body) = app
        .post("/users/merge", json!({"merge_updates": "x"}))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("'merge_updates' must be an array of objects"))
    );
}

#[tokio::test]
async fn auth_errors_and_permissions() {
    let app = spawn_app().await;
    let body = json!({"attributes": [{"external_id": "u", "x": 1}]});
    let (status, resp) = app.post_as("wrong-key", "/users/track", body.clone()).await;
    assert_eq!((status, resp), (401, json!({"message": "Invalid API Key"})));
    let r = app
        .client
        .post(app.url("/users/track"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "missing key");
    let r = app
        .client
        .post(app.url("/users/track"))
        .header("authorization", format!("Bearer \"{}\"", app.key))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "quoted key");
    let export_only = app.create_key("default", Some(&["users.export.ids"])).await;
    let (status, resp) = app
        .post_as(&export_only, "/users/track", body.clone())
        .await;
    assert_eq!(status, 403);
    assert!(
        resp["message"].as_str().unwrap().contains("users.track"),
        "{resp}"
    );
    // Legacy: api_key in the body or the query string.
    let mut legacy = body.clone();
    legacy["api_key"] = json!(app.key);
    let r = app
        .client
        .post(app.url("/users/track"))
        .json(&legacy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .client
        .post(app.url(&format!("/users/track?api_key={}", app.key)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A revoked key stops working.
    let (_, created) = app
        .admin_post(
            "/eddy/v1/workspaces/default/api-keys",
            json!({"name": "tmp"}),
        )
        .await;
    let r = app
        .client
        .delete(app.url(&format!(
            "/eddy/v1/workspaces/default/api-keys/{}",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        app.post_as(created["key"].as_str().unwrap(), "/users/track", body)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn keys_belong_to_one_workspace() {
    let app = spawn_app().await;
    let (status, ws) = app
        .admin_post("/eddy/v1/workspaces", json!({"name": "other"}))
        .await;
    assert_eq!(status, 201, "{ws}");
    let other = app.create_key("other", None).await;
    app.post_as(
        &other,
        "/users/track",
        json!({"attributes": [{"external_id": "u", "ws": "other"}]}),
    )
    .await;
    assert!(
        app.user("u").await.is_none(),
        "the default workspace does not see it"
    );
    let (_, found) = app
        .post_as(&other, "/users/export/ids", json!({"external_ids": ["u"]}))
        .await;
    assert_eq!(found["users"][0]["custom_attributes"]["ws"], "other");
    let (status, _) = app
        .admin_post("/eddy/v1/workspaces", json!({"name": "other"}))
        .await;
    assert_eq!(status, 409);
    let (_, list) = app.admin_get("/eddy/v1/workspaces").await;
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 2);
    let r = app
        .client
        .get(app.url("/eddy/v1/workspaces"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn rate_limits_and_headers() {
    let app = spawn_with(|c| {
        c.rate_limits.insert(
            "users.track".into(),
            RateLimit {
                limit: 2,
                window_seconds: 3600,
            },
        );
    })
    .await;
    let body = json!({"attributes": [{"external_id": "u", "x": 1}]});
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = app
            .client
            .post(app.url("/users/track"))
            .bearer_auth(&app.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let h = r.headers();
        seen.push((
            r.status().as_u16(),
            h["x-ratelimit-limit"].to_str().unwrap().to_string(),
            h["x-ratelimit-remaining"].to_str().unwrap().to_string(),
        ));
        assert!(
            h["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 1_700_000_000
        );
    }
    assert_eq!(
        seen,
        vec![
            (201, "2".into(), "1".into()),
            (201, "2".into(), "0".into()),
            (429, "2".into(), "0".into())
        ]
    );
    // Other endpoints have their own windows, and every response carries the headers.
    for path in ["/health", "/nope", "/metrics"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert!(r.headers().contains_key("x-ratelimit-limit"), "{path}");
    }
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn body_limits_and_gzip() {
    let app = spawn_with(|c| c.max_body_bytes = 2048).await;
    let big = json!({"attributes": [{"external_id": "u", "x": "y".repeat(250), "z": "y".repeat(250), "w": "y".repeat(250)}], "pad": "p".repeat(3000)});
    let (status, body) = app.track(big).await;
    assert_eq!(
        (status, body),
        (413, json!({"message": "Request Entity Too Large"}))
    );
    let small = json!({"attributes": [{"external_id": "gz", "x": 1}]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(small.to_string().as_bytes()).unwrap();
    let r = app
        .client
        .post(app.url("/users/track"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(app.user("gz").await.unwrap()["custom_attributes"]["x"], 1);
    // A gzip bomb is cut at the limit after decompression.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b' '; 1 << 20]).unwrap();
    let r = app
        .client
        .post(app.url("/users/track"))
        .bearer_auth(&app.key)
        .header("content-encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u", "x": 1}], "events": [{"external_id": "u", "name": "e", "time": "2020-01-01"}]}))
        .await;
    let key = app.key.clone();
    let before = app.user("u").await.unwrap();
    let dir = app.stop().await;
    let mut again = start(dir.clone(), |_| {}).await;
    again.key = key;
    assert_eq!(again.user("u").await.unwrap(), before);
    // Ids keep growing after a restart: a new user gets a new braze id.
    again
        .track(json!({"attributes": [{"external_id": "v", "x": 1}]}))
        .await;
    assert_ne!(
        again.user("v").await.unwrap()["braze_id"],
        before["braze_id"]
    );
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn writes_fill_the_currents_outbox_atomically() {
    let app = spawn_app().await;
    app.track(json!({
        "attributes": [{"external_id": "u", "email": "u@x.io", "email_subscribe": "opted_in",
                        "subscription_groups": [{"subscription_group_id": "g", "subscription_state": "unsubscribed"}]}],
        "events": [{"external_id": "u", "name": "played", "time": "2020-01-01T00:00:10Z", "properties": {"k": "v"}}],
        "purchases": [{"external_id": "u", "product_id": "p", "currency": "EUR", "price": 1.5, "quantity": 2, "time": "2020-01-01"}]
    }))
    .await;
    app.post("/users/delete", json!({"external_ids": ["u"]}))
        .await;
    let outbox = app.store.outbox(0, 100).unwrap();
    let types: Vec<&str> = outbox
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "users.behaviors.subscription.GlobalStateChange",
            "users.behaviors.subscriptiongroup.StateChange",
            "users.behaviors.CustomEvent",
            "users.behaviors.Purchase",
            "users.behaviors.Purchase",
            "users.UserDeleteRequest"
        ]
    );
    let seqs: Vec<u64> = outbox.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    let event = &outbox[2].1["record"];
    assert_eq!(event["name"], "played");
    assert_eq!(event["time"], 1_577_836_810);
    assert_eq!(event["external_user_id"], "u");
    assert_eq!(event["properties"], "{\"k\":\"v\"}");
    assert_eq!(outbox[0].1["record"]["subscription_status"], "Opted In");
    assert_eq!(outbox[0].1["record"]["email_address"], "u@x.io");
    let ids: std::collections::HashSet<&str> = outbox
        .iter()
        .map(|(_, e)| e["record"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "every event has its own id");
    assert_eq!(
        outbox[5].1["record"]["user_id"],
        outbox[2].1["record"]["user_id"]
    );
}

#[tokio::test]
async fn metrics_and_health() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u", "x": 1}]}))
        .await;
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("eddy_http_requests_total{group=\"users.track\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(text.contains("eddy_writer_commits_total"), "{text}");
}
