//! The segment index: per workspace, bitmaps and typed columns over dense internal ids, kept
//! current from the writer's change feed, answering filters exactly.

use std::collections::{BTreeMap, HashMap};

use eddy_model::profile::{Occurrences, Profile};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::filter::{
    CountOp, Filter, Op, Operand, Val, ValRef, count_matches, for_each_attribute,
    occurrences_count, value_matches,
};

const NO_WORD: u32 = u32::MAX;

/// Maps keyed by attribute or event names; names come from clients, so the hasher is seeded.
type NameMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// The distinct strings of one column, each stored once in one buffer and found by hash.
/// An identifier-like attribute (external ids, braze ids) has a word per profile, so a word's
/// cost matters: its bytes, an 8-byte end offset and a 4-byte hash slot, where a `String` key
/// with a separate allocation and map entry cost about a hundred bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Words {
    text: String,
    /// Word `i` is `text[ends[i - 1]..ends[i]]`.
    ends: Vec<u64>,
    /// Word numbers by the hash of their text; rebuilt after a snapshot is loaded.
    #[serde(skip)]
    lookup: hashbrown::HashTable<u32>,
    #[serde(skip)]
    hasher: foldhash::fast::RandomState,
}

impl Words {
    /// Word `i`'s text.
    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn hash(&self, text: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(text)
    }

    /// The number of a word, if the column has it.
    fn find(&self, text: &str) -> Option<u32> {
        self.lookup
            .find(self.hash(text), |&i| self.get(i) == text)
            .copied()
    }

    /// The number of a word, added when new (`true`).
    fn insert(&mut self, text: &str) -> (u32, bool) {
        if let Some(i) = self.find(text) {
            return (i, false);
        }
        let i = self.ends.len() as u32;
        self.text.push_str(text);
        self.ends.push(self.text.len() as u64);
        let hash = self.hash(text);
        let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
        self.lookup
            .insert_unique(hash, i, |&j| word_hash(hasher, text, ends, j));
        (i, true)
    }

    /// Rebuilds the hash lookup (after deserializing).
    fn rebuild_lookup(&mut self) {
        self.lookup = hashbrown::HashTable::with_capacity(self.ends.len());
        for i in 0..self.ends.len() as u32 {
            let hash = self.hash(self.get(i));
            let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
            self.lookup
                .insert_unique(hash, i, |&j| word_hash(hasher, text, ends, j));
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        (0..self.ends.len() as u32).map(|i| (i as usize, self.get(i)))
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * 8 + self.lookup.capacity() * 5
    }
}

/// The hash of word `j` (the lookup's rehash when it grows).
fn word_hash(hasher: &foldhash::fast::RandomState, text: &str, ends: &[u64], j: u32) -> u64 {
    use std::hash::BuildHasher;
    let j = j as usize;
    let start = if j == 0 { 0 } else { ends[j - 1] as usize };
    hasher.hash_one(&text[start..ends[j] as usize])
}

/// One attribute's values over all profiles of a workspace, typed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Column {
    present: RoaringBitmap,
    /// The upsert that last visited this column (see [`WorkspaceIndex::upsert`]).
    stamp: u64,
    /// Each distinct string once.
    words: Words,
    by_word: Holders,
    word_of: Vec<u32>,
    nums: Vec<f64>,
    num_set: RoaringBitmap,
    trues: RoaringBitmap,
    falses: RoaringBitmap,
    times: Vec<i64>,
    time_set: RoaringBitmap,
    items: HashMap<String, RoaringBitmap>,
    items_of: HashMap<u32, Vec<String>>,
}

/// A word with no holder.
const NOBODY: u32 = u32::MAX;
/// A word with several holders: they are in `Holders::many`.
const MANY: u32 = u32::MAX - 1;

/// Which profiles hold each word of a column. Most words of identifier-like attributes belong
/// to one profile, so that id is kept inline (4 bytes a word); a word held by several profiles
/// keeps a bitmap aside. Profile ids stay below [`MANY`] (ids are dense from 0).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Holders {
    /// Per word: its only holder, [`NOBODY`], or [`MANY`].
    one: Vec<u32>,
    many: HashMap<u32, RoaringBitmap>,
}

impl Holders {
    /// Makes room for a new word (held by nobody yet).
    fn push(&mut self) {
        self.one.push(NOBODY);
    }

    fn insert(&mut self, word: u32, id: u32) {
        debug_assert!(id < MANY, "profile ids stay below the holder markers");
        let slot = &mut self.one[word as usize];
        match *slot {
            NOBODY => *slot = id,
            MANY => {
                self.many.entry(word).or_default().insert(id);
            }
            holder if holder == id => {}
            holder => {
                let mut bitmap = RoaringBitmap::new();
                bitmap.insert(holder);
                bitmap.insert(id);
                self.many.insert(word, bitmap);
                *slot = MANY;
            }
        }
    }

    fn remove(&mut self, word: u32, id: u32) {
        let slot = &mut self.one[word as usize];
        match *slot {
            MANY => {
                if let Some(bitmap) = self.many.get_mut(&word) {
                    bitmap.remove(id);
                }
            }
            holder if holder == id => *slot = NOBODY,
            _ => {}
        }
    }

    /// The word's holders that are also in `within`.
    fn within(&self, word: u32, within: &RoaringBitmap) -> RoaringBitmap {
        match self.one[word as usize] {
            NOBODY => RoaringBitmap::new(),
            MANY => self
                .many
                .get(&word)
                .map(|bitmap| bitmap & within)
                .unwrap_or_default(),
            holder if within.contains(holder) => std::iter::once(holder).collect(),
            _ => RoaringBitmap::new(),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.one.capacity() * 4
            + map_bytes(&self.many)
            + self.many.values().map(bitmap_bytes).sum::<usize>()
    }
}

/// The key of an array item, shared by items and `includes_value` operands.
fn item_key(item: &Value) -> Option<String> {
    match item {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => n.as_f64().map(|f| format!("n:{f}")),
        Value::Bool(b) => Some(format!("b:{b}")),
        _ => None,
    }
}

fn operand_key(operand: &Operand) -> Option<String> {
    match operand {
        Operand::Str(s) => Some(format!("s:{s}")),
        Operand::Num(n) => Some(format!("n:{n}")),
        Operand::Bool(b) => Some(format!("b:{b}")),
        _ => None,
    }
}

/// Extends a dense column to hold `id`. Capacity grows by an eighth at a time rather than
/// doubling: at 10M profiles, doubling left up to 6M unused slots in every typed column.
fn grow<T: Clone>(v: &mut Vec<T>, id: u32, fill: T) {
    let need = id as usize + 1;
    if v.len() < need {
        if v.capacity() < need {
            let extra = (need - v.len()).max(v.len() / 8);
            v.reserve_exact(extra);
        }
        v.resize(need, fill);
    }
}

/// Approximate heap bytes of a hash map: its capacity times an entry, plus a control byte.
fn map_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    map.capacity() * (std::mem::size_of::<(K, V)>() + 1)
}

/// Approximate heap bytes of a bitmap.
fn bitmap_bytes(bitmap: &RoaringBitmap) -> usize {
    bitmap.serialized_size()
}

impl Column {
    /// Approximate heap bytes, by capacity: what an attribute costs the index.
    fn heap_bytes(&self) -> usize {
        let items: usize = self
            .items
            .iter()
            .map(|(k, b)| k.len() + bitmap_bytes(b))
            .sum::<usize>()
            + self
                .items_of
                .values()
                .map(|list| list.iter().map(|k| k.len() + 24).sum::<usize>())
                .sum::<usize>();
        bitmap_bytes(&self.present)
            + bitmap_bytes(&self.num_set)
            + bitmap_bytes(&self.trues)
            + bitmap_bytes(&self.falses)
            + bitmap_bytes(&self.time_set)
            + self.words.heap_bytes()
            + self.by_word.heap_bytes()
            + self.word_of.capacity() * 4
            + self.nums.capacity() * 8
            + self.times.capacity() * 8
            + map_bytes(&self.items)
            + map_bytes(&self.items_of)
            + items
    }

    fn clear(&mut self, id: u32) {
        if !self.present.remove(id) {
            return;
        }
        if let Some(word) = self.word_of.get(id as usize).copied()
            && word != NO_WORD
        {
            self.by_word.remove(word, id);
            self.word_of[id as usize] = NO_WORD;
        }
        self.num_set.remove(id);
        self.trues.remove(id);
        self.falses.remove(id);
        self.time_set.remove(id);
        if let Some(items) = self.items_of.remove(&id) {
            for item in items {
                if let Some(bitmap) = self.items.get_mut(&item) {
                    bitmap.remove(id);
                }
            }
        }
    }

    /// Whether the column already holds exactly this value for `id`.
    fn holds(&self, id: u32, value: ValRef<'_>) -> bool {
        let i = id as usize;
        match value {
            ValRef::Str(s) => match self.word_of.get(i) {
                Some(w) if *w != NO_WORD => self.words.get(*w) == s,
                _ => false,
            },
            ValRef::Num(n) => self.num_set.contains(id) && self.nums[i] == n,
            ValRef::Bool(true) => self.trues.contains(id),
            ValRef::Bool(false) => self.falses.contains(id),
            ValRef::Time(t) => self.time_set.contains(id) && self.times[i] == t,
            ValRef::List(items) => {
                let keys: Vec<String> = items.iter().filter_map(item_key).collect();
                self.items_of.get(&id) == Some(&keys)
            }
        }
    }

    fn set(&mut self, id: u32, value: ValRef<'_>) {
        if self.holds(id, value) {
            return;
        }
        self.clear(id);
        self.present.insert(id);
        match value {
            ValRef::Str(s) => {
                let (word, new) = self.words.insert(s);
                if new {
                    self.by_word.push();
                }
                grow(&mut self.word_of, id, NO_WORD);
                self.word_of[id as usize] = word;
                self.by_word.insert(word, id);
            }
            ValRef::Num(n) => {
                grow(&mut self.nums, id, f64::NAN);
                self.nums[id as usize] = n;
                self.num_set.insert(id);
            }
            ValRef::Bool(true) => {
                self.trues.insert(id);
            }
            ValRef::Bool(false) => {
                self.falses.insert(id);
            }
            ValRef::Time(t) => {
                grow(&mut self.times, id, i64::MIN);
                self.times[id as usize] = t;
                self.time_set.insert(id);
            }
            ValRef::List(items) => {
                let keys: Vec<String> = items.iter().filter_map(item_key).collect();
                for key in &keys {
                    self.items.entry(key.clone()).or_default().insert(id);
                }
                self.items_of.insert(id, keys);
            }
        }
    }

    /// Ids in `within` whose value satisfies the leaf, by the oracle's own rule for scans.
    fn eval(
        &self,
        op: Op,
        operand: &Operand,
        within: &RoaringBitmap,
        now_ms: i64,
    ) -> RoaringBitmap {
        match op {
            Op::Exists => return &self.present & within,
            Op::NotExists => return within - &self.present,
            Op::NotEquals => return within - &self.eval(Op::Equals, operand, within, now_ms),
            _ => {}
        }
        let mut out = RoaringBitmap::new();
        match (op, operand) {
            (Op::Equals, Operand::Str(s)) => {
                if let Some(word) = self.words.find(s) {
                    out |= self.by_word.within(word, within);
                }
            }
            (Op::Equals, Operand::Bool(true)) => return &self.trues & within,
            (Op::Equals, Operand::Bool(false)) => return &self.falses & within,
            (Op::IncludesValue, operand) => {
                if let Some(bitmap) = operand_key(operand).and_then(|k| self.items.get(&k)) {
                    return bitmap & within;
                }
                return out;
            }
            (Op::Contains | Op::MatchesRegex, _) => {
                for (word, text) in self.words.iter() {
                    if value_matches(Some(&Val::Str(text.to_string())), op, operand, now_ms) {
                        out |= self.by_word.within(word as u32, within);
                    }
                }
                return out;
            }
            _ => {}
        }
        if let (Some(cmp), Operand::Num(v)) = (num_comparison(op), operand) {
            out |= scan(&self.num_set, within, |id| cmp(self.nums[id as usize], *v));
        } else {
            out |= scan(&self.num_set, within, |id| {
                value_matches(Some(&Val::Num(self.nums[id as usize])), op, operand, now_ms)
            });
        }
        out |= scan(&self.time_set, within, |id| {
            value_matches(
                Some(&Val::Time(self.times[id as usize])),
                op,
                operand,
                now_ms,
            )
        });
        out
    }
}

impl Column {
    /// How many ids in `within` satisfy the leaf; like `eval(..).len()` without building it.
    fn count(&self, op: Op, operand: &Operand, within: &RoaringBitmap, now_ms: i64) -> u64 {
        match (op, operand) {
            (Op::Exists, _) => self.present.intersection_len(within),
            (Op::NotExists, _) => within.len() - self.present.intersection_len(within),
            (Op::Equals, Operand::Bool(true)) => self.trues.intersection_len(within),
            (Op::Equals, Operand::Bool(false)) => self.falses.intersection_len(within),
            (Op::GreaterThan | Op::LessThan | Op::AtLeast | Op::AtMost, Operand::Num(v))
                if self.time_set.is_empty() =>
            {
                let Some(cmp) = num_comparison(op) else {
                    return 0;
                };
                let mut n = 0;
                for id in &(&self.num_set & within) {
                    n += u64::from(cmp(self.nums[id as usize], *v));
                }
                n
            }
            _ => self.eval(op, operand, within, now_ms).len(),
        }
    }
}

/// The comparison of a numeric leaf, as `value_matches` defines it for numbers.
fn num_comparison(op: Op) -> Option<fn(f64, f64) -> bool> {
    Some(match op {
        Op::Equals => |a, b| a == b,
        Op::GreaterThan => |a, b| a > b,
        Op::LessThan => |a, b| a < b,
        Op::AtLeast => |a, b| a >= b,
        Op::AtMost => |a, b| a <= b,
        _ => return None,
    })
}

/// The ids of `set ∩ within` that satisfy `keep`, built in bulk from the sorted ids.
fn scan(set: &RoaringBitmap, within: &RoaringBitmap, keep: impl Fn(u32) -> bool) -> RoaringBitmap {
    let candidates = set & within;
    let mut ids = Vec::with_capacity(candidates.len() as usize);
    for id in &candidates {
        if keep(id) {
            ids.push(id);
        }
    }
    RoaringBitmap::from_sorted_iter(ids).unwrap_or_default()
}

/// One workspace's index.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkspaceIndex {
    all: RoaringBitmap,
    columns: NameMap<Column>,
    events: NameMap<HashMap<u32, Occurrences>>,
    purchases: NameMap<HashMap<u32, Occurrences>>,
    upserts: u64,
    #[serde(with = "pair_keys")]
    cohorts: HashMap<(String, String), RoaringBitmap>,
}

fn sync_occurrences(
    maps: &mut NameMap<HashMap<u32, Occurrences>>,
    id: u32,
    now: &BTreeMap<String, Occurrences>,
) {
    for (name, ids) in maps.iter_mut() {
        if !now.contains_key(name) {
            ids.remove(&id);
        }
    }
    for (name, occ) in now {
        match maps.get_mut(name) {
            Some(ids) => {
                if ids.get(&id) != Some(occ) {
                    ids.insert(id, occ.clone());
                }
            }
            None => {
                maps.entry(name.clone())
                    .or_default()
                    .insert(id, occ.clone());
            }
        }
    }
}

impl WorkspaceIndex {
    /// Every profile of the workspace.
    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Approximate heap bytes (by capacity) of the whole workspace index, and of its largest
    /// attribute columns, largest first: where the index's memory goes.
    pub fn heap_bytes(&self) -> (usize, Vec<(String, usize)>) {
        let mut columns: Vec<(String, usize)> = self
            .columns
            .iter()
            .map(|(name, column)| (name.clone(), column.heap_bytes() + name.len()))
            .collect();
        columns.sort_by_key(|c| std::cmp::Reverse(c.1));
        let occurrences = |maps: &NameMap<HashMap<u32, Occurrences>>| {
            map_bytes(maps)
                + maps
                    .values()
                    .map(|ids| {
                        map_bytes(ids)
                            + ids.values().map(|o| o.recent.capacity() * 8).sum::<usize>()
                    })
                    .sum::<usize>()
        };
        let total = bitmap_bytes(&self.all)
            + map_bytes(&self.columns)
            + columns.iter().map(|(_, b)| b).sum::<usize>()
            + occurrences(&self.events)
            + occurrences(&self.purchases)
            + map_bytes(&self.cohorts)
            + self.cohorts.values().map(bitmap_bytes).sum::<usize>();
        (total, columns)
    }

    /// Indexes a profile's current state (replacing what was indexed for it).
    pub fn upsert(&mut self, id: u32, profile: &Profile) {
        self.all.insert(id);
        self.upserts += 1;
        let stamp = self.upserts;
        let columns = &mut self.columns;
        for_each_attribute(profile, |name, value| {
            let column = match columns.get_mut(name) {
                Some(column) => column,
                None => columns.entry(name.to_string()).or_default(),
            };
            column.stamp = stamp;
            column.set(id, value);
        });
        // Attributes the profile no longer has.
        for column in self.columns.values_mut() {
            if column.stamp != stamp && column.present.contains(id) {
                column.clear(id);
            }
        }
        sync_occurrences(&mut self.events, id, &profile.events);
        sync_occurrences(&mut self.purchases, id, &profile.purchases);
    }

    /// Forgets a deleted profile, cohort memberships included.
    pub fn remove(&mut self, id: u32) {
        self.all.remove(id);
        for column in self.columns.values_mut() {
            column.clear(id);
        }
        for ids in self.events.values_mut().chain(self.purchases.values_mut()) {
            ids.remove(&id);
        }
        for members in self.cohorts.values_mut() {
            members.remove(id);
        }
    }

    /// Adds or removes a cohort member.
    pub fn set_member(&mut self, partner: &str, cohort_id: &str, id: u32, member: bool) {
        let key = (partner.to_string(), cohort_id.to_string());
        if member {
            self.cohorts.entry(key).or_default().insert(id);
        } else if let Some(members) = self.cohorts.get_mut(&key) {
            members.remove(id);
        }
    }

    /// A cohort's members, if it has any.
    pub fn cohort_bitmap(&self, partner: &str, cohort_id: &str) -> Option<&RoaringBitmap> {
        self.cohorts
            .get(&(partner.to_string(), cohort_id.to_string()))
    }

    /// Applies one cohort's committed membership changes.
    pub fn apply_members(
        &mut self,
        partner: &str,
        cohort_id: &str,
        added: &RoaringBitmap,
        removed: &RoaringBitmap,
    ) {
        let members = self
            .cohorts
            .entry((partner.to_string(), cohort_id.to_string()))
            .or_default();
        *members |= added;
        *members -= removed;
    }

    /// The cohorts a profile belongs to, by partner.
    pub fn memberships(&self, id: u32) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((partner, cohort_id), members) in &self.cohorts {
            if members.contains(id) {
                out.entry(partner.clone())
                    .or_default()
                    .push(cohort_id.clone());
            }
        }
        for ids in out.values_mut() {
            ids.sort();
        }
        out
    }

    /// The profiles matching `filter` at `now_ms`.
    pub fn eval(&self, filter: &Filter, now_ms: i64) -> RoaringBitmap {
        self.eval_within(filter, &self.all, now_ms)
    }

    /// How many profiles match `filter` at `now_ms` (a segment's exact size). Equal to
    /// `eval(..).len()`, but the last leaf of an `and` is counted, not built.
    pub fn count(&self, filter: &Filter, now_ms: i64) -> u64 {
        self.count_within(filter, &self.all, now_ms)
    }

    fn count_within(&self, filter: &Filter, within: &RoaringBitmap, now_ms: i64) -> u64 {
        match filter {
            Filter::And(children) => {
                let mut ordered: Vec<&Filter> = children.iter().collect();
                ordered.sort_by_key(|c| cost(c));
                let Some((last, rest)) = ordered.split_last() else {
                    return within.len();
                };
                let mut acc = within.clone();
                for child in rest {
                    if acc.is_empty() {
                        return 0;
                    }
                    acc = self.eval_within(child, &acc, now_ms);
                }
                self.count_within(last, &acc, now_ms)
            }
            Filter::Attr { name, op, value } => match self.columns.get(name) {
                Some(column) => column.count(*op, value, within, now_ms),
                None => self.eval_within(filter, within, now_ms).len(),
            },
            Filter::Cohort {
                partner,
                op: Op::IncludesValue,
                cohort_id: Some(id),
            } => self
                .cohorts
                .get(&(partner.clone(), id.clone()))
                .map_or(0, |members| members.intersection_len(within)),
            _ => self.eval_within(filter, within, now_ms).len(),
        }
    }

    fn eval_within(&self, filter: &Filter, within: &RoaringBitmap, now_ms: i64) -> RoaringBitmap {
        match filter {
            Filter::And(children) => {
                let mut ordered: Vec<&Filter> = children.iter().collect();
                ordered.sort_by_key(|c| cost(c));
                let mut acc = within.clone();
                for child in ordered {
                    if acc.is_empty() {
                        break;
                    }
                    acc = self.eval_within(child, &acc, now_ms);
                }
                acc
            }
            Filter::Or(children) => {
                let mut acc = RoaringBitmap::new();
                for child in children {
                    acc |= self.eval_within(child, within, now_ms);
                }
                acc
            }
            Filter::Not(child) => within - &self.eval_within(child, within, now_ms),
            Filter::Attr { name, op, value } => match self.columns.get(name) {
                Some(column) => column.eval(*op, value, within, now_ms),
                // Nobody has the attribute: only the leaves true of an absent value match.
                None if value_matches(None, *op, value, now_ms) => within.clone(),
                None => RoaringBitmap::new(),
            },
            Filter::Cohort {
                partner,
                op,
                cohort_id,
            } => {
                let mut any = RoaringBitmap::new();
                if let Some(id) = cohort_id.as_ref().filter(|_| *op == Op::IncludesValue) {
                    if let Some(members) = self.cohorts.get(&(partner.clone(), id.clone())) {
                        return members & within;
                    }
                    return any;
                }
                for ((p, _), members) in &self.cohorts {
                    if p == partner {
                        any |= members;
                    }
                }
                match op {
                    Op::NotExists => within - &any,
                    _ => &any & within,
                }
            }
            Filter::Event {
                name,
                op,
                count,
                within_days,
            } => {
                let empty = HashMap::new();
                let ids = self.events.get(name).unwrap_or(&empty);
                count_leaf(
                    ids.iter()
                        .map(|(id, o)| (*id, occurrences_count(Some(o), *within_days, now_ms))),
                    *op,
                    *count,
                    within,
                )
            }
            Filter::Purchase {
                product: Some(product),
                op,
                count,
                within_days,
            } => {
                let empty = HashMap::new();
                let ids = self.purchases.get(product).unwrap_or(&empty);
                count_leaf(
                    ids.iter()
                        .map(|(id, o)| (*id, occurrences_count(Some(o), *within_days, now_ms))),
                    *op,
                    *count,
                    within,
                )
            }
            Filter::Purchase {
                product: None,
                op,
                count,
                within_days,
            } => {
                let mut totals: HashMap<u32, u64> = HashMap::new();
                for ids in self.purchases.values() {
                    for (id, o) in ids {
                        *totals.entry(*id).or_default() +=
                            occurrences_count(Some(o), *within_days, now_ms);
                    }
                }
                count_leaf(totals.into_iter(), *op, *count, within)
            }
        }
    }
}

/// Ids in `within` whose count satisfies the leaf; ids without any count have 0.
fn count_leaf(
    counts: impl Iterator<Item = (u32, u64)>,
    op: CountOp,
    n: u64,
    within: &RoaringBitmap,
) -> RoaringBitmap {
    if count_matches(0, op, n) {
        // Zero counts match: start from everyone and drop those whose count does not.
        let mut out = within.clone();
        for (id, c) in counts {
            if !count_matches(c, op, n) {
                out.remove(id);
            }
        }
        return out;
    }
    let mut out = RoaringBitmap::new();
    for (id, c) in counts {
        if within.contains(id) && count_matches(c, op, n) {
            out.insert(id);
        }
    }
    out
}

/// Evaluation order inside an `and`: bitmap lookups first, scans after, on fewer candidates.
fn cost(filter: &Filter) -> u8 {
    match filter {
        Filter::Cohort { .. } => 0,
        Filter::Attr { op, value, .. } => match (op, value) {
            (Op::Exists | Op::NotExists | Op::IncludesValue, _) => 0,
            (Op::Equals | Op::NotEquals, Operand::Str(_) | Operand::Bool(_)) => 1,
            (Op::Contains | Op::MatchesRegex, _) => 2,
            _ => 3,
        },
        Filter::Event { .. } | Filter::Purchase { .. } => 4,
        Filter::Not(child) => cost(child),
        Filter::And(children) | Filter::Or(children) => {
            children.iter().map(cost).max().unwrap_or(0)
        }
    }
}

/// All workspaces' indexes. It serializes (serde) so that a clean shutdown can save it and the
/// next start load it instead of re-reading every profile; call [`Index::after_load`] on what
/// was deserialized.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    workspaces: HashMap<u32, WorkspaceIndex>,
}

impl Index {
    /// Rebuilds what a snapshot leaves out (each column's hash lookup of its words).
    pub fn after_load(&mut self) {
        for workspace in self.workspaces.values_mut() {
            for column in workspace.columns.values_mut() {
                column.words.rebuild_lookup();
            }
        }
    }

    /// How many workspaces hold profiles or cohorts.
    pub fn workspace_count(&self) -> usize {
        self.workspaces.len()
    }

    /// Approximate heap bytes of every workspace's index.
    pub fn heap_bytes(&self) -> usize {
        self.workspaces.values().map(|w| w.heap_bytes().0).sum()
    }

    /// A workspace's index, created on first use.
    pub fn workspace_mut(&mut self, ws: u32) -> &mut WorkspaceIndex {
        self.workspaces.entry(ws).or_default()
    }

    /// A workspace's index, if it has any profile.
    pub fn workspace(&self, ws: u32) -> Option<&WorkspaceIndex> {
        self.workspaces.get(&ws)
    }
}

/// A map keyed by pairs, as a list of `(a, b, value)` (formats need string or scalar map keys).
mod pair_keys {
    use std::collections::HashMap;

    use roaring::RoaringBitmap;
    use serde::{Deserialize, Deserializer, Serializer};

    type Map = HashMap<(String, String), RoaringBitmap>;

    pub fn serialize<S: Serializer>(map: &Map, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter().map(|((a, b), v)| (a, b, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        let list: Vec<(String, String, RoaringBitmap)> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|(a, b, v)| ((a, b), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_model::attrs::AttrValue;
    use eddy_model::profile::Profile;

    fn ids(b: &RoaringBitmap) -> Vec<u32> {
        b.iter().collect()
    }

    #[test]
    fn holders_move_between_one_and_many() {
        let all: RoaringBitmap = (0..10).collect();
        let mut h = Holders::default();
        h.push();
        assert!(ids(&h.within(0, &all)).is_empty());
        h.insert(0, 3);
        assert_eq!(h.one[0], 3);
        h.insert(0, 3);
        assert_eq!(h.one[0], 3);
        assert_eq!(ids(&h.within(0, &all)), vec![3]);
        assert!(ids(&h.within(0, &(4..10).collect())).is_empty());
        h.remove(0, 7);
        assert_eq!(ids(&h.within(0, &all)), vec![3]);
        h.insert(0, 5);
        assert_eq!(h.one[0], MANY);
        assert_eq!(ids(&h.within(0, &all)), vec![3, 5]);
        h.remove(0, 3);
        assert_eq!(ids(&h.within(0, &all)), vec![5]);
        h.remove(0, 5);
        assert!(ids(&h.within(0, &all)).is_empty());
        h.push();
        h.insert(1, 2);
        h.remove(1, 2);
        assert_eq!(h.one[1], NOBODY);
        assert!(ids(&h.within(1, &all)).is_empty());
    }

    #[test]
    fn unique_string_values_follow_changes_and_removals() {
        let mut index = WorkspaceIndex::default();
        let profile = |code: &str| {
            let mut p = Profile::new("b".into(), 0);
            p.custom
                .insert("code".into(), AttrValue::String(code.into()));
            p
        };
        let equals = |code: &str| {
            crate::filter::Filter::parse(
                &serde_json::json!({"attribute": "code", "op": "equals", "value": code}),
            )
            .unwrap()
        };
        index.upsert(1, &profile("a"));
        index.upsert(2, &profile("b"));
        assert_eq!(ids(&index.eval(&equals("a"), 0)), vec![1]);
        index.upsert(1, &profile("c"));
        assert!(
            ids(&index.eval(&equals("a"), 0)).is_empty(),
            "the old value lets go"
        );
        assert_eq!(ids(&index.eval(&equals("c"), 0)), vec![1]);
        index.upsert(2, &profile("c"));
        assert_eq!(ids(&index.eval(&equals("c"), 0)), vec![1, 2]);
        index.remove(1);
        assert_eq!(ids(&index.eval(&equals("c"), 0)), vec![2]);
        assert_eq!(index.count(&equals("b"), 0), 0);
    }
}
