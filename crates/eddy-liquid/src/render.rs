//! Rendering a parsed template: scopes as Liquid keeps them (`assign` writes the outermost,
//! loops push their own), errors printed in place as `Liquid error: …` (except in tags that
//! print nothing), `break`/`continue` as interrupts, and Braze's abort.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::dialect::Dialect;
use crate::fetch::{Fetch, FetchError, Request, Response};
use crate::filters;
use crate::markup::{Comparison, Condition, Expr, Key, Lookup, Relation, Variable};
use crate::stop::Stop;
use crate::tree::{Block, CycleGroup, ForLoop, Node, Offset, Partials, Runtime, TableRow};
use crate::value::{Number, Object, Value, leading_int, to_integer};

/// Bounds that keep one template from taking the process down: whatever a template does, its
/// render ends within these, with [`Stop::Fatal`] naming the bound it passed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of output at most.
    pub max_output_bytes: usize,
    /// Loop iterations and nodes rendered at most.
    pub max_steps: u64,
    /// Bytes the values a render builds may hold at once (its variables plus the value being
    /// computed), estimated before a filter that multiplies its input runs.
    pub max_memory_bytes: usize,
    /// How long a render may take, Connected Content calls included.
    pub max_duration: std::time::Duration,
    /// How deep partials (Braze's content blocks) may include each other (Braze allows two
    /// levels).
    pub max_content_block_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: 10 * 1024 * 1024,
            max_steps: 5_000_000,
            max_memory_bytes: 64 * 1024 * 1024,
            max_duration: std::time::Duration::from_secs(15),
            max_content_block_depth: 2,
        }
    }
}

/// What renders a template: the variables, the registers tags keep, and the outside world.
pub struct Context<'a> {
    /// The render's variables, read-only.
    environment: &'a Object,
    /// `increment`/`decrement` counters: Liquid keeps them in the render's variables
    /// (`environments.first`), so they shadow a variable of the same name.
    counters: HashMap<String, Value>,
    /// Scopes, outermost first: `assign` writes `scopes[0]`, loops push their own.
    scopes: Vec<Object>,
    cycles: HashMap<String, usize>,
    for_offsets: HashMap<String, i64>,
    /// The loops being rendered, innermost last: what `parentloop` shows.
    for_stack: Vec<LoopState>,
    ifchanged: Option<String>,
    interrupt: Option<Interrupt>,
    steps: u64,
    limits: Limits,
    /// When the render started: [`Limits::max_duration`] counts from here.
    started: std::time::Instant,
    /// Bytes held by the variables `assign` and `capture` set (by name).
    held: HashMap<String, usize>,
    /// Their sum.
    held_total: usize,
    /// The template's dialect: the filters and variables the core does not know.
    dialect: &'a dyn Dialect,
    /// The network tags may reach (none: their calls are refused).
    pub fetch: Option<&'a dyn Fetch>,
    /// Templates a render may include by name (Braze's content blocks).
    pub partials: Option<&'a dyn Partials>,
    /// The partials being rendered, outermost first.
    partials_rendering: Vec<String>,
    /// Every error the render met, printed in place or not (Ruby's `template.errors`): a send
    /// aborts its recipient on the first, a preview lists them.
    pub errors: Vec<String>,
    /// What went wrong without being a Liquid error (a Connected Content host eddy refuses):
    /// the message renders as Braze renders an unavailable URL, the operator is told.
    pub warnings: Vec<String>,
}

impl Runtime for Context<'_> {
    fn eval(&mut self, expr: &Expr) -> Result<Value, Stop> {
        Context::eval(self, expr)
    }

    fn key(&mut self, key: &Key) -> Result<Value, Stop> {
        match key {
            Key::Name(name) => Ok(Value::str(name)),
            Key::Expr(e) => Context::eval(self, e),
        }
    }

    fn render_fragment(&mut self, block: &Block) -> Result<String, Stop> {
        Context::render_fragment(self, block)
    }

    fn render_partial(&mut self, name: &str) -> Option<Result<Value, Stop>> {
        self.partials?;
        Some(self.partial(name))
    }

    fn assign_weighed(&mut self, name: &str, value: Value, bytes: usize) -> Result<(), Stop> {
        Context::assign_weighed(self, name, value, bytes)
    }

    fn time_left(&self) -> Result<std::time::Duration, Stop> {
        Context::time_left(self)
    }

    fn fetch(&self, request: &Request) -> Result<Response, FetchError> {
        match self.fetch {
            Some(fetch) => fetch.fetch(request),
            None => Err(FetchError::Refused(
                "connected content is not available here".into(),
            )),
        }
    }

    fn catalog_items(
        &self,
        catalog: &str,
        ids: &[String],
    ) -> Result<Vec<serde_json::Value>, FetchError> {
        match self.fetch {
            Some(fetch) => fetch.catalog_items(catalog, ids),
            None => Err(FetchError::Refused(
                "catalogs are not available here".into(),
            )),
        }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    Break,
    Continue,
}

impl<'a> Context<'a> {
    /// A context over these variables, for a template of this dialect.
    pub fn new(environment: &'a Object, limits: Limits, dialect: &'a dyn Dialect) -> Context<'a> {
        Context {
            dialect,
            environment,
            counters: HashMap::new(),
            scopes: vec![Object::default()],
            cycles: HashMap::new(),
            for_offsets: HashMap::new(),
            for_stack: Vec::new(),
            ifchanged: None,
            interrupt: None,
            steps: 0,
            limits,
            started: std::time::Instant::now(),
            held: HashMap::new(),
            held_total: 0,
            fetch: None,
            partials: None,
            partials_rendering: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Sets a variable in the outermost scope, as `assign` does. The variable's bytes count
    /// toward the render's memory from now on, in place of what it held before.
    pub fn assign(&mut self, name: &str, value: Value) -> Result<(), Stop> {
        let bytes = value.weight();
        self.assign_weighed(name, value, bytes)
    }

    /// [`Context::assign`] of a value whose weight is known already (a cached answer's).
    pub fn assign_weighed(&mut self, name: &str, value: Value, bytes: usize) -> Result<(), Stop> {
        let before = self.held.get(name).copied().unwrap_or(0);
        let total = (self.held_total - before).saturating_add(bytes);
        if total > self.limits.max_memory_bytes {
            return Err(self.over_memory());
        }
        self.held_total = total;
        self.held.insert(name.to_string(), bytes);
        self.scopes[0].insert(name.to_string(), value);
        Ok(())
    }

    /// Whether a value of `bytes` more fits beside the variables the render holds.
    fn fits(&self, bytes: usize) -> Result<(), Stop> {
        if self.held_total.saturating_add(bytes) > self.limits.max_memory_bytes {
            return Err(self.over_memory());
        }
        Ok(())
    }

    fn over_memory(&self) -> Stop {
        Stop::Fatal(format!(
            "the template built more than {} bytes of values",
            self.limits.max_memory_bytes
        ))
    }

    /// What is left of the render's time, or the error that it is spent.
    pub fn time_left(&self) -> Result<std::time::Duration, Stop> {
        match self.limits.max_duration.checked_sub(self.started.elapsed()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(Stop::Fatal(format!(
                "the template took more than {} s to render",
                self.limits.max_duration.as_secs_f64()
            ))),
        }
    }

    /// A variable by name: the innermost scope that has it, then the counters, then the render's
    /// variables.
    fn find(&self, name: &str) -> Option<&Value> {
        for scope in self.scopes.iter().rev() {
            if let Some(v) = scope.get(name) {
                return Some(v);
            }
        }
        self.counters
            .get(name)
            .or_else(|| self.environment.get(name))
    }

    fn step(&mut self, n: u64) -> Result<(), Stop> {
        let before = self.steps;
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.limits.max_steps {
            return Err(Stop::Fatal(format!(
                "the template took more than {} steps",
                self.limits.max_steps
            )));
        }
        // The clock is read every 4,096 steps: cheap, and often enough to stop within
        // milliseconds of the budget.
        if before >> 12 != self.steps >> 12 {
            self.time_left()?;
        }
        Ok(())
    }

    /// Evaluates an expression.
    pub fn eval(&mut self, expr: &Expr) -> Result<Value, Stop> {
        match expr {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Lookup(lookup) => self.lookup(lookup),
            Expr::Range(a, b) => {
                let start = range_end(&self.eval(a)?)?;
                let end = range_end(&self.eval(b)?)?;
                Ok(Value::Range(start, end))
            }
            // Alone, `blank` and `empty` are objects, so truthy; they print as "".
            Expr::Blank | Expr::Empty => Ok(Value::str("")),
        }
    }

    fn lookup(&mut self, lookup: &Lookup) -> Result<Value, Stop> {
        // A name written in the template is read in place; a bracketed one is evaluated.
        let evaluated_name;
        let name: &str = match lookup.name.as_ref() {
            Expr::Literal(Value::Str(n)) => n,
            other => {
                evaluated_name = self.eval(other)?;
                match &evaluated_name {
                    Value::Str(n) => n,
                    _ => return Ok(Value::Nil),
                }
            }
        };
        let dialect = self.dialect;
        if let Some(value) = dialect.variable(self, name, lookup.keys.first()) {
            return value;
        }
        // Keys in brackets are evaluated first; then the path is walked by reference, so only
        // the value found is copied.
        let mut evaluated: Vec<Value> = Vec::new();
        for key in &lookup.keys {
            if let Key::Expr(e) = key {
                evaluated.push(self.eval(e)?);
            }
        }
        let Some(mut object) = self.find(name) else {
            return Ok(Value::Nil);
        };
        let mut owned: Option<Value> = None;
        let mut next_evaluated = evaluated.iter();
        for key in &lookup.keys {
            let (key_ref, command) = match key {
                Key::Name(n) => (KeyRef::Name(n), Some(n.as_str())),
                Key::Expr(_) => match next_evaluated.next() {
                    Some(v) => (KeyRef::Value(v), None),
                    None => return Ok(Value::Nil),
                },
            };
            enum Step<'v> {
                Borrow(&'v Value),
                Own(Value),
            }
            let step = match &owned {
                None => match index_ref(object, key_ref) {
                    Some(IndexResult::Ref(v)) => Step::Borrow(v),
                    Some(IndexResult::Owned(v)) => Step::Own(v),
                    None => match command.and_then(|c| command_of(object, c)) {
                        Some(v) => Step::Own(v),
                        None => return Ok(Value::Nil),
                    },
                },
                Some(current) => match index_ref(current, key_ref) {
                    Some(IndexResult::Ref(v)) => Step::Own(v.clone()),
                    Some(IndexResult::Owned(v)) => Step::Own(v),
                    None => match command.and_then(|c| command_of(current, c)) {
                        Some(v) => Step::Own(v),
                        None => return Ok(Value::Nil),
                    },
                },
            };
            match step {
                Step::Borrow(v) => object = v,
                Step::Own(v) => owned = Some(v),
            }
        }
        Ok(owned.unwrap_or_else(|| object.clone()))
    }

    /// Renders a partial in the current context (its assignments are seen after it).
    fn partial(&mut self, name: &str) -> Result<Value, Stop> {
        let Some(partial) = self.partials.and_then(|partials| partials.partial(name)) else {
            return Ok(Value::Nil);
        };
        if self.partials_rendering.iter().any(|b| b == name) {
            let mut chain = self.partials_rendering.join(" → ");
            chain.push_str(" → ");
            chain.push_str(name);
            return Err(Stop::Fatal(format!(
                "content block '{name}' includes itself ({chain})"
            )));
        }
        if self.partials_rendering.len() >= self.limits.max_content_block_depth {
            let mut chain = self.partials_rendering.join(" → ");
            chain.push_str(" → ");
            chain.push_str(name);
            return Err(Stop::Fatal(format!(
                "content blocks nest more than {} levels deep ({chain})",
                self.limits.max_content_block_depth
            )));
        }
        self.partials_rendering.push(name.to_string());
        let mut out = String::new();
        let rendered = self.render_block(partial, &mut out);
        self.partials_rendering.pop();
        rendered?;
        Ok(Value::Str(out))
    }

    /// Evaluates `expr | filters…`.
    pub fn eval_variable(&mut self, variable: &Variable) -> Result<Value, Stop> {
        let mut value = match &variable.expr {
            Some(e) => self.eval(e)?,
            None => Value::Nil,
        };
        for filter in &variable.filters {
            // Literal arguments are lent to the filter, not copied.
            let mut args: Vec<Cow<'_, Value>> = Vec::new();
            if !filter.args.is_empty() {
                // Room for the keyword hash too, which Ruby passes as one more argument.
                args.reserve_exact(filter.args.len() + usize::from(!filter.kwargs.is_empty()));
                for a in &filter.args {
                    args.push(match a {
                        Expr::Literal(v) => Cow::Borrowed(v),
                        other => Cow::Owned(self.eval(other)?),
                    });
                }
            }
            let mut kwargs = Vec::with_capacity(filter.kwargs.len());
            for (k, e) in &filter.kwargs {
                kwargs.push((k.clone(), self.eval(e)?));
            }
            // A filter that multiplies its input (replace, join, a range's elements) is refused
            // before it allocates; any other result is checked once made.
            if let Some(bound) = filters::output_bound(&filter.name, &value, &args) {
                self.fits(bound)?;
            }
            value = filters::apply(&filter.name, filter.kind, value, args, kwargs, self.dialect)?;
            self.fits(value.weight())?;
        }
        Ok(value)
    }

    /// Renders a block into `out`.
    pub fn render_block(&mut self, block: &Block, out: &mut String) -> Result<(), Stop> {
        self.step(block.nodes.len() as u64)?;
        for node in &block.nodes {
            if let Node::Text(t) = node {
                out.push_str(t);
            } else {
                match self.render_node(node, out) {
                    Ok(()) => {}
                    Err(Stop::Error(message)) => {
                        // Output prints its error; other tags that print nothing swallow theirs.
                        if matches!(node, Node::Output(..)) || !node.is_blank() {
                            out.push_str("Liquid error: ");
                            out.push_str(&message);
                        }
                        self.errors.push(message);
                    }
                    Err(other) => return Err(other),
                }
                if self.interrupt.is_some() {
                    break;
                }
            }
            if out.len() > self.limits.max_output_bytes {
                return Err(Stop::Fatal(format!(
                    "the output passed {} bytes",
                    self.limits.max_output_bytes
                )));
            }
        }
        Ok(())
    }

    fn render_node(&mut self, node: &Node, out: &mut String) -> Result<(), Stop> {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Output(variable, _) | Node::Echo(variable, _) => {
                self.eval_variable(variable)?.render(out);
            }
            Node::Assign(to, variable, _) => {
                let value = self.eval_variable(variable)?;
                self.assign(to, value)?;
            }
            Node::Capture(to, block) => {
                let mut captured = String::new();
                self.render_block(block, &mut captured)?;
                self.assign(to, Value::Str(captured))?;
            }
            Node::If {
                branches,
                negate_first,
                ..
            } => {
                for (i, (condition, block)) in branches.iter().enumerate() {
                    let holds = match condition {
                        None => true,
                        Some(c) => {
                            let v = self.condition(c)?;
                            if i == 0 && *negate_first { !v } else { v }
                        }
                    };
                    if holds {
                        return self.render_block(block, out);
                    }
                }
            }
            Node::Case {
                left, arms, bodies, ..
            } => {
                let mut matched = false;
                for (value, body) in arms {
                    match value {
                        None => {
                            if !matched {
                                self.render_block(&bodies[*body], out)?;
                            }
                        }
                        Some(right) => {
                            let l = self.eval(left)?;
                            let holds = compare(&l, "==", right, self)?;
                            if holds {
                                matched = true;
                                self.render_block(&bodies[*body], out)?;
                            }
                        }
                    }
                }
            }
            Node::For(for_loop) => self.render_for(for_loop, out)?,
            Node::TableRow(table) => self.render_tablerow(table, out)?,
            Node::Cycle { group, values, .. } => {
                if values.is_empty() {
                    return Ok(());
                }
                let key = match group {
                    CycleGroup::Named(e) => {
                        let mut k = String::from("named:");
                        self.eval(e)?.inspect(&mut k);
                        k
                    }
                    CycleGroup::Values(k) => k.clone(),
                };
                let position = self.cycles.get(&key).copied().unwrap_or(0);
                let value = self.eval(&values[position.min(values.len() - 1)])?;
                value.render_cycle(out);
                let next = if position + 1 >= values.len() {
                    0
                } else {
                    position + 1
                };
                self.cycles.insert(key, next);
            }
            Node::Counter(name, delta) => {
                let current = match self
                    .counters
                    .get(name)
                    .or_else(|| self.environment.get(name))
                {
                    Some(Value::Int(i)) => *i,
                    Some(Value::Nil) | None => 0,
                    Some(other) => {
                        return Err(Stop::Error(format!(
                            "undefined method `+' for {}",
                            other.class_name()
                        )));
                    }
                };
                let value = current + delta;
                self.counters.insert(name.clone(), Value::Int(value));
                let shown = if *delta > 0 { current } else { value };
                out.push_str(&shown.to_string());
            }
            Node::Raw(body) => out.push_str(body),
            Node::Comment => {}
            Node::Break => self.interrupt = Some(Interrupt::Break),
            Node::Continue => self.interrupt = Some(Interrupt::Continue),
            Node::IfChanged(block) => {
                let mut rendered = String::new();
                self.render_block(block, &mut rendered)?;
                if self.ifchanged.as_deref() != Some(rendered.as_str()) {
                    out.push_str(&rendered);
                    self.ifchanged = Some(rendered);
                }
            }
            Node::Include(_) => {
                return Err(Stop::Error(
                    "This liquid context does not allow includes.".into(),
                ));
            }
            Node::Custom(tag, _) => tag.render(self, out)?,
        }
        Ok(())
    }

    /// Renders a template fragment (a Connected Content URL, header or body) to a string.
    pub fn render_fragment(&mut self, block: &Block) -> Result<String, Stop> {
        let mut out = String::new();
        self.render_block(block, &mut out)?;
        Ok(out)
    }

    fn render_for(&mut self, f: &ForLoop, out: &mut String) -> Result<(), Stop> {
        let from = match &f.offset {
            Offset::Continue => self.for_offsets.get(&f.name).copied().unwrap_or(0),
            Offset::At(e) => match self.eval(e)? {
                Value::Nil => 0,
                v => to_integer(&v)?,
            },
            Offset::None => 0,
        };
        let collection = self.eval(&f.collection)?;
        let to = match &f.limit {
            Some(e) => match self.eval(e)? {
                Value::Nil => None,
                v => Some(to_integer(&v)? + from),
            },
            None => None,
        };
        let mut segment = Segment::of(collection, from, to);
        if f.reversed {
            segment.reverse();
        }
        self.for_offsets
            .insert(f.name.clone(), from.saturating_add(segment.len() as i64));
        if segment.len() == 0 {
            if let Some(otherwise) = &f.otherwise {
                self.render_block(otherwise, out)?;
            }
            return Ok(());
        }
        let length = segment.len();
        // The loop object is built once and updated in place; `parentloop` is the enclosing
        // loop as it is when this loop starts.
        let parent = self.for_stack.last().map(LoopState::object);
        let state = LoopState {
            name: f.name.clone(),
            index: 0,
            length,
            parent,
        };
        let mut scope = Object::default();
        scope.insert("forloop".into(), Value::object(state.object()));
        self.for_stack.push(state);
        self.scopes.push(scope);
        let result = (|| {
            for (i, item) in segment.enumerate() {
                self.step(1)?;
                if let Some(state) = self.for_stack.last_mut() {
                    state.index = i;
                }
                if let Some(scope) = self.scopes.last_mut() {
                    if let Some((_, Value::Object(forloop))) = scope.get_index_mut(0) {
                        set_position(Arc::make_mut(forloop), i as i64, length as i64);
                    }
                    match scope.get_mut(f.variable.as_str()) {
                        Some(slot) => *slot = item,
                        None => {
                            scope.insert(f.variable.clone(), item);
                        }
                    }
                }
                self.render_block(&f.body, out)?;
                match self.interrupt.take() {
                    Some(Interrupt::Break) => break,
                    Some(Interrupt::Continue) | None => {}
                }
            }
            Ok(())
        })();
        self.for_stack.pop();
        self.scopes.pop();
        result
    }

    fn render_tablerow(&mut self, t: &TableRow, out: &mut String) -> Result<(), Stop> {
        let collection = self.eval(&t.collection)?;
        if matches!(collection, Value::Nil) {
            return Ok(());
        }
        let attribute = |name: &str| t.attributes.iter().find(|(k, _)| k == name).map(|(_, e)| e);
        let from = match attribute("offset") {
            Some(e) => ruby_to_i(&self.eval(e)?),
            None => 0,
        };
        let to = match attribute("limit") {
            Some(e) => Some(from + ruby_to_i(&self.eval(e)?)),
            None => None,
        };
        let items = Segment::of(collection, from, to);
        let length = items.len() as i64;
        let cols = match attribute("cols") {
            Some(e) => ruby_to_i(&self.eval(e)?),
            None => 0,
        };
        out.push_str("<tr class=\"row1\">\n");
        self.scopes.push(Object::default());
        let result = (|| {
            let (mut row, mut col) = (1i64, 1i64);
            for (index, item) in items.enumerate() {
                self.step(1)?;
                let index = index as i64;
                let mut drop = Object::default();
                let last = index == length - 1;
                drop.insert("length".into(), Value::Int(length));
                drop.insert("index".into(), Value::Int(index + 1));
                drop.insert("index0".into(), Value::Int(index));
                drop.insert("rindex".into(), Value::Int(length - index));
                drop.insert("rindex0".into(), Value::Int(length - index - 1));
                drop.insert("first".into(), Value::Bool(index == 0));
                drop.insert("last".into(), Value::Bool(last));
                drop.insert("col".into(), Value::Int(col));
                drop.insert("col0".into(), Value::Int(col - 1));
                drop.insert("row".into(), Value::Int(row));
                drop.insert("col_first".into(), Value::Bool(col == 1));
                drop.insert("col_last".into(), Value::Bool(col == cols));
                if let Some(scope) = self.scopes.last_mut() {
                    scope.insert("tablerowloop".into(), Value::object(drop));
                    scope.insert(t.variable.clone(), item);
                }
                out.push_str(&format!("<td class=\"col{col}\">"));
                self.render_block(&t.body, out)?;
                out.push_str("</td>");
                if col == cols && !last {
                    out.push_str(&format!("</tr>\n<tr class=\"row{}\">", row + 1));
                }
                if col == cols {
                    col = 1;
                    row += 1;
                } else {
                    col += 1;
                }
            }
            Ok(())
        })();
        self.scopes.pop();
        result?;
        out.push_str("</tr>\n");
        Ok(())
    }

    /// Evaluates a condition chain as Liquid chains it, right to left: `a or b and c` is
    /// `a or (b and c)`, so a comparison decides the rest as soon as its word says so.
    pub fn condition(&mut self, condition: &Condition) -> Result<bool, Stop> {
        let mut result = self.comparison(&condition.first)?;
        for (relation, next) in &condition.rest {
            match relation {
                Relation::Or if result => return Ok(true),
                Relation::And if !result => return Ok(false),
                _ => result = self.comparison(next)?,
            }
        }
        Ok(result)
    }

    fn comparison(&mut self, comparison: &Comparison) -> Result<bool, Stop> {
        match &comparison.op {
            None => Ok(self.eval(&comparison.left)?.truthy()
                || matches!(comparison.left, Expr::Blank | Expr::Empty)),
            Some((op, right)) => {
                let left = self.eval(&comparison.left)?;
                compare_exprs((left, &comparison.left), op, right, self)
            }
        }
    }
}

fn compare(left: &Value, op: &str, right: &Expr, ctx: &mut Context<'_>) -> Result<bool, Stop> {
    compare_exprs((left.clone(), &Expr::Literal(Value::Nil)), op, right, ctx)
}

/// `Condition#interpret_condition` for an operator.
fn compare_exprs(
    (left, left_expr): (Value, &Expr),
    op: &str,
    right_expr: &Expr,
    ctx: &mut Context<'_>,
) -> Result<bool, Stop> {
    // `blank`/`empty` on either side compare by method (`x == empty` is `x.empty?`).
    let method = |e: &Expr| match e {
        Expr::Blank => Some("blank"),
        Expr::Empty => Some("empty"),
        _ => None,
    };
    let right = ctx.eval(right_expr)?;
    let literal_side = match (method(left_expr), method(right_expr)) {
        (Some(m), _) => Some((m, &right)),
        (None, Some(m)) => Some((m, &left)),
        _ => None,
    };
    let equal = || -> bool {
        match literal_side {
            // Plain Ruby objects have no `blank?`: such a comparison is never true.
            Some(("blank", _)) => false,
            Some((_, value)) => value.is_empty().unwrap_or(false),
            None => left.liquid_eq(&right),
        }
    };
    // A method literal has no `<` nor `include?`; as the right side of `contains` it is a
    // string that reads as "".
    let (left_method, right_method) = (method(left_expr).is_some(), method(right_expr).is_some());
    match op {
        "==" => Ok(equal()),
        "!=" | "<>" => Ok(!equal()),
        "contains" if left_method => Ok(false),
        "contains" if right_method => Ok(matches!(left, Value::Str(_))),
        "contains" => Ok(contains(&left, &right)),
        "<" | ">" | "<=" | ">=" if left_method || right_method => Ok(false),
        "<" | ">" | "<=" | ">=" => ordered(&left, op, &right),
        other => Err(Stop::Error(format!("Unknown operator {other}"))),
    }
}

fn contains(left: &Value, right: &Value) -> bool {
    if !left.truthy() || !right.truthy() {
        return false;
    }
    match left {
        Value::Str(s) => s.contains(right.to_string_lossy().as_str()),
        Value::Array(items) => items.iter().any(|i| i.liquid_eq(right)),
        Value::Object(o) => matches!(right, Value::Str(k) if o.contains_key(k)),
        Value::Range(a, b) => match right {
            Value::Int(i) => a <= i && i <= b,
            Value::Float(f) => (*a as f64) <= *f && *f <= (*b as f64),
            _ => false,
        },
        _ => false,
    }
}

/// `<`, `>`, `<=`, `>=` as Ruby answers them: numbers and strings compare, other pairs raise
/// "comparison of X with Y failed"; values without the operator (nil, booleans, arrays) give nil.
fn ordered(left: &Value, op: &str, right: &Value) -> Result<bool, Stop> {
    let has_operator = |v: &Value| {
        matches!(
            v,
            Value::Int(_) | Value::Big(_) | Value::Float(_) | Value::Str(_)
        )
    };
    if !has_operator(left) || !has_operator(right) {
        return Ok(false);
    }
    let Some(ordering) = left.ruby_cmp(right) else {
        let right_shown = match (left, right) {
            // String#< names the other value itself, Numeric#< its class.
            (Value::Str(_), other) => {
                let mut s = String::new();
                other.inspect(&mut s);
                s
            }
            (_, other) => other.class_name().to_string(),
        };
        return Err(Stop::Error(format!(
            "comparison of {} with {right_shown} failed",
            left.class_name()
        )));
    };
    Ok(match op {
        "<" => ordering.is_lt(),
        ">" => ordering.is_gt(),
        "<=" => ordering.is_le(),
        _ => ordering.is_ge(),
    })
}

/// What indexing gave: a value inside the object, or a computed one (a range element).
enum IndexResult<'v> {
    Ref(&'v Value),
    Owned(Value),
}

/// A lookup key: a name written in the template, or an evaluated bracket.
#[derive(Clone, Copy)]
enum KeyRef<'k> {
    Name(&'k str),
    Value(&'k Value),
}

/// `object[key]` where Liquid allows it: a hash by key, an array by integer index.
fn index_ref<'v>(object: &'v Value, key: KeyRef<'_>) -> Option<IndexResult<'v>> {
    match (object, key) {
        (Value::Object(o), KeyRef::Name(k)) => o.get(k).map(IndexResult::Ref),
        (Value::Object(o), KeyRef::Value(Value::Str(k))) => o.get(k.as_str()).map(IndexResult::Ref),
        (Value::Array(a), KeyRef::Value(Value::Int(i))) => {
            let len = a.len() as i64;
            let at = if *i < 0 { len + i } else { *i };
            Some(if (0..len).contains(&at) {
                IndexResult::Ref(&a[at as usize])
            } else {
                IndexResult::Owned(Value::Nil)
            })
        }
        (Value::Range(start, end), KeyRef::Value(Value::Int(i))) => {
            let len = (end - start + 1).max(0);
            let at = if *i < 0 { len + i } else { *i };
            Some(IndexResult::Owned(if (0..len).contains(&at) {
                Value::Int(start + at)
            } else {
                Value::Nil
            }))
        }
        _ => None,
    }
}

/// `object[key]` as a value (for filters that index).
pub fn index(object: &Value, key: &Value) -> Option<Value> {
    index_ref(object, KeyRef::Value(key)).map(|r| match r {
        IndexResult::Ref(v) => v.clone(),
        IndexResult::Owned(v) => v,
    })
}

/// `size`, `first`, `last` where the object has them.
fn command_of(object: &Value, command: &str) -> Option<Value> {
    match (command, object) {
        ("size", v) => v.size().map(|n| Value::Int(n as i64)),
        ("first", Value::Array(a)) => Some(a.first().cloned().unwrap_or_default()),
        ("last", Value::Array(a)) => Some(a.last().cloned().unwrap_or_default()),
        ("first", Value::Range(a, b)) => Some(if a <= b { Value::Int(*a) } else { Value::Nil }),
        ("last", Value::Range(_, b)) => Some(Value::Int(*b)),
        ("first", Value::Object(o)) => Some(
            o.iter()
                .next()
                .map(|(k, v)| Value::array(vec![Value::str(k.clone()), v.clone()]))
                .unwrap_or_default(),
        ),
        _ => None,
    }
}

fn range_end(v: &Value) -> Result<i64, Stop> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Nil => Ok(0),
        Value::Str(s) => Ok(leading_int(s)),
        other => to_integer(other),
    }
}

/// Ruby's `to_i` (tablerow's attributes).
fn ruby_to_i(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Str(s) => leading_int(s),
        _ => 0,
    }
}

/// `Utils.slice_collection`: the elements from `from` up to `to`.
pub fn slice_collection(collection: Value, from: i64, to: Option<i64>) -> Vec<Value> {
    let items = match collection {
        Value::Str(s) if s.is_empty() => return Vec::new(),
        // A string is one element, whatever the offset and limit.
        Value::Str(_) => return vec![collection],
        // Shared elements are copied only if someone else holds them.
        Value::Array(items) => {
            Arc::try_unwrap(items).unwrap_or_else(|shared| shared.as_ref().clone())
        }
        Value::Range(..) | Value::Object(_) => collection.to_items(),
        _ => return Vec::new(),
    };
    let start = from.max(0) as usize;
    let end = match to {
        Some(t) => t.max(0) as usize,
        None => usize::MAX,
    };
    if start >= end {
        return Vec::new();
    }
    items.into_iter().skip(start).take(end - start).collect()
}

/// The elements a loop visits: a list, or integers counted one by one, so that a range of any
/// length costs nothing until it is visited (and the step limit ends a visit that is too long).
enum Segment {
    Items(std::vec::IntoIter<Value>),
    /// `next` up to `last` included, moving by `by` (±1); empty once `remaining` is 0.
    Count {
        next: i64,
        by: i64,
        remaining: u64,
    },
}

impl Segment {
    /// `Utils.slice_collection` over a collection: the elements from `from` up to `to`.
    fn of(collection: Value, from: i64, to: Option<i64>) -> Segment {
        let Value::Range(first, last) = collection else {
            return Segment::Items(slice_collection(collection, from, to).into_iter());
        };
        let length = (i128::from(last) - i128::from(first) + 1).max(0);
        let start = i128::from(from).clamp(0, length);
        let end = match to {
            Some(t) => i128::from(t).clamp(start, length),
            None => length,
        };
        Segment::Count {
            next: (i128::from(first) + start) as i64,
            by: 1,
            remaining: (end - start) as u64,
        }
    }

    fn len(&self) -> usize {
        match self {
            Segment::Items(items) => items.len(),
            Segment::Count { remaining, .. } => usize::try_from(*remaining).unwrap_or(usize::MAX),
        }
    }

    fn reverse(&mut self) {
        match self {
            Segment::Items(items) => {
                let mut reversed: Vec<Value> = std::mem::take(items).collect();
                reversed.reverse();
                *items = reversed.into_iter();
            }
            Segment::Count {
                next,
                by,
                remaining,
            } if *remaining > 0 => {
                *next = (i128::from(*next) + i128::from(*by) * (i128::from(*remaining) - 1)) as i64;
                *by = -*by;
            }
            Segment::Count { .. } => {}
        }
    }
}

impl Iterator for Segment {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        match self {
            Segment::Items(items) => items.next(),
            Segment::Count {
                next,
                by,
                remaining,
            } => {
                if *remaining == 0 {
                    return None;
                }
                let value = *next;
                *remaining -= 1;
                if *remaining > 0 {
                    *next += *by;
                }
                Some(Value::Int(value))
            }
        }
    }
}

/// A `for` loop being rendered.
struct LoopState {
    name: String,
    index: usize,
    length: usize,
    parent: Option<Object>,
}

/// Where `forloop`'s changing fields sit in its object (inserted in this order).
const POSITION_FIELDS: std::ops::Range<usize> = 2..8;

impl LoopState {
    /// The `forloop` object for the current iteration.
    fn object(&self) -> Object {
        let (i, n) = (self.index as i64, self.length as i64);
        let mut o = Object::with_capacity_and_hasher(9, Default::default());
        o.insert("name".into(), Value::str(self.name.clone()));
        o.insert("length".into(), Value::Int(n));
        o.insert("index".into(), Value::Int(i + 1));
        o.insert("index0".into(), Value::Int(i));
        o.insert("rindex".into(), Value::Int(n - i));
        o.insert("rindex0".into(), Value::Int(n - i - 1));
        o.insert("first".into(), Value::Bool(i == 0));
        o.insert("last".into(), Value::Bool(i == n - 1));
        o.insert(
            "parentloop".into(),
            self.parent.clone().map(Value::object).unwrap_or(Value::Nil),
        );
        debug_assert_eq!(o.get_index_of("index"), Some(POSITION_FIELDS.start));
        o
    }
}

/// Moves a `forloop` object to iteration `i` of `n`, by position (no hashing).
fn set_position(forloop: &mut Object, i: i64, n: i64) {
    let values = [
        Value::Int(i + 1),
        Value::Int(i),
        Value::Int(n - i),
        Value::Int(n - i - 1),
        Value::Bool(i == 0),
        Value::Bool(i == n - 1),
    ];
    for (slot, value) in POSITION_FIELDS.zip(values) {
        if let Some((_, v)) = forloop.get_index_mut(slot) {
            *v = value;
        }
    }
}

impl Value {
    /// How `cycle` prints a value: arrays joined, others by `to_s`.
    fn render_cycle(&self, out: &mut String) {
        match self {
            Value::Array(_) => self.render(out),
            other => other.to_s(out),
        }
    }
}

/// A number for the math filters.
pub fn number(v: &Value) -> Number {
    Number::from_value(v)
}
