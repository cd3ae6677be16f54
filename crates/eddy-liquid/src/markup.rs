//! Reading tag and output markup the way Shopify Liquid's default (lax) parser reads it. Lax
//! Liquid is defined by a handful of regular expressions (`QuotedFragment`, `VariableParser`,
//! the filter and argument scanners); the scanners here follow them character for character,
//! so that odd markup (`{{ a==b }}`, `{{ x | f: 1 2 }}`) means what it means in Shopify's engine.
//!
//! A dialect may rewrite markup before any of this ([`crate::dialect::Dialect::rewrite_markup`]).

use crate::value::{Value, leading_int};

/// An expression: a literal, a variable lookup or a range.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// `name.key[expr]…`.
    Lookup(Lookup),
    /// `(a..b)` with a computed end.
    Range(Box<Expr>, Box<Expr>),
    /// `blank` in a condition.
    Blank,
    /// `empty` in a condition.
    Empty,
}

/// A variable lookup: a name (a string, or an expression in brackets) and its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Lookup {
    /// The variable's name.
    pub name: Box<Expr>,
    /// Keys and indexes, in order.
    pub keys: Vec<Key>,
}

/// One step of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// `.name`: a key, or `size`/`first`/`last` when the object has no such key.
    Name(String),
    /// `[expr]`.
    Expr(Expr),
}

/// A filter call: name, positional and keyword arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The filter's name.
    pub name: String,
    /// Who applies it, looked up once at parse time.
    pub kind: FilterKind,
    /// Positional arguments.
    pub args: Vec<Expr>,
    /// Keyword arguments (`allow_false: true`).
    pub kwargs: Vec<(String, Expr)>,
}

/// (least, most) arguments of a filter, counting its input.
pub type Arity = (usize, Option<usize>);

/// Who applies a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// One of Liquid's standard filters.
    Core(Arity),
    /// One the template's dialect added.
    Dialect(Arity),
    /// None: Liquid leaves the input as it is.
    Unknown,
}

/// `expr | filter: args | …`, the content of `{{ }}`, `echo` and `assign`'s right side.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    /// The value filtered; `None` when the markup holds no expression (renders nothing).
    pub expr: Option<Expr>,
    /// The filters, in order.
    pub filters: Vec<Filter>,
}

/// One comparison of a condition: `left [op right]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The left operand.
    pub left: Expr,
    /// The operator and the right operand.
    pub op: Option<(String, Expr)>,
}

/// A condition of `if`, `unless`, `elsif`, `when`: comparisons joined by `and`/`or`, which
/// Liquid chains right to left. Kept flat, so that a chain of any length is neither parsed,
/// evaluated nor dropped by recursion.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The first comparison.
    pub first: Comparison,
    /// Each following comparison with the word that joins it to the one before.
    pub rest: Vec<(Relation, Comparison)>,
}

/// How a condition joins the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Both must hold.
    And,
    /// Either holds.
    Or,
}

/// The end of a quoted string starting at `i` (`"…"` or `'…'`), if it closes.
fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    let q = *s.get(i)?;
    if q != b'"' && q != b'\'' {
        return None;
    }
    let close = s[i + 1..].iter().position(|&b| b == q)?;
    Some(i + 1 + close + 1)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Every end a `QuotedFragment` starting at `i` can have, longest first (the regex's
/// backtracking points). Empty when none starts there.
pub fn fragment_ends(s: &str, i: usize) -> Vec<usize> {
    let b = s.as_bytes();
    let mut ends = Vec::new();
    let mut j = i;
    while let Some(&c) = b.get(j) {
        if c == b'"' || c == b'\'' {
            match quoted_end(b, j) {
                Some(e) => j = e,
                None => break,
            }
        } else if is_space(c) || c == b',' || c == b'|' {
            break;
        } else {
            j += utf8_len(c);
        }
        ends.push(j);
    }
    ends.reverse();
    ends
}

/// The `QuotedFragment` at `i`: a closed quoted string alone, else the longest run of
/// non-separators and quoted strings.
pub fn fragment_at(s: &str, i: usize) -> Option<usize> {
    if let Some(e) = quoted_end(s.as_bytes(), i) {
        return Some(e);
    }
    fragment_ends(s, i).first().copied()
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The first `QuotedFragment` at or after `from`: (start, end).
pub fn find_fragment(s: &str, from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i < s.len() {
        if let Some(e) = fragment_at(s, i) {
            return Some((i, e));
        }
        i += utf8_len(s.as_bytes()[i]);
    }
    None
}

/// How deep ranges may nest in their own ends (`((1..2)..3)`): past it the expression is nil,
/// so that no markup can make the parser recurse without end.
const MAX_RANGE_NESTING: usize = 32;

/// `Expression.parse`: literals, ranges, numbers, else a variable lookup.
pub fn parse_expr(markup: &str) -> Expr {
    parse_expr_nested(markup, 0)
}

fn parse_expr_nested(markup: &str, nesting: usize) -> Expr {
    let m = markup.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    if m.len() >= 2
        && ((m.starts_with('"') && m.ends_with('"')) || (m.starts_with('\'') && m.ends_with('\'')))
    {
        return Expr::Literal(Value::str(&m[1..m.len() - 1]));
    }
    if is_integer(m) {
        // Ruby's integers have no bound.
        return match m.parse::<i64>() {
            Ok(i) => Expr::Literal(Value::Int(i)),
            // Up to the size arithmetic allows (20,000 digits); a longer literal reads as the
            // float nearest it, so that parsing it costs no more than its length.
            Err(_) if m.len() <= 20_000 => Expr::Literal(
                m.parse::<num_bigint::BigInt>()
                    .map(Value::integer)
                    .unwrap_or(Value::Nil),
            ),
            Err(_) => Expr::Literal(Value::Float(m.parse().unwrap_or(f64::INFINITY))),
        };
    }
    if let Some((a, b)) = range_parts(m) {
        if nesting >= MAX_RANGE_NESTING {
            return Expr::Literal(Value::Nil);
        }
        let (start, end) = (
            parse_expr_nested(a, nesting + 1),
            parse_expr_nested(b, nesting + 1),
        );
        return match (&start, &end) {
            (Expr::Literal(x), Expr::Literal(y)) => {
                Expr::Literal(Value::Range(literal_to_i(x), literal_to_i(y)))
            }
            _ => Expr::Range(Box::new(start), Box::new(end)),
        };
    }
    if is_float(m) {
        return Expr::Literal(Value::Float(ruby_to_f(m)));
    }
    match m {
        "" | "nil" | "null" => Expr::Literal(Value::Nil),
        "true" => Expr::Literal(Value::Bool(true)),
        "false" => Expr::Literal(Value::Bool(false)),
        "blank" | "empty" => Expr::Literal(Value::str("")),
        _ => Expr::Lookup(parse_lookup(m)),
    }
}

/// `Condition.parse_expression`: `blank` and `empty` compare by method, else an expression.
pub fn parse_condition_operand(markup: &str) -> Expr {
    match markup {
        "blank" => Expr::Blank,
        "empty" => Expr::Empty,
        _ => parse_expr(markup),
    }
}

fn literal_to_i(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Str(s) => leading_int(s),
        _ => 0,
    }
}

fn is_integer(m: &str) -> bool {
    let body = m.strip_prefix('-').unwrap_or(m);
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit())
}

/// `\A(-?\d[\d\.]+)\z`.
fn is_float(m: &str) -> bool {
    let body = m.strip_prefix('-').unwrap_or(m);
    let b = body.as_bytes();
    b.len() >= 2 && b[0].is_ascii_digit() && b[1..].iter().all(|c| c.is_ascii_digit() || *c == b'.')
}

/// Ruby's `String#to_f` on `\d[\d.]+`: the leading `\d+(\.\d+)?`.
fn ruby_to_f(m: &str) -> f64 {
    let (neg, body) = match m.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, m),
    };
    let mut end = body.bytes().take_while(|b| b.is_ascii_digit()).count();
    if body.as_bytes().get(end) == Some(&b'.') {
        let frac = body[end + 1..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac > 0 {
            end += 1 + frac;
        }
    }
    let v: f64 = body[..end].parse().unwrap_or(0.0);
    if neg { -v } else { v }
}

/// `\A\(\s*(?>(\S+)\s*\.\.)\s*(\S+)\s*\)\z`: the two ends of a range literal.
fn range_parts(m: &str) -> Option<(&str, &str)> {
    let inner = m.strip_prefix('(')?.strip_suffix(')')?;
    let inner_trim = inner.trim_start();
    // The first part is \S+ reaching the last ".." it can (greedy, then backtracking).
    let first_space = inner_trim
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(inner_trim.len());
    let mut candidates: Vec<usize> = inner_trim.match_indices("..").map(|(i, _)| i).collect();
    candidates.reverse();
    for dots in candidates {
        let left = &inner_trim[..dots];
        let left_trimmed = left.trim_end();
        if left_trimmed.is_empty() || left_trimmed.len() > first_space {
            continue;
        }
        if left_trimmed.contains(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        let right = inner_trim[dots + 2..].trim();
        if right.is_empty() || right.contains(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        return Some((left_trimmed, right));
    }
    None
}

/// `VariableLookup.parse`: `markup.scan(/\[[^\]]+\]|[\w-]+\??/)`.
pub fn parse_lookup(markup: &str) -> Lookup {
    let mut parts: Vec<&str> = Vec::new();
    let b = markup.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            if let Some(close) = markup[i + 1..].find(']')
                && close > 0
            {
                parts.push(&markup[i..i + 1 + close + 1]);
                i += close + 2;
                continue;
            }
            i += 1;
            continue;
        }
        if is_word(markup, i) {
            let start = i;
            while i < b.len() && is_word(markup, i) {
                i += utf8_len(b[i]);
            }
            if b.get(i) == Some(&b'?') {
                i += 1;
            }
            parts.push(&markup[start..i]);
            continue;
        }
        i += utf8_len(b[i]);
    }
    let mut parts = parts.into_iter();
    let name = match parts.next() {
        Some(p) if p.starts_with('[') => parse_expr(&p[1..p.len() - 1]),
        Some(p) => Expr::Literal(Value::str(p)),
        None => Expr::Literal(Value::Nil),
    };
    let keys = parts
        .map(|p| {
            if p.starts_with('[') {
                Key::Expr(parse_expr(&p[1..p.len() - 1]))
            } else {
                Key::Name(p.to_string())
            }
        })
        .collect();
    Lookup {
        name: Box::new(name),
        keys,
    }
}

/// `[\w-]` at `i` (Ruby's `\w` is ASCII word characters, plus any non-ASCII letter in UTF-8
/// strings; non-ASCII bytes count as word characters here).
fn is_word(s: &str, i: usize) -> bool {
    let c = s.as_bytes()[i];
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c >= 0x80
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `Variable#lax_parse`: the first fragment is the expression; after the first `|`, filters.
pub fn parse_variable(markup: &str, filter_kind: &dyn Fn(&str) -> FilterKind) -> Variable {
    let Some((start, end)) = find_fragment(markup, 0) else {
        return Variable {
            expr: None,
            filters: Vec::new(),
        };
    };
    let expr = Some(parse_expr(&markup[start..end]));
    let rest = &markup[end..];
    let mut filters = Vec::new();
    if let Some(pipe) = rest.find('|') {
        let after = rest[pipe + 1..].trim_start();
        for chunk in filter_chunks(after) {
            if let Some(filter) = parse_filter(chunk, filter_kind) {
                filters.push(filter);
            }
        }
    }
    Variable { expr, filters }
}

/// `scan(/(?:\s+|QuotedFragment|,)+/)`: the text split at each `|` outside quoted strings.
fn filter_chunks(s: &str) -> Vec<&str> {
    let mut chunks = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        let next = if is_space(c) || c == b',' {
            Some(i + 1)
        } else {
            fragment_at(s, i)
        };
        match next {
            Some(n) => {
                start.get_or_insert(i);
                i = n;
            }
            None => {
                if let Some(st) = start.take() {
                    chunks.push(&s[st..i]);
                }
                i += utf8_len(c);
            }
        }
    }
    if let Some(st) = start {
        chunks.push(&s[st..]);
    }
    chunks
}

/// One filter chunk: its name is the first `\w+`; its arguments follow `:` and `,`.
fn parse_filter(chunk: &str, filter_kind: &dyn Fn(&str) -> FilterKind) -> Option<Filter> {
    let b = chunk.as_bytes();
    let name_start = (0..b.len()).find(|&i| is_word_byte(b[i]))?;
    let name_end = (name_start..b.len())
        .find(|&i| !is_word_byte(b[i]))
        .unwrap_or(b.len());
    let name = chunk[name_start..name_end].to_string();
    let mut args = Vec::new();
    let mut kwargs = Vec::new();
    // scan(/(?::|,)\s*((?:\w+\s*\:\s*)?QuotedFragment)/)
    let mut i = 0;
    while i < b.len() {
        if b[i] != b':' && b[i] != b',' {
            i += utf8_len(b[i]);
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        // Try the keyword form first, as the regex's greedy optional group does.
        if let Some((key, value_start)) = keyword_at(chunk, j)
            && let Some(end) = fragment_at(chunk, value_start)
        {
            let value = &chunk[value_start..end];
            if is_tag_attribute_key(key) {
                kwargs.push((key.to_string(), parse_expr(value)));
            } else {
                args.push(parse_expr(&chunk[j..end]));
            }
            i = end;
            continue;
        }
        match fragment_at(chunk, j) {
            Some(end) => {
                args.push(parse_expr(&chunk[j..end]));
                i = end;
            }
            None => i += 1,
        }
    }
    Some(Filter {
        kind: filter_kind(&name),
        name,
        args,
        kwargs,
    })
}

/// `\w+\s*:\s*` at `i`: the key and where the value starts.
fn keyword_at(s: &str, i: usize) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    let mut j = i;
    while j < b.len() && is_word_byte(b[j]) {
        j += 1;
    }
    if j == i {
        return None;
    }
    let key = &s[i..j];
    let mut k = j;
    while k < b.len() && is_space(b[k]) {
        k += 1;
    }
    if b.get(k) != Some(&b':') {
        return None;
    }
    k += 1;
    while k < b.len() && is_space(b[k]) {
        k += 1;
    }
    Some((key, k))
}

/// `\A\w[\w-]*\z` (the key part of `JustTagAttributes`).
fn is_tag_attribute_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty() && is_word_byte(b[0]) && b.iter().all(|&c| is_word_byte(c) || c == b'-')
}

/// `TagAttributes` scanned over tag markup: `(\w[\w-]*)\s*:\s*(QuotedFragment)`.
pub fn tag_attributes(markup: &str) -> Vec<(String, String)> {
    let b = markup.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_word_byte(b[i]) {
            i += utf8_len(b[i]);
            continue;
        }
        let start = i;
        let mut j = i + 1;
        while j < b.len() && (is_word_byte(b[j]) || b[j] == b'-') {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && is_space(b[k]) {
            k += 1;
        }
        if b.get(k) == Some(&b':') {
            let mut v = k + 1;
            while v < b.len() && is_space(b[v]) {
                v += 1;
            }
            if let Some(end) = fragment_at(markup, v) {
                out.push((markup[start..j].to_string(), markup[v..end].to_string()));
                i = end;
                continue;
            }
        }
        // No attribute starts here; the regex retries one character on.
        i = start + 1;
    }
    out
}

/// A condition's markup split into expression chunks and `and`/`or`, as `If`'s
/// `ExpressionsAndOperators` scan splits it.
fn condition_chunks(markup: &str) -> Vec<&str> {
    let b = markup.as_bytes();
    let skip_spaces = |mut k: usize| {
        while k < b.len() && is_space(b[k]) {
            k += 1;
        }
        k
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = operator_at(markup, i) {
            out.push(&markup[i..end]);
            i = end;
            continue;
        }
        // (?:\s*(?!operator)(?:QuotedFragment|\S+)\s*)+
        let start = i;
        let mut j = i;
        let mut matched = false;
        loop {
            let k = skip_spaces(j);
            if k >= b.len() || operator_at(markup, k).is_some() {
                break;
            }
            let end = fragment_at(markup, k).unwrap_or_else(|| {
                let mut e = k;
                while e < b.len() && !is_space(b[e]) {
                    e += utf8_len(b[e]);
                }
                e
            });
            if end == k {
                break;
            }
            j = skip_spaces(end);
            matched = true;
        }
        if !matched {
            i += utf8_len(b[i]);
            continue;
        }
        out.push(&markup[start..j]);
        i = j;
    }
    out
}

/// `\b(?:\s?and\s?|\s?or\s?)\b` at `i`: the end of the operator.
fn operator_at(s: &str, i: usize) -> Option<usize> {
    let b = s.as_bytes();
    let boundary = |p: usize| {
        let before = p > 0 && is_word_byte(b[p - 1]);
        let after = p < b.len() && is_word_byte(b[p]);
        before != after
    };
    if !boundary(i) {
        return None;
    }
    let mut j = i;
    if j < b.len() && is_space(b[j]) {
        j += 1;
    }
    for word in ["and", "or"] {
        if s[j..].starts_with(word) {
            let mut e = j + word.len();
            if e < b.len() && is_space(b[e]) && boundary(e + 1) {
                e += 1;
            } else if !boundary(e) {
                continue;
            }
            return Some(e);
        }
    }
    None
}

/// Parses `if`/`elsif`/`unless` markup; `None` when it does not parse (Liquid's "Syntax Error in
/// tag 'if'").
pub fn parse_condition(markup: &str) -> Option<Condition> {
    let chunks = condition_chunks(markup);
    // Chunks alternate: comparison, operator, comparison…; Ruby reads them from the end and
    // gives up on the first that does not parse.
    if chunks.len().is_multiple_of(2) {
        return None;
    }
    let first = parse_comparison(chunks[0])?;
    let mut rest = Vec::with_capacity(chunks.len() / 2);
    for pair in chunks[1..].chunks_exact(2) {
        let relation = match pair[0].trim() {
            "and" => Relation::And,
            "or" => Relation::Or,
            _ => return None,
        };
        rest.push((relation, parse_comparison(pair[1])?));
    }
    Some(Condition { first, rest })
}

/// `(QuotedFragment)\s*([=!<>a-z_]+)?\s*(QuotedFragment)?`, searched in the chunk.
fn parse_comparison(chunk: &str) -> Option<Comparison> {
    let (start, end) = find_fragment(chunk, 0)?;
    let left = parse_condition_operand(&chunk[start..end]);
    let b = chunk.as_bytes();
    let mut i = end;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    let op_start = i;
    while i < b.len() && matches!(b[i], b'=' | b'!' | b'<' | b'>' | b'a'..=b'z' | b'_') {
        i += 1;
    }
    if i == op_start {
        return Some(Comparison { left, op: None });
    }
    let op = chunk[op_start..i].to_string();
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    let right = match fragment_at(chunk, i) {
        Some(e) => parse_condition_operand(&chunk[i..e]),
        None => Expr::Literal(Value::Nil),
    };
    Some(Comparison {
        left,
        op: Some((op, right)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_read_as_lax_liquid_reads_them() {
        let parse_variable = |markup| parse_variable(markup, &|_| FilterKind::Unknown);
        let v = parse_variable(" name | upcase | truncate: 5, '..' ");
        assert_eq!(v.filters.len(), 2);
        assert_eq!(v.filters[1].name, "truncate");
        assert_eq!(v.filters[1].args.len(), 2);
        let v = parse_variable("x | default: 1, allow_false: true");
        assert_eq!(v.filters[0].kwargs.len(), 1);
        let v = parse_variable("a==b");
        assert!(matches!(v.expr, Some(Expr::Lookup(ref l)) if l.keys.len() == 1));
    }

    #[test]
    fn conditions_chain_right_to_left() {
        let c = parse_condition("a and b or c").expect("parses");
        let relations: Vec<Relation> = c.rest.iter().map(|(r, _)| *r).collect();
        assert_eq!(relations, [Relation::And, Relation::Or]);
        let c = parse_condition("x contains 'a b'").expect("parses");
        assert_eq!(c.first.op.as_ref().map(|o| o.0.as_str()), Some("contains"));
        assert!(parse_condition("orange").expect("a name").rest.is_empty());
        assert!(parse_condition("a and").is_none());
    }

    #[test]
    fn ranges_and_numbers() {
        assert_eq!(parse_expr("(1..5)"), Expr::Literal(Value::Range(1, 5)));
        assert!(matches!(parse_expr("(1..n)"), Expr::Range(_, _)));
        assert_eq!(parse_expr("1.5.2"), Expr::Literal(Value::Float(1.5)));
        assert_eq!(parse_expr("-3"), Expr::Literal(Value::Int(-3)));
    }
}
