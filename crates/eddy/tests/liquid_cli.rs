//! `eddy liquid render` and `eddy liquid check` as a team uses them: offline with files, against
//! a running eddy, and over a folder of templates in CI.

use std::process::Command;

fn eddy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
}

#[test]
fn render_offline_with_variables_and_a_user_file() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("welcome.liquid");
    std::fs::write(
        &template,
        "Hi {{${first_name} | default: 'there'}}, {{ custom_attribute.${plan} | upcase }}: {{ api_trigger_properties.${coupon} }}",
    )
    .unwrap();
    let vars = dir.path().join("vars.json");
    std::fs::write(&vars, r#"{"api_trigger_properties": {"coupon": "SAVE10"}}"#).unwrap();
    let user = dir.path().join("user.json");
    std::fs::write(
        &user,
        r#"{"external_id": "ada", "first_name": "Ada", "custom_attributes": {"plan": "gold"}}"#,
    )
    .unwrap();
    let out = eddy()
        .args(["liquid", "render"])
        .arg(&template)
        .arg("--vars")
        .arg(&vars)
        .arg("--user")
        .arg(&user)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hi Ada, GOLD: SAVE10");

    std::fs::write(&template, "{% abort_message('not today') %}").unwrap();
    let out = eddy()
        .args(["liquid", "render"])
        .arg(&template)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "aborted: not today"
    );
}

#[test]
fn check_reports_every_syntax_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.liquid");
    let bad = dir.path().join("bad.liquid");
    let worse = dir.path().join("worse.liquid");
    std::fs::write(&good, "{% if x %}{{ x }}{% endif %}").unwrap();
    std::fs::write(&bad, "line one\n{% for i in list %}\n").unwrap();
    std::fs::write(&worse, "{{ ok }}\n\n{% frobnicate %}").unwrap();
    let out = eddy()
        .args(["liquid", "check"])
        .args([&good, &bad, &worse])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{}:2: 'for' tag was never closed", bad.display()),
            format!("{}:3: Unknown tag 'frobnicate'", worse.display()),
        ]
    );
    let out = eddy()
        .args(["liquid", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn render_through_a_running_eddy_uses_its_stored_user() {
    let app = eddy_testkit::spawn_app().await;
    app.track(serde_json::json!({"attributes": [{"external_id": "grace", "first_name": "Grace"}]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t.liquid");
    std::fs::write(&template, "Hello {{${first_name}}}").unwrap();
    let user = dir.path().join("who.json");
    std::fs::write(&user, r#"{"external_id": "grace"}"#).unwrap();
    let base = app.url("");
    let token = app.admin_token.clone();
    let out = tokio::task::spawn_blocking(move || {
        eddy()
            .args(["liquid", "render"])
            .arg(&template)
            .arg("--user")
            .arg(&user)
            .args(["--url", &base, "--key", &token])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello Grace");
}

#[test]
fn offline_renders_ignore_eddy_url_and_name_allow_host_for_a_refused_host() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t.liquid");
    std::fs::write(
        &template,
        "{% connected_content http://127.0.0.1:9/offers :save offers %}Hi{{ offers.x }}",
    )
    .unwrap();
    // EDDY_URL is what the admin commands read; it does not make this render remote.
    let out = eddy()
        .args(["liquid", "render"])
        .arg(&template)
        .env("EDDY_URL", "http://127.0.0.1:9")
        .env_remove("EDDY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hi");
    assert!(stderr.contains("--allow-host"), "{stderr}");
    assert!(!stderr.contains("workspace"), "{stderr}");
}
