//! The tree a template parses into, and the two traits through which a dialect's tags join it:
//! [`Tag`] (what a dialect's tag does when rendered) and [`Runtime`] (what a render lets it do).

use std::sync::Arc;

use crate::fetch::{FetchError, Request, Response};
use crate::markup::{Condition, Expr, Key, Variable};
use crate::stop::Stop;
use crate::value::Value;

/// A sequence of nodes; `blank` when it holds only whitespace and tags that print nothing.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// The nodes, in order.
    pub nodes: Vec<Node>,
    /// Liquid's `blank?`: such a block's whitespace is dropped by `if`, `for`, `case`.
    pub blank: bool,
}

/// A node of the tree.
#[derive(Debug, Clone)]
pub enum Node {
    /// Text, printed as is.
    Text(String),
    /// `{{ … }}`.
    Output(Variable, usize),
    /// `{% assign to = … %}`.
    Assign(String, Variable, usize),
    /// `{% capture to %}…{% endcapture %}`.
    Capture(String, Block),
    /// `if`/`elsif`/`else` (and `unless` when `negate_first`).
    If {
        /// Each condition (`None`: `else`) and its block.
        branches: Vec<(Option<Condition>, Block)>,
        /// `unless`: the first condition is negated.
        negate_first: bool,
        /// The tag's line.
        line: usize,
    },
    /// `case`/`when`/`else`.
    Case {
        /// The value compared.
        left: Expr,
        /// Each `when` value (`None`: `else`) and the index of its block in `bodies`.
        arms: Vec<(Option<Expr>, usize)>,
        /// The bodies (a `when a, b` shares one between two arms).
        bodies: Vec<Block>,
        /// The tag's line.
        line: usize,
    },
    /// `for`.
    For(Box<ForLoop>),
    /// `tablerow`.
    TableRow(Box<TableRow>),
    /// `cycle`.
    Cycle {
        /// The group name (evaluated), or the fixed key of an unnamed cycle.
        group: CycleGroup,
        /// The values cycled through.
        values: Vec<Expr>,
        /// The tag's line.
        line: usize,
    },
    /// `increment` (+1) or `decrement` (-1).
    Counter(String, i64),
    /// `echo`.
    Echo(Variable, usize),
    /// `raw`.
    Raw(String),
    /// `comment` and `#`: nothing.
    Comment,
    /// `break`.
    Break,
    /// `continue`.
    Continue,
    /// `ifchanged`.
    IfChanged(Block),
    /// `include` and `render`: eddy has no file system for partials.
    Include(usize),
    /// A tag its dialect added (Braze's `abort_message`, `connected_content`).
    Custom(Arc<dyn Tag>, usize),
}

/// A `for` loop.
#[derive(Debug, Clone)]
pub struct ForLoop {
    /// The loop variable.
    pub variable: String,
    /// The collection.
    pub collection: Expr,
    /// `variable-collection markup`: the key `offset: continue` remembers.
    pub name: String,
    /// `reversed`.
    pub reversed: bool,
    /// `limit:`.
    pub limit: Option<Expr>,
    /// `offset:`.
    pub offset: Offset,
    /// The body.
    pub body: Block,
    /// The `else` block, rendered for an empty collection.
    pub otherwise: Option<Block>,
    /// The tag's line.
    pub line: usize,
}

/// A `for` loop's start.
#[derive(Debug, Clone)]
pub enum Offset {
    /// From the first element.
    None,
    /// `offset: expr`.
    At(Expr),
    /// `offset: continue`: where the last loop of the same name stopped.
    Continue,
}

/// A `tablerow` loop.
#[derive(Debug, Clone)]
pub struct TableRow {
    /// The loop variable.
    pub variable: String,
    /// The collection.
    pub collection: Expr,
    /// `cols`, `limit`, `offset`.
    pub attributes: Vec<(String, Expr)>,
    /// The body.
    pub body: Block,
    /// The tag's line.
    pub line: usize,
}

/// What groups a `cycle`'s position.
#[derive(Debug, Clone)]
pub enum CycleGroup {
    /// `cycle name: …`.
    Named(Expr),
    /// An unnamed cycle: cycles with the same values share a position.
    Values(String),
}

impl Default for Node {
    fn default() -> Self {
        Node::Text(String::new())
    }
}

impl Node {
    /// Whether the node prints nothing, so that Liquid drops the whitespace of a block that holds
    /// only such nodes (and swallows their errors).
    pub fn is_blank(&self) -> bool {
        match self {
            Node::Assign(..) | Node::Capture(..) | Node::Comment => true,
            Node::If { branches, .. } => branches.iter().all(|(_, b)| b.blank),
            Node::Case { bodies, .. } => bodies.iter().all(|b| b.blank),
            Node::For(f) => f.body.blank && f.otherwise.as_ref().is_none_or(|b| b.blank),
            Node::TableRow(t) => t.body.blank,
            Node::IfChanged(b) => b.blank,
            Node::Raw(body) => body.is_empty(),
            Node::Custom(tag, _) => tag.blank(),
            _ => false,
        }
    }
}

impl Block {
    /// The text of a block that is only text (a fast path for rendering).
    pub fn as_plain_text(&self) -> Option<&str> {
        match self.nodes.as_slice() {
            [Node::Text(t)] => Some(t),
            _ => None,
        }
    }
}

/// Templates a render may include by name (Braze's content blocks).
pub trait Partials: Sync {
    /// The parsed partial of that name.
    fn partial(&self, name: &str) -> Option<&Block>;
}

/// A tag a dialect adds to Liquid, parsed from its markup by [`crate::dialect::Dialect::tag`].
pub trait Tag: std::fmt::Debug + Send + Sync {
    /// Renders the tag into `out`.
    fn render(&self, runtime: &mut dyn Runtime, out: &mut String) -> Result<(), Stop>;

    /// Whether the tag never prints (its errors are then swallowed, as Liquid swallows those of
    /// `assign`).
    fn blank(&self) -> bool {
        false
    }
}

/// What a render lets a dialect's tags and variables do.
pub trait Runtime {
    /// Evaluates an expression in the render's scopes.
    fn eval(&mut self, expr: &Expr) -> Result<Value, Stop>;

    /// Evaluates a lookup key (`a.b`, `a[expr]`) to the value it names.
    fn key(&mut self, key: &Key) -> Result<Value, Stop>;

    /// Renders a block to a string in the render's scopes.
    fn render_fragment(&mut self, block: &Block) -> Result<String, Stop>;

    /// Renders the partial of that name in place (its assignments are seen after it); nil for
    /// an unknown one; `None` when the render was given no partials.
    fn render_partial(&mut self, name: &str) -> Option<Result<Value, Stop>>;

    /// Sets a variable whose weight toward the render's memory is known.
    fn assign_weighed(&mut self, name: &str, value: Value, bytes: usize) -> Result<(), Stop>;

    /// What is left of the render's time, or the error that it is spent.
    fn time_left(&self) -> Result<std::time::Duration, Stop>;

    /// Makes a request through the network the render was given.
    fn fetch(&self, request: &Request) -> Result<Response, FetchError>;

    /// Reads catalog items through what the render was given.
    fn catalog_items(
        &self,
        catalog: &str,
        ids: &[String],
    ) -> Result<Vec<serde_json::Value>, FetchError>;

    /// Tells the operator something that is not a Liquid error.
    fn warn(&mut self, message: String);
}
