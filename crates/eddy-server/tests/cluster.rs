//! Three eddy nodes sharing one PostgreSQL database, each a whole server on its own port with
//! its own connections: writes through any node land once and are read by every other at once,
//! concurrent writes to one profile lose nothing, identifiers stay unique, segment sizes agree,
//! rate limits hold across nodes, the Currents connector moves to another node when its
//! leader stops, and a stalled database stalls only the requests that read it. Needs the machine's PostgreSQL; skipped without `EDDY_TEST_POSTGRES=1`.

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_server::config::RateLimit;
use eddy_testkit::{AmplitudeEmulator, TestApp, TestDatabase, start};
use futures_util::StreamExt;
use serde_json::{Value, json};

fn enabled() -> bool {
    if std::env::var("EDDY_TEST_POSTGRES").ok().as_deref() == Some("1") {
        return true;
    }
    eprintln!("skipped: set EDDY_TEST_POSTGRES=1 with PostgreSQL on 127.0.0.1:5432");
    false
}

/// Nodes on one database, with the same secrets key and a rate limit small enough to count.
async fn nodes(database: &TestDatabase, count: usize) -> (Vec<TestApp>, Vec<tempfile::TempDir>) {
    let url = database.url().expect("a database");
    let mut apps = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..count {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = url.clone();
        let app = start(dir.path().to_path_buf(), move |config| {
            config.store.kind = "postgres".into();
            config.store.url = Some(url);
            config.store.connections = 3;
            config.secrets_key = Some("ab".repeat(32));
            config.rate_limits = BTreeMap::from([
                (
                    "segments".to_string(),
                    RateLimit {
                        limit: 10,
                        window_seconds: 3600,
                    },
                ),
                (
                    "users.track".to_string(),
                    RateLimit {
                        limit: 1_000_000,
                        window_seconds: 1,
                    },
                ),
            ]);
        })
        .await;
        apps.push(app);
        dirs.push(dir);
    }
    (apps, dirs)
}

async fn segment_size(app: &TestApp, id: &str) -> u64 {
    let (status, body) = app
        .admin_get(&format!("/eddy/v1/workspaces/default/segments/{id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["size"].as_u64().expect("size")
}

async fn leaders(apps: &[&TestApp]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        if app.metrics().await.contains("\neddy_cluster_leader 1\n") {
            out.push(i);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_one_database_act_as_one() {
    if !enabled() {
        return;
    }
    let database = TestDatabase::create();
    let (apps, _dirs) = nodes(&database, 3).await;
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);

    // A key made on one node works on the others, and a write is read right after elsewhere.
    let (status, body) = a
        .post_as(
            &c.key,
            "/users/track",
            json!({"attributes": [{"external_id": "ryw", "tier": "gold"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let seen = b.user("ryw").await.expect("node b reads node a's write");
    assert_eq!(seen["custom_attributes"]["tier"], "gold");

    // Concurrent writes to one profile through all nodes: nothing lost (3 nodes × 1,000).
    let per_node = 1_000;
    let writes = (0..3 * per_node).map(|i| {
        let (n, app) = (i % 3, &apps[i % 3]);
        async move {
            let body = json!({
                "attributes": [{"external_id": "counter", "points": {"inc": 1},
                                "tags": {"add": [format!("n{n}-{}", i % 8)]}}],
                "events": [{"external_id": "counter", "name": "clicked", "time": "2024-05-01T00:00:00Z"}],
            });
            let (status, body) = app.track(body).await;
            assert_eq!(status, 201, "{body}");
        }
    });
    futures_util::stream::iter(writes)
        .buffer_unordered(96)
        .collect::<Vec<()>>()
        .await;
    // Identifiers stay unique: every node creates the same 40 users at once.
    let mut creates = Vec::new();
    for app in &apps {
        for k in 0..40 {
            creates.push(async move {
                let body =
                    json!({"attributes": [{"external_id": format!("same-{k}"), "tier": "silver"}]});
                let (status, body) = app.track(body).await;
                assert_eq!(status, 201, "{body}");
            });
        }
    }
    futures_util::future::join_all(creates).await;
    for app in &apps {
        let user = app.user("counter").await.expect("counter");
        assert_eq!(user["custom_attributes"]["points"], 3 * per_node, "{user}");
        assert_eq!(
            user["custom_attributes"]["tags"].as_array().map(Vec::len),
            Some(24),
            "{user}"
        );
        assert_eq!(user["custom_events"][0]["count"], 3 * per_node, "{user}");
    }

    // A segment sized on any node counts every acknowledged write, the same on every node.
    let (status, body) = b
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "silver", "filter": {"attribute": "tier", "op": "equals", "value": "silver"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let silver = body["id"].as_str().expect("id").to_string();
    for app in &apps {
        assert_eq!(segment_size(app, &silver).await, 40);
    }
    c.track(json!({"attributes": [{"external_id": "same-0", "tier": "bronze"}]}))
        .await;
    for app in &apps {
        assert_eq!(
            segment_size(app, &silver).await,
            39,
            "a write on c, asked anywhere"
        );
    }
    // Identify and merge racing on different nodes leave each identifier on one live profile.
    for k in 0..10 {
        a.track(json!({"attributes": [
            {"user_alias": {"alias_name": format!("anon-{k}"), "alias_label": "amplitude"},
             "_update_existing_only": false, "tier": "anon"},
            {"external_id": format!("race-{k}")}, {"external_id": format!("keep-{k}")}
        ]}))
        .await;
    }
    let races = (0..10).map(|k| async move {
        let identify = b.post(
            "/users/identify",
            json!({"aliases_to_identify": [{"external_id": format!("race-{k}"),
                   "user_alias": {"alias_name": format!("anon-{k}"), "alias_label": "amplitude"}}]}),
        );
        let merge = c.post(
            "/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"external_id": format!("race-{k}")},
                                      "identifier_to_keep": {"external_id": format!("keep-{k}")}}]}),
        );
        let ((s1, b1), (s2, b2)) = futures_util::join!(identify, merge);
        assert!(s1 < 300 && s2 < 300, "{b1} {b2}");
    });
    futures_util::future::join_all(races).await;
    for k in 0..10 {
        let mut answers = Vec::new();
        for app in &apps {
            let kept = app.user(&format!("keep-{k}")).await.expect("kept");
            let alias = app
                .user_by(json!({"user_aliases": [{"alias_name": format!("anon-{k}"), "alias_label": "amplitude"}]}))
                .await;
            let race = app.user(&format!("race-{k}")).await;
            // Identify first: the alias joined race-k, and a merge leaves aliases behind with
            // the merged profile, so both are gone. Merge first: race-k was gone, so identify
            // gave the alias-only profile that external id, and both name it.
            match (&race, &alias) {
                (None, None) => {}
                (Some(race), Some(alias)) => {
                    assert_eq!(alias["braze_id"], race["braze_id"], "anon-{k}")
                }
                _ => panic!("race-{k} and anon-{k} disagree: {race:?} {alias:?}"),
            }
            assert_ne!(
                alias.as_ref().map(|a| a["braze_id"].clone()),
                Some(kept["braze_id"].clone())
            );
            let race_id = race.map(|r| r["braze_id"].clone());
            let alias_id = alias.map(|a| a["braze_id"].clone());
            answers.push((kept["braze_id"].clone(), alias_id, race_id));
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "nodes disagree: {answers:?}"
        );
    }
    // Identify and merge on different nodes, one after the other.
    let (_, body) = a
        .post(
            "/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"external_id": "same-1"},
                                      "identifier_to_keep": {"external_id": "same-2"}}]}),
        )
        .await;
    assert_eq!(body["message"], "success", "{body}");
    let (_, body) = b
        .post(
            "/users/alias/new",
            json!({"user_aliases": [{"external_id": "same-3", "alias_name": "amp-3", "alias_label": "amplitude"}]}),
        )
        .await;
    assert_eq!(body["message"], "success", "{body}");
    for app in &apps {
        assert!(app.user("same-1").await.is_none(), "merged away");
        let kept = app
            .user_by(json!({"user_aliases": [{"alias_name": "amp-3", "alias_label": "amplitude"}]}))
            .await
            .expect("alias");
        assert_eq!(kept["external_id"], "same-3");
        assert_eq!(
            segment_size(app, &silver).await,
            38,
            "same-1 merged into same-2"
        );
    }

    // The rate limit of a key holds across nodes: 10 of 15 calls pass, wherever they land.
    let mut passed = 0;
    for i in 0..15 {
        let app = &apps[i % 3];
        let response = app
            .client
            .get(app.url("/segments/list"))
            .bearer_auth(&a.key)
            .send()
            .await
            .expect("send");
        if response.status() == 200 {
            passed += 1;
        } else {
            assert_eq!(response.status(), 429);
        }
    }
    assert_eq!(passed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connector_moves_to_another_node_when_its_leader_stops() {
    if !enabled() {
        return;
    }
    let database = TestDatabase::create();
    let (apps, _dirs) = nodes(&database, 3).await;
    let amp = AmplitudeEmulator::start("amp-key").await;
    // Exactly one node leads.
    let mut leading = Vec::new();
    for _ in 0..50 {
        leading = leaders(&apps.iter().collect::<Vec<_>>()).await;
        if leading.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(leading.len(), 1, "{leading:?}");
    let leader = leading[0];
    // Created through a node that does not lead: the leader starts it.
    let other = (leader + 1) % 3;
    let (status, body) = apps[other]
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "amp", "type": "amplitude", "api_key": "amp-key", "endpoint": amp.url, "throttle_seconds": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "amp", "{body}");
    assert_eq!(body["state"], "active", "{body}");
    // Asked of the leader before its next tick has started it, it is starting, never "not found".
    let (status, body) = apps[leader]
        .admin_post("/eddy/v1/workspaces/default/currents/amp/flush", json!({}))
        .await;
    let starting = status == 503 && body["message"].as_str().unwrap_or("").contains("starting");
    assert!(status == 200 || starting, "{status} {body}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // What only the leader does, asked of another node, is carried to the leader (which has started the connector by now).
    let (status, body) = apps[other]
        .admin_post("/eddy/v1/workspaces/default/currents/amp/flush", json!({}))
        .await;
    assert_eq!(status, 200, "the leader flushed: {body}");
    assert!(body["flushed"].is_number(), "{body}");
    let (status, body) = apps[other]
        .admin_post("/eddy/v1/workspaces/default/currents/amp/test", json!({}))
        .await;
    assert_eq!(status, 200, "the leader sent test events: {body}");
    assert_eq!(body["message"], "success", "{body}");
    // The test events Amplitude takes were delivered before the answer, beside what is
    // tracked below.
    let tests = amp.distinct();
    assert!(tests > 0, "{body}");
    let (status, body) = apps[other]
        .admin_post(
            "/eddy/v1/workspaces/default/currents/amp/replay",
            json!({"from": "2024-01-01"}),
        )
        .await;
    assert_eq!(status, 200, "the leader replays: {body}");
    assert!(body["from_sequence"].is_number(), "{body}");
    for (n, app) in apps.iter().enumerate() {
        track_range(app, n * 50, n * 50 + 50).await;
    }
    wait_for(&amp, 150 + tests).await;
    // The leader stops; another node takes over and delivers what is written from now on.
    let mut apps = apps;
    let stopped = apps.remove(leader);
    stopped.stop().await;
    for (n, app) in apps.iter().enumerate() {
        track_range(app, 1000 + n * 50, 1000 + n * 50 + 50).await;
    }
    wait_for(&amp, 250 + tests).await;
    let rest: Vec<&TestApp> = apps.iter().collect();
    assert_eq!(leaders(&rest).await.len(), 1);
}

/// Tracks one event for each of the users `u{from}`..`u{to}`.
async fn track_range(app: &TestApp, from: usize, to: usize) {
    let events: Vec<Value> = (from..to)
        .map(|i| json!({"external_id": format!("u{i}"), "name": "seen", "time": "2024-05-01T00:00:00Z"}))
        .collect();
    let (status, body) = app.track(json!({"events": events})).await;
    assert_eq!(status, 201, "{body}");
}

/// Waits (up to 30 s) until the emulator holds `count` distinct events, and no more arrive.
async fn wait_for(amp: &AmplitudeEmulator, count: usize) {
    for _ in 0..300 {
        if amp.distinct() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(amp.distinct(), count);
}

/// A request that reads waits for the database on a thread where waiting is allowed: with the
/// database stalled and more reads waiting than the runtime has workers, a request that does
/// not read is still answered, and the reads finish once the database answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_holds_the_reads_not_the_workers() {
    if !enabled() {
        return;
    }
    let database = TestDatabase::create();
    let target = "127.0.0.1:5432".parse().expect("address");
    let proxy = eddy_testkit::TcpProxy::start(target, Duration::ZERO);
    let url = database
        .url()
        .expect("a database")
        .replace("127.0.0.1:5432", &proxy.addr().to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start(dir.path().to_path_buf(), move |config| {
        config.store.kind = "postgres".into();
        config.store.url = Some(url);
        config.store.connections = 2;
        // Allowance for the reads below is taken from the database before it stalls.
        config.rate_limits = BTreeMap::from([(
            "users.export.ids".to_string(),
            RateLimit {
                limit: 1_000_000,
                window_seconds: 3600,
            },
        )]);
    })
    .await;
    let (status, body) = app
        .post(
            "/users/track",
            json!({"attributes": [{"external_id": "held", "tier": "gold"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let read = app.user("held").await.expect("the user");
    assert_eq!(read["custom_attributes"]["tier"], "gold");

    proxy.hold();
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, key) = (
                app.client.clone(),
                app.url("/users/export/ids"),
                app.key.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({"external_ids": ["held"]}))
                    .send()
                    .await
                    .expect("answer")
                    .json::<Value>()
                    .await
                    .expect("json")
            })
        })
        .collect();
    // From here the test waits off its runtime, whose workers a regression would block: it
    // then fails on the timeout below instead of hanging.
    let health = app.url("/health");
    let status = tokio::task::block_in_place(move || {
        std::thread::sleep(Duration::from_millis(300));
        let (answered, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let status =
                runtime.block_on(async { reqwest::get(health).await.map(|r| r.status().as_u16()) });
            let _ = answered.send(status);
        });
        answer.recv_timeout(Duration::from_secs(30))
    });
    // Released before asserting, so that a failure does not leave blocked workers behind.
    proxy.release();
    assert!(
        matches!(status, Ok(Ok(200))),
        "a request that reads nothing waited for the stalled database: {status:?}"
    );
    for read in reads {
        let body = read.await.expect("read task");
        assert_eq!(
            body["users"][0]["custom_attributes"]["tier"], "gold",
            "{body}"
        );
    }
    app.stop().await;
}
