//! A run killed with SIGKILL mid-way: the next run resends exactly what the target had not
//! confirmed (at most the answers in flight at the kill come again), and then nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use eddy_testkit::braze::spawn_braze;

const CHILD: &str = "EDDY_SYNC_CRASH_CHILD";

/// Not a test on its own: the process the crash test starts and kills (ignored, so that it is
/// never counted as a passing test; the crash test runs it with `--ignored`).
#[test]
#[ignore = "the child process of the crash test, started by it"]
fn crash_child() {
    let Ok(config) = std::env::var(CHILD) else {
        return;
    };
    let file = eddy_sync::SyncFile::load(std::path::Path::new(&config)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        eddy_sync::run(&file, &file.syncs[0], &Default::default())
            .await
            .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resends_exactly_what_was_not_confirmed() {
    let braze = spawn_braze().await;
    braze.state.lock().unwrap().delay_ms = 40;
    let w = Workdir::new();
    let all: Vec<String> = (0..3000).map(|i| format!("u{i}")).collect();
    let rows: Vec<String> = all.iter().map(|id| format!("{id},name-{id}")).collect();
    csv(&w.path("people.csv"), "external_id,first_name", &rows);
    let config = format!(
        r#"
[[sync]]
name = "people"
source = {{ type = "csv", path = "people.csv" }}
target = {{ type = "users_track", url = "{url}", api_key = "braze-key", concurrency = 2 }}
[sync.attributes]
first_name = "string"
"#,
        url = braze.url()
    );
    let file = w.config(&config);

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, w.path("sync.toml"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if braze.state.lock().unwrap().answered.len() >= 12 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before the kill"
        );
    }
    child.kill().await.unwrap();
    let answered: BTreeSet<String> = braze
        .state
        .lock()
        .unwrap()
        .answered
        .iter()
        .flatten()
        .cloned()
        .collect();
    assert!(answered.len() < all.len(), "killed mid-run");

    braze.state.lock().unwrap().delay_ms = 0;
    braze.take_applied();
    let report = run_once(&file).await;
    assert_eq!(report.failed, 0, "{report}");
    let resent: BTreeSet<String> = braze.applied_ids().into_iter().collect();
    let missing: Vec<&String> = all
        .iter()
        .filter(|id| !answered.contains(*id) && !resent.contains(*id))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    let again: Vec<&String> = resent.intersection(&answered).collect();
    // Only answers that reached the killed process without being journaled may come again:
    // at most the requests in flight (2 × 75).
    assert!(again.len() <= 150, "{} confirmed rows resent", again.len());
    assert_eq!(report.added as usize, resent.len());

    let last = run_once(&file).await;
    assert_eq!((last.sent, last.unchanged), (0, 3000), "{last}");
}
