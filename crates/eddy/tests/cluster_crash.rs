//! Three `eddy serve` processes on one PostgreSQL database under a load spread over all of them;
//! the leader is `kill -9`ed mid-load. Every acknowledged write must be on every surviving node,
//! the counter every request increments must equal the requests that landed, segment sizes must
//! agree, and the Currents connectors (S3, Amplitude) must move to a surviving node and deliver
//! every event.
//! Needs the machine's PostgreSQL; skipped without `EDDY_TEST_POSTGRES=1`.

mod binary;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use binary::{
    ADMIN, Running, free_port, is_leader, leader_of, spawn_server, track_until_stopped,
    wait_healthy,
};
use eddy_testkit::{AmplitudeEmulator, TestDatabase, TestS3, read_avro};
use serde_json::{Value, json};

const NODES: usize = 3;
const WORKERS: usize = 6;

fn request_body(worker: usize, n: usize) -> Value {
    let id = format!("w{worker}-{n}");
    json!({
        "attributes": [
            {"external_id": id, "n": n, "tag": "crash"},
            {"external_id": "counter", "hits": {"inc": 1}}
        ],
        "events": [{"external_id": id, "name": "crash_event", "time": "2024-01-01T00:00:00Z"}]
    })
}

async fn post(client: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    let response = client
        .post(&url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_loses_nothing_and_its_connector_moves() {
    if std::env::var("EDDY_TEST_POSTGRES").ok().as_deref() != Some("1") {
        eprintln!("skipped: set EDDY_TEST_POSTGRES=1 with PostgreSQL on 127.0.0.1:5432");
        return;
    }
    let database = TestDatabase::create();
    let name = database.url().expect("url");
    let name = name.rsplit('/').next().expect("name").to_string();
    let client = reqwest::Client::new();
    let mut dirs = Vec::new();
    let mut bases = Vec::new();
    let mut servers: Vec<Running> = Vec::new();
    // Started together, as an orchestrator would.
    for _ in 0..NODES {
        let dir = tempfile::tempdir().expect("tempdir");
        // `spawn_server` puts the database named here into the node's configuration.
        std::fs::write(dir.path().join("test-database"), &name).expect("marker");
        let port = free_port();
        servers.push(Running(Some(spawn_server(dir.path(), port))));
        bases.push(format!("http://127.0.0.1:{port}"));
        dirs.push(dir);
    }
    for base in &bases {
        wait_healthy(&client, base).await;
    }
    let created = post(
        &client,
        format!("{}/eddy/v1/workspaces/default/api-keys", bases[0]),
        ADMIN,
        json!({"name": "cluster"}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_string();
    let amp = AmplitudeEmulator::start("amp-key").await;
    let connector = post(
        &client,
        format!("{}/eddy/v1/workspaces/default/currents", bases[1]),
        ADMIN,
        json!({"name": "amp", "type": "amplitude", "api_key": "amp-key", "endpoint": amp.url,
               "throttle_seconds": 1, "event_types": ["users.behaviors.CustomEvent"]}),
    )
    .await;
    assert_eq!(connector["name"], "amp", "{connector:?}");
    let s3 = TestS3::start().await;
    let connector = post(
        &client,
        format!("{}/eddy/v1/workspaces/default/currents", bases[2]),
        ADMIN,
        json!({"name": "s3", "type": "s3", "bucket": "b", "endpoint": s3.endpoint,
               "access_key_id": "k", "secret_access_key": "s", "flush_interval_seconds": 1,
               "event_types": ["users.behaviors.CustomEvent"]}),
    )
    .await;
    assert_eq!(connector["name"], "s3", "{connector:?}");
    let leader = leader_of(&client, &bases).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        // A worker whose node is killed stops there.
        let task = track_until_stopped(
            client.clone(),
            bases[worker % NODES].clone(),
            key.clone(),
            stop.clone(),
            move |n| request_body(worker, n),
        );
        workers.push((worker, task));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let killed_at = Instant::now();
    servers[leader].kill();
    // The others go on under load while a new leader takes over.
    let survivors: Vec<String> = (0..NODES)
        .filter(|i| *i != leader)
        .map(|i| bases[i].clone())
        .collect();
    let mut new_leader = None;
    while new_leader.is_none() && killed_at.elapsed() < Duration::from_secs(30) {
        for base in &survivors {
            if is_leader(&client, base).await {
                new_leader = Some(base.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failover = killed_at.elapsed();
    assert!(new_leader.is_some(), "no node took the lease over");
    eprintln!("a surviving node leads {failover:?} after the kill");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for (worker, task) in workers {
        let (acked, sent) = task.await.expect("worker");
        results.push((worker, acked, sent));
    }
    let acked_total: usize = results.iter().map(|(_, a, _)| a.len()).sum();
    eprintln!("{acked_total} requests acknowledged");
    assert!(acked_total > 100, "the load got through ({acked_total})");

    // Every acknowledged request is whole on every survivor; the others are whole or absent.
    let mut landed = Vec::new();
    for (worker, acked, sent) in &results {
        let ids: Vec<usize> = (0..*sent).collect();
        for chunk in ids.chunks(50) {
            let external_ids: Vec<String> =
                chunk.iter().map(|n| format!("w{worker}-{n}")).collect();
            let mut answers = Vec::new();
            for base in &survivors {
                let found = post(
                    &client,
                    format!("{base}/users/export/ids"),
                    &key,
                    json!({"external_ids": external_ids}),
                )
                .await;
                let mut present: Vec<String> = found["users"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|u| {
                        assert_eq!(u["custom_attributes"]["tag"], "crash", "half-applied: {u}");
                        assert_eq!(u["custom_events"][0]["count"], 1, "half-applied: {u}");
                        u["external_id"].as_str().unwrap_or_default().to_string()
                    })
                    .collect();
                present.sort();
                answers.push(present);
            }
            assert!(answers.windows(2).all(|w| w[0] == w[1]), "nodes disagree");
            for n in chunk {
                let id = format!("w{worker}-{n}");
                let there = answers[0].contains(&id);
                assert!(there || !acked.contains(n), "acknowledged {id} is missing");
                if there {
                    landed.push(id);
                }
            }
        }
    }
    eprintln!("{} requests landed", landed.len());
    // The counter counts exactly the requests that landed, on every survivor.
    for base in &survivors {
        let found = post(
            &client,
            format!("{base}/users/export/ids"),
            &key,
            json!({"external_ids": ["counter"]}),
        )
        .await;
        assert_eq!(
            found["users"][0]["custom_attributes"]["hits"],
            landed.len(),
            "{found}"
        );
    }
    // A segment's size is the same on every survivor.
    let segment = post(
        &client,
        format!("{}/eddy/v1/workspaces/default/segments", survivors[0]),
        ADMIN,
        json!({"name": "crash", "filter": {"attribute": "tag", "op": "equals", "value": "crash"}}),
    )
    .await;
    let id = segment["id"].as_str().expect("segment id").to_string();
    for base in &survivors {
        let sized: Value = client
            .get(format!("{base}/eddy/v1/workspaces/default/segments/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("size")
            .json()
            .await
            .expect("json");
        assert_eq!(sized["size"], landed.len(), "{base}: {sized}");
    }
    // Every event that landed reaches S3 and Amplitude through the connectors' new node.
    let in_s3 = || {
        let mut users = std::collections::BTreeSet::new();
        for object in s3.keys() {
            for record in read_avro(&s3.get(&object).unwrap_or_default()) {
                if let Some(user) = record["external_user_id"].as_str() {
                    users.insert(user.to_string());
                }
            }
        }
        users
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while (amp.distinct() < landed.len() || in_s3().len() < landed.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered: std::collections::BTreeSet<String> = amp
        .ingested()
        .values()
        .filter_map(|e| e["user_id"].as_str().map(str::to_string))
        .collect();
    let stored = in_s3();
    for id in &landed {
        assert!(
            delivered.contains(id),
            "{id}'s event never reached Amplitude"
        );
        assert!(stored.contains(id), "{id}'s event never reached S3");
    }
    drop(servers);
    drop(dirs);
}
