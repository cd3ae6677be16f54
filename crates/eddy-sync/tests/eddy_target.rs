//! `eddy sync` end to end against a running eddy: users created, only changes sent afterwards,
//! removals, audiences, cohorts, and the other sources.

mod common;

use common::*;
use eddy_sync::RunOptions;
use serde_json::{Value, json};

fn customers_config(eddy: &Eddy, extra: &str) -> String {
    format!(
        r#"
[[sync]]
name = "customers"
source = {{ type = "csv", path = "customers.csv" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}" }}
{extra}
[sync.attributes]
first_name = "string"
dob = "date"
L12M_monetary = "decimal"
orders = "integer"
last_order = "datetime"
[sync.audiences]
columns = ["VIP"]
"#,
        url = eddy.url(""),
        key = eddy.key
    )
}

const HEADER: &str = "external_id,first_name,dob,L12M_monetary,orders,last_order,VIP";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_users_then_sends_only_what_changed() {
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    let rows = |changed: bool| -> Vec<String> {
        vec![
            "u1,Jo,1980-12-21,345.47,3,2024-05-01 17:03:00,true".to_string(),
            format!("u2,{},,12.5,1,,false", if changed { "Alex" } else { "Al" }),
            "u3,Sam,1975-01-02,,0,2024-01-01T00:00:00Z,".to_string(),
        ]
    };
    csv(&w.path("customers.csv"), HEADER, &rows(false));
    let file = w.config(&customers_config(&eddy, ""));

    let first = run_once(&file).await;
    assert_eq!(
        (
            first.status.as_str(),
            first.rows_read,
            first.added,
            first.sent
        ),
        ("succeeded", 3, 3, 3),
        "{first}"
    );
    let users = export_users(&eddy, &["u1", "u2", "u3"]).await;
    assert_eq!(users.len(), 3);
    let u1 = &users["u1"];
    assert_eq!(u1["first_name"], "Jo");
    assert_eq!(u1["dob"], "1980-12-21");
    assert_eq!(u1["custom_attributes"]["L12M_monetary"], json!(345.47));
    assert_eq!(u1["custom_attributes"]["orders"], json!(3));
    assert_eq!(u1["custom_attributes"]["VIP"], json!(true));
    assert!(
        u1["custom_attributes"]["last_order"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T17:03:00")
    );
    // A non-member is not written false before it ever was a member.
    assert!(users["u2"]["custom_attributes"].get("VIP").is_none());
    let stored =
        std::fs::read_to_string(w.path("eddy-sync-state/customers/last-run.json")).unwrap();
    assert!(stored.contains("\"added\": 3"), "{stored}");

    // Nothing changed: nothing sent, no data point spent.
    let billable = eddy.usage_total().await.0;
    let second = run_once(&file).await;
    // Its one request is the credentials check, which costs nothing either.
    assert_eq!(
        (second.unchanged, second.sent, second.requests),
        (3, 0, 1),
        "{second}"
    );
    assert_eq!(
        eddy.usage_total().await.0,
        billable,
        "the second run costs no data point"
    );

    // One cell changed: the dry run shows exactly that attribute, then the run sends it.
    csv(&w.path("customers.csv"), HEADER, &rows(true));
    let dry = run(
        &file,
        RunOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((dry.changed, dry.unchanged, dry.sent), (1, 2, 1), "{dry}");
    let third = run_once(&file).await;
    assert_eq!(
        (third.changed, third.unchanged, third.sent),
        (1, 2, 1),
        "{third}"
    );
    assert_eq!(
        eddy.usage_total().await.0,
        billable + 1,
        "one attribute, one data point"
    );
    assert_eq!(
        export_users(&eddy, &["u2"]).await["u2"]["first_name"],
        "Alex"
    );

    // u1 leaves the source: its attributes are unset and it leaves the audience; u4 arrives.
    let mut next = rows(true)[1..].to_vec();
    next.push("u4,Kim,,,,,yes".into());
    csv(&w.path("customers.csv"), HEADER, &next);
    let fourth = run_once(&file).await;
    assert_eq!(
        (fourth.added, fourth.removed, fourth.unchanged),
        (1, 1, 2),
        "{fourth}"
    );
    let users = export_users(&eddy, &["u1", "u4"]).await;
    let u1 = &users["u1"];
    assert!(u1.get("first_name").is_none_or(Value::is_null), "{u1}");
    assert!(u1["custom_attributes"].get("orders").is_none(), "{u1}");
    assert_eq!(u1["custom_attributes"]["VIP"], json!(false));
    assert_eq!(users["u4"]["custom_attributes"]["VIP"], json!(true));
    let fifth = run_once(&file).await;
    assert_eq!(
        (fifth.sent, fifth.unchanged, fifth.removed),
        (0, 3, 0),
        "{fifth}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cells_fail_alone_and_are_retried_next_run() {
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    csv(
        &w.path("customers.csv"),
        HEADER,
        &[
            "u1,Jo,not-a-date,1,1,,".into(),
            "u2,Al,1990-01-01,x,1,,".into(),
            ",NoId,,,,,".into(),
            "u3,Sam,,,,,".into(),
            "u3,Dup,,,,,".into(),
        ],
    );
    let file = w.config(&customers_config(&eddy, ""));
    let report = run_once(&file).await;
    assert_eq!(report.status, "partial");
    assert_eq!(
        (report.added, report.failed, report.sent),
        (1, 4, 1),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("'not-a-date' is not a date"), "{text}");
    assert!(text.contains("identifier appears twice"), "{text}");
    assert!(text.contains("external_id is empty"), "{text}");

    csv(
        &w.path("customers.csv"),
        HEADER,
        &[
            "u1,Jo,1980-01-01,1,1,,".into(),
            "u2,Al,1990-01-01,2,1,,".into(),
            "u3,Sam,,,,,".into(),
        ],
    );
    let again = run_once(&file).await;
    assert_eq!(
        (again.added, again.unchanged, again.failed),
        (2, 1, 0),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_mode_aliases_and_audience_arrays() {
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    let config = format!(
        r#"
[[sync]]
name = "leads"
mode = "row"
identifier = {{ type = "user_alias" }}
source = {{ type = "ndjson", path = "leads.ndjson" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}" }}
[sync.attributes]
score = "integer"
tier = "string"
[sync.audiences]
shape = "array"
attribute = "segments"
columns = ["hot", "newsletter"]
"#,
        url = eddy.url(""),
        key = eddy.key
    );
    w.write(
        "leads.ndjson",
        "{\"alias_name\":\"a@x.io\",\"alias_label\":\"email\",\"score\":5,\"tier\":\"gold\",\"hot\":true,\"newsletter\":true}\n",
    );
    let file = w.config(&config);
    let first = run_once(&file).await;
    assert_eq!((first.added, first.sent), (1, 1), "{first}");
    w.write(
        "leads.ndjson",
        "{\"alias_name\":\"a@x.io\",\"alias_label\":\"email\",\"score\":6,\"tier\":\"gold\",\"hot\":false,\"newsletter\":true}\n",
    );
    let dry_out = dry_run_objects(&w).await;
    // Row mode: the whole row, with the audience edit.
    assert_eq!(
        dry_out,
        vec![
            json!({"change": "changed", "object": {"user_alias": {"alias_name": "a@x.io", "alias_label": "email"},
            "_update_existing_only": false, "score": 6, "tier": "gold", "segments": {"remove": ["hot"]}}})
        ]
    );
    let second = run_once(&file).await;
    assert_eq!((second.changed, second.sent), (1, 1), "{second}");
    let r = eddy
        .client
        .post(format!("{}/users/export/ids", eddy.url("")))
        .bearer_auth(&eddy.key)
        .json(&json!({"user_aliases": [{"alias_name": "a@x.io", "alias_label": "email"}]}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let custom = &body["users"][0]["custom_attributes"];
    assert_eq!(custom["score"], json!(6));
    assert_eq!(custom["segments"], json!(["newsletter"]));
}

/// The objects a dry run of `sync.toml` in `w` would send.
async fn dry_run_objects(w: &Workdir) -> Vec<Value> {
    let file = eddy_sync::SyncFile::load(&w.path("sync.toml")).unwrap();
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let opts = RunOptions {
        dry_run: true,
        dry_run_output: Some(buf.clone()),
        ..Default::default()
    };
    run(&file, opts).await;
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_target_adds_and_removes_members() {
    let eddy = spawn_eddy().await;
    let r = eddy
        .client
        .put(format!("{}/eddy/v1/partners/amplitude", eddy.url("")))
        .bearer_auth(&eddy.admin_token)
        .json(&json!({"partner_api_key": "partner-key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = eddy
        .admin_post(
            "/eddy/v1/workspaces/default/partners/amplitude/data-import-key",
            json!({}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["key"].as_str().unwrap().to_string();
    // Cohorts only take users who exist.
    let objects: Vec<Value> = (1..=4)
        .map(|i| json!({"external_id": format!("u{i}"), "first_name": "x"}))
        .collect();
    let r = eddy
        .client
        .post(format!("{}/users/track", eddy.url("")))
        .bearer_auth(&eddy.key)
        .json(&json!({"attributes": objects}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let w = Workdir::new();
    let file = w.config(&format!(
        r#"
[[sync]]
name = "vip-cohort"
source = {{ type = "csv", path = "vip.csv" }}
target = {{ type = "cohort", url = "{url}", partner = "amplitude", partner_api_key = "partner-key", client_secret = "{secret}", cohort_id = "vip", cohort_name = "VIP customers" }}
"#,
        url = eddy.url("")
    ));
    csv(
        &w.path("vip.csv"),
        "external_id",
        &["u1".into(), "u2".into(), "u3".into()],
    );
    let first = run_once(&file).await;
    // The credentials check, naming the cohort, then the members.
    assert_eq!(
        (first.added, first.sent, first.requests),
        (3, 3, 3),
        "{first}"
    );
    let (status, body) = eddy
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "vip", "filter": {"attribute": "amplitude_cohorts", "op": "includes_value", "value": "vip"}}),
        )
        .await;
    assert_eq!((status, body["size"].as_u64()), (201, Some(3)), "{body}");
    let segment = body["id"].as_str().unwrap().to_string();

    csv(
        &w.path("vip.csv"),
        "external_id",
        &["u2".into(), "u4".into()],
    );
    let second = run_once(&file).await;
    assert_eq!(
        (second.added, second.removed, second.unchanged),
        (1, 2, 1),
        "{second}"
    );
    let body = eddy
        .admin_get(&format!("/eddy/v1/workspaces/default/segments/{segment}"))
        .await
        .1;
    assert_eq!(body["size"], json!(2), "{body}");
    let third = run_once(&file).await;
    // Nothing to change: only the credentials check.
    assert_eq!((third.sent, third.requests), (0, 1), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_currents_avro_files() {
    use eddy_currents::avro::{Codec, Container, Schema};
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    let schema: &'static Schema = Box::leak(Box::new(
        Schema::parse(
            r#"{"type":"record","name":"CustomEvent","namespace":"dataexport.S3.inner.users.behaviors","fields":[
            {"name":"id","type":"string"},{"name":"external_user_id","type":["null","string"],"default":null},
            {"name":"name","type":"string"},{"name":"time","type":"int"}]}"#,
        )
        .unwrap(),
    ));
    let dir = w.path("currents/event_type=users.behaviors.CustomEvent");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, codec, events) in [
        (
            "a.avro",
            Codec::Null,
            vec![("e1", "u1", "signup"), ("e2", "u2", "login")],
        ),
        ("b.avro", Codec::Deflate, vec![("e3", "u3", "purchase")]),
    ] {
        let mut c = Container::new(schema, codec, [3; 16]);
        for (id, user, name) in events {
            let record =
                json!({"id": id, "external_user_id": user, "name": name, "time": 1_700_000_000});
            c.append(record.as_object().unwrap()).unwrap();
        }
        std::fs::write(dir.join(file), c.finish().unwrap()).unwrap();
    }
    let file = w.config(&format!(
        r#"
[[sync]]
name = "events"
identifier = {{ type = "external_id", column = "external_user_id" }}
source = {{ type = "avro", path = "currents" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}" }}
[sync.attributes]
last_event = {{ type = "string", column = "name" }}
last_event_at = {{ type = "datetime", column = "time" }}
"#,
        url = eddy.url(""),
        key = eddy.key
    ));
    let report = run_once(&file).await;
    assert_eq!(
        (report.rows_read, report.added, report.sent),
        (3, 3, 3),
        "{report}"
    );
    let users = export_users(&eddy, &["u1", "u3"]).await;
    assert_eq!(users["u3"]["custom_attributes"]["last_event"], "purchase");
    assert!(
        users["u1"]["custom_attributes"]["last_event_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T22:13:20")
    );
}

/// A database of its own on the machine's PostgreSQL, or `None` when there is none (the
/// README's test command needs only Rust; `.ci/run` sets EDDY_TEST_POSTGRES=1 to require it).
fn postgres() -> Option<(String, String)> {
    let admin = std::env::var("EDDY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".into());
    let mut client = match postgres::Client::connect(&admin, postgres::NoTls) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("EDDY_TEST_POSTGRES").is_err(),
                "PostgreSQL is required: {e}"
            );
            eprintln!("skipping: no PostgreSQL at {admin}: {e}");
            return None;
        }
    };
    let name = format!(
        "eddy_sync_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    Some((admin.clone(), name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_postgresql_query() {
    let Some((admin, db)) = tokio::task::spawn_blocking(postgres).await.unwrap() else {
        return;
    };
    let url = format!("{admin} dbname={db}");
    let setup = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&setup, postgres::NoTls).unwrap();
        c.batch_execute(
            "CREATE TABLE customers (id text primary key, given_name text, birthdate date, ltv numeric(10,2),
                 vip boolean, seen timestamptz, note text);
             INSERT INTO customers VALUES
               ('u1', 'Jo', '1980-12-21', 345.47, true, '2024-05-01 19:03:00+02', E'tab\\there'),
               ('u2', NULL, NULL, 0.5, false, NULL, '\\N is text');",
        )
        .unwrap();
    })
    .await
    .unwrap();
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    let file = w.config(&format!(
        r#"
[[sync]]
name = "pg"
source = {{ type = "postgres", url = "{url}", query = "SELECT id AS external_id, given_name AS first_name, birthdate AS dob, ltv, vip, seen, note FROM customers;" }}
target = {{ type = "users_track", url = "{eddy}", api_key = "{key}" }}
[sync.attributes]
first_name = "string"
dob = "date"
ltv = "decimal"
seen = "datetime"
note = "string"
[sync.audiences]
columns = ["vip"]
"#,
        eddy = eddy.url(""),
        key = eddy.key
    ));
    let report = run_once(&file).await;
    assert_eq!(
        (report.status.as_str(), report.added, report.sent),
        ("succeeded", 2, 2),
        "{report}"
    );
    let users = export_users(&eddy, &["u1", "u2"]).await;
    let u1 = &users["u1"];
    assert_eq!(u1["first_name"], "Jo");
    assert_eq!(u1["dob"], "1980-12-21");
    assert_eq!(u1["custom_attributes"]["ltv"], json!(345.47));
    assert_eq!(u1["custom_attributes"]["vip"], json!(true));
    assert_eq!(u1["custom_attributes"]["note"], "tab\there");
    assert!(
        u1["custom_attributes"]["seen"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T17:03:00")
    );
    assert_eq!(users["u2"]["custom_attributes"]["note"], "\\N is text");
    assert!(users["u2"].get("first_name").is_none_or(Value::is_null));
    let again = run_once(&file).await;
    assert_eq!((again.unchanged, again.sent), (2, 0), "{again}");
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_reports_every_problem_and_a_wrong_key_fails_even_when_nothing_changed() {
    let eddy = spawn_eddy().await;
    let w = Workdir::new();
    // Two bad cells in one row: both are reported, in one run.
    csv(
        &w.path("customers.csv"),
        HEADER,
        &[
            "u1,Jo,not-a-date,x,3,,true".to_string(),
            "u2,Al,1980-01-01,1,1,,false".to_string(),
        ],
    );
    let file = w.config(&customers_config(&eddy, ""));
    let report = run_once(&file).await;
    assert_eq!(
        (report.status.as_str(), report.failed, report.sent),
        ("partial", 1, 1),
        "{report}"
    );
    let error = &report.errors[0].error;
    assert!(
        error.contains("dob") && error.contains("L12M_monetary"),
        "{error}"
    );

    // Fixed, then nothing changes: with a wrong key the run still fails, at its first request.
    csv(
        &w.path("customers.csv"),
        HEADER,
        &[
            "u1,Jo,1980-01-01,1,3,,true".to_string(),
            "u2,Al,1980-01-01,1,1,,false".to_string(),
        ],
    );
    assert_eq!(run_once(&file).await.status.as_str(), "succeeded");
    let wrong = w.config(&customers_config(&eddy, "").replace(&eddy.key, "not-a-key"));
    let report = run_once(&wrong).await;
    assert_eq!(report.status.as_str(), "failed", "{report}");
    assert!(
        report.error.as_deref().is_some_and(|e| e.contains("401")),
        "{report}"
    );
    assert_eq!(
        report.rows_read, 0,
        "nothing is read once the target refused: {report}"
    );
}
