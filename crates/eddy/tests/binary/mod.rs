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

/// Starts `eddy serve` on `dir` and `port`, its `/users/track` and export limits lifted (on the
/// directory's PostgreSQL database with `EDDY_TEST_STORE=postgres`).
pub fn spawn_server(dir: &std::path::Path, port: u16) -> Child {
    let config = dir.join("eddy.toml");
    let mut text = String::from(
        "[rate_limits]\n\
        \"users.track\" = { limit = 100000000, window_seconds = 1 }\n\
        \"users.export.ids\" = { limit = 100000000, window_seconds = 1 }\n",
    );
    // The database the test's `TestDatabase::for_dir` guard made for this directory.
    if let Some(url) = eddy_testkit::TestDatabase::url_of(dir) {
        text.push_str(&format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\n"));
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

/// A load worker: posts `body(n)` to `/users/track` for n = 0, 1, … until `stop` is set or the
/// server goes away (killed); returns the numbers acknowledged with a 201 and how many were sent.
/// Any other answer is a failure of the test.
// Each test binary compiles this module; the ones that do not load a server leave it unused.
#[allow(dead_code)]
pub fn track_until_stopped(
    client: reqwest::Client,
    base: String,
    key: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    body: impl Fn(usize) -> serde_json::Value + Send + 'static,
) -> tokio::task::JoinHandle<(Vec<usize>, usize)> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let request = body(sent);
            sent += 1;
            match client
                .post(format!("{base}/users/track"))
                .bearer_auth(&key)
                .json(&request)
                .send()
                .await
            {
                Ok(r) if r.status().as_u16() == 201 => acked.push(sent - 1),
                Ok(r) => panic!("unexpected status {}", r.status()),
                Err(_) => break,
            }
        }
        (acked, sent)
    })
}

/// A node's process, killed when the test ends however it ends.
#[allow(dead_code)]
pub struct Running(pub Option<Child>);

#[allow(dead_code)]
impl Running {
    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the node at `base` holds the leader lease (its metrics say so).
#[allow(dead_code)]
pub async fn is_leader(client: &reqwest::Client, base: &str) -> bool {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r
            .text()
            .await
            .is_ok_and(|t| t.contains("\neddy_cluster_leader 1\n")),
        Err(_) => false,
    }
}

/// Which of the nodes at `bases` leads, once one does (within 10 s).
#[allow(dead_code)]
pub async fn leader_of(client: &reqwest::Client, bases: &[String]) -> usize {
    for _ in 0..100 {
        for (i, base) in bases.iter().enumerate() {
            if is_leader(client, base).await {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no node took the leader lease");
}
