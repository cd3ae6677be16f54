//! Braze's template endpoints through HTTP: `/content_blocks/*` and `/templates/email/*`, with
//! the bodies Braze's documentation shows, the texts it documents for what is refused, and what
//! the blocks and templates then do in rendering and sending.

use eddy_testkit::spawn_app;
use serde_json::{Value, json};

fn render_body(template: &str) -> Value {
    json!({"template": template})
}

#[tokio::test]
async fn content_blocks_are_created_listed_updated_and_used_as_braze_documents() {
    let app = spawn_app().await;
    // Braze's documented example request, as written.
    let (status, created) = app
        .post(
            "/content_blocks/create",
            json!({
                "name": "content_block",
                "description": "This is my Content Block",
                "content": "HTML content within block",
                "state": "draft",
                "tags": ["marketing"]
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["message"], "success");
    assert_eq!(created["liquid_tag"], "{{content_blocks.${content_block}}}");
    let id = created["content_block_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let (status, info) = app
        .get(&format!("/content_blocks/info?content_block_id={id}"))
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["name"], "content_block");
    assert_eq!(info["content"], "HTML content within block");
    assert_eq!(info["description"], "This is my Content Block");
    assert_eq!(info["content_type"], "text");
    assert_eq!(info["tags"], json!(["marketing"]));
    assert_eq!(info["inclusion_count"], 0);

    // A draft is not used in messages: the tag renders as a block that does not exist does.
    let ws = "/eddy/v1/workspaces/default";
    let tag = "[{{content_blocks.${content_block}}}]";
    let (_, missing) = app
        .admin_post(
            &format!("{ws}/liquid/render"),
            render_body("[{{content_blocks.${nothing}}}]"),
        )
        .await;
    let (_, draft) = app
        .admin_post(&format!("{ws}/liquid/render"), render_body(tag))
        .await;
    assert_eq!(draft, missing, "a draft renders as a missing block");
    assert_eq!(draft["output"], "[]");

    // A draft may be renamed; made active it is used, and its name is then fixed.
    let (status, updated) = app
        .post(
            "/content_blocks/update",
            json!({"content_block_id": id, "name": "promo", "content": "<b>Two for one</b>", "state": "active"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["liquid_tag"], "{{content_blocks.${promo}}}");
    assert_eq!(updated["content_block_id"], id.as_str());
    let (_, rendered) = app
        .admin_post(
            &format!("{ws}/liquid/render"),
            render_body("[{{content_blocks.${promo}}}]"),
        )
        .await;
    assert_eq!(rendered["output"], "[<b>Two for one</b>]", "{rendered}");
    let refusals = [
        (
            json!({"content_block_id": id, "name": "other"}),
            "Content Block name cannot be updated for active Content Blocks.",
        ),
        (
            json!({"content_block_id": id, "state": "draft"}),
            "Active Content Block can not be updated to Draft. Please create a new Content Block.",
        ),
        (
            json!({"content_block_id": "no-such-id", "content": "x"}),
            "Content Block ID is invalid for this App Group.",
        ),
        (json!({"content": "x"}), "Content Block ID cannot be blank."),
        (
            json!({"content_block_id": id, "content": "{{content_blocks.${promo}}}"}),
            "Content Block cannot be referenced within itself.",
        ),
    ];
    for (body, text) in refusals {
        let (status, answer) = app.post("/content_blocks/update", body.clone()).await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some(text)),
            "{body}"
        );
    }
    let (status, answer) = app
        .post(
            "/content_blocks/create",
            json!({"name": "promo", "content": "again"}),
        )
        .await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Content Block with this name already exists."))
    );

    // A block the admin API saved is listed too, with an id of its own.
    app.admin_put(
        &format!("{ws}/content-blocks/footer"),
        json!({"content": "Unsubscribe: {{${set_user_to_unsubscribed_url}}}"}),
    )
    .await;
    let (status, list) = app.get("/content_blocks/list").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2);
    let names: Vec<&str> = list["content_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["promo", "footer"], "oldest first");
    assert_eq!(list["content_blocks"][0]["content_type"], "html");
    let (_, one) = app.get("/content_blocks/list?limit=1&offset=1").await;
    assert_eq!(one["content_blocks"][0]["name"], "footer");
    let (_, none) = app
        .get("/content_blocks/list?modified_after=2999-01-01T00:00:00.000000")
        .await;
    assert_eq!(none["count"], 0);
    for (query, text) in [
        (
            "modified_after=yesterday",
            "Modified after time is invalid.",
        ),
        ("modified_before=soon", "Modified before time is invalid."),
        (
            "modified_after=2030-01-01T00:00:00Z&modified_before=2020-01-01T00:00:00Z",
            "Modified after time must be earlier than or the same as modified before time.",
        ),
    ] {
        let (status, answer) = app.get(&format!("/content_blocks/list?{query}")).await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some(text)),
            "{query}"
        );
    }

    // A campaign that includes the block counts as an inclusion.
    let (status, campaign) = app
        .admin_post(
            &format!("{ws}/campaigns"),
            json!({"name": "c", "messages": {"webhook": {"url": "https://example.com/h", "body": "{{content_blocks.${promo}}}"}}}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let (_, info) = app
        .get(&format!(
            "/content_blocks/info?content_block_id={id}&include_inclusion_data=true"
        ))
        .await;
    assert_eq!(info["inclusion_count"], 1);
    assert_eq!(info["inclusion_data"][0]["campaign_id"], campaign["id"]);
}

#[tokio::test]
async fn email_templates_are_kept_and_a_send_or_campaign_can_name_one() {
    let app = spawn_app().await;
    // Braze's documented example request, as written.
    let (status, created) = app
        .post(
            "/templates/email/create",
            json!({
                "template_name": "email_template_name",
                "subject": "Welcome to my email template!",
                "body": "This is the text within my email body and https://www.braze.com/ here is a link to Braze.com.",
                "plaintext_body": "This is the text within my email body and here is a link to https://www.braze.com/.",
                "preheader": "My preheader is pretty cool.",
                "tags": ["Tag1", "Tag2"]
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["email_template_id"].as_str().unwrap().to_string();

    let (status, updated) = app
        .post(
            "/templates/email/update",
            json!({"email_template_id": id, "subject": "Hi {{${first_name}}}"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let (status, info) = app
        .get(&format!("/templates/email/info?email_template_id={id}"))
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["template_name"], "email_template_name");
    assert_eq!(info["subject"], "Hi {{${first_name}}}");
    assert_eq!(info["preheader"], "My preheader is pretty cool.");
    assert_eq!(info["tags"], json!(["Tag1", "Tag2"]));
    let (_, list) = app.get("/templates/email/list").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["templates"][0]["email_template_id"], id.as_str());
    assert_eq!(list["templates"][0]["template_name"], "email_template_name");

    for (path, body, text) in [
        (
            "/templates/email/create",
            json!({"subject": "s"}),
            "Template Name is required",
        ),
        (
            "/templates/email/create",
            json!({"template_name": "t", "tags": "Tag1"}),
            "Tags must be an array.",
        ),
        (
            "/templates/email/create",
            json!({"template_name": "t", "body": "{{content_blocks.${absent}}}"}),
            "Email must have valid content block names.",
        ),
    ] {
        let (status, answer) = app.post(path, body.clone()).await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some(text)),
            "{body}"
        );
    }
    let (status, _) = app
        .post("/templates/email/update", json!({"email_template_id": id}))
        .await;
    assert_eq!(status, 400, "an update names a field to change");
    let (status, _) = app
        .get("/templates/email/info?email_template_id=nope")
        .await;
    assert_eq!(status, 400);

    // A campaign naming the template takes its subject and bodies, as Braze's sends do.
    let ws = "/eddy/v1/workspaces/default";
    let (status, campaign) = app
        .admin_post(
            &format!("{ws}/campaigns"),
            json!({"name": "welcome", "messages": {"email": {
                "from": "Shop <shop@example.com>", "email_template_id": id,
                "subject": "ignored", "body": "ignored"}}}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let email = &campaign["messages"]["email"];
    assert_eq!(email["subject"], "Hi {{${first_name}}}", "{campaign}");
    assert_eq!(
        email["plaintext_body"],
        "This is the text within my email body and here is a link to https://www.braze.com/."
    );
    let (status, answer) = app
        .admin_post(
            &format!("{ws}/campaigns"),
            json!({"name": "w", "messages": {"email": {"from": "s@example.com", "email_template_id": "nope"}}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
}
