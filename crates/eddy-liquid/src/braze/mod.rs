//! Braze's dialect, a layer on Shopify Liquid that registers with the core through
//! [`Dialect`]: `${name}` markup, `abort_message`, `connected_content`, `catalog_items`, Braze's
//! filters and
//! `content_blocks.${name}`, plus the variables a user's profile gives a template.
//! What is implemented, with the pages it follows, is listed in `docs/liquid.md`.

mod catalog_items;
mod connected_content;
mod filters;
mod variables;

use std::borrow::Cow;
use std::sync::Arc;

use crate::dialect::Dialect;
use crate::markup::{Arity, Expr, Key, parse_expr};
use crate::stop::Stop;
use crate::tree::{Runtime, Tag};
use crate::value::Value;

pub use connected_content::ConnectedContent;
pub use variables::{USER_FIELDS, protect_braze_names, user_variables};

/// Braze's Liquid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Braze;

impl Dialect for Braze {
    fn rewrite_markup<'m>(&self, markup: &'m str) -> Cow<'m, str> {
        protect_braze_names(markup)
    }

    fn knows_tag(&self, name: &str) -> bool {
        matches!(
            name,
            "abort_message" | "connected_content" | "catalog_items"
        )
    }

    fn tag(&self, name: &str, markup: &str) -> Result<Arc<dyn Tag>, String> {
        match name {
            "abort_message" => Ok(Arc::new(AbortMessage::parse(markup))),
            "connected_content" => Ok(Arc::new(ConnectedContent::parse(markup)?)),
            "catalog_items" => Ok(Arc::new(catalog_items::CatalogItems::parse(markup)?)),
            other => Err(format!("Unknown tag '{other}'")),
        }
    }

    fn filter_arity(&self, name: &str) -> Option<Arity> {
        filters::arity(name)
    }

    fn filter(&self, name: &str, input: Value, args: &[Cow<'_, Value>]) -> Result<Value, Stop> {
        filters::apply(name, input, args)
    }

    /// `content_blocks.${name}`: the block rendered in place, when the render has blocks.
    fn variable(
        &self,
        runtime: &mut dyn Runtime,
        name: &str,
        first_key: Option<&Key>,
    ) -> Option<Result<Value, Stop>> {
        let first_key = first_key?;
        if name != "content_blocks" {
            return None;
        }
        let block = match runtime.key(first_key) {
            Ok(block) => block.to_string_lossy(),
            Err(stop) => return Some(Err(stop)),
        };
        runtime.render_partial(&block)
    }
}

/// `abort_message()`, `abort_message('reason')`: the message is not sent.
#[derive(Debug, Clone)]
struct AbortMessage {
    reason: Option<Expr>,
}

impl AbortMessage {
    fn parse(markup: &str) -> AbortMessage {
        let inner = markup.trim();
        let inner = inner
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or(inner)
            .trim();
        let reason = (!inner.is_empty()).then(|| parse_expr(inner));
        AbortMessage { reason }
    }
}

impl Tag for AbortMessage {
    fn render(&self, runtime: &mut dyn Runtime, _out: &mut String) -> Result<(), Stop> {
        let reason = match &self.reason {
            Some(e) => runtime.eval(e)?.to_string_lossy(),
            None => String::new(),
        };
        Err(Stop::Abort(reason))
    }
}
