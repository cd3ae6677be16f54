//! Running the real `eddy` binary in tests: a free port, a server with Braze's rate limits
//! lifted (load tests would hit them), and waiting until it serves.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token of servers these tests start.
pub const ADMIN: &str = "binary-test-admin-token";

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// With `EDDY_TEST_STORE=postgres`, a fresh PostgreSQL database for the servers started on
/// `dir` (named in a file there, so that a restart finds it), dropped with the guard.
#[allow(dead_code)]
pub struct TestDatabase(Option<String>);

const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

#[allow(dead_code)]
impl TestDatabase {
    /// Creates the database when the tests run on PostgreSQL.
    pub fn for_dir(dir: &std::path::Path) -> TestDatabase {
        if std::env::var("EDDY_TEST_STORE").ok().as_deref() != Some("postgres") {
            return TestDatabase(None);
        }
        let name = format!("eddy_test_{}", std::process::id())
            + &format!(
                "_{}",
                dir.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("x")
                    .replace(['.', '-'], "_")
                    .to_lowercase()
            );
        sql(&format!("CREATE DATABASE {name}"));
        std::fs::write(dir.join("test-database"), &name).expect("write the database's name");
        TestDatabase(Some(name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

fn sql(statement: &str) {
    let statement = statement.to_string();
    std::thread::spawn(move || {
        let mut client =
            postgres::Client::connect(&format!("{TEST_SERVER}/postgres"), postgres::NoTls)
                .expect("EDDY_TEST_STORE=postgres needs PostgreSQL on 127.0.0.1:5432");
        client.batch_execute(&statement).expect("statement");
    })
    .join()
    .expect("sql thread");
}

/// Starts `eddy serve` on `dir` and `port`, its `/users/track` and export limits lifted (on the
/// PostgreSQL database of [`TestDatabase::for_dir`] when there is one).
pub fn spawn_server(dir: &std::path::Path, port: u16) -> Child {
    let config = dir.join("eddy.toml");
    let mut text = String::from(
        "[rate_limits]\n\
        \"users.track\" = { limit = 100000000, window_seconds = 1 }\n\
        \"users.export.ids\" = { limit = 100000000, window_seconds = 1 }\n",
    );
    if let Ok(name) = std::fs::read_to_string(dir.join("test-database")) {
        text.push_str(&format!(
            "[store]\nkind = \"postgres\"\nurl = \"{TEST_SERVER}/{name}\"\n"
        ));
    }
    std::fs::write(&config, text).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(&config)
        .env("EDDY_ADMIN_TOKEN", ADMIN)
        // The key from the environment, so that no key file is left beside the temp dir.
        .env("EDDY_SECRETS_KEY", "ab".repeat(32))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("eddy starts")
}

/// Waits (up to 30 s) until `/health` answers 200.
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become healthy");
}
