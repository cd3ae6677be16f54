//! eddy's Liquid: Shopify Liquid 5 as its Ruby engine renders it (lax parsing, Ruby's values),
//! with Braze's dialect on top (`${…}` tags, Braze's filters, `abort_message`,
//! `connected_content`).
//!
//! A template is parsed once into a tree ([`Template::parse`]) and rendered many times
//! ([`Template::render`]); nothing is global.
//!
//! - [`parse`]: the source cut into tokens, tags read into [`parse::Node`]s, errors with lines.
//! - [`markup`]: how lax Liquid reads expressions, filters and conditions inside tags.
//! - [`value`]: values with Ruby's semantics (printing, truthiness, comparison, numbers).
//! - [`render`]: the interpreter: scopes, loops, interrupts, errors printed in place.
//! - [`filters`]: the standard filters; [`dates`]: `date` and `time_zone`.
//! - [`braze`]: Braze's filters, `abort_message`, Connected Content, a user's variables.
//! - [`http`]: Connected Content's HTTP client, cache and host rules.

pub mod braze;
pub mod dates;
pub mod filters;
pub mod http;
pub mod markup;
pub mod parse;
pub mod render;
pub mod value;

pub use braze::{Fetch, FetchError, user_variables};
pub use parse::SyntaxError;
pub use render::{Context, Limits, Stop};
pub use value::{Object, Value};

use parse::{Block, Node};

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    root: Block,
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
    /// Parses a template; the error names the line and uses Liquid's wording.
    pub fn parse(source: &str) -> Result<Template, SyntaxError> {
        Ok(Template {
            root: parse::parse(source)?,
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

    /// Renders with content blocks too (`{{content_blocks.${name}}}`).
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
        if let Some(text) = parse::is_plain_text(&self.root) {
            return Ok(Report {
                rendered: Rendered::Output(text.to_string()),
                errors: Vec::new(),
                warnings: Vec::new(),
            });
        }
        let mut ctx = Context::new(variables, limits);
        ctx.fetch = fetch;
        ctx.content_blocks = content_blocks;
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

impl Template {
    /// The parsed tree.
    pub(crate) fn root(&self) -> &Block {
        &self.root
    }
}

/// Whether a node prints nothing, so that Liquid swallows its errors.
pub(crate) fn parse_blank(node: &Node) -> bool {
    match node {
        Node::Output(..) => false,
        other => parse::node_blank(other),
    }
}
