//! Crash safety of the real binary: load `/users/track`, `kill -9` mid-load, restart.
//! Every request that got a 2xx must be fully present; no request may be half-applied.

mod binary;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use binary::{ADMIN, spawn_server, track_until_stopped, wait_healthy};
use serde_json::{Value, json};

fn request_body(worker: usize, n: usize) -> Value {
    let id = format!("w{worker}-{n}");
    json!({
        "attributes": [{"external_id": id, "worker": worker, "n": n, "tag": "crash", "list": ["a", "b"]}],
        "events": [{"external_id": id, "name": "crash_event", "time": "2024-01-01T00:00:00Z"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _database = eddy_testkit::TestDatabase::for_dir(tmp.path());
    let port = binary::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut server = spawn_server(tmp.path(), port);
    wait_healthy(&client, &base).await;
    let created: Value = client
        .post(format!("{base}/eddy/v1/workspaces/default/api-keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .expect("create key")
        .json()
        .await
        .expect("key json");
    let key = created["key"].as_str().expect("key").to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..8 {
        let task = track_until_stopped(
            client.clone(),
            base.clone(),
            key.clone(),
            stop.clone(),
            move |n| request_body(worker, n),
        );
        workers.push((worker, task));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().expect("kill -9");
    let _ = server.wait();
    stop.store(true, Ordering::Relaxed);
    let mut acked: BTreeMap<usize, (Vec<usize>, usize)> = BTreeMap::new();
    for (worker, task) in workers {
        let (list, sent) = task.await.expect("worker");
        acked.insert(worker, (list, sent));
    }
    let total_acked: usize = acked.values().map(|(l, _)| l.len()).sum();
    eprintln!("{total_acked} requests acknowledged before kill -9");
    assert!(
        total_acked > 50,
        "the load should get through before the kill (acked {total_acked})"
    );

    let mut server = spawn_server(tmp.path(), port);
    wait_healthy(&client, &base).await;
    for (worker, (list, sent)) in &acked {
        // Everything sent: acknowledged ones must be whole, others whole or absent.
        let ids: Vec<usize> = (0..*sent).collect();
        for chunk in ids.chunks(50) {
            let external_ids: Vec<String> =
                chunk.iter().map(|n| format!("w{worker}-{n}")).collect();
            let found: Value = client
                .post(format!("{base}/users/export/ids"))
                .bearer_auth(&key)
                .json(&json!({"external_ids": external_ids}))
                .send()
                .await
                .expect("export")
                .json()
                .await
                .expect("export json");
            let users = found["users"].as_array().cloned().unwrap_or_default();
            for n in chunk {
                let id = format!("w{worker}-{n}");
                let user = users.iter().find(|u| u["external_id"] == id.as_str());
                match user {
                    Some(user) => {
                        let attrs = &user["custom_attributes"];
                        assert_eq!(attrs["n"], json!(n), "{id} half-applied: {user}");
                        assert_eq!(attrs["tag"], "crash", "{id} half-applied: {user}");
                        assert_eq!(
                            attrs["list"],
                            json!(["a", "b"]),
                            "{id} half-applied: {user}"
                        );
                        assert_eq!(
                            user["custom_events"][0]["count"], 1,
                            "{id} event missing or doubled: {user}"
                        );
                    }
                    None => assert!(!list.contains(n), "{id} was acknowledged but is lost"),
                }
            }
        }
    }
    // The outbox counters survived too: new writes after the restart still succeed.
    let r = client
        .post(format!("{base}/users/track"))
        .bearer_auth(&key)
        .json(&request_body(99, 0))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let _ = server.kill();
    let _ = server.wait();
}
