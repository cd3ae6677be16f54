//! The diff: source rows against the remembered state, into the changes to send.
//!
//! Each row is fingerprinted once as a whole; only a row whose fingerprint differs from the
//! remembered one is looked at field by field, encoded and validated. Rows that were remembered
//! but not seen in the source are the removed rows, found in one pass at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::config::{AudienceShape, Field, FieldKind, IdKind, Mode, RemovedRows};
use crate::encode::{encode, parse_bool};
use crate::source::Block;
use crate::state::{Fp, State, Visit, fingerprint};

/// How a sync turns rows into objects.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tracked fields; their columns follow the identifier columns in each block.
    pub fields: Vec<Field>,
    /// The identifier type.
    pub id_kind: IdKind,
    /// Attribute or row mode.
    pub mode: Mode,
    /// What to do with rows that left the source.
    pub removed_rows: RemovedRows,
    /// `_update_existing_only` sent with each object (`None`: a cohort target).
    pub update_existing_only: Option<bool>,
    /// How audiences are written.
    pub audience_shape: AudienceShape,
    /// The array attribute of the array shape.
    pub audience_attribute: String,
    /// Objects per batch.
    pub batch_size: usize,
}

impl Plan {
    fn id_columns(&self) -> usize {
        if self.id_kind == IdKind::UserAlias {
            2
        } else {
            1
        }
    }

    fn cohort(&self) -> bool {
        self.update_existing_only.is_none()
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New to the target.
    Added,
    /// Some tracked value changed.
    Changed,
    /// The row left the source.
    Removed,
}

impl ChangeKind {
    /// Lowercase name, as printed by `--dry-run`.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One object to send, and what to remember once the target confirms it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The row's key in the state.
    pub key: Vec<u8>,
    /// Added, changed or removed.
    pub kind: ChangeKind,
    /// The fingerprints to remember (empty: forget the row).
    pub prints: Vec<u64>,
    /// The `/users/track` attributes object, or the cohort identifier value.
    pub object: Value,
}

/// What the differ hands to the sender.
#[derive(Debug)]
pub enum DiffMsg {
    /// Objects to send together.
    Batch(Vec<Change>),
    /// State updates that need no request (a fingerprint refresh, a forgotten row).
    Remember(Vec<(Vec<u8>, Vec<u64>)>),
}

/// A row that could not be sent, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    /// The row's identifier (or its position when it has none).
    pub row: String,
    /// Why.
    pub error: String,
}

/// Counts of the diff.
#[derive(Debug, Clone, Default)]
pub struct DiffStats {
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows new to the target.
    pub added: u64,
    /// Rows with a changed value.
    pub changed: u64,
    /// Rows that left the source.
    pub removed: u64,
    /// Rows with nothing to send.
    pub unchanged: u64,
    /// Rows refused before sending (bad identifier, bad value, duplicate).
    pub invalid: u64,
    /// The first refusals.
    pub errors: Vec<RowError>,
    /// Rows the source could not parse (their identifiers are unknown).
    pub unreadable: u64,
}

/// Every field eddy's validator refuses in an object (it stops at the first), found by
/// validating each field alone with the object's identifier; `first` when none is to blame alone.
fn every_refusal(object: &Value, first: String) -> Vec<String> {
    const IDENTIFYING: [&str; 4] = [
        "external_id",
        "braze_id",
        "user_alias",
        "_update_existing_only",
    ];
    let Value::Object(map) = object else {
        return vec![first];
    };
    let base: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(k, _)| IDENTIFYING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Vec::new();
    for (name, value) in map {
        if IDENTIFYING.contains(&name.as_str()) {
            continue;
        }
        let mut alone = base.clone();
        alone.insert(name.clone(), value.clone());
        if let Err(why) = eddy_model::track::validate_attributes(&Value::Object(alone)) {
            out.push(why);
        }
    }
    if out.is_empty() {
        out.push(first);
    }
    out
}

/// How many row errors a report keeps.
pub const MAX_ERRORS: usize = 10;

impl DiffStats {
    fn refuse(&mut self, row: String, error: String) {
        self.invalid += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RowError { row, error });
        }
    }
}

/// Why the diff stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The sender hung up (the run was aborted).
    Cancelled,
    /// The source failed.
    Source(crate::SyncError),
}

/// The differ: runs on its own thread over blocks from the reader.
pub struct Differ<'a> {
    plan: &'a Plan,
    state: &'a mut State,
    new_keys: foldhash::HashSet<Fp>,
    fps: Vec<Option<Fp>>,
    visits: Vec<Option<Visit>>,
    key: Vec<u8>,
    batch: Vec<Change>,
    remember: Vec<(Vec<u8>, Vec<u64>)>,
    out: &'a dyn Fn(DiffMsg) -> bool,
    /// Running counts.
    pub stats: DiffStats,
    read: Arc<AtomicU64>,
}

impl<'a> Differ<'a> {
    /// A differ over `state`, handing messages to `out` (which returns false once the run is
    /// aborted); `read` counts rows for the progress line.
    pub fn new(
        plan: &'a Plan,
        state: &'a mut State,
        out: &'a dyn Fn(DiffMsg) -> bool,
        read: Arc<AtomicU64>,
    ) -> Differ<'a> {
        Differ {
            plan,
            state,
            new_keys: foldhash::HashSet::default(),
            fps: Vec::new(),
            visits: Vec::new(),
            key: Vec::new(),
            batch: Vec::with_capacity(plan.batch_size),
            remember: Vec::new(),
            out,
            stats: DiffStats::default(),
            read,
        }
    }

    /// Diffs one block of rows.
    pub fn block(&mut self, block: &Block) -> Result<(), Stop> {
        for why in &block.bad {
            self.stats.rows_read += 1;
            self.stats.unreadable += 1;
            self.stats
                .refuse(format!("row {}", self.stats.rows_read), why.clone());
        }
        // Every row's key fingerprint; then a loop of loads only, which brings every row's
        // table entry into cache with many misses in flight at once; then every lookup, while
        // those lines are still cached.
        self.fps.clear();
        for r in 0..block.rows() {
            let fp = row_key(block, r, self.plan.id_kind, &mut self.key)
                .ok()
                .map(|()| fingerprint(&self.key));
            self.fps.push(fp);
        }
        let mut touched = 0u64;
        for fp in self.fps.iter().flatten() {
            touched ^= self.state.touch(*fp);
        }
        std::hint::black_box(touched);
        self.visits.clear();
        for fp in &self.fps {
            let visit = fp.map(|fp| self.state.visit(fp));
            self.visits.push(visit);
        }
        for r in 0..block.rows() {
            self.stats.rows_read += 1;
            self.row(block, r)?;
        }
        self.read.store(self.stats.rows_read, Ordering::Relaxed);
        Ok(())
    }

    fn row(&mut self, block: &Block, r: usize) -> Result<(), Stop> {
        let plan = self.plan;
        let nid = plan.id_columns();
        let (Some(visit), Some(h)) = (self.visits[r], self.fps[r]) else {
            let why = row_key(block, r, plan.id_kind, &mut self.key)
                .err()
                .unwrap_or_default();
            let row = format!("row {}", self.stats.rows_read);
            self.stats.refuse(row, why);
            return Ok(());
        };
        let (slot, known_row) = match visit {
            Visit::Known(slot, row) => (Some(slot), row),
            Visit::Again => {
                let _ = row_key(block, r, plan.id_kind, &mut self.key);
                self.stats.refuse(display_key(&self.key), DUPLICATE.into());
                return Ok(());
            }
            Visit::New => {
                if !self.new_keys.insert(h) {
                    let _ = row_key(block, r, plan.id_kind, &mut self.key);
                    self.stats.refuse(display_key(&self.key), DUPLICATE.into());
                    return Ok(());
                }
                (None, 0)
            }
        };
        let fresh = slot.is_none();
        let row_print = block.row_prints[r];
        if slot.is_some() && known_row == row_print {
            self.stats.unchanged += 1;
            return Ok(());
        }
        let _ = row_key(block, r, plan.id_kind, &mut self.key);
        let key = self.key.clone();
        let old: Vec<u64> = match slot {
            Some(s) => self.state.field_prints(s).map_err(Stop::Source)?,
            None => vec![0; plan.fields.len()],
        };
        let mut new = Vec::with_capacity(plan.fields.len() + 1);
        new.push(row_print);
        for (j, field) in plan.fields.iter().enumerate() {
            let cell = block.cell(r, nid + j);
            new.push(match field.kind {
                FieldKind::Attribute(_) => cell.map_or(0, |b| nonzero(xxh3_64(b))),
                FieldKind::Audience => {
                    let member = cell
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .and_then(parse_bool);
                    u64::from(member == Some(true))
                }
            });
        }
        if plan.cohort() {
            if !fresh {
                self.stats.unchanged += 1;
                return Ok(());
            }
            self.stats.added += 1;
            let object = id_value(&key, plan.id_kind);
            return self.push(Change {
                key,
                kind: ChangeKind::Added,
                prints: new,
                object,
            });
        }
        let differs = (1..new.len()).any(|i| new[i] != old[i - 1]);
        if !differs {
            // Same values, different text around them (or fields were remapped): remember
            // the new fingerprint without sending anything.
            self.stats.unchanged += 1;
            self.remember.push((key, new));
            if self.remember.len() >= 1024 {
                let list = std::mem::take(&mut self.remember);
                if !(self.out)(DiffMsg::Remember(list)) {
                    return Err(Stop::Cancelled);
                }
            }
            return Ok(());
        }
        let mut object = id_object(&key, plan.id_kind);
        if let Some(flag) = plan.update_existing_only {
            object.insert("_update_existing_only".into(), Value::Bool(flag));
        }
        let mut add = Vec::new();
        let mut remove = Vec::new();
        // Every problem of the row is reported at once, not one per run.
        let mut problems: Vec<String> = Vec::new();
        for (j, field) in plan.fields.iter().enumerate() {
            let (now, was) = (new[j + 1], old[j]);
            match field.kind {
                FieldKind::Attribute(ty) => {
                    let send = match plan.mode {
                        Mode::Attribute => now != was,
                        Mode::Row => now != 0 || was != 0,
                    };
                    if !send {
                        continue;
                    }
                    let value = match block.cell(r, nid + j) {
                        None => Value::Null,
                        Some(bytes) => {
                            let encoded = std::str::from_utf8(bytes)
                                .map_err(|_| format!("column '{}' is not UTF-8", field.column))
                                .and_then(|text| encode(ty, &field.column, text));
                            match encoded {
                                Ok(v) => v,
                                Err(why) => {
                                    problems.push(why);
                                    continue;
                                }
                            }
                        }
                    };
                    object.insert(field.name.clone(), value);
                }
                FieldKind::Audience => {
                    if now == was {
                        continue;
                    }
                    match plan.audience_shape {
                        AudienceShape::Boolean => {
                            object.insert(field.name.clone(), Value::Bool(now == 1));
                        }
                        AudienceShape::Array if now == 1 => {
                            add.push(Value::String(field.name.clone()))
                        }
                        AudienceShape::Array => remove.push(Value::String(field.name.clone())),
                    }
                }
            }
        }
        if !add.is_empty() || !remove.is_empty() {
            object.insert(plan.audience_attribute.clone(), array_edit(add, remove));
        }
        let object = Value::Object(object);
        if let Err(why) = eddy_model::track::validate_attributes(&object) {
            problems.extend(every_refusal(&object, why));
        }
        if !problems.is_empty() {
            self.stats.refuse(display_key(&key), problems.join("; "));
            return Ok(());
        }
        let kind = if fresh {
            self.stats.added += 1;
            ChangeKind::Added
        } else {
            self.stats.changed += 1;
            ChangeKind::Changed
        };
        self.push(Change {
            key,
            kind,
            prints: new,
            object,
        })
    }

    fn push(&mut self, change: Change) -> Result<(), Stop> {
        self.batch.push(change);
        if self.batch.len() >= self.plan.batch_size {
            let batch =
                std::mem::replace(&mut self.batch, Vec::with_capacity(self.plan.batch_size));
            if !(self.out)(DiffMsg::Batch(batch)) {
                return Err(Stop::Cancelled);
            }
        }
        Ok(())
    }

    /// After the last block: the removed rows, then whatever is still batched.
    pub fn finish(mut self) -> Result<DiffStats, Stop> {
        let plan = self.plan;
        // A row the source could not parse may be one of the remembered rows: with such rows,
        // nothing is treated as removed this run rather than unsetting a user by mistake.
        let unvisited = if self.stats.unreadable > 0 {
            Vec::new()
        } else {
            self.state.unvisited()
        };
        for slot in unvisited {
            self.stats.removed += 1;
            let key = self.state.key(slot).to_vec();
            if plan.cohort() {
                let object = id_value(&key, plan.id_kind);
                self.push(Change {
                    key,
                    kind: ChangeKind::Removed,
                    prints: Vec::new(),
                    object,
                })?;
                continue;
            }
            let old = self.state.field_prints(slot).map_err(Stop::Source)?;
            let mut object = id_object(&key, plan.id_kind);
            let mut remove = Vec::new();
            let mut anything = false;
            for (j, field) in plan.fields.iter().enumerate() {
                if old[j] == 0 {
                    continue;
                }
                anything = true;
                match (field.kind, plan.audience_shape) {
                    (FieldKind::Attribute(_), _) => {
                        object.insert(field.name.clone(), Value::Null);
                    }
                    (FieldKind::Audience, AudienceShape::Boolean) => {
                        object.insert(field.name.clone(), Value::Bool(false));
                    }
                    (FieldKind::Audience, AudienceShape::Array) => {
                        remove.push(Value::String(field.name.clone()));
                    }
                }
            }
            if plan.removed_rows == RemovedRows::Keep || !anything {
                self.remember.push((key, Vec::new()));
                continue;
            }
            if !remove.is_empty() {
                object.insert(
                    plan.audience_attribute.clone(),
                    array_edit(Vec::new(), remove),
                );
            }
            // Removal never creates a user.
            object.insert("_update_existing_only".into(), Value::Bool(true));
            self.push(Change {
                key,
                kind: ChangeKind::Removed,
                prints: Vec::new(),
                object: Value::Object(object),
            })?;
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            if !(self.out)(DiffMsg::Batch(batch)) {
                return Err(Stop::Cancelled);
            }
        }
        if !self.remember.is_empty() {
            let list = std::mem::take(&mut self.remember);
            if !(self.out)(DiffMsg::Remember(list)) {
                return Err(Stop::Cancelled);
            }
        }
        Ok(self.stats)
    }
}

/// Per row of a block, the fingerprint of its tracked cells. Runs on the reader's thread, which
/// balances the two threads: the differ fingerprints keys and looks rows up.
pub fn prepare(plan: &Plan, block: &mut Block) {
    let nid = plan.id_columns();
    let mut lens = Vec::new();
    let mut prints = std::mem::take(&mut block.row_prints);
    prints.clear();
    for r in 0..block.rows() {
        // The cells' bytes back to back, seeded with their lengths (null apart from empty).
        let bytes = block.span(r, nid, &mut lens);
        let seed = lens.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, l| {
            (h ^ u64::from(*l))
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(29)
        });
        prints.push(nonzero(xxh3_64_with_seed(bytes, seed)));
    }
    block.row_prints = prints;
}

fn array_edit(add: Vec<Value>, remove: Vec<Value>) -> Value {
    let mut edit = Map::new();
    if !add.is_empty() {
        edit.insert("add".into(), Value::Array(add));
    }
    if !remove.is_empty() {
        edit.insert("remove".into(), Value::Array(remove));
    }
    Value::Object(edit)
}

/// 0 means "null" in the state, so a real fingerprint is never 0.
fn nonzero(h: u64) -> u64 {
    if h == 0 { 1 } else { h }
}

/// The separator of an alias's name and label in its key.
const ALIAS_SEP: u8 = 0x1f;

const DUPLICATE: &str = "the identifier appears twice in the source";

/// The row's key into `key`: the identifier, or an alias's name and label.
fn row_key(block: &Block, r: usize, kind: IdKind, key: &mut Vec<u8>) -> Result<(), String> {
    let cell = |c: usize, what: &str| -> Result<&[u8], String> {
        match block.cell(r, c) {
            Some(b) if !b.iter().all(u8::is_ascii_whitespace) => {
                if std::str::from_utf8(b).is_err() {
                    return Err(format!("the {what} is not UTF-8"));
                }
                Ok(b)
            }
            _ => Err(format!("the {what} is empty")),
        }
    };
    key.clear();
    match kind {
        IdKind::UserAlias => {
            let name = cell(0, "alias name")?;
            let label = cell(1, "alias label")?;
            if name.contains(&ALIAS_SEP) || label.contains(&ALIAS_SEP) {
                return Err("the alias contains a control character".into());
            }
            key.extend_from_slice(name);
            key.push(ALIAS_SEP);
            key.extend_from_slice(label);
        }
        other => key.extend_from_slice(cell(0, other.name())?),
    }
    Ok(())
}

/// A key as people read it (an alias as `name / label`).
pub fn display_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).replace(ALIAS_SEP as char, " / ")
}

/// The identifier as the cohort API wants it: a string, or an alias object.
fn id_value(key: &[u8], kind: IdKind) -> Value {
    let text = String::from_utf8_lossy(key);
    match kind {
        IdKind::UserAlias => {
            let (name, label) = text.split_once(ALIAS_SEP as char).unwrap_or((&text, ""));
            json!({"alias_name": name, "alias_label": label})
        }
        _ => Value::String(text.into_owned()),
    }
}

fn id_object(key: &[u8], kind: IdKind) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert(kind.name().to_string(), id_value(key, kind));
    object
}
