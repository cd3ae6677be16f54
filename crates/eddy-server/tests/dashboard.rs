//! The dashboard over HTTP: sign-in, sessions, CSRF, that nothing under `/dashboard` answers
//! without a session, and that pages show and change what the admin API does.

use eddy_server::dashboard::api::encode;
use eddy_testkit::{TestApp, spawn_app, spawn_with};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A browser without JavaScript: a cookie, redirects not followed.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    /// The session's CSRF token, from the page's meta tag.
    fn csrf(&self) -> String {
        let start = self
            .text
            .find("name=\"csrf-token\" content=\"")
            .expect("a csrf meta tag")
            + "name=\"csrf-token\" content=\"".len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_string()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{}", app.addr),
            cookie: None,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(cookie) => request.header(COOKIE, format!("eddy_session={cookie}")),
            None => request,
        };
        let response = request.send().await.unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
        };
        let (location, set_cookie) = (header(LOCATION), header(SET_COOKIE));
        Page {
            status: response.status().as_u16(),
            location,
            set_cookie,
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&")),
        )
        .await
    }

    async fn sign_in(app: &TestApp) -> (Browser, String) {
        let mut browser = Browser::new(app);
        let page = browser
            .post("/dashboard/sign-in", &[("token", &app.admin_token)])
            .await;
        assert_eq!(page.status, 303, "{}", page.text);
        let set = page.set_cookie.expect("a session cookie");
        let value = set
            .strip_prefix("eddy_session=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        browser.cookie = Some(value.to_string());
        let csrf = browser.get("/dashboard/default").await.csrf();
        (browser, csrf)
    }
}

/// Every page and action, with sample parameters.
const GET_PAGES: &[&str] = &[
    "/dashboard/default",
    "/dashboard/default/log",
    "/dashboard/default/log/1",
    "/dashboard/default/users",
    "/dashboard/default/users?q=u1",
    "/dashboard/default/users/abc",
    "/dashboard/default/segments",
    "/dashboard/default/segments/new",
    "/dashboard/default/segments/abc",
    "/dashboard/default/cohorts",
    "/dashboard/default/currents",
    "/dashboard/default/keys",
    "/dashboard/default/templates",
    "/dashboard/default/campaigns",
    "/dashboard/default/campaigns/abc",
    "/dashboard/default/canvases",
    "/dashboard/default/canvases/abc",
    "/dashboard/default/catalogs",
    "/dashboard/default/catalogs/abc",
    "/dashboard/nope",
    "/dashboard/default/no-such-page",
];

const POST_ACTIONS: &[&str] = &[
    "/dashboard/sign-out",
    "/dashboard/default/users/abc/delete",
    "/dashboard/default/users/abc/merge",
    "/dashboard/default/segments",
    "/dashboard/default/segments/size",
    "/dashboard/default/segments/abc",
    "/dashboard/default/segments/abc/delete",
    "/dashboard/default/segments/abc/export",
    "/dashboard/default/partners/amperity/key",
    "/dashboard/default/partners/amperity/key/delete",
    "/dashboard/default/currents",
    "/dashboard/default/currents/c/flush",
    "/dashboard/default/keys",
    "/dashboard/default/keys/abc/revoke",
    "/dashboard/default/templates",
    "/dashboard/default/campaigns",
    "/dashboard/default/campaigns/abc/edit",
    "/dashboard/default/dispatches/abc/cancel",
];

#[tokio::test]
async fn nothing_under_dashboard_answers_without_a_session() {
    let app = spawn_app().await;
    app.track(json!({"attributes": [{"external_id": "u1", "secret_plan": "gold"}]}))
        .await;
    let mut browser = Browser::new(&app);
    let forged = "99999999999.00.00";
    for cookie in [None, Some("garbage"), Some(forged)] {
        browser.cookie = cookie.map(str::to_string);
        for path in GET_PAGES {
            let page = browser.get(path).await;
            assert_eq!(page.status, 303, "GET {path} with {cookie:?}");
            assert_eq!(page.location.as_deref(), Some("/dashboard/sign-in"));
            assert!(
                !page.text.contains("gold") && !page.text.contains("u1"),
                "{path}"
            );
        }
        for path in POST_ACTIONS {
            let page = browser.post(path, &[("name", "x")]).await;
            assert_eq!(page.status, 303, "POST {path} with {cookie:?}");
        }
    }
    // The admin token as a bearer, or a REST key, is not a session either.
    for token in [&app.admin_token, &app.key] {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(app.url("/dashboard/default/users?q=u1"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
    }
    // Nothing was changed by the refused posts: the key list still holds the test's key only.
    let (_, keys) = app.admin_get("/eddy/v1/workspaces/default/api-keys").await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1);
    // The sign-in page and the assets are public.
    browser.cookie = None;
    let page = browser.get("/dashboard/sign-in").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("type=\"password\""));
    assert_eq!(browser.get("/dashboard/assets/style.css").await.status, 200);
}

#[tokio::test]
async fn sign_in_gives_a_strict_http_only_cookie_and_sign_out_ends_it() {
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let page = browser.get("/dashboard").await;
    assert_eq!(page.location.as_deref(), Some("/dashboard/sign-in"));
    let wrong = browser
        .post("/dashboard/sign-in", &[("token", "not-the-token")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookie.is_none());
    assert!(wrong.text.contains("not the admin token"));
    let page = browser
        .post("/dashboard/sign-in", &[("token", &app.admin_token)])
        .await;
    let cookie = page.set_cookie.unwrap();
    for part in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/dashboard",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    let (browser, csrf) = Browser::sign_in(&app).await;
    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, 200);
    assert!(home.text.contains("/dashboard/default"));
    for path in GET_PAGES {
        let page = browser.get(path).await;
        assert!(
            [200, 404].contains(&page.status),
            "{path}: {} {}",
            page.status,
            page.text
        );
    }
    // Signing out needs the form's token too.
    assert_eq!(browser.post("/dashboard/sign-out", &[]).await.status, 403);
    let out = browser
        .post("/dashboard/sign-out", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(browser.get("/dashboard/default").await.status, 303);
}

#[tokio::test]
async fn a_session_expires() {
    let app = spawn_with(|c| c.dashboard.session_seconds = 1).await;
    let (browser, _) = Browser::sign_in(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let page = browser.get("/dashboard/default").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/dashboard/sign-in"));
}

#[tokio::test]
async fn forms_need_this_sessions_csrf_token() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    let (other, other_csrf) = Browser::sign_in(&app).await;
    assert_ne!(csrf, other_csrf);
    for token in ["", "0000", other_csrf.as_str()] {
        let page = browser
            .post(
                "/dashboard/default/keys",
                &[("csrf", token), ("name", "sneaky")],
            )
            .await;
        assert_eq!(page.status, 403, "token {token:?}");
    }
    let (_, keys) = app.admin_get("/eddy/v1/workspaces/default/api-keys").await;
    assert!(!keys.to_string().contains("sneaky"));
    // The live size needs the token in its header.
    let response = reqwest::Client::new()
        .post(app.url("/dashboard/default/segments/size"))
        .header(
            COOKIE,
            format!("eddy_session={}", browser.cookie.clone().unwrap()),
        )
        .json(&json!({"filter": {"and": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    drop(other);
}

#[tokio::test]
async fn api_keys_are_created_once_shown_and_revoked() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    let page = browser
        .post(
            "/dashboard/default/keys",
            &[
                ("csrf", &csrf),
                ("name", "from-dashboard"),
                ("permission", "users.track"),
                ("permission", "users.export.ids"),
            ],
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.text);
    let start = page.text.find("id=\"new-key\">").unwrap() + "id=\"new-key\">".len();
    let key = &page.text[start..start + 36];
    let (status, _) = app
        .post_as(
            key,
            "/users/track",
            json!({"attributes": [{"external_id": "k1", "a": 1}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post_as(key, "/users/delete", json!({"external_ids": ["k1"]}))
        .await;
    assert_eq!(status, 403, "only the ticked permissions");
    // Listed without the secret.
    let list = browser.get("/dashboard/default/keys").await;
    assert!(list.text.contains("from-dashboard") && !list.text.contains(key));
    let (_, keys) = app.admin_get("/eddy/v1/workspaces/default/api-keys").await;
    let id = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "from-dashboard")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = browser
        .post(
            &format!("/dashboard/default/keys/{id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("revoked"));
    let (status, _) = app
        .post_as(
            key,
            "/users/track",
            json!({"attributes": [{"external_id": "k1", "a": 2}]}),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_api_log_shows_each_request_with_its_refused_objects() {
    let app = spawn_app().await;
    let (browser, _) = Browser::sign_in(&app).await;
    let batch = json!({"api_key": app.key, "attributes": [
        {"external_id": "good-1", "plan": "pro"},
        {"plan": "nobody"},
    ]});
    let response = app
        .client
        .post(app.url("/users/track"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    let error = answer["errors"][0]["type"].as_str().unwrap().to_string();
    let page = browser.get("/dashboard/default/log").await;
    assert!(page.text.contains("POST /users/track"), "{}", page.text);
    assert!(page.text.contains("<strong>attributes[1]</strong>"));
    assert!(page.text.contains(&html_escaped(&error)), "{error}");
    assert!(page.text.contains("nobody"), "the refused object is shown");
    // Filters: by identifier, by status class.
    let page = browser
        .get("/dashboard/default/log?identifier=good-1")
        .await;
    assert!(page.text.contains("POST /users/track"));
    let page = browser
        .get("/dashboard/default/log?identifier=nobody-at-all")
        .await;
    assert!(page.text.contains("No requests match"));
    let page = browser.get("/dashboard/default/log?status=errors").await;
    assert!(
        page.text.contains("POST /users/track"),
        "refused objects count as errors"
    );
    let page = browser.get("/dashboard/default/log?status=5xx").await;
    assert!(!page.text.contains("POST /users/track"));
    // The entry: body redacted (the legacy api_key), answer shown.
    let list = browser.get("/dashboard/default/log").await;
    let href = list.text.find("/dashboard/default/log/").unwrap();
    let id: String = list.text[href + "/dashboard/default/log/".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let entry = browser.get(&format!("/dashboard/default/log/{id}")).await;
    assert_eq!(entry.status, 200);
    assert!(entry.text.contains("[REDACTED]"));
    assert!(!entry.text.contains(&app.key), "the key never shows");
    assert!(entry.text.contains("Refused objects"));
    // Another workspace's log does not show this workspace's requests.
    app.admin_post("/eddy/v1/workspaces", json!({"name": "other"}))
        .await;
    let other = browser.get("/dashboard/other/log").await;
    assert!(!other.text.contains("POST /users/track"));
}

fn html_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::test]
async fn the_api_log_can_be_turned_off() {
    let app = spawn_with(|c| c.dashboard.api_log_entries = 0).await;
    let (browser, _) = Browser::sign_in(&app).await;
    app.track(json!({"attributes": [{"external_id": "u1", "a": 1}]}))
        .await;
    let page = browser.get("/dashboard/default/log").await;
    assert!(page.text.contains("The API log is off"));
    assert!(!page.text.contains("POST /users/track"));
}

#[tokio::test]
async fn users_are_found_by_any_identifier_and_deleted_or_merged_from_their_page() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    app.track(json!({
        "attributes": [
            {"external_id": "keep", "email": "keep@example.com", "plan": "pro", "visits": 3},
            {"user_alias": {"alias_name": "anon-7", "alias_label": "amplitude_id"}, "_update_existing_only": false, "city_of_birth": "Lyon"},
        ],
        "events": [{"external_id": "keep", "name": "played", "time": "2026-11-01T10:00:00Z"}],
    }))
    .await;
    app.admin_post(
        "/eddy/v1/workspaces/default/segments",
        json!({"name": "the pros", "filter": {"attribute": "plan", "op": "equals", "value": "pro"}}),
    )
    .await;
    // An alias finds the user: one match opens the profile.
    let page = browser
        .get("/dashboard/default/users?q=amplitude_id:anon-7")
        .await;
    assert_eq!(page.status, 303, "{}", page.text);
    let profile = browser.get(page.location.as_deref().unwrap()).await;
    assert!(profile.text.contains("city_of_birth") && profile.text.contains("Lyon"));
    assert!(profile.text.contains("In no saved segment"));
    // Email and external id find the other one; custom attributes carry their types.
    let page = browser
        .get("/dashboard/default/users?q=keep%40example.com")
        .await;
    let keep = browser.get(page.location.as_deref().unwrap()).await;
    assert!(keep.text.contains("played"));
    assert!(
        keep.text.contains("the pros"),
        "the segments the user is in"
    );
    assert!(
        keep.text.contains("users.behaviors.CustomEvent"),
        "recent Currents events"
    );
    assert!(
        keep.text.contains("<td>number</td><td>3</td>"),
        "{}",
        keep.text
    );
    let none = browser.get("/dashboard/default/users?q=nobody").await;
    assert!(none.text.contains("No user has the identifier"));
    // Merge the alias-only user into "keep", with the confirmation.
    let anon_path = page_location(&browser, "amplitude_id:anon-7").await;
    let unconfirmed = browser
        .post(
            &format!("{anon_path}/merge"),
            &[("csrf", &csrf), ("into", "keep")],
        )
        .await;
    assert!(unconfirmed.text.contains("tick the confirmation"));
    let merged = browser
        .post(
            &format!("{anon_path}/merge"),
            &[("csrf", &csrf), ("into", "keep"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(merged.status, 200, "{}", merged.text);
    assert!(merged.text.contains("Merge history"));
    let user = app.user("keep").await.unwrap();
    assert_eq!(user["custom_attributes"]["city_of_birth"], "Lyon");
    // Delete "keep".
    let keep_path = page_location(&browser, "keep").await;
    let deleted = browser
        .post(
            &format!("{keep_path}/delete"),
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert!(deleted.text.contains("was deleted"), "{}", deleted.text);
    assert!(app.user("keep").await.is_none());
}

async fn page_location(browser: &Browser, q: &str) -> String {
    let page = browser
        .get(&format!("/dashboard/default/users?q={}", encode(q)))
        .await;
    page.location
        .unwrap_or_else(|| panic!("no single user for {q}: {}", page.text))
}

#[tokio::test]
async fn the_segment_builder_sizes_and_saves_through_the_admin_api() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    let users: Vec<Value> = (0..30)
        .map(|i| json!({"external_id": format!("s{i}"), "score": i}))
        .collect();
    app.track(json!({"attributes": users})).await;
    let filter = json!({"attribute": "score", "op": "at_least", "value": 10});
    let (_, api) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments/size",
            json!({"filter": filter}),
        )
        .await;
    assert_eq!(api["size"], 20);
    let response = reqwest::Client::new()
        .post(app.url("/dashboard/default/segments/size"))
        .header(
            COOKIE,
            format!("eddy_session={}", browser.cookie.clone().unwrap()),
        )
        .header("x-csrf-token", &csrf)
        .json(&json!({"filter": filter}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["size"], 20);
    // A bad filter gets the API's error text; saving it is refused the same way.
    let page = browser
        .post(
            "/dashboard/default/segments",
            &[
                ("csrf", &csrf),
                ("name", "bad"),
                ("filter", "{\"attribute\": \"score\", \"op\": \"sideways\"}"),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    let (_, direct) = app
        .admin_post(
            "/eddy/v1/workspaces/default/segments",
            json!({"name": "bad", "filter": {"attribute": "score", "op": "sideways"}}),
        )
        .await;
    assert!(
        page.text
            .contains(&html_escaped(direct["message"].as_str().unwrap())),
        "{direct}"
    );
    let page = browser
        .post(
            "/dashboard/default/segments",
            &[
                ("csrf", &csrf),
                ("name", "high scores"),
                ("filter", &filter.to_string()),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("20 users in it now"));
    let (_, list) = app.admin_get("/eddy/v1/workspaces/default/segments").await;
    assert_eq!(list["segments"][0]["name"], "high scores");
    assert_eq!(list["segments"][0]["size"], 20);
    let listed = browser.get("/dashboard/default/segments").await;
    assert!(listed.text.contains("high scores"));
}

#[tokio::test]
async fn data_import_keys_are_generated_rotated_and_invalidated() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    app.admin_put(
        "/eddy/v1/partners/amperity",
        json!({"partner_api_key": "partner-secret"}),
    )
    .await;
    let page = browser
        .post(
            "/dashboard/default/partners/amperity/key",
            &[("csrf", &csrf)],
        )
        .await;
    let first = new_key(&page.text);
    let import = |key: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/partners/amperity/cohorts"))
                .json(&json!({"partner_api_key": "partner-secret", "client_secret": key, "cohort_id": "c1", "name": "VIPs", "created_at": "2026-11-01T00:00:00Z"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert!(import(first.clone()).await < 300);
    let page = browser
        .post(
            "/dashboard/default/partners/amperity/key",
            &[("csrf", &csrf)],
        )
        .await;
    let second = new_key(&page.text);
    assert_ne!(first, second);
    assert_eq!(import(first).await, 401, "the rotated key stops working");
    assert!(import(second.clone()).await < 300);
    let cohorts = browser.get("/dashboard/default/cohorts").await;
    assert!(cohorts.text.contains("VIPs"));
    let (_, listed) = app.admin_get("/eddy/v1/workspaces/default/cohorts").await;
    assert_eq!(listed["cohorts"][0]["name"], "VIPs");
    assert!(listed["cohorts"][0]["changed_at"].is_string(), "{listed}");
    browser
        .post(
            "/dashboard/default/partners/amperity/key/delete",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(import(second).await, 401);
}

fn new_key(text: &str) -> String {
    let start = text.find("id=\"new-key\">").expect("a new key") + "id=\"new-key\">".len();
    let end = text[start..].find('<').unwrap() + start;
    text[start..end].to_string()
}

#[tokio::test]
async fn connectors_are_created_with_the_apis_checks() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    let page = browser
        .post(
            "/dashboard/default/currents",
            &[
                ("csrf", &csrf),
                ("name", "bad name!"),
                ("type", "s3"),
                ("bucket", "b"),
            ],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(
        page.text.contains("connector names are 1 to 64"),
        "{}",
        page.text
    );
    let page = browser
        .post(
            "/dashboard/default/currents",
            &[
                ("csrf", &csrf),
                ("name", "amp"),
                ("type", "amplitude"),
                ("api_key", "k"),
                ("endpoint", "http://127.0.0.1:9"),
                ("validate", "no"),
            ],
        )
        .await;
    assert_eq!(page.status, 201, "{}", page.text);
    assert!(page.text.contains("data-connector=\"amp\""));
    assert!(!page.text.contains("value=\"k\""), "secrets are not echoed");
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/currents/amp")
        .await;
    assert_eq!(status, 200);
    let page = browser
        .post("/dashboard/default/currents/amp/pause", &[("csrf", &csrf)])
        .await;
    assert!(page.text.contains("amp: paused"));
    let page = browser
        .post("/dashboard/default/currents/amp/delete", &[("csrf", &csrf)])
        .await;
    assert!(page.text.contains("amp: deleted"));
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/currents/amp")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_overview_counts_profiles_events_and_purchases_per_day() {
    let app = spawn_app().await;
    let (browser, _) = Browser::sign_in(&app).await;
    app.track(json!({
        "attributes": [{"external_id": "a"}, {"external_id": "b"}],
        "events": [{"external_id": "a", "name": "e", "time": "2026-11-01T10:00:00Z"}, {"external_id": "b", "name": "e", "time": "2026-11-01T10:00:00Z"}],
        "purchases": [{"external_id": "a", "product_id": "p", "currency": "USD", "price": 1.5, "quantity": 3, "time": "2026-11-01T10:00:00Z"}],
    }))
    .await;
    let (_, usage) = app.admin_get("/eddy/v1/workspaces/default/usage").await;
    assert_eq!(usage["profiles"], 2);
    let today = &usage["days"][0];
    assert_eq!(
        (
            today["events"].as_u64(),
            today["purchases"].as_u64(),
            today["new_profiles"].as_u64()
        ),
        (Some(2), Some(3), Some(2))
    );
    let page = browser.get("/dashboard/default").await;
    assert!(
        page.text
            .contains("<span class=\"figure\">2</span> profiles"),
        "{}",
        page.text
    );
    assert!(page.text.contains("<svg"));
    assert!(page.text.contains("Events and purchases per day"));
}

#[tokio::test]
async fn the_liquid_playground_renders_for_a_user() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    app.track(json!({"attributes": [{"external_id": "liq", "first_name": "Ada"}]}))
        .await;
    let page = browser
        .post(
            "/dashboard/default/templates",
            &[
                ("csrf", &csrf),
                (
                    "template",
                    "Hi {{${first_name}}} {{api_trigger_properties.${n}}}",
                ),
                ("user_kind", "external_id"),
                ("user", "liq"),
                ("properties", "{\"n\": 7}"),
            ],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Hi Ada 7"), "{}", page.text);
    let page = browser
        .post(
            "/dashboard/default/templates",
            &[
                ("csrf", &csrf),
                ("template", "{% abort_message('no') %}"),
                ("user_kind", "none"),
            ],
        )
        .await;
    assert!(page.text.contains("Aborted"), "{}", page.text);
}

#[tokio::test]
async fn every_user_is_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    let (browser, _) = Browser::sign_in(&app).await;
    let users: Vec<Value> = (0..60)
        .map(|i| json!({"external_id": format!("page-{i:02}")}))
        .collect();
    app.track(json!({"attributes": users})).await;
    let first = browser.get("/dashboard/default/users").await;
    assert!(first.text.contains("page-00") && first.text.contains("page-49"));
    assert!(!first.text.contains("page-50"));
    let start = first.text.find("users?after=").expect("a next page") + "users?after=".len();
    let after: String = first.text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let second = browser
        .get(&format!("/dashboard/default/users?after={after}"))
        .await;
    assert!(second.text.contains("page-50") && second.text.contains("page-59"));
    assert!(!second.text.contains("page-49"));
}

#[tokio::test]
async fn pages_cannot_be_framed_and_sign_outs_hold_after_a_restart() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    for path in [
        "/dashboard/default",
        "/dashboard/sign-in",
        "/dashboard/default/keys",
    ] {
        let page = browser.get(path).await;
        assert_eq!(
            page.headers
                .get("x-frame-options")
                .map(|v| v.to_str().unwrap()),
            Some("DENY"),
            "{path}"
        );
        let csp = page
            .headers
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    }
    let cookie = browser.cookie.clone();
    let out = browser
        .post("/dashboard/sign-out", &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 303);
    // The signed-out cookie, presented again after a restart, is refused.
    let dir = app.stop().await;
    let app = eddy_testkit::start(dir, |_| {}).await;
    let mut again = Browser::new(&app);
    again.cookie = cookie;
    let page = again.get("/dashboard/default").await;
    assert_eq!(page.status, 303, "a signed-out session came back");
    assert_eq!(page.location.as_deref(), Some("/dashboard/sign-in"));
    // A new sign-in works, and its cookie is not marked Secure over plain http.
    let (fresh, _) = Browser::sign_in(&app).await;
    assert_eq!(fresh.get("/dashboard/default").await.status, 200);
}

#[tokio::test]
async fn wrong_admin_tokens_are_throttled_per_address() {
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    for _ in 0..10 {
        let page = browser
            .post("/dashboard/sign-in", &[("token", "not-the-token")])
            .await;
        assert_eq!(page.status, 401);
    }
    // The eleventh try is refused whatever it holds, from this address.
    let page = browser
        .post("/dashboard/sign-in", &[("token", &app.admin_token)])
        .await;
    assert_eq!(page.status, 429, "{}", page.text);
    assert!(page.text.contains("try again"), "{}", page.text);
    let api = app
        .client
        .get(app.url("/eddy/v1/workspaces"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 429);

    // The admin API counts its own wrong tokens the same way.
    let other = spawn_app().await;
    for _ in 0..10 {
        let r = other
            .client
            .get(other.url("/eddy/v1/workspaces"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = other
        .client
        .get(other.url("/eddy/v1/workspaces"))
        .bearer_auth(&other.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too many wrong admin tokens"),
        "{body}"
    );
}

#[tokio::test]
async fn the_root_leads_a_browser_to_the_dashboard() {
    let app = spawn_app().await;
    let browser = Browser::new(&app);
    let page = browser.get("/").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/dashboard"));
}

#[tokio::test]
async fn the_api_log_keeps_refused_requests_under_the_keys_name_with_the_reason() {
    let app = spawn_with(|c| {
        c.rate_limits.insert(
            "users.export.ids".into(),
            eddy_server::ratelimit::RateLimit {
                limit: 1,
                window_seconds: 3600,
            },
        );
    })
    .await;
    let (status, created) = app
        .admin_post(
            "/eddy/v1/workspaces/default/api-keys",
            json!({"name": "export-only", "permissions": ["users.export.ids"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let reader = created["key"].as_str().unwrap().to_string();
    // 403: a known key without the permission.
    let (status, _) = app
        .post_as(&reader, "/users/track", json!({"attributes": []}))
        .await;
    assert_eq!(status, 403);
    // 501: a Braze endpoint eddy does not have; 404: no such endpoint.
    let (status, _) = app
        .post_as(&reader, "/preference_center/v1", json!({}))
        .await;
    assert_eq!(status, 501);
    let (status, _) = app.post_as(&reader, "/no/such/endpoint", json!({})).await;
    assert_eq!(status, 404);
    // 429: past the group's limit.
    let export = json!({"external_ids": ["nobody"]});
    let (first, _) = app
        .post_as(&reader, "/users/export/ids", export.clone())
        .await;
    assert_eq!(first, 201);
    let (second, _) = app.post_as(&reader, "/users/export/ids", export).await;
    assert_eq!(second, 429);
    // 401: an unknown key belongs to no workspace, so no workspace's log shows it.
    let (status, _) = app
        .post_as("not-a-key", "/users/track", json!({"attributes": []}))
        .await;
    assert_eq!(status, 401);

    let (browser, _) = Browser::sign_in(&app).await;
    let page = browser.get("/dashboard/default/log?status=4xx").await;
    let text = html_unescaped(&page.text);
    for (request, reason) in [
        (
            "POST /users/track",
            "does not have sufficient permissions for users.track",
        ),
        ("POST /no/such/endpoint", "Invalid URL"),
        ("POST /users/export/ids", "API rate limit exceeded"),
    ] {
        assert!(text.contains(request), "{request} is logged: {text}");
        assert!(text.contains(reason), "{request} shows why: {reason}");
    }
    assert!(text.contains("export-only"), "under the key's name");
    let page = browser.get("/dashboard/default/log?status=5xx").await;
    let text = html_unescaped(&page.text);
    assert!(text.contains("POST /preference_center/v1"), "{text}");
    assert!(text.contains("eddy does not implement"), "{text}");
    assert!(!text.contains("not-a-key"));
}

fn html_unescaped(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn a_profile_lists_its_messages_and_says_none_for_what_is_unset() {
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let receiver = eddy_testkit::WebhookReceiver::start().await;
    app.track(json!({"attributes": [{"external_id": "ada", "first_name": "Ada"}]}))
        .await;
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["ada"],
                   "messages": {"webhook": {"url": receiver.url("/hook"), "body": "hi {{${first_name}}}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let dispatch = sent["dispatch_id"].as_str().unwrap().to_string();
    for _ in 0..500 {
        let (_, state) = app
            .admin_get(&format!(
                "/eddy/v1/workspaces/default/dispatches/{dispatch}"
            ))
            .await;
        if state["state"] == "done" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (browser, _) = Browser::sign_in(&app).await;
    let found = browser.get("/dashboard/default/users?q=ada").await;
    let profile = browser.get(found.location.as_deref().unwrap()).await;
    let messages = &profile.text[profile.text.find("id=\"messages\"").unwrap()..];
    assert!(
        messages.contains("<th scope=\"col\">Outcome</th>"),
        "a table, not JSON: {messages}"
    );
    assert!(messages.contains(&format!("<code>{dispatch}</code>")));
    assert!(
        messages.contains("<td>webhook</td><td>sent</td>"),
        "{messages}"
    );
    // Unset facts say so.
    let identifiers = &profile.text[profile.text.find("id=\"identifiers\"").unwrap()..];
    assert!(
        identifiers.contains("<dt>Phone</dt><dd><span class=\"muted\">none</span></dd>"),
        "{identifiers}"
    );
}

#[tokio::test]
async fn campaigns_are_created_edited_and_their_sends_cancelled_from_the_dashboard() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    // A definition that is not JSON, or that the API refuses, stays in the form with the reason.
    let page = browser
        .post(
            "/dashboard/default/campaigns",
            &[("csrf", &csrf), ("definition", "{not json")],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(page.text.contains("not JSON") && page.text.contains("{not json"));
    let broken = r#"{"name": "bad", "messages": {"webhook": {"url": "https://example.com/h", "body": "{% if %}"}}}"#;
    let page = browser
        .post(
            "/dashboard/default/campaigns",
            &[("csrf", &csrf), ("definition", broken)],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.text);
    assert!(
        page.text.contains("Liquid"),
        "the reason is shown: {}",
        page.text
    );
    // A good one: created, then its page.
    let good = r#"{"name": "Welcome", "messages": {"webhook": {"url": "https://example.com/hook", "body": "hi {{${first_name}}}"}}}"#;
    let created = browser
        .post(
            "/dashboard/default/campaigns",
            &[("csrf", &csrf), ("definition", good)],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.text);
    let location = created.location.clone().unwrap();
    let id = location.rsplit('/').next().unwrap().to_string();
    let page = browser.get(&location).await;
    assert!(page.text.contains("Campaign Welcome"));
    // Edited in place.
    let renamed =
        r#"{"name": "Welcome back", "messages": {"webhook": {"url": "https://example.com/hook"}}}"#;
    let page = browser
        .post(
            &format!("{location}/edit"),
            &[("csrf", &csrf), ("definition", renamed)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("campaign saved") && page.text.contains("Campaign Welcome back"));
    let (_, stored) = app
        .admin_get(&format!("/eddy/v1/workspaces/default/campaigns/{id}"))
        .await;
    assert_eq!(stored["name"], "Welcome back");
    // A scheduled send of it shows with a Cancel button that cancels it.
    app.track(json!({"attributes": [{"external_id": "ada", "first_name": "Ada"}]}))
        .await;
    let (status, sent) = app
        .post(
            "/campaigns/trigger/schedule/create",
            json!({"campaign_id": id, "recipients": [{"external_user_id": "ada"}],
                   "schedule": {"time": "2099-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let dispatch = sent["dispatch_id"].as_str().unwrap().to_string();
    let page = browser.get(&location).await;
    let cancel = format!("/dashboard/default/dispatches/{dispatch}/cancel");
    assert!(page.text.contains(&cancel), "{}", page.text);
    let page = browser
        .post(&cancel, &[("csrf", &csrf), ("campaign", &id)])
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains(&format!("send {dispatch} cancelled")),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains(&cancel),
        "a cancelled send has no Cancel button"
    );
    let (_, state) = app
        .admin_get(&format!(
            "/eddy/v1/workspaces/default/dispatches/{dispatch}"
        ))
        .await;
    assert_eq!(state["state"], "cancelled");
}

#[tokio::test]
async fn messaging_settings_are_managed_from_the_dashboard() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    let page = browser.get("/dashboard/default/messaging").await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("No relay yet"), "{}", page.text);

    // The relay: refused with the API's reason, then saved (not validated: nothing listens).
    let refused = browser
        .post(
            "/dashboard/default/messaging/email",
            &[("csrf", &csrf), ("smtp_url", "ftp://nowhere")],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    let saved = browser
        .post(
            "/dashboard/default/messaging/email",
            &[
                ("csrf", &csrf),
                ("smtp_url", "smtp://mailer:s3cret@127.0.0.1:2525"),
                ("tracking_domain", "links.example.com"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert!(saved.text.contains("the SMTP relay is saved"));
    assert!(saved.text.contains("links.example.com"));
    assert!(
        !saved.text.contains("s3cret"),
        "the password is never shown"
    );
    let (_, email) = app.admin_get("/eddy/v1/workspaces/default/email").await;
    assert_eq!(
        email["starttls"], false,
        "an unticked box is false: {email}"
    );

    // A content block with broken Liquid is refused; a good one is listed, then deleted.
    let broken = browser
        .post(
            "/dashboard/default/messaging/content-blocks",
            &[("csrf", &csrf), ("name", "footer"), ("content", "{% if %}")],
        )
        .await;
    assert_eq!(broken.status, 400, "{}", broken.text);
    let saved = browser
        .post(
            "/dashboard/default/messaging/content-blocks",
            &[
                ("csrf", &csrf),
                ("name", "footer"),
                ("description", "legal"),
                ("content", "Sent by Example {{${first_name}}}"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    assert!(saved.text.contains("Sent by Example"));
    let (_, block) = app
        .admin_get("/eddy/v1/workspaces/default/content-blocks/footer")
        .await;
    assert_eq!(block["description"], "legal");
    let deleted = browser
        .post(
            "/dashboard/default/messaging/content-blocks/footer/delete",
            &[("csrf", &csrf)],
        )
        .await;
    assert!(deleted.text.contains("content block footer deleted"));
    let (status, _) = app
        .admin_get("/eddy/v1/workspaces/default/content-blocks/footer")
        .await;
    assert_eq!(status, 404);

    // Hosts one per line; credentials never shown; subscription groups.
    let hosts = browser
        .post(
            "/dashboard/default/messaging/hosts",
            &[
                ("csrf", &csrf),
                ("allowed_hosts", "api.internal:8443\n\n10.0.0.5\n"),
            ],
        )
        .await;
    assert!(
        hosts.text.contains("2 allowed hosts saved"),
        "{}",
        hosts.text
    );
    let (_, connected) = app
        .admin_get("/eddy/v1/workspaces/default/connected-content")
        .await;
    assert_eq!(
        connected["allowed_hosts"],
        json!(["api.internal:8443", "10.0.0.5"])
    );
    let bad_host = browser
        .post(
            "/dashboard/default/messaging/hosts",
            &[("csrf", &csrf), ("allowed_hosts", "http://x")],
        )
        .await;
    assert_eq!(bad_host.status, 400, "{}", bad_host.text);
    let credential = browser
        .post(
            "/dashboard/default/messaging/credentials",
            &[
                ("csrf", &csrf),
                ("name", "crm"),
                ("username", "svc"),
                ("password", "pa55word"),
            ],
        )
        .await;
    assert!(credential.text.contains("credential crm saved"));
    assert!(!credential.text.contains("pa55word"));
    let group = browser
        .post(
            "/dashboard/default/messaging/subscription-groups",
            &[
                ("csrf", &csrf),
                ("id", "news"),
                ("name", "Newsletter"),
                ("channel", "email"),
            ],
        )
        .await;
    assert!(group.text.contains("Newsletter"), "{}", group.text);
    let (_, groups) = app
        .admin_get("/eddy/v1/workspaces/default/subscription-groups")
        .await;
    assert_eq!(groups["subscription_groups"][0]["id"], "news");

    // A form without the session's CSRF token changes nothing.
    let forged = browser
        .post(
            "/dashboard/default/messaging/subscription-groups/news/delete",
            &[("csrf", "forged")],
        )
        .await;
    assert_ne!(forged.status, 200);
    let (_, groups) = app
        .admin_get("/eddy/v1/workspaces/default/subscription-groups")
        .await;
    assert_eq!(
        groups["subscription_groups"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_campaign_is_previewed_for_a_chosen_user() {
    let app = spawn_app().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    app.track(json!({"attributes": [{"external_id": "ada", "first_name": "Ada"}]}))
        .await;
    // A content block saved from the dashboard, included as Braze's docs write it.
    let saved = browser
        .post(
            "/dashboard/default/messaging/content-blocks",
            &[
                ("csrf", &csrf),
                ("name", "legal_footer"),
                (
                    "content",
                    "Unsubscribe: {{${set_user_to_unsubscribed_url}}}",
                ),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.text);
    let (status, created) = app
        .admin_post(
            "/eddy/v1/workspaces/default/campaigns",
            json!({"name": "Hello", "messages": {"webhook": {
                "url": "https://example.com/hook/{{${user_id}}}",
                "body": "hi {{${first_name}}} from {{campaign.${name}}} {{content_blocks.${legal_footer}}}",
                "request_headers": {"X-Stop": "{% abort_message('no header today') %}"}}}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let preview = format!("/dashboard/default/campaigns/{id}/preview");
    let page = browser
        .post(&preview, &[("csrf", &csrf), ("external_id", "ada")])
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("hi Ada from Hello Unsubscribe: "),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("https://example.com/hook/ada"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("aborted: no header today"),
        "an abort is shown as one: {}",
        page.text
    );
    let missing = browser
        .post(&preview, &[("csrf", &csrf), ("external_id", "nobody")])
        .await;
    assert!(missing.text.contains("not found"), "{}", missing.text);
}

#[tokio::test]
async fn a_test_send_reaches_the_one_user_and_shows_among_the_sends() {
    let app = spawn_app().await;
    app.allow_loopback("default").await;
    let receiver = eddy_testkit::WebhookReceiver::start().await;
    let (browser, csrf) = Browser::sign_in(&app).await;
    app.track(json!({"attributes": [
        {"external_id": "ada", "first_name": "Ada"},
        {"external_id": "bob", "first_name": "Bob"}
    ]}))
    .await;
    let (status, created) = app
        .admin_post(
            "/eddy/v1/workspaces/default/campaigns",
            json!({"name": "Hello", "messages": {"webhook": {
                "url": receiver.url("/hello"), "body": "hi {{${first_name}}}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let page = browser
        .post(
            &format!("/dashboard/default/campaigns/{id}/test-send"),
            &[("csrf", &csrf), ("external_id", "ada")],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("to ada accepted"), "{}", page.text);
    for _ in 0..200 {
        if receiver.count() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "only the chosen user is sent to");
    assert_eq!(requests[0].body, "hi Ada");
    // The admin API answers the same for an unknown campaign as for any other send.
    let (status, body) = app
        .admin_post(
            "/eddy/v1/workspaces/default/campaigns/none/test-send",
            json!({"external_user_id": "ada"}),
        )
        .await;
    assert!(status == 400 || status == 404, "{status} {body}");
    let (status, body) = app
        .admin_post(
            &format!("/eddy/v1/workspaces/default/campaigns/{id}/test-send"),
            json!({"to": "ada"}),
        )
        .await;
    assert_eq!(
        status, 400,
        "a body without external_user_id is refused: {body}"
    );
}

#[tokio::test]
async fn canvases_show_who_waits_where_and_catalogs_their_items() {
    let app = spawn_app().await;
    let (browser, _) = Browser::sign_in(&app).await;
    app.track(json!({"attributes": [{"external_id": "w1"}, {"external_id": "w2"}]}))
        .await;
    let (status, canvas) = app
        .admin_post(
            "/eddy/v1/workspaces/default/canvases",
            json!({"name": "Slow journey", "steps": [
                {"type": "delay", "name": "Long wait", "seconds": 3600},
                {"type": "message", "name": "Hello", "messages": {"webhook": {"url": "https://example.com/h"}}}]}),
        )
        .await;
    assert_eq!(status, 201, "{canvas}");
    let id = canvas["id"].as_str().unwrap();
    let (status, _) = app
        .post(
            "/canvas/trigger/send",
            json!({"canvas_id": id, "recipients": [{"external_user_id": "w1"}, {"external_user_id": "w2"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let list = browser.get("/dashboard/default/canvases").await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains("Slow journey"), "{}", list.text);
    let page = browser
        .get(&format!("/dashboard/default/canvases/{id}"))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Long wait") && page.text.contains("waits 3600 s"));
    let waiting_row = page.text.split("Long wait").nth(1).unwrap();
    let waiting = waiting_row.split("<td class=\"num\">").nth(1).unwrap();
    assert!(
        waiting.starts_with('2'),
        "two users wait in the delay: {waiting_row}"
    );

    let shop = json!({"catalogs": [{"name": "shop", "description": "Things", "fields": [
        {"name": "id", "type": "string"}, {"name": "title", "type": "string"}]}]});
    let created = app
        .client
        .post(app.url("/catalogs"))
        .bearer_auth(&app.key)
        .json(&shop)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let items: Vec<_> = (0..60)
        .map(|i| json!({"id": format!("p{i:02}"), "title": format!("Thing {i}")}))
        .collect();
    for chunk in items.chunks(50) {
        let written = app
            .client
            .put(app.url("/catalogs/shop/items"))
            .bearer_auth(&app.key)
            .json(&json!({"items": chunk}))
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 202);
    }
    let list = browser.get("/dashboard/default/catalogs").await;
    assert!(
        list.text.contains("shop") && list.text.contains(">60<"),
        "{}",
        list.text
    );
    let first = browser.get("/dashboard/default/catalogs/shop").await;
    assert!(first.text.contains("Thing 0") && !first.text.contains("Thing 55"));
    assert!(first.text.contains("Next page"));
    let next = first
        .text
        .split("href=\"")
        .find(|s| s.contains("cursor="))
        .unwrap();
    let next = next.split('"').next().unwrap().replace("&amp;", "&");
    let second = browser.get(&next).await;
    assert!(second.text.contains("Thing 55"), "{}", second.text);
}
