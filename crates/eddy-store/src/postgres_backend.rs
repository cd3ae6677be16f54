//! The PostgreSQL backend: the same ordered tables, as `(key bytea PRIMARY KEY, value bytea)`
//! tables in a database eddy creates and migrates itself, shared by as many eddy processes as
//! point at it.
//!
//! Connections live on threads of their own (the synchronous client runs its own small runtime,
//! which must not be nested in the server's), in three lanes: a pool for reads, one connection
//! for the writer's groups, one that holds the leader lease. A call sends its work to a lane
//! and waits for the answer.
//!
//! How several processes stay consistent (the contract is in `backend.rs`): a group opens a
//! transaction on the writer connection and takes `pg_advisory_xact_lock(WRITE_LOCK)`, which
//! its `COMMIT` releases; the commit inserts the keys it wrote into `eddy_changes` under the next
//! change number. Because numbers (change, outbox, profile id) are taken under the lock and the
//! lock outlives the commit, they become visible in order: a reader never sees number n + 1
//! without n. Change records older than ten minutes are trimmed; a process that fell further
//! behind reloads instead. The leader lease is a session advisory lock, released when its
//! process's connection ends (a crash included).

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use postgres::{Client, NoTls};

use crate::StoreError;
use crate::backend::{Backend, Change, Cluster, GroupStart, Pair, Table, WriteSet};

/// The schema version this eddy writes; a database at a newer one is refused.
pub const SCHEMA_VERSION: i32 = 3;

/// The advisory lock keys of an eddy database ("eddy" in ASCII, then one per purpose).
const WRITE_LOCK: i64 = 0x6564_6479;
const MIGRATE_LOCK: i64 = WRITE_LOCK + 1;
const LEADER_LOCK: i64 = WRITE_LOCK + 2;

/// How long change records are kept for processes that fall behind.
const CHANGE_RETENTION_MS: i64 = 10 * 60 * 1000;

/// Groups between two trims of old change records.
const TRIM_EVERY: u64 = 256;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// Keys and values of one table's upserts, as two arrays for `unnest`.
type Columns = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// One connection, the statements it has prepared, and what its lane keeps on it.
pub struct Conn {
    client: Client,
    statements: HashMap<String, postgres::Statement>,
    url: Arc<str>,
    /// Writer lane: the last change number when the open group took the write lock.
    group: Option<u64>,
    /// Writer lane: the open group's lock is gone (its connection closed, or its commit failed),
    /// so committing it again must fail rather than take the lock afresh over reads made without
    /// it. The next group starts clear.
    group_lost: bool,
    /// Writer lane: groups committed, to trim the change feed now and then.
    commits: u64,
    /// Leader lane: whether this connection holds the leader lease.
    leading: bool,
}

/// Session settings of every connection: PostgreSQL drops a node whose machine or network died
/// within about 25 s (and with it the write lock or the leader lease it held), and ends a group
/// left open for a minute (a node stuck mid-group must not stop every other node's writes).
const SESSION: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
                       SET tcp_keepalives_count = 3; SET idle_in_transaction_session_timeout = '60s'";

impl Conn {
    fn new(mut client: Client, url: Arc<str>) -> Conn {
        if let Err(e) = client.batch_execute(SESSION) {
            tracing::warn!(error = %pg(e), "cannot set the session's keepalives and timeouts");
        }
        Conn {
            client,
            statements: HashMap::new(),
            url,
            group: None,
            group_lost: false,
            commits: 0,
            leading: false,
        }
    }

    /// Replaces a connection the server closed (a restart, a network cut). Whatever it held
    /// (an open group, the lease) went with it.
    fn reconnect_if_closed(&mut self) {
        if !self.client.is_closed() {
            return;
        }
        match Client::connect(&self.url, NoTls) {
            Ok(client) => {
                tracing::warn!("postgresql connection closed; reconnected");
                let lost = self.group.is_some() || self.group_lost;
                *self = Conn::new(client, self.url.clone());
                self.group_lost = lost;
            }
            Err(e) => tracing::error!(error = %e, "postgresql connection closed; cannot reconnect"),
        }
    }

    /// A prepared statement for `sql`, prepared once per connection.
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(pg)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// Connections sharing one queue of work, each on its own thread.
struct Lane {
    // `None` once dropping: the workers see the channel close and end.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Lane {
    fn open(url: &Arc<str>, name: &str, clients: Vec<Client>) -> Result<Lane, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for client in clients {
            let conn = Conn::new(client, url.clone());
            workers.push(spawn_worker(conn, rx.clone(), name)?);
        }
        Ok(Lane {
            jobs: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
        })
    }

    fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        // Joined, so that the connections (and the lease) are closed when the backend is gone.
        let workers = self.workers.lock().map(|mut w| std::mem::take(&mut *w));
        for worker in workers.unwrap_or_default() {
            let _ = worker.join();
        }
    }

    /// Runs `work` on one of the lane's connections and waits for its answer. Work that failed
    /// because the server closed the connection (a restart, an administrator) runs once more on a
    /// new one: what it held (a group's lock, the lease) is known lost there, so a commit of a
    /// group fails and the lease is asked for afresh.
    fn run<T: Send + 'static>(
        &self,
        url: &str,
        work: impl Fn(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, result) = mpsc::channel();
        let job: Job = Box::new(move |conn| {
            let mut outcome = work(conn);
            if outcome.is_err() && conn.client.is_closed() {
                conn.reconnect_if_closed();
                outcome = work(conn);
            }
            let _ = answer.send(outcome);
        });
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| StoreError::Backend("postgresql pool poisoned".into()))?;
        let closed = || StoreError::Backend(format!("no connection to {url}"));
        jobs.as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| closed())?;
        drop(jobs);
        wait_off_the_runtime(|| result.recv())
            .map_err(|_| StoreError::Backend(format!("the connection to {url} failed")))?
    }
}

/// Waits for the database where waiting is allowed. Called from a task on one of the runtime's
/// workers (a request reading a profile), the worker hands its other tasks to another thread
/// first, so a slow or unreachable database delays the requests that read, never the requests
/// queued beside them on that worker. Elsewhere (the writer's thread, blocking tasks, tests on
/// a single-threaded runtime, where handing over is impossible) it simply waits.
fn wait_off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Connections to one eddy database: a pool for reads, the writer's, the leader lease's.
pub struct PostgresBackend {
    pool: Lane,
    writer: Lane,
    leader: Lane,
    node: u64,
    url: String,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.pool.close();
        self.writer.close();
        self.leader.close();
    }
}

fn pg(e: postgres::Error) -> StoreError {
    // The server's own message (constraint, connection, disk) is the useful part.
    let detail = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    StoreError::Backend(format!("postgresql: {detail}"))
}

fn table_name(table: Table) -> String {
    format!("eddy_{}", table.name())
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Creates or upgrades the schema (under a transaction-scoped advisory lock, so that two
/// processes migrating at once take turns); refuses a database newer than this eddy.
pub fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let mut tx = client.transaction().map_err(pg)?;
    // `IF NOT EXISTS` on existing tables is a notice, not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS eddy_schema (version integer NOT NULL)")
        .map_err(pg)?;
    let found: Option<i32> = tx
        .query_opt("SELECT max(version) FROM eddy_schema", &[])
        .map_err(pg)?
        .and_then(|row| row.get(0));
    let found = found.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database's eddy schema is version {found}, newer than this eddy's {SCHEMA_VERSION}: run a newer eddy"
        )));
    }
    if found < 1 {
        for table in Table::ALL {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (key bytea PRIMARY KEY, value bytea NOT NULL)",
                table_name(table)
            ))
            .map_err(pg)?;
        }
        tx.execute("INSERT INTO eddy_schema (version) VALUES ($1)", &[&1i32])
            .map_err(pg)?;
    }
    if found < 2 {
        // Version 2: several processes per database (the change feed, shared rate limits).
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS eddy_changes (seq bigint PRIMARY KEY, node bigint NOT NULL, \
             at bigint NOT NULL, keys bytea NOT NULL); \
             CREATE TABLE IF NOT EXISTS eddy_rate (caller bigint NOT NULL, grp text NOT NULL, \
             window_start bigint NOT NULL, used bigint NOT NULL, granted bigint NOT NULL, \
             PRIMARY KEY (caller, grp)); \
             INSERT INTO eddy_schema (version) VALUES (2)",
        )
        .map_err(pg)?;
    }
    if found < 3 {
        // Version 3: where the leader's admin API is, so that other nodes carry to it what only
        // the leader can do.
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS eddy_leader (one boolean PRIMARY KEY CHECK (one), \
             node bigint NOT NULL, url text NOT NULL, since bigint NOT NULL); \
             INSERT INTO eddy_schema (version) VALUES (3)",
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)?;
    Ok(SCHEMA_VERSION)
}

/// Connects to `url`, creating its database first when the server does not have it (through the
/// server's `postgres` database, with the same credentials).
pub fn connect_creating(url: &str) -> Result<Client, StoreError> {
    match Client::connect(url, NoTls) {
        Ok(client) => Ok(client),
        Err(e) if e.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) => {
            let config: postgres::Config = url.parse().map_err(pg)?;
            let Some(name) = config.get_dbname().map(str::to_string) else {
                return Err(pg(e));
            };
            let mut maintenance = config.clone();
            maintenance.dbname("postgres");
            let mut admin = maintenance.connect(NoTls).map_err(pg)?;
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            if let Err(create) = admin.batch_execute(&format!("CREATE DATABASE {quoted}")) {
                // Another process created it meanwhile: before this one looked (duplicate
                // database), or at the same moment (the catalog's unique index says so).
                let raced = [
                    postgres::error::SqlState::DUPLICATE_DATABASE,
                    postgres::error::SqlState::UNIQUE_VIOLATION,
                ];
                if !create.code().is_some_and(|code| raced.contains(code)) {
                    return Err(pg(create));
                }
            }
            tracing::info!(database = name, "created the database");
            Client::connect(url, NoTls).map_err(pg)
        }
        Err(e) => Err(pg(e)),
    }
}

impl PostgresBackend {
    /// Connects to `url` (creating the database when missing), migrates the schema, and opens
    /// `connections` pooled connections, the writer's and the leader lease's.
    pub fn open(url: &str, connections: usize) -> Result<PostgresBackend, StoreError> {
        let mut first = connect_creating(url)?;
        migrate(&mut first)?;
        let shared: Arc<str> = Arc::from(url);
        let connect = || Client::connect(url, NoTls).map_err(pg);
        let mut readers = vec![first];
        for _ in 1..connections.max(1) {
            readers.push(connect()?);
        }
        let node = u64::from_be_bytes(crate::ids::unique_bytes::<8>()) >> 1;
        Ok(PostgresBackend {
            pool: Lane::open(&shared, "eddy-pg", readers)?,
            writer: Lane::open(&shared, "eddy-pg-writer", vec![connect()?])?,
            leader: Lane::open(&shared, "eddy-pg-leader", vec![connect()?])?,
            node,
            url: redact(url),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl Fn(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.pool.run(&self.url, work)
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn spawn_worker(
    mut conn: Conn,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    name: &str,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let next = jobs.lock().map(|rx| rx.recv());
                let Ok(Ok(job)) = next else {
                    return;
                };
                conn.reconnect_if_closed();
                job(&mut conn);
            }
        })
        .map_err(|e| StoreError::Backend(e.to_string()))
}

/// Takes the write lock in a fresh transaction (one round trip) and reads the changes after
/// `after` with the last change number (another); the group is open until its commit.
fn open_group(conn: &mut Conn, after: u64) -> Result<GroupStart, StoreError> {
    let opened = conn
        .client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))
        .map_err(pg)
        .and_then(|()| changes_since(conn, after));
    match opened {
        Ok(start) => {
            conn.group = Some(start.head);
            Ok(start)
        }
        Err(e) => {
            let _ = conn.client.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

/// The changes numbered after `after` and the last change number, in one query: the last
/// record comes back even when it is not new.
fn changes_since(conn: &mut Conn, after: u64) -> Result<GroupStart, StoreError> {
    let statement = conn.prepare(
        "SELECT seq, node, at, keys FROM eddy_changes \
         WHERE seq > $1 OR seq = (SELECT max(seq) FROM eddy_changes) ORDER BY seq",
    )?;
    let rows = conn
        .client
        .query(&statement, &[&(after as i64)])
        .map_err(pg)?;
    let mut changes = Vec::with_capacity(rows.len());
    let mut head = 0;
    for row in rows {
        let seq = row.get::<_, i64>(0) as u64;
        head = seq;
        if seq <= after {
            continue;
        }
        let (keys, counters) = decode_keys(row.get(3))?;
        changes.push(Change {
            seq,
            node: row.get::<_, i64>(1) as u64,
            at_ms: row.get(2),
            keys,
            counters,
        });
    }
    // Numbers are dense (one per commit, under the lock): a missing one was trimmed, and a
    // feed behind the caller was restored from an older backup.
    let complete = changes.first().is_none_or(|c| c.seq == after + 1) && head >= after;
    Ok(GroupStart {
        head,
        changes: complete.then_some(changes),
    })
}

fn last_change(conn: &mut Conn) -> Result<u64, StoreError> {
    let statement = conn.prepare("SELECT coalesce(max(seq), 0) FROM eddy_changes")?;
    let head: i64 = conn.client.query_one(&statement, &[]).map_err(pg)?.get(0);
    Ok(head as u64)
}

/// The tables whose keys go into change records: what processes cache or index. The outbox
/// and usage are only ever read from the database.
fn in_change_feed(table: Table) -> bool {
    matches!(
        table,
        Table::Meta | Table::Profiles | Table::Idents | Table::Members
    )
}

/// A key a commit writes: its table, itself, and its new value (`None`: deleted).
type WrittenKey<'a> = (Table, &'a [u8], Option<&'a [u8]>);

/// The marker of a counter entry in a change record's key list.
const COUNTER: u8 = 0xff;

/// A change record's key list: per key, its table's position (1 byte), its length (4,
/// big-endian), itself; counters (`next/…` meta keys, which every process must read before its
/// next group) are entries marked [`COUNTER`] followed by their value (length, bytes).
fn encode_keys(keys: &[WrittenKey<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.iter().map(|(_, k, _)| k.len() + 5).sum());
    for (table, key, value) in keys {
        let counter = match value {
            Some(value) if *table == Table::Meta && key.starts_with(b"next/") => Some(*value),
            _ => None,
        };
        out.push(match counter {
            Some(_) => COUNTER,
            None => table.position() as u8,
        });
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        if let Some(value) = counter {
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
    }
    out
}

/// Changed keys, and the counters with their values.
type DecodedKeys = (Vec<(Table, Vec<u8>)>, Vec<(Vec<u8>, Vec<u8>)>);

fn decode_keys(mut bytes: &[u8]) -> Result<DecodedKeys, StoreError> {
    let corrupt = || StoreError::Corrupt {
        table: "changes",
        reason: "truncated key list".into(),
    };
    // A length-prefixed byte string at the start of `bytes`, and what follows it.
    let take = |bytes: &[u8]| -> Result<(Vec<u8>, usize), StoreError> {
        let len_bytes: [u8; 4] = bytes
            .get(..4)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let item = bytes.get(4..4 + len).ok_or_else(corrupt)?;
        Ok((item.to_vec(), 4 + len))
    };
    let (mut keys, mut counters) = (Vec::new(), Vec::new());
    while let Some((&marker, rest)) = bytes.split_first() {
        let (key, used) = take(rest)?;
        bytes = &rest[used..];
        if marker == COUNTER {
            let (value, used) = take(bytes)?;
            bytes = &bytes[used..];
            counters.push((key, value));
            continue;
        }
        let table = *Table::ALL.get(marker as usize).ok_or_else(corrupt)?;
        keys.push((table, key));
    }
    Ok((keys, counters))
}

/// How many times the outcome of a commit whose reply was lost is asked (every half second).
const OUTCOME_CHECKS: u32 = 20;

/// Writes one group and its change record inside the open transaction (opening one when the
/// caller did not), then commits: the lock goes with it.
fn commit_group(
    conn: &mut Conn,
    node: u64,
    deletes: &HashMap<Table, Vec<Vec<u8>>>,
    puts: &HashMap<Table, Columns>,
    changed: &[u8],
) -> Result<(), StoreError> {
    if std::mem::take(&mut conn.group_lost) {
        return Err(StoreError::Backend(
            "the connection to postgresql closed during the group and its write lock with it; nothing was written".into(),
        ));
    }
    // A group's commit that fails must not be tried again under a fresh lock: its reads were
    // made under the one that just ended.
    let in_group = conn.group.is_some();
    let head = match conn.group.take() {
        Some(head) => head,
        // A commit outside a group (the snapshot token): the lock all the same.
        None => {
            conn.client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
                ))
                .map_err(pg)?;
            match last_change(conn) {
                Ok(head) => head,
                Err(e) => {
                    let _ = conn.client.batch_execute("ROLLBACK");
                    return Err(e);
                }
            }
        }
    };
    conn.group = None;
    let written = (|| -> Result<i64, StoreError> {
        for (table, keys) in deletes {
            let sql = format!("DELETE FROM {} WHERE key = ANY($1)", table_name(*table));
            let statement = conn.prepare(&sql)?;
            conn.client.execute(&statement, &[keys]).map_err(pg)?;
        }
        for (table, (keys, values)) in puts {
            let sql = format!(
                "INSERT INTO {} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                table_name(*table)
            );
            let statement = conn.prepare(&sql)?;
            conn.client
                .execute(&statement, &[keys, values])
                .map_err(pg)?;
        }
        let seq = (head + 1) as i64;
        let statement = conn.prepare(
            "INSERT INTO eddy_changes (seq, node, at, keys) VALUES \
             ($1, $2, (extract(epoch from clock_timestamp()) * 1000)::bigint, $3)",
        )?;
        conn.client
            .execute(&statement, &[&seq, &(node as i64), &changed])
            .map_err(pg)?;
        conn.commits += 1;
        if conn.commits.is_multiple_of(TRIM_EVERY) {
            let statement = conn.prepare(
                "DELETE FROM eddy_changes WHERE seq < $1 \
                 AND at < (extract(epoch from clock_timestamp()) * 1000)::bigint - $2",
            )?;
            conn.client
                .execute(&statement, &[&seq, &CHANGE_RETENTION_MS])
                .map_err(pg)?;
        }
        Ok(seq)
    })();
    let seq = match written {
        Ok(seq) => seq,
        Err(e) => {
            let _ = conn.client.batch_execute("ROLLBACK");
            conn.group_lost = in_group;
            return Err(e);
        }
    };
    match conn.client.batch_execute("COMMIT") {
        Ok(()) => Ok(()),
        // The connection closed with the COMMIT: the server may have committed before the
        // reply was lost. The change record written in the transaction says which.
        Err(e) if conn.client.is_closed() => committed_after_all(conn, seq, node, &e),
        Err(e) => {
            let _ = conn.client.batch_execute("ROLLBACK");
            conn.group_lost = in_group;
            Err(pg(e))
        }
    }
}

/// After a COMMIT whose answer was lost: whether the group's change record (`seq` written by
/// this `node`) exists, asked on a new connection. A commit that happened is a success; one
/// that did not is an error, so a client's 503 always means "not applied".
fn committed_after_all(
    conn: &mut Conn,
    seq: i64,
    node: u64,
    lost: &postgres::Error,
) -> Result<(), StoreError> {
    for attempt in 0..OUTCOME_CHECKS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        conn.reconnect_if_closed();
        if conn.client.is_closed() {
            continue;
        }
        let found = conn.client.query_opt(
            "SELECT 1 FROM eddy_changes WHERE seq = $1 AND node = $2",
            &[&seq, &(node as i64)],
        );
        match found {
            Ok(Some(_)) => {
                tracing::warn!(
                    seq,
                    "the connection closed with a commit's reply; the commit had been made"
                );
                return Ok(());
            }
            Ok(None) => {
                return Err(StoreError::Backend(format!(
                    "the connection to postgresql closed during the commit, which was not made: {lost}"
                )));
            }
            Err(e) => tracing::warn!(error = %e, "cannot yet learn whether a commit was made"),
        }
    }
    Err(StoreError::CommitOutcomeUnknown(format!(
        "the connection to postgresql closed during a commit and no new one could tell whether it was made: {lost}"
    )))
}

impl Backend for PostgresBackend {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let sql = format!("SELECT value FROM {} WHERE key = $1", table_name(table));
        let key = key.to_vec();
        self.run(move |client| {
            let statement = client.prepare(&sql)?;
            Ok(client
                .client
                .query_opt(&statement, &[&key])
                .map_err(pg)?
                .map(|row| row.get::<_, Vec<u8>>(0)))
        })
    }

    fn get_many(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT key, value FROM {} WHERE key = ANY($1)",
            table_name(table)
        );
        let wanted = keys.to_vec();
        let found: HashMap<Vec<u8>, Vec<u8>> = self.run(move |client| {
            let statement = client.prepare(&sql)?;
            Ok(client
                .client
                .query(&statement, &[&wanted])
                .map_err(pg)?
                .into_iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                .collect())
        })?;
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        let name = table_name(table);
        // From the later of the prefix and `after`, up to the prefix's end.
        let lower = match after {
            Some(a) if a >= prefix => a.to_vec(),
            _ => prefix.to_vec(),
        };
        let strictly = after.is_some_and(|a| a >= prefix);
        let upper = prefix_end(prefix);
        let op = if strictly { ">" } else { ">=" };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |client| {
            let rows = match &upper {
                Some(upper) => {
                    let sql = format!(
                        "SELECT key, value FROM {name} WHERE key {op} $1 AND key < $2 ORDER BY key LIMIT $3"
                    );
                    let statement = client.prepare(&sql)?;
                    client
                        .client
                        .query(&statement, &[&lower, upper, &limit])
                        .map_err(pg)?
                }
                None => {
                    let sql =
                        format!("SELECT key, value FROM {name} WHERE key {op} $1 ORDER BY key LIMIT $2");
                    let statement = client.prepare(&sql)?;
                    client.client.query(&statement, &[&lower, &limit]).map_err(pg)?
                }
            };
            Ok(rows
                .into_iter()
                .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        // The last operation on a key wins, as in the embedded store; one statement per table
        // and kind then touches each key once.
        let mut last: HashMap<(Table, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        let mut order = Vec::new();
        for (table, key, value) in writes.ops {
            let id = (table, key);
            if !last.contains_key(&id) {
                order.push(id.clone());
            }
            last.insert(id, value);
        }
        let changed = encode_keys(
            &order
                .iter()
                .filter(|id| in_change_feed(id.0))
                .map(|id| {
                    (
                        id.0,
                        id.1.as_slice(),
                        last.get(id).and_then(|v| v.as_deref()),
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut puts: HashMap<Table, Columns> = HashMap::new();
        let mut deletes: HashMap<Table, Vec<Vec<u8>>> = HashMap::new();
        for id in order {
            let value = last.remove(&id).flatten();
            let (table, key) = id;
            match value {
                Some(value) => {
                    let entry = puts.entry(table).or_default();
                    entry.0.push(key);
                    entry.1.push(value);
                }
                None => deletes.entry(table).or_default().push(key),
            }
        }
        let node = self.node;
        self.writer.run(&self.url, move |conn| {
            commit_group(conn, node, &deletes, &puts, &changed)
        })
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

impl Cluster for PostgresBackend {
    fn node(&self) -> u64 {
        self.node
    }

    fn begin_group(&self, after: u64) -> Result<GroupStart, StoreError> {
        self.writer.run(&self.url, move |conn| {
            conn.group_lost = false;
            if conn.group.is_some() {
                // A group left open (its caller failed before committing): start afresh.
                conn.group = None;
                conn.client.batch_execute("ROLLBACK").map_err(pg)?;
            }
            open_group(conn, after)
        })
    }

    fn abort_group(&self) {
        let aborted = self.writer.run(&self.url, |conn| {
            conn.group_lost = false;
            if conn.group.take().is_some() {
                conn.client.batch_execute("ROLLBACK").map_err(pg)?;
            }
            Ok(())
        });
        if let Err(e) = aborted {
            tracing::warn!(error = %e, "could not roll back an aborted group");
        }
    }

    fn head(&self) -> Result<u64, StoreError> {
        self.run(last_change)
    }

    fn changes(&self, after: u64) -> Result<GroupStart, StoreError> {
        self.run(move |conn| changes_since(conn, after))
    }

    fn lead(&self, url: &str) -> Result<bool, StoreError> {
        let (node, url) = (self.node, url.to_string());
        self.leader.run(&self.url, move |conn| {
            if conn.leading {
                // Still connected means still holding it.
                conn.client.batch_execute("SELECT 1").map_err(|e| {
                    conn.leading = false;
                    pg(e)
                })?;
                return Ok(true);
            }
            let statement = conn.prepare("SELECT pg_try_advisory_lock($1)")?;
            let locked: bool = conn
                .client
                .query_one(&statement, &[&LEADER_LOCK])
                .map_err(pg)?
                .get(0);
            if !locked {
                return Ok(false);
            }
            // A lease whose address is not recorded is given back: other nodes could not reach
            // the leader it makes.
            let recorded = conn
                .client
                .execute(
                    "INSERT INTO eddy_leader (one, node, url, since) \
                     VALUES (true, $1, $2, (extract(epoch from clock_timestamp()) * 1000)::bigint) \
                     ON CONFLICT (one) DO UPDATE SET node = EXCLUDED.node, url = EXCLUDED.url, \
                     since = EXCLUDED.since",
                    &[&(node as i64), &url],
                )
                .map_err(pg);
            if let Err(e) = recorded {
                let _ = conn
                    .client
                    .execute("SELECT pg_advisory_unlock($1)", &[&LEADER_LOCK]);
                return Err(e);
            }
            conn.leading = true;
            Ok(true)
        })
    }

    fn leader_url(&self) -> Result<Option<String>, StoreError> {
        self.run(|conn| {
            let row = conn
                .client
                .query_opt("SELECT url FROM eddy_leader", &[])
                .map_err(pg)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn resign(&self) {
        let resigned = self.leader.run(&self.url, |conn| {
            if conn.leading {
                conn.leading = false;
                let statement = conn.prepare("SELECT pg_advisory_unlock($1)")?;
                conn.client
                    .query_one(&statement, &[&LEADER_LOCK])
                    .map_err(pg)?;
            }
            Ok(())
        });
        if let Err(e) = resigned {
            tracing::warn!(error = %e, "could not give up the leader lease; it ends with the connection");
        }
    }

    fn take_tokens(
        &self,
        caller: u64,
        group: &str,
        window_start: u64,
        want: u64,
        limit: u64,
    ) -> Result<(u64, u64), StoreError> {
        let group = group.to_string();
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (caller, window_start, want, limit) = (
            caller as i64,
            clamp(window_start),
            clamp(want),
            clamp(limit),
        );
        self.run(move |conn| {
            // A row from an older window starts over; one from a newer window (a node whose
            // clock is ahead) grants nothing until this node's clock gets there.
            let statement = conn.prepare(
                "INSERT INTO eddy_rate AS r (caller, grp, window_start, used, granted) \
                 VALUES ($1::bigint, $2::text, $3::bigint, LEAST($4::bigint, $5::bigint), LEAST($4::bigint, $5::bigint)) \
                 ON CONFLICT (caller, grp) DO UPDATE SET \
                   window_start = GREATEST(r.window_start, EXCLUDED.window_start), \
                   used = CASE WHEN r.window_start = EXCLUDED.window_start THEN LEAST(r.used + $4, GREATEST(r.used, $5)) \
                               WHEN r.window_start < EXCLUDED.window_start THEN LEAST($4, $5) \
                               ELSE r.used END, \
                   granted = CASE WHEN r.window_start = EXCLUDED.window_start THEN LEAST(r.used + $4, GREATEST(r.used, $5)) - r.used \
                                  WHEN r.window_start < EXCLUDED.window_start THEN LEAST($4, $5) \
                                  ELSE 0 END \
                 RETURNING used, granted",
            )?;
            let row = conn
                .client
                .query_one(&statement, &[&caller, &group, &window_start, &want, &limit])
                .map_err(pg)?;
            Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_keys_round_trip() {
        let keys = [
            (Table::Profiles, &b"\0\0\0\x01ab"[..], Some(&b"profile"[..])),
            (
                Table::Meta,
                &b"next/outbox"[..],
                Some(&b"\0\0\0\0\0\0\0\x07"[..]),
            ),
            (Table::Meta, &b""[..], None),
        ];
        let (decoded, counters) = decode_keys(&encode_keys(&keys)).unwrap();
        assert_eq!(
            decoded,
            vec![
                (Table::Profiles, b"\0\0\0\x01ab".to_vec()),
                (Table::Meta, Vec::new())
            ]
        );
        assert_eq!(
            counters,
            vec![(b"next/outbox".to_vec(), b"\0\0\0\0\0\0\0\x07".to_vec())]
        );
        assert!(decode_keys(&[1, 0, 0, 0, 9, 1]).is_err());
        assert!(decode_keys(&[200, 0, 0, 0, 0]).is_err());
        assert!(
            decode_keys(&[COUNTER, 0, 0, 0, 1, b'n']).is_err(),
            "a counter without its value"
        );
    }

    #[test]
    fn prefix_ends_and_redaction() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
