//! Partner cohort import, segments, Braze's segment endpoints and segment export, through HTTP.

use std::io::Read;

use eddy_testkit::{TestApp, spawn_app, start};
use serde_json::{Value, json};

const PARTNER_KEY: &str = "partner-secret-1";

/// Registers amplitude and returns a Data Import Key for the default workspace.
async fn amplitude(app: &TestApp) -> String {
    let r = app
        .client
        .put(app.url("/eddy/v1/partners/amplitude"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"partner_api_key": PARTNER_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/partners/amplitude/data-import-key",
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_string()
}

async fn partner_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn name_cohort(app: &TestApp, secret: &str, id: &str, name: &str) -> (u16, Value) {
    partner_post(
        app,
        "/partners/amplitude/cohorts",
        json!({"partner_api_key": PARTNER_KEY, "client_secret": secret, "cohort_id": id, "name": name,
               "created_at": "2021-01-21T19:20:30+05:00"}),
    )
    .await
}

async fn change(app: &TestApp, secret: &str, id: &str, changes: Value) -> (u16, Value) {
    partner_post(
        app,
        "/partners/amplitude/cohorts/users",
        json!({"partner_api_key": PARTNER_KEY, "client_secret": secret, "cohort_id": id, "cohort_changes": changes}),
    )
    .await
}

async fn segment(app: &TestApp, filter: Value) -> (String, u64) {
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "s", "filter": filter}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_string(),
        body["size"].as_u64().unwrap(),
    )
}

async fn size(app: &TestApp, id: &str) -> u64 {
    let (status, body) = app
        .admin_get(&format!("/eddy/v1/workspaces/default/segments/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["size"].as_u64().unwrap()
}

fn in_cohort(id: &str) -> Value {
    json!({"attribute": "amplitude_cohorts", "op": "includes_value", "value": id})
}

#[tokio::test]
async fn cohort_import_end_to_end() {
    let app = spawn_app().await;
    let secret = amplitude(&app).await;
    app.track(json!({"attributes": [
        {"external_id": "u1"}, {"external_id": "u2"},
        {"user_alias": {"alias_name": "a1", "alias_label": "amp"}, "_update_existing_only": false},
        {"user_alias": {"alias_name": "anon", "alias_label": "amp"}, "_update_existing_only": false,
         "push_tokens": [{"app_id": "app", "token": "t1", "device_id": "dev-anon"}]},
        {"external_id": "u3", "push_tokens": [{"app_id": "app", "token": "t2", "device_id": "dev-known"}]}
    ]}))
    .await;
    assert_eq!(
        name_cohort(&app, &secret, "abcd1234", "TEST_COHORT").await,
        (201, json!({"message": "success"}))
    );
    let (seg, before) = segment(&app, in_cohort("abcd1234")).await;
    assert_eq!(before, 0);
    let changes = json!([{"user_ids": ["u1", "u2", "nobody"], "device_ids": ["dev-anon", "dev-known"],
                          "aliases": [{"alias_name": "a1", "alias_label": "amp"}]}]);
    assert_eq!(
        change(&app, &secret, "abcd1234", changes.clone()).await.0,
        201
    );
    // u1, u2, the alias and the anonymous device; not the identified user's device, not unknown ids.
    assert_eq!(size(&app, &seg).await, 4);
    assert!(
        app.user("nobody").await.is_none(),
        "cohort import never creates users"
    );
    let (_, usage_once) = app.admin_get("/eddy/v1/workspaces/default/usage").await;
    // Replaying changes nothing.
    assert_eq!(change(&app, &secret, "abcd1234", changes).await.0, 201);
    assert_eq!(size(&app, &seg).await, 4);
    let (_, usage_twice) = app.admin_get("/eddy/v1/workspaces/default/usage").await;
    assert_eq!(
        usage_twice["total"]["billable"], usage_once["total"]["billable"],
        "replays are not billable"
    );
    // Removal.
    assert_eq!(
        change(
            &app,
            &secret,
            "abcd1234",
            json!([{"user_ids": ["u2"], "should_remove": true}])
        )
        .await
        .0,
        201
    );
    assert_eq!(size(&app, &seg).await, 3);
    // An empty change list with valid keys is a 2xx (partners use it to test credentials).
    assert_eq!(change(&app, &secret, "abcd1234", json!([])).await.0, 201);
    // Renaming is an upsert.
    assert_eq!(
        name_cohort(&app, &secret, "abcd1234", "RENAMED").await.0,
        201
    );
    assert_eq!(size(&app, &seg).await, 3);
}

#[tokio::test]
async fn partner_errors_have_braze_texts() {
    let app = spawn_app().await;
    let secret = amplitude(&app).await;
    let (status, body) = partner_post(&app, "/partners/amplitude/cohorts", json!({"partner_api_key": "wrong", "client_secret": secret, "cohort_id": "c", "name": "n", "created_at": "2021-01-01T00:00:00Z"})).await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "Invalid Partner API key"}))
    );
    let (status, body) = name_cohort(&app, "wrong-secret", "c", "n").await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "Invalid client secret"}))
    );
    let (status, body) = name_cohort(&app, &secret, "c", "").await;
    assert_eq!(
        (status, body),
        (400, json!({"message": "name must be a non-empty string"}))
    );
    let (status, body) = partner_post(&app, "/partners/amplitude/cohorts", json!({"partner_api_key": PARTNER_KEY, "client_secret": secret, "cohort_id": "c", "name": "n", "created_at": "yesterday"})).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("created_at must be a valid time as an ISO-8601 string")
        )
    );
    let (status, body) = partner_post(&app, "/partners/amplitude/cohorts/users", json!({"partner_api_key": PARTNER_KEY, "client_secret": secret, "cohort_id": 5, "cohort_changes": []})).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("cohort_id must be a valid string"))
    );
    let (status, body) = change(&app, &secret, "c", json!([{"user_ids": "u1"}])).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("cohort_changes must be an array of objects")
    );
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (status, body) = change(&app, &secret, "c", json!([{"user_ids": many}])).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("Only 1,000 user_ids, device_ids, and aliases are allowed per request")
        )
    );
    // A secret generated for another partner.
    let r = app
        .client
        .put(app.url("/eddy/v1/partners/mixpanel"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"partner_api_key": "mixpanel-key-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = partner_post(&app, "/partners/mixpanel/cohorts", json!({"partner_api_key": "mixpanel-key-1", "client_secret": secret, "cohort_id": "c", "name": "n", "created_at": "2021-01-01T00:00:00Z"})).await;
    assert_eq!(
        (status, body["message"].as_str().map(str::to_string)),
        (
            401,
            Some(format!(
                "Partner not enabled for client with client secret: {secret}"
            ))
        )
    );
}

#[tokio::test]
async fn data_import_keys_rotate_and_invalidate() {
    let app = spawn_app().await;
    let first = amplitude(&app).await;
    assert_eq!(name_cohort(&app, &first, "c", "n").await.0, 201);
    let (_, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/partners/amplitude/data-import-key",
            json!({}),
        )
        .await;
    let second = body["key"].as_str().unwrap().to_string();
    assert_eq!(
        name_cohort(&app, &first, "c", "n").await.0,
        401,
        "rotation invalidates the old key"
    );
    assert_eq!(name_cohort(&app, &second, "c", "n").await.0, 201);
    let r = app
        .client
        .delete(app.url("/eddy/v1/workspaces/default/partners/amplitude/data-import-key"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(name_cohort(&app, &second, "c", "n").await.0, 401);
}

#[tokio::test]
async fn segments_stay_current_through_writes_merges_and_deletes() {
    let app = spawn_app().await;
    let secret = amplitude(&app).await;
    app.track(json!({"attributes": [
        {"external_id": "a", "score": 10, "plan": "pro", "vip": false},
        {"external_id": "b", "score": 3, "plan": "pro", "vip": false},
        {"external_id": "c", "score": 50, "plan": "free", "vip": true},
        {"external_id": "d", "score": 20, "plan": "pro", "vip": true}
    ]}))
    .await;
    change(
        &app,
        &secret,
        "k",
        json!([{"user_ids": ["a", "b", "c", "d"]}]),
    )
    .await;
    let four_leaf = json!({"and": [
        in_cohort("k"),
        {"attribute": "score", "op": "at_least", "value": 5},
        {"attribute": "plan", "op": "equals", "value": "pro"},
        {"not": {"attribute": "vip", "op": "equals", "value": true}}
    ]});
    let (seg, n) = segment(&app, four_leaf).await;
    assert_eq!(n, 1, "only a");
    app.track(json!({"attributes": [{"external_id": "b", "score": 7}]}))
        .await;
    assert_eq!(size(&app, &seg).await, 2, "b now qualifies");
    app.track(json!({"attributes": [{"external_id": "d", "vip": false}]}))
        .await;
    assert_eq!(size(&app, &seg).await, 3, "d now qualifies");
    // Merge a cohort member into a non-member: the survivor joins the cohort.
    app.track(
        json!({"attributes": [{"external_id": "e", "score": 9, "plan": "pro", "vip": false}]}),
    )
    .await;
    assert_eq!(size(&app, &seg).await, 3);
    app.post("/users/merge", json!({"merge_updates": [{"identifier_to_merge": {"external_id": "a"}, "identifier_to_keep": {"external_id": "e"}}]})).await;
    assert_eq!(
        size(&app, &seg).await,
        3,
        "a is gone, e took its cohort membership"
    );
    let (eseg, _) = segment(&app, json!({"and": [in_cohort("k"), {"attribute": "external_id", "op": "equals", "value": "e"}]})).await;
    assert_eq!(size(&app, &eseg).await, 1);
    app.post("/users/delete", json!({"external_ids": ["d"]}))
        .await;
    assert_eq!(size(&app, &seg).await, 2);
    // Events with windows.
    let now = jiff::Timestamp::now().to_string();
    app.track(json!({"events": [{"external_id": "b", "name": "played", "time": now}, {"external_id": "b", "name": "played", "time": now}]})).await;
    let (ev, n) = segment(
        &app,
        json!({"event": "played", "op": "count_at_least", "value": 2, "within_days": 7}),
    )
    .await;
    assert_eq!(n, 1);
    // Survives a restart: definitions are stored, the index is rebuilt.
    let key = app.key.clone();
    let dir = app.stop().await;
    let mut again = start(dir.clone(), |_| {}).await;
    again.key = key;
    assert_eq!(size(&again, &seg).await, 2);
    assert_eq!(size(&again, &eseg).await, 1);
    assert_eq!(size(&again, &ev).await, 1);
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn invalid_filters_are_refused_clearly() {
    let app = spawn_app().await;
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "s", "filter": {"attribute": "x", "op": "bigger", "value": 1}}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("invalid filter: unknown operator 'bigger'"))
    );
}

#[tokio::test]
async fn braze_segment_endpoints() {
    let app = spawn_app().await;
    let (first, _) = segment(&app, json!({"attribute": "plan", "op": "exists"})).await;
    let (second, _) = segment(&app, json!({"attribute": "plan", "op": "not_exists"})).await;
    let r = app
        .client
        .get(app.url("/segments/list?page=0&sort_direction=desc"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "success");
    let ids: Vec<&str> = body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()]);
    assert_eq!(body["segments"][0]["analytics_tracking_enabled"], false);
    let r = app
        .client
        .get(app.url("/segments/list?page=1"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["segments"], json!([]));
    let r = app
        .client
        .get(app.url(&format!("/segments/details?segment_id={first}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["message"].as_str(), body["name"].as_str()),
        (Some("success"), Some("s"))
    );
    let track_only = app.create_key("default", Some(&["users.track"])).await;
    let r = app
        .client
        .get(app.url("/segments/list"))
        .bearer_auth(&track_only)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Reads the NDJSON lines of a one-file ZIP written by the export.
fn unzip(bytes: &[u8]) -> String {
    assert_eq!(
        &bytes[..4],
        &[0x50, 0x4b, 0x03, 0x04],
        "a local file header"
    );
    let packed = u32::from_le_bytes(bytes[18..22].try_into().unwrap()) as usize;
    let name_len = u16::from_le_bytes(bytes[26..28].try_into().unwrap()) as usize;
    let start = 30 + name_len;
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(&bytes[start..start + packed])
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[tokio::test]
async fn segment_export_writes_braze_shaped_files_and_calls_back() {
    let app = spawn_app().await;
    let secret = amplitude(&app).await;
    name_cohort(&app, &secret, "abcd1234", "TEST_COHORT").await;
    app.track(json!({"attributes": [
        {"external_id": "x1", "first_name": "Ada", "plan": "pro", "secret_attr": 1},
        {"external_id": "x2", "first_name": "Bob", "plan": "pro"},
        {"external_id": "x3", "first_name": "Cy", "plan": "free"}
    ]}))
    .await;
    change(&app, &secret, "abcd1234", json!([{"user_ids": ["x1"]}])).await;
    let (seg, _) = segment(
        &app,
        json!({"attribute": "plan", "op": "equals", "value": "pro"}),
    )
    .await;
    // A callback receiver.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(1);
    let receiver = axum::Router::new().route(
        "/done",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/done", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    // The callback goes to loopback, which a workspace reaches only when it lists it.
    let (status, refused) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": seg, "callback_endpoint": callback}),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    app.allow_loopback("default").await;
    let (status, body) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": seg, "callback_endpoint": callback,
               "fields_to_export": ["external_id", "first_name", "custom_attributes", "cohorts"],
               "custom_attributes_to_export": ["plan"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "success");
    let prefix = body["object_prefix"].as_str().unwrap().to_string();
    let done = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done["success"], true);
    let dir = std::path::PathBuf::from(body["url"].as_str().unwrap().trim_start_matches("file://"));
    assert!(
        dir.to_string_lossy()
            .contains(&format!("segment-export/{seg}/"))
    );
    assert!(dir.ends_with(&prefix));
    let bytes = std::fs::read(dir.join("part-00000.zip")).unwrap();
    let mut users: Vec<Value> = unzip(&bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    users.sort_by_key(|u| u["external_id"].as_str().unwrap().to_string());
    assert_eq!(
        users,
        vec![
            json!({"external_id": "x1", "first_name": "Ada", "custom_attributes": {"plan": "pro"},
                   "cohorts": ["[Amplitude] TEST_COHORT: abcd1234"]}),
            json!({"external_id": "x2", "first_name": "Bob", "custom_attributes": {"plan": "pro"}, "cohorts": []}),
        ]
    );
    // gzip output and Braze's validation.
    let (status, body) = app.post("/users/export/segment", json!({"segment_id": seg, "fields_to_export": ["external_id"], "output_format": "gzip"})).await;
    assert_eq!(status, 201);
    let dir = std::path::PathBuf::from(body["url"].as_str().unwrap().trim_start_matches("file://"));
    let file = dir.join("part-00000.txt.gz");
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.lines().count(), 2);
    let (status, _) = app
        .post("/users/export/segment", json!({"segment_id": seg}))
        .await;
    assert_eq!(status, 400, "fields_to_export is required");
    let (status, _) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": "nope", "fields_to_export": ["external_id"]}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn segment_export_to_an_s3_bucket() {
    let app = spawn_app().await;
    let s3 = eddy_testkit::TestS3::start().await;
    let r = app
        .client
        .put(app.url("/eddy/v1/workspaces/default/export-storage"))
        .bearer_auth(&app.admin_token)
        .json(
            &json!({"type": "s3", "bucket": "exports", "prefix": "braze", "endpoint": s3.endpoint,
                      "access_key_id": "test", "secret_access_key": "test-secret"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let shown: Value = r.json().await.unwrap();
    assert_eq!(shown["secret_access_key"], "[REDACTED]");
    app.track(json!({"attributes": [{"external_id": "s1", "plan": "pro"}, {"external_id": "s2", "plan": "pro"}]})).await;
    let (seg, _) = segment(
        &app,
        json!({"attribute": "plan", "op": "equals", "value": "pro"}),
    )
    .await;
    let (status, body) = app
        .post(
            "/users/export/segment",
            json!({"segment_id": seg, "fields_to_export": ["external_id"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("url").is_none(),
        "Braze gives a URL only without own storage"
    );
    let prefix = body["object_prefix"].as_str().unwrap().to_string();
    let mut keys = Vec::new();
    for _ in 0..200 {
        keys = s3.keys();
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(
        key.starts_with(&format!("exports/braze/segment-export/{seg}/")),
        "{key}"
    );
    assert!(key.ends_with(&format!("/{prefix}/part-00000.zip")), "{key}");
    let mut ids: Vec<String> = unzip(&s3.get(key).unwrap())
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["external_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["s1", "s2"]);
}

fn index_from_snapshot(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.trim() == "eddy_segment_index_from_snapshot 1")
}

#[tokio::test]
async fn the_segment_index_is_saved_at_shutdown_and_used_only_for_that_state() {
    let app = spawn_app().await;
    let secret = amplitude(&app).await;
    let users: Vec<Value> = (0..50)
        .map(|i| {
            json!({"external_id": format!("s{i}"), "plan": if i % 5 == 0 { "pro" } else { "free" },
                        "score": i, "tags": ["a", format!("t{}", i % 3)]})
        })
        .collect();
    app.track(json!({"attributes": users, "events": [{"external_id": "s1", "name": "played", "time": jiff::Timestamp::now().to_string()}]}))
        .await;
    name_cohort(&app, &secret, "snap", "Snap").await;
    change(
        &app,
        &secret,
        "snap",
        json!([{"user_ids": ["s1", "s2", "s3"]}]),
    )
    .await;
    let filters = [
        json!({"attribute": "plan", "op": "equals", "value": "pro"}),
        json!({"attribute": "score", "op": "at_least", "value": 40}),
        json!({"attribute": "tags", "op": "includes_value", "value": "t1"}),
        json!({"event": "played", "op": "count_at_least", "value": 1}),
        in_cohort("snap"),
    ];
    let mut segments = Vec::new();
    for filter in &filters {
        segments.push(segment(&app, filter.clone()).await);
    }
    assert!(
        !index_from_snapshot(&app.metrics().await),
        "a first start rebuilds"
    );
    // A clean stop saves the index; the next start loads it, with the same sizes, and removes it.
    let key = app.key.clone();
    let dir = app.stop().await;
    let snapshot = dir.join("index.snapshot");
    if std::env::var("EDDY_TEST_STORE").ok().as_deref() == Some("postgres") {
        // Other nodes may write to a shared database after this one stops: never saved there.
        assert!(!snapshot.exists(), "no snapshot of a shared store");
        let mut again = start(dir.clone(), |_| {}).await;
        again.key = key.clone();
        assert!(!index_from_snapshot(&again.metrics().await));
        for (id, expected) in &segments {
            assert_eq!(size(&again, id).await, *expected, "{id}");
        }
        return;
    }
    assert!(snapshot.exists(), "saved at shutdown");
    let kept = std::fs::read(&snapshot).unwrap();
    let mut again = start(dir.clone(), |_| {}).await;
    again.key = key.clone();
    assert!(
        index_from_snapshot(&again.metrics().await),
        "loaded at start"
    );
    assert!(!snapshot.exists(), "used once");
    for (id, expected) in &segments {
        assert_eq!(size(&again, id).await, *expected, "{id}");
    }
    // Strings new to a loaded column still index (its dictionary was rebuilt on load).
    again
        .track(json!({"attributes": [{"external_id": "s60", "plan": "pro", "tags": ["t1"]}, {"external_id": "s61", "plan": "enterprise"}]}))
        .await;
    assert_eq!(size(&again, &segments[0].0).await, segments[0].1 + 1);
    assert_eq!(size(&again, &segments[2].0).await, segments[2].1 + 1);
    // An old snapshot put back after more writes is refused: the store's token moved on.
    let dir = again.stop().await;
    std::fs::write(&snapshot, kept).unwrap();
    let mut third = start(dir.clone(), |_| {}).await;
    third.key = key;
    assert!(
        !index_from_snapshot(&third.metrics().await),
        "a stale snapshot is rebuilt over"
    );
    assert_eq!(size(&third, &segments[0].0).await, segments[0].1 + 1);
    third.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
