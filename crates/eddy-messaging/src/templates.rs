//! A workspace's Liquid environment (content blocks, Connected Content rules) and the parsed
//! templates of a send, rendered per recipient.

use std::collections::HashMap;

use eddy_liquid::http::Rules;
use eddy_liquid::{Fetch, Limits, Object, Rendered, Stop, Template};
use eddy_store::Store;

use crate::MessagingError;
use crate::campaign::Messages;

/// Store kind of content blocks.
pub const CONTENT_BLOCK: &str = "content-block";
/// Store kind of Connected Content settings.
pub const CONNECTED_CONTENT: &str = "connected-content";
/// Store kind of Connected Content credentials.
pub const CREDENTIAL: &str = "credential";

/// The workspace's active content blocks, parsed (a block that does not parse is named).
pub fn content_blocks(store: &Store, ws: u32) -> Result<HashMap<String, Template>, MessagingError> {
    let mut blocks = HashMap::new();
    for (name, value) in store.objects(ws, CONTENT_BLOCK)? {
        // A draft is not used in messages until it is made active.
        if value["state"] == "draft" {
            continue;
        }
        let content = value["content"].as_str().unwrap_or_default();
        let template = Template::parse(content).map_err(|e| {
            MessagingError::invalid(format!(
                "content block '{name}' line {}: {}",
                e.line, e.message
            ))
        })?;
        blocks.insert(name, template);
    }
    Ok(blocks)
}

/// What Connected Content may call for a workspace.
pub fn rules(store: &Store, ws: u32) -> Result<Rules, MessagingError> {
    let listed: Vec<String> = match store.object(ws, CONNECTED_CONTENT, "settings")? {
        Some(v) => serde_json::from_value(v["allowed_hosts"].clone()).map_err(|e| {
            MessagingError::internal(format!("stored connected content settings: {e}"))
        })?,
        None => Vec::new(),
    };
    let allowed_hosts = eddy_net::AllowedHosts::parse(&listed)
        .map_err(|e| MessagingError::internal(format!("stored allowed_hosts: {e}")))?;
    let mut credentials = HashMap::new();
    for (name, value) in store.objects(ws, CREDENTIAL)? {
        let user = value["username"].as_str().unwrap_or_default().to_string();
        let password = value["password"].as_str().unwrap_or_default().to_string();
        credentials.insert(name, (user, password));
    }
    Ok(Rules {
        allowed_hosts,
        credentials,
    })
}

/// Why rendering a message for one recipient stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// `{% abort_message %}` (with its reason) or a Connected Content abort.
    Aborted(String),
    /// A Liquid error that stops the render.
    Error(String),
}

/// Every text field of a send, parsed once.
pub struct Compiled {
    /// Field name → template.
    fields: HashMap<String, Template>,
    blocks: HashMap<String, Template>,
    limits: Limits,
    /// The mark on the links the email body's source wrote (see `tracking::mark_links`).
    link_marker: String,
    /// Whether a warning was logged already: once per send is enough for the operator.
    warned: std::sync::atomic::AtomicBool,
    /// Whether any field names Braze's subscription links (their URLs are signed per
    /// recipient only then).
    subscription_links: bool,
    /// The workspace's custom footer, when a field inserts it (`{{${email_footer}}}`).
    footer: Option<Template>,
}

impl Compiled {
    /// Parses every Liquid field of `messages`.
    pub fn new(
        messages: &Messages,
        blocks: HashMap<String, Template>,
        limits: Limits,
        custom_footer: Option<&str>,
    ) -> Result<Compiled, MessagingError> {
        let texts: Vec<&str> = messages
            .email
            .iter()
            .flat_map(|e| e.texts())
            .chain(messages.webhook.iter().flat_map(|w| w.texts()))
            .map(|(_, text)| text)
            .collect();
        let uses_footer = texts.iter().any(|t| t.contains("email_footer"));
        let footer = match custom_footer {
            Some(source) if uses_footer => Some(Template::parse(source).map_err(|e| {
                MessagingError::internal(format!("stored custom footer: {}", e.message))
            })?),
            _ => None,
        };
        let subscription_links = texts
            .iter()
            .chain(custom_footer.filter(|_| uses_footer).as_ref())
            .any(|text| text.contains("set_user_to_"));
        let link_marker = eddy_store::ids::secret_hex(16)
            .map_err(|e| MessagingError::internal(format!("link marker: {e}")))?;
        let mut fields = HashMap::new();
        let mut add = |channel: &str, texts: Vec<(String, &str)>| -> Result<(), MessagingError> {
            for (name, text) in texts {
                // Links the body's source writes are marked before it is parsed, so that
                // links arriving with the data are never made into tracked redirects.
                let marked;
                let text = if channel == "email" && name == "body" {
                    marked = crate::tracking::mark_links(text, &link_marker);
                    marked.as_str()
                } else {
                    text
                };
                let template = Template::parse(text).map_err(|e| {
                    MessagingError::invalid(format!(
                        "messages.{channel}.{name}: Liquid syntax error on line {}: {}",
                        e.line, e.message
                    ))
                })?;
                fields.insert(format!("{channel}.{name}"), template);
            }
            Ok(())
        };
        if let Some(webhook) = &messages.webhook {
            add("webhook", webhook.texts())?;
        }
        if let Some(email) = &messages.email {
            add("email", email.texts())?;
        }
        Ok(Compiled {
            fields,
            blocks,
            limits,
            link_marker,
            warned: std::sync::atomic::AtomicBool::new(false),
            subscription_links,
            footer,
        })
    }

    /// The workspace's custom footer rendered for one recipient, when a field inserts it.
    pub fn footer(
        &self,
        variables: &Object,
        fetch: Option<&dyn Fetch>,
    ) -> Option<Result<String, Abort>> {
        let footer = self.footer.as_ref()?;
        Some(self.render_template("email_footer", footer, variables, fetch))
    }

    /// Whether any field names Braze's subscription links.
    pub fn uses_subscription_links(&self) -> bool {
        self.subscription_links
    }

    /// The mark on the links the email body's source wrote.
    pub fn link_marker(&self) -> &str {
        &self.link_marker
    }

    /// Renders one field (`email.subject`) for one recipient; a missing field renders empty.
    pub fn render(
        &self,
        field: &str,
        variables: &Object,
        fetch: Option<&dyn Fetch>,
    ) -> Result<String, Abort> {
        let Some(template) = self.fields.get(field) else {
            return Ok(String::new());
        };
        self.render_template(field, template, variables, fetch)
    }

    fn render_template(
        &self,
        field: &str,
        template: &Template,
        variables: &Object,
        fetch: Option<&dyn Fetch>,
    ) -> Result<String, Abort> {
        // A Liquid error aborts the recipient: its text never reaches anyone. Warnings (a
        // Connected Content host eddy refuses) are logged for the operator.
        let report = match template.render_report(variables, self.limits, fetch, Some(&self.blocks))
        {
            Ok(report) => report,
            Err(Stop::Abort(reason)) => return Err(Abort::Aborted(reason)),
            Err(Stop::Error(message)) | Err(Stop::Fatal(message)) => {
                return Err(Abort::Error(message));
            }
        };
        if let Some(warning) = report.warnings.first()
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                field,
                warning,
                "a send renders without what it asked for (logged once per send)"
            );
        }
        if let Some(first) = report.errors.into_iter().next() {
            return Err(Abort::Error(format!("{field}: Liquid error: {first}")));
        }
        match report.rendered {
            Rendered::Output(text) => Ok(text),
            Rendered::Aborted(reason) => Err(Abort::Aborted(reason)),
        }
    }
}
