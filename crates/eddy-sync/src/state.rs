//! Change tracking: per sync, what was last confirmed by the target for every row.
//!
//! A row is remembered by its identifier (the key) and 64-bit fingerprints: one of the whole row
//! (a fast "nothing changed" test) and one per tracked field (0 = null). Two files in the sync's
//! folder hold it. `state.snap` is rewritten only by compaction (temporary file, fsync, rename):
//! section A holds each row's key fingerprint, row fingerprint and key, in fingerprint order, and
//! is loaded whole; section B holds the field fingerprints, one fixed-size checked record per row,
//! read only for rows that changed. `state.journal` gets each confirmed batch appended as it is
//! confirmed; every journal record carries a checksum, and a torn last record (a crash mid-write)
//! is cut off on load, so the state is always what the target confirmed, up to the last record.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_128};

use crate::SyncError;

const MAGIC: &[u8; 8] = b"EDDYSYNC";
const VERSION: u32 = 3;
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

/// A key's fingerprint: 96 bits of its xxh3-128. Rows are found by it, so checking that a row
/// is unchanged touches one table entry; a collision among even a billion keys (about 2^-37)
/// is far less likely than a disk error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp {
    lo: u64,
    hi: u32,
}

/// The fingerprint of a key.
pub fn fingerprint(key: &[u8]) -> Fp {
    let h = xxh3_128(key);
    Fp {
        lo: h as u64,
        hi: (h >> 64) as u32,
    }
}

const EMPTY: u32 = u32::MAX;
const SEEN: u32 = 1 << 31;
const DEAD: u32 = 1 << 30;
const SLOT: u32 = DEAD - 1;

/// One table entry (24 bytes): fingerprint, row fingerprint, slot with flags.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lo: u64,
    row: u64,
    hi: u32,
    slot: u32,
}

const VACANT: Entry = Entry {
    lo: 0,
    row: 0,
    hi: 0,
    slot: EMPTY,
};

/// Open addressing with linear probing, indexed by the fingerprint's top bits: entries sorted
/// by fingerprint land in increasing positions, which is how snapshots are written, so loading
/// one streams through memory instead of jumping around it.
struct KeyTable {
    entries: Vec<Entry>,
    shift: u32,
    used: usize,
    alive: usize,
}

impl KeyTable {
    fn with_rows(rows: usize) -> KeyTable {
        let cap = (rows.saturating_mul(10) / 7).next_power_of_two().max(1024);
        KeyTable {
            entries: huge_vec(cap),
            shift: 64 - cap.trailing_zeros(),
            used: 0,
            alive: 0,
        }
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn home(&self, fp: Fp) -> usize {
        (fp.lo >> self.shift) as usize
    }

    /// The entry holding `fp` (alive or dead), or the vacant entry where it would go.
    fn probe(&self, fp: Fp) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.home(fp);
        loop {
            let e = &self.entries[i];
            if e.slot == EMPTY {
                return (i, false);
            }
            if e.lo == fp.lo && e.hi == fp.hi {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    fn put(&mut self, fp: Fp, row: u64, slot: u32) {
        if (self.used + 1) * 10 > self.entries.len() * 7 {
            self.grow();
        }
        let (i, found) = self.probe(fp);
        if !found {
            self.used += 1;
        }
        if !found || self.entries[i].slot & DEAD != 0 {
            self.alive += 1;
        }
        self.entries[i] = Entry {
            lo: fp.lo,
            row,
            hi: fp.hi,
            slot,
        };
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.entries);
        *self = KeyTable::with_rows(self.alive.max(old.len()));
        for e in old {
            if e.slot != EMPTY && e.slot & DEAD == 0 {
                self.put(Fp { lo: e.lo, hi: e.hi }, e.row, e.slot);
            }
        }
    }
}

/// A vector of vacant entries whose memory the kernel is asked to back with huge pages: the
/// table is probed at random, and with 4 KiB pages nearly every probe missed the TLB.
fn huge_vec(cap: usize) -> Vec<Entry> {
    let mut v: Vec<Entry> = Vec::with_capacity(cap);
    #[cfg(target_os = "linux")]
    {
        let bytes = cap * std::mem::size_of::<Entry>();
        if bytes >= 4 << 20 {
            let start = v.as_mut_ptr() as usize;
            let aligned = (start + (2 << 20) - 1) & !((2 << 20) - 1);
            let len = (start + bytes).saturating_sub(aligned) & !((2 << 20) - 1);
            if len > 0 {
                // SAFETY: the range lies inside the allocation just made; madvise only changes
                // how the kernel backs it, and a failure leaves ordinary pages.
                unsafe {
                    libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v.resize(cap, VACANT);
    v
}

/// What [`State::visit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Not remembered.
    New,
    /// Remembered, with its slot and row fingerprint; first visit this run.
    Known(u32, u64),
    /// Already visited this run (the key appears twice).
    Again,
}

/// The remembered rows of one sync.
pub struct State {
    nfields: usize,
    table: KeyTable,
    key_end: Vec<u64>,
    keys: Vec<u8>,
    /// The snapshot's field fingerprints stay on disk (section B, one fixed-size record per
    /// snapshot slot) and are read only for the rows that changed.
    disk: Option<Disk>,
    /// Field fingerprints newer than the snapshot's, or of rows the snapshot lacks.
    overrides: foldhash::HashMap<u32, Box<[u64]>>,
    /// Why earlier state was set aside, if it was.
    pub notice: Option<String>,
}

struct Disk {
    file: File,
    path: PathBuf,
    fields_at: u64,
    rows: u32,
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

fn state_err(path: &Path, e: impl std::fmt::Display) -> SyncError {
    SyncError::State(format!("{}: {e}", path.display()))
}

impl State {
    /// An empty state for `nfields` fields.
    pub fn new(nfields: usize) -> State {
        State::with_rows(nfields, 0)
    }

    fn with_rows(nfields: usize, rows: usize) -> State {
        State {
            nfields,
            table: KeyTable::with_rows(rows),
            key_end: Vec::with_capacity(rows),
            keys: Vec::new(),
            disk: None,
            overrides: foldhash::HashMap::default(),
            notice: None,
        }
    }

    /// Reads the snapshot and the journal of `dir`, mapping their fields onto `header`'s by name
    /// (a field new to the header starts as null). State written for another identifier type
    /// is set aside. Cuts a torn tail off the journal.
    pub fn load(dir: &Path, header: &Header) -> Result<State, SyncError> {
        let mut state = State::new(header.fields.len());
        let snap = snap_path(dir);
        match File::open(&snap) {
            Ok(file) => {
                if !state.read_snapshot(file, &snap, header)? {
                    return Ok(state);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(state_err(&snap, e)),
        }
        state.replay_journal(dir, header)?;
        Ok(state)
    }

    /// Loads a snapshot's rows (section A: fingerprints and keys); its field fingerprints
    /// (section B) are read when needed. False when it was written for another identifier.
    ///
    /// Layout: header, `rows` u64, `a_len` u64, section A (`lo` u64, `hi` u32, key length u32,
    /// row fingerprint u64, key), section B (`rows` × fields × u64), then the xxh3 of section A
    /// and of section B.
    fn read_snapshot(
        &mut self,
        file: File,
        path: &Path,
        header: &Header,
    ) -> Result<bool, SyncError> {
        use std::os::unix::fs::FileExt;
        let bad = || state_err(path, "damaged snapshot");
        let total = file.metadata().map_err(|e| state_err(path, e))?.len();
        let mut r = Chunks::new(file.try_clone().map_err(|e| state_err(path, e))?);
        let head_len = r.header_len().map_err(|_| bad())?;
        let head = r.take(head_len).map_err(|_| bad())?.to_vec();
        let mut pos = 0;
        let file_header = Header::decode(&head, &mut pos).ok_or_else(bad)?;
        if file_header.identifier != header.identifier {
            self.notice = Some(format!(
                "the identifier changed from {} to {}: every row is sent again",
                file_header.identifier, header.identifier
            ));
            return Ok(false);
        }
        let layout = r.take(16).map_err(|_| bad())?;
        let rows = u64_at(layout, 0).ok_or_else(bad)?;
        let a_len = u64_at(layout, 8).ok_or_else(bad)?;
        let file_fields = file_header.fields.len() as u64;
        let a_start = head_len as u64 + 16;
        let fields_at = a_start + a_len;
        if rows > u64::from(SLOT) || fields_at + rows * (file_fields + 1) * 8 + 16 != total {
            return Err(bad());
        }
        let mut trailer = [0u8; 16];
        file.read_exact_at(&mut trailer, total - 16)
            .map_err(|e| state_err(path, e))?;
        let notice = self.notice.take();
        *self = State::with_rows(header.fields.len(), rows as usize);
        self.notice = notice;
        let same = file_header.fields == header.fields;
        let a_end = fields_at as usize;
        r.rehash_from_here();
        while r.consumed < a_end {
            let fixed = r.take(24).map_err(|_| bad())?;
            let fp = Fp {
                lo: u64_at(fixed, 0).ok_or_else(bad)?,
                hi: u32_at(fixed, 8).ok_or_else(bad)?,
            };
            let klen = u32_at(fixed, 12).ok_or_else(bad)? as usize;
            let row = if same {
                u64_at(fixed, 16).ok_or_else(bad)?
            } else {
                0
            };
            let key = r.take(klen).map_err(|_| bad())?;
            self.keys.extend_from_slice(key);
            let slot = self.key_end.len() as u32;
            self.key_end.push(self.keys.len() as u64);
            self.table.put(fp, row, slot);
        }
        if r.consumed != a_end
            || self.key_end.len() as u64 != rows
            || u64_at(&trailer, 0) != Some(r.hash_so_far())
        {
            return Err(bad());
        }
        let disk = Disk {
            file,
            path: path.to_path_buf(),
            fields_at,
            rows: rows as u32,
        };
        if same {
            self.disk = Some(disk);
            return Ok(true);
        }
        // Other fields: read section B once and remap it by name.
        let all = read_fields(&disk, file_header.fields.len())?;
        let map = field_map(header, &file_header);
        let stride = file_header.fields.len();
        for slot in 0..rows as usize {
            let row = &all[slot * stride..(slot + 1) * stride];
            let remapped: Box<[u64]> = map.iter().map(|m| m.map_or(0, |j| row[j])).collect();
            self.overrides.insert(slot as u32, remapped);
        }
        Ok(true)
    }

    fn replay_journal(&mut self, dir: &Path, header: &Header) -> Result<(), SyncError> {
        let path = journal_path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(state_err(&path, e)),
        };
        let mut pos = 0;
        let Some(file_header) = Header::decode(&bytes, &mut pos) else {
            if bytes.len() < 64 {
                // A journal whose header was torn holds no record.
                return Ok(());
            }
            return Err(state_err(&path, "not a sync journal"));
        };
        if file_header.identifier != header.identifier {
            *self = State::new(header.fields.len());
            self.notice = Some(format!(
                "the identifier changed from {} to {}: every row is sent again",
                file_header.identifier, header.identifier
            ));
            return Ok(());
        }
        let map = field_map(header, &file_header);
        let same = file_header.fields == header.fields;
        let file_stride = file_header.fields.len() + 1;
        let mut prints = vec![0u64; self.nfields + 1];
        while pos < bytes.len() {
            let Some((op, key, raw, next)) = record_at(&bytes, pos, file_stride) else {
                tracing::warn!(path = %path.display(), at = pos, "cutting a torn record off the sync journal");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| state_err(&path, e))?;
                f.set_len(pos as u64).map_err(|e| state_err(&path, e))?;
                f.sync_all().map_err(|e| state_err(&path, e))?;
                break;
            };
            pos = next;
            if op == DELETE {
                self.delete(key);
                continue;
            }
            prints[0] = if same { u64_at(raw, 0).unwrap_or(0) } else { 0 };
            for (i, m) in map.iter().enumerate() {
                prints[i + 1] = m.and_then(|j| u64_at(raw, (j + 1) * 8)).unwrap_or(0);
            }
            self.upsert(key, &prints);
        }
        Ok(())
    }

    /// Rows remembered.
    pub fn len(&self) -> usize {
        self.table.alive
    }

    /// True when no row is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of a remembered key.
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let (i, found) = self.table.probe(fingerprint(key));
        let slot = self.table.entries[i].slot;
        (found && slot & DEAD == 0).then_some(slot & SLOT)
    }

    /// Reads the entry a fingerprint starts probing at, so that a pass over many keys brings
    /// their entries into cache in parallel before they are visited one by one.
    pub fn touch(&self, fp: Fp) -> u64 {
        self.table.entries[self.table.home(fp)].lo
    }

    /// Looks a key up during a run and marks it visited.
    pub fn visit(&mut self, fp: Fp) -> Visit {
        let (i, found) = self.table.probe(fp);
        let e = &mut self.table.entries[i];
        if !found || e.slot & DEAD != 0 {
            return Visit::New;
        }
        if e.slot & SEEN != 0 {
            return Visit::Again;
        }
        e.slot |= SEEN;
        Visit::Known(e.slot & SLOT, e.row)
    }

    /// Remembered rows not visited this run, in slot order.
    pub fn unvisited(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .table
            .entries
            .iter()
            .filter(|e| e.slot != EMPTY && e.slot & (SEEN | DEAD) == 0)
            .map(|e| e.slot)
            .collect();
        out.sort_unstable();
        out
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

    /// The field fingerprints of a slot (0 = null).
    pub fn field_prints(&self, slot: u32) -> Result<Vec<u64>, SyncError> {
        if let Some(p) = self.overrides.get(&slot) {
            return Ok(p.to_vec());
        }
        match &self.disk {
            Some(disk) if slot < disk.rows => {
                use std::os::unix::fs::FileExt;
                let len = self.nfields * 8;
                let mut raw = vec![0u8; len + 8];
                let at = disk.fields_at + u64::from(slot) * (len as u64 + 8);
                disk.file
                    .read_exact_at(&mut raw, at)
                    .map_err(|e| state_err(&disk.path, e))?;
                if u64_at(&raw, len) != Some(record_check(slot, &raw[..len])) {
                    return Err(state_err(
                        &disk.path,
                        "damaged snapshot (field fingerprints)",
                    ));
                }
                Ok(raw[..len]
                    .chunks_exact(8)
                    .map(|c| u64_at(c, 0).unwrap_or(0))
                    .collect())
            }
            _ => Ok(vec![0; self.nfields]),
        }
    }

    /// Remembers a row: `prints` is the row's fingerprint, then each field's.
    pub fn upsert(&mut self, key: &[u8], prints: &[u64]) {
        let fp = fingerprint(key);
        let (i, found) = self.table.probe(fp);
        let slot = if found {
            let e = &mut self.table.entries[i];
            if e.slot & DEAD != 0 {
                self.table.alive += 1;
            }
            e.slot &= SLOT;
            e.row = prints[0];
            e.slot
        } else {
            let slot = self.key_end.len() as u32;
            self.keys.extend_from_slice(key);
            self.key_end.push(self.keys.len() as u64);
            self.table.put(fp, prints[0], slot);
            slot
        };
        self.overrides.insert(slot, prints[1..].into());
    }

    /// Forgets a row.
    pub fn delete(&mut self, key: &[u8]) {
        let (i, found) = self.table.probe(fingerprint(key));
        let e = &mut self.table.entries[i];
        if found && e.slot & DEAD == 0 {
            e.slot |= DEAD;
            self.table.alive -= 1;
        }
    }

    /// Rewrites the snapshot from this state (in fingerprint order) and empties the journal.
    pub fn compact(&self, dir: &Path, header: &Header) -> Result<(), SyncError> {
        let io = |e: std::io::Error| state_err(dir, e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let on_disk = match &self.disk {
            Some(disk) => read_fields(disk, self.nfields)?,
            None => Vec::new(),
        };
        let mut order = Vec::with_capacity(self.table.alive);
        let mut a_len = 0u64;
        for e in &self.table.entries {
            if e.slot == EMPTY || e.slot & DEAD != 0 {
                continue;
            }
            let slot = e.slot & SLOT;
            a_len += 24 + self.key(slot).len() as u64;
            order.push(*e);
        }
        let tmp = dir.join("state.snap.tmp");
        let file = File::create(&tmp).map_err(io)?;
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Xxh3::new(),
        };
        out.inner.write_all(&header.encode()).map_err(io)?;
        out.inner
            .write_all(&(order.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.inner.write_all(&a_len.to_le_bytes()).map_err(io)?;
        for e in &order {
            let key = self.key(e.slot & SLOT);
            out.write_all(&e.lo.to_le_bytes()).map_err(io)?;
            out.write_all(&e.hi.to_le_bytes()).map_err(io)?;
            out.write_all(&(key.len() as u32).to_le_bytes())
                .map_err(io)?;
            out.write_all(&e.row.to_le_bytes()).map_err(io)?;
            out.write_all(key).map_err(io)?;
        }
        let hash_a = out.hasher.digest();
        out.hasher = Xxh3::new();
        let zeros = vec![0u64; self.nfields];
        for (new_slot, e) in order.iter().enumerate() {
            let slot = e.slot & SLOT;
            let fields: &[u64] = match self.overrides.get(&slot) {
                Some(p) => p,
                None if (slot as usize + 1) * self.nfields <= on_disk.len() => {
                    &on_disk[slot as usize * self.nfields..(slot as usize + 1) * self.nfields]
                }
                None => &zeros,
            };
            let mut record = Vec::with_capacity(fields.len() * 8 + 8);
            for p in fields {
                record.extend_from_slice(&p.to_le_bytes());
            }
            // Slots are renumbered in this order when the snapshot is loaded.
            let check = record_check(new_slot as u32, &record);
            record.extend_from_slice(&check.to_le_bytes());
            out.write_all(&record).map_err(io)?;
        }
        let hash_b = out.hasher.digest();
        let mut inner = out.inner;
        inner.write_all(&hash_a.to_le_bytes()).map_err(io)?;
        inner.write_all(&hash_b.to_le_bytes()).map_err(io)?;
        let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
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

/// Reads a snapshot's section B whole (fields only, slot by slot), checking its hash.
fn read_fields(disk: &Disk, nfields: usize) -> Result<Vec<u64>, SyncError> {
    use std::os::unix::fs::FileExt;
    let record = (nfields + 1) * 8;
    let len = disk.rows as usize * record;
    let mut raw = vec![0u8; len + 16];
    disk.file
        .read_exact_at(&mut raw, disk.fields_at)
        .map_err(|e| state_err(&disk.path, e))?;
    if u64_at(&raw, len + 8) != Some(xxh3_64(&raw[..len])) {
        return Err(state_err(
            &disk.path,
            "damaged snapshot (field fingerprints)",
        ));
    }
    let mut out = Vec::with_capacity(disk.rows as usize * nfields);
    for r in raw[..len].chunks_exact(record) {
        out.extend(
            r[..nfields * 8]
                .chunks_exact(8)
                .map(|c| u64_at(c, 0).unwrap_or(0)),
        );
    }
    Ok(out)
}

/// The check of one section-B record: its bytes, bound to its slot.
fn record_check(slot: u32, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, u64::from(slot))
}

fn field_map(header: &Header, file_header: &Header) -> Vec<Option<usize>> {
    header
        .fields
        .iter()
        .map(|f| file_header.fields.iter().position(|g| g == f))
        .collect()
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a file in large chunks, handing out byte ranges and hashing what was handed out.
struct Chunks {
    file: File,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    hashed: usize,
    hasher: Xxh3,
    consumed: usize,
}

impl Chunks {
    fn new(file: File) -> Chunks {
        Chunks {
            file,
            buf: vec![0; 4 << 20],
            pos: 0,
            len: 0,
            hashed: 0,
            hasher: Xxh3::new(),
            consumed: 0,
        }
    }

    fn fill(&mut self, n: usize) -> std::io::Result<()> {
        use std::io::Read;
        if self.len - self.pos >= n {
            return Ok(());
        }
        self.hasher.update(&self.buf[self.hashed..self.pos]);
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        self.hashed = 0;
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        while self.len < n {
            let got = self.file.read(&mut self.buf[self.len..])?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.len += got;
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        self.fill(n)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        self.consumed += n;
        Ok(out)
    }

    /// The length of the header at the start of the file.
    fn header_len(&mut self) -> std::io::Result<usize> {
        self.fill(16)?;
        let mut n = 12;
        let read_str = |this: &mut Chunks, n: &mut usize| -> std::io::Result<()> {
            this.fill(*n + 4)?;
            let len = u32_at(&this.buf[this.pos..], *n).unwrap_or(0) as usize;
            *n += 4 + len;
            Ok(())
        };
        read_str(self, &mut n)?;
        self.fill(n + 4)?;
        let fields = u32_at(&self.buf[self.pos..], n).unwrap_or(0) as usize;
        n += 4;
        for _ in 0..fields {
            read_str(self, &mut n)?;
        }
        Ok(n)
    }

    /// Starts the running hash afresh at the current position.
    fn rehash_from_here(&mut self) {
        self.hashed = self.pos;
        self.hasher = Xxh3::new();
    }

    fn hash_so_far(&mut self) -> u64 {
        self.hasher.update(&self.buf[self.hashed..self.pos]);
        self.hashed = self.pos;
        self.hasher.digest()
    }
}

/// Sizes of the snapshot and the journal, to decide when to compact.
pub fn file_sizes(dir: &Path) -> (u64, u64) {
    let size = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    (size(snap_path(dir)), size(journal_path(dir)))
}

/// True when the snapshot or the journal was written for other fields or another identifier
/// than `header`: such state is rewritten (remapped) before a run.
pub fn needs_rewrite(dir: &Path, header: &Header) -> bool {
    use std::io::Read;
    for path in [snap_path(dir), journal_path(dir)] {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let mut head = Vec::new();
        if file.take(1 << 20).read_to_end(&mut head).is_err() {
            return true;
        }
        let mut pos = 0;
        match Header::decode(&head, &mut pos) {
            Some(h) if h == *header => {}
            Some(_) => return true,
            None => {}
        }
    }
    false
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
        assert_eq!(s.field_prints(s.find(b"u1").unwrap()).unwrap(), vec![1, 5]);
        assert!(s.find(b"u2").is_none());
        s.compact(dir.path(), &h).unwrap();
        assert_eq!(file_sizes(dir.path()).1, 0, "journal removed");
        let mut again = State::load(dir.path(), &h).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            again.field_prints(again.find(b"u1").unwrap()).unwrap(),
            vec![1, 5]
        );
        assert_eq!(
            again.visit(fingerprint(b"u1")),
            Visit::Known(again.find(b"u1").unwrap(), 11)
        );
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
        assert_eq!(s.field_prints(s.find(b"u1").unwrap()).unwrap(), vec![2, 0]);
        assert!(needs_rewrite(dir.path(), &header(&["b", "c"])));
        assert!(!needs_rewrite(dir.path(), &header(&["a", "b"])));
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
        let clean = std::fs::read(&path).unwrap();
        // A damaged key (section A) fails the load.
        let mut bytes = clean.clone();
        let key_at = bytes.windows(2).position(|w| w == b"u1").unwrap();
        bytes[key_at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(State::load(dir.path(), &h).is_err());
        // A damaged field fingerprint (section B) fails when it is read.
        let mut bytes = clean.clone();
        let at = bytes.len() - 16 - 16;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let s = State::load(dir.path(), &h).unwrap();
        assert!(s.field_prints(s.find(b"u1").unwrap()).is_err());
        assert!(s.compact(dir.path(), &h).is_err());
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
                assert_eq!(s.field_prints(slot).unwrap(), vec![i]);
            }
        }
        s.upsert(b"user-0", &[5, 5]);
        assert_eq!(s.field_prints(s.find(b"user-0").unwrap()).unwrap(), vec![5]);
        // Through a snapshot: rows, keys and field fingerprints all come back.
        let dir = tempfile::tempdir().unwrap();
        let h = header(&["a"]);
        s.compact(dir.path(), &h).unwrap();
        let mut back = State::load(dir.path(), &h).unwrap();
        assert_eq!(back.len(), s.len());
        for i in 0..10_000u64 {
            let key = format!("user-{i}");
            let slot = back.find(key.as_bytes());
            assert_eq!(slot.is_some(), i == 0 || i % 7 != 0, "{key}");
            if let Some(slot) = slot {
                let expect = if i == 0 { 5 } else { i };
                assert_eq!(back.field_prints(slot).unwrap(), vec![expect]);
                assert_eq!(back.key(slot), key.as_bytes());
                assert_eq!(
                    back.visit(fingerprint(key.as_bytes())),
                    Visit::Known(slot, expect)
                );
            }
        }
        assert_eq!(back.unvisited(), Vec::<u32>::new());
    }
}
