//! `eddy sync` against an emulated Braze that refuses objects, throttles, fails and revokes.

mod common;

use common::*;
use eddy_testkit::braze::{Braze, Fault, spawn_braze};

fn config(braze: &Braze, key: &str) -> String {
    format!(
        r#"
[[sync]]
name = "people"
source = {{ type = "csv", path = "people.csv" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}", batch_size = 10, concurrency = 3, max_retries = 3 }}
[sync.attributes]
first_name = "string"
"#,
        url = braze.url()
    )
}

fn rows(n: usize, prefix_bad: usize, version: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = if i < prefix_bad {
                format!("bad-{i}")
            } else {
                format!("u{i}")
            };
            format!("{id},name-{i}-{version}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_objects_are_mapped_back_and_retried_through_429s_and_500s() {
    let braze = spawn_braze().await;
    {
        let mut s = braze.state.lock().unwrap();
        s.refuse_prefix = Some("bad-".into());
        s.faults.extend([
            Fault::Throttle,
            Fault::ServerError,
            Fault::Throttle,
            Fault::ServerError,
        ]);
    }
    let w = Workdir::new();
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &rows(100, 7, "a"),
    );
    let file = w.config(&config(&braze, "braze-key"));

    let first = run_once(&file).await;
    assert_eq!(first.status, "partial", "{first}");
    assert_eq!(
        (first.added, first.sent, first.failed),
        (100, 93, 7),
        "{first}"
    );
    assert_eq!(first.throttled, 2, "{first}");
    assert_eq!(first.retries, 2, "{first}");
    assert!(
        first
            .errors
            .iter()
            .all(|e| e.row.starts_with("bad-") && e.error == "'first_name' is not valid"),
        "{first}"
    );
    let mut applied = braze.applied_ids();
    applied.sort();
    applied.dedup();
    assert_eq!(
        applied.len(),
        93,
        "every good row applied, none twice needed"
    );

    // Next run: only the refused rows are sent again (still refused).
    braze.take_applied();
    let requests_before = braze.state.lock().unwrap().requests;
    let second = run_once(&file).await;
    assert_eq!(
        (second.added, second.unchanged, second.failed),
        (7, 93, 7),
        "{second}"
    );
    assert_eq!(
        braze.state.lock().unwrap().requests - requests_before,
        2,
        "the credentials check, then 7 rows in one request"
    );

    // Braze accepts them now; after that, nothing is left.
    braze.state.lock().unwrap().refuse_prefix = None;
    let third = run_once(&file).await;
    assert_eq!((third.sent, third.failed), (7, 0), "{third}");
    let fourth = run_once(&file).await;
    // Nothing to send: the run's only request is its credentials check.
    assert_eq!(
        (fourth.sent, fourth.requests, fourth.unchanged),
        (0, 1, 100),
        "{fourth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_the_run_and_remembers_nothing_unconfirmed() {
    let braze = spawn_braze().await;
    let w = Workdir::new();
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &rows(50, 0, "a"),
    );
    let wrong = w.config(&config(&braze, "wrong-key"));
    let report = run_once(&wrong).await;
    assert_eq!(report.status, "failed");
    assert!(
        report.error.as_deref().unwrap_or("").contains("401"),
        "{report}"
    );
    assert_eq!(report.sent, 0);

    // With the right key every row goes, none lost to the failed run.
    let right = w.config(&config(&braze, "braze-key"));
    let report = run_once(&right).await;
    assert_eq!(
        (report.status.as_str(), report.sent),
        ("succeeded", 50),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_failing_fails_the_rows_not_the_state() {
    let braze = spawn_braze().await;
    braze
        .state
        .lock()
        .unwrap()
        .faults
        // Four for the credentials check (which then lets the run go on), four for the batch.
        .extend(std::iter::repeat_n(Fault::ServerError, 8));
    let w = Workdir::new();
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &rows(5, 0, "a"),
    );
    let file = w.config(&config(&braze, "braze-key"));
    let report = run_once(&file).await;
    assert_eq!(
        (report.failed, report.sent, report.retries),
        (5, 0, 6),
        "{report}"
    );
    assert!(report.errors[0].error.contains("HTTP 500"), "{report}");
    let again = run_once(&file).await;
    assert_eq!((again.added, again.sent), (5, 5), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_at_a_time_per_sync() {
    let braze = spawn_braze().await;
    braze.state.lock().unwrap().delay_ms = 300;
    let w = Workdir::new();
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &rows(5, 0, "a"),
    );
    let file = w.config(&config(&braze, "braze-key"));
    let opts = eddy_sync::RunOptions::default();
    let (a, b) = tokio::join!(eddy_sync::run(&file, &file.syncs[0], &opts), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        eddy_sync::run(&file, &file.syncs[0], &opts).await
    });
    assert_eq!(a.unwrap().sent, 5);
    assert!(matches!(b, Err(eddy_sync::SyncError::Busy(_))), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_holds_back_removals() {
    let braze = spawn_braze().await;
    let w = Workdir::new();
    let file = w.config(&config(&braze, "braze-key"));
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &["u1,a".into(), "u2,b".into(), "u3,c".into()],
    );
    assert_eq!(run_once(&file).await.sent, 3);

    // u2's line is broken: it might be u2, so nobody is unset this run.
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &["u1,a".into(), "u2,b,extra".into(), "u3,c".into()],
    );
    let held = run_once(&file).await;
    assert_eq!((held.removed, held.sent, held.failed), (0, 0, 1), "{held}");
    assert!(
        held.warnings
            .iter()
            .any(|w| w.contains("not removed this run")),
        "{held}"
    );

    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &["u1,a".into(), "u3,c".into()],
    );
    braze.take_applied();
    let fixed = run_once(&file).await;
    assert_eq!((fixed.removed, fixed.sent), (1, 1), "{fixed}");
    let applied = braze.take_applied();
    assert_eq!(applied[0]["external_id"], "u2");
    assert!(applied[0]["first_name"].is_null(), "{}", applied[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_after_a_config_change_leaves_the_state_alone() {
    let braze = spawn_braze().await;
    let w = Workdir::new();
    csv(
        &w.path("people.csv"),
        "external_id,first_name",
        &["u1,a".into(), "u2,b".into()],
    );
    let file = w.config(&config(&braze, "braze-key"));
    assert_eq!(run_once(&file).await.sent, 2);
    // Same rows, now keyed by braze_id: a dry run shows everything as new but forgets nothing.
    let changed = w.config(&config(&braze, "braze-key").replace(
        "[sync.attributes]",
        "identifier = { type = \"braze_id\", column = \"external_id\" }\n[sync.attributes]",
    ));
    let dry = run(
        &changed,
        eddy_sync::RunOptions {
            dry_run: true,
            dry_run_output: Some(Default::default()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(dry.added, 2, "{dry}");
    let back = w.config(&config(&braze, "braze-key"));
    let again = run_once(&back).await;
    assert_eq!((again.unchanged, again.sent), (2, 0), "{again}");
}
