//! Sources: CSV, NDJSON, a PostgreSQL query, Avro container files. Each reads the columns a
//! sync needs into blocks of text cells (null kept apart from empty text where the format can
//! tell), on its own thread.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;
use serde_json::{Map, Value};

use crate::SyncError;
use crate::config::Source;

/// Rows of text cells, `ncols` per row, in one buffer.
#[derive(Debug, Default)]
pub struct Block {
    ncols: usize,
    data: Vec<u8>,
    ends: Vec<usize>,
    nulls: Vec<bool>,
    /// Rows that could not be read, with why (they count as failed).
    pub bad: Vec<String>,
    /// Each row's fingerprint of its tracked cells, once prepared for the diff.
    pub row_prints: Vec<u64>,
}

impl Block {
    /// An empty block for rows of `ncols` cells.
    pub fn new(ncols: usize) -> Block {
        Block {
            ncols,
            ..Block::default()
        }
    }

    /// Rows in the block.
    pub fn rows(&self) -> usize {
        self.nulls.len().checked_div(self.ncols).unwrap_or(0)
    }

    /// Cell `col` of row `row`; `None` for null.
    pub fn cell(&self, row: usize, col: usize) -> Option<&[u8]> {
        let i = row * self.ncols + col;
        if self.nulls[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..self.ends[i]])
    }

    /// The bytes of cells `from..` of `row`, back to back, and each cell's length (`u32::MAX`
    /// for null) into `lens`: enough to fingerprint the cells without copying them.
    pub fn span(&self, row: usize, from: usize, lens: &mut Vec<u32>) -> &[u8] {
        let first = row * self.ncols + from;
        let last = (row + 1) * self.ncols;
        let start = if first == 0 { 0 } else { self.ends[first - 1] };
        let mut prev = start;
        lens.clear();
        for i in first..last {
            let end = self.ends[i];
            lens.push(if self.nulls[i] {
                u32::MAX
            } else {
                (end - prev) as u32
            });
            prev = end;
        }
        &self.data[start..prev]
    }

    fn push(&mut self, cell: Option<&[u8]>) {
        match cell {
            Some(bytes) => {
                self.data.extend_from_slice(bytes);
                self.nulls.push(false);
            }
            None => self.nulls.push(true),
        }
        self.ends.push(self.data.len());
    }

    fn push_json(&mut self, value: Option<&Value>) {
        match value {
            None | Some(Value::Null) => self.push(None),
            Some(Value::String(s)) => self.push(Some(s.as_bytes())),
            Some(Value::Bool(b)) => self.push(Some(if *b { b"true" } else { b"false" })),
            Some(other) => self.push(Some(other.to_string().as_bytes())),
        }
    }

    fn push_record(&mut self, columns: &[String], record: &Map<String, Value>) {
        for c in columns {
            self.push_json(record.get(c));
        }
    }
}

/// Rows per block handed from the reader to the differ.
pub const BLOCK_ROWS: usize = 4096;

/// A source opened for reading.
pub trait RowReader: Send {
    /// Appends up to [`BLOCK_ROWS`] rows; false once the source is exhausted.
    fn fill(&mut self, block: &mut Block) -> Result<bool, SyncError>;
}

fn source_err(what: impl std::fmt::Display) -> SyncError {
    SyncError::Source(what.to_string())
}

/// Opens a source for the given columns (in that order).
pub fn open(source: &Source, columns: &[String]) -> Result<Box<dyn RowReader>, SyncError> {
    match source {
        Source::Csv { path, delimiter } => {
            let delimiter = u8::try_from(*delimiter)
                .map_err(|_| source_err("the CSV delimiter must be one ASCII character"))?;
            let file = std::fs::File::open(path)
                .map_err(|e| source_err(format!("{}: {e}", path.display())))?;
            Ok(Box::new(CsvReader::new(
                Box::new(file),
                delimiter,
                columns,
                &path.display().to_string(),
            )?))
        }
        Source::Ndjson { path } => {
            let file = std::fs::File::open(path)
                .map_err(|e| source_err(format!("{}: {e}", path.display())))?;
            Ok(Box::new(NdjsonReader {
                lines: BufReader::with_capacity(1 << 20, file),
                columns: columns.to_vec(),
                line: 0,
                buf: Vec::new(),
            }))
        }
        Source::Postgres {
            url,
            url_env,
            query,
        } => {
            let url = crate::config::secret(url, url_env, "the PostgreSQL url")?;
            Ok(Box::new(PgReader::open(&url, query, columns)?))
        }
        Source::Avro { .. } => Ok(Box::new(AvroReader::open(source, columns)?)),
    }
}

/// CSV with a header row; an empty cell is null.
pub struct CsvReader {
    reader: csv::Reader<Box<dyn Read + Send>>,
    index: Vec<usize>,
    record: csv::ByteRecord,
    what: String,
}

impl CsvReader {
    /// Reads the header and finds the columns.
    pub fn new(
        input: Box<dyn Read + Send>,
        delimiter: u8,
        columns: &[String],
        what: &str,
    ) -> Result<CsvReader, SyncError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let header = reader
            .byte_headers()
            .map_err(|e| source_err(format!("{what}: {e}")))?
            .clone();
        let names: Vec<String> = header
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect();
        let index = find_columns(&names, columns, what)?;
        Ok(CsvReader {
            reader,
            index,
            record: csv::ByteRecord::new(),
            what: what.to_string(),
        })
    }
}

fn find_columns(names: &[String], columns: &[String], what: &str) -> Result<Vec<usize>, SyncError> {
    let mut index = Vec::with_capacity(columns.len());
    for c in columns {
        match names.iter().position(|n| n == c) {
            Some(i) => index.push(i),
            None => {
                return Err(source_err(format!(
                    "{what}: column '{c}' is not in the source (its columns: {})",
                    names.join(", ")
                )));
            }
        }
    }
    Ok(index)
}

impl RowReader for CsvReader {
    fn fill(&mut self, block: &mut Block) -> Result<bool, SyncError> {
        for _ in 0..BLOCK_ROWS {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    // A row with the wrong number of fields is refused alone.
                    if matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                        block.bad.push(format!("{}: {e}", self.what));
                        continue;
                    }
                    return Err(source_err(format!("{}: {e}", self.what)));
                }
            }
            for &i in &self.index {
                let cell = &self.record[i];
                block.push(if cell.is_empty() { None } else { Some(cell) });
            }
        }
        Ok(true)
    }
}

struct NdjsonReader {
    lines: BufReader<std::fs::File>,
    columns: Vec<String>,
    line: usize,
    buf: Vec<u8>,
}

impl RowReader for NdjsonReader {
    fn fill(&mut self, block: &mut Block) -> Result<bool, SyncError> {
        let mut rows = 0;
        while rows < BLOCK_ROWS {
            self.buf.clear();
            let n = self
                .lines
                .read_until(b'\n', &mut self.buf)
                .map_err(source_err)?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Map<String, Value>>(&self.buf) {
                Ok(record) => {
                    block.push_record(&self.columns, &record);
                    rows += 1;
                }
                Err(e) => block
                    .bad
                    .push(format!("line {}: not a JSON object: {e}", self.line)),
            }
        }
        Ok(true)
    }
}

/// The rows of a query, streamed with `COPY (query) TO STDOUT` in text format. The client
/// lives on its own thread (its copy stream borrows it), handing chunks over a channel.
struct PgReader {
    input: BufReader<ChunkReader>,
    index: Vec<usize>,
    line: Vec<u8>,
    fields: Vec<Option<Vec<u8>>>,
}

impl PgReader {
    fn open(url: &str, query: &str, columns: &[String]) -> Result<PgReader, SyncError> {
        let pg = |e: postgres::Error| source_err(format!("postgresql: {e}"));
        let mut client = postgres::Client::connect(url, postgres::NoTls).map_err(pg)?;
        client.batch_execute("SET TIME ZONE 'UTC'").map_err(pg)?;
        let query = query.trim().trim_end_matches(';').trim().to_string();
        let statement = client.prepare(&query).map_err(pg)?;
        let names: Vec<String> = statement
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let index = find_columns(&names, columns, "the query")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>, String>>(16);
        std::thread::Builder::new()
            .name("eddy-sync-pg".into())
            .spawn(move || {
                let copy = format!("COPY ({query}) TO STDOUT");
                let mut reader = match client.copy_out(copy.as_str()) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(format!("postgresql: {e}")));
                        return;
                    }
                };
                loop {
                    let mut chunk = vec![0u8; 1 << 16];
                    match reader.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => {
                            chunk.truncate(n);
                            if tx.send(Ok(chunk)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("postgresql: {e}")));
                            return;
                        }
                    }
                }
            })
            .map_err(source_err)?;
        Ok(PgReader {
            input: BufReader::with_capacity(
                1 << 16,
                ChunkReader {
                    rx,
                    chunk: Vec::new(),
                    pos: 0,
                },
            ),
            index,
            line: Vec::new(),
            fields: Vec::new(),
        })
    }
}

/// Bytes received from another thread, as a `Read`.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl RowReader for PgReader {
    fn fill(&mut self, block: &mut Block) -> Result<bool, SyncError> {
        for _ in 0..BLOCK_ROWS {
            self.line.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.line)
                .map_err(|e| source_err(format!("postgresql: {e}")))?;
            if n == 0 {
                return Ok(false);
            }
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
            }
            split_copy_text(&self.line, &mut self.fields);
            for &i in &self.index {
                block.push(self.fields.get(i).and_then(|f| f.as_deref()));
            }
        }
        Ok(true)
    }
}

/// Splits one line of PostgreSQL's COPY text format: tab-separated, `\N` is null, backslash
/// escapes.
pub fn split_copy_text(line: &[u8], out: &mut Vec<Option<Vec<u8>>>) {
    out.clear();
    for raw in line.split(|b| *b == b'\t') {
        if raw == b"\\N" {
            out.push(None);
            continue;
        }
        let mut cell = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            i += 1;
            if b != b'\\' || i == raw.len() {
                cell.push(b);
                continue;
            }
            let e = raw[i];
            i += 1;
            match e {
                b'b' => cell.push(8),
                b'f' => cell.push(12),
                b'n' => cell.push(b'\n'),
                b'r' => cell.push(b'\r'),
                b't' => cell.push(b'\t'),
                b'v' => cell.push(11),
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match raw.get(i) {
                            Some(d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    cell.push(v as u8);
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut digits = 0;
                    while digits < 2 {
                        match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                            Some(d) => {
                                v = v * 16 + d;
                                i += 1;
                                digits += 1;
                            }
                            None => break,
                        }
                    }
                    if digits == 0 {
                        cell.push(b'x');
                    } else {
                        cell.push(v as u8);
                    }
                }
                other => cell.push(other),
            }
        }
        out.push(Some(cell));
    }
}

/// Avro container files, local or on S3, read in key order.
struct AvroReader {
    files: Vec<AvroFile>,
    next: usize,
    columns: Vec<String>,
    pending: std::collections::VecDeque<Map<String, Value>>,
    store: Option<(
        tokio::runtime::Runtime,
        std::sync::Arc<dyn object_store::ObjectStore>,
    )>,
}

enum AvroFile {
    Local(PathBuf),
    Remote(object_store::path::Path),
}

impl AvroReader {
    fn open(source: &Source, columns: &[String]) -> Result<AvroReader, SyncError> {
        let Source::Avro {
            path,
            bucket,
            prefix,
            region,
            endpoint,
            access_key_id,
            secret_access_key,
        } = source
        else {
            return Err(source_err("not an avro source"));
        };
        let mut reader = AvroReader {
            files: Vec::new(),
            next: 0,
            columns: columns.to_vec(),
            pending: Default::default(),
            store: None,
        };
        if let Some(path) = path {
            let mut files = Vec::new();
            collect_avro(path, &mut files)?;
            files.sort();
            reader.files = files.into_iter().map(AvroFile::Local).collect();
            return Ok(reader);
        }
        let bucket = bucket.clone().unwrap_or_default();
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(region);
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| source_err(format!("s3 bucket {bucket}: {e}")))?;
        let store: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(store);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(source_err)?;
        let prefix_path = object_store::path::Path::from(prefix.trim_matches('/'));
        let mut keys = rt.block_on(async {
            use futures_util::StreamExt;
            let mut keys = Vec::new();
            let mut list = store.list(Some(&prefix_path));
            while let Some(meta) = list.next().await {
                let meta = meta.map_err(|e| source_err(format!("s3 list: {e}")))?;
                if meta.location.as_ref().ends_with(".avro") {
                    keys.push(meta.location);
                }
            }
            Ok::<_, SyncError>(keys)
        })?;
        keys.sort();
        reader.files = keys.into_iter().map(AvroFile::Remote).collect();
        reader.store = Some((rt, store));
        Ok(reader)
    }

    fn read_next_file(&mut self) -> Result<bool, SyncError> {
        let Some(file) = self.files.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let (name, bytes) = match file {
            AvroFile::Local(p) => (
                p.display().to_string(),
                std::fs::read(p).map_err(|e| source_err(format!("{}: {e}", p.display())))?,
            ),
            AvroFile::Remote(key) => {
                let Some((rt, store)) = &self.store else {
                    return Err(source_err("no s3 client"));
                };
                let bytes = rt
                    .block_on(async { store.get(key).await?.bytes().await })
                    .map_err(|e| source_err(format!("s3 get {key}: {e}")))?;
                (key.to_string(), bytes.to_vec())
            }
        };
        let records = eddy_currents::avro::read_container(&bytes)
            .map_err(|e| source_err(format!("{name}: {e}")))?;
        self.pending.extend(records);
        Ok(true)
    }
}

fn collect_avro(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), SyncError> {
    let meta =
        std::fs::metadata(path).map_err(|e| source_err(format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| source_err(format!("{}: {e}", path.display())))?;
    for entry in entries {
        let entry = entry.map_err(source_err)?;
        let p = entry.path();
        if p.is_dir() {
            collect_avro(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "avro") {
            out.push(p);
        }
    }
    Ok(())
}

impl RowReader for AvroReader {
    fn fill(&mut self, block: &mut Block) -> Result<bool, SyncError> {
        let mut rows = 0;
        while rows < BLOCK_ROWS {
            if let Some(record) = self.pending.pop_front() {
                block.push_record(&self.columns, &record);
                rows += 1;
                continue;
            }
            if !self.read_next_file()? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(block: &Block) -> Vec<Vec<Option<String>>> {
        (0..block.rows())
            .map(|r| {
                (0..block.ncols)
                    .map(|c| {
                        block
                            .cell(r, c)
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    })
                    .collect()
            })
            .collect()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn csv_projects_columns_and_reads_empty_as_null() {
        let text = "\u{feff}external_id,first_name,unused,\"One and Done\"\nu1,Jo,x,true\nu2,,y,\"a, \"\"quoted\"\"\"\n";
        let mut r = CsvReader::new(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            b',',
            &cols(&["external_id", "One and Done", "first_name"]),
            "t.csv",
        )
        .unwrap();
        let mut block = Block::new(3);
        assert!(!r.fill(&mut block).unwrap());
        assert_eq!(
            cells(&block),
            vec![
                vec![Some("u1".into()), Some("true".into()), Some("Jo".into())],
                vec![Some("u2".into()), Some("a, \"quoted\"".into()), None],
            ]
        );
    }

    #[test]
    fn csv_names_a_missing_column_and_refuses_short_rows_alone() {
        let text = "external_id,a\nu1,1\n";
        let err = CsvReader::new(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            b',',
            &cols(&["b"]),
            "t.csv",
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("column 'b' is not in the source"),
            "{err}"
        );
        let text = "external_id,a\nu1,1\nu2\nu3,3\n";
        let mut r = CsvReader::new(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            b',',
            &cols(&["external_id", "a"]),
            "t.csv",
        )
        .unwrap();
        let mut block = Block::new(2);
        r.fill(&mut block).unwrap();
        assert_eq!(block.rows(), 2);
        assert_eq!(block.bad.len(), 1);
    }

    #[test]
    fn copy_text_format() {
        let mut out = Vec::new();
        split_copy_text(b"u1\t\\N\ta\\tb\\nc\\\\d\t\\101\\x42\t", &mut out);
        assert_eq!(
            out,
            vec![
                Some(b"u1".to_vec()),
                None,
                Some(b"a\tb\nc\\d".to_vec()),
                Some(b"AB".to_vec()),
                Some(b"".to_vec()),
            ]
        );
    }

    #[test]
    fn ndjson_values_become_text_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.ndjson");
        std::fs::write(
            &path,
            "{\"external_id\":\"u1\",\"n\":1.5,\"b\":true,\"arr\":[1]}\nnot json\n\n{\"external_id\":\"u2\",\"n\":null}\n",
        )
        .unwrap();
        let mut r = open(
            &Source::Ndjson { path },
            &cols(&["external_id", "n", "b", "arr"]),
        )
        .unwrap();
        let mut block = Block::new(4);
        assert!(!r.fill(&mut block).unwrap());
        assert_eq!(
            cells(&block),
            vec![
                vec![
                    Some("u1".into()),
                    Some("1.5".into()),
                    Some("true".into()),
                    Some("[1]".into())
                ],
                vec![Some("u2".into()), None, None, None],
            ]
        );
        assert_eq!(block.bad.len(), 1);
        assert!(block.bad[0].starts_with("line 2"));
    }
}
