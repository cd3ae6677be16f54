//! What a key that may only send (`messages.send`) can make eddy do, tried as an attacker would:
//! templates that try to exhaust memory, time or the stack abort their recipient with the
//! reason and leave eddy serving, also after a restart on the same data; webhooks reach no
//! private address the workspace did not list, in any spelling; addresses cannot carry headers
//! or SMTP commands.

use std::time::Duration;

use eddy_testkit::{TestApp, WebhookReceiver, spawn_app};
use serde_json::{Value, json};

const WS: &str = "/eddy/v1/workspaces/default";

/// Waits until a dispatch has ended (done or failed); answers it.
async fn ended(app: &TestApp, dispatch_id: &str) -> Value {
    for _ in 0..1500 {
        let (status, body) = app
            .admin_get(&format!("{WS}/dispatches/{dispatch_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == "done" || body["state"] == "failed" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("dispatch {dispatch_id} did not end");
}

async fn send(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    app.post_as(key, "/messages/send", body).await
}

#[tokio::test]
async fn hostile_templates_abort_their_recipient_and_eddy_keeps_serving_after_a_restart() {
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "victim", "first_name": "V"}]}))
        .await;
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let chain = format!("{{% if a{} %}}x{{% endif %}}", " and a".repeat(100_000));
    let hostile = [
        "{% for i in (1..100000000000) %}{% endfor %}".to_string(),
        "{% for i in (1..9223372036854775807) %}{% endfor %}".to_string(),
        "{% assign s = 'ab' %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}".to_string(),
        "{{ (1..100000000000) | join: ',' }}".to_string(),
        chain,
    ];
    let mut dispatches = Vec::new();
    for body in &hostile {
        let (status, sent) = send(
            &app,
            &sender,
            json!({"external_user_ids": ["victim"],
                   "messages": {"webhook": {"url": receiver.url("/hook"), "body": body}}}),
        )
        .await;
        assert_eq!(status, 201, "{sent}");
        dispatches.push(sent["dispatch_id"].as_str().expect("id").to_string());
    }
    for id in &dispatches {
        let done = ended(&app, id).await;
        assert_eq!(done["state"], "done", "{done}");
        // The 100,000-term condition is fine Liquid (a is nil): it is delivered.
        let delivered = done["counts"]["sent"].as_u64().unwrap_or(0);
        let aborted = done["counts"]["aborted"].as_u64().unwrap_or(0);
        assert_eq!(delivered + aborted, 1, "{done}");
    }
    assert_eq!(receiver.count(), 1, "only the long condition is delivered");
    let (status, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=victim"))
        .await;
    assert_eq!(status, 200);
    let shown = history.to_string();
    assert!(shown.contains("steps"), "{shown}");
    assert!(shown.contains("bytes of values"), "{shown}");

    // The same data serves again, and nothing is sent twice.
    let dir = app.stop().await;
    let app = eddy_testkit::start(dir, |_| {}).await;
    let health = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn webhooks_reach_no_private_address_the_workspace_did_not_list() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "u"}]}))
        .await;
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let port = receiver
        .url("/")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let urls = [
        format!("http://127.0.0.1:{port}/a"),
        format!("http://localhost:{port}/b"),
        format!("http://[::ffff:127.0.0.1]:{port}/c"),
        format!("http://[::ffff:7f00:1]:{port}/d"),
        format!("http://2130706433:{port}/e"),
        format!("http://0x7f.0.0.1:{port}/f"),
        format!("http://127.1:{port}/g"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[64:ff9b::a9fe:a9fe]/".to_string(),
    ];
    for url in &urls {
        let (status, sent) = send(
            &app,
            &sender,
            json!({"external_user_ids": ["u"], "messages": {"webhook": {"url": url,
                   "request_headers": {"Host": "internal.example"}}}}),
        )
        .await;
        assert_eq!(status, 201, "{sent}");
        let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
        assert_eq!(done["counts"]["sent"], 0, "{url}: {done}");
    }
    assert_eq!(receiver.count(), 0, "no request reached the receiver");

    // Listed, the same receiver is reached.
    app.allow_loopback("default").await;
    let (_, sent) = send(
        &app,
        &sender,
        json!({"external_user_ids": ["u"], "messages": {"webhook": {"url": format!("http://localhost:{port}/ok")}}}),
    )
    .await;
    let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn allowed_hosts_entries_that_are_not_hosts_are_refused() {
    let app = spawn_app().await;
    for bad in ["http://x", "a b", "x:99999", "[::1", "user@host", ""] {
        let (status, body) = app
            .admin_put(
                &format!("{WS}/connected-content"),
                json!({"allowed_hosts": [bad]}),
            )
            .await;
        assert_eq!(status, 400, "{bad:?}: {body}");
    }
    let (status, body) = app
        .admin_put(
            &format!("{WS}/connected-content"),
            json!({"allowed_hosts": ["api.internal:8443", "[::1]:9000", "::1", "10.0.0.5"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn addresses_cannot_carry_headers_or_smtp_commands() {
    let app = spawn_app().await;
    app.track(
        json!({"attributes": [{"external_id": "u", "email": "u@example.com",
        "reply": "a@b.co\r\nBcc: evil2@example.com\r\nX-Injected: yes"}]}),
    )
    .await;
    let (status, _) = app
        .admin_put(
            &format!("{WS}/email"),
            json!({"smtp_url": "smtp://127.0.0.1:9", "validate": false}),
        )
        .await;
    assert_eq!(status, 200);
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let injected = "b@example.com>\r\nRSET\r\nMAIL FROM:<spoof@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA";
    for (field, value) in [
        ("bcc", injected),
        ("reply_to", "a@b.co\r\nBcc: evil@example.com"),
        ("from", "Shop <shop@example.com>\r\nBcc: evil@example.com"),
        ("from", "not an address"),
    ] {
        let mut email = json!({"from": "Shop <shop@example.com>", "subject": "s", "body": "b"});
        email[field] = json!(value);
        let (status, body) = send(
            &app,
            &sender,
            json!({"external_user_ids": ["u"], "messages": {"email": email}}),
        )
        .await;
        assert_eq!(status, 400, "{field}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{message}");
        assert!(!message.contains('\r'), "{message}");
    }
    // Rendered from profile data, the address aborts that recipient.
    let (status, sent) = send(
        &app,
        &sender,
        json!({"external_user_ids": ["u"], "messages": {"email": {
            "from": "Shop <shop@example.com>", "reply_to": "{{custom_attribute.${reply}}}",
            "subject": "s", "body": "b"}}}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
    assert_eq!(done["counts"]["aborted"], 1, "{done}");
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=u"))
        .await;
    assert!(history.to_string().contains("reply_to"), "{history}");
}

#[tokio::test]
async fn a_dispatch_that_keeps_stopping_without_progress_is_parked_as_failed() {
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "u"}]}))
        .await;
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["u"], "messages": {"webhook": {"url": receiver.url("/x")}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let id = sent["dispatch_id"].as_str().expect("id").to_string();
    ended(&app, &id).await;
    // As a dispatch is stored when three runs in a row ended before their first chunk (the
    // process killed under it each time).
    let ws = app
        .store
        .workspace("default")
        .expect("read")
        .expect("default")
        .id;
    let mut stored: eddy_messaging::dispatch::Dispatch = serde_json::from_value(
        app.store
            .object(ws, eddy_messaging::kinds::DISPATCH, &id)
            .expect("read")
            .expect("stored"),
    )
    .expect("a dispatch");
    stored.state = eddy_messaging::dispatch::State::Sending;
    stored.next = 0;
    stored.claimed = 0;
    stored.starts_without_progress = 3;
    app.store
        .record(ws, stored.writes().expect("writes"), Vec::new())
        .await
        .expect("record");
    let dir = app.stop().await;
    let app = eddy_testkit::start(dir, |_| {}).await;
    let parked = ended(&app, &id).await;
    assert_eq!(parked["state"], "failed", "{parked}");
    assert!(
        parked["failure"]
            .as_str()
            .unwrap_or_default()
            .contains("not tried again"),
        "{parked}"
    );
    assert!(
        app.metrics()
            .await
            .contains("eddy_dispatches_failed_total 1")
    );
    assert_eq!(receiver.count(), 1, "a parked dispatch sends nothing more");
    // Parked is final: another restart leaves it alone.
    let dir = app.stop().await;
    let app = eddy_testkit::start(dir, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, again) = app.admin_get(&format!("{WS}/dispatches/{id}")).await;
    assert_eq!(again["state"], "failed");
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn mail_says_only_what_the_template_wrote() {
    let Some(smtp) = eddy_testkit::SmtpServer::start() else {
        return;
    };
    let app = spawn_app().await;
    let (status, body) = app
        .admin_put(&format!("{WS}/email"), json!({"smtp_url": smtp.url()}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.track(
        json!({"attributes": [{"external_id": "u", "email": "u@x.test",
        "first_name": "<a href=\"https://evil.example\">claim</a>",
        "reply": "Help <help@shop.test>"}]}),
    )
    .await;
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let (status, sent) = send(
        &app,
        &sender,
        json!({"external_user_ids": ["u"], "messages": {"email": {
            "from": "Shop <news@shop.test>", "reply_to": "{{custom_attribute.${reply}}}",
            "bcc": "audit@shop.test", "subject": "Hi",
            "body": "<p>Hi {{${first_name}}}</p><a href=\"https://shop.test/sale\">Sale</a>"}}}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    let delivered = smtp.delivered();
    assert_eq!(delivered.len(), 1);
    let mail = &delivered[0];
    assert_eq!(mail.from, "news@shop.test");
    assert_eq!(mail.to, vec!["u@x.test", "audit@shop.test"]);
    assert!(
        mail.data.contains("Reply-To: Help <help@shop.test>"),
        "{}",
        mail.data
    );
    assert!(
        !mail.data.to_ascii_lowercase().contains("bcc:"),
        "{}",
        mail.data
    );
    let html = mail.part("text/html");
    // The profile's link stays as it was; the template's is tracked.
    assert!(
        html.contains("<a href=\"https://evil.example\">claim</a>"),
        "{html}"
    );
    assert!(!html.contains("https://shop.test/sale"), "{html}");
    assert!(html.contains("/eddy/t/c/"), "{html}");
    assert!(!html.contains("data-eddy-link"), "{html}");
}

#[tokio::test]
async fn connected_content_stops_reading_at_its_cap() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    // An endpoint that streams without end, counting what it got out.
    let streamed = Arc::new(AtomicU64::new(0));
    let counter = streamed.clone();
    let endless = axum::Router::new().route(
        "/endless",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
                let stream = futures_util::stream::repeat_with(move || {
                    counter.fetch_add(1 << 20, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                axum::body::Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, endless).await });
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let (status, body) = app
        .admin_post(
            &format!("{WS}/liquid/render"),
            json!({"template": format!("[{{% connected_content http://{addr}/endless :save r %}}{{{{ r }}}}]")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["output"], "[]",
        "an answer past the cap renders as unavailable"
    );
    read_little_of_an_endless_answer(&streamed).await;
}

#[tokio::test]
async fn a_webhook_receiver_that_answers_without_end_costs_no_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let streamed = Arc::new(AtomicU64::new(0));
    let counter = streamed.clone();
    let endless = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = axum::body::Bytes::from(vec![b'x'; 1 << 20]);
            let stream = futures_util::stream::repeat_with(move || {
                counter.fetch_add(1 << 20, Ordering::Relaxed);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::body::Body::from_stream(stream),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, endless).await });
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    app.track(json!({"attributes": [{"external_id": "u"}]}))
        .await;
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let (status, sent) = send(
        &app,
        &sender,
        json!({"external_user_ids": ["u"], "messages": {"webhook": {"url": format!("http://{addr}/hook")}}}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
    assert_eq!(done["counts"]["failed"], 1, "{done}");
    read_little_of_an_endless_answer(&streamed).await;
}

#[tokio::test]
async fn records_that_no_longer_read_are_internal_errors_never_bad_requests_or_defaults() {
    let app = spawn_app().await;
    let key = app.create_key("default", None).await;
    let (status, created) = app
        .admin_post(
            &format!("{WS}/campaigns"),
            json!({"name": "kept", "messages": {"webhook": {"url": "https://example.com/h"}}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("a campaign id").to_string();
    // The stored definition is damaged (a field of the wrong type), as a bad restore would.
    let ws = app
        .store
        .workspace("default")
        .expect("reads")
        .expect("the default workspace");
    app.store
        .put_object(ws.id, "campaign", id.clone(), json!({"id": id, "name": 7}))
        .await
        .expect("writes");
    let (status, body) = send(
        &app,
        &key,
        json!({"campaign_id": id, "broadcast": true,
               "messages": {"webhook": {"url": "https://example.com/h"}}}),
    )
    .await;
    assert_eq!(status, 500, "a damaged campaign is eddy's failure: {body}");
    let (status, body) = app.admin_get(&format!("{WS}/campaigns/{id}")).await;
    assert_eq!(status, 500, "{body}");
    let (status, body) = app.admin_get(&format!("{WS}/campaigns")).await;
    assert_eq!(status, 500, "the list does not skip it silently: {body}");

    // Email settings whose port no longer fits a port are not read as another port.
    app.store
        .put_object(
            ws.id,
            "email",
            "settings".into(),
            json!({"host": "127.0.0.1", "port": 65_561, "implicit_tls": false, "starttls": false}),
        )
        .await
        .expect("writes");
    let (status, body) = app.admin_get(&format!("{WS}/email")).await;
    assert_eq!(status, 500, "{body}");
}

/// After a moment for any reading to go on, eddy has read far less of an endless answer than
/// it would hold if it read without a cap.
async fn read_little_of_an_endless_answer(streamed: &std::sync::atomic::AtomicU64) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read = streamed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read < 64 << 20,
        "eddy read {} MiB of an endless answer",
        read >> 20
    );
}

#[tokio::test]
async fn a_header_rendered_with_a_line_break_aborts_its_recipient_and_starts_no_header() {
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [
        {"external_id": "hostile", "tag": "a\r\nX-Injected: yes"},
        {"external_id": "plain", "tag": "b"}
    ]}))
    .await;
    let sender = app.create_key("default", Some(&["messages.send"])).await;
    let (status, sent) = send(
        &app,
        &sender,
        json!({"external_user_ids": ["hostile", "plain"], "messages": {"webhook": {
            "url": receiver.url("/h"), "body": "x",
            "request_headers": {"X-Tag": "{{custom_attribute.${tag}}}"}}}}),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let done = ended(&app, sent["dispatch_id"].as_str().expect("id")).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    assert_eq!(done["counts"]["aborted"], 1, "{done}");
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        1,
        "only the plain recipient's request arrives"
    );
    assert_eq!(
        requests[0].headers.get("x-tag").map(String::as_str),
        Some("b")
    );
    assert!(!requests[0].headers.contains_key("x-injected"));
    let (status, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=hostile"))
        .await;
    assert_eq!(status, 200);
    let shown = history.to_string();
    assert!(shown.contains("aborted"), "{shown}");
    assert!(shown.contains("a value a header cannot hold"), "{shown}");
}
