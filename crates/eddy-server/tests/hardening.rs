//! Hardening through the public surface: no identifier stops the writer, readiness, secrets at
//! rest, file modes, connection timeouts and the cap, and shutdown with unreachable sinks.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use eddy_testkit::{TestApp, spawn_app, spawn_with, start};
use serde_json::{Value, json};

const LONG: usize = 70_000;

fn long() -> String {
    "x".repeat(LONG)
}

/// A write that must succeed after every hostile request: the writer is alive.
async fn canary(app: &TestApp, n: usize) {
    let (status, body) = app
        .track(json!({"attributes": [{"external_id": "canary", "seen": {"inc": 1}}]}))
        .await;
    assert_eq!(status, 201, "canary {n}: {body}");
}

#[tokio::test]
async fn over_long_identifiers_are_refused_and_the_writer_keeps_serving() {
    let app = spawn_app().await;
    let l = long();
    // (path, body, expected status)
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "/users/track",
            json!({"attributes": [{"user_alias": {"alias_name": l, "alias_label": "l"}, "_update_existing_only": false, "a": 1}]}),
            400,
        ),
        (
            "/users/track",
            json!({"attributes": [{"external_id": "u", "push_tokens": [{"app_id": "a", "token": "t", "device_id": l}]}]}),
            400,
        ),
        (
            "/users/track",
            json!({"attributes": [{"external_id": l, "a": 1}]}),
            400,
        ),
        (
            "/users/track",
            json!({"events": [{"external_id": "u", "app_id": l, "name": "e", "time": "2024-01-01T00:00:00Z"}]}),
            400,
        ),
        (
            "/users/identify",
            json!({"aliases_to_identify": [{"external_id": "u", "user_alias": {"alias_name": l, "alias_label": "l"}}]}),
            400,
        ),
        (
            "/users/identify",
            json!({"emails_to_identify": [{"external_id": l, "email": "a@b.co"}]}),
            400,
        ),
        (
            "/users/identify",
            json!({"phone_numbers_to_identify": [{"external_id": "u", "phone": l}]}),
            400,
        ),
        (
            "/users/alias/new",
            json!({"user_aliases": [{"alias_name": l, "alias_label": "l"}]}),
            400,
        ),
        (
            "/users/alias/new",
            json!({"user_aliases": [{"alias_name": "n", "alias_label": l}]}),
            400,
        ),
        (
            "/users/alias/update",
            json!({"alias_updates": [{"alias_label": "l", "old_alias_name": "a", "new_alias_name": l}]}),
            400,
        ),
        (
            "/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"external_id": l}, "identifier_to_keep": {"external_id": "u"}}]}),
            400,
        ),
        (
            "/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"user_alias": {"alias_name": l, "alias_label": "l"}}, "identifier_to_keep": {"external_id": "u"}}]}),
            400,
        ),
        (
            "/users/delete",
            json!({"user_aliases": [{"alias_name": l, "alias_label": "l"}]}),
            400,
        ),
        ("/users/delete", json!({"braze_ids": [l]}), 400),
        ("/users/export/ids", json!({"external_ids": [l]}), 201),
        (
            "/users/export/ids",
            json!({"user_aliases": [{"alias_name": l, "alias_label": "l"}]}),
            201,
        ),
        ("/users/export/ids", json!({"device_id": l}), 201),
        ("/users/export/ids", json!({"braze_id": l}), 201),
        ("/users/export/ids", json!({"email_address": l}), 201),
        ("/users/export/ids", json!({"phone": l}), 201),
        (
            "/users/export/segment",
            json!({"segment_id": l, "fields_to_export": ["external_id"]}),
            400,
        ),
    ];
    for (n, (path, body, expected)) in cases.into_iter().enumerate() {
        let (status, answer) = app.post(path, body).await;
        assert_eq!(status, expected, "{path} case {n}: {answer}");
        canary(&app, n).await;
    }
    // The long external id is reported as not found, like any other unknown id.
    let (_, answer) = app
        .post("/users/export/ids", json!({"external_ids": [l, "canary"]}))
        .await;
    assert_eq!(
        answer["users"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(
        answer["invalid_user_ids"][0].as_str().map(str::len),
        Some(LONG)
    );
    // A per-object error names the field and keeps the valid object beside it.
    let (status, answer) = app
        .track(json!({"attributes": [
            {"user_alias": {"alias_name": l, "alias_label": "l"}, "_update_existing_only": false, "a": 1},
            {"external_id": "beside", "a": 1}]}))
        .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["errors"][0]["type"],
        "'alias_name' is longer than 997 bytes"
    );
    assert!(app.user("beside").await.is_some());
    assert_eq!(
        app.user("canary").await.expect("canary")["custom_attributes"]["seen"],
        21
    );
}

#[tokio::test]
async fn partner_imports_skip_over_long_ids_and_admin_paths_answer_json() {
    let app = spawn_app().await;
    let l = long();
    let (status, _) = app
        .admin_put(
            "/eddy/v1/partners/amplitude",
            json!({"partner_api_key": "partner-key"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, key) = app
        .admin_post(
            "/eddy/v1/workspaces/default/partners/amplitude/data-import-key",
            json!({}),
        )
        .await;
    assert_eq!(status, 201);
    let secret = key["key"].as_str().expect("key").to_string();
    app.track(json!({"attributes": [{"external_id": "member", "a": 1}]}))
        .await;
    let (status, body) = app
        .post(
            "/partners/amplitude/cohorts",
            json!({"partner_api_key": "partner-key", "client_secret": secret,
            "cohort_id": "c1", "name": "C", "created_at": "2024-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post(
            "/partners/amplitude/cohorts/users",
            json!({"partner_api_key": "partner-key", "client_secret": secret,
            "cohort_id": "c1", "cohort_changes": [{"user_ids": [l, "member"], "device_ids": [l],
            "aliases": [{"alias_name": l, "alias_label": "l"}]}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    canary(&app, 0).await;
    let segment = json!({"name": "in c1", "filter": {"attribute": "amplitude_cohorts", "op": "includes_value", "value": "c1"}});
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/segments", segment)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], 1);
    // Long names in admin paths are lookups of things that cannot exist.
    let (status, body) = app
        .admin_get(&format!(
            "/eddy/v1/workspaces/default/currents/{}",
            "n".repeat(20_000)
        ))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "n".repeat(20_000), "type": "amplitude", "api_key": "k"}),
        )
        .await;
    assert_eq!(status, 400);
    canary(&app, 1).await;
}

#[tokio::test]
async fn health_ready_metrics_and_a_lower_case_bearer() {
    let app = spawn_app().await;
    for path in ["/health", "/ready"] {
        let response = app.client.get(app.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = app
        .client
        .get(app.url("/eddy/v1/workspaces"))
        .header("authorization", format!("bearer {}", app.admin_token))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let metrics = app.metrics().await;
    for name in [
        "eddy_ready 1",
        "eddy_connections_open",
        "eddy_http_handler_panics_total 0",
        "eddy_writer_panics_total 0",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

/// Every file under the data directory, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        } else if meta.is_file() {
            out.push((
                path.clone(),
                std::fs::read(&path).unwrap_or_default(),
                meta.permissions().mode(),
            ));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest_and_files_are_private() {
    if !embedded_store_only() {
        return;
    }
    let keys = tempfile::tempdir().expect("keys");
    let key_file = keys.path().join("eddy.key");
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY-4711";
    let amp_key = "amplitude-key-0123456789abcdef-secret";
    let tmp = tempfile::tempdir().expect("data");
    let dir = tmp.path().join("data");
    let kf = key_file.clone();
    let app = start(dir.clone(), move |c| c.secrets_key_file = Some(kf)).await;
    let (status, body) = app
        .admin_post("/eddy/v1/workspaces/default/currents", json!({"name": "s3", "type": "s3", "bucket": "b", "validate": false,
            "endpoint": "http://127.0.0.1:9", "access_key_id": "AKIA", "secret_access_key": secret}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "amp", "type": "amplitude", "validate": false,
            "api_key": amp_key, "endpoint": "http://127.0.0.1:9"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .admin_put(
            "/eddy/v1/workspaces/default/export-storage",
            json!({"type": "s3",
        "bucket": "b", "access_key_id": "AKIA", "secret_access_key": secret}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = app
        .admin_get("/eddy/v1/workspaces/default/export-storage")
        .await;
    assert!(!shown.to_string().contains(secret), "{shown}");
    app.stop().await;
    // Restarted, the connector still works with its key (opened from the sealed value).
    let kf = key_file.clone();
    let again = start(dir.clone(), move |c| c.secrets_key_file = Some(kf)).await;
    let (status, body) = again
        .admin_get("/eddy/v1/workspaces/default/currents/amp")
        .await;
    assert_eq!(status, 200, "{body}");
    again.stop().await;

    let files = files_under(&dir);
    assert!(!files.is_empty());
    for (path, bytes, mode) in &files {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "{} holds the S3 secret in plain text",
            path.display()
        );
        assert!(
            !contains(bytes, amp_key.as_bytes()),
            "{} holds the Amplitude key in plain text",
            path.display()
        );
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others: {:o}",
            path.display(),
            mode
        );
    }
    let dir_mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(
        std::fs::metadata(&key_file)
            .expect("key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Rotation: a new key with the old one as previous re-encrypts; then the old one can go.
    let new_key = keys.path().join("new.key");
    let (kf, nk) = (key_file.clone(), new_key.clone());
    let rotating = start(dir.clone(), move |c| {
        c.secrets_key_file = Some(nk);
        c.previous_secrets_key_file = Some(kf);
    })
    .await;
    rotating.stop().await;
    std::fs::remove_file(&key_file).expect("old key gone");
    let nk = new_key.clone();
    let rotated = start(dir.clone(), move |c| c.secrets_key_file = Some(nk)).await;
    let (status, _) = rotated
        .admin_get("/eddy/v1/workspaces/default/currents/amp")
        .await;
    assert_eq!(status, 200);
    rotated.stop().await;
    // A wrong key is refused at start with a clear error, never a silent empty credential.
    let mut config = eddy_server::Config {
        data_dir: dir.clone(),
        admin_token: Some("t".into()),
        secrets_key: Some("00".repeat(32)),
        ..eddy_server::Config::default()
    };
    config.secrets_key_file = None;
    let refused = eddy_server::App::build(&config)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("another key"), "{refused}");
}

#[test]
fn existing_files_are_made_private_at_start() {
    if !embedded_store_only() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let app = spawn_app().await;
        app.track(json!({"attributes": [{"external_id": "u", "a": 1}]}))
            .await;
        let dir = app.stop().await;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = dir.join("store");
        for entry in std::fs::read_dir(&store).expect("store") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
            }
        }
        let again = start(dir.clone(), |_| {}).await;
        assert!(again.user("u").await.is_some());
        again.stop().await;
        for (path, _, mode) in files_under(&dir) {
            assert_eq!(mode & 0o077, 0, "{}", path.display());
        }
        assert_eq!(
            std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777,
            0o700
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    });
}

/// Reads until the server closes the connection; answers what it sent.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> Option<String> {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_the_cap_refuses_with_503() {
    let app = spawn_with(|c| {
        c.header_read_timeout_seconds = 1;
        c.idle_timeout_seconds = 1;
        c.max_connections = 4;
    })
    .await;
    let addr = app.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        // Slowloris: headers that never end are cut.
        let mut slow = std::net::TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: ")
            .expect("write");
        let slow_closed = read_until_closed(&mut slow, Duration::from_secs(20));
        // Idle keep-alive: one request answered, then the connection is closed.
        let mut idle = std::net::TcpStream::connect(addr).expect("connect");
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let idle_answer = read_until_closed(&mut idle, Duration::from_secs(20));
        // The cap: four open connections, the fifth is answered 503 and closed.
        let held: Vec<_> = (0..4)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .expect("partial");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut extra = std::net::TcpStream::connect(addr).expect("connect");
        let refused = read_until_closed(&mut extra, Duration::from_secs(20));
        drop(held);
        (slow_closed, idle_answer, refused)
    })
    .await
    .expect("client");
    let (slow_closed, idle_answer, refused) = outcome;
    assert!(slow_closed.is_some(), "a slowloris connection stayed open");
    let idle_answer = idle_answer.expect("an idle connection stayed open");
    assert!(idle_answer.starts_with("HTTP/1.1 200"), "{idle_answer}");
    let refused = refused.expect("the connection over the cap stayed open");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"));
    // Served again once the held connections are gone.
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(r) = app.client.get(app.url("/health")).send().await
            && r.status() == 200
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("eddy_connections_refused_total 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("eddy_connections_timed_out_total 0"),
        "{metrics}"
    );
}

/// A TCP server that accepts and never answers: a sink that is down without refusing.
async fn black_hole() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test]
async fn shutdown_with_unreachable_sinks_keeps_the_deadline_and_loses_nothing() {
    let hole = black_hole().await;
    let app = spawn_with(|c| c.shutdown_timeout_seconds = 1).await;
    let names: Vec<String> = (0..6).map(|i| format!("down{i}")).collect();
    for name in &names {
        let (status, body) = app
            .admin_post(
                "/eddy/v1/workspaces/default/currents",
                json!({"name": name, "type": "amplitude", "validate": false,
                "api_key": "k", "endpoint": format!("http://{hole}"), "timeout_seconds": 30}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = app
        .track(json!({"events": [{"external_id": "u", "name": "kept", "time": "2024-01-01T00:00:00Z"}]}))
        .await;
    assert_eq!(status, 201);
    // Give the connectors time to be stuck sending.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let dir = app.stop().await;
    let took = started.elapsed();
    eprintln!("shutdown took {took:?}");
    // Six sinks that never answer, each with a 30 s client timeout: one after another this took
    // minutes. The deadline is 1 s; the bound leaves room for a loaded machine.
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    // Restarted, every connector still has the event to deliver: no cursor moved past it.
    let again = start(dir.clone(), |c| c.shutdown_timeout_seconds = 1).await;
    let ws = again
        .store
        .workspace("default")
        .expect("read")
        .expect("default");
    let head = again.store.outbox_head().expect("head");
    let kept = again.store.outbox(head - 1, 1).expect("outbox");
    assert!(kept[0].1.to_string().contains("kept"), "{kept:?}");
    for name in &names {
        let state = again.store.connector_state(ws.id, name).expect("read");
        let cursor = state
            .as_ref()
            .and_then(|s| s["cursor"].as_u64())
            .unwrap_or(0);
        assert!(
            cursor < head,
            "{name} moved past the undelivered event: {state:?}"
        );
    }
    again.stop().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn a_damaged_delivery_state_stops_its_connector_instead_of_replaying_everything() {
    let app = spawn_app().await;
    for name in ["damaged", "healthy"] {
        let (status, body) = app
            .admin_post(
                "/eddy/v1/workspaces/default/currents",
                json!({"name": name, "type": "amplitude", "validate": false,
                "api_key": "k", "endpoint": "http://127.0.0.1:9"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let ws = app
        .store
        .workspace("default")
        .expect("read")
        .expect("default");
    app.store
        .put_connector_state(ws.id, "damaged".into(), json!({"cursor": "not a number"}))
        .await
        .expect("write");
    let dir = app.stop().await;
    let again = start(dir.clone(), |c| c.shutdown_timeout_seconds = 1).await;
    let (status, _) = again
        .admin_get("/eddy/v1/workspaces/default/currents/healthy")
        .await;
    assert_eq!(status, 200, "the healthy connector runs");
    let (status, body) = again
        .admin_get("/eddy/v1/workspaces/default/currents/damaged")
        .await;
    // Not started from cursor 0, and said so in its status.
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "stopped", "{body}");
    assert!(body["last_error"].is_string(), "{body}");
    let state = again.store.connector_state(ws.id, "damaged").expect("read");
    assert_eq!(
        state,
        Some(json!({"cursor": "not a number"})),
        "its state is left for the operator"
    );
    again.stop().await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// These tests look at the embedded store's files; with `EDDY_TEST_STORE=postgres` the data is
/// in PostgreSQL (sealing happens above the backend, the same for both).
fn embedded_store_only() -> bool {
    if std::env::var("EDDY_TEST_STORE").ok().as_deref() == Some("postgres") {
        eprintln!("skipped: checks the embedded store's files");
        return false;
    }
    true
}
