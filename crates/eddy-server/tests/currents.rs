//! Currents to S3 through HTTP: connectors, Avro files in Braze's key layout, selection,
//! transformations, producer events, outages and restarts.

use eddy_testkit::{TestApp, TestS3, read_avro, spawn_app, start};
use serde_json::{Map, Value, json};

async fn connector(app: &TestApp, s3: &TestS3, body: Value) -> Value {
    let mut body = body;
    body["bucket"] = json!("currents-bucket");
    body["endpoint"] = json!(s3.endpoint);
    body["access_key_id"] = json!("test");
    body["secret_access_key"] = json!("test");
    let (status, created) = app
        .admin_post("/eddy/v1/workspaces/default/currents", body)
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn flush(app: &TestApp, name: &str) -> Value {
    let (status, body) = app
        .admin_post(
            &format!("/eddy/v1/workspaces/default/currents/{name}/flush"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Every file of an event type: (key, records).
fn files(s3: &TestS3, event_type: &str) -> Vec<(String, Vec<Map<String, Value>>)> {
    s3.keys()
        .into_iter()
        .filter(|k| k.contains(&format!("/event_type={event_type}/")))
        .map(|k| {
            let records = read_avro(&s3.get(&k).unwrap());
            (k, records)
        })
        .collect()
}

#[tokio::test]
async fn events_reach_s3_as_avro_in_braze_layout() {
    let app = spawn_app().await;
    let s3 = TestS3::start().await;
    let created = connector(
        &app,
        &s3,
        json!({"name": "main", "type": "s3",
        "transforms": [{"field": "email_address", "action": "remove"}]}),
    )
    .await;
    let integration = created["integration_id"].as_str().unwrap().to_string();
    assert_eq!(integration.len(), 24);
    app.track(json!({
        "attributes": [{"external_id": "u1", "email": "u1@x.io", "email_subscribe": "unsubscribed"}],
        "events": [{"external_id": "u1", "name": "played", "time": "2024-01-01T00:00:10Z", "properties": {"level": 3}},
                   {"external_id": "u1", "name": "paused", "time": "2024-01-01T00:00:20Z"}],
        "purchases": [{"external_id": "u1", "product_id": "p", "currency": "USD", "price": 2.5, "time": "2024-01-01"}]
    }))
    .await;
    let flushed = flush(&app, "main").await;
    assert_eq!(flushed["flushed"], 4);
    assert_eq!(
        (flushed["delivered"].as_u64(), flushed["pending"].as_u64()),
        (Some(4), Some(0))
    );
    let custom = files(&s3, "users.behaviors.CustomEvent");
    assert_eq!(custom.len(), 1, "one file per event type per flush");
    let (key, records) = &custom[0];
    let prefix = format!(
        "currents-bucket/currents/dataexport.eddy-01.S3.integration.{integration}/event_type=users.behaviors.CustomEvent/date="
    );
    assert!(key.starts_with(&prefix), "{key}");
    assert!(
        key.contains(&format!(
            "/version=10/eddy/dataexport.eddy-01.S3.integration.{integration}+1+"
        )),
        "{key}"
    );
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["name"], "played");
    assert_eq!(records[0]["external_user_id"], "u1");
    assert_eq!(records[0]["time"], 1_704_067_210);
    assert_eq!(records[0]["properties"], "{\"level\":3}");
    assert_eq!(records[0]["platform"], Value::Null);
    assert_eq!(records[0]["id"].as_str().unwrap().len(), 36);
    let purchase = &files(&s3, "users.behaviors.Purchase")[0].1[0];
    assert_eq!(
        (
            purchase["product_id"].as_str(),
            purchase["price"].as_f64(),
            purchase["currency"].as_str()
        ),
        (Some("p"), Some(2.5), Some("USD"))
    );
    let change = &files(&s3, "users.behaviors.subscription.GlobalStateChange")[0].1[0];
    assert_eq!(
        change["email_address"], "[REDACTED]",
        "transformations apply to every type with the field"
    );
    assert_eq!(change["subscription_status"], "Unsubscribed");
    // Nothing new: nothing written (never an empty file).
    let before = s3.keys().len();
    assert_eq!(flush(&app, "main").await["flushed"], 0);
    assert_eq!(s3.keys().len(), before);
}

#[tokio::test]
async fn selection_producer_events_and_validation() {
    let app = spawn_app().await;
    let s3 = TestS3::start().await;
    connector(
        &app,
        &s3,
        json!({"name": "email-only", "type": "s3", "event_types": ["users.messages.email.Send"]}),
    )
    .await;
    let send = json!({"id": "e-1", "user_id": "b1", "external_user_id": "u1", "time": 1_700_000_000,
                      "email_address": "u1@x.io", "dispatch_id": "d", "send_id": "s"});
    let (status, body) = app
        .post(
            "/currents/events",
            json!({"events": [
                {"event_type": "users.messages.email.Send", "record": send},
                {"event_type": "users.messages.email.Send", "record": {"id": "e-2"}},
                {"event_type": "users.messages.nope.Send", "record": {}}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["events_processed"], 1);
    let errors: Vec<(&str, u64)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["index"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        errors[1],
        ("unknown event type 'users.messages.nope.Send'", 2)
    );
    assert!(
        errors[0].0.starts_with("users.messages.email.Send: '")
            && errors[0].0.ends_with("' is required"),
        "{errors:?}"
    );
    let (status, _) = app
        .post(
            "/currents/events",
            json!({"events": [{"event_type": "users.messages.email.Send", "record": {"id": 1}}]}),
        )
        .await;
    assert_eq!(status, 400);
    app.track(json!({"events": [{"external_id": "u1", "name": "ignored", "time": "2024-01-01"}]}))
        .await;
    flush(&app, "email-only").await;
    let keys = s3.keys();
    assert_eq!(keys.len(), 1, "only the selected type: {keys:?}");
    let records = &files(&s3, "users.messages.email.Send")[0].1;
    assert_eq!(records[0]["email_address"], "u1@x.io");
    assert_eq!(records[0]["id"], "e-1");
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "bad", "type": "s3", "bucket": "b", "event_types": ["x.y"]}),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("unknown event type 'x.y'"))
    );
}

#[tokio::test]
async fn outages_lose_nothing_and_restarts_resume_from_the_cursor() {
    let app = spawn_app().await;
    let s3 = TestS3::start().await;
    connector(
        &app,
        &s3,
        json!({"name": "main", "type": "s3", "event_types": ["users.behaviors.CustomEvent"]}),
    )
    .await;
    s3.set_failing(true);
    app.track(json!({"events": [{"external_id": "u", "name": "a", "time": "2024-01-01"}]}))
        .await;
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents/main/flush", json!({}))
        .await;
    // The sink failed, not the request: 502, with the sink's error (was 400 before upstream
    // failures had their own status).
    assert_eq!(
        status, 502,
        "a flush that cannot store reports the error: {body}"
    );
    let (_, state) = app
        .admin_get("/eddy/v1/workspaces/default/currents/main")
        .await;
    assert_eq!(
        (
            state["state"].as_str(),
            state["pending"].as_u64(),
            state["delivered"].as_u64()
        ),
        (Some("error"), Some(1), Some(0))
    );
    assert!(
        state["last_error"]
            .as_str()
            .unwrap()
            .contains("writing currents/")
    );
    s3.set_failing(false);
    flush(&app, "main").await;
    let (_, state) = app
        .admin_get("/eddy/v1/workspaces/default/currents/main")
        .await;
    assert_eq!(
        (
            state["state"].as_str(),
            state["pending"].as_u64(),
            state["delivered"].as_u64()
        ),
        (Some("active"), Some(0), Some(1))
    );
    // A restart: the cursor holds; new events go to files of a new partition.
    app.track(json!({"events": [{"external_id": "u", "name": "b", "time": "2024-01-01"}]}))
        .await;
    let key = app.key.clone();
    let dir = app.stop().await;
    let mut again = start(dir.clone(), |_| {}).await;
    again.key = key;
    again
        .track(json!({"events": [{"external_id": "u", "name": "c", "time": "2024-01-01"}]}))
        .await;
    flush(&again, "main").await;
    let mut names: Vec<String> = Vec::new();
    let mut partitions = Vec::new();
    for (k, records) in files(&s3, "users.behaviors.CustomEvent") {
        partitions.push(k.split('+').nth(1).unwrap().to_string());
        names.extend(
            records
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string()),
        );
    }
    names.sort();
    assert_eq!(
        names,
        vec!["a", "b", "c"],
        "every event once: the shutdown flush wrote b, the restart c"
    );
    partitions.sort();
    partitions.dedup();
    assert!(
        partitions.len() >= 2,
        "a restart writes under a new partition: {partitions:?}"
    );
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn test_events_go_to_one_connector_and_replay_redelivers() {
    let app = spawn_app().await;
    let s3 = TestS3::start().await;
    connector(&app, &s3, json!({"name": "a", "type": "s3", "prefix": "a", "event_types": ["users.behaviors.CustomEvent", "users.messages.email.Send"]})).await;
    connector(&app, &s3, json!({"name": "b", "type": "s3", "prefix": "b", "event_types": ["users.behaviors.CustomEvent"]})).await;
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents/a/test", json!({}))
        .await;
    assert_eq!(
        (status, body["test_events"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    let send = &files(&s3, "users.messages.email.Send")[0].1[0];
    assert_eq!(
        (send["email_address"].as_str(), send["time"].as_i64()),
        (Some("email_address"), Some(2_033_802_504))
    );
    assert_eq!(send["campaign_name"], "campaign_name");
    flush(&app, "b").await;
    assert!(
        s3.keys()
            .iter()
            .all(|k| k.starts_with("currents-bucket/a/")),
        "connector b got no test event: {:?}",
        s3.keys()
    );
    // Replay: events delivered once are delivered again from the given time.
    let before = jiff::Timestamp::now().to_string();
    app.track(json!({"events": [{"external_id": "u", "name": "x", "time": "2024-01-01"}, {"external_id": "u", "name": "y", "time": "2024-01-01"}]})).await;
    flush(&app, "b").await;
    let count = |s3: &TestS3| {
        files(s3, "users.behaviors.CustomEvent")
            .iter()
            .filter(|(k, _)| k.starts_with("currents-bucket/b/"))
            .map(|(_, r)| r.len())
            .sum::<usize>()
    };
    assert_eq!(count(&s3), 2);
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents/b/replay",
            json!({"from": before}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    flush(&app, "b").await;
    assert_eq!(count(&s3), 4, "both events delivered again");
    // The same from epoch seconds.
    let seconds = jiff::Timestamp::now().as_second() - 3600;
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents/b/replay",
            json!({"from": seconds}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    flush(&app, "b").await;
    assert_eq!(count(&s3), 6, "replayed again from epoch seconds");
    let (status, _) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents/b/replay",
            json!({"from": "soon"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_outbox_is_trimmed_only_behind_every_connector() {
    let app = eddy_testkit::spawn_with(|c| c.outbox_retention_hours = 0).await;
    let s3 = TestS3::start().await;
    app.track(json!({"events": [{"external_id": "u", "name": "before", "time": "2024-01-01"}]}))
        .await;
    connector(&app, &s3, json!({"name": "main", "type": "s3"})).await;
    app.track(json!({"events": [{"external_id": "u", "name": "after", "time": "2024-01-01"}]}))
        .await;
    assert_eq!(
        app.currents.trim_outbox().await.unwrap(),
        1,
        "only what came before the connector"
    );
    assert_eq!(
        app.store.outbox(0, 10).unwrap().len(),
        1,
        "the undelivered event stays"
    );
    flush(&app, "main").await;
    assert_eq!(app.currents.trim_outbox().await.unwrap(), 1);
    assert!(app.store.outbox(0, 10).unwrap().is_empty());
    let names: Vec<String> = files(&s3, "users.behaviors.CustomEvent")
        .iter()
        .flat_map(|(_, r)| r.iter().map(|x| x["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(names, vec!["after"]);
}

#[tokio::test]
async fn undeliverable_files_are_dropped_and_counted_after_the_retention_window() {
    let app = spawn_app().await;
    let s3 = TestS3::start().await;
    connector(
        &app,
        &s3,
        json!({"name": "main", "type": "s3", "retention_hours": 0}),
    )
    .await;
    s3.set_failing(true);
    app.track(json!({"events": [{"external_id": "u", "name": "a", "time": "2024-01-01"}, {"external_id": "u", "name": "b", "time": "2024-01-01"}]})).await;
    app.admin_post("/eddy/v1/workspaces/default/currents/main/flush", json!({}))
        .await;
    let (_, state) = app
        .admin_get("/eddy/v1/workspaces/default/currents/main")
        .await;
    assert_eq!(
        (
            state["dropped"].as_u64(),
            state["pending"].as_u64(),
            state["delivered"].as_u64()
        ),
        (Some(2), Some(0), Some(0)),
        "{state}"
    );
}

/// Google Cloud Storage cannot run here; its XML API writes an object with a path-style PUT, as
/// the test object server accepts, so it stands in for an emulator (which takes any token).
#[tokio::test]
async fn events_reach_google_cloud_storage_in_braze_layout() {
    let app = spawn_app().await;
    let gcs = TestS3::start().await;
    let (status, created) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "gcs", "type": "gcs", "bucket": "braze-currents", "endpoint": gcs.endpoint,
                   "prefix": "exports", "event_types": ["users.behaviors.CustomEvent"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let integration = created["integration_id"].as_str().unwrap().to_string();
    app.track(json!({"events": [{"external_id": "g1", "name": "played", "time": "2024-01-01T00:00:10Z"}]}))
        .await;
    let flushed = flush(&app, "gcs").await;
    assert_eq!(
        (flushed["delivered"].as_u64(), flushed["pending"].as_u64()),
        (Some(1), Some(0)),
        "{flushed}"
    );
    let files = files(&gcs, "users.behaviors.CustomEvent");
    assert_eq!(files.len(), 1);
    let (key, records) = &files[0];
    let topic = format!("dataexport.eddy-01.GCS.integration.{integration}");
    assert!(
        key.starts_with(&format!(
            "braze-currents/exports/{topic}/event_type=users.behaviors.CustomEvent/date="
        )),
        "{key}"
    );
    assert!(
        key.rsplit('/')
            .next()
            .unwrap()
            .starts_with(&format!("{topic}+")),
        "{key}"
    );
    assert_eq!(records[0]["external_user_id"], "g1");
    let (_, status) = app
        .admin_get("/eddy/v1/workspaces/default/currents/gcs")
        .await;
    assert_eq!(status["type"], "gcs");
}
