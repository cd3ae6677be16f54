//! Braze Liquid through the admin API: rendering for a stored user, syntax errors with their
//! line, aborts, content blocks, and Connected Content against real local servers (the
//! Amplitude User Profile API emulator among them): hosts, caching, retries, credentials.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eddy_testkit::{AmplitudeProfileApi, ProfileUser, TestApp, spawn_app};
use serde_json::{Value, json};

const RENDER: &str = "/eddy/v1/workspaces/default/liquid/render";

async fn render(app: &TestApp, body: Value) -> (u16, Value) {
    app.admin_post(RENDER, body).await
}

async fn output(app: &TestApp, body: Value) -> String {
    let (status, answer) = render(app, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["aborted"], false, "{answer}");
    answer["output"].as_str().expect("output").to_string()
}

#[tokio::test]
async fn a_template_renders_for_a_stored_user_with_braze_tags() {
    let app = spawn_app().await;
    let (status, _) = app
        .track(json!({"attributes": [{"external_id": "ada", "first_name": "Ada", "email": "ada@example.com",
            "home_city": "London", "Shoe Size": 38, "tags": ["vip", "beta"], "plan": {"tier": "gold"},
            "vip": true}]}))
        .await;
    assert_eq!(status, 201);
    let template = "Hi {{${first_name}}} ({{${email_address}}}, {{${city}}}, {{${user_id}}})! \
        Size {{custom_attribute.${Shoe Size}}}, first tag {{custom_attribute.${tags} | first}}, \
        tier {{custom_attribute.${plan}.tier}}{% if custom_attribute.${vip} %}, VIP{% endif %}. \
        Coupon {{api_trigger_properties.${coupon} | upcase}} for {{campaign.${name}}}.";
    let out = output(
        &app,
        json!({"template": template, "user": {"external_id": "ada"},
               "api_trigger_properties": {"coupon": "save10"}, "campaign": {"name": "Spring"}}),
    )
    .await;
    assert_eq!(
        out,
        "Hi Ada (ada@example.com, London, ada)! Size 38, first tag vip, tier gold, VIP. Coupon SAVE10 for Spring."
    );
    // Other identifiers find the same user; an unknown one is a 404.
    let out = output(
        &app,
        json!({"template": "{{${first_name}}}", "user": {"email": "ADA@example.com"}}),
    )
    .await;
    assert_eq!(out, "Ada");
    let (status, _) = render(
        &app,
        json!({"template": "x", "user": {"external_id": "nobody"}}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = render(&app, json!({"template": "x", "user": {"phone": "1"}})).await;
    assert_eq!(status, 400);
    // Top-level variables, and Liquid's own semantics.
    let out = output(&app, json!({"template": "{{ n | divided_by: 2 }} {{ x | default: 'none' }}", "variables": {"n": 7}})).await;
    assert_eq!(out, "3 none");
}

#[tokio::test]
async fn syntax_errors_name_their_line_and_aborts_say_why() {
    let app = spawn_app().await;
    let (status, body) = render(&app, json!({"template": "a\nb\n{% if x %}never closed"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "'if' tag was never closed");
    assert_eq!(body["line"], 3);
    let (status, body) = render(&app, json!({"template": "ok\n{% frob %}"})).await;
    assert_eq!((status, body["line"].as_u64()), (400, Some(2)), "{body}");
    assert_eq!(body["message"], "Unknown tag 'frob'");

    let (status, body) = render(
        &app,
        json!({"template": "before {% if n < 10 %}{% abort_message('too few points') %}{% endif %} after",
               "variables": {"n": 3}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"output": null, "aborted": true, "abort_reason": "too few points"})
    );
    let (_, body) = render(&app, json!({"template": "{% abort_message() %}"})).await;
    assert_eq!(
        (body["aborted"].clone(), body["abort_reason"].clone()),
        (json!(true), json!(""))
    );
}

#[tokio::test]
async fn content_blocks_render_in_place_nest_and_refuse_cycles() {
    let app = spawn_app().await;
    let base = "/eddy/v1/workspaces/default/content-blocks";
    let (status, body) = app
        .admin_put(
            &format!("{base}/footer"),
            json!({"content": "-- {{content_blocks.${signature}}} --"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.admin_put(
        &format!("{base}/signature"),
        json!({"content": "{% assign signed = true %}The {{ team | default: 'eddy' }} team"}),
    )
    .await;
    let out = output(
        &app,
        json!({"template": "Hello\n{{content_blocks.${footer}}}{% if signed %}!{% endif %}",
                                  "variables": {"team": "Data"}}),
    )
    .await;
    assert_eq!(out, "Hello\n-- The Data team --!");
    let (_, list) = app.admin_get(base).await;
    assert_eq!(
        list["content_blocks"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    // A block that does not parse is refused with its line.
    let (status, body) = app
        .admin_put(&format!("{base}/broken"), json!({"content": "{% if %}"}))
        .await;
    assert_eq!((status, body["line"].as_u64()), (400, Some(1)), "{body}");
    // A cycle is an error, not a hang.
    app.admin_put(
        &format!("{base}/a"),
        json!({"content": "{{content_blocks.${b}}}"}),
    )
    .await;
    app.admin_put(
        &format!("{base}/b"),
        json!({"content": "{{content_blocks.${a}}}"}),
    )
    .await;
    let (status, body) = render(&app, json!({"template": "{{content_blocks.${a}}}"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("includes itself"),
        "{body}"
    );
    let response = app
        .client
        .delete(app.url(&format!("{base}/a")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.admin_get(&format!("{base}/a")).await.0, 404);
}

/// A local JSON API that counts its calls, fails on demand, and wants basic auth on `/private`.
async fn local_api(failures: Arc<AtomicUsize>, calls: Arc<AtomicUsize>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/item",
            axum::routing::get({
                let (failures, calls) = (failures.clone(), calls.clone());
                move |headers: HeaderMap| {
                    let (failures, calls) = (failures.clone(), calls.clone());
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if failures.load(Ordering::SeqCst) > 0 {
                            failures.fetch_sub(1, Ordering::SeqCst);
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        let lang = headers
                            .get("x-lang")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("en");
                        axum::Json(json!({"name": "Lamp", "price": 12.5, "lang": lang}))
                            .into_response()
                    }
                }
            })
            .post({
                let calls = calls.clone();
                move |body: String| {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        axum::Json(json!({"echo": body}))
                    }
                }
            }),
        )
        .route("/text", axum::routing::get(|| async { "plain words" }))
        .route(
            "/missing",
            axum::routing::get(|| async { (StatusCode::NOT_FOUND, "nope") }),
        )
        .route(
            "/private",
            axum::routing::get(|headers: HeaderMap| async move {
                // "user:secret" in base64.
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Basic dXNlcjpzZWNyZXQ=") => {
                        axum::Json(json!({"ok": true})).into_response()
                    }
                    _ => {
                        (StatusCode::UNAUTHORIZED, axum::Json(json!({"ok": false}))).into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn connected_content_calls_allowed_hosts_caches_retries_and_authenticates() {
    let app = spawn_app().await;
    let (failures, calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let api = local_api(failures.clone(), calls.clone()).await;
    let template = format!(
        "{{% connected_content {api}/item :headers {{\"X-Lang\": \"{{{{ lang }}}}\"}} :save item %}}{{{{ item.name }}}} {{{{ item.price }}}} {{{{ item.lang }}}} {{{{ item.__http_status_code__ }}}}"
    );
    // Loopback is not public: refused until the workspace allows it. The message renders as
    // Braze renders an unavailable URL; the preview says why.
    let (status, answer) = render(
        &app,
        json!({"template": template, "variables": {"lang": "fr"}}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["output"], "   ", "{answer}");
    let warning = answer["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.starts_with("connected_content:") && warning.contains("allowed_hosts"),
        "{answer}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let (status, _) = app
        .admin_put(
            "/eddy/v1/workspaces/default/connected-content",
            json!({"allowed_hosts": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(status, 200);

    let out = output(
        &app,
        json!({"template": template, "variables": {"lang": "fr"}}),
    )
    .await;
    assert_eq!(out, "Lamp 12.5 fr 200");
    // The same GET again comes from the cache; another header is another request.
    output(
        &app,
        json!({"template": template, "variables": {"lang": "fr"}}),
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    output(
        &app,
        json!({"template": template, "variables": {"lang": "de"}}),
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let no_cache =
        format!("{{% connected_content {api}/item :no_cache :save item %}}{{{{ item.name }}}}");
    output(&app, json!({"template": no_cache})).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // POST with a rendered body is not cached unless asked.
    let post = format!(
        "{{% connected_content {api}/item :method post :body id={{{{ id }}}}&x=1 :content_type application/x-www-form-urlencoded :save r %}}{{{{ r.echo }}}}"
    );
    assert_eq!(
        output(&app, json!({"template": post, "variables": {"id": 7}})).await,
        "id=7&x=1"
    );
    output(&app, json!({"template": post, "variables": {"id": 7}})).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // Text answers are printed in place; a 404 renders nothing.
    let text =
        format!("[{{% connected_content {api}/text %}}][{{% connected_content {api}/missing %}}]");
    assert_eq!(
        output(&app, json!({"template": text})).await,
        "[plain words][]"
    );

    // A failing call renders nothing; with :retry it is retried, and aborts when it keeps failing.
    failures.store(2, Ordering::SeqCst);
    let retried = format!(
        "{{% connected_content {api}/item :no_cache :retry :save item %}}{{{{ item.name }}}}"
    );
    assert_eq!(output(&app, json!({"template": retried})).await, "Lamp");
    failures.store(10, Ordering::SeqCst);
    let (_, body) = render(&app, json!({"template": retried})).await;
    assert_eq!(body["aborted"], true, "{body}");
    assert!(
        body["abort_reason"].as_str().unwrap().contains("503"),
        "{body}"
    );
    failures.store(1, Ordering::SeqCst);
    let plain = format!("[{{% connected_content {api}/item :no_cache %}}]");
    assert_eq!(output(&app, json!({"template": plain})).await, "[]");
    failures.store(0, Ordering::SeqCst);

    // Basic auth from a stored credential, never shown back.
    let private = format!(
        "{{% connected_content {api}/private :basic_auth shop :no_cache :save r %}}{{{{ r.ok }}}}"
    );
    let (status, body) = app
        .admin_put(
            "/eddy/v1/workspaces/default/connected-content/credentials/shop",
            json!({"username": "user", "password": "secret"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(output(&app, json!({"template": private})).await, "true");
    let (_, settings) = app
        .admin_get("/eddy/v1/workspaces/default/connected-content")
        .await;
    assert_eq!(
        settings,
        json!({"allowed_hosts": ["127.0.0.1"], "credentials": ["shop"]})
    );
    assert!(!settings.to_string().contains("secret"));
    let unknown = format!("{{% connected_content {api}/private :basic_auth nobody :no_cache %}}");
    let out = output(&app, json!({"template": unknown})).await;
    assert_eq!(out, "", "an unknown credential fails the call");
}

#[tokio::test]
async fn amplitude_recommendations_from_the_user_profile_api_with_the_cache_under_its_rate_limit() {
    let app = spawn_app().await;
    let amplitude = AmplitudeProfileApi::start("amp-secret", 3).await;
    amplitude.add_user(
        "testUser",
        ProfileUser {
            device_id: "ffff-ffff".into(),
            recommendations: [(
                "testRecId".to_string(),
                vec![
                    "cookie".to_string(),
                    "cracker".to_string(),
                    "donut".to_string(),
                ],
            )]
            .into_iter()
            .collect(),
            amp_props: serde_json::from_value(json!({"plan": "pro", "library": "http/1.0"}))
                .unwrap(),
            cohort_ids: vec!["cohort1".into(), "cohort2".into()],
            computations: serde_json::from_value(json!({"comp_lifetime_value": 42})).unwrap(),
        },
    );
    app.track(json!({"attributes": [{"external_id": "testUser", "first_name": "Tess"}]}))
        .await;
    app.admin_put(
        "/eddy/v1/workspaces/default/connected-content",
        json!({"allowed_hosts": ["127.0.0.1"]}),
    )
    .await;
    // The template Braze's Amplitude page describes, pointed at the emulator.
    let template = format!(
        "{{% connected_content {}/v1/userprofile?user_id={{{{${{user_id}}}}}}&get_recs=true&rec_id=testRecId&get_amp_props=true&get_cohort_ids=true&comp_id=comp_lifetime_value \
         :headers {{\"Authorization\": \"Api-Key {{{{ api_trigger_properties.${{amplitude_key}} }}}}\"}} :save result %}}\
         {{% if result.__http_status_code__ != 200 %}}{{% abort_message(result.error) %}}{{% endif %}}\
         Hi {{{{${{first_name}}}}}}, picked for you: {{{{ result.userData.recommendations[0].items | join: ', ' }}}} \
         (plan {{{{ result.userData.amp_props.plan }}}}, LTV {{{{ result.userData.amp_props.comp_lifetime_value }}}}, \
         {{{{ result.userData.cohort_ids | size }}}} cohorts)",
        amplitude.url
    );
    let body = json!({"template": template, "user": {"external_id": "testUser"},
                      "api_trigger_properties": {"amplitude_key": "amp-secret"}});
    for _ in 0..10 {
        let out = output(&app, body.clone()).await;
        assert_eq!(
            out,
            "Hi Tess, picked for you: cookie, cracker, donut (plan pro, LTV 42, 2 cohorts)"
        );
    }
    // Ten sends, one call: the cache keeps them under Amplitude's per-minute limit.
    assert_eq!(amplitude.requests(), 1);

    // Without the cache the fourth call in a minute is throttled, and the template aborts.
    let uncached = body["template"]
        .as_str()
        .unwrap()
        .replace(":save result", ":save result :no_cache");
    let mut uncached_body = body.clone();
    uncached_body["template"] = json!(uncached);
    let mut aborted = None;
    for _ in 0..4 {
        let (_, answer) = render(&app, uncached_body.clone()).await;
        if answer["aborted"] == true {
            aborted = answer["abort_reason"].as_str().map(str::to_string);
        }
    }
    assert_eq!(
        aborted.as_deref(),
        Some(
            "Number of requests per minute exceeds system limit. Contact Support if you need this limit raised"
        )
    );

    // A wrong key: Amplitude answers 401 in plain text, nothing is saved, the template aborts.
    let mut wrong = body.clone();
    wrong["api_trigger_properties"] = json!({"amplitude_key": "wrong"});
    wrong["template"] = json!(uncached);
    let (_, answer) = render(&app, wrong).await;
    assert_eq!(answer["aborted"], true, "{answer}");
}

#[tokio::test]
async fn connected_content_refuses_private_addresses_in_every_spelling() {
    let app = spawn_app().await;
    for url in [
        "http://localhost/x",
        "http://127.1/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://10.0.0.1/x",
    ] {
        let (status, answer) = render(
            &app,
            json!({"template": format!("[{{% connected_content {url} %}}]")}),
        )
        .await;
        assert_eq!(status, 200, "{url}: {answer}");
        assert_eq!(answer["output"], "[]", "{url}: {answer}");
        let warning = answer["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("private"), "{url}: {answer}");
    }
}
