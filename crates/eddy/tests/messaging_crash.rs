//! Crash safety of sending: `kill -9` the real binary in the middle of a broadcast, restart it,
//! and count at the receiver. Every recipient gets the message; the only repeats are recipients
//! the dispatch was delivering at the crash, and the dispatch counts them.

mod binary;

use std::collections::HashMap;
use std::time::Duration;

use binary::{ADMIN, spawn_server, wait_healthy};
use eddy_testkit::WebhookReceiver;
use serde_json::{Value, json};

const USERS: usize = 20_000;

async fn admin(client: &reqwest::Client, base: &str, path: &str) -> Value {
    client
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("admin get")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_broadcast_resumes_without_loss_and_counts_repeats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let _database = eddy_testkit::TestDatabase::for_dir(tmp.path());
    let port = binary::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let receiver = WebhookReceiver::start().await;
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
    // The receiver is on loopback, which webhooks reach only when the workspace allows it.
    let allowed = client
        .put(format!(
            "{base}/eddy/v1/workspaces/default/connected-content"
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"allowed_hosts": ["127.0.0.1"]}))
        .send()
        .await
        .expect("allow loopback");
    assert_eq!(allowed.status(), 200);
    let ids: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    for chunk in ids.chunks(75) {
        let attributes: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"external_id": id, "first_name": id}))
            .collect();
        let r = client
            .post(format!("{base}/users/track"))
            .bearer_auth(&key)
            .json(&json!({"attributes": attributes}))
            .send()
            .await
            .expect("track");
        assert_eq!(r.status(), 201);
    }
    let sent: Value = client
        .post(format!("{base}/messages/send"))
        .bearer_auth(&key)
        .json(&json!({"broadcast": true, "messages": {"webhook": {
            "url": receiver.url("/to/{{${user_id}}}"), "body": "Hi {{${first_name}}}"}}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let dispatch_id = sent["dispatch_id"]
        .as_str()
        .expect("dispatch id")
        .to_string();
    // Kill once a good part, but not all, has arrived.
    while receiver.count() < (USERS / 4) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill().expect("kill -9");
    let _ = server.wait();
    let before_restart = receiver.count();
    eprintln!("{before_restart} deliveries before kill -9");
    assert!(
        before_restart < USERS as u64,
        "the broadcast finished before the kill"
    );

    let mut server = spawn_server(tmp.path(), port);
    wait_healthy(&client, &base).await;
    let path = format!("/eddy/v1/workspaces/default/dispatches/{dispatch_id}");
    let mut status = admin(&client, &base, &path).await;
    for _ in 0..3000 {
        if status["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = admin(&client, &base, &path).await;
    }
    assert_eq!(status["state"], "done", "{status}");
    let _ = server.kill();
    let _ = server.wait();

    let mut per_user: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        *per_user.entry(request.path).or_default() += 1;
    }
    assert_eq!(per_user.len(), USERS, "every recipient got the message");
    let repeats: usize = per_user.values().map(|n| n - 1).sum();
    let counted = status["counts"]["resent_after_restart"]
        .as_u64()
        .expect("counted") as usize;
    eprintln!(
        "{repeats} repeated deliveries; the dispatch counted {counted} recipients in doubt (claimed, not recorded) at the crash"
    );
    assert!(
        repeats <= counted,
        "{repeats} repeats but {counted} counted"
    );
    assert!(
        counted <= 2 * 512,
        "at most the two claimed chunks are in doubt: {counted}"
    );
    // The committed counts hold each recipient once: the chunk in flight was counted again, not twice.
    assert_eq!(status["counts"]["sent"], USERS as u64, "{status}");
}
