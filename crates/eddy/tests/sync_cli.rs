//! `eddy sync run` as a user runs it: the dry run's NDJSON on stdout, the report, exit codes.

use std::process::Command;

fn eddy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
}

#[test]
fn dry_run_prints_what_would_be_sent_and_a_failed_row_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("people.csv"),
        "external_id,first_name,birthday\nu1,Jo,1980-01-02\nu2,Al,not-a-date\n",
    )
    .unwrap();
    // Port 9 (discard) refuses connections here: the run cannot deliver.
    std::fs::write(
        dir.path().join("sync.toml"),
        r#"
[[sync]]
name = "people"
source = { type = "csv", path = "people.csv" }
target = { type = "users_track", url = "http://127.0.0.1:9", api_key = "k", max_retries = 0 }
[sync.attributes]
first_name = "string"
birthday = "date"
"#,
    )
    .unwrap();
    let config = dir.path().join("sync.toml");

    let out = eddy()
        .args(["sync", "run", "--dry-run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["change"], "added");
    assert_eq!(lines[0]["object"]["external_id"], "u1");
    assert_eq!(lines[0]["object"]["birthday"], "1980-01-02");
    assert!(stderr.contains("dry run"), "{stderr}");
    assert!(
        stderr.contains("did you mean Braze's standard field 'dob'"),
        "{stderr}"
    );
    assert!(stderr.contains("'not-a-date' is not a date"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "a failed row: exit 2");
    assert!(
        !dir.path()
            .join("eddy-sync-state/people/last-run.json")
            .exists(),
        "a dry run stores nothing"
    );

    let out = eddy()
        .args(["sync", "run", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "partial");
    assert_eq!(report["failed"], 2);
    assert_eq!(report["sent"], 0);
    assert!(
        dir.path()
            .join("eddy-sync-state/people/last-run.json")
            .exists()
    );

    let out = eddy()
        .args(["sync", "run", "--name", "nobody", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sync is named 'nobody'"));
}

#[tokio::test]
async fn schedule_serves_each_scheduled_sync_for_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("people.csv"), "external_id\nu1\n").unwrap();
    let file = dir.path().join("sync.toml");
    std::fs::write(
        &file,
        "[[sync]]\nname = \"yearly\"\nschedule = \"0 0 1 1 *\"\nsource = { type = \"csv\", path = \"people.csv\" }\ntarget = { type = \"users_track\", url = \"http://127.0.0.1:9\", api_key = \"k\" }\n\
         [[sync]]\nname = \"by-hand\"\nsource = { type = \"csv\", path = \"people.csv\" }\ntarget = { type = \"users_track\", url = \"http://127.0.0.1:9\", api_key = \"k\" }\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut child = eddy()
        .args(["sync", "schedule", "--config"])
        .arg(&file)
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("schedule");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut text = None;
    for _ in 0..300 {
        if let Ok(response) = reqwest::get(&url).await {
            text = response.text().await.ok();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = text.expect("the metrics endpoint answered");
    // The scheduled sync shows at zero before its first run; the unscheduled one never runs here.
    assert!(
        text.lines()
            .any(|l| l == "eddy_sync_runs_total{sync=\"yearly\",outcome=\"succeeded\"} 0"),
        "{text}"
    );
    assert!(!text.contains("by-hand"), "{text}");
}
