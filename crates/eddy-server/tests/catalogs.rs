//! Braze's catalog endpoints through HTTP, with the bodies Braze's documentation shows, its
//! error ids, `Link` paging, and `{% catalog_items %}` reading the items in a render and a send.

use eddy_server::config::RateLimit;
use std::time::Duration;

use eddy_testkit::{TestApp, WebhookReceiver, spawn_with};
use serde_json::{Value, json};

/// Braze allows 5 catalog-management calls a minute; a test makes more.
async fn app() -> TestApp {
    spawn_with(|c| {
        c.rate_limits.insert(
            "catalogs".into(),
            RateLimit {
                limit: 1_000,
                window_seconds: 60,
            },
        );
    })
    .await
}

/// Braze's documented create request, as written.
fn restaurants() -> Value {
    json!({"catalogs": [{"name": "restaurants", "description": "My Restaurants", "fields": [
        {"name": "id", "type": "string"}, {"name": "Name", "type": "string"},
        {"name": "City", "type": "string"}, {"name": "Cuisine", "type": "string"},
        {"name": "Rating", "type": "number"}, {"name": "Loyalty_Program", "type": "boolean"},
        {"name": "Location", "type": "object"}, {"name": "Created_At", "type": "time"}]}]})
}

/// Braze's documented bulk request, as written.
fn three_restaurants() -> Value {
    json!({"items": [
        {"id": "restaurant1", "Name": "Restaurant1", "City": "New York", "Cuisine": "American",
         "Rating": 5, "Loyalty_Program": true, "Location": {"Latitude": 33.6112, "Longitude": -117.8711},
         "Created_At": "2022-11-01T09:03:19.967+00:00"},
        {"id": "restaurant2", "Name": "Restaurant2", "City": "New York", "Cuisine": "American",
         "Rating": 10, "Loyalty_Program": true, "Location": {"Latitude": 40.7413, "Longitude": -73.9764},
         "Created_At": "2022-11-02T09:03:19.967+00:00"},
        {"id": "restaurant3", "Name": "Restaurant3", "City": "New York", "Cuisine": "American",
         "Rating": 3, "Loyalty_Program": false, "Location": {"Latitude": 40.7489, "Longitude": -73.9972},
         "Created_At": "2022-11-03T09:03:19.967+00:00"}
    ]})
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let link = response
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, link)
}

fn error_id(body: &Value) -> &str {
    body["errors"][0]["id"].as_str().unwrap_or("")
}

#[tokio::test]
async fn catalogs_are_created_filled_paged_and_deleted_as_braze_documents() {
    let app = app().await;
    let (status, created, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs",
        Some(restaurants()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["catalogs"][0]["name"], "restaurants");
    assert_eq!(created["catalogs"][0]["num_items"], 0);
    assert_eq!(
        created["catalogs"][0]["fields"][4],
        json!({"name": "Rating", "type": "number"})
    );
    let (status, again, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs",
        Some(restaurants()),
    )
    .await;
    assert_eq!(
        (status, error_id(&again)),
        (400, "catalog-name-already-exists")
    );
    assert_eq!(again["message"], "Invalid Request");
    assert_eq!(
        again["errors"][0]["parameter_values"],
        json!(["restaurants"])
    );

    let (status, body, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs/restaurants/items",
        Some(three_restaurants()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, one, _) = send(
        &app,
        reqwest::Method::GET,
        "/catalogs/restaurants/items/restaurant1",
        None,
    )
    .await;
    assert_eq!(status, 200, "{one}");
    let item = &one["items"][0];
    assert_eq!(item["id"], "restaurant1");
    assert_eq!(item["Rating"], 5);
    assert_eq!(item["Created_At"], "2022-11-01T09:03:19.967Z");
    assert_eq!(item["Location"]["Latitude"], 33.6112);

    // One item: created, refused twice, edited, replaced, deleted.
    let path = "/catalogs/restaurants/items/restaurant4";
    let new = json!({"items": [{"Name": "Restaurant4", "City": "Lisbon", "Rating": 4}]});
    let (status, _, _) = send(&app, reqwest::Method::POST, path, Some(new.clone())).await;
    assert_eq!(status, 201);
    let (status, body, _) = send(&app, reqwest::Method::POST, path, Some(new)).await;
    assert_eq!((status, error_id(&body)), (400, "item-already-exists"));
    let (status, body, _) = send(
        &app,
        reqwest::Method::PATCH,
        path,
        Some(json!({"items": [{"Rating": "five"}]})),
    )
    .await;
    assert_eq!((status, error_id(&body)), (400, "unable-to-coerce-value"));
    let (status, body, _) = send(
        &app,
        reqwest::Method::PATCH,
        path,
        Some(json!({"items": [{"Nope": 1}]})),
    )
    .await;
    assert_eq!((status, error_id(&body)), (400, "invalid-fields"));
    let (status, _, _) = send(
        &app,
        reqwest::Method::PATCH,
        path,
        Some(json!({"items": [{"Rating": 4.5}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, got, _) = send(&app, reqwest::Method::GET, path, None).await;
    assert_eq!(
        (
            got["items"][0]["City"].clone(),
            got["items"][0]["Rating"].clone()
        ),
        (json!("Lisbon"), json!(4.5))
    );
    let (status, _, _) = send(
        &app,
        reqwest::Method::PUT,
        path,
        Some(json!({"items": [{"Name": "Renamed"}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, got, _) = send(&app, reqwest::Method::GET, path, None).await;
    assert_eq!(
        got["items"][0],
        json!({"id": "restaurant4", "Name": "Renamed"}),
        "a PUT replaces"
    );
    let (status, _, _) = send(&app, reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 200);
    let (status, body, _) = send(&app, reqwest::Method::GET, path, None).await;
    assert_eq!((status, error_id(&body)), (404, "item-not-found"));
    let (status, body, _) = send(&app, reqwest::Method::GET, "/catalogs/nope/items/x", None).await;
    assert_eq!((status, error_id(&body)), (404, "catalog-not-found"));

    // Bulk refusals leave nothing half written.
    let (status, body, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs/restaurants/items",
        Some(json!({"items": [{"id": "ok1", "Name": "x"}, {"id": "bad id", "Name": "y"}]})),
    )
    .await;
    assert_eq!((status, error_id(&body)), (400, "invalid-ids"));
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        "/catalogs/restaurants/items/ok1",
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "the valid item beside a refused one was not written"
    );
    let fifty_one: Vec<Value> = (0..51).map(|i| json!({"id": format!("r{i}")})).collect();
    let (status, body, _) = send(
        &app,
        reqwest::Method::PUT,
        "/catalogs/restaurants/items",
        Some(json!({"items": fifty_one})),
    )
    .await;
    assert_eq!(
        (status, error_id(&body)),
        (400, "request-includes-too-many-items")
    );

    // 120 items: pages of 50 linked by Link, as Braze's cursors.
    for start in [0, 50, 100] {
        let items: Vec<Value> = (start..(start + 50).min(120))
            .map(|i| json!({"id": format!("bulk{i:03}"), "Name": format!("B{i}")}))
            .collect();
        let (status, body, _) = send(
            &app,
            reqwest::Method::PUT,
            "/catalogs/restaurants/items",
            Some(json!({"items": items})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let mut seen = Vec::new();
    let mut path = "/catalogs/restaurants/items".to_string();
    loop {
        let (status, page, link) = send(&app, reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        let Some(next) = link.as_deref().and_then(|l| {
            l.split(',').find(|p| p.contains("rel=\"next\"")).map(|p| {
                p.trim()
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            })
        }) else {
            break;
        };
        path = next;
    }
    assert_eq!(seen.len(), 123, "every item once: {seen:?}");
    let (status, body, _) = send(
        &app,
        reqwest::Method::GET,
        "/catalogs/restaurants/items?cursor=bad-cursor",
        None,
    )
    .await;
    assert_eq!((status, error_id(&body)), (400, "invalid-cursor"));
    let (_, list, _) = send(&app, reqwest::Method::GET, "/catalogs", None).await;
    assert_eq!(list["catalogs"][0]["num_items"], 123);
    assert!(
        list["catalogs"][0]["updated_at"].as_str() > created["catalogs"][0]["updated_at"].as_str(),
        "item writes move the catalog's updated_at: {list}"
    );
    assert_eq!(
        list["catalogs"][0]["fields"],
        created["catalogs"][0]["fields"]
    );

    // A field removed leaves every item; the catalog deleted takes its items with it.
    let (status, _, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/catalogs/restaurants/fields/City",
        None,
    )
    .await;
    assert_eq!(status, 202);
    let (_, one, _) = send(
        &app,
        reqwest::Method::GET,
        "/catalogs/restaurants/items/restaurant1",
        None,
    )
    .await;
    assert!(one["items"][0].get("City").is_none(), "{one}");
    let (status, _, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs/restaurants/fields",
        Some(json!({"fields": [{"name": "City", "type": "string"}]})),
    )
    .await;
    assert_eq!(status, 202);
    let (_, one, _) = send(
        &app,
        reqwest::Method::GET,
        "/catalogs/restaurants/items/restaurant1",
        None,
    )
    .await;
    assert!(
        one["items"][0].get("City").is_none(),
        "a field added again starts empty: {one}"
    );
    let (status, _, _) = send(&app, reqwest::Method::DELETE, "/catalogs/restaurants", None).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs",
        Some(restaurants()),
    )
    .await;
    assert_eq!(status, 201);
    let (_, list, _) = send(&app, reqwest::Method::GET, "/catalogs", None).await;
    assert_eq!(
        list["catalogs"][0]["num_items"], 0,
        "a new catalog of the same name starts empty"
    );
}

#[tokio::test]
async fn catalog_definitions_are_refused_with_brazes_error_ids() {
    let app = app().await;
    let cases = [
        (json!({"catalogs": "x"}), "catalog-array-invalid"),
        (json!({"catalogs": [{}, {}]}), "too-many-catalog-atoms"),
        (
            json!({"catalogs": [{"name": "bad name", "fields": []}]}),
            "invalid_catalog_name",
        ),
        (
            json!({"catalogs": [{"name": "c", "fields": [{"name": "Name", "type": "string"}]}]}),
            "id-not-first-column",
        ),
        (
            json!({"catalogs": [{"name": "c", "fields": [{"name": "id", "type": "string"}, {"name": "x", "type": "date"}]}]}),
            "invalid-field-types",
        ),
    ];
    for (body, id) in cases {
        let (status, answer, _) =
            send(&app, reqwest::Method::POST, "/catalogs", Some(body.clone())).await;
        assert_eq!((status, error_id(&answer)), (400, id), "{body}: {answer}");
    }
}

#[tokio::test]
async fn catalog_items_are_read_by_liquid_as_braze_documents() {
    let app = app().await;
    let games = json!({"catalogs": [{"name": "games", "description": "Games", "fields": [
        {"name": "id", "type": "string"}, {"name": "title", "type": "string"},
        {"name": "price", "type": "number"}, {"name": "greeting", "type": "string"}]}]});
    let (status, _, _) = send(&app, reqwest::Method::POST, "/catalogs", Some(games)).await;
    assert_eq!(status, 201);
    let items = json!({"items": [
        {"id": "1234", "title": "Tales", "price": 7.49, "greeting": "Welcome, {{${first_name}}}!"},
        {"id": "1235", "title": "Teslagrad", "price": 9.99},
        {"id": "1236", "title": "Acaratus", "price": 4.99}]});
    let (status, _, _) = send(
        &app,
        reqwest::Method::POST,
        "/catalogs/games/items",
        Some(items),
    )
    .await;
    assert_eq!(status, 202);
    app.track(json!({"attributes": [{"external_id": "u1", "first_name": "Peter", "wishlist": ["1235", "1234"]}]}))
        .await;

    let render = |template: &str| json!({"template": template, "user": {"external_id": "u1"}});
    let cases = [
        // Braze's documented examples, as written.
        (
            "{% catalog_items games 1234 %}\n \nGet {{ items[0].title }} for just {{ items[0].price }}!",
            "\n \nGet Tales for just 7.49!",
        ),
        (
            "Get the ultimate trio {% catalog_items games 1234 1235 1236 %}\n{{ items[0].title }}, {{ items[1].title }}, and {{ items[2].title }} today!",
            "Get the ultimate trio \nTales, Teslagrad, and Acaratus today!",
        ),
        (
            "{% assign wishlist = {{custom_attribute.${wishlist}}}%}\n{% catalog_items games {{ wishlist[0] }} %}\n\nGet {{ items[0].title }} now, for just {{ items[0].price }}!",
            "\n\n\nGet Teslagrad now, for just 9.99!",
        ),
        // An id the catalog does not hold: fewer objects, no error.
        (
            "{% catalog_items games 9999 1236 %}{{ items.size }} {{ items[0].title }}",
            "1 Acaratus",
        ),
        (
            "{% catalog_items games 1234 :rerender %}{{ items[0].greeting }}",
            "Welcome, Peter!",
        ),
        (
            "{% catalog_items games 1234 %}{{ items[0].greeting }}",
            "Welcome, {{${first_name}}}!",
        ),
    ];
    // A tag reads at most 100 ids: a template naming ids without end stops with an error.
    let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let (_, rendered) = app
        .admin_post(
            "/eddy/v1/workspaces/default/liquid/render",
            render(&format!(
                "{{% catalog_items games {} %}}{{{{ items.size }}}}",
                many.join(" ")
            )),
        )
        .await;
    assert!(rendered.to_string().contains("at most 100"), "{rendered}");
    for (template, expected) in cases {
        let (status, rendered) = app
            .admin_post(
                "/eddy/v1/workspaces/default/liquid/render",
                render(template),
            )
            .await;
        assert_eq!(status, 200, "{template}: {rendered}");
        assert_eq!(rendered["output"], expected, "{template}");
    }
}

#[tokio::test]
async fn a_send_reads_each_recipients_catalog_items() {
    let app = app().await;
    app.allow_loopback("default").await;
    let receiver = WebhookReceiver::start().await;
    let shop = json!({"catalogs": [{"name": "shop", "description": "Products", "fields": [
        {"name": "id", "type": "string"}, {"name": "title", "type": "string"}]}]});
    send(&app, reqwest::Method::POST, "/catalogs", Some(shop)).await;
    let items = json!({"items": [{"id": "p1", "title": "Kettle"}, {"id": "p2", "title": "Lamp"}]});
    send(
        &app,
        reqwest::Method::POST,
        "/catalogs/shop/items",
        Some(items),
    )
    .await;
    app.track(json!({"attributes": [
        {"external_id": "ann", "favourite": "p1"}, {"external_id": "ben", "favourite": "p2"}]}))
        .await;
    let (status, sent) = app
        .post(
            "/messages/send",
            json!({"external_user_ids": ["ann", "ben"], "messages": {"webhook": {
                "url": receiver.url("/offer/{{${user_id}}}"),
                "body": "{% catalog_items shop {{custom_attribute.${favourite}}} %}{{ items[0].title }}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    let dispatch = sent["dispatch_id"].as_str().unwrap();
    for _ in 0..500 {
        let (_, body) = app
            .admin_get(&format!(
                "/eddy/v1/workspaces/default/dispatches/{dispatch}"
            ))
            .await;
        if body["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut got: Vec<(String, String)> = receiver
        .requests()
        .into_iter()
        .map(|r| (r.path, r.body))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/offer/ann".to_string(), "Kettle".to_string()),
            ("/offer/ben".to_string(), "Lamp".to_string())
        ]
    );
}
