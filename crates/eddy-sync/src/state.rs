//! Change tracking: per sync, what was last confirmed by the target for every row.
//!
//! A row is remembered by its identifier (the key) and a list of 64-bit fingerprints: one of the
//! whole row (a fast "nothing changed" test) and one per tracked field (0 = null). Two files in
//! the sync's folder hold it: `state.snap`, a snapshot rewritten only by compaction (write to a
//! temporary file, fsync, rename), and `state.journal`, to which each confirmed batch is appended
//! as it is confirmed. Every record carries a checksum; a torn last journal record (a crash
//! mid-write) is cut off on load, so the state is always a prefix of what was confirmed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

use crate::SyncError;

const MAGIC: &[u8; 8] = b"EDDYSYNC";
const VERSION: u32 = 1;
const UPSERT: u8 = 1;
const DELETE: u8 = 2;

/// What a state file was written for: the identifier type and the tracked field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `external_id`, `user_alias`, …
    pub identifier: String,
    /// Tracked fields in order.
    pub fields: Vec<String>,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        put_str(&mut out, &self.identifier);
        out.extend_from_slice(&(self.fields.len() as u32).to_le_bytes());
        for f in &self.fields {
            put_str(&mut out, f);
        }
        out
    }

    fn decode(b: &[u8], pos: &mut usize) -> Option<Header> {
        if b.get(..8)? != MAGIC || u32_at(b, 8)? != VERSION {
            return None;
        }
        *pos = 12;
        let identifier = get_str(b, pos)?;
        let n = u32_at(b, *pos)? as usize;
        *pos += 4;
        let mut fields = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            fields.push(get_str(b, pos)?);
        }
        Some(Header { identifier, fields })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn get_str(b: &[u8], pos: &mut usize) -> Option<String> {
    let n = u32_at(b, *pos)? as usize;
    let s = b.get(*pos + 4..*pos + 4 + n)?;
    *pos += 4 + n;
    String::from_utf8(s.to_vec()).ok()
}

/// The remembered rows of one sync.
pub struct State {
    stride: usize,
    table: HashTable<u32>,
    key_hash: Vec<u64>,
    key_end: Vec<u64>,
    keys: Vec<u8>,
    prints: Vec<u64>,
    live: Vec<bool>,
    /// Why earlier state was set aside, if it was.
    pub notice: Option<String>,
}

/// The folder of a sync's state.
pub fn sync_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(name)
}

fn snap_path(dir: &Path) -> PathBuf {
    dir.join("state.snap")
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("state.journal")
}

impl State {
    /// An empty state for `nfields` fields.
    pub fn new(nfields: usize) -> State {
        State {
            stride: nfields + 1,
            table: HashTable::new(),
            key_hash: Vec::new(),
            key_end: Vec::new(),
            keys: Vec::new(),
            prints: Vec::new(),
            live: Vec::new(),
            notice: None,
        }
    }

    /// Reads the snapshot and the journal of `dir`, mapping their fields onto `header`'s by name
    /// (a field new to the header starts as null). State written for another identifier type
    /// is set aside. Cuts a torn tail off the journal.
    pub fn load(dir: &Path, header: &Header) -> Result<State, SyncError> {
        let mut state = State::new(header.fields.len());
        for (path, is_journal) in [(snap_path(dir), false), (journal_path(dir), true)] {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::State(format!("{}: {e}", path.display()))),
            };
            let mut pos = 0;
            let Some(file_header) = Header::decode(&bytes, &mut pos) else {
                if is_journal && bytes.len() < 64 {
                    // A journal whose header was torn holds no record.
                    continue;
                }
                return Err(SyncError::State(format!(
                    "{} is not a state file",
                    path.display()
                )));
            };
            if file_header.identifier != header.identifier {
                state = State::new(header.fields.len());
                state.notice = Some(format!(
                    "the identifier changed from {} to {}: every row is sent again",
                    file_header.identifier, header.identifier
                ));
                break;
            }
            let map: Vec<Option<usize>> = header
                .fields
                .iter()
                .map(|f| file_header.fields.iter().position(|g| g == f))
                .collect();
            let same = file_header.fields == header.fields;
            let file_stride = file_header.fields.len() + 1;
            let mut prints = vec![0u64; state.stride];
            loop {
                if pos == bytes.len() {
                    break;
                }
                let Some((op, key, raw, next)) = record_at(&bytes, pos, file_stride) else {
                    if is_journal {
                        tracing::warn!(path = %path.display(), at = pos, "cutting a torn record off the sync journal");
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| SyncError::State(e.to_string()))?;
                        f.set_len(pos as u64)
                            .map_err(|e| SyncError::State(e.to_string()))?;
                        f.sync_all().map_err(|e| SyncError::State(e.to_string()))?;
                        break;
                    }
                    return Err(SyncError::State(format!(
                        "{} is damaged at byte {pos}",
                        path.display()
                    )));
                };
                pos = next;
                if op == DELETE {
                    state.delete(key);
                    continue;
                }
                prints[0] = if same { u64_at(raw, 0).unwrap_or(0) } else { 0 };
                for (i, m) in map.iter().enumerate() {
                    prints[i + 1] = match m {
                        Some(j) => u64_at(raw, (j + 1) * 8).unwrap_or(0),
                        None => 0,
                    };
                }
                state.upsert(key, &prints);
            }
        }
        Ok(state)
    }

    /// Slots ever used (live or deleted).
    pub fn slots(&self) -> usize {
        self.live.len()
    }

    /// Rows remembered.
    pub fn len(&self) -> usize {
        self.live.iter().filter(|l| **l).count()
    }

    /// True when no row is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of a remembered key.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = xxh3_64(key);
        self.table
            .find(hash, |&slot| self.key(slot) == key)
            .copied()
            .filter(|slot| self.live[*slot as usize])
    }

    /// The key of a slot.
    pub fn key(&self, slot: u32) -> &[u8] {
        let i = slot as usize;
        let start = if i == 0 {
            0
        } else {
            self.key_end[i - 1] as usize
        };
        &self.keys[start..self.key_end[i] as usize]
    }

    /// The fingerprints of a slot: the row's, then each field's.
    pub fn prints(&self, slot: u32) -> &[u64] {
        let i = slot as usize * self.stride;
        &self.prints[i..i + self.stride]
    }

    /// True when the slot holds a remembered row.
    pub fn is_live(&self, slot: u32) -> bool {
        self.live[slot as usize]
    }

    /// Remembers a row.
    pub fn upsert(&mut self, key: &[u8], prints: &[u64]) {
        let hash = xxh3_64(key);
        let found = self.table.find(hash, |&slot| {
            let i = slot as usize;
            let start = if i == 0 {
                0
            } else {
                self.key_end[i - 1] as usize
            };
            &self.keys[start..self.key_end[i] as usize] == key
        });
        let slot = match found {
            Some(&slot) => slot,
            None => {
                let slot = self.live.len() as u32;
                self.keys.extend_from_slice(key);
                self.key_end.push(self.keys.len() as u64);
                self.key_hash.push(hash);
                self.live.push(true);
                self.prints.extend(std::iter::repeat_n(0, self.stride));
                let hashes = &self.key_hash;
                self.table
                    .insert_unique(hash, slot, |&s| hashes[s as usize]);
                slot
            }
        };
        let i = slot as usize;
        self.live[i] = true;
        self.prints[i * self.stride..(i + 1) * self.stride].copy_from_slice(prints);
    }

    /// Forgets a row.
    pub fn delete(&mut self, key: &[u8]) {
        if let Some(slot) = self.find(key) {
            self.live[slot as usize] = false;
        }
    }

    /// Rewrites the snapshot from this state and empties the journal.
    pub fn compact(&self, dir: &Path, header: &Header) -> Result<(), SyncError> {
        let io = |e: std::io::Error| SyncError::State(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join("state.snap.tmp");
        let file = File::create(&tmp).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header.encode()).map_err(io)?;
        let mut record = Vec::new();
        for slot in 0..self.slots() as u32 {
            if !self.is_live(slot) {
                continue;
            }
            encode_record(&mut record, UPSERT, self.key(slot), self.prints(slot));
            out.write_all(&record).map_err(io)?;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, snap_path(dir)).map_err(io)?;
        match std::fs::remove_file(journal_path(dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

/// Sizes of the snapshot and the journal, to decide when to compact.
pub fn file_sizes(dir: &Path) -> (u64, u64) {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(snap_path(dir)), size(journal_path(dir)))
}

/// True when the journal was written for other fields or identifier than `header`.
pub fn journal_mismatch(dir: &Path, header: &Header) -> bool {
    let Ok(bytes) = std::fs::read(journal_path(dir)) else {
        return false;
    };
    let mut pos = 0;
    match Header::decode(&bytes, &mut pos) {
        Some(h) => h != *header,
        None => false,
    }
}

fn encode_record(out: &mut Vec<u8>, op: u8, key: &[u8], prints: &[u64]) {
    out.clear();
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    if op == UPSERT {
        for p in prints {
            out.extend_from_slice(&p.to_le_bytes());
        }
    }
    let sum = xxh3_64(out);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// One record at `pos`: (op, key, fingerprint bytes, next position), or `None` when torn.
fn record_at(b: &[u8], pos: usize, stride: usize) -> Option<(u8, &[u8], &[u8], usize)> {
    let op = *b.get(pos)?;
    let klen = u32_at(b, pos + 1)? as usize;
    let key_start = pos + 5;
    let key = b.get(key_start..key_start + klen)?;
    let prints_len = match op {
        UPSERT => stride * 8,
        DELETE => 0,
        _ => return None,
    };
    let end = key_start + klen + prints_len;
    let raw = b.get(key_start + klen..end)?;
    let sum = u64_at(b, end)?;
    if xxh3_64(&b[pos..end]) != sum {
        return None;
    }
    Some((op, key, raw, end + 8))
}

/// Appends confirmed changes to the journal.
pub struct Journal {
    file: File,
    buf: Vec<u8>,
    dirty: bool,
    last_sync: Instant,
}

impl Journal {
    /// Opens (or starts) the journal of `dir` for `header`.
    pub fn open(dir: &Path, header: &Header) -> Result<Journal, SyncError> {
        let io = |e: std::io::Error| SyncError::State(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = journal_path(dir);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() == 0 {
            file.write_all(&header.encode()).map_err(io)?;
            file.sync_all().map_err(io)?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(Journal {
            file,
            buf: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
        })
    }

    /// Records a confirmed row.
    pub fn upsert(&mut self, key: &[u8], prints: &[u64]) {
        let mut record = Vec::new();
        encode_record(&mut record, UPSERT, key, prints);
        self.buf.extend_from_slice(&record);
    }

    /// Records a forgotten row.
    pub fn delete(&mut self, key: &[u8]) {
        let mut record = Vec::new();
        encode_record(&mut record, DELETE, key, &[]);
        self.buf.extend_from_slice(&record);
    }

    /// Writes what was recorded (one write: a crash keeps whole records or cuts the last one)
    /// and fsyncs at most once a second, or now when `sync`.
    pub fn flush(&mut self, sync: bool) -> Result<(), SyncError> {
        let io = |e: std::io::Error| SyncError::State(format!("sync journal: {e}"));
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf).map_err(io)?;
            self.buf.clear();
            self.dirty = true;
        }
        if self.dirty && (sync || self.last_sync.elapsed() >= Duration::from_secs(1)) {
            self.file.sync_data().map_err(io)?;
            self.dirty = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: &[&str]) -> Header {
        Header {
            identifier: "external_id".into(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn journal_then_snapshot_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let h = header(&["a", "b"]);
        let mut j = Journal::open(dir.path(), &h).unwrap();
        j.upsert(b"u1", &[10, 1, 2]);
        j.upsert(b"u2", &[20, 3, 0]);
        j.upsert(b"u1", &[11, 1, 5]);
        j.delete(b"u2");
        j.flush(true).unwrap();
        let s = State::load(dir.path(), &h).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.prints(s.find(b"u1").unwrap()), &[11, 1, 5]);
        assert!(s.find(b"u2").is_none());
        s.compact(dir.path(), &h).unwrap();
        assert_eq!(file_sizes(dir.path()).1, 0, "journal removed");
        let again = State::load(dir.path(), &h).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.prints(again.find(b"u1").unwrap()), &[11, 1, 5]);
    }

    #[test]
    fn a_torn_journal_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let h = header(&["a"]);
        let mut j = Journal::open(dir.path(), &h).unwrap();
        j.upsert(b"u1", &[1, 1]);
        j.upsert(b"u2", &[2, 2]);
        j.flush(true).unwrap();
        drop(j);
        let path = journal_path(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let s = State::load(dir.path(), &h).unwrap();
        assert!(s.find(b"u1").is_some());
        assert!(s.find(b"u2").is_none(), "the torn record is not trusted");
        let mut j = Journal::open(dir.path(), &h).unwrap();
        j.upsert(b"u3", &[3, 3]);
        j.flush(true).unwrap();
        let s = State::load(dir.path(), &h).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.find(b"u3").is_some());
    }

    #[test]
    fn fields_are_remapped_by_name_and_a_new_identifier_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &header(&["a", "b"])).unwrap();
        j.upsert(b"u1", &[9, 1, 2]);
        j.flush(true).unwrap();
        let s = State::load(dir.path(), &header(&["b", "c"])).unwrap();
        // The row fingerprint is dropped (the field list differs); b moves, c is new.
        assert_eq!(s.prints(s.find(b"u1").unwrap()), &[0, 2, 0]);
        assert!(journal_mismatch(dir.path(), &header(&["b", "c"])));
        let other = Header {
            identifier: "braze_id".into(),
            fields: vec!["a".into(), "b".into()],
        };
        let s = State::load(dir.path(), &other).unwrap();
        assert!(s.is_empty());
        assert!(s.notice.is_some());
    }

    #[test]
    fn a_damaged_snapshot_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let h = header(&["a"]);
        let mut s = State::new(1);
        s.upsert(b"u1", &[1, 1]);
        s.compact(dir.path(), &h).unwrap();
        let path = snap_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(State::load(dir.path(), &h).is_err());
    }

    #[test]
    fn many_keys() {
        let mut s = State::new(1);
        for i in 0..10_000u64 {
            s.upsert(format!("user-{i}").as_bytes(), &[i, i]);
        }
        for i in (0..10_000u64).step_by(7) {
            s.delete(format!("user-{i}").as_bytes());
        }
        for i in 0..10_000u64 {
            let found = s.find(format!("user-{i}").as_bytes());
            assert_eq!(found.is_some(), i % 7 != 0);
            if let Some(slot) = found {
                assert_eq!(s.prints(slot), &[i, i]);
            }
        }
        s.upsert(b"user-0", &[5, 5]);
        assert_eq!(s.prints(s.find(b"user-0").unwrap()), &[5, 5]);
    }
}
