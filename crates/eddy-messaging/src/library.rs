//! A workspace's reusable content as Braze's template endpoints keep it: content blocks (by
//! name, the name their Liquid tag uses, with a Braze-style id beside it) and email templates
//! (by id). Checks answer Braze's documented error texts; the HTTP handlers only parse and call.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use eddy_liquid::Template;
use eddy_store::{ObjectWrite, Store};

use crate::MessagingError;
use crate::templates::CONTENT_BLOCK;

/// Store kind of email templates (named by their id).
pub const EMAIL_TEMPLATE: &str = "email-template";

/// Largest content block Braze takes.
const MAX_BLOCK_BYTES: usize = 50 * 1024;

/// Whether a content block may be used in messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockState {
    /// Used wherever its tag appears.
    #[default]
    Active,
    /// Being written: not used in messages until it is made active.
    Draft,
}

/// A content block as stored, under its name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentBlock {
    /// Braze's `content_block_id`; blocks saved before ids existed get one from their name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Liquid, HTML or text.
    pub content: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Active or draft.
    #[serde(default)]
    pub state: BlockState,
    /// Free labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// When it was created (ISO 8601); blocks saved before this was kept have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When it last changed (ISO 8601).
    pub updated_at: String,
}

impl ContentBlock {
    /// Reads a stored block; `name` gives a block saved without an id its stable one.
    pub fn from_stored(name: &str, value: Value) -> Result<ContentBlock, MessagingError> {
        let mut block: ContentBlock = serde_json::from_value(value)
            .map_err(|e| MessagingError::internal(format!("stored content block '{name}': {e}")))?;
        if block.id.is_empty() {
            block.id = id_from_name(name);
        }
        Ok(block)
    }

    /// The stored form.
    pub fn to_stored(&self) -> Result<Value, MessagingError> {
        serde_json::to_value(self)
            .map_err(|e| MessagingError::internal(format!("content block: {e}")))
    }

    /// `html` when the content holds a tag, else `text` (Braze's `content_type`).
    pub fn content_type(&self) -> &'static str {
        let looks_like_html = self.content.contains('<') && self.content.contains('>');
        if looks_like_html { "html" } else { "text" }
    }
}

/// The Liquid tag that includes a block.
pub fn liquid_tag(name: &str) -> String {
    format!("{{{{content_blocks.${{{name}}}}}}}")
}

/// A stable id in Braze's UUID shape, for a block saved before ids were kept.
fn id_from_name(name: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(name.as_bytes());
    let hex = format!("{hash:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// What a create or an update of a content block asks for, read from Braze's body.
#[derive(Debug, Default)]
pub struct BlockChange {
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `content`.
    pub content: Option<String>,
    /// `state` (Braze: active when absent).
    pub state: BlockState,
    /// `tags`.
    pub tags: Option<Vec<String>>,
}

impl BlockChange {
    /// Reads and checks a body, with Braze's texts for what it refuses.
    pub fn read(body: &Map<String, Value>) -> Result<BlockChange, MessagingError> {
        let text = |field: &str, what: &str| -> Result<Option<String>, MessagingError> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(MessagingError::invalid(format!("{what} must be a string."))),
            }
        };
        let name = text("name", "Content Block name")?;
        if let Some(name) = &name {
            check_block_name(name)?;
        }
        let description = text("description", "Content Block description")?;
        if let Some(description) = &description {
            if description.is_empty() {
                return Err(MessagingError::invalid(
                    "Content Block description cannot be blank.",
                ));
            }
            if description.chars().count() >= 250 {
                return Err(MessagingError::invalid(
                    "Content block description must be shorter than 250 characters.",
                ));
            }
        }
        let content = text("content", "Content")?;
        if let Some(content) = &content {
            check_block_content(content, name.as_deref())?;
        }
        let state = match body.get("state") {
            None | Some(Value::Null) => BlockState::Active,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("active") => BlockState::Active,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("draft") => BlockState::Draft,
            Some(_) => {
                return Err(MessagingError::invalid(
                    "Content Block state must be either Active or Draft.",
                ));
            }
        };
        Ok(BlockChange {
            name,
            description,
            content,
            state,
            tags: read_tags(body)?,
        })
    }
}

/// Braze's rules for a block's name: 1 to 99 letters, digits, `-` or `_`.
fn check_block_name(name: &str) -> Result<(), MessagingError> {
    if name.is_empty() {
        return Err(MessagingError::invalid(
            "Content Block name cannot be blank.",
        ));
    }
    if name.chars().count() >= 100 {
        return Err(MessagingError::invalid(
            "Content Block name must be a shorter than 100 characters.",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(MessagingError::invalid(
            "Content Block name can only contain alphanumeric characters.",
        ));
    }
    Ok(())
}

/// Braze's rules for a block's content: not blank, under 50 KB, Liquid that parses, not
/// including itself.
fn check_block_content(content: &str, name: Option<&str>) -> Result<(), MessagingError> {
    if content.trim().is_empty() {
        return Err(MessagingError::invalid("Content cannot be blank."));
    }
    if content.len() > MAX_BLOCK_BYTES {
        return Err(MessagingError::invalid(
            "Content must be smaller than 50kb.",
        ));
    }
    if Template::parse(content).is_err() {
        return Err(MessagingError::invalid(
            "Content contains malformed liquid.",
        ));
    }
    if let Some(name) = name
        && included_blocks(content).iter().any(|n| n == name)
    {
        return Err(MessagingError::invalid(
            "Content Block cannot be referenced within itself.",
        ));
    }
    Ok(())
}

/// `tags`: an array of strings when present.
fn read_tags(body: &Map<String, Value>) -> Result<Option<Vec<String>>, MessagingError> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                _ => Err(MessagingError::invalid("All Tags must be Strings.")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(MessagingError::invalid("Tags must be an array.")),
    }
}

/// The names of the blocks a text includes with `{{content_blocks.${name}}}`.
pub fn included_blocks(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("content_blocks.${") {
        rest = &rest[at + "content_blocks.${".len()..];
        let Some(end) = rest.find('}') else {
            break;
        };
        names.push(rest[..end].trim().to_string());
        rest = &rest[end..];
    }
    names
}

/// Every content block of a workspace with its name.
pub fn blocks(store: &Store, ws: u32) -> Result<Vec<(String, ContentBlock)>, MessagingError> {
    store
        .objects(ws, CONTENT_BLOCK)?
        .into_iter()
        .map(|(name, value)| Ok((name.clone(), ContentBlock::from_stored(&name, value)?)))
        .collect()
}

/// The block with a Braze id, with its name.
pub fn block_by_id(
    store: &Store,
    ws: u32,
    id: &str,
) -> Result<Option<(String, ContentBlock)>, MessagingError> {
    Ok(blocks(store, ws)?.into_iter().find(|(_, b)| b.id == id))
}

/// The ids of the campaigns whose messages include a block (Braze's `inclusion_count` is
/// their number).
pub fn inclusions(store: &Store, ws: u32, name: &str) -> Result<Vec<String>, MessagingError> {
    let mut campaigns = Vec::new();
    for (id, campaign) in store.objects(ws, crate::kinds::CAMPAIGN)? {
        let text = campaign["messages"].to_string();
        if included_blocks(&text).iter().any(|n| n == name) {
            campaigns.push(id);
        }
    }
    Ok(campaigns)
}

/// Creates a block (`Content Block with this name already exists.` when the name is taken).
pub async fn create_block(
    store: &Store,
    ws: u32,
    change: BlockChange,
    now: &str,
) -> Result<(String, ContentBlock), MessagingError> {
    let Some(name) = change.name else {
        return Err(MessagingError::invalid(
            "Content Block name cannot be blank.",
        ));
    };
    let Some(content) = change.content else {
        return Err(MessagingError::invalid("Content cannot be blank."));
    };
    let block = ContentBlock {
        id: eddy_store::ids::uuid_v4(),
        content,
        description: change.description,
        state: change.state,
        tags: change.tags.unwrap_or_default(),
        created_at: Some(now.to_string()),
        updated_at: now.to_string(),
    };
    match store
        .create_object(ws, CONTENT_BLOCK, name.clone(), block.to_stored()?)
        .await
    {
        Ok(()) => Ok((name, block)),
        Err(eddy_store::StoreError::Conflict(_)) => Err(MessagingError::invalid(
            "Content Block with this name already exists.",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Updates the block with a Braze id: a draft may be renamed; an active block stays active.
pub async fn update_block(
    store: &Store,
    ws: u32,
    id: &str,
    change: BlockChange,
    now: &str,
) -> Result<(String, ContentBlock), MessagingError> {
    let Some((name, mut block)) = block_by_id(store, ws, id)? else {
        return Err(MessagingError::invalid(
            "Content Block ID is invalid for this App Group.",
        ));
    };
    if block.state == BlockState::Active && change.state == BlockState::Draft {
        return Err(MessagingError::invalid(
            "Active Content Block can not be updated to Draft. Please create a new Content Block.",
        ));
    }
    let new_name = change.name.unwrap_or_else(|| name.clone());
    if new_name != name {
        if block.state == BlockState::Active {
            return Err(MessagingError::invalid(
                "Content Block name cannot be updated for active Content Blocks.",
            ));
        }
        if store.object(ws, CONTENT_BLOCK, &new_name)?.is_some() {
            return Err(MessagingError::invalid(
                "Content Block with this name already exists.",
            ));
        }
    }
    if let Some(content) = change.content {
        check_block_content(&content, Some(&new_name))?;
        block.content = content;
    }
    if change.description.is_some() {
        block.description = change.description;
    }
    if let Some(tags) = change.tags {
        block.tags = tags;
    }
    block.state = change.state;
    block.updated_at = now.to_string();
    let mut writes = Vec::with_capacity(2);
    if new_name != name {
        writes.push(ObjectWrite {
            kind: CONTENT_BLOCK.into(),
            name: name.clone(),
            value: None,
        });
    }
    writes.push(ObjectWrite {
        kind: CONTENT_BLOCK.into(),
        name: new_name.clone(),
        value: Some(block.to_stored()?),
    });
    // One commit: a renamed block is never found under both names, or under neither.
    store.record(ws, writes, Vec::new()).await?;
    Ok((new_name, block))
}

/// An email template as stored, under its id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmailTemplate {
    /// `template_name`.
    pub template_name: String,
    /// `subject`.
    #[serde(default)]
    pub subject: String,
    /// `body`.
    #[serde(default)]
    pub body: String,
    /// `plaintext_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_body: Option<String>,
    /// `preheader`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preheader: Option<String>,
    /// `should_inline_css`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub should_inline_css: Option<bool>,
    /// `tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// ISO 8601.
    pub created_at: String,
    /// ISO 8601.
    pub updated_at: String,
}

impl EmailTemplate {
    /// Applies a create or update body (Braze's fields; absent ones are left as they are).
    pub fn apply(&mut self, body: &Map<String, Value>) -> Result<(), MessagingError> {
        let text = |field: &str| -> Result<Option<String>, MessagingError> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(MessagingError::invalid(format!("{field} must be a string"))),
            }
        };
        if let Some(name) = text("template_name")? {
            self.template_name = name;
        }
        if self.template_name.trim().is_empty() {
            return Err(MessagingError::invalid("Template Name is required"));
        }
        if let Some(subject) = text("subject")? {
            self.subject = subject;
        }
        if let Some(body) = text("body")? {
            self.body = body;
        }
        if let Some(plaintext) = text("plaintext_body")? {
            self.plaintext_body = Some(plaintext);
        }
        if let Some(preheader) = text("preheader")? {
            self.preheader = Some(preheader);
        }
        match body.get("should_inline_css") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => self.should_inline_css = Some(*b),
            Some(_) => {
                return Err(MessagingError::invalid(
                    "should_inline_css must be a boolean",
                ));
            }
        }
        if let Some(tags) = read_tags(body)? {
            self.tags = tags;
        }
        Ok(())
    }

    /// The stored form.
    pub fn to_stored(&self) -> Result<Value, MessagingError> {
        serde_json::to_value(self)
            .map_err(|e| MessagingError::internal(format!("email template: {e}")))
    }

    /// The texts that may include content blocks.
    fn texts(&self) -> impl Iterator<Item = &str> {
        [Some(self.subject.as_str()), Some(self.body.as_str())]
            .into_iter()
            .chain([self.plaintext_body.as_deref(), self.preheader.as_deref()])
            .flatten()
    }

    /// `Email must have valid content block names.` when a text includes a block the
    /// workspace does not have.
    pub fn check_blocks(&self, store: &Store, ws: u32) -> Result<(), MessagingError> {
        for text in self.texts() {
            for name in included_blocks(text) {
                if store.object(ws, CONTENT_BLOCK, &name)?.is_none() {
                    return Err(MessagingError::invalid(
                        "Email must have valid content block names.",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An email template by id.
pub fn email_template(
    store: &Store,
    ws: u32,
    id: &str,
) -> Result<Option<EmailTemplate>, MessagingError> {
    match store.object(ws, EMAIL_TEMPLATE, id)? {
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| MessagingError::internal(format!("stored email template '{id}': {e}"))),
        None => Ok(None),
    }
}

/// Every email template of a workspace with its id.
pub fn email_templates(
    store: &Store,
    ws: u32,
) -> Result<Vec<(String, EmailTemplate)>, MessagingError> {
    store
        .objects(ws, EMAIL_TEMPLATE)?
        .into_iter()
        .map(|(id, value)| {
            serde_json::from_value(value)
                .map(|t| (id.clone(), t))
                .map_err(|e| MessagingError::internal(format!("stored email template '{id}': {e}")))
        })
        .collect()
}

/// A `messages` object whose email names an `email_template_id`, with the template's subject,
/// bodies, preheader and CSS inlining in place of the message's own (as Braze uses them) and
/// the id kept for the record; other messages are returned as they are.
pub fn with_email_template(
    store: &Store,
    ws: u32,
    messages: &Value,
) -> Result<Value, MessagingError> {
    let Some(id) = messages
        .get("email")
        .and_then(|e| e.get("email_template_id"))
    else {
        return Ok(messages.clone());
    };
    let Some(id) = id.as_str() else {
        return Err(MessagingError::invalid(
            "messages.email.email_template_id must be a string",
        ));
    };
    let Some(template) = email_template(store, ws, id)? else {
        return Err(MessagingError::invalid(format!(
            "messages.email.email_template_id '{id}' names no email template of this workspace"
        )));
    };
    let mut messages = messages.clone();
    if let Some(Value::Object(email)) = messages.get_mut("email") {
        email.remove("email_template_id");
        email.insert("subject".into(), Value::String(template.subject));
        email.insert("body".into(), Value::String(template.body));
        if let Some(plaintext) = template.plaintext_body {
            email.insert("plaintext_body".into(), Value::String(plaintext));
        }
        if let Some(preheader) = template.preheader {
            email.insert("preheader".into(), Value::String(preheader));
        }
        if let Some(inline) = template.should_inline_css {
            email.insert("should_inline_css".into(), Value::Bool(inline));
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(body: Value) -> Result<BlockChange, String> {
        BlockChange::read(body.as_object().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn block_bodies_are_refused_with_brazes_texts() {
        let cases = [
            (json!({"name": ""}), "Content Block name cannot be blank."),
            (
                json!({"name": "a".repeat(100)}),
                "Content Block name must be a shorter than 100 characters.",
            ),
            (
                json!({"name": "a b"}),
                "Content Block name can only contain alphanumeric characters.",
            ),
            (json!({"content": " "}), "Content cannot be blank."),
            (json!({"content": 5}), "Content must be a string."),
            (
                json!({"content": "x".repeat(MAX_BLOCK_BYTES + 1)}),
                "Content must be smaller than 50kb.",
            ),
            (
                json!({"content": "{% if %}"}),
                "Content contains malformed liquid.",
            ),
            (
                json!({"name": "me", "content": "a {{content_blocks.${me}}}"}),
                "Content Block cannot be referenced within itself.",
            ),
            (
                json!({"description": "d".repeat(250)}),
                "Content block description must be shorter than 250 characters.",
            ),
            (
                json!({"state": "paused"}),
                "Content Block state must be either Active or Draft.",
            ),
            (json!({"tags": "t"}), "Tags must be an array."),
            (json!({"tags": ["t", 1]}), "All Tags must be Strings."),
        ];
        for (body, text) in cases {
            let error = read(body.clone()).expect_err(&body.to_string());
            assert!(error.contains(text), "{body}: {error}");
        }
        let ok = read(json!({"name": "content-block_1", "content": "<b>{{${first_name}}}</b>", "state": "draft", "tags": ["marketing"]})).unwrap();
        assert_eq!(ok.state, BlockState::Draft);
        assert_eq!(ok.tags, Some(vec!["marketing".to_string()]));
        assert_eq!(read(json!({})).unwrap().state, BlockState::Active);
    }

    #[test]
    fn included_blocks_are_found_in_every_spelling_of_the_tag() {
        assert_eq!(
            included_blocks(
                "{{content_blocks.${footer}}} and {{ content_blocks.${ promo_1 } | upcase }}"
            ),
            ["footer", "promo_1"]
        );
        assert!(included_blocks("content_blocks.${unclosed").is_empty());
        assert_eq!(liquid_tag("footer"), "{{content_blocks.${footer}}}");
    }

    #[test]
    fn blocks_saved_before_ids_get_a_stable_one_and_html_is_told_from_text() {
        let stored = json!({"content": "<p>hi</p>", "updated_at": "2026-01-01T00:00:00.000Z"});
        let a = ContentBlock::from_stored("footer", stored.clone()).unwrap();
        let b = ContentBlock::from_stored("footer", stored).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 36);
        assert_eq!(a.state, BlockState::Active);
        assert_eq!(a.content_type(), "html");
        let text =
            ContentBlock::from_stored("t", json!({"content": "plain", "updated_at": ""})).unwrap();
        assert_eq!(text.content_type(), "text");
    }
}
