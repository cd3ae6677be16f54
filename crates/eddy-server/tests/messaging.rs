//! Sending through Braze's endpoints, end to end: campaigns defined in the admin API, sends
//! that render Liquid per recipient into a real HTTP receiver and a real SMTP server (aiosmtpd),
//! retries and failures, control groups, aborts, subscriptions and address lists, schedules,
//! tracking links, and the Currents events every outcome writes.

use std::time::Duration;

use eddy_testkit::{SmtpServer, TestApp, WebhookReceiver};
use serde_json::{Value, json};

const WS: &str = "/eddy/v1/workspaces/default";

/// A server whose default workspace may reach the receivers the tests start on loopback.
async fn spawn_app() -> TestApp {
    let app = eddy_testkit::spawn_app().await;
    app.allow_loopback("default").await;
    app
}

/// Waits until a dispatch is done; answers its status.
async fn finished(app: &TestApp, dispatch_id: &str) -> Value {
    for _ in 0..500 {
        let (status, body) = app
            .admin_get(&format!("{WS}/dispatches/{dispatch_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        if body["state"] == "done" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("dispatch {dispatch_id} did not finish");
}

async fn campaign(app: &TestApp, body: Value) -> String {
    let (status, created) = app.admin_post(&format!("{WS}/campaigns"), body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn a_webhook_campaign_reaches_each_recipient_rendered_for_them() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let (status, _) = app
        .track(json!({"attributes": [
            {"external_id": "ada", "first_name": "Ada", "time_zone": "Europe/London"},
            {"external_id": "bob", "first_name": "Bob"}]}))
        .await;
    assert_eq!(status, 201);
    let campaign_id = campaign(
        &app,
        json!({"name": "Welcome", "tags": ["onboarding"], "messages": {"webhook": {
            "url": receiver.url("/hook/{{${user_id}}}"),
            "request_headers": {"Content-Type": "application/json", "X-Campaign": "{{campaign.${name}}}"},
            "body": "{\"hi\": \"{{${first_name}}}\", \"coupon\": \"{{api_trigger_properties.${coupon}}}\"}"}}}),
    )
    .await;
    let (status, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": campaign_id, "trigger_properties": {"coupon": "ALL10"},
                   "recipients": [
                       {"external_user_id": "ada", "trigger_properties": {"coupon": "ADA20"}},
                       {"external_user_id": "bob"},
                       {"external_user_id": "nobody"}]}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["message"], "success");
    let dispatch_id = sent["dispatch_id"].as_str().unwrap().to_string();
    let done = finished(&app, &dispatch_id).await;
    assert_eq!(done["counts"]["sent"], 2, "{done}");
    let mut got: Vec<(String, String, String)> = receiver
        .requests()
        .into_iter()
        .map(|r| (r.path, r.body, r.headers["x-campaign"].clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "/hook/ada".into(),
                r#"{"hi": "Ada", "coupon": "ADA20"}"#.into(),
                "Welcome".into()
            ),
            (
                "/hook/bob".into(),
                r#"{"hi": "Bob", "coupon": "ALL10"}"#.into(),
                "Welcome".into()
            ),
        ]
    );
    let sends = app.outbox_events("users.messages.webhook.Send");
    assert_eq!(sends.len(), 2);
    for send in &sends {
        assert_eq!(send["campaign_id"], campaign_id.as_str());
        assert_eq!(send["campaign_name"], "Welcome");
        assert_eq!(send["dispatch_id"], dispatch_id.as_str());
        assert_eq!(
            send["message_variation_id"],
            format!("{campaign_id}-webhook")
        );
    }
    let ada = sends
        .iter()
        .find(|s| s["external_user_id"] == "ada")
        .unwrap();
    assert_eq!(ada["timezone"], "Europe/London");
    // The user's history says what happened.
    let (status, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=ada"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["messages"][0]["dispatch_id"], dispatch_id.as_str());
    assert_eq!(
        history["messages"][0]["channels"]["webhook"]["status"],
        "sent"
    );
    // Braze's campaign endpoints answer for it.
    let (status, list) = app.get("/campaigns/list").await;
    assert_eq!(status, 200);
    assert_eq!(list["campaigns"][0]["id"], campaign_id.as_str());
    assert_eq!(list["campaigns"][0]["is_api_campaign"], true);
    assert_eq!(list["campaigns"][0]["tags"], json!(["onboarding"]));
    let (status, details) = app
        .get(&format!("/campaigns/details?campaign_id={campaign_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(details["name"], "Welcome");
    assert_eq!(details["channels"], json!(["webhook"]));
}

#[tokio::test]
async fn webhooks_retry_5xx_and_fail_on_4xx_and_liquid_can_abort() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    receiver.fail("/flaky", 2, 503);
    receiver.fail("/gone", 100, 404);
    for id in ["u1", "u2", "u3"] {
        app.track(json!({"attributes": [{"external_id": id, "route": if id == "u1" { "flaky" } else if id == "u2" { "gone" } else { "none" }}]}))
            .await;
    }
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["u1", "u2", "u3"], "messages": {"webhook": {
                "url": receiver.url("/{{custom_attribute.${route}}}"),
                "body": "{% if custom_attribute.${route} == 'none' %}{% abort_message('no route') %}{% endif %}x"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    assert_eq!(done["counts"]["failed"], 1, "{done}");
    assert_eq!(done["counts"]["aborted"], 1, "{done}");
    let retries = app.outbox_events("users.messages.webhook.Retry");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert_eq!(retries[0]["retry_type"], "http_503");
    let failures = app.outbox_events("users.messages.webhook.Failure");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["http_status_code"], 404);
    assert_eq!(failures[0]["is_terminal"], true);
    assert_eq!(failures[0]["url_path"], "/gone");
    assert_eq!(
        receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/gone")
            .count(),
        1
    );
    let aborts = app.outbox_events("users.messages.webhook.Abort");
    assert_eq!(aborts.len(), 1);
    assert_eq!(aborts[0]["abort_log"], "no route");
    assert_eq!(aborts[0]["external_user_id"], "u3");
    let metrics = app.metrics().await;
    for line in [
        "eddy_messages_sent_total 1",
        "eddy_messages_failed_total 1",
        "eddy_messages_aborted_total 1",
        "eddy_messages_retries_total 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn broadcasts_go_to_a_segment_or_audience_and_bad_audiences_send_nothing() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let mut users = Vec::new();
    for i in 0..60 {
        users.push(json!({"external_id": format!("s{i}"), "tier": if i % 3 == 0 { "gold" } else { "basic" }}));
    }
    app.track(json!({"attributes": users})).await;
    let (status, segment) = app
        .admin_post(&format!("{WS}/segments"), json!({"name": "Gold", "filter": {"attribute": "tier", "op": "equals", "value": "gold"}}))
        .await;
    assert_eq!(status, 201, "{segment}");
    let hook = json!({"webhook": {"url": receiver.url("/seg/{{${user_id}}}")}});
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"segment_id": segment["id"], "broadcast": true, "messages": hook}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 20);
    assert_eq!(done["audience_size"], 20);
    // A connected audience, compiled onto the same filters.
    let (status, sent) = app
        .post("/messages/send", json!({"broadcast": true, "messages": hook,
            "audience": {"AND": [{"custom_attribute": {"custom_attribute_name": "tier", "comparison": "not_equal", "value": "gold"}}]}}))
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 40);
    assert_eq!(receiver.count(), 60);
    // Unknown segments and campaigns, unknown filters, no recipients: 400 and nothing sent.
    for body in [
        json!({"segment_id": "nope", "messages": hook}),
        json!({"external_user_ids": ["s1"], "campaign_id": "nope", "messages": hook}),
        json!({"broadcast": true, "audience": {"last_used_app": {"comparison": "after", "value": "2020-01-01"}}, "messages": hook}),
        json!({"messages": hook}),
        json!({"broadcast": true, "external_user_ids": ["s1"], "messages": hook}),
        json!({"external_user_ids": ["s1"], "messages": {"sms": {}}}),
        json!({"external_user_ids": ["s1"], "messages": {"email": {"from": "a@b.co", "subject": "x", "body": "x"}}}),
    ] {
        let (status, answer) = app.post("/messages/send", body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, _) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": "nope", "broadcast": true}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(receiver.count(), 60);
}

#[tokio::test]
async fn control_groups_get_nothing_and_are_enrolled() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let users: Vec<Value> = (0..200)
        .map(|i| json!({"external_id": format!("c{i}")}))
        .collect();
    app.track(json!({"attributes": users[..75]})).await;
    app.track(json!({"attributes": users[75..150]})).await;
    app.track(json!({"attributes": users[150..]})).await;
    let id = campaign(
        &app,
        json!({"name": "Held out", "control_group_percent": 30,
        "messages": {"webhook": {"url": receiver.url("/c")}}}),
    )
    .await;
    let (status, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "broadcast": true}),
        )
        .await;
    assert_eq!(status, 201);
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    let control = done["counts"]["control"].as_u64().unwrap();
    assert!((30..90).contains(&control), "{done}");
    assert_eq!(done["counts"]["sent"].as_u64().unwrap() + control, 200);
    assert_eq!(receiver.count() + control, 200);
    assert_eq!(
        app.outbox_events("users.campaigns.EnrollInControl").len() as u64,
        control
    );
}

#[tokio::test]
async fn transactional_sends_are_deduplicated_by_external_send_id() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let id = campaign(
        &app,
        json!({"name": "Receipt", "messages": {"webhook": {"url": receiver.url("/r"),
        "body": "{{api_trigger_properties.${order}}}"}}}),
    )
    .await;
    let path = format!("/transactional/v1/campaigns/{id}/send");
    let body = json!({"external_send_id": "order-1", "trigger_properties": {"order": "A1"},
        "recipient": {"external_user_id": "buyer", "send_to_existing_only": false, "attributes": {"first_name": "B"}}});
    let (status, first) = app.post(&path, body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["metadata"]["external_send_id"], "order-1");
    let (status, again) = app.post(&path, body).await;
    assert_eq!(status, 201);
    assert_eq!(again["dispatch_id"], first["dispatch_id"]);
    finished(&app, first["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(receiver.requests()[0].body, "A1");
    // The recipient was created from its attributes before the send.
    assert!(app.user("buyer").await.is_some());
    let (status, _) = app
        .post(
            &path,
            json!({"external_send_id": "bad id!", "recipient": {"external_user_id": "buyer"}}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn schedules_wait_can_be_listed_changed_and_deleted() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "s"}]}))
        .await;
    let hook = json!({"webhook": {"url": receiver.url("/s")}});
    let later = eddy_model::time::format_iso(eddy_model::time::now_ms() + 3_600_000);
    let (status, created) = app
        .post(
            "/messages/schedule/create",
            json!({"external_user_ids": ["s"], "messages": hook, "schedule": {"time": later}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let schedule_id = created["schedule_id"].as_str().unwrap().to_string();
    let end = eddy_model::time::format_iso(eddy_model::time::now_ms() + 7_200_000);
    let (status, listed) = app
        .get(&format!("/messages/scheduled_broadcasts?end_time={end}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["scheduled_broadcasts"][0]["dispatch_id"],
        created["dispatch_id"]
    );
    // Moved to now, it is sent.
    let now = eddy_model::time::format_iso(eddy_model::time::now_ms());
    let (status, _) = app
        .post(
            "/messages/schedule/update",
            json!({"schedule_id": schedule_id, "schedule": {"time": now}}),
        )
        .await;
    assert_eq!(status, 201);
    finished(&app, created["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(receiver.count(), 1);
    // A deleted schedule sends nothing; it can no longer be changed.
    let (_, created) = app
        .post(
            "/messages/schedule/create",
            json!({"external_user_ids": ["s"], "messages": hook, "schedule": {"time": later}}),
        )
        .await;
    let schedule_id = created["schedule_id"].as_str().unwrap();
    let (status, _) = app
        .post(
            "/messages/schedule/delete",
            json!({"schedule_id": schedule_id}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post(
            "/messages/schedule/update",
            json!({"schedule_id": schedule_id, "schedule": {"time": now}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app
        .post(
            "/messages/schedule/delete",
            json!({"schedule_id": "unknown"}),
        )
        .await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn subscription_groups_and_email_lists_answer_as_braze() {
    let app = spawn_app().await;
    let (status, _) = app
        .admin_put(
            &format!("{WS}/subscription-groups/news"),
            json!({"name": "Newsletter"}),
        )
        .await;
    assert_eq!(status, 200);
    app.track(json!({"attributes": [{"external_id": "a", "email": "a@x.test"}, {"external_id": "b", "email": "b@x.test"}]})).await;
    let (status, body) = app
        .post("/subscription/status/set", json!({"subscription_group_id": "news", "subscription_state": "subscribed", "external_id": ["a"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post("/v2/subscription/status/set", json!({"subscription_groups": [{"subscription_group_id": "news", "subscription_state": "unsubscribed", "emails": ["b@x.test"]}]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, got) = app
        .get("/subscription/status/get?subscription_group_id=news&external_id[]=a&external_id[]=zz")
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["status"], json!({"a": "Subscribed", "zz": "Unknown"}));
    let (_, got) = app
        .get("/subscription/status/get?subscription_group_id=news&email=b@x.test")
        .await;
    assert_eq!(got["status"]["b@x.test"], "Unsubscribed");
    let (status, users) = app.get("/subscription/user/status?external_id=a").await;
    assert_eq!(status, 200);
    assert_eq!(
        users["users"][0]["subscription_groups"][0]["status"],
        "Subscribed"
    );
    assert_eq!(
        users["users"][0]["subscription_groups"][0]["channel"],
        "Email"
    );
    let changes = app.outbox_events("users.behaviors.subscriptiongroup.StateChange");
    assert_eq!(changes.len(), 2, "{changes:?}");
    // Unknown groups and mixed identifiers are refused.
    let (status, _) = app.post("/subscription/status/set", json!({"subscription_group_id": "nope", "subscription_state": "subscribed", "external_id": "a"})).await;
    assert_eq!(status, 400);
    let (status, _) = app.post("/subscription/status/set", json!({"subscription_group_id": "news", "subscription_state": "subscribed", "email": "a@x.test", "phone": "+15555550100"})).await;
    assert_eq!(status, 400);
    // Global email state, for users and for an address no user has yet.
    let (status, _) = app
        .post(
            "/email/status",
            json!({"email": ["a@x.test", "later@x.test"], "subscription_state": "unsubscribed"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        app.user("a").await.unwrap()["email_subscribe"],
        "unsubscribed"
    );
    let (status, list) = app.get("/email/unsubscribes?email=later@x.test").await;
    assert_eq!(status, 200);
    assert_eq!(list["emails"][0]["email"], "later@x.test");
    let (status, _) = app.get("/email/unsubscribes").await;
    assert_eq!(status, 400);
    let (status, _) = app
        .post("/email/blocklist", json!({"email": ["b@x.test"]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        app.user("b").await.unwrap()["email_subscribe"],
        "unsubscribed"
    );
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_with_bounces_tracking_and_unsubscribe() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let app = spawn_app().await;
    let (status, body) = app
        .admin_put(&format!("{WS}/email"), json!({"smtp_url": smtp.url()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, shown) = app.admin_get(&format!("{WS}/email")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["smtp_url"], smtp.url() + "");
    app.admin_put(
        &format!("{WS}/subscription-groups/promo"),
        json!({"name": "Promotions"}),
    )
    .await;
    let people = [
        ("ok", "ok@x.test", "subscribed", true),
        ("optin", "optin@x.test", "opted_in", true),
        ("unsub", "unsub@x.test", "unsubscribed", true),
        ("hard", "bounce@x.test", "subscribed", true),
        ("soft", "soft@x.test", "subscribed", true),
        ("outsider", "outsider@x.test", "subscribed", false),
    ];
    let mut attributes = Vec::new();
    for (id, email, state, member) in people {
        let mut a =
            json!({"external_id": id, "email": email, "first_name": id, "email_subscribe": state});
        if member {
            a["subscription_groups"] =
                json!([{"subscription_group_id": "promo", "subscription_state": "subscribed"}]);
        }
        attributes.push(a);
    }
    let (status, body) = app.track(json!({"attributes": attributes})).await;
    assert_eq!(status, 201, "{body}");
    let id = campaign(&app, json!({"name": "Sale", "subscription_group_id": "promo", "messages": {"email": {
        "from": "Shop Team <news@shop.test>", "subject": "Hello {{${first_name}}} — 20% off",
        "preheader": "Only today",
        "body": "<html><body><p>Hi {{${first_name}}}, <a href=\"https://shop.test/sale?a=1&amp;b=2\">shop now</a>.</p><p><a href=\"${set_user_to_unsubscribed_url}\">Unsubscribe</a></p></body></html>"}}})).await;
    let (status, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "broadcast": true}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    // ok and optin delivered; unsub and outsider skipped; bounce and soft failed.
    assert_eq!(done["counts"]["sent"], 2, "{done}");
    assert_eq!(done["counts"]["skipped"], 2, "{done}");
    assert_eq!(done["counts"]["failed"], 2, "{done}");
    let delivered = smtp.delivered();
    let mut to: Vec<&str> = delivered.iter().map(|d| d.to[0].as_str()).collect();
    to.sort();
    assert_eq!(to, vec!["ok@x.test", "optin@x.test"]);
    let mail = delivered.iter().find(|d| d.to[0] == "ok@x.test").unwrap();
    assert_eq!(mail.from, "news@shop.test");
    assert!(
        mail.data.contains("From: Shop Team <news@shop.test>"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("Subject: =?UTF-8?B?"), "{}", mail.data);
    assert!(
        mail.data
            .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    );
    assert!(mail.data.contains("multipart/alternative"));
    let html = mail.part("text/html");
    let text = mail.part("text/plain");
    assert!(html.contains("Only today"), "{html}");
    assert!(text.contains("Hi ok, shop now"), "{text}");
    assert!(
        !html.contains("https://shop.test/sale"),
        "links are rewritten: {html}"
    );
    // Every outcome is in Currents.
    assert_eq!(app.outbox_events("users.messages.email.Send").len(), 4);
    assert_eq!(app.outbox_events("users.messages.email.Delivery").len(), 2);
    let bounces = app.outbox_events("users.messages.email.Bounce");
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0]["email_address"], "bounce@x.test");
    assert!(
        bounces[0]["bounce_reason"]
            .as_str()
            .unwrap()
            .starts_with("550")
    );
    assert_eq!(
        app.outbox_events("users.messages.email.SoftBounce").len(),
        1
    );
    assert_eq!(app.outbox_events("users.messages.email.Deferral").len(), 5);
    assert_eq!(app.outbox_events("users.messages.email.Retry").len(), 4);
    let (status, bounced) = app.get("/email/hard_bounces?email=bounce@x.test").await;
    assert_eq!(status, 200);
    assert_eq!(bounced["emails"][0]["email"], "bounce@x.test");
    // The open pixel, the click redirect and the unsubscribe link all work.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pixel = attribute_after(&html, "<img src=\"");
    let r = no_redirect.get(&pixel).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    assert_eq!(app.outbox_events("users.messages.email.Open").len(), 1);
    let hrefs = hrefs(&html);
    let click = no_redirect.get(&hrefs[0]).send().await.unwrap();
    assert_eq!(click.status(), 302);
    assert_eq!(
        click.headers()["location"],
        "https://shop.test/sale?a=1&b=2"
    );
    let clicks = app.outbox_events("users.messages.email.Click");
    assert_eq!(clicks[0]["url"], "https://shop.test/sale?a=1&b=2");
    let tampered = hrefs[0].replace("/eddy/t/c/", "/eddy/t/c/x");
    assert_eq!(
        no_redirect.get(&tampered).send().await.unwrap().status(),
        404
    );
    let unsub = no_redirect.get(&hrefs[1]).send().await.unwrap();
    assert_eq!(unsub.status(), 200);
    assert_eq!(
        app.user("ok").await.unwrap()["email_subscribe"],
        "unsubscribed"
    );
    assert_eq!(
        app.outbox_events("users.messages.email.Unsubscribe").len(),
        1
    );
    let (_, list) = app.get("/email/unsubscribes?email=ok@x.test").await;
    assert_eq!(list["emails"][0]["email"], "ok@x.test");
    // A second send skips the hard-bounced and the newly unsubscribed.
    let (_, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "broadcast": true}),
        )
        .await;
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    // A state set for an address before any user had it holds for the user who gets it.
    let (status, _) = app
        .post(
            "/email/status",
            json!({"email": "late@x.test", "subscription_state": "unsubscribed"}),
        )
        .await;
    assert_eq!(status, 201);
    app.track(json!({"attributes": [{"external_id": "late", "email": "late@x.test",
        "subscription_groups": [{"subscription_group_id": "promo", "subscription_state": "subscribed"}]}]}))
        .await;
    let (_, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "recipients": [{"external_user_id": "late"}]}),
        )
        .await;
    finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    let (_, late) = app
        .admin_get(&format!("{WS}/users/messages?external_id=late"))
        .await;
    assert_eq!(
        late["messages"][0]["channels"]["email"]["reason"], "email state is unsubscribed",
        "{late}"
    );
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=hard"))
        .await;
    assert_eq!(
        history["messages"][0]["channels"]["email"]["status"],
        "skipped"
    );
    assert_eq!(
        history["messages"][1]["channels"]["email"]["status"],
        "bounced"
    );
    assert_eq!(
        history["messages"][1]["channels"]["email"]["subject"],
        "Hello hard — 20% off"
    );
}

/// The decoded body of a MIME part.
fn attribute_after(html: &str, prefix: &str) -> String {
    let start = html.find(prefix).expect("attribute") + prefix.len();
    html[start..].split('"').next().unwrap().to_string()
}

fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().replace("&amp;", "&"))
        .collect()
}

#[tokio::test]
async fn a_conversion_event_after_a_send_is_recorded_once() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "buyer"}, {"external_id": "other"}]}))
        .await;
    let id = campaign(&app, json!({"name": "Upsell", "messages": {"webhook": {"url": receiver.url("/u")}},
        "conversion_events": [{"type": "custom_event", "custom_event_name": "upgraded", "window_seconds": 3600},
                              {"type": "purchase"}]})).await;
    let (_, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "recipients": [{"external_user_id": "buyer"}]}),
        )
        .await;
    let dispatch_id = sent["dispatch_id"].as_str().unwrap().to_string();
    finished(&app, &dispatch_id).await;
    let now = eddy_model::time::format_iso(eddy_model::time::now_ms() + 1000);
    for (who, name) in [
        ("buyer", "viewed"),
        ("other", "upgraded"),
        ("buyer", "upgraded"),
        ("buyer", "upgraded"),
    ] {
        let (status, _) = app
            .track(json!({"events": [{"external_id": who, "name": name, "time": now}]}))
            .await;
        assert_eq!(status, 201);
    }
    let conversions = app.outbox_events("users.campaigns.Conversion");
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=buyer"))
        .await;
    assert_eq!(conversions.len(), 1, "{conversions:?} {history}");
    assert_eq!(conversions[0]["external_user_id"], "buyer");
    assert_eq!(conversions[0]["campaign_id"], id.as_str());
    assert_eq!(conversions[0]["conversion_behavior_index"], 0);
    assert_eq!(
        conversions[0]["message_variation_id"],
        format!("{id}-webhook")
    );
    assert!(
        !conversions[0]
            .as_object()
            .unwrap()
            .contains_key("dispatch_id")
    );
}

#[tokio::test]
async fn message_events_reach_s3_as_avro_and_amplitude_with_braze_names() {
    use eddy_testkit::{AmplitudeEmulator, TestS3, read_avro};
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let s3 = TestS3::start().await;
    let amp = AmplitudeEmulator::start("amp-key").await;
    let (status, body) = app
        .admin_post(
            &format!("{WS}/currents"),
            json!({"name": "files", "type": "s3", "bucket": "currents-bucket",
            "endpoint": s3.endpoint, "access_key_id": "test", "secret_access_key": "test"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .admin_post(
            &format!("{WS}/currents"),
            json!({"name": "amp", "type": "amplitude", "api_key": "amp-key",
            "endpoint": amp.url, "throttle_seconds": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    app.track(json!({"attributes": [{"external_id": "m1"}, {"external_id": "m2", "skip": true}]}))
        .await;
    let id = campaign(&app, json!({"name": "Ping", "control_group_percent": 0, "messages": {"webhook": {"url": receiver.url("/p"),
        "body": "{% if custom_attribute.${skip} %}{% abort_message('skipped') %}{% endif %}ok"}}})).await;
    let (_, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "broadcast": true, "send_id": "s-1"}),
        )
        .await;
    let dispatch_id = sent["dispatch_id"].as_str().expect("dispatch").to_string();
    finished(&app, &dispatch_id).await;
    for name in ["files", "amp"] {
        let (status, body) = app
            .admin_post(&format!("{WS}/currents/{name}/flush"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let key = s3
        .keys()
        .into_iter()
        .find(|k| k.contains("/event_type=users.messages.webhook.Send/"))
        .expect("a webhook Send file");
    let records = read_avro(&s3.get(&key).unwrap());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["campaign_id"], id.as_str());
    assert_eq!(records[0]["dispatch_id"], dispatch_id.as_str());
    assert_eq!(records[0]["send_id"], "s-1");
    assert_eq!(records[0]["external_user_id"], "m1");
    assert!(
        s3.keys()
            .iter()
            .any(|k| k.contains("/event_type=users.messages.webhook.Abort/"))
    );
    let mut names = Vec::new();
    for _ in 0..100 {
        names = amp
            .ingested()
            .into_values()
            .map(|e| e["event_type"].as_str().unwrap_or_default().to_string())
            .collect();
        if names.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.admin_post(&format!("{WS}/currents/amp/flush"), json!({}))
            .await;
    }
    names.sort();
    assert_eq!(
        names,
        vec!["[Appboy] Webhook Abort", "[Appboy] Webhook Send"]
    );
    let send = amp
        .ingested()
        .into_values()
        .find(|e| e["event_type"] == "[Appboy] Webhook Send")
        .unwrap();
    assert_eq!(send["user_id"], "m1");
    assert_eq!(send["event_properties"]["campaign_id"], id.as_str());
}

#[tokio::test]
async fn a_schedule_survives_a_restart_and_is_sent_once_due() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "later"}]}))
        .await;
    let soon = eddy_model::time::format_iso(eddy_model::time::now_ms() + 1500);
    let (status, created) = app
        .post(
            "/messages/schedule/create",
            json!({"external_user_ids": ["later"],
            "messages": {"webhook": {"url": receiver.url("/later")}}, "schedule": {"time": soon}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let dir = app.stop().await;
    assert_eq!(receiver.count(), 0);
    let app = eddy_testkit::start(dir, |_| {}).await;
    let done = finished(&app, created["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 1);
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn local_time_sends_wait_for_each_users_zone() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [
        {"external_id": "utc", "time_zone": "Etc/UTC"},
        {"external_id": "ahead", "time_zone": "Pacific/Kiritimati"},
        {"external_id": "behind", "time_zone": "America/Los_Angeles"}]}))
        .await;
    // Now, as a wall-clock time: already past in UTC and UTC+14, hours away in Los Angeles.
    let wall = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let (status, created) = app
        .post(
            "/messages/schedule/create",
            json!({"external_user_ids": ["utc", "ahead", "behind"],
            "messages": {"webhook": {"url": receiver.url("/tz/{{${user_id}}}")}},
            "schedule": {"time": wall, "in_local_time": true}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!(
        "{WS}/dispatches/{}",
        created["dispatch_id"].as_str().unwrap()
    );
    for _ in 0..500 {
        if receiver.count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut paths: Vec<String> = receiver.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, vec!["/tz/ahead", "/tz/utc"]);
    let (_, status) = app.admin_get(&path).await;
    assert_eq!(
        status["state"], "sending",
        "the Los Angeles user is still to come: {status}"
    );
    assert_eq!(status["in_local_time"], true);
}

#[tokio::test]
async fn messages_per_minute_spaces_deliveries() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    let users: Vec<Value> = (0..4)
        .map(|i| json!({"external_id": format!("r{i}")}))
        .collect();
    app.track(json!({"attributes": users})).await;
    let id = campaign(
        &app,
        json!({"name": "Slow", "messages_per_minute": 300,
        "messages": {"webhook": {"url": receiver.url("/slow")}}}),
    )
    .await;
    let started = std::time::Instant::now();
    let (_, sent) = app
        .post(
            "/campaigns/trigger/send",
            json!({"campaign_id": id, "broadcast": true}),
        )
        .await;
    finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(receiver.count(), 4);
    // 300 a minute is one every 200 ms: the fourth goes out no sooner than 600 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_recipient_ever_receives_error_text() {
    let app = spawn_app().await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "r", "first_name": "R"}]}))
        .await;
    // A host eddy refuses renders as an unavailable URL: empty, and the message goes out.
    app.admin_put(
        &format!("{WS}/connected-content"),
        json!({"allowed_hosts": ["127.0.0.1"]}),
    )
    .await;
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["r"], "messages": {"webhook": {"url": receiver.url("/cc"),
                "body": "[{% connected_content http://localhost:9/x %}] hi {{${first_name}}}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["sent"], 1, "{done}");
    let body = receiver.requests()[0].body.clone();
    assert_eq!(body, "[] hi R");
    // A Liquid error aborts that recipient, with the error as the reason.
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["r"], "messages": {"webhook": {"url": receiver.url("/div"),
                "body": "total {{ 10 | divided_by: 0 }}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let done = finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    assert_eq!(done["counts"]["aborted"], 1, "{done}");
    assert_eq!(receiver.count(), 1, "nothing more was delivered");
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=r"))
        .await;
    assert!(history.to_string().contains("divided by 0"), "{history}");
    let aborts = app.outbox_events("users.messages.webhook.Abort");
    assert_eq!(aborts.len(), 1);
    assert_eq!(aborts[0]["abort_type"], "liquid_error");
    // The preview keeps Liquid's inline text and lists the error.
    let (status, preview) = app
        .admin_post(
            &format!("{WS}/liquid/render"),
            json!({"template": "total {{ 10 | divided_by: 0 }}"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(preview["output"], "total Liquid error: divided by 0");
    assert_eq!(preview["errors"], json!(["divided by 0"]));
}

#[tokio::test]
async fn every_form_of_brazes_subscription_links_works() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let app = spawn_app().await;
    app.admin_put(&format!("{WS}/email"), json!({"smtp_url": smtp.url()}))
        .await;
    let forms = [
        // As Braze's docs and templates write them.
        (
            "braces",
            "<a href=\"{{${set_user_to_unsubscribed_url}}}\">Unsubscribe</a>",
            "unsubscribed",
        ),
        (
            "bare",
            "<a href=\"${set_user_to_unsubscribed_url}\">Unsubscribe</a>",
            "unsubscribed",
        ),
        (
            "opted",
            "<a href=\"{{${set_user_to_opted_in_url}}}\">Opt in</a>",
            "opted_in",
        ),
        (
            "filtered",
            "<a href=\"{{${set_user_to_subscribed_url} | strip}}\">Resubscribe</a>",
            "subscribed",
        ),
    ];
    for (id, _, _) in &forms {
        app.track(
            json!({"attributes": [{"external_id": id, "email": format!("{id}@x.test"),
            "email_subscribe": if *id == "filtered" { "unsubscribed" } else { "subscribed" }}]}),
        )
        .await;
    }
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (id, link, state) in forms {
        let (status, sent) = app
            .post(
                "/messages/send",
                json!({"external_user_ids": [id], "recipient_subscription_state": "all",
                    "messages": {"email": {"from": "Shop <news@shop.test>", "subject": "s",
                    "body": format!("<p>News</p>{link}"),
                    "plaintext_body": "News. Unsubscribe: {{${set_user_to_unsubscribed_url}}}"}}}),
            )
            .await;
        assert_eq!(status, 201, "{sent}");
        finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
        let delivered = smtp.delivered();
        let mail = delivered
            .iter()
            .find(|d| d.to[0] == format!("{id}@x.test"))
            .expect("delivered");
        let html = mail.part("text/html");
        let href = hrefs(&html)
            .into_iter()
            .find(|h| h.contains("/eddy/t/s/"))
            .unwrap_or_else(|| panic!("{id}: no subscription link in {html}"));
        assert!(!mail.part("text/plain").contains("Unsubscribe: \n"), "{id}");
        assert!(mail.part("text/plain").contains("/eddy/t/s/"), "{id}");
        let followed = no_redirect.get(&href).send().await.unwrap();
        assert_eq!(followed.status(), 200, "{id}");
        assert_eq!(
            app.user(id).await.unwrap()["email_subscribe"],
            state,
            "{id}: {href}"
        );
    }
}

#[tokio::test]
async fn a_send_in_flight_is_cancelled_within_two_chunks_and_never_resumed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const USERS: usize = 3_000;
    const CHUNK: u64 = 100;
    // A receiver that takes its time, counting what reached it.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let slow = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            counter.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let app = eddy_testkit::spawn_with(|config| {
        config.messaging.chunk = CHUNK as usize;
        config.messaging.concurrency = 20;
    })
    .await;
    app.allow_loopback("default").await;
    let ids: Vec<String> = (0..USERS).map(|i| format!("c{i}")).collect();
    for chunk in ids.chunks(75) {
        let attributes: Vec<Value> = chunk.iter().map(|id| json!({"external_id": id})).collect();
        let (status, _) = app.track(json!({"attributes": attributes})).await;
        assert_eq!(status, 201);
    }
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"broadcast": true, "messages": {"webhook": {"url": format!("{receiver}/{{{{${{user_id}}}}}}")}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let id = sent["dispatch_id"].as_str().unwrap().to_string();
    while received.load(Ordering::SeqCst) < CHUNK {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_request = received.load(Ordering::SeqCst);
    let (status, cancelled) = app
        .admin_post(&format!("{WS}/dispatches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let counts = &cancelled["counts"];
    let sent = counts["sent"].as_u64().unwrap();
    assert!(
        sent <= at_request + 2 * CHUNK,
        "{sent} sent, {at_request} when cancelled"
    );
    assert!(sent < USERS as u64);
    assert_eq!(
        counts["cancelled"].as_u64().unwrap() + sent,
        USERS as u64,
        "{cancelled}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = received.load(Ordering::SeqCst);
    assert_eq!(after, sent, "nothing arrives after the cancel answered");
    // Cancelling again answers the same; a finished send has nothing to cancel.
    let (status, again) = app
        .admin_post(&format!("{WS}/dispatches/{id}/cancel"), json!({}))
        .await;
    assert_eq!((status, &again["state"]), (200, &json!("cancelled")));
    // A restart never resumes it.
    let dir = app.stop().await;
    let app = eddy_testkit::start(dir, |_| {}).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(received.load(Ordering::SeqCst), after);
    let (_, shown) = app.admin_get(&format!("{WS}/dispatches/{id}")).await;
    assert_eq!(shown["state"], "cancelled");
    app.allow_loopback("default").await;
    let (_, small) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["c1"], "messages": {"webhook": {"url": format!("{receiver}/one")}}}),
        )
        .await;
    let small_id = small["dispatch_id"].as_str().unwrap();
    finished(&app, small_id).await;
    let (status, _) = app
        .admin_post(&format!("{WS}/dispatches/{small_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn finished_sends_expire_with_their_counts_kept() {
    let app = eddy_testkit::spawn_with(|config| config.messaging.history_days = 0).await;
    app.allow_loopback("default").await;
    let receiver = WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "h1"}, {"external_id": "h2"}]}))
        .await;
    let (_, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["h1", "h2"], "messages": {"webhook": {"url": receiver.url("/h")}}}),
        )
        .await;
    let id = sent["dispatch_id"].as_str().unwrap().to_string();
    finished(&app, &id).await;
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=h1"))
        .await;
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(1));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let removed = app.engine.expire_once().await.expect("expire");
    assert_eq!(removed, 1);
    let (status, _) = app.admin_get(&format!("{WS}/dispatches/{id}")).await;
    assert_eq!(status, 404);
    let (_, history) = app
        .admin_get(&format!("{WS}/users/messages?external_id=h1"))
        .await;
    assert_eq!(
        history["messages"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );
    let ws = app.store.workspace("default").unwrap().unwrap().id;
    let totals = app
        .store
        .object(ws, eddy_messaging::kinds::HISTORY_TOTALS, "expired")
        .unwrap()
        .expect("totals");
    assert_eq!(totals["sends"], 1, "{totals}");
    assert_eq!(totals["sent"], 2, "{totals}");
}

#[tokio::test]
async fn the_workspaces_custom_footer_is_inserted_with_email_footer() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let app = spawn_app().await;
    // As Braze asks, a custom footer holds an unsubscribe link.
    let (status, body) = app
        .admin_put(
            &format!("{WS}/email"),
            json!({"smtp_url": smtp.url(), "custom_footer": "<p>Shop Inc, 1 Main St</p>"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let footer = "<p>Shop Inc, 1 Main St, for {{${first_name}}}</p><a href=\"{{${set_user_to_unsubscribed_url}}}\">Unsubscribe</a>";
    let (status, body) = app
        .admin_put(
            &format!("{WS}/email"),
            json!({"smtp_url": smtp.url(), "custom_footer": footer}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = app.admin_get(&format!("{WS}/email")).await;
    assert_eq!(shown["custom_footer"], footer);
    app.track(
        json!({"attributes": [{"external_id": "f", "email": "f@x.test", "first_name": "Flo"}]}),
    )
    .await;
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["f"], "messages": {"email": {
                "from": "Shop <news@shop.test>", "subject": "s",
                "body": "<p>News</p>{{${email_footer}}}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    finished(&app, sent["dispatch_id"].as_str().unwrap()).await;
    let delivered = smtp.delivered();
    let html = delivered[0].part("text/html");
    assert!(html.contains("Shop Inc, 1 Main St, for Flo"), "{html}");
    let unsubscribe = hrefs(&html)
        .into_iter()
        .find(|h| h.contains("/eddy/t/s/"))
        .expect("the footer's unsubscribe link");
    let followed = reqwest::get(&unsubscribe).await.unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(
        app.user("f").await.unwrap()["email_subscribe"],
        "unsubscribed"
    );
}
