//! A full disk: writes fail clearly (503), readiness says so, reads go on, and writes come back
//! by themselves once space is freed, with every acknowledged write intact, also after a restart.
//!
//! Needs a small tmpfs as the data directory, which only root (or a user namespace) can mount;
//! elsewhere the test says so and passes without running, unless `EDDY_TEST_REQUIRE_TMPFS` is
//! set (as CI sets it), which makes a missing tmpfs a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use eddy_testkit::{TestApp, start};
use serde_json::json;

struct Tmpfs {
    mount: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().ok()?;
        let mount = parent.path().join("mnt");
        std::fs::create_dir(&mount).ok()?;
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .ok()?;
        done.success().then_some(Tmpfs {
            mount,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// Fills the file system with one file until it refuses; answers the file.
fn fill(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![7u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

async fn ready(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/ready"))
        .send()
        .await
        .expect("ready")
        .status()
        .as_u16()
}

async fn write(app: &TestApp, n: usize) -> u16 {
    let body = json!({"attributes": [{"external_id": format!("u{n}"), "n": n, "pad": "p".repeat(200)}],
                      "events": [{"external_id": format!("u{n}"), "name": "e", "time": "2024-01-01T00:00:00Z"}]});
    app.track(body).await.0
}

#[tokio::test]
async fn writes_come_back_after_the_disk_is_freed() {
    if std::env::var("EDDY_TEST_STORE").ok().as_deref() == Some("postgres") {
        eprintln!("skipped: the full disk here is the embedded store's (PostgreSQL keeps its own)");
        return;
    }
    let Some(fs) = Tmpfs::mount("48m") else {
        // CI sets EDDY_TEST_REQUIRE_TMPFS: there the test must run, not skip.
        assert!(
            std::env::var_os("EDDY_TEST_REQUIRE_TMPFS").is_none(),
            "cannot mount a tmpfs, and EDDY_TEST_REQUIRE_TMPFS asks this test to run"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = fs.mount.join("data");
    let app = start(dir.clone(), |c| c.cache_mib = 8).await;
    let mut acknowledged = Vec::new();
    for n in 0..50 {
        assert_eq!(write(&app, n).await, 201);
        acknowledged.push(n);
    }
    let filler = fill(&fs.mount, "filler");
    // Writes now fail clearly; none is acknowledged by mistake. Reopening the store after a
    // failed commit may set aside room again (a new journal), so a write can still succeed now
    // and then; readiness must agree with what happens: right after a refused write it answers
    // 503, and when it answers 200 the next write commits.
    let mut refused = 0;
    let mut saw_not_ready = false;
    let mut top_ups = Vec::new();
    for n in 50..400 {
        match write(&app, n).await {
            201 => acknowledged.push(n),
            503 => {
                refused += 1;
                top_ups.push(fill(&fs.mount, &format!("filler-{n}")));
                if ready(&app).await == 503 {
                    saw_not_ready = true;
                    break;
                }
            }
            other => panic!("write {n} answered {other}"),
        }
    }
    assert!(refused > 0, "the full disk refused nothing");
    assert!(saw_not_ready, "readiness never said the disk was full");
    // Reads are still served.
    assert!(app.user("u0").await.is_some());
    let metrics = app.metrics().await;
    assert!(metrics.contains("eddy_ready 0"), "{metrics}");

    std::fs::remove_file(filler).expect("free");
    for file in top_ups {
        std::fs::remove_file(file).expect("free");
    }
    let mut back = false;
    for _ in 0..100 {
        if ready(&app).await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "readiness never came back after the disk was freed");
    for n in 150..160 {
        assert_eq!(write(&app, n).await, 201, "write {n} after recovery");
        acknowledged.push(n);
    }
    for n in &acknowledged {
        let user = app.user(&format!("u{n}")).await;
        assert_eq!(
            user.map(|u| u["custom_attributes"]["n"].clone()),
            Some(json!(n)),
            "u{n}"
        );
    }
    let dir = app.stop().await;
    let again = start(dir, |c| c.cache_mib = 8).await;
    for n in &acknowledged {
        assert!(
            again.user(&format!("u{n}")).await.is_some(),
            "u{n} lost at restart"
        );
    }
    again.stop().await;
}
