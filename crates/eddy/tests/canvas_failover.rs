//! Canvas users waiting in a delay survive the leader's `kill -9`: two `eddy serve` processes on
//! one PostgreSQL database, a canvas message → delay → message, the leader killed while every
//! user waits; the surviving node takes the lease and sends the second message to each user,
//! once. Needs the machine's PostgreSQL; skipped without `EDDY_TEST_POSTGRES=1`.

mod binary;

use std::time::{Duration, Instant};

use binary::{ADMIN, Running, free_port, is_leader, leader_of, spawn_server, wait_healthy};
use eddy_testkit::{TestDatabase, WebhookReceiver};
use serde_json::{Value, json};

const USERS: usize = 30;

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> Value {
    let response = client
        .request(method, &url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).expect("json")
}

fn count(receiver: &WebhookReceiver, prefix: &str) -> Vec<String> {
    receiver
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

async fn wait_for(receiver: &WebhookReceiver, prefix: &str, n: usize, within: Duration) {
    let started = Instant::now();
    while count(receiver, prefix).len() < n {
        assert!(
            started.elapsed() < within,
            "{} of {n} requests under {prefix}",
            count(receiver, prefix).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_waiting_in_a_canvas_delay_go_on_after_kill_9_of_the_leader() {
    if std::env::var("EDDY_TEST_POSTGRES").ok().as_deref() != Some("1") {
        eprintln!("skipped: set EDDY_TEST_POSTGRES=1 with PostgreSQL on 127.0.0.1:5432");
        return;
    }
    let database = TestDatabase::create();
    let url = database.url().expect("url");
    let name = url.rsplit('/').next().expect("name").to_string();
    let client = reqwest::Client::new();
    let receiver = WebhookReceiver::start().await;
    let mut dirs = Vec::new();
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("test-database"), &name).expect("marker");
        let port = free_port();
        servers.push(Running(Some(spawn_server(dir.path(), port))));
        bases.push(format!("http://127.0.0.1:{port}"));
        dirs.push(dir);
    }
    for base in &bases {
        wait_healthy(&client, base).await;
    }
    let admin = |path: &str| format!("{}/eddy/v1/workspaces/default{path}", bases[0]);
    let created = call(
        &client,
        reqwest::Method::POST,
        admin("/api-keys"),
        ADMIN,
        json!({"name": "canvas"}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_string();
    call(
        &client,
        reqwest::Method::PUT,
        admin("/connected-content"),
        ADMIN,
        json!({"allowed_hosts": ["127.0.0.1"]}),
    )
    .await;
    let canvas = call(
        &client,
        reqwest::Method::POST,
        admin("/canvases"),
        ADMIN,
        json!({"name": "Failover", "steps": [
            {"type": "message", "messages": {"webhook": {"url": receiver.url("/first/{{${user_id}}}")}}},
            {"type": "delay", "seconds": 4},
            {"type": "message", "messages": {"webhook": {"url": receiver.url("/second/{{${user_id}}}")}}}]}),
    )
    .await;
    let attributes: Vec<Value> = (0..USERS)
        .map(|i| json!({"external_id": format!("f{i}")}))
        .collect();
    call(
        &client,
        reqwest::Method::POST,
        format!("{}/users/track", bases[1]),
        &key,
        json!({"attributes": attributes}),
    )
    .await;
    let leader = leader_of(&client, &bases).await;
    let survivor = bases[1 - leader].clone();
    // Entered through the node that does not lead: the entries are in the database.
    let recipients: Vec<Value> = (0..USERS)
        .map(|i| json!({"external_user_id": format!("f{i}")}))
        .collect();
    call(
        &client,
        reqwest::Method::POST,
        format!("{survivor}/canvas/trigger/send"),
        &key,
        json!({"canvas_id": canvas["id"], "recipients": recipients}),
    )
    .await;
    wait_for(&receiver, "/first/", USERS, Duration::from_secs(30)).await;
    assert!(
        count(&receiver, "/second/").is_empty(),
        "everyone waits in the delay"
    );
    servers[leader].kill();
    wait_for(&receiver, "/second/", USERS, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut second = count(&receiver, "/second/");
    second.sort();
    second.dedup();
    assert_eq!(second.len(), USERS, "every user got the second message");
    assert_eq!(
        count(&receiver, "/second/").len(),
        USERS,
        "the second message was made after the kill, so nobody got it twice"
    );
    assert!(is_leader(&client, &survivor).await, "the survivor leads");
}
