//! The two backends against each other: the same random write sets applied to the embedded
//! store and to PostgreSQL, then every kind of read compared (point reads, prefix scans with
//! `after` and limits, last-write-wins within a set, deletes). Needs the machine's PostgreSQL
//! (127.0.0.1:5432, user postgres); skipped without `EDDY_TEST_POSTGRES=1`.

use eddy_store::backend::{Backend, Table, WriteSet};
use eddy_store::fjall_backend::FjallBackend;
use eddy_store::postgres_backend::PostgresBackend;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A fresh database, dropped at the end.
struct Database(String);

impl Database {
    fn create() -> Database {
        let name = format!("eddy_test_{}", eddy_store::ids::id_hex(12));
        sql(&format!("CREATE DATABASE {name}"));
        Database(name)
    }

    fn url(&self) -> String {
        format!("{SERVER}/{}", self.0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}

fn sql(statement: &str) {
    let mut client = postgres::Client::connect(&format!("{SERVER}/postgres"), postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432");
    client.batch_execute(statement).expect("statement");
}

fn enabled() -> bool {
    if std::env::var("EDDY_TEST_POSTGRES").ok().as_deref() == Some("1") {
        return true;
    }
    eprintln!("skipped: set EDDY_TEST_POSTGRES=1 with PostgreSQL on 127.0.0.1:5432");
    false
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Keys from a small alphabet, so that prefixes, neighbours and 0xff bytes meet often.
    fn key(&mut self) -> Vec<u8> {
        let len = 1 + self.below(4) as usize;
        (0..len)
            .map(|_| [0u8, 1, b'a', b'b', 0xfe, 0xff][self.below(6) as usize])
            .collect()
    }
}

#[test]
fn postgres_answers_every_read_as_the_embedded_store() {
    if !enabled() {
        return;
    }
    let database = Database::create();
    let pg = PostgresBackend::open(&database.url(), 2).expect("open postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let fjall = FjallBackend::open(dir.path(), 8 * 1024 * 1024).expect("open fjall");
    let mut rng = Rng(0x5eed_0000_0042);
    let tables = [Table::Meta, Table::Profiles, Table::Outbox];
    for round in 0..200 {
        let mut set = || {
            let mut writes = WriteSet::default();
            for _ in 0..1 + rng.below(12) {
                let table = tables[rng.below(3) as usize];
                let value = (rng.below(3) != 0).then(|| rng.next().to_be_bytes().to_vec());
                writes.ops.push((table, rng.key(), value));
            }
            writes
        };
        let writes = set();
        let copy = WriteSet {
            ops: writes.ops.clone(),
        };
        pg.commit(writes).expect("pg commit");
        fjall.commit(copy).expect("fjall commit");
        for _ in 0..10 {
            let table = tables[rng.below(3) as usize];
            let key = rng.key();
            assert_eq!(
                pg.get(table, &key).unwrap(),
                fjall.get(table, &key).unwrap(),
                "round {round} get {key:?}"
            );
            let keys: Vec<Vec<u8>> = (0..rng.below(5)).map(|_| rng.key()).collect();
            assert_eq!(
                pg.get_many(table, &keys).unwrap(),
                fjall.get_many(table, &keys).unwrap(),
                "round {round} get_many {keys:?}"
            );
            let prefix: Vec<u8> = rng.key().into_iter().take(rng.below(3) as usize).collect();
            let after = (rng.below(2) == 0).then(|| rng.key());
            let limit = 1 + rng.below(8) as usize;
            assert_eq!(
                pg.scan(table, &prefix, after.as_deref(), limit).unwrap(),
                fjall.scan(table, &prefix, after.as_deref(), limit).unwrap(),
                "round {round} scan {prefix:?} after {after:?} limit {limit}"
            );
        }
    }
}

#[test]
fn processes_sharing_a_database_follow_each_others_commits_and_newer_schemas_are_refused() {
    use eddy_store::backend::Cluster;
    if !enabled() {
        return;
    }
    let database = Database::create();
    let first = PostgresBackend::open(&database.url(), 1).expect("open");
    let second = PostgresBackend::open(&database.url(), 1).expect("a second process opens too");
    assert_ne!(first.node(), second.node());
    let head = first.head().unwrap();
    // A group holds the write lock from its start to its commit: the other process waits.
    assert_eq!(first.begin_group(head).unwrap().head, head);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let started = second.begin_group(head).expect("second group");
        done_tx.send(started).unwrap();
        second
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(done_rx.try_recv().is_err(), "the lock was not held");
    first
        .commit(WriteSet {
            ops: vec![
                (Table::Profiles, b"p1".to_vec(), Some(b"v".to_vec())),
                (Table::Meta, b"next/outbox".to_vec(), Some(b"7".to_vec())),
                (Table::Outbox, b"o1".to_vec(), Some(b"e".to_vec())),
                (Table::Idents, b"i1".to_vec(), None),
            ],
        })
        .unwrap();
    let started = done_rx.recv().unwrap();
    assert_eq!(
        started.head,
        head + 1,
        "the second group saw the first commit"
    );
    assert_eq!(started.changes.as_ref().map(Vec::len), Some(1));
    let second = waiting.join().unwrap();
    second
        .commit(WriteSet {
            ops: vec![(Table::Meta, b"next/x".to_vec(), Some(b"1".to_vec()))],
        })
        .unwrap();
    let feed = first.changes(head).unwrap();
    assert_eq!(feed.head, head + 2);
    let changes = feed.changes.expect("nothing trimmed");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].node, first.node());
    // The outbox is not in the feed (nothing caches it); counters come with their values.
    assert_eq!(
        changes[0].keys,
        vec![
            (Table::Profiles, b"p1".to_vec()),
            (Table::Idents, b"i1".to_vec())
        ]
    );
    assert_eq!(
        changes[0].counters,
        vec![(b"next/outbox".to_vec(), b"7".to_vec())]
    );
    assert_eq!(changes[1].node, second.node());
    assert_eq!(
        changes[1].counters,
        vec![(b"next/x".to_vec(), b"1".to_vec())]
    );
    let nothing_new = first.changes(head + 2).unwrap();
    assert_eq!(nothing_new.changes.map(|c| c.len()), Some(0));
    // A position past the feed (a database restored from an older backup) is not followed.
    assert!(first.changes(head + 5).unwrap().changes.is_none());
    // An aborted group releases the lock.
    first.begin_group(head + 2).unwrap();
    first.abort_group();
    assert_eq!(second.begin_group(head + 2).unwrap().head, head + 2);
    second.abort_group();
    // A group whose connection closed lost its lock with it: its commit fails, the next works.
    let head = first.head().unwrap();
    first.begin_group(head).unwrap();
    sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        database.0
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let lost = first.commit(WriteSet {
        ops: vec![(Table::Profiles, b"p2".to_vec(), Some(b"v".to_vec()))],
    });
    assert!(
        lost.is_err(),
        "a commit without its group's lock went through"
    );
    let head = first.head().unwrap();
    first.begin_group(head).unwrap();
    first
        .commit(WriteSet {
            ops: vec![(Table::Profiles, b"p2".to_vec(), Some(b"v".to_vec()))],
        })
        .unwrap();
    assert_eq!(
        first.get(Table::Profiles, b"p2").unwrap(),
        Some(b"v".to_vec())
    );
    // One leader at a time; the lease goes with its process.
    assert!(first.lead("http://first:8780").unwrap());
    assert!(!second.lead("http://second:8780").unwrap());
    assert!(first.lead("http://first:8780").unwrap());
    // Every node finds where the leader answers.
    assert_eq!(
        second.leader_url().unwrap().as_deref(),
        Some("http://first:8780")
    );
    drop(first);
    // The server ends the closed session (and its lock) a moment later, as nodes ask each second.
    let mut took_over = false;
    for _ in 0..50 {
        took_over = second.lead("http://second:8780").unwrap();
        if took_over {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(took_over, "the lease did not go with its process");
    assert_eq!(
        second.leader_url().unwrap().as_deref(),
        Some("http://second:8780")
    );
    // Shared counters never grant past the limit, whoever asks.
    assert_eq!(second.take_tokens(7, "g", 60, 4, 5).unwrap(), (4, 4));
    assert_eq!(second.take_tokens(7, "g", 60, 4, 5).unwrap(), (5, 1));
    assert_eq!(second.take_tokens(7, "g", 60, 4, 5).unwrap(), (5, 0));
    assert_eq!(
        second.take_tokens(7, "g", 120, 4, 5).unwrap(),
        (4, 4),
        "a new window"
    );
    assert_eq!(
        second.take_tokens(7, "g", 60, 4, 5).unwrap(),
        (4, 0),
        "a stale window"
    );
    drop(second);
    let mut client = postgres::Client::connect(&database.url(), postgres::NoTls).expect("connect");
    client
        .batch_execute("INSERT INTO eddy_schema (version) VALUES (99)")
        .expect("bump");
    drop(client);
    let refused = match PostgresBackend::open(&database.url(), 1) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a newer schema was accepted"),
    };
    assert!(
        refused.contains(&format!(
            "version 99, newer than this eddy's {}",
            eddy_store::postgres_backend::SCHEMA_VERSION
        )),
        "{refused}"
    );
}

/// A TCP proxy to PostgreSQL that, once armed, cuts the client's connection at its next
/// `COMMIT`: after forwarding it (the server commits, the reply is lost) or instead of it (the
/// server rolls back when the connection goes).
struct CommitCutter {
    port: u16,
    armed: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
}

impl CommitCutter {
    fn start() -> CommitCutter {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = std::sync::Arc::new(std::sync::Mutex::new(None::<bool>));
        let trigger = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let mut server =
                    std::net::TcpStream::connect("127.0.0.1:5432").expect("postgresql");
                let (mut from_server, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                });
                let trigger = trigger.clone();
                std::thread::spawn(move || {
                    let mut read_exact = |n: usize| -> Option<Vec<u8>> {
                        let mut buf = vec![0u8; n];
                        client.read_exact(&mut buf).ok().map(|_| buf)
                    };
                    // The startup message has a length and no type.
                    let Some(len) = read_exact(4) else { return };
                    let body_len = u32::from_be_bytes(len[..4].try_into().unwrap()) as usize - 4;
                    let Some(body) = read_exact(body_len) else {
                        return;
                    };
                    let _ = server.write_all(&len).and_then(|_| server.write_all(&body));
                    loop {
                        let Some(head) = read_exact(5) else { return };
                        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4;
                        let Some(body) = read_exact(len) else { return };
                        let commit = head[0] == b'Q' && body == b"COMMIT\0";
                        let cut = if commit {
                            trigger.lock().unwrap().take()
                        } else {
                            None
                        };
                        if cut == Some(false) {
                            let _ = server.shutdown(std::net::Shutdown::Both);
                            let _ = client.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if server
                            .write_all(&head)
                            .and_then(|_| server.write_all(&body))
                            .is_err()
                        {
                            return;
                        }
                        if cut == Some(true) {
                            std::thread::sleep(std::time::Duration::from_millis(300));
                            let _ = server.shutdown(std::net::Shutdown::Both);
                            let _ = client.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                });
            }
        });
        CommitCutter { port, armed }
    }

    /// Cuts the next COMMIT: after the server received it (`true`) or before (`false`).
    fn arm(&self, after_sending: bool) {
        *self.armed.lock().unwrap() = Some(after_sending);
    }
}

#[test]
fn a_commit_whose_reply_is_lost_answers_what_the_server_did() {
    if !enabled() {
        return;
    }
    let database = Database::create();
    // The schema is made directly, then the backend goes through the proxy.
    drop(PostgresBackend::open(&database.url(), 1).expect("open"));
    let cutter = CommitCutter::start();
    let proxied = format!(
        "postgres://postgres@127.0.0.1:{}/{}",
        cutter.port, database.0
    );
    let backend = PostgresBackend::open(&proxied, 1).expect("open through the proxy");
    let write = |key: &[u8]| WriteSet {
        ops: vec![(Table::Profiles, key.to_vec(), Some(b"v".to_vec()))],
    };
    // The server committed; its answer was lost with the connection: a success.
    cutter.arm(true);
    backend
        .commit(write(b"made"))
        .expect("the commit was made, and eddy found out");
    // The connection went before the server had the COMMIT: an error, and nothing applied.
    cutter.arm(false);
    let refused = backend.commit(write(b"lost"));
    assert!(refused.is_err(), "{refused:?}");
    let direct = PostgresBackend::open(&database.url(), 1).expect("open");
    assert_eq!(
        direct.get(Table::Profiles, b"made").unwrap(),
        Some(b"v".to_vec())
    );
    assert_eq!(direct.get(Table::Profiles, b"lost").unwrap(), None);
    // The backend goes on writing on its new connection.
    backend
        .commit(write(b"after"))
        .expect("a commit after both");
    assert_eq!(
        direct.get(Table::Profiles, b"after").unwrap(),
        Some(b"v".to_vec())
    );
}
