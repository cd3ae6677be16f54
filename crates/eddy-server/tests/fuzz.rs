//! A fuzz suite over every route: structure-aware mutations of valid bodies and paths, plus the
//! edge cases that once hurt (lengths around every limit, 1 MB strings, deep nesting, invalid
//! UTF-8, huge numbers, gzip bombs). It asserts that no answer is a 5xx, that no connection is
//! dropped, that a canary write after every 100 cases answers 201, and that the canaries are
//! exact at the end and after a restart.
//!
//! `EDDY_FUZZ_CASES` sets the budget (default 1,500; CI runs more), `EDDY_FUZZ_SEED` the seed
//! (printed, so a failure can be replayed).

use std::io::Write;

use eddy_testkit::{TestApp, spawn_app, start};
use serde_json::{Value, json};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn deep(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// Values at and around every limit eddy has, and some that no limit expects.
fn edge_value(rng: &mut Rng) -> Value {
    match rng.below(22) {
        0 => json!("x".repeat(255)),
        1 => json!("x".repeat(256)),
        2 => json!("x".repeat(997)),
        3 => json!("x".repeat(998)),
        4 => json!("x".repeat(1024 * 1024)),
        5 => json!("€".repeat(333)),
        6 => json!(""),
        7 => json!(1e308),
        8 => json!(-1),
        9 => json!(u64::MAX),
        10 => json!(i64::MIN),
        11 => Value::Null,
        12 => json!(true),
        13 => json!({}),
        14 => json!([]),
        15 => deep(100),
        16 => json!("\u{0}\u{1f}\u{7f}"),
        17 => json!("2024-13-45T99:99:99Z"),
        18 => json!({"inc": 1e300}),
        19 => json!({"add": ["x".repeat(70_000)]}),
        20 => json!(vec!["a"; 200]),
        _ => json!({"$add": [{"x": 1}], "$time": "nope"}),
    }
}

/// One random change somewhere in a JSON document.
fn mutate(value: &mut Value, rng: &mut Rng, depth: usize) {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 6 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert("x".repeat(rng.below(2) * 70_000 + 1), edge_value(rng));
                }
                2 => {
                    map.insert(key, edge_value(rng));
                }
                _ => {
                    if let Some(inner) = map.get_mut(&key) {
                        mutate(inner, rng, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 6 => match rng.below(4) {
            0 => {
                let first = items[0].clone();
                items.extend(std::iter::repeat_n(first, 80));
            }
            1 => items.push(edge_value(rng)),
            _ => {
                let i = rng.below(items.len());
                mutate(&mut items[i], rng, depth + 1);
            }
        },
        other => *other = edge_value(rng),
    }
}

struct Route {
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Value,
}

#[derive(Clone, Copy)]
enum Auth {
    Rest,
    Admin,
    None,
}

fn routes() -> Vec<Route> {
    let t = "2024-01-01T00:00:00Z";
    let rest = |method, path, body| Route {
        method,
        path,
        auth: Auth::Rest,
        body,
    };
    let admin = |method, path, body| Route {
        method,
        path,
        auth: Auth::Admin,
        body,
    };
    vec![
        rest(
            "POST",
            "/users/track",
            json!({"attributes": [{"external_id": "f1", "first_name": "A", "email": "a@b.co",
            "arr": {"add": ["x"]}, "n": {"inc": 1}, "obj": {"k": "v"}, "push_tokens": [{"app_id": "a", "token": "t", "device_id": "d1"}],
            "subscription_groups": [{"subscription_group_id": "g", "subscription_state": "subscribed"}]}],
            "events": [{"external_id": "f1", "name": "e", "time": t, "properties": {"p": 1}}],
            "purchases": [{"external_id": "f1", "product_id": "p", "currency": "USD", "price": 1.5, "quantity": 2, "time": t}]}),
        ),
        rest(
            "POST",
            "/users/identify",
            json!({"aliases_to_identify": [{"external_id": "f1", "user_alias": {"alias_name": "a", "alias_label": "l"}}]}),
        ),
        rest(
            "POST",
            "/users/alias/new",
            json!({"user_aliases": [{"alias_name": "a", "alias_label": "l", "external_id": "f1"}]}),
        ),
        rest(
            "POST",
            "/users/alias/update",
            json!({"alias_updates": [{"alias_label": "l", "old_alias_name": "a", "new_alias_name": "b"}]}),
        ),
        rest(
            "POST",
            "/users/external_ids/rename",
            json!({"external_id_renames": [{"current_external_id": "f1", "new_external_id": "f1-v2"}]}),
        ),
        rest(
            "POST",
            "/users/external_ids/remove",
            json!({"external_ids": ["f1"]}),
        ),
        rest(
            "POST",
            "/canvas/trigger/send",
            json!({"canvas_id": "none", "context": {"a": 1}, "recipients": [{"external_user_id": "f1", "context": {"b": 2}}]}),
        ),
        rest(
            "POST",
            "/canvas/trigger/schedule/create",
            json!({"canvas_id": "none", "broadcast": true, "schedule": {"time": "2030-01-01T00:00:00Z", "in_local_time": true}}),
        ),
        rest(
            "POST",
            "/canvas/trigger/schedule/update",
            json!({"canvas_id": "none", "schedule_id": "s", "schedule": {"time": "2030-01-01T00:00:00Z"}}),
        ),
        rest("GET", "/canvas/list?page=0", Value::Null),
        rest(
            "GET",
            "/canvas/data_series?canvas_id=none&length=3&include_step_breakdown=true",
            Value::Null,
        ),
        rest("GET", "/canvas/details?canvas_id=none", Value::Null),
        rest(
            "POST",
            "/catalogs",
            json!({"catalogs": [{"name": "fuzz_catalog", "description": "d", "fields": [
                {"name": "id", "type": "string"}, {"name": "n", "type": "number"},
                {"name": "o", "type": "object"}, {"name": "a", "type": "array"}]}]}),
        ),
        rest(
            "PUT",
            "/catalogs/fuzz_catalog/items",
            json!({"items": [{"id": "i1", "n": 1, "o": {"k": "v"}, "a": ["x"]}]}),
        ),
        rest(
            "PATCH",
            "/catalogs/fuzz_catalog/items/i1",
            json!({"items": [{"a": {"$add": ["y"], "$remove": ["x"]}}]}),
        ),
        rest(
            "GET",
            "/catalogs/fuzz_catalog/items?cursor=c2tpcDow",
            Value::Null,
        ),
        rest(
            "POST",
            "/catalogs/fuzz_catalog/fields",
            json!({"fields": [{"name": "t", "type": "time"}]}),
        ),
        rest(
            "POST",
            "/content_blocks/create",
            json!({"name": "fuzz_block", "content": "<p>{{${first_name}}}</p>", "state": "draft", "tags": ["t"]}),
        ),
        rest(
            "POST",
            "/content_blocks/update",
            json!({"content_block_id": "x", "content": "c"}),
        ),
        rest("GET", "/content_blocks/list?limit=5&offset=0", Value::Null),
        rest(
            "GET",
            "/content_blocks/info?content_block_id=x",
            Value::Null,
        ),
        rest(
            "POST",
            "/templates/email/create",
            json!({"template_name": "t", "subject": "s", "body": "b", "tags": ["a"]}),
        ),
        rest(
            "POST",
            "/templates/email/update",
            json!({"email_template_id": "x", "subject": "s"}),
        ),
        rest("GET", "/templates/email/list", Value::Null),
        rest(
            "GET",
            "/templates/email/info?email_template_id=x",
            Value::Null,
        ),
        rest(
            "POST",
            "/users/delete",
            json!({"external_ids": ["f-none"], "user_aliases": [{"alias_name": "z", "alias_label": "l"}]}),
        ),
        rest(
            "POST",
            "/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"external_id": "f-none"}, "identifier_to_keep": {"external_id": "f1"}}]}),
        ),
        rest(
            "POST",
            "/users/export/ids",
            json!({"external_ids": ["f1"], "user_aliases": [{"alias_name": "a", "alias_label": "l"}],
            "device_id": "d1", "braze_id": "b", "email_address": "a@b.co", "phone": "+1", "fields_to_export": ["first_name"]}),
        ),
        rest(
            "POST",
            "/users/export/segment",
            json!({"segment_id": "none", "fields_to_export": ["external_id"]}),
        ),
        rest("GET", "/segments/list?page=0", Value::Null),
        rest("GET", "/segments/details?segment_id=none", Value::Null),
        rest(
            "POST",
            "/currents/events",
            json!({"events": [{"event_type": "users.behaviors.CustomEvent", "record": {}}]}),
        ),
        Route {
            method: "POST",
            path: "/partners/fuzz/cohorts",
            auth: Auth::None,
            body: json!({"partner_api_key": "fuzz-partner-key",
            "client_secret": "SECRET", "cohort_id": "c1", "name": "C", "created_at": t}),
        },
        Route {
            method: "POST",
            path: "/partners/fuzz/cohorts/users",
            auth: Auth::None,
            body: json!({"partner_api_key": "fuzz-partner-key",
            "client_secret": "SECRET", "cohort_id": "c1", "cohort_changes": [{"user_ids": ["f1"], "device_ids": ["d1"],
            "aliases": [{"alias_name": "a", "alias_label": "l"}], "should_remove": false}]}),
        },
        admin("POST", "/eddy/v1/workspaces", json!({"name": "fuzzws"})),
        admin("GET", "/eddy/v1/workspaces", Value::Null),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/canvases",
            json!({"name": "fuzz", "steps": [
                {"type": "message", "messages": {"webhook": {"url": "https://example.com/{{${user_id}}}"}}},
                {"type": "delay", "seconds": 60},
                {"type": "split", "filter": {"attribute": "plan", "op": "equals", "value": "gold"}}]}),
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/api-keys",
            json!({"name": "k", "permissions": ["users.track"]}),
        ),
        admin(
            "DELETE",
            "/eddy/v1/workspaces/default/api-keys/none",
            Value::Null,
        ),
        admin("GET", "/eddy/v1/workspaces/default/usage", Value::Null),
        admin(
            "PUT",
            "/eddy/v1/partners/fuzz2",
            json!({"partner_api_key": "another-partner-key", "display_name": "F"}),
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/partners/fuzz2/data-import-key",
            Value::Null,
        ),
        admin(
            "DELETE",
            "/eddy/v1/workspaces/default/partners/fuzz2/data-import-key",
            Value::Null,
        ),
        admin(
            "PUT",
            "/eddy/v1/workspaces/default/export-storage",
            json!({"type": "local"}),
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/export-storage",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "s", "filter": {"and": [
            {"attribute": "first_name", "op": "equals", "value": "A"},
            {"event": "e", "op": "count_at_least", "value": 1, "within_days": 7},
            {"not": {"attribute": "n", "op": "greater_than", "value": 3}}]}}),
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/segments/none",
            Value::Null,
        ),
        admin(
            "DELETE",
            "/eddy/v1/workspaces/default/segments/none",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/currents",
            json!({"name": "c", "type": "s3", "bucket": "b",
            "event_types": ["users.behaviors.CustomEvent"], "transforms": [{"field": "email_address", "action": "remove"}]}),
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/currents/none",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/dispatches/none/cancel",
            json!({}),
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/currents/none/flush",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/currents/none/test",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/currents/none/replay",
            json!({"from": t}),
        ),
        rest(
            "POST",
            "/messages/send",
            json!({"external_user_ids": ["f1"], "messages": {"webhook": {"url": "http://127.0.0.1:9/{{${user_id}}}",
            "body": "{{${first_name}}}", "request_headers": {"X-A": "b"}}}}),
        ),
        rest(
            "POST",
            "/messages/schedule/create",
            json!({"broadcast": true, "audience": {"AND": [{"custom_attribute": {"custom_attribute_name": "n", "comparison": "greater_than", "value": 0}}]},
            "messages": {"webhook": {"url": "http://127.0.0.1:9/s"}}, "schedule": {"time": "2099-01-01T00:00:00Z"}}),
        ),
        rest(
            "POST",
            "/messages/schedule/delete",
            json!({"schedule_id": "none"}),
        ),
        rest(
            "GET",
            "/messages/scheduled_broadcasts?end_time=2100-01-01T00:00:00Z",
            Value::Null,
        ),
        rest(
            "POST",
            "/campaigns/trigger/send",
            json!({"campaign_id": "none", "trigger_properties": {"a": 1},
            "recipients": [{"external_user_id": "f1", "send_to_existing_only": false, "attributes": {"x": 1}}]}),
        ),
        rest(
            "POST",
            "/transactional/v1/campaigns/none/send",
            json!({"external_send_id": "a", "recipient": {"external_user_id": "f1"}}),
        ),
        rest(
            "POST",
            "/sends/id/create",
            json!({"campaign_id": "none", "send_id": "s"}),
        ),
        rest("GET", "/campaigns/list?page=0", Value::Null),
        rest("GET", "/campaigns/details?campaign_id=none", Value::Null),
        rest(
            "POST",
            "/subscription/status/set",
            json!({"subscription_group_id": "g", "subscription_state": "subscribed", "external_id": ["f1"]}),
        ),
        rest(
            "POST",
            "/v2/subscription/status/set",
            json!({"subscription_groups": [{"subscription_group_id": "g", "subscription_state": "unsubscribed", "emails": ["a@b.co"]}]}),
        ),
        rest(
            "GET",
            "/subscription/status/get?subscription_group_id=g&external_id[]=f1",
            Value::Null,
        ),
        rest(
            "GET",
            "/subscription/user/status?external_id=f1",
            Value::Null,
        ),
        rest(
            "POST",
            "/email/status",
            json!({"email": "a@b.co", "subscription_state": "opted_in"}),
        ),
        rest(
            "GET",
            "/email/hard_bounces?start_date=2024-01-01&end_date=2024-01-02",
            Value::Null,
        ),
        rest("GET", "/email/unsubscribes?email=a@b.co", Value::Null),
        rest("POST", "/email/bounce/remove", json!({"email": "a@b.co"})),
        rest("POST", "/email/blocklist", json!({"email": ["z@b.co"]})),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/campaigns",
            json!({"name": "C", "control_group_percent": 10, "messages": {"webhook": {"url": "http://127.0.0.1:9/c"}},
            "conversion_events": [{"type": "custom_event", "custom_event_name": "e"}]}),
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/campaigns/none/test-send",
            json!({"external_user_id": "u1", "trigger_properties": {"a": 1}}),
        ),
        admin(
            "PUT",
            "/eddy/v1/workspaces/default/subscription-groups/g",
            json!({"name": "G"}),
        ),
        admin(
            "PUT",
            "/eddy/v1/workspaces/default/email",
            json!({"smtp_url": "smtp://127.0.0.1:9", "validate": false}),
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/users/messages?external_id=f1",
            Value::Null,
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/dispatches/none",
            Value::Null,
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/dispatches?limit=5",
            Value::Null,
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/segments/size",
            json!({"filter": {"or": [{"attribute": "plan", "op": "equals", "value": "pro"},
                                     {"purchase": null, "op": "count_at_most", "value": 2}]}}),
        ),
        admin(
            "POST",
            "/eddy/v1/workspaces/default/users/merge",
            json!({"merge_updates": [{"identifier_to_merge": {"external_id": "f2"},
                                      "identifier_to_keep": {"external_id": "f1"}}]}),
        ),
        admin(
            "DELETE",
            "/eddy/v1/workspaces/default/users/none",
            Value::Null,
        ),
        admin(
            "GET",
            "/eddy/v1/workspaces/default/users/none/events",
            Value::Null,
        ),
        admin("GET", "/eddy/v1/workspaces/default/cohorts", Value::Null),
        Route {
            method: "GET",
            path: "/eddy/t/c/abc.def",
            auth: Auth::None,
            body: Value::Null,
        },
    ]
}

/// A path with one segment replaced by something hostile.
fn mutate_path(path: &str, rng: &mut Rng) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut parts: Vec<String> = base.split('/').map(str::to_string).collect();
    let i = 1 + rng.below(parts.len() - 1);
    parts[i] = match rng.below(5) {
        0 => "x".repeat(20_000),
        1 => "%00%ff%fe".into(),
        2 => "..".into(),
        3 => "%F0%9F%98%80".repeat(300),
        _ => String::new(),
    };
    let mut out = parts.join("/");
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// The raw body of one case: mostly a mutated document, sometimes broken bytes.
fn body_of(route: &Route, rng: &mut Rng, bomb: &[u8]) -> (Vec<u8>, bool) {
    let mut doc = route.body.clone();
    for _ in 0..1 + rng.below(3) {
        mutate(&mut doc, rng, 0);
    }
    let text = doc.to_string().into_bytes();
    match rng.below(12) {
        0 => (text[..rng.below(text.len().max(1))].to_vec(), false),
        1 => {
            let mut bytes = text;
            let at = rng.below(bytes.len().max(1));
            bytes.splice(at..at, [0xff, 0xfe, 0xc3]);
            (bytes, false)
        }
        2 => ("[".repeat(100_000).into_bytes(), false),
        3 => (bomb.to_vec(), true),
        4 => (gzip(&text), true),
        5 => (vec![b' '; 5 * 1024 * 1024], false),
        _ => (text, false),
    }
}

async fn send(
    app: &TestApp,
    route: &Route,
    path: &str,
    body: Vec<u8>,
    gzipped: bool,
) -> reqwest::Result<u16> {
    let method = reqwest::Method::from_bytes(route.method.as_bytes()).expect("method");
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("content-type", "application/json");
    request = match route.auth {
        Auth::Rest => request.bearer_auth(&app.key),
        Auth::Admin => request.bearer_auth(&app.admin_token),
        Auth::None => request,
    };
    if gzipped {
        request = request.header("content-encoding", "gzip");
    }
    if route.method != "GET" {
        request = request.body(body);
    }
    Ok(request.send().await?.status().as_u16())
}

async fn canary(app: &TestApp, n: u64) {
    let (status, body) = app
        .track(json!({"attributes": [{"external_id": "fuzz-canary", "count": {"inc": 1}}]}))
        .await;
    assert_eq!(status, 201, "canary {n}: {body}");
}

async fn canary_count(app: &TestApp) -> u64 {
    let user = app.user("fuzz-canary").await.expect("canary user");
    user["custom_attributes"]["count"].as_u64().expect("count")
}

#[tokio::test]
async fn no_input_reaches_a_5xx_or_drops_a_connection() {
    let cases: u64 = std::env::var("EDDY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    let seed: u64 = std::env::var("EDDY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_EDD1);
    eprintln!("fuzz: {cases} cases, seed {seed} (EDDY_FUZZ_SEED replays)");
    let mut rng = Rng(seed | 1);
    let app = spawn_app().await;
    // What the partner routes need to get past authentication.
    let registered = app
        .client
        .put(app.url("/eddy/v1/partners/fuzz"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"partner_api_key": "fuzz-partner-key"}))
        .send()
        .await
        .expect("partner");
    assert_eq!(registered.status(), 200);
    let (_, key) = app
        .admin_post(
            "/eddy/v1/workspaces/default/partners/fuzz/data-import-key",
            json!({}),
        )
        .await;
    let secret = key["key"].as_str().expect("dik").to_string();
    let mut routes = routes();
    for route in &mut routes {
        if let Some(Value::String(s)) = route.body.get_mut("client_secret") {
            *s = secret.clone();
        }
    }
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    let mut canaries = 0;
    let mut by_status: std::collections::BTreeMap<u16, u64> = Default::default();
    for case in 0..cases {
        let route = rng.pick(&routes);
        let path = if rng.below(6) == 0 {
            mutate_path(route.path, &mut rng)
        } else {
            route.path.to_string()
        };
        let (body, gzipped) = body_of(route, &mut rng, &bomb);
        let status = match send(&app, route, &path, body, gzipped).await {
            Ok(status) => status,
            Err(e) => panic!(
                "case {case} (seed {seed}): {} {path}: no answer: {e}",
                route.method
            ),
        };
        // 501 is documented: a Braze endpoint eddy does not implement.
        assert!(
            status < 500 || status == 501,
            "case {case} (seed {seed}): {} {path} answered {status}",
            route.method
        );
        *by_status.entry(status).or_default() += 1;
        if case % 100 == 99 {
            canaries += 1;
            canary(&app, canaries).await;
        }
    }
    canaries += 1;
    canary(&app, canaries).await;
    eprintln!("fuzz: answers by status {by_status:?}");
    assert_eq!(canary_count(&app).await, canaries);
    let dir = app.stop().await;
    let again = start(dir.clone(), |_| {}).await;
    assert_eq!(canary_count(&again).await, canaries, "after a restart");
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_mutator_is_reproducible() {
    let mut a = Rng(42);
    let mut b = Rng(42);
    let mut x = routes()[0].body.clone();
    let mut y = x.clone();
    mutate(&mut x, &mut a, 0);
    mutate(&mut y, &mut b, 0);
    assert_eq!(x, y);
}

/// One hostile template: what once took eddy down, in random sizes and combinations.
fn hostile_template(rng: &mut Rng, cc_base: &str) -> String {
    let piece = |rng: &mut Rng| -> String {
        match rng.below(10) {
            0 => {
                let depth = rng.below(300);
                format!(
                    "{}x{}",
                    "{% if true %}".repeat(depth),
                    "{% endif %}".repeat(depth)
                )
            }
            1 => {
                let end = *rng.pick(&["100000000000", "9223372036854775807", "1000000", "-5"]);
                let body =
                    *rng.pick(&["", "{{ i }}", "{% assign j = i %}", "{% cycle 'a', 'b' %}"]);
                let reversed = if rng.below(2) == 0 { " reversed" } else { "" };
                format!("{{% for i in (1..{end}){reversed} %}}{body}{{% endfor %}}")
            }
            2 => {
                let (start, grow) = *rng.pick(&[
                    ("'ab'", "s | append: s"),
                    ("'ab'", "s | prepend: s"),
                    ("'a,b' | split: ','", "s | concat: s"),
                    ("'aa'", "s | replace: 'a', s"),
                    ("'a b'", "s | split: '' | join: s"),
                ]);
                let times = rng.below(45);
                format!(
                    "{{% assign s = {start} %}}{{% for i in (1..{times}) %}}{{% assign s = {grow} %}}{{% endfor %}}{{{{ s | size }}}}"
                )
            }
            3 => format!(
                "{{% if a{} %}}x{{% endif %}}",
                " and a or b".repeat(rng.below(50_000))
            ),
            4 => {
                let depth = rng.below(5_000);
                format!(
                    "{{{{ {}1..2{} | size }}}}",
                    "(".repeat(depth),
                    "..3)".repeat(depth)
                )
            }
            5 => {
                let calls = 1 + rng.below(8);
                let retry = if rng.below(3) == 0 { " :retry" } else { "" };
                (0..calls)
                    .map(|i| {
                        format!("{{% connected_content {cc_base}/slow?{i} :no_cache{retry} %}}")
                    })
                    .collect()
            }
            6 => format!("{{{{content_blocks.${{chain{}}}}}}}", rng.below(40)),
            7 => {
                let width = *rng.pick(&["5", "1024", "99999999999", "1000000000"]);
                format!("{{{{ '2024-01-02' | date: '%{width}Y' }}}}")
            }
            8 => format!(
                "{{{{ (1..{}) | join: '{}' }}}}",
                rng.below(usize::MAX / 2),
                "x".repeat(rng.below(100))
            ),
            _ => format!(
                "{{{{ '{}' | escape | url_encode | base64_encode | size }}}}",
                "<&>".repeat(rng.below(100_000))
            ),
        }
    };
    let count = 1 + rng.below(3);
    (0..count).map(|_| piece(rng)).collect()
}

/// The peak memory of this process, from the kernel.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn hostile_templates_end_within_their_limits_and_never_take_eddy_down() {
    use axum::routing::get;
    let cases: usize = std::env::var("EDDY_FUZZ_TEMPLATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("EDDY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7E3A_1A7E);
    eprintln!("template fuzz: {cases} templates, seed {seed}");
    let mut rng = Rng(seed | 1);
    // A Connected Content endpoint that answers slowly, and a webhook receiver.
    let slow = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            axum::Json(json!({"ok": true}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cc_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let receiver = eddy_testkit::WebhookReceiver::start().await;
    let app = eddy_testkit::spawn_with(|config| {
        config.liquid.max_steps = 300_000;
        config.liquid.max_render_seconds = 2;
    })
    .await;
    app.allow_loopback("default").await;
    // A chain of content blocks longer than any limit.
    for i in 0..40 {
        let (status, body) = app
            .admin_put(
                &format!("/eddy/v1/workspaces/default/content-blocks/chain{i}"),
                json!({"content": format!("{i}{{{{content_blocks.${{chain{}}}}}}}", i + 1)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.track(json!({"attributes": [{"external_id": "t", "first_name": "T"}]}))
        .await;
    let mut dispatches = Vec::new();
    for case in 0..cases {
        let template = hostile_template(&mut rng, &cc_base);
        let (status, body) = app
            .admin_post(
                "/eddy/v1/workspaces/default/liquid/render",
                json!({"template": template}),
            )
            .await;
        assert!(
            status == 200 || status == 400,
            "case {case} (seed {seed}): render answered {status}: {body}"
        );
        if status == 400 {
            // Over a limit or not Liquid: the answer says which.
            assert!(body["message"].is_string(), "case {case}: {body}");
        }
        if case % 4 == 0 {
            let (status, sent) = app
                .post(
                    "/messages/send",
                    json!({"external_user_ids": ["t"], "messages": {"webhook": {
                        "url": receiver.url("/fuzz"), "body": template}}}),
                )
                .await;
            assert!(
                status == 201 || status == 400,
                "case {case}: send answered {status}: {sent}"
            );
            if let Some(id) = sent["dispatch_id"].as_str() {
                dispatches.push(id.to_string());
            }
        }
    }
    // Every send ends (delivered or aborted with its reason), none is left running.
    for id in &dispatches {
        let mut state = Value::Null;
        for _ in 0..1500 {
            let (_, dispatch) = app
                .admin_get(&format!("/eddy/v1/workspaces/default/dispatches/{id}"))
                .await;
            state = dispatch["state"].clone();
            if state == "done" {
                let counts = &dispatch["counts"];
                assert_eq!(
                    counts["sent"].as_u64().unwrap_or(0) + counts["aborted"].as_u64().unwrap_or(0),
                    1,
                    "{dispatch}"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(state, "done", "dispatch {id}");
    }
    let peak = peak_rss_bytes();
    eprintln!("template fuzz: peak memory {} MiB", peak >> 20);
    assert!(peak < 1536 << 20, "the process grew to {} MiB", peak >> 20);
    // The same data serves again.
    let dir = app.stop().await;
    let again = start(dir.clone(), |_| {}).await;
    let health = again
        .client
        .get(again.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    again.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
