//! Currents survive a crash: events acknowledged by `/users/track` before a `kill -9` all reach
//! S3 and Amplitude after the restart (at least once).

mod binary;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use binary::{ADMIN, spawn_server, wait_healthy};
use eddy_testkit::{AmplitudeEmulator, TestS3, read_avro};
use serde_json::{Value, json};

async fn admin(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    client
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_reach_s3_and_amplitude_after_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = binary::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let s3 = TestS3::start().await;
    let amp = AmplitudeEmulator::start("amp-key").await;
    let mut server = spawn_server(tmp.path(), port);
    wait_healthy(&client, &base).await;
    let key = admin(
        &client,
        &base,
        "/eddy/v1/workspaces/default/api-keys",
        json!({"name": "crash"}),
    )
    .await["key"]
        .as_str()
        .expect("key")
        .to_string();
    admin(&client, &base, "/eddy/v1/workspaces/default/currents", json!({"name": "s3", "type": "s3", "bucket": "b",
        "endpoint": s3.endpoint, "access_key_id": "k", "secret_access_key": "s", "flush_interval_seconds": 1,
        "event_types": ["users.behaviors.CustomEvent"]})).await;
    admin(
        &client,
        &base,
        "/eddy/v1/workspaces/default/currents",
        json!({"name": "amp", "type": "amplitude",
        "api_key": "amp-key", "endpoint": amp.url, "event_types": ["users.behaviors.CustomEvent"]}),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (client, base, key, stop) = (client.clone(), base.clone(), key.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let names: Vec<String> = (0..10).map(|k| format!("crash-{worker}-{n}-{k}")).collect();
                n += 1;
                let events: Vec<Value> = names.iter().map(|name| json!({"external_id": format!("user-{worker}-{n}"), "name": name, "time": "2024-01-01"})).collect();
                match client.post(format!("{base}/users/track")).bearer_auth(&key).json(&json!({"events": events})).send().await {
                    Ok(r) if r.status().as_u16() == 201 => acked.extend(names),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().expect("kill -9");
    let _ = server.wait();
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in workers {
        acked.extend(w.await.expect("worker"));
    }
    assert!(
        acked.len() > 100,
        "load got through before the kill ({})",
        acked.len()
    );

    let mut server = spawn_server(tmp.path(), port);
    wait_healthy(&client, &base).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s3_state = admin(
            &client,
            &base,
            "/eddy/v1/workspaces/default/currents/s3/flush",
            json!({}),
        )
        .await;
        let amp_state = admin(
            &client,
            &base,
            "/eddy/v1/workspaces/default/currents/amp/flush",
            json!({}),
        )
        .await;
        if s3_state["pending"] == 0 && amp_state["pending"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connectors did not drain: {s3_state} {amp_state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut in_s3 = BTreeSet::new();
    for object in s3.keys() {
        let records = read_avro(&s3.get(&object).expect("object"));
        in_s3.extend(
            records
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string)),
        );
    }
    let in_amplitude: BTreeSet<String> = amp
        .ingested()
        .values()
        .filter_map(|e| {
            e["event_type"]
                .as_str()
                .and_then(|t| t.strip_prefix("[Appboy] [Custom Event] "))
                .map(str::to_string)
        })
        .collect();
    let lost_s3: Vec<_> = acked.difference(&in_s3).take(5).collect();
    let lost_amp: Vec<_> = acked.difference(&in_amplitude).take(5).collect();
    eprintln!(
        "{} acknowledged events; {} in S3 files, {} in Amplitude",
        acked.len(),
        in_s3.len(),
        in_amplitude.len()
    );
    assert!(
        lost_s3.is_empty(),
        "acknowledged events missing from S3: {lost_s3:?}"
    );
    assert!(
        lost_amp.is_empty(),
        "acknowledged events missing from Amplitude: {lost_amp:?}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
