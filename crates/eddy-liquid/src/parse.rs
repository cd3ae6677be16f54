//! From source to a tree: the template is cut into text, `{{ }}` and `{% %}` tokens as Shopify
//! Liquid cuts it (its `TemplateParser` expression), whitespace control trims the text beside
//! `-`, and each tag reads its markup ([`crate::markup`]). Errors name the line and use
//! Liquid's own wording.

use crate::dialect::Dialect;
use crate::filters;
use crate::markup::{
    self, Condition, Expr, FilterKind, Variable, find_fragment, fragment_ends, parse_condition,
    parse_expr, tag_attributes,
};
use crate::tree::{Block, CycleGroup, ForLoop, Node, Offset, TableRow};
use crate::value::Value;

/// A template that does not parse: Liquid's message and the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Liquid syntax error (line {line}): {message}")]
pub struct SyntaxError {
    /// Liquid's wording, without the "Liquid syntax error" prefix.
    pub message: String,
    /// The line the error is on.
    pub line: usize,
}

/// A token of the template.
#[derive(Debug, Clone)]
enum Token {
    Text(String),
    Output {
        markup: String,
        trim_left: bool,
        trim_right: bool,
        line: usize,
        source: String,
    },
    Tag {
        name: String,
        markup: String,
        trim_left: bool,
        trim_right: bool,
        line: usize,
        /// The token as written (`raw` collects them).
        source: String,
    },
    /// A token that cannot be read; its error is raised when the parser reaches it (as
    /// Liquid's lazy tokenizer does), and `raw` takes it as text.
    Bad(SyntaxError, String),
}

/// Cuts `source` as `TemplateParser` does: text, `{%…%}`, `{{…}}`, or a lone `{%`/`{{`.
fn tokenize(source: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let bytes = source.as_bytes();
    while i < bytes.len() {
        let next = find_start(source, i);
        let Some(start) = next else {
            tokens.push(Token::Text(source[i..].to_string()));
            break;
        };
        if start > i {
            let text = &source[i..start];
            line += text.matches('\n').count();
            tokens.push(Token::Text(text.to_string()));
        }
        let is_tag = bytes[start + 1] == b'%';
        let end = if is_tag {
            source[start + 2..].find("%}").map(|e| start + 2 + e + 2)
        } else {
            output_close(&source[start + 2..]).map(|e| {
                let close = start + 2 + e + 1;
                if bytes.get(close) == Some(&b'}') {
                    close + 1
                } else {
                    close
                }
            })
        };
        let end = end.unwrap_or(start + 2);
        let raw = &source[start..end];
        let token_line = line;
        line += raw.matches('\n').count();
        let token = if is_tag {
            tag_token(raw, token_line)
        } else {
            output_token(raw, token_line)
        };
        tokens.push(token.unwrap_or_else(|e| Token::Bad(e, raw.to_string())));
        i = end;
    }
    tokens
}

/// The first `}` of an output's rest, stepping over Braze's `${…}` names (so that
/// `{{${first_name}}}` is one output, as Braze reads it); without `${` it is Liquid's rule.
fn output_close(rest: &str) -> Option<usize> {
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            match rest[i + 2..].find('}') {
                Some(end) => {
                    i += 2 + end + 1;
                    continue;
                }
                None => return rest[i..].find('}').map(|e| i + e),
            }
        }
        if b[i] == b'}' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn find_start(source: &str, from: usize) -> Option<usize> {
    let b = source.as_bytes();
    let mut i = from;
    while i + 1 < b.len() {
        if b[i] == b'{' && (b[i + 1] == b'%' || b[i + 1] == b'{') {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// `FullToken`: `{%-?\s*(#|\w+)\s*(.*?)-?%}`.
fn tag_token(raw: &str, line: usize) -> Result<Token, SyntaxError> {
    let unterminated = || SyntaxError {
        message: format!("Tag '{raw}' was not properly terminated with regexp: /\\%\\}}/"),
        line,
    };
    if raw.len() < 4 || !raw.ends_with("%}") {
        return Err(unterminated());
    }
    let inner = &raw[2..raw.len() - 2];
    let trim_left = inner.starts_with('-');
    let inner = if trim_left { &inner[1..] } else { inner };
    let body = inner.trim_start();
    let name_len = tag_name_len(body);
    if name_len == 0 {
        return Err(unterminated());
    }
    let name = body[..name_len].to_string();
    let mut markup = body[name_len..].trim_start();
    let trim_right = raw.len() >= 3 && raw.as_bytes()[raw.len() - 3] == b'-';
    if markup.ends_with('-') {
        markup = &markup[..markup.len() - 1];
    }
    Ok(Token::Tag {
        name,
        markup: markup.to_string(),
        trim_left,
        trim_right: trim_right && raw.len() > 4,
        line,
        source: raw.to_string(),
    })
}

/// The length of the tag name at the start of `body`: `#` or `\w+` (`TagName`).
fn tag_name_len(body: &str) -> usize {
    if body.starts_with('#') {
        return 1;
    }
    body.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// `ContentOfVariable`: `{{-?(.*?)-?}}`.
fn output_token(raw: &str, line: usize) -> Result<Token, SyntaxError> {
    if raw.len() < 4 || !raw.ends_with("}}") {
        return Err(SyntaxError {
            message: format!(
                "Variable '{raw}' was not properly terminated with regexp: /\\}}\\}}/"
            ),
            line,
        });
    }
    let inner = &raw[2..raw.len() - 2];
    let trim_left = inner.starts_with('-');
    let mut markup = if trim_left { &inner[1..] } else { inner };
    let trim_right = raw.as_bytes()[raw.len() - 3] == b'-' && raw.len() > 4;
    if markup.ends_with('-') {
        markup = &markup[..markup.len() - 1];
    }
    Ok(Token::Output {
        markup: markup.to_string(),
        trim_left,
        trim_right,
        line,
        source: raw.to_string(),
    })
}

/// Parses a whole template.
pub fn parse(source: &str, dialect: &dyn Dialect) -> Result<Block, SyntaxError> {
    let tokens = tokenize(source);
    let mut parser = Parser {
        dialect,
        tokens,
        pos: 0,
        trim_next: false,
        depth: 0,
        for_liquid_tag: false,
        cycles: 0,
    };
    let (block, end) = parser.body()?;
    match end {
        None => Ok(block),
        Some(End { name, line, .. }) => Err(SyntaxError {
            message: if name == "else" || name == "end" {
                format!("Unexpected outer '{name}' tag")
            } else {
                format!("Unknown tag '{name}'")
            },
            line,
        }),
    }
}

/// A tag a body does not know: its end, `else`, `when`…, for the enclosing block to judge.
struct End {
    name: String,
    markup: String,
    line: usize,
}

struct Parser<'d> {
    dialect: &'d dyn Dialect,
    tokens: Vec<Token>,
    pos: usize,
    /// The previous tag ended with `-`: trim the next text's start.
    trim_next: bool,
    depth: usize,
    /// Inside `{% liquid %}`: lines are tags, `end` tags close blocks the same way.
    for_liquid_tag: bool,
    /// Cycle tags read so far.
    cycles: usize,
}

const MAX_DEPTH: usize = 100;

/// Tags Liquid knows (an unknown tag ends the body for its enclosing block to judge).
fn is_known_tag(name: &str) -> bool {
    matches!(
        name,
        "assign"
            | "capture"
            | "case"
            | "comment"
            | "cycle"
            | "decrement"
            | "increment"
            | "echo"
            | "for"
            | "if"
            | "unless"
            | "ifchanged"
            | "raw"
            | "tablerow"
            | "break"
            | "continue"
            | "include"
            | "render"
            | "liquid"
            | "#"
    )
}

impl Parser<'_> {
    /// Parses nodes until an unknown tag (returned) or the end of the tokens (`None`).
    fn body(&mut self) -> Result<(Block, Option<End>), SyntaxError> {
        let mut block = Block {
            nodes: Vec::new(),
            blank: true,
        };
        while self.pos < self.tokens.len() {
            let token = self.tokens[self.pos].clone();
            self.pos += 1;
            match token {
                Token::Bad(error, _) => return Err(error),
                Token::Text(mut text) => {
                    if self.trim_next {
                        text = text.trim_start().to_string();
                    }
                    self.trim_next = false;
                    if text.is_empty() {
                        continue;
                    }
                    block.blank &= text.trim().is_empty();
                    block.nodes.push(Node::Text(text));
                }
                Token::Output {
                    markup,
                    trim_left,
                    trim_right,
                    line,
                    ..
                } => {
                    self.trim(&mut block, trim_left, trim_right);
                    let markup = self.dialect.rewrite_markup(&markup);
                    let variable = self.variable(&markup);
                    block.nodes.push(Node::Output(variable, line));
                    block.blank = false;
                }
                Token::Tag {
                    name,
                    markup,
                    trim_left,
                    trim_right,
                    line,
                    ..
                } => {
                    self.trim(&mut block, trim_left, trim_right);
                    if name == "liquid" {
                        self.liquid_tag(&markup, line, &mut block)?;
                        continue;
                    }
                    if !is_known_tag(&name) && !self.dialect.knows_tag(&name) {
                        return Ok((block, Some(End { name, markup, line })));
                    }
                    let node = self.tag(&name, &markup, line)?;
                    block.blank &= node.is_blank();
                    block.nodes.push(node);
                }
            }
        }
        Ok((block, None))
    }

    fn trim(&mut self, block: &mut Block, left: bool, right: bool) {
        if left && let Some(Node::Text(previous)) = block.nodes.last_mut() {
            let kept = previous.trim_end().len();
            previous.truncate(kept);
            if previous.is_empty() {
                block.nodes.pop();
            }
        }
        self.trim_next = right;
    }

    /// A block tag's body up to its end tag; `accept` names the other tags it takes (`else`…),
    /// answering each with the block parsed so far.
    fn block_until(
        &mut self,
        tag: &str,
        line: usize,
        mut accept: impl FnMut(&str, &str, usize, Block) -> Result<Accepted, SyntaxError>,
    ) -> Result<(), SyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(SyntaxError {
                message: "Nesting too deep".into(),
                line,
            });
        }
        self.depth += 1;
        let delimiter = format!("end{tag}");
        loop {
            let (block, end) = self.body()?;
            let Some(end) = end else {
                self.depth -= 1;
                return Err(SyntaxError {
                    message: format!("'{tag}' tag was never closed"),
                    line,
                });
            };
            if end.name == delimiter {
                accept("", "", end.line, block)?;
                self.depth -= 1;
                return Ok(());
            }
            match accept(&end.name, &end.markup, end.line, block)? {
                Accepted::Yes => continue,
                Accepted::No => {
                    self.depth -= 1;
                    return Err(unknown_in_block(
                        &end.name,
                        tag,
                        end.line,
                        self.for_liquid_tag,
                    ));
                }
            }
        }
    }

    fn tag(&mut self, name: &str, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        let syntax = |message: &str| SyntaxError {
            message: message.to_string(),
            line,
        };
        let markup_owned = self.dialect.rewrite_markup(markup).into_owned();
        let markup = markup_owned.as_str();
        match name {
            "assign" => {
                // (VariableSignature+)\s*=\s*(.*)
                let Some(eq) = markup.find('=') else {
                    return Err(syntax(
                        "Syntax Error in 'assign' - Valid syntax: assign [var] = [source]",
                    ));
                };
                let target = assign_target(&markup[..eq]).ok_or_else(|| {
                    syntax("Syntax Error in 'assign' - Valid syntax: assign [var] = [source]")
                })?;
                Ok(Node::Assign(target, self.variable(&markup[eq + 1..]), line))
            }
            "capture" => {
                let target = signature_run(markup).ok_or_else(|| {
                    syntax("Syntax Error in 'capture' - Valid syntax: capture [var]")
                })?;
                Ok(Node::Capture(target, self.plain_block("capture", line)?))
            }
            "if" | "unless" => self.if_tag(name, markup, line),
            "case" => self.case_tag(markup, line),
            "for" => self.for_tag(markup, line),
            "tablerow" => self.tablerow_tag(markup, line),
            "comment" => {
                // Tags inside are parsed (and must be well formed) but mean nothing.
                self.block_until("comment", line, |_, _, _, _| Ok(Accepted::Yes))?;
                Ok(Node::Comment)
            }
            "#" => {
                if markup.lines().skip(1).any(|l| {
                    let t = l.trim_start();
                    !t.is_empty() && !t.starts_with('#')
                }) {
                    return Err(syntax(
                        "Syntax error in tag '#' - Each line of comments must be prefixed by the '#' character",
                    ));
                }
                Ok(Node::Comment)
            }
            "raw" => self.raw_tag(markup, line),
            "cycle" => {
                self.cycles += 1;
                cycle_tag(markup, line, self.cycles)
            }
            "increment" => Ok(Node::Counter(markup.trim().to_string(), 1)),
            "decrement" => Ok(Node::Counter(markup.trim().to_string(), -1)),
            "echo" => Ok(Node::Echo(self.variable(markup), line)),
            "break" => Ok(Node::Break),
            "continue" => Ok(Node::Continue),
            "ifchanged" => Ok(Node::IfChanged(self.plain_block("ifchanged", line)?)),
            "include" | "render" => Ok(Node::Include(line)),
            other if self.dialect.knows_tag(other) => {
                let tag = self.dialect.tag(other, markup).map_err(|m| syntax(&m))?;
                Ok(Node::Custom(tag, line))
            }
            other => Err(syntax(&format!("Unknown tag '{other}'"))),
        }
    }

    /// `expr | filters…`, each filter looked up in the core, then in the dialect.
    fn variable(&self, markup: &str) -> Variable {
        let kind = |name: &str| match filters::arity(name) {
            Some(arity) => FilterKind::Core(arity),
            None => match self.dialect.filter_arity(name) {
                Some(arity) => FilterKind::Dialect(arity),
                None => FilterKind::Unknown,
            },
        };
        markup::parse_variable(markup, &kind)
    }

    /// The body of a block tag that takes no inner tags of its own (`capture`, `tablerow`…).
    fn plain_block(&mut self, tag: &str, line: usize) -> Result<Block, SyntaxError> {
        let mut body = Block::default();
        self.block_until(tag, line, |name, _, _, block| {
            if name.is_empty() {
                body = block;
                return Ok(Accepted::Yes);
            }
            Ok(Accepted::No)
        })?;
        Ok(body)
    }

    fn if_tag(&mut self, tag: &str, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        let if_error = |line| SyntaxError {
            message: "Syntax Error in tag 'if' - Valid syntax: if [expression]".into(),
            line,
        };
        let first = parse_condition(markup).ok_or_else(|| if_error(line))?;
        let mut branches: Vec<(Option<Condition>, Block)> = Vec::new();
        let mut pending: Option<Option<Condition>> = Some(Some(first));
        self.block_until(tag, line, |name, markup, at, block| {
            let condition = pending.take().unwrap_or(None);
            branches.push((condition, block));
            match name {
                "" => Ok(Accepted::Yes),
                "elsif" => {
                    pending = Some(Some(parse_condition(markup).ok_or_else(|| if_error(at))?));
                    Ok(Accepted::Yes)
                }
                "else" => {
                    pending = Some(None);
                    Ok(Accepted::Yes)
                }
                _ => Ok(Accepted::No),
            }
        })?;
        let blank = branches.iter().all(|(_, b)| b.blank);
        if blank {
            for (_, block) in &mut branches {
                remove_blank_strings(block);
            }
        }
        Ok(Node::If {
            branches,
            negate_first: tag == "unless",
            line,
        })
    }

    fn case_tag(&mut self, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        let Some((start, end)) = find_fragment(markup, 0) else {
            return Err(SyntaxError {
                message: "Syntax Error in 'case' - Valid syntax: case [condition]".into(),
                line,
            });
        };
        let left = parse_expr(&markup[start..end]);
        let mut arms: Vec<(Option<Expr>, usize)> = Vec::new();
        let mut bodies: Vec<Block> = Vec::new();
        // The body before the first `when` is parsed and thrown away, as Liquid does.
        let mut current_arms: Option<Vec<Option<Expr>>> = None;
        self.block_until("case", line, |name, markup, at, block| {
            if let Some(values) = current_arms.take() {
                let index = bodies.len();
                bodies.push(block);
                for value in values {
                    arms.push((value, index));
                }
            }
            match name {
                "" => Ok(Accepted::Yes),
                "when" => {
                    current_arms = Some(when_values(markup, at)?.into_iter().map(Some).collect());
                    Ok(Accepted::Yes)
                }
                "else" => {
                    if !markup.trim().is_empty() {
                        return Err(SyntaxError {
                            message: "Syntax Error in tag 'case' - Valid else condition: {% else %} (no parameters) ".into(),
                            line: at,
                        });
                    }
                    current_arms = Some(vec![None]);
                    Ok(Accepted::Yes)
                }
                _ => Ok(Accepted::No),
            }
        })?;
        let blank = bodies.iter().all(|b| b.blank);
        if blank {
            for body in &mut bodies {
                remove_blank_strings(body);
            }
        }
        Ok(Node::Case {
            left,
            arms,
            bodies,
            line,
        })
    }

    fn for_tag(&mut self, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        let error = || SyntaxError {
            message: "Syntax Error in 'for loop' - Valid syntax: for [item] in [collection]".into(),
            line,
        };
        // \A([\w-]+)\s+in\s+(QuotedFragment+)\s*(reversed)?
        let var_len = markup
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        if var_len == 0 {
            return Err(error());
        }
        let variable = markup[..var_len].to_string();
        let rest = &markup[var_len..];
        let after_ws = rest.trim_start();
        if after_ws.len() == rest.len() || !after_ws.starts_with("in") {
            return Err(error());
        }
        let after_in = &after_ws[2..];
        let collection_start = after_in.trim_start();
        if collection_start.len() == after_in.len() {
            return Err(error());
        }
        let offset_in_markup = markup.len() - collection_start.len();
        let end = fragment_ends(markup, offset_in_markup)
            .first()
            .copied()
            .ok_or_else(error)?;
        let collection_markup = &markup[offset_in_markup..end];
        let reversed = markup[end..].trim_start().starts_with("reversed");
        let mut limit = None;
        let mut offset = Offset::None;
        for (key, value) in tag_attributes(&markup[end..]) {
            match key.as_str() {
                "limit" => limit = Some(parse_expr(&value)),
                "offset" if value == "continue" => offset = Offset::Continue,
                "offset" => offset = Offset::At(parse_expr(&value)),
                _ => {}
            }
        }
        // Liquid's `for` reads its body, then (after `else`) one else body: a second `else`
        // ends the loop there with an empty else block, and what follows belongs to the
        // enclosing block.
        let never_closed = || SyntaxError {
            message: "'for' tag was never closed".into(),
            line,
        };
        if self.depth >= MAX_DEPTH {
            return Err(SyntaxError {
                message: "Nesting too deep".into(),
                line,
            });
        }
        self.depth += 1;
        let (mut body, end) = self.body()?;
        let mut otherwise: Option<Block> = None;
        let end = end.ok_or_else(never_closed)?;
        match end.name.as_str() {
            "endfor" => {}
            "else" => {
                let (else_body, end) = self.body()?;
                let end = end.ok_or_else(never_closed)?;
                match end.name.as_str() {
                    "endfor" => otherwise = Some(else_body),
                    "else" => otherwise = Some(Block::default()),
                    other => {
                        return Err(unknown_in_block(
                            other,
                            "for",
                            end.line,
                            self.for_liquid_tag,
                        ));
                    }
                }
            }
            other => {
                return Err(unknown_in_block(
                    other,
                    "for",
                    end.line,
                    self.for_liquid_tag,
                ));
            }
        }
        self.depth -= 1;
        if body.blank && otherwise.as_ref().is_none_or(|b| b.blank) {
            remove_blank_strings(&mut body);
            if let Some(b) = otherwise.as_mut() {
                remove_blank_strings(b);
            }
        }
        Ok(Node::For(Box::new(ForLoop {
            name: format!("{variable}-{collection_markup}"),
            variable,
            collection: parse_expr(collection_markup),
            reversed,
            limit,
            offset,
            body,
            otherwise,
            line,
        })))
    }

    fn tablerow_tag(&mut self, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        let error = || {
            SyntaxError {
            message: "Syntax Error in 'table_row loop' - Valid syntax: table_row [item] in [collection] cols=3".into(),
            line,
        }
        };
        // (\w+)\s+in\s+(QuotedFragment+), searched
        let words: Vec<&str> = markup.split_whitespace().collect();
        let in_at = words.iter().position(|w| *w == "in").ok_or_else(error)?;
        if in_at == 0 || in_at + 1 >= words.len() {
            return Err(error());
        }
        let variable = words[in_at - 1]
            .trim_start_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .to_string();
        let collection_at = markup
            .find(words[in_at + 1])
            .filter(|_| !variable.is_empty())
            .ok_or_else(error)?;
        let end = fragment_ends(markup, collection_at)
            .first()
            .copied()
            .ok_or_else(error)?;
        let collection = parse_expr(&markup[collection_at..end]);
        let attributes = tag_attributes(markup)
            .into_iter()
            .map(|(k, v)| (k, parse_expr(&v)))
            .collect();
        let body = self.plain_block("tablerow", line)?;
        Ok(Node::TableRow(Box::new(TableRow {
            variable,
            collection,
            attributes,
            body,
            line,
        })))
    }

    fn raw_tag(&mut self, markup: &str, line: usize) -> Result<Node, SyntaxError> {
        if !markup.trim().is_empty() {
            return Err(SyntaxError {
                message: "Syntax Error in 'raw' - Valid syntax: raw".into(),
                line,
            });
        }
        let mut body = String::new();
        while self.pos < self.tokens.len() {
            let token = self.tokens[self.pos].clone();
            self.pos += 1;
            let text = match &token {
                Token::Text(t) => t.clone(),
                Token::Output { source, .. } | Token::Bad(_, source) => source.clone(),
                Token::Tag { source, .. } => {
                    // Only `{%` + spaces + `endraw` ends it (FullTokenPossiblyInvalid): a
                    // `{%- endraw %}` is body text, and the end tag's `-%}` trims nothing.
                    let after = source[2..].trim_start();
                    if after.starts_with("endraw")
                        && !after[6..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Ok(Node::Raw(body));
                    }
                    source.clone()
                }
            };
            body.push_str(&text);
        }
        Err(SyntaxError {
            message: "'raw' tag was never closed".into(),
            line,
        })
    }

    /// `{% liquid %}`: each line is a tag without delimiters.
    fn liquid_tag(
        &mut self,
        markup: &str,
        line: usize,
        block: &mut Block,
    ) -> Result<(), SyntaxError> {
        let mut tokens = Vec::new();
        for (i, text) in markup.split('\n').enumerate() {
            let t = text.trim_start();
            if t.is_empty() {
                continue;
            }
            let name_len = tag_name_len(t);
            if name_len == 0 {
                return Err(SyntaxError {
                    message: format!("Unknown tag '{t}'"),
                    line: line + i,
                });
            }
            tokens.push(Token::Tag {
                name: t[..name_len].to_string(),
                markup: t[name_len..].trim().to_string(),
                trim_left: false,
                trim_right: false,
                line: line + i,
                source: t.to_string(),
            });
        }
        let mut inner = Parser {
            dialect: self.dialect,
            tokens,
            pos: 0,
            trim_next: false,
            depth: self.depth,
            for_liquid_tag: true,
            cycles: self.cycles,
        };
        let (parsed, end) = inner.body()?;
        self.cycles = inner.cycles;
        if let Some(end) = end {
            return Err(unknown_in_block(&end.name, "liquid", end.line, true));
        }
        block.blank &= parsed.blank;
        block.nodes.extend(parsed.nodes);
        Ok(())
    }
}

/// Whether the enclosing block takes a tag it met.
enum Accepted {
    Yes,
    No,
}

fn unknown_in_block(tag: &str, block: &str, line: usize, in_liquid_tag: bool) -> SyntaxError {
    let message = if tag == "else" {
        format!("{block} tag does not expect 'else' tag")
    } else if tag.starts_with("end") {
        let delimiter = if in_liquid_tag && block == "liquid" {
            "%}".to_string()
        } else {
            format!("end{block}")
        };
        format!("'{tag}' is not a valid delimiter for {block} tags. use {delimiter}")
    } else {
        format!("Unknown tag '{tag}'")
    };
    SyntaxError { message, line }
}

fn remove_blank_strings(block: &mut Block) {
    block.nodes.retain(|n| !matches!(n, Node::Text(_)));
}

/// `assign`'s target: `VariableSignature+` (`\(?[\w\-\.\[\]]\)?` repeated) before `=`.
fn assign_target(before_eq: &str) -> Option<String> {
    let t = before_eq.trim();
    let run = signature_run(t)?;
    if run.len() != t.len() {
        // The regex searches: the run right before the `=` (spaces allowed) is the target.
        let last = t.rsplit(|c: char| c.is_whitespace()).next()?;
        return signature_run(last).filter(|r| r.len() == last.len());
    }
    Some(run)
}

/// The first run of `[\w\-.\[\]()]` characters (VariableSignature+).
fn signature_run(markup: &str) -> Option<String> {
    let is_sig =
        |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | '(' | ')');
    let start = markup.find(is_sig)?;
    let run: String = markup[start..].chars().take_while(|c| is_sig(*c)).collect();
    if run.is_empty() { None } else { Some(run) }
}

/// `when` markup: values separated by `or` or commas.
fn when_values(markup: &str, line: usize) -> Result<Vec<Expr>, SyntaxError> {
    let error = || {
        SyntaxError {
        message: "Syntax Error in tag 'case' - Valid when condition: {% when [condition] [or condition2...] %}".into(),
        line,
    }
    };
    let mut values = Vec::new();
    let mut rest = markup;
    loop {
        let (start, end) = find_fragment(rest, 0).ok_or_else(error)?;
        values.push(markup::parse_condition_operand(&rest[start..end]));
        let after = &rest[end..];
        let trimmed = after.trim_start();
        let next = if let Some(r) = trimmed.strip_prefix(',') {
            Some(r.trim_start())
        } else if after.len() > trimmed.len()
            && let Some(r) = trimmed.strip_prefix("or")
            && r.starts_with(|c: char| c.is_whitespace())
        {
            Some(r.trim_start())
        } else {
            None
        };
        match next {
            Some(r) if find_fragment(r, 0).is_some_and(|(s, _)| s == 0) => rest = r,
            _ => return Ok(values),
        }
    }
}

/// `serial` numbers the template's cycle tags: an unnamed cycle over variables is keyed by
/// its tag, as Ruby keys it by the identity of its parsed values.
fn cycle_tag(markup: &str, line: usize, serial: usize) -> Result<Node, SyntaxError> {
    let error = || SyntaxError {
        message: "Syntax Error in 'cycle' - Valid syntax: cycle [name :] var [, var2, var3 ...]"
            .into(),
        line,
    };
    // NamedSyntax: \A(QuotedFragment)\s*:\s*(.*)
    for end in fragment_ends(markup, 0) {
        let after = markup[end..].trim_start();
        if let Some(values) = after.strip_prefix(':') {
            return Ok(Node::Cycle {
                group: CycleGroup::Named(parse_expr(&markup[..end])),
                values: cycle_values(values),
                line,
            });
        }
    }
    if fragment_ends(markup, 0).is_empty() {
        return Err(error());
    }
    let values = cycle_values(markup);
    let mut key = String::from("[");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            key.push_str(", ");
        }
        match v {
            Expr::Literal(value) => value.inspect(&mut key),
            _ => key.push_str(&format!("<variable of cycle tag {serial}>")),
        }
    }
    key.push(']');
    Ok(Node::Cycle {
        group: CycleGroup::Values(key),
        values,
        line,
    })
}

fn cycle_values(markup: &str) -> Vec<Expr> {
    markup
        .split(',')
        .filter_map(|part| find_fragment(part, 0).map(|(s, e)| parse_expr(&part[s..e])))
        .collect()
}

/// The literal value of an expression, when it has one.
pub fn literal(expr: &Expr) -> Option<&Value> {
    match expr {
        Expr::Literal(v) => Some(v),
        _ => None,
    }
}
