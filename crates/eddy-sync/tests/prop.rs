//! Property: after any sequence of source snapshots, each followed by a run, eddy holds exactly
//! the last snapshot (for the synced attributes and audiences), in both modes.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Row {
    name: Option<&'static str>,
    n: Option<i64>,
    vip: bool,
}

fn row() -> impl Strategy<Value = Row> {
    (
        proptest::option::of(prop_oneof![Just("a"), Just("b"), Just("c, d")]),
        proptest::option::of(0i64..3),
        any::<bool>(),
    )
        .prop_map(|(name, n, vip)| Row { name, n, vip })
}

fn snapshot() -> impl Strategy<Value = BTreeMap<u8, Row>> {
    proptest::collection::btree_map(0u8..8, row(), 0..8)
}

fn write_csv(w: &Workdir, snap: &BTreeMap<u8, Row>) {
    let rows: Vec<String> = snap
        .iter()
        .map(|(id, r)| {
            format!(
                "u{id},{},{},{}",
                r.name.map(|n| format!("\"{n}\"")).unwrap_or_default(),
                r.n.map(|n| n.to_string()).unwrap_or_default(),
                r.vip
            )
        })
        .collect();
    csv(&w.path("t.csv"), "external_id,name,n,vip", &rows);
}

async fn check(eddy: &Eddy, snap: &BTreeMap<u8, Row>) -> Result<(), String> {
    let ids: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let users = export_users(eddy, &refs).await;
    for i in 0..8u8 {
        let custom = users
            .get(&format!("u{i}"))
            .map(|u| u["custom_attributes"].clone())
            .unwrap_or(Value::Null);
        let get = |k: &str| custom.get(k).cloned().unwrap_or(Value::Null);
        let (name, n, vip) = match snap.get(&i) {
            Some(r) => (
                r.name.map_or(Value::Null, |s| json!(s)),
                r.n.map_or(Value::Null, |n| json!(n)),
                r.vip,
            ),
            None => (Value::Null, Value::Null, false),
        };
        let got_vip = get("vip") == json!(true);
        if get("name") != name || get("n") != n || got_vip != vip {
            return Err(format!(
                "u{i}: expected name={name} n={n} vip={vip}, eddy has {custom}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_target_equals_the_last_snapshot(snaps in proptest::collection::vec(snapshot(), 1..5), row_mode in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let result: Result<(), String> = rt.block_on(async {
            let eddy = spawn_eddy().await;
            let w = Workdir::new();
            let file = w.config(&format!(
                r#"
[[sync]]
name = "p"
mode = "{mode}"
source = {{ type = "csv", path = "t.csv" }}
target = {{ type = "users_track", url = "{url}", api_key = "{key}", batch_size = 3 }}
[sync.attributes]
name = "string"
n = "integer"
[sync.audiences]
columns = ["vip"]
"#,
                mode = if row_mode { "row" } else { "attribute" },
                url = eddy.url(""),
                key = eddy.key
            ));
            for (k, snap) in snaps.iter().enumerate() {
                write_csv(&w, snap);
                let report = run_once(&file).await;
                if report.failed != 0 {
                    return Err(format!("run {k} failed rows: {report}"));
                }
                check(&eddy, snap).await.map_err(|e| format!("after run {k}: {e}"))?;
            }
            // A run over the same snapshot sends nothing.
            let last = run_once(&file).await;
            if last.sent != 0 {
                return Err(format!("a repeated run sent {}", last.sent));
            }
            Ok(())
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
