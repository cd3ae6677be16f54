//! The PostgreSQL backend: the same ordered tables, as `(key bytea PRIMARY KEY, value bytea)`
//! tables in a database eddy creates and migrates itself.
//!
//! Connections live on threads of their own (the synchronous client runs its own small runtime,
//! which must not be nested in the server's): a call sends its work to the pool and waits for the
//! answer. A write set is one transaction, durable when PostgreSQL's commit returns
//! (`synchronous_commit` as the server has it, `on` by default).
//!
//! One eddy per database, for now: the writer's caches and counters assume they see every write
//! (see `backend.rs`), so the first process takes a session advisory lock and a second one is
//! refused, as a second process on one data directory is.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use postgres::{Client, NoTls};

use crate::StoreError;
use crate::backend::{Backend, Pair, Table, WriteSet};

/// The schema version this eddy writes; a database at a newer one is refused.
pub const SCHEMA_VERSION: i32 = 1;

/// The advisory lock key of an eddy database (any constant; "eddy" in ASCII).
const LOCK_KEY: i64 = 0x6564_6479;

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// Keys and values of one table's upserts, as two arrays for `unnest`.
type Columns = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// One connection and the statements it has prepared.
pub struct Conn {
    client: Client,
    statements: HashMap<String, postgres::Statement>,
}

impl Conn {
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

/// A pool of connections, each on its own thread.
pub struct PostgresBackend {
    // `None` once dropping: the workers see the channel close and end.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    url: String,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        // Joined, so that the lock's connection is closed when the backend is gone and a
        // restart in the same process finds the database free.
        let workers = self.workers.lock().map(|mut w| std::mem::take(&mut *w));
        for worker in workers.unwrap_or_default() {
            let _ = worker.join();
        }
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
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&(LOCK_KEY + 1)])
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
                // Another process may have created it meanwhile.
                if create.code() != Some(&postgres::error::SqlState::DUPLICATE_DATABASE) {
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
    /// Connects `connections` clients to `url` (creating the database when missing), migrates
    /// the schema, and takes the database's lock (held by one more connection for as long as
    /// the process lives).
    pub fn open(url: &str, connections: usize) -> Result<PostgresBackend, StoreError> {
        let mut lock_client = connect_creating(url)?;
        migrate(&mut lock_client)?;
        // A process that is stopping releases the lock as its session ends: give it a moment.
        let mut tries = 0;
        loop {
            let locked: bool = lock_client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                .map_err(pg)?
                .get(0);
            if locked {
                break;
            }
            tries += 1;
            if tries >= 20 {
                return Err(StoreError::Locked(std::path::PathBuf::from(redact(url))));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // The lock lives as long as its connection; its thread keeps it open until the pool
        // closes (every sender dropped), then closes it.
        let mut workers = vec![spawn_worker(lock_client, rx.clone(), true)?];
        for _ in 0..connections.max(1) {
            let client = Client::connect(url, NoTls).map_err(pg)?;
            workers.push(spawn_worker(client, rx.clone(), false)?);
        }
        Ok(PostgresBackend {
            jobs: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            url: redact(url),
        })
    }

    /// Runs `work` on a pooled connection and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, result) = mpsc::channel();
        let job: Job = Box::new(move |client| {
            let _ = answer.send(work(client));
        });
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| StoreError::Backend("postgresql pool poisoned".into()))?;
        let closed = || StoreError::Backend(format!("no connection to {}", self.url));
        jobs.as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| closed())?;
        drop(jobs);
        result
            .recv()
            .map_err(|_| StoreError::Backend(format!("the connection to {} failed", self.url)))?
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
    client: Client,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    holds_lock: bool,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(
            if holds_lock {
                "eddy-pg-lock"
            } else {
                "eddy-pg"
            }
            .into(),
        )
        .spawn(move || {
            let mut client = Conn {
                client,
                statements: HashMap::new(),
            };
            if holds_lock {
                // Waits for the pool to close; the lock goes with the connection.
                loop {
                    let next = jobs.lock().map(|rx| rx.recv());
                    match next {
                        // A job picked up by the lock thread still runs: it has a connection.
                        Ok(Ok(job)) => job(&mut client),
                        _ => return,
                    }
                }
            }
            loop {
                let next = jobs.lock().map(|rx| rx.recv());
                match next {
                    Ok(Ok(job)) => {
                        if client.client.is_closed() {
                            // The job's answer channel drops: its caller gets an error.
                            tracing::error!("postgresql connection closed");
                            return;
                        }
                        job(&mut client);
                    }
                    _ => return,
                }
            }
        })
        .map_err(|e| StoreError::Backend(e.to_string()))
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
        self.run(move |client| {
            let mut tx = client.client.transaction().map_err(pg)?;
            for (table, keys) in &deletes {
                let sql = format!("DELETE FROM {} WHERE key = ANY($1)", table_name(*table));
                tx.execute(&sql, &[keys]).map_err(pg)?;
            }
            for (table, (keys, values)) in &puts {
                let sql = format!(
                    "INSERT INTO {} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    table_name(*table)
                );
                tx.execute(&sql, &[keys, values]).map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
