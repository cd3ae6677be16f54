//! What an operator meets around the endpoints: clear answers for what eddy does not implement
//! or a method a route lacks, only real permissions, filter errors in the API's words.

use eddy_testkit::{TestApp, spawn_app};
use serde_json::{Value, json};

#[tokio::test]
async fn braze_endpoints_eddy_lacks_are_named_and_wrong_methods_answer_405_json() {
    let app = spawn_app().await;
    let (status, body) = app.post("/preference_center/v1", json!({})).await;
    assert_eq!(status, 501);
    assert_eq!(
        body["message"],
        "eddy does not implement POST /preference_center/v1"
    );
    let (status, body) = app
        .post("/sms/invalid_phone_numbers/remove", json!({}))
        .await;
    assert_eq!(status, 501, "{body}");
    // An unknown path is still Braze's 404.
    let (status, body) = app.post("/no/such/path", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Invalid URL");
    // A route with another method: 405, a JSON body and the Allow header.
    let response = app
        .client
        .get(app.url("/users/track"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let body: Value = response.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("GET /users/track"),
        "{body}"
    );
    let metrics = app.metrics().await;
    for line in [
        "eddy_http_requests_total{group=\"unmatched\",status=\"501\"} 2",
        "eddy_http_requests_total{group=\"unmatched\",status=\"404\"} 1",
        "eddy_http_requests_total{group=\"unmatched\",status=\"405\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn only_permissions_of_real_endpoints_are_offered() {
    let app = spawn_app().await;
    for permission in ["users.track.sync", "sms.invalid_phone_numbers.remove"] {
        let (status, body) = app
            .admin_post(
                "/eddy/v1/workspaces/default/api-keys",
                json!({"name": "k", "permissions": [permission]}),
            )
            .await;
        assert_eq!(status, 400, "{permission}: {body}");
    }
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/api-keys",
            json!({"name": "all"}),
        )
        .await;
    assert_eq!(status, 201);
    let offered = body["permissions"].to_string();
    assert!(
        !offered.contains("users.track.sync") && !offered.contains("sms."),
        "{offered}"
    );
}

#[tokio::test]
async fn filter_errors_use_the_api_operator_names() {
    let app = spawn_app().await;
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "s", "filter": {"attribute": "score", "op": "greater_than", "value": "x"}}),
        )
        .await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("greater_than") && !message.contains("GreaterThan"),
        "{message}"
    );
}

#[tokio::test]
async fn metrics_show_latency_queue_commits_and_every_connector() {
    let app = spawn_app().await;
    let (status, _) = app
        .track(
            json!({"events": [{"external_id": "u", "name": "e", "time": "2024-01-01T00:00:00Z"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "amp", "type": "amplitude", "api_key": "k", "endpoint": "http://127.0.0.1:9", "validate": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let metrics = app.metrics().await;
    for needle in [
        "eddy_http_request_duration_seconds_bucket{group=\"users.track\",le=\"+Inf\"} 1",
        "eddy_http_request_duration_seconds_count{group=\"users.track\"} 1",
        "# TYPE eddy_writer_commit_duration_seconds histogram",
        "eddy_writer_queue_depth 0",
        "eddy_writer_last_group_size",
        "eddy_currents_pending{workspace=\"default\",connector=\"amp\",type=\"amplitude\"}",
        "eddy_currents_lag_seconds{workspace=\"default\",connector=\"amp\",type=\"amplitude\"}",
        "eddy_currents_delivered_total{workspace=\"default\",connector=\"amp\",type=\"amplitude\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn connectors_can_be_listed_paused_changed_resumed_and_deleted() {
    let app = spawn_app().await;
    let s3 = eddy_testkit::TestS3::start().await;
    let base = "/eddy/v1/workspaces/default/currents";
    // A bucket nobody serves: the connector retries, and must be removable.
    s3.set_failing(true);
    let settings = |bucket: &str| {
        json!({"name": "c", "type": "s3", "bucket": bucket, "endpoint": s3.endpoint,
               "access_key_id": "a", "secret_access_key": "s", "flush_interval_seconds": 1,
               "event_types": ["users.behaviors.CustomEvent"]})
    };
    // The connection check refuses it with the cause...
    let (status, body) = app.admin_post(base, settings("misspelt")).await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("the test write to s3 failed"), "{body}");
    // ...and without the check it is saved, retries, and must be removable.
    let mut unchecked = settings("misspelt");
    unchecked["validate"] = json!(false);
    let (status, body) = app.admin_post(base, unchecked).await;
    assert_eq!(status, 201, "{body}");
    let integration = body["integration_id"].clone();
    let (status, body) = app.admin_get(base).await;
    assert_eq!(status, 200);
    assert_eq!(body["connectors"][0]["name"], "c", "{body}");

    let (status, body) = app.admin_post(&format!("{base}/c/pause"), json!({})).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("paused")),
        "{body}"
    );
    app.track(json!({"events": [{"external_id": "u", "name": "while-paused", "time": "2024-01-01T00:00:00Z"}]}))
        .await;
    // Changed while paused: same integration id, same cursor.
    s3.set_failing(false);
    let (status, body) = app.admin_put(&format!("{base}/c"), settings("fixed")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["integration_id"], integration);
    assert_eq!(body["state"], "paused");
    let (status, body) = app.admin_post(&format!("{base}/c/resume"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Resumed, it delivers what was queued while it was paused, into the corrected bucket.
    let mut delivered = false;
    for _ in 0..100 {
        if s3.keys().iter().any(|k| k.starts_with("fixed/")) {
            delivered = true;
            break;
        }
        app.admin_post(&format!("{base}/c/flush"), json!({})).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        delivered,
        "nothing reached the corrected bucket: {:?}",
        s3.keys()
    );

    let response = app
        .client
        .delete(app.url(&format!("{base}/c")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let (status, _) = app.admin_get(&format!("{base}/c")).await;
    assert_eq!(status, 404);
    let (_, body) = app.admin_get(base).await;
    assert_eq!(body["connectors"], json!([]));
    // Its cursor is gone too: a new connector of the same name starts from now.
    let (status, body) = app.admin_post(base, settings("fixed")).await;
    assert_eq!(status, 201, "{body}");
    assert_ne!(body["integration_id"], integration);
}

#[tokio::test]
async fn admin_objects_can_be_listed_read_changed_and_removed() {
    let app = spawn_app().await;
    let ws = "/eddy/v1/workspaces/default";
    let (status, body) = app.admin_get(ws).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("default")));

    // API keys: listed with their use, never a secret.
    let (_, created) = app
        .admin_post(
            &format!("{ws}/api-keys"),
            json!({"name": "tracker", "permissions": ["users.track"]}),
        )
        .await;
    let secret = created["key"].as_str().expect("secret").to_string();
    let (status, _) = app
        .post_as(
            &secret,
            "/users/track",
            json!({"attributes": [{"external_id": "u", "a": 1}]}),
        )
        .await;
    assert_eq!(status, 201);
    let mut last_used = Value::Null;
    for _ in 0..50 {
        let (_, one) = app
            .admin_get(&format!(
                "{ws}/api-keys/{}",
                created["id"].as_str().unwrap()
            ))
            .await;
        last_used = one["last_used_at"].clone();
        if last_used.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(last_used.is_string(), "last_used_at not recorded");
    let (status, list) = app.admin_get(&format!("{ws}/api-keys")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(names.contains(&"tracker"), "{list}");
    assert!(
        !list.to_string().contains(&secret),
        "a secret was shown: {list}"
    );

    // Partners and Data Import Keys.
    let (status, _) = app
        .admin_put(
            "/eddy/v1/partners/amplitude",
            json!({"partner_api_key": "partner-key-1"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = app
        .admin_get(&format!("{ws}/partners/amplitude/data-import-key"))
        .await;
    assert_eq!(body["exists"], false, "{body}");
    let (_, dik) = app
        .admin_post(
            &format!("{ws}/partners/amplitude/data-import-key"),
            json!({}),
        )
        .await;
    let (_, body) = app
        .admin_get(&format!("{ws}/partners/amplitude/data-import-key"))
        .await;
    assert_eq!(body["exists"], true, "{body}");
    assert!(
        body["created_at"].is_string() && !body.to_string().contains(dik["key"].as_str().unwrap())
    );
    let (status, body) = app.admin_get("/eddy/v1/partners").await;
    assert_eq!(
        (status, body["partners"][0]["name"].as_str()),
        (200, Some("amplitude")),
        "{body}"
    );
    assert!(!body.to_string().contains("partner-key-1"));
    let response = app
        .client
        .delete(app.url("/eddy/v1/partners/amplitude"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let (status, _) = app.admin_get("/eddy/v1/partners/amplitude").await;
    assert_eq!(status, 404);
    // Registered again, the old Data Import Key does not come back.
    app.admin_put(
        "/eddy/v1/partners/amplitude",
        json!({"partner_api_key": "partner-key-1"}),
    )
    .await;
    let (status, body) = app
        .post(
            "/partners/amplitude/cohorts",
            json!({"partner_api_key": "partner-key-1", "client_secret": dik["key"],
            "cohort_id": "c", "name": "C", "created_at": "2024-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    // Segments: listed with sizes, renamed with the same checks as creation.
    let (_, segment) = app
        .admin_post(
            &format!("{ws}/segments"),
            json!({"name": "s", "filter": {"attribute": "a", "op": "equals", "value": 1}}),
        )
        .await;
    let id = segment["id"].as_str().unwrap().to_string();
    let (status, body) = app
        .admin_put(
            &format!("{ws}/segments/{id}"),
            json!({"name": "renamed", "filter": {"attribute": "a", "op": "exists"}}),
        )
        .await;
    assert_eq!(
        (status, body["name"].as_str(), body["size"].as_u64()),
        (200, Some("renamed"), Some(1)),
        "{body}"
    );
    let (status, _) = app
        .admin_put(
            &format!("{ws}/segments/{id}"),
            json!({"name": "bad", "filter": {"attribute": "a", "op": "nope"}}),
        )
        .await;
    assert_eq!(status, 400);
    let (_, body) = app.admin_get(&format!("{ws}/segments")).await;
    assert_eq!(body["segments"][0]["name"], "renamed", "{body}");

    // Export storage back to local.
    let response = app
        .client
        .delete(app.url(&format!("{ws}/export-storage")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    let (_, body) = app.admin_get(&format!("{ws}/export-storage")).await;
    assert_eq!(body["type"], "local");
}

#[tokio::test]
async fn users_can_be_found_by_any_identifier_and_read_whole() {
    let app = spawn_app().await;
    let (status, body) = app
        .track(json!({
            "attributes": [
                {"external_id": "ada", "email": "Ada@Example.com", "first_name": "Ada", "plan": "pro",
                 "push_tokens": [{"app_id": "app", "token": "t", "device_id": "dev-1"}]},
                {"external_id": "bob", "email": "ada@example.com"},
                {"user_alias": {"alias_name": "a1", "alias_label": "amplitude_id"}, "_update_existing_only": false, "x": 1}
            ],
            "events": [{"external_id": "ada", "name": "played", "time": "2024-01-01T00:00:00Z"},
                       {"external_id": "ada", "name": "played", "time": "2024-02-01T00:00:00Z"}]
        }))
        .await;
    assert_eq!(status, 201, "{body}");
    let users = |q: &str| {
        let app = &app;
        let path = format!("/eddy/v1/workspaces/default/users?q={q}");
        async move { app.admin_get(&path).await.1["users"].clone() }
    };
    assert_eq!(users("ada").await[0]["external_id"], "ada");
    // An email names both users that share it.
    assert_eq!(
        users("ada%40example.com").await.as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        users("amplitude_id:a1").await[0]["user_aliases"][0]["alias_name"],
        "a1"
    );
    assert_eq!(users("dev-1").await[0]["external_id"], "ada");
    assert_eq!(users("nobody").await, json!([]));
    let braze_id = users("ada").await[0]["braze_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(users(&braze_id).await[0]["external_id"], "ada");

    // Paging through everyone.
    let (_, first) = app
        .admin_get("/eddy/v1/workspaces/default/users?limit=2")
        .await;
    assert_eq!(first["users"].as_array().map(Vec::len), Some(2), "{first}");
    let next = first["next"].as_u64().expect("a next page");
    let (_, second) = app
        .admin_get(&format!(
            "/eddy/v1/workspaces/default/users?limit=2&after={next}"
        ))
        .await;
    assert_eq!(
        second["users"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/users?after=x")
        .await;
    assert_eq!(status, 400);

    // One whole profile.
    let (status, profile) = app
        .admin_get(&format!("/eddy/v1/workspaces/default/users/{braze_id}"))
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["first_name"], "Ada");
    assert_eq!(profile["custom_attributes"]["plan"], "pro");
    assert_eq!(profile["custom_events"][0]["name"], "played", "{profile}");
    assert_eq!(profile["custom_events"][0]["count"], 2, "{profile}");
    assert_eq!(profile["cohorts"], json!([]));
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/users/nope")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn segment_exports_have_a_status_and_a_failure_says_why() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u1", "plan": "pro"}]}))
        .await;
    let (_, segment) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "pros", "filter": {"attribute": "plan", "op": "equals", "value": "pro"}}),
        )
        .await;
    let segment_id = segment["id"].as_str().unwrap().to_string();
    // A callback receiver.
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let sink = received.clone();
    let callback = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback_url = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, callback).await });

    let wait_state = |prefix: String| {
        let app = &app;
        async move {
            for _ in 0..100 {
                let (_, status) = app
                    .admin_get(&format!("/eddy/v1/workspaces/default/exports/{prefix}"))
                    .await;
                if status["state"] != "running" {
                    return status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("export {prefix} never finished");
        }
    };
    // Local: an absolute file:// URL, and a status that ends succeeded.
    let (status, body) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": segment_id, "fields_to_export": ["external_id"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with("file:///"), "{url}");
    let done = wait_state(body["object_prefix"].as_str().unwrap().to_string()).await;
    assert_eq!(
        (done["state"].as_str(), done["users"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{done}"
    );

    // A bucket that refuses: the status and the callback say why.
    let s3 = eddy_testkit::TestS3::start().await;
    s3.set_failing(true);
    app.admin_put(
        "/eddy/v1/workspaces/default/export-storage",
        json!({"type": "s3", "bucket": "exports", "endpoint": s3.endpoint, "access_key_id": "a", "secret_access_key": "s"}),
    )
    .await;
    app.allow_loopback("default").await;
    let (status, body) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": segment_id, "fields_to_export": ["external_id"],
                                               "callback_endpoint": callback_url}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let failed = wait_state(body["object_prefix"].as_str().unwrap().to_string()).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    let mut posted = Vec::new();
    for _ in 0..100 {
        posted = received.lock().unwrap().clone();
        if !posted.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(posted[0]["success"], false, "{posted:?}");
    assert!(posted[0]["error"].is_string(), "{posted:?}");
    // /metrics counts both, and the one user the first wrote.
    let metrics = app.metrics().await;
    for line in [
        "eddy_segment_exports_succeeded_total 1",
        "eddy_segment_exports_failed_total 1",
        "eddy_segment_export_users_total 1",
        "eddy_segment_exports_running 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/exports/unknown")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn after_a_merge_every_identifier_that_names_nobody_is_reported() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [
        {"external_id": "keep", "first_name": "K"},
        {"user_alias": {"alias_name": "old", "alias_label": "crm"}, "_update_existing_only": false, "last_name": "L"}
    ]}))
    .await;
    let (status, body) = app
        .post(
            "/users/merge",
            json!({"merge_updates": [{
            "identifier_to_merge": {"user_alias": {"alias_name": "old", "alias_label": "crm"}},
            "identifier_to_keep": {"external_id": "keep"}}]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    // The merged profile is gone with its identifiers (Braze deletes the merged user); what it
    // held is on the kept one.
    let (_, body) = app
        .post("/users/export/ids", json!({"external_ids": ["keep", "ghost"],
            "user_aliases": [{"alias_name": "old", "alias_label": "crm"}],
            "braze_id": "nope", "email_address": "none@example.com", "phone": "+15550000", "device_id": "no-device"}))
        .await;
    assert_eq!(body["users"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["users"][0]["last_name"], "L", "{body}");
    let invalid: Vec<&str> = body["invalid_user_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for id in [
        "ghost",
        "old",
        "nope",
        "none@example.com",
        "+15550000",
        "no-device",
    ] {
        assert!(invalid.contains(&id), "{id} not reported: {body}");
    }
    // A user named twice in one request is listed once and not reported.
    let (_, body) = app
        .post(
            "/users/export/ids",
            json!({"external_ids": ["keep", "keep"]}),
        )
        .await;
    assert_eq!(body["users"].as_array().map(Vec::len), Some(1), "{body}");
    assert!(body.get("invalid_user_ids").is_none(), "{body}");
}

#[tokio::test]
async fn a_failing_sink_backs_off_and_says_when_it_retries() {
    let app = spawn_app().await;
    let s3 = eddy_testkit::TestS3::start().await;
    s3.set_failing(true);
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "c", "type": "s3", "bucket": "b", "endpoint": s3.endpoint, "validate": false,
                   "access_key_id": "a", "secret_access_key": "s", "max_backoff_seconds": 30}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.track(
        json!({"events": [{"external_id": "u", "name": "e", "time": "2024-01-01T00:00:00Z"}]}),
    )
    .await;
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents/c/flush", json!({}))
        .await;
    assert_eq!(status, 502, "{body}");
    let (_, body) = app
        .admin_get("/eddy/v1/workspaces/default/currents/c")
        .await;
    assert_eq!(body["state"], "error", "{body}");
    assert!(body["next_retry_at"].is_string(), "{body}");
    // The cause first, then what was being done; not the client's wrappers around it.
    let error = body["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("503") && error.contains(": writing currents/"),
        "{body}"
    );
    assert!(!error.contains("Generic S3 error"), "{body}");
    // Back up: the next flush delivers at once, the error and the retry time are gone.
    s3.set_failing(false);
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents/c/flush", json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["last_error"].is_null() && body["next_retry_at"].is_null(),
        "{body}"
    );
    assert_eq!(body["delivered"], 1, "{body}");
}

#[tokio::test]
async fn pending_counts_every_event_acknowledged_before_the_question() {
    let app = spawn_app().await;
    let s3 = eddy_testkit::TestS3::start().await;
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "c", "type": "s3", "bucket": "b", "endpoint": s3.endpoint,
                   "access_key_id": "a", "secret_access_key": "s", "flush_interval_seconds": 300,
                   "event_types": ["users.behaviors.CustomEvent"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .track(json!({"events": [
            {"external_id": "u", "name": "a", "time": "2024-01-01T00:00:00Z"},
            {"external_id": "u", "name": "b", "time": "2024-01-01T00:00:00Z"},
            {"external_id": "u", "name": "c", "time": "2024-01-01T00:00:00Z"}],
            "purchases": [{"external_id": "u", "product_id": "p", "currency": "USD", "price": 1, "time": "2024-01-01T00:00:00Z"}]}))
        .await;
    assert_eq!(status, 201);
    // Asked at once, before the connector has necessarily read them: the three custom events
    // count (the purchase is not a selected type).
    let (_, body) = app
        .admin_get("/eddy/v1/workspaces/default/currents/c")
        .await;
    assert_eq!(body["pending"], 3, "{body}");
    let (_, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents/c/flush", json!({}))
        .await;
    assert_eq!(
        (body["delivered"].as_u64(), body["pending"].as_u64()),
        (Some(3), Some(0)),
        "{body}"
    );
}

/// Sends an admin request with any method; answers the status.
async fn admin_send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.admin_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("admin request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_workspace_can_be_renamed_and_deleted_with_everything_in_it() {
    let app = spawn_app().await;
    let (status, _) = app
        .admin_post("/eddy/v1/workspaces", json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201);
    let key = app.create_key("shop", None).await;
    let (status, _) = app
        .post_as(
            &key,
            "/users/track",
            json!({"attributes": [{"external_id": "u1", "email": "u1@example.com"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/shop/currents",
            json!({"name": "amp", "type": "amplitude", "api_key": "k",
                   "endpoint": "http://127.0.0.1:9", "validate": false}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = app
        .admin_post(
            "/eddy/v1/workspaces/shop/segments",
            json!({"name": "all", "filter": {"attribute": "external_id", "op": "equals", "value": "u1"}}),
        )
        .await;
    assert_eq!(status, 201, "segment");

    // Renamed: the old name is gone, keys, profiles and connectors stay.
    let patch = reqwest::Method::PATCH;
    let path = "/eddy/v1/workspaces/shop";
    let status = admin_send(&app, patch.clone(), path, Some(json!({"name": "store"}))).await;
    assert_eq!(status, 200);
    assert_eq!(app.admin_get(path).await.0, 404);
    let (status, body) = app.admin_get("/eddy/v1/workspaces/store").await;
    assert_eq!((status, body["name"].as_str()), (200, Some("store")));
    let (_, body) = app
        .post_as(&key, "/users/export/ids", json!({"external_ids": ["u1"]}))
        .await;
    assert_eq!(body["users"][0]["email"], "u1@example.com", "{body}");
    let (_, body) = app.admin_get("/eddy/v1/workspaces/store/currents").await;
    assert_eq!(body["connectors"][0]["name"], "amp", "{body}");
    // A taken name is a conflict.
    let status = admin_send(
        &app,
        patch,
        "/eddy/v1/workspaces/store",
        Some(json!({"name": "default"})),
    )
    .await;
    assert_eq!(status, 409);

    // Deleted: its key, connector and profiles are gone; a new workspace of the same name is
    // empty.
    let status = admin_send(
        &app,
        reqwest::Method::DELETE,
        "/eddy/v1/workspaces/store",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(app.admin_get("/eddy/v1/workspaces/store").await.0, 404);
    let (status, _) = app
        .post_as(
            &key,
            "/users/track",
            json!({"attributes": [{"external_id": "u2"}]}),
        )
        .await;
    assert_eq!(status, 401);
    let (_, list) = app.admin_get("/eddy/v1/workspaces").await;
    let names: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, ["default"]);
    assert!(!app.metrics().await.contains("connector=\"amp\""));
    let (status, _) = app
        .admin_post("/eddy/v1/workspaces", json!({"name": "store"}))
        .await;
    assert_eq!(status, 201);
    let key = app.create_key("store", None).await;
    let (_, body) = app
        .post_as(&key, "/users/export/ids", json!({"external_ids": ["u1"]}))
        .await;
    assert_eq!(body["users"], json!([]), "{body}");
    assert_eq!(body["invalid_user_ids"], json!(["u1"]), "{body}");
    let (_, body) = app.admin_get("/eddy/v1/workspaces/store/currents").await;
    assert_eq!(body["connectors"], json!([]), "{body}");
    // Nothing of the deleted workspace is left in the store: only the two live ones hold data.
    let live: Vec<u32> = app
        .store
        .workspaces()
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    for ws in app.store.workspace_ids_with_data().unwrap() {
        assert!(live.contains(&ws), "data of workspace {ws} is left");
    }
}
