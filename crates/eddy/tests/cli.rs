//! The CLI as a user types it: `eddy config check`, admin flags in any position, log formats.

use std::process::Command;

fn eddy() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command.env_remove("RUST_BACKTRACE");
    command
}

#[test]
fn config_check_accepts_the_example_and_names_what_is_wrong() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../eddy.example.toml");
    let ok = eddy()
        .args(["config", "check", example])
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with(": ok\n"));

    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expected) in [
        (
            "max_array_length = 0\n",
            "max_array_length must be at least 1",
        ),
        ("lisen = \"127.0.0.1:1\"\n", "unknown field `lisen`"),
        (
            "[rate_limits]\n\"nope\" = { limit = 1, window_seconds = 1 }\n",
            "unknown rate limit group 'nope'",
        ),
    ] {
        let file = dir.path().join("eddy.toml");
        std::fs::write(&file, text).expect("write");
        let out = eddy()
            .args(["config", "check"])
            .arg(&file)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn admin_flags_work_after_the_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("admin-token"), "t0ken\n").expect("token");
    // Nothing listens on port 9: the command gets as far as the request, which proves every flag
    // was accepted where the user typed it.
    let out = eddy()
        .args(["admin", "usage", "--workspace", "default", "--data-dir"])
        .arg(dir.path())
        .args(["--url", "http://127.0.0.1:9"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
}

#[test]
fn logs_are_plain_text_off_a_terminal_or_json_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sync.toml");
    // Nothing listens on port 9: the run cannot check the target and logs a warning.
    std::fs::write(
        dir.path().join("people.csv"),
        "external_id,birthday\nu1,1980-01-02\n",
    )
    .expect("csv");
    std::fs::write(
        &file,
        "[[sync]]\nname = \"s\"\nsource = { type = \"csv\", path = \"people.csv\" }\ntarget = { type = \"users_track\", url = \"http://127.0.0.1:9\", api_key = \"k\", max_retries = 0 }\n[sync.attributes]\nbirthday = \"date\"\n",
    )
    .expect("write");
    let text = eddy()
        .args(["sync", "run", "--no-progress", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("WARN"), "{stderr:?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes off a terminal: {stderr:?}"
    );
    let json = eddy()
        .args(["--log-format", "json", "sync", "run", "--no-progress"])
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "info")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&json.stderr);
    let logged: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!logged.is_empty(), "no JSON log line in {stderr:?}");
    for line in logged {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(value.get("level").is_some(), "{line}");
    }
}

/// `eddy serve` on a free port with JSON logs into `<dir>/serve.log`; answers its base URL.
async fn serve(dir: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let log = std::fs::File::create(dir.join("serve.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("EDDY_ADMIN_TOKEN", "admin")
        .env("EDDY_SECRETS_KEY", "ab".repeat(32))
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .expect("serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("eddy did not start");
}

#[tokio::test]
async fn every_request_gets_a_log_line_with_its_key_and_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = serve(dir.path()).await;
    let client = reqwest::Client::new();
    let key: serde_json::Value = client
        .post(format!("{base}/eddy/v1/workspaces/default/api-keys"))
        .bearer_auth("admin")
        .json(&serde_json::json!({"name": "tracker"}))
        .send()
        .await
        .expect("key")
        .json()
        .await
        .expect("json");
    let response = client
        .post(format!("{base}/users/track"))
        .bearer_auth(key["key"].as_str().expect("key"))
        .json(&serde_json::json!({"attributes": [{"external_id": "a", "x": 1}, {"external_id": "b", "x": 2}],
                                  "events": [{"external_id": "a", "name": "e", "time": "2024-01-01T00:00:00Z"}]}))
        .send()
        .await
        .expect("track");
    assert_eq!(response.status(), 201);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.path().join("serve.log")).expect("read log");
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "eddy::request" && v["fields"]["path"] == "/users/track")
        .unwrap_or_else(|| panic!("no request line in {text}"));
    assert_eq!(line["fields"]["status"], 201, "{line}");
    assert_eq!(line["fields"]["key"], "tracker", "{line}");
    assert_eq!(line["fields"]["objects"], 3, "{line}");
    assert_eq!(line["fields"]["method"], "POST", "{line}");
    assert!(line["fields"]["duration_ms"].as_f64().is_some(), "{line}");
}

#[tokio::test]
async fn eddy_admin_covers_users_connectors_keys_and_partners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = serve(dir.path()).await;
    let admin = |args: &[&str]| {
        let out = eddy()
            .arg("admin")
            .args(args)
            .args(["--url", &base, "--token", "admin"])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let created: serde_json::Value =
        serde_json::from_str(&admin(&["keys", "create", "--name", "cli"])).expect("json");
    reqwest::Client::new()
        .post(format!("{base}/users/track"))
        .bearer_auth(created["key"].as_str().expect("key"))
        .json(
            &serde_json::json!({"attributes": [{"external_id": "ada@home", "first_name": "Ada"}]}),
        )
        .send()
        .await
        .expect("track");
    let found: serde_json::Value =
        serde_json::from_str(&admin(&["users", "find", "ada@home"])).expect("json");
    let braze_id = found["users"][0]["braze_id"]
        .as_str()
        .expect("found")
        .to_string();
    let profile: serde_json::Value =
        serde_json::from_str(&admin(&["users", "get", &braze_id])).expect("json");
    assert_eq!(profile["first_name"], "Ada");
    assert!(admin(&["keys", "list"]).contains("\"cli\""));
    assert!(admin(&["currents", "list"]).contains("connectors"));
    assert!(admin(&["partners", "list"]).contains("partners"));
    assert!(admin(&["segments", "list"]).contains("segments"));
    // A scheduled send, listed and cancelled from the command line.
    let scheduled: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/messages/schedule/create"))
        .bearer_auth(created["key"].as_str().expect("key"))
        .json(&serde_json::json!({"external_user_ids": ["ada@home"],
            "messages": {"webhook": {"url": "https://example.com/later"}},
            "schedule": {"time": "2099-01-01T00:00:00Z"}}))
        .send()
        .await
        .expect("schedule")
        .json()
        .await
        .expect("json");
    let dispatch_id = scheduled["dispatch_id"].as_str().expect("dispatch id");
    assert!(admin(&["dispatches", "list"]).contains(dispatch_id));
    let cancelled: serde_json::Value =
        serde_json::from_str(&admin(&["dispatches", "cancel", dispatch_id])).expect("json");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["counts"]["cancelled"], 1, "{cancelled}");
    admin(&["workspaces", "create", "trial"]);
    assert!(admin(&["workspaces", "rename", "trial", "pilot"]).contains("\"pilot\""));
    assert_eq!(admin(&["workspaces", "delete", "pilot"]).trim(), "ok");
    let listed = admin(&["workspaces", "list"]);
    assert!(
        !listed.contains("trial") && !listed.contains("pilot"),
        "{listed}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn eddy_admin_manages_campaigns_email_content_blocks_hosts_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, base) = serve(dir.path()).await;
    let run = |args: &[&str]| {
        eddy()
            .arg("admin")
            .args(args)
            .args(["--url", &base, "--token", "admin"])
            .output()
            .expect("run")
    };
    let admin = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = |text: String| -> serde_json::Value { serde_json::from_str(&text).expect("json") };
    let file = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.to_string_lossy().into_owned()
    };

    // Campaigns: created from a file, read, replaced, listed, deleted.
    let campaign = file(
        "campaign.json",
        r#"{"name": "welcome", "messages": {"webhook": {"url": "https://example.com/hook", "body": "hi {{${first_name}}}"}}}"#,
    );
    let created = json(admin(&["campaigns", "create", "--file", &campaign]));
    let id = created["id"].as_str().expect("an id").to_string();
    assert_eq!(json(admin(&["campaigns", "get", &id]))["name"], "welcome");
    let renamed = file(
        "renamed.json",
        r#"{"name": "welcome v2", "messages": {"webhook": {"url": "https://example.com/hook"}}}"#,
    );
    assert_eq!(
        json(admin(&["campaigns", "update", &id, "--file", &renamed]))["name"],
        "welcome v2"
    );
    assert!(admin(&["campaigns", "list"]).contains("welcome v2"));
    admin(&["campaigns", "delete", &id]);
    assert!(!run(&["campaigns", "get", &id]).status.success());

    // Email settings: saved without a connection check, shown without the password.
    let email = file(
        "email.json",
        r#"{"smtp_url": "smtp://mailer:s3cret@127.0.0.1:2525", "validate": false, "tracking_domain": "links.example.com"}"#,
    );
    admin(&["email", "set", "--file", &email]);
    let shown = admin(&["email", "get"]);
    assert!(
        shown.contains("links.example.com") && !shown.contains("s3cret"),
        "{shown}"
    );
    admin(&["email", "delete"]);
    assert!(!run(&["email", "get"]).status.success());

    // Content blocks: a Liquid file; one that does not parse is refused with its line.
    let block = file("footer.liquid", "Bye {{${first_name}}}");
    admin(&[
        "content-blocks",
        "put",
        "footer",
        "--file",
        &block,
        "--description",
        "sign-off",
    ]);
    assert!(admin(&["content-blocks", "get", "footer"]).contains("Bye"));
    assert!(admin(&["content-blocks", "list"]).contains("sign-off"));
    let broken = file("broken.liquid", "{% if %}");
    let refused = run(&["content-blocks", "put", "broken", "--file", &broken]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("400"));
    admin(&["content-blocks", "delete", "footer"]);

    // Connected Content hosts.
    admin(&[
        "connected-content",
        "set-hosts",
        "--host",
        "offers.internal:8080",
        "--host",
        "10.0.0.7",
    ]);
    let hosts = admin(&["connected-content", "get"]);
    assert!(
        hosts.contains("offers.internal:8080") && hosts.contains("10.0.0.7"),
        "{hosts}"
    );
    assert!(
        !run(&["connected-content", "set-hosts", "--host", "not a host"])
            .status
            .success()
    );

    // Subscription groups.
    let group = file(
        "group.json",
        r#"{"name": "Newsletter", "channel": "email"}"#,
    );
    admin(&["subscription-groups", "put", "newsletter", "--file", &group]);
    assert!(admin(&["subscription-groups", "list"]).contains("Newsletter"));
    admin(&["subscription-groups", "delete", "newsletter"]);
    assert!(!admin(&["subscription-groups", "list"]).contains("Newsletter"));

    let _ = child.kill();
    let _ = child.wait();
}
