//! How a dialect joins Liquid's core: it adds tags, filters and variables, and may rewrite
//! markup before the core reads it. The core asks the dialect only about names it does not know
//! itself, so a dialect cannot change what standard Liquid means.
//!
//! [`Shopify`] adds nothing; Braze's dialect is [`crate::braze::Braze`].

use std::borrow::Cow;
use std::sync::Arc;

use crate::markup::{Arity, Key};
use crate::stop::Stop;
use crate::tree::{Runtime, Tag};
use crate::value::Value;

/// What a dialect adds to Liquid.
pub trait Dialect: std::fmt::Debug + Send + Sync {
    /// Rewrites the markup of an output or a tag before the core reads it.
    fn rewrite_markup<'m>(&self, markup: &'m str) -> Cow<'m, str> {
        Cow::Borrowed(markup)
    }

    /// Whether the dialect has a tag of this name (a tag without a body: it ends where it is).
    fn knows_tag(&self, _name: &str) -> bool {
        false
    }

    /// Reads a tag the dialect knows; the error is the syntax error's message.
    fn tag(&self, name: &str, _markup: &str) -> Result<Arc<dyn Tag>, String> {
        Err(format!("Unknown tag '{name}'"))
    }

    /// The arity of a filter the dialect adds, counting the input.
    fn filter_arity(&self, _name: &str) -> Option<Arity> {
        None
    }

    /// Applies a filter the dialect adds (its arity already checked).
    fn filter(&self, _name: &str, input: Value, _args: &[Cow<'_, Value>]) -> Result<Value, Stop> {
        Ok(input)
    }

    /// A variable the dialect serves itself, given its first key (`content_blocks.${name}`);
    /// `None` leaves the lookup to the render's scopes.
    fn variable(
        &self,
        _runtime: &mut dyn Runtime,
        _name: &str,
        _first_key: Option<&Key>,
    ) -> Option<Result<Value, Stop>> {
        None
    }
}

/// Shopify's Liquid as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shopify;

impl Dialect for Shopify {}
