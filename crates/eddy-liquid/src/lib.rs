//! eddy's Liquid: Shopify Liquid 5 as its Ruby engine renders it (lax parsing, Ruby's values)
//! as the core, and Braze's dialect as a layer that registers its tags, filters and variables
//! with the core ([`dialect::Dialect`]).
//!
//! A template is parsed once into a tree ([`Template::parse`]) and rendered many times
//! ([`Template::render`]); nothing is global.
//!
//! The core, each file using only those listed before it:
//! - [`value`]: values with Ruby's semantics (printing, truthiness, comparison, numbers);
//!   [`stop`]: why a render stops; [`fetch`]: the network a render may be given.
//! - [`markup`]: how lax Liquid reads expressions, filters and conditions inside tags.
//! - [`tree`]: the parsed tree, and the traits a dialect's tags render through.
//! - [`dialect`]: what a dialect may add; [`dialect::Shopify`] adds nothing.
//! - [`filters`]: the standard filters; [`dates`]: `date` and `time_zone`.
//! - [`parse`]: the source cut into tokens, tags read into [`tree::Node`]s, errors with lines.
//! - [`render`]: the interpreter: scopes, loops, interrupts, errors printed in place.
//!
//! On top: [`braze`], Braze's dialect (`${…}` names, its filters, `abort_message`, Connected
//! Content, content blocks, a user's variables), and [`http`], Connected Content's HTTP client,
//! cache and host rules.

pub mod braze;
pub mod dates;
pub mod dialect;
pub mod fetch;
pub mod filters;
pub mod http;
pub mod markup;
pub mod parse;
pub mod render;
pub mod stop;
pub mod tree;
pub mod value;

pub use braze::{Braze, USER_FIELDS, user_variables};
pub use dialect::{Dialect, Shopify};
pub use fetch::{Catalogs, Fetch, FetchError};
pub use parse::SyntaxError;
pub use render::{Context, Limits};
pub use stop::Stop;
pub use value::{Object, Value};

use tree::Block;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    root: Block,
    /// What the template's tags, filters and variables beyond the core mean.
    dialect: &'static dyn Dialect,
    /// The source's length: the output's first capacity.
    source_len: usize,
}

/// A render and what went wrong on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The output, or why the template aborted.
    pub rendered: Rendered,
    /// Liquid errors, in order (each was printed in place where Liquid prints it).
    pub errors: Vec<String>,
    /// What the operator should know that is not a Liquid error.
    pub warnings: Vec<String>,
}

/// What rendering gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// The output.
    Output(String),
    /// `abort_message` ran (or a `:retry` Connected Content call failed): nothing is sent.
    Aborted(String),
}

impl Template {
    /// Parses a Braze template; the error names the line and uses Liquid's wording.
    pub fn parse(source: &str) -> Result<Template, SyntaxError> {
        Template::parse_in(source, &Braze)
    }

    /// Parses a template of this dialect.
    pub fn parse_in(source: &str, dialect: &'static dyn Dialect) -> Result<Template, SyntaxError> {
        Ok(Template {
            root: parse::parse(source, dialect)?,
            dialect,
            source_len: source.len(),
        })
    }

    /// Renders with these variables, limits and (optionally) Connected Content's HTTP.
    pub fn render(
        &self,
        variables: &Object,
        limits: Limits,
        fetch: Option<&dyn Fetch>,
    ) -> Result<Rendered, Stop> {
        self.render_with(variables, limits, fetch, None)
    }

    /// Renders with partials too (Braze's content blocks, `{{content_blocks.${name}}}`).
    pub fn render_with(
        &self,
        variables: &Object,
        limits: Limits,
        fetch: Option<&dyn Fetch>,
        content_blocks: Option<&std::collections::HashMap<String, Template>>,
    ) -> Result<Rendered, Stop> {
        self.render_report(variables, limits, fetch, content_blocks)
            .map(|report| report.rendered)
    }

    /// Renders, and tells what went wrong on the way: the errors Liquid printed in place (or
    /// swallowed, in tags that print nothing) and the warnings meant for the operator.
    pub fn render_report(
        &self,
        variables: &Object,
        limits: Limits,
        fetch: Option<&dyn Fetch>,
        content_blocks: Option<&std::collections::HashMap<String, Template>>,
    ) -> Result<Report, Stop> {
        if let Some(text) = self.root.as_plain_text() {
            return Ok(Report {
                rendered: Rendered::Output(text.to_string()),
                errors: Vec::new(),
                warnings: Vec::new(),
            });
        }
        let mut ctx = Context::new(variables, limits, self.dialect);
        ctx.fetch = fetch;
        ctx.partials = content_blocks.map(|blocks| blocks as &dyn tree::Partials);
        let mut out = String::with_capacity(self.source_len + self.source_len / 2);
        let rendered = match ctx.render_block(&self.root, &mut out) {
            Ok(()) => Rendered::Output(out),
            Err(Stop::Abort(reason)) => Rendered::Aborted(reason),
            Err(other) => return Err(other),
        };
        Ok(Report {
            rendered,
            errors: ctx.errors,
            warnings: ctx.warnings,
        })
    }
}

/// Content blocks by name.
impl tree::Partials for std::collections::HashMap<String, Template> {
    fn partial(&self, name: &str) -> Option<&Block> {
        self.get(name).map(|template| &template.root)
    }
}
