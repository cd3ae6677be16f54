//! The writer's failure paths, through the public `Store` API over a backend that fails on
//! demand: a failed commit rolls the group back (ids handed out are reused, nothing is half
//! applied), a panic fails only its group, and the backend is recovered before the next commit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use eddy_model::track::{Identifier, validate_track};
use eddy_model::wire::TrackRequest;
use eddy_store::backend::{Backend, Pair, Table, WriteSet};
use eddy_store::fjall_backend::FjallBackend;
use eddy_store::{Store, StoreError, StoreOptions, Workspace};
use serde_json::json;

/// fjall, with commits that fail (and stay failed until `recover`, like an engine that poisons
/// itself) and reads that panic, on demand.
struct Flaky {
    inner: FjallBackend,
    disk_full: AtomicBool,
    poisoned: AtomicBool,
    panic_on_read: AtomicBool,
    /// Refuses commits that delete profiles: a purge cut short by a crash.
    refuse_profile_deletes: AtomicBool,
    recoveries: AtomicU64,
}

impl Flaky {
    fn open(dir: &Path) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: FjallBackend::open(dir, 8 << 20).expect("open"),
            disk_full: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            panic_on_read: AtomicBool::new(false),
            refuse_profile_deletes: AtomicBool::new(false),
            recoveries: AtomicU64::new(0),
        })
    }
}

impl Backend for Flaky {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.panic_on_read.load(Ordering::SeqCst) {
            panic!("planted panic in a read");
        }
        self.inner.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        self.inner.scan(table, prefix, after, limit)
    }

    fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("poisoned".into()));
        }
        let deletes_profiles = writes
            .ops
            .iter()
            .any(|(table, _, value)| *table == Table::Profiles && value.is_none());
        if deletes_profiles && self.refuse_profile_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("refused".into()));
        }
        if self.disk_full.load(Ordering::SeqCst) {
            self.poisoned.store(true, Ordering::SeqCst);
            return Err(StoreError::Backend("No space left on device".into()));
        }
        self.inner.commit(writes)
    }

    fn recover(&self) -> Result<(), StoreError> {
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("No space left on device".into()));
        }
        self.poisoned.store(false, Ordering::SeqCst);
        Ok(())
    }
}

async fn workspace(store: &Store) -> Workspace {
    store.create_workspace("w").await.expect("workspace")
}

async fn track(
    store: &Store,
    ws: &Workspace,
    external_id: &str,
) -> Result<eddy_model::wire::TrackResponse, StoreError> {
    let req: TrackRequest = serde_json::from_value(json!({
        "attributes": [{"external_id": external_id, "plan": "pro"}],
        "events": [{"external_id": external_id, "name": "played", "time": "2024-01-01T00:00:00Z"}]
    }))
    .expect("request");
    let batch = validate_track(&req, eddy_model::time::now_ms()).expect("valid");
    store.track(ws.clone(), batch).await
}

fn internal_id(store: &Store, ws: &Workspace, external_id: &str) -> Option<u32> {
    store
        .find(ws.id, &Identifier::ExternalId(external_id.into()))
        .expect("read")
        .map(|(id, _)| id)
}

#[tokio::test]
async fn a_failed_commit_rolls_back_the_group_and_recovers_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Flaky::open(dir.path());
    let store = Store::start(backend.clone(), StoreOptions::default()).expect("store");
    let ws = workspace(&store).await;
    track(&store, &ws, "before").await.expect("first write");
    let head = store.outbox_head().expect("head");

    backend.disk_full.store(true, Ordering::SeqCst);
    let failed = track(&store, &ws, "lost").await;
    assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    assert!(!store.ready().await, "not ready while commits fail");
    assert!(!store.stats().writable.load(Ordering::SeqCst));

    backend.disk_full.store(false, Ordering::SeqCst);
    assert!(store.ready().await, "ready once the disk has room");
    assert!(backend.recoveries.load(Ordering::SeqCst) >= 1);
    assert!(store.stats().recoveries.load(Ordering::SeqCst) >= 1);

    track(&store, &ws, "after").await.expect("writes come back");
    // Nothing of the failed group exists; the internal id it took is handed out again.
    assert_eq!(internal_id(&store, &ws, "lost"), None);
    let before = internal_id(&store, &ws, "before").expect("before");
    assert_eq!(internal_id(&store, &ws, "after"), Some(before + 1));
    // The outbox continues where the last durable event ended (one event per track).
    let events = store.outbox(head, 100).expect("outbox");
    assert!(events.iter().all(|(_, e)| !e.to_string().contains("lost")));
    assert!(events.iter().any(|(_, e)| e.to_string().contains("after")));
    assert!(store.stats().commit_failures.load(Ordering::SeqCst) >= 1);
    // The cached profile of "before" was dropped and is read back from disk intact.
    track(&store, &ws, "before").await.expect("update");
    let (_, profile) = store
        .find(ws.id, &Identifier::ExternalId("before".into()))
        .expect("read")
        .expect("found");
    assert_eq!(profile.export(None)["custom_attributes"]["plan"], "pro");
    store.close().await;
}

#[tokio::test]
async fn a_panic_fails_only_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Flaky::open(dir.path());
    let store = Store::start(backend.clone(), StoreOptions::default()).expect("store");
    let ws = workspace(&store).await;

    backend.panic_on_read.store(true, Ordering::SeqCst);
    let failed = track(&store, &ws, "boom").await;
    backend.panic_on_read.store(false, Ordering::SeqCst);
    assert!(matches!(failed, Err(StoreError::Panicked)), "{failed:?}");
    assert_eq!(store.stats().panics.load(Ordering::SeqCst), 1);

    // The writer is alive and serves the next group; nothing of the failed one exists.
    track(&store, &ws, "next")
        .await
        .expect("served after a panic");
    assert_eq!(internal_id(&store, &ws, "boom"), None);
    assert!(internal_id(&store, &ws, "next").is_some());
    assert!(store.ready().await);
    store.close().await;
}

#[tokio::test]
async fn over_long_identifiers_cannot_reach_the_engine() {
    // Validation at the edge refuses these; the store must hold even if it is bypassed.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("store");
    let ws = workspace(&store).await;
    let long = "x".repeat(70_000);
    let alias = eddy_model::wire::UserAlias {
        alias_name: long.clone(),
        alias_label: long.clone(),
    };
    let req = eddy_model::wire::AliasNewRequest {
        user_aliases: vec![eddy_model::wire::NewAlias {
            external_id: None,
            alias_name: alias.alias_name.clone(),
            alias_label: alias.alias_label.clone(),
        }],
    };
    store
        .alias_new(ws.clone(), req)
        .await
        .expect("stored under a bounded key");
    let found = store.find(ws.id, &Identifier::Alias(alias)).expect("read");
    assert!(found.is_some(), "the alias resolves through its hashed key");
    assert!(
        store
            .find(ws.id, &Identifier::ExternalId(long))
            .expect("read")
            .is_none()
    );
    track(&store, &ws, "still-writing")
        .await
        .expect("writer alive");
    store.close().await;
}

#[tokio::test]
async fn a_deleted_workspace_whose_purge_was_cut_short_is_purged_at_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Flaky::open(dir.path());
    let store = Store::start(backend.clone(), StoreOptions::default()).expect("store");
    let kept = store.create_workspace("kept").await.expect("workspace");
    let gone = store.create_workspace("gone").await.expect("workspace");
    for i in 0..20 {
        track(&store, &kept, &format!("k{i}")).await.expect("write");
        track(&store, &gone, &format!("g{i}")).await.expect("write");
    }
    assert_eq!(
        store.workspace_ids_with_data().expect("scan"),
        vec![kept.id, gone.id]
    );

    // The workspace itself is deleted in one commit; the purge of its profiles fails.
    backend.refuse_profile_deletes.store(true, Ordering::SeqCst);
    let cut_short = store.delete_workspace("gone").await;
    assert!(cut_short.is_err(), "{cut_short:?}");
    assert!(store.workspace("gone").expect("read").is_none());
    assert!(
        store
            .workspace_ids_with_data()
            .expect("scan")
            .contains(&gone.id)
    );
    store.close().await;

    // The next start finishes it and leaves the other workspace alone.
    backend
        .refuse_profile_deletes
        .store(false, Ordering::SeqCst);
    let store = Store::start(backend.clone(), StoreOptions::default()).expect("store");
    let purged = store.purge_deleted().await.expect("purge");
    assert!(purged >= 20, "{purged}");
    assert_eq!(
        store.workspace_ids_with_data().expect("scan"),
        vec![kept.id]
    );
    assert!(internal_id(&store, &kept, "k19").is_some());
    assert_eq!(store.purge_deleted().await.expect("nothing left"), 0);
    store.close().await;
}
