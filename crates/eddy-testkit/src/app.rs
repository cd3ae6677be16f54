//! `spawn_app()`: a real server on port 0 with a fresh data dir, and a REST key for it.

use std::net::SocketAddr;
use std::path::PathBuf;

use eddy_server::{App, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub key: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    pub store: eddy_store::Store,
    pub currents: std::sync::Arc<eddy_currents::Currents>,
    pub engine: std::sync::Arc<eddy_messaging::engine::Engine>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
    /// The PostgreSQL database of this app (`EDDY_TEST_STORE=postgres`), dropped with it.
    database: TestDatabase,
}

/// The server that holds test databases (`EDDY_TEST_STORE=postgres`).
const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// With `EDDY_TEST_STORE=postgres`, the PostgreSQL database of the servers started on a data
/// directory: created once, named in a file there (so that a restart finds it), and dropped with
/// the guard unless [`TestDatabase::keep`] hands it on.
pub struct TestDatabase(Option<String>);

impl TestDatabase {
    /// The directory's database (made when missing), or none when tests run on the embedded
    /// store.
    pub fn for_dir(dir: &std::path::Path) -> TestDatabase {
        if std::env::var("EDDY_TEST_STORE").ok().as_deref() != Some("postgres") {
            return TestDatabase(None);
        }
        let marker = dir.join("test-database");
        if let Ok(name) = std::fs::read_to_string(&marker) {
            return TestDatabase(Some(name));
        }
        let name = format!("eddy_test_{}", eddy_store::ids::id_hex(12));
        run_sql(&format!("CREATE DATABASE {name}"));
        std::fs::create_dir_all(dir).expect("create the data dir");
        std::fs::write(&marker, &name).expect("write the test database's name");
        TestDatabase(Some(name))
    }

    /// A fresh database on the test server, whatever `EDDY_TEST_STORE` says (for tests of
    /// several nodes sharing one).
    pub fn create() -> TestDatabase {
        let name = format!("eddy_test_{}", eddy_store::ids::id_hex(12));
        run_sql(&format!("CREATE DATABASE {name}"));
        TestDatabase(Some(name))
    }

    /// The URL of the database a guard made for `dir`, if any (without guarding it).
    pub fn url_of(dir: &std::path::Path) -> Option<String> {
        let name = std::fs::read_to_string(dir.join("test-database")).ok()?;
        Some(format!("{TEST_SERVER}/{name}"))
    }

    /// The database's URL, when there is one.
    pub fn url(&self) -> Option<String> {
        self.0.as_ref().map(|name| format!("{TEST_SERVER}/{name}"))
    }

    /// Leaves the database for a restart on the same directory (which guards it then).
    pub fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            run_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs one statement on the test server's `postgres` database, off any async runtime (the
/// synchronous client runs its own).
fn run_sql(sql: &str) {
    let sql = sql.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(
            &format!("{TEST_SERVER}/postgres"),
            postgres::NoTls,
        )
        .expect(
            "EDDY_TEST_STORE=postgres needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust)",
        );
        client.batch_execute(&sql).expect("test database statement");
    })
    .join()
    .expect("test database thread");
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let mut app = start(dir, tweak).await;
    app._tmp = Some(tmp);
    app
}

/// Starts a server on an existing data dir (for restarts).
pub async fn start(dir: PathBuf, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config {
        data_dir: dir.clone(),
        admin_token: Some("admin-secret".into()),
        // Inside the data dir in tests, so that a restart finds it and nothing outlives the test.
        secrets_key_file: Some(dir.join("test-secrets.key")),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Links in emails point at the address the test server really listens on.
    config.messaging.public_url = Some(format!("http://{addr}"));
    // Other nodes on the same database reach this one where it really listens.
    config.store.advertise_url = Some(format!("http://{addr}"));
    config.messaging.retry_base_ms = 20;
    // Nothing a test starts may connect beyond this machine.
    config.outbound_loopback_only = true;
    let database = TestDatabase::for_dir(&dir);
    if let Some(url) = database.url() {
        config.store.kind = "postgres".into();
        config.store.url = Some(url);
        config.store.connections = 4;
    }
    tweak(&mut config);
    let app = App::build(&config).await.expect("app builds");
    let store = app.store.clone();
    let currents = app.currents.clone();
    let engine = app.engine.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    let mut test = TestApp {
        addr,
        key: String::new(),
        admin_token: config.admin_token.clone().unwrap_or_default(),
        client: reqwest::Client::new(),
        dir,
        store,
        currents,
        engine,
        stop: Some(stop),
        done: Some(done),
        _tmp: None,
        database,
    };
    test.key = test.create_key("default", None).await;
    test
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn create_key(&self, ws: &str, permissions: Option<&[&str]>) -> String {
        let mut body = json!({"name": "test"});
        if let Some(p) = permissions {
            body["permissions"] = json!(p);
        }
        let (status, body) = self
            .admin_post(&format!("/eddy/v1/workspaces/{ws}/api-keys"), body)
            .await;
        assert_eq!(status, 201, "{body}");
        body["key"].as_str().expect("key").to_string()
    }

    /// Lets a workspace's webhooks and Connected Content reach the local receivers tests
    /// start (loopback is private, so refused unless listed).
    pub async fn allow_loopback(&self, ws: &str) {
        let (status, body) = self
            .admin_put(
                &format!("/eddy/v1/workspaces/{ws}/connected-content"),
                json!({"allowed_hosts": ["127.0.0.1", "::1", "localhost"]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_send(reqwest::Method::POST, path, body).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin_send(reqwest::Method::PUT, path, body).await
    }

    async fn admin_send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GETs with this app's REST key.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON with this app's REST key.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_as(&self.key, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn track(&self, body: Value) -> (u16, Value) {
        self.post("/users/track", body).await
    }

    /// The exported profile of an external id, or `None`.
    /// The records of the Currents events of one type in the outbox, oldest first.
    pub fn outbox_events(&self, event_type: &str) -> Vec<Value> {
        self.store
            .outbox(0, 1_000_000)
            .expect("outbox")
            .into_iter()
            .filter(|(_, e)| e["type"] == event_type)
            .map(|(_, e)| e["record"].clone())
            .collect()
    }

    pub async fn user(&self, external_id: &str) -> Option<Value> {
        let (status, body) = self
            .post("/users/export/ids", json!({"external_ids": [external_id]}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["users"].as_array().and_then(|u| u.first().cloned())
    }

    pub async fn user_by(&self, query: Value) -> Option<Value> {
        let (status, body) = self.post("/users/export/ids", query).await;
        assert_eq!(status, 201, "{body}");
        body["users"].as_array().and_then(|u| u.first().cloned())
    }

    pub async fn usage_total(&self) -> (u64, u64) {
        let (_, body) = self.admin_get("/eddy/v1/workspaces/default/usage").await;
        (
            body["total"]["billable"].as_u64().unwrap_or(0),
            body["total"]["non_billable"].as_u64().unwrap_or(0),
        )
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Graceful stop: in-flight requests finish, the writer commits and stops.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        let dir = self.dir.clone();
        // The restarted app takes the database over (and drops it).
        self.database.keep();
        // Keep the temp dir alive for a restart by leaking it into the caller's hands.
        if let Some(tmp) = self._tmp.take() {
            let _ = tmp.keep();
        }
        dir
    }
}
