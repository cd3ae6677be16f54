//! The running connectors: one delivery task per connector (a [`FileTask`] or an
//! [`AmplitudeTask`]), started at boot and on creation, asked to flush or replay through a
//! channel, stopped together at shutdown; and the trimming of the outbox behind all of them.
//!
//! On a store several eddy nodes share, connectors run on the leader node alone
//! ([`Currents::set_leading`]); the others save settings and answer from the stored state, and
//! the leader starts, restarts and stops tasks to match what is stored (within a second).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy_store::{Store, StoreError, ids};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::catalogue;
use crate::checkpoint::{Reply, Request, Status};
use crate::connector::{Connector, CreateRequest, DeliveryState, Sink};
use crate::sinks::amplitude::task::AmplitudeTask;
use crate::sinks::files::stores::file_store;
use crate::sinks::files::task::FileTask;
use crate::sinks::probe::probe;
use crate::source::OutboxReader;

/// Errors of the Currents API.
#[derive(Debug, thiserror::Error)]
pub enum CurrentsError {
    /// Bad settings.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("connector '{0}' already exists")]
    Exists(String),
    /// No such connector.
    #[error("connector '{0}' not found")]
    NotFound(String),
    /// The connector cannot take requests now (stopped, or its registry is broken).
    #[error("{0}")]
    Unavailable(String),
    /// The sink refused or failed (S3, Azure, GCS or Amplitude); the connector retries.
    #[error("{0}")]
    Upstream(String),
    /// The connector is stored but its task has not started on this node yet (it was made on
    /// another node a moment ago; the leader starts it at its next tick).
    #[error("connector '{0}' is starting on this node; send the request again in a second")]
    Starting(String),
    /// The connector runs on the cluster's leader node, and this node is not it.
    #[error(
        "connector '{0}' runs on the cluster's leader node, not this one; send the request again (to the leader)"
    )]
    NotLeader(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Running {
    connector: Connector,
    requests: mpsc::Sender<Request>,
    status: Arc<Mutex<Status>>,
    task: tokio::task::JoinHandle<()>,
}

/// Outbox entries a status question reads at most to count what a connector has not read yet.
const MAX_COUNTED_UNREAD: usize = 100_000;

/// One connector's figures for `/metrics`.
#[derive(Debug, Clone)]
pub struct ConnectorMetrics {
    /// Workspace id.
    pub ws: u32,
    /// Connector name.
    pub name: String,
    /// `s3`, `azure`, `gcs` or `amplitude`.
    pub kind: &'static str,
    /// Events delivered.
    pub delivered: u64,
    /// Events read and not yet delivered.
    pub pending: u64,
    /// Events dropped (counted, never silent).
    pub dropped: u64,
    /// Events Braze would not send (Amplitude: no user or device id).
    pub skipped: u64,
    /// Whether its last attempt failed.
    pub failing: bool,
    /// Age of its oldest undelivered event, seconds.
    pub lag_seconds: f64,
}

/// Every running connector.
pub struct Currents {
    store: Store,
    running: Mutex<HashMap<(u32, String), Running>>,
    /// Whether this node runs the connectors (always on a store of one process).
    leading: std::sync::atomic::AtomicBool,
    /// Settings that failed to start, so that reconciling does not retry (and log) them each time.
    failed: Mutex<HashMap<(u32, String), Value>>,
    /// How long the outbox keeps events (for replays) once every connector is past them.
    outbox_retention: Duration,
}

impl Currents {
    /// Starts every stored connector, and the outbox trimming (every minute).
    pub fn start(store: Store, outbox_retention: Duration) -> Result<Arc<Currents>, CurrentsError> {
        let currents = Arc::new(Currents {
            store: store.clone(),
            running: Mutex::new(HashMap::new()),
            leading: std::sync::atomic::AtomicBool::new(!store.is_shared()),
            failed: Mutex::new(HashMap::new()),
            outbox_retention,
        });
        // On a shared store the node that wins the leader lease starts them (`set_leading`).
        let stored = match currents.leading() {
            true => store.connectors()?,
            false => Vec::new(),
        };
        for (ws, value) in stored {
            match serde_json::from_value::<Connector>(value) {
                // One damaged connector must not keep the others (or the server) down.
                Ok(connector) if connector.paused => {}
                Ok(connector) => {
                    let name = connector.name.clone();
                    if let Err(e) = currents.spawn(ws, connector) {
                        tracing::error!(error = %e, ws, connector = %name, "Currents connector not started; fix or delete it");
                    }
                }
                Err(e) => tracing::error!(error = %e, ws, "unreadable Currents connector"),
            }
        }
        let weak = Arc::downgrade(&currents);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(currents) = weak.upgrade() else {
                    return;
                };
                if !currents.leading() {
                    continue;
                }
                if let Err(e) = currents.trim_outbox().await {
                    tracing::warn!(error = %e, "outbox trim failed");
                }
            }
        });
        Ok(currents)
    }

    /// Whether this node runs the connectors.
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes this node run the connectors (`true`: start, restart or stop tasks to match the
    /// stored settings) or stop running them (`false`: each ends after its current round; its
    /// cursor is saved, so the next leader goes on from there). Called every second on a shared
    /// store with whether this node holds the leader lease.
    pub async fn set_leading(&self, leading: bool) -> Result<(), CurrentsError> {
        let was = self
            .leading
            .swap(leading, std::sync::atomic::Ordering::SeqCst);
        if !leading {
            if was {
                tracing::warn!("this node lost the leader lease; its Currents connectors stop");
                for (ws, name) in self.running_names() {
                    self.stop_one(ws, &name).await;
                }
            }
            return Ok(());
        }
        if !was {
            tracing::info!("this node leads: it runs the Currents connectors");
        }
        self.reconcile().await
    }

    /// Starts what is stored and not running, restarts what runs with other settings, stops
    /// what runs and is no longer stored or is paused.
    async fn reconcile(&self) -> Result<(), CurrentsError> {
        let mut wanted: HashMap<(u32, String), (Value, Connector)> = HashMap::new();
        for (ws, value) in self.store.connectors()? {
            let Ok(connector) = serde_json::from_value::<Connector>(value) else {
                continue;
            };
            if connector.paused {
                continue;
            }
            let Ok(canonical) = serde_json::to_value(&connector) else {
                continue;
            };
            wanted.insert((ws, connector.name.clone()), (canonical, connector));
        }
        let running: Vec<((u32, String), Value)> = match self.running.lock() {
            Ok(running) => running
                .iter()
                .map(|(key, r)| {
                    (
                        key.clone(),
                        serde_json::to_value(&r.connector).unwrap_or(Value::Null),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for (key, config) in running {
            let keep = wanted.get(&key).is_some_and(|(want, _)| *want == config);
            if keep {
                wanted.remove(&key);
            } else {
                self.stop_one(key.0, &key.1).await;
            }
        }
        let mut failed = self
            .failed
            .lock()
            .map_err(|_| CurrentsError::Unavailable("the connector registry is poisoned".into()))?;
        for ((ws, name), (config, connector)) in wanted {
            let key = (ws, name);
            if failed.get(&key) == Some(&config) {
                continue;
            }
            match self.spawn(ws, connector) {
                Ok(()) => {
                    failed.remove(&key);
                }
                Err(e) => {
                    tracing::error!(error = %e, ws, connector = %key.1, "Currents connector not started; fix or delete it");
                    failed.insert(key, config);
                }
            }
        }
        Ok(())
    }

    fn running_names(&self) -> Vec<(u32, String)> {
        match self.running.lock() {
            Ok(running) => running.keys().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Deletes outbox entries older than the outbox retention that every connector has passed;
    /// returns how many. A connector that is behind keeps what it has not delivered (and drops,
    /// counted, what outlives its own retention window).
    pub async fn trim_outbox(&self) -> Result<u64, CurrentsError> {
        let since = eddy_model::time::now_ms() - self.outbox_retention.as_millis() as i64;
        let mut cut = self.store.outbox_seq_at(since)?;
        for (ws, value) in self.store.connectors()? {
            let Some(name) = value.get("name").and_then(Value::as_str) else {
                continue;
            };
            let cursor = self
                .store
                .connector_state(ws, name)?
                .and_then(|v| v.get("cursor").and_then(Value::as_u64))
                .unwrap_or(0);
            cut = cut.min(cursor);
        }
        let mut deleted = 0;
        loop {
            let seqs: Vec<u64> = self
                .store
                .outbox(0, 10_000)?
                .into_iter()
                .map(|(seq, _)| seq)
                .take_while(|seq| *seq < cut)
                .collect();
            if seqs.is_empty() {
                return Ok(deleted);
            }
            deleted += seqs.len() as u64;
            self.store.delete_outbox(seqs).await?;
        }
    }

    /// Creates and starts a connector; it delivers events queued from now on.
    pub async fn create(
        &self,
        ws: u32,
        request: CreateRequest,
    ) -> Result<Connector, CurrentsError> {
        if self.store.connector(ws, &request.name)?.is_some() {
            return Err(CurrentsError::Exists(request.name));
        }
        let integration_id = ids::id_hex(12);
        let validate = request.validate;
        let connector = request
            .into_connector(integration_id)
            .map_err(CurrentsError::Invalid)?;
        check_sink(&connector.sink, validate).await?;
        let state = DeliveryState {
            cursor: self.store.outbox_head()?,
            ..DeliveryState::default()
        };
        let encode = |e: serde_json::Error| {
            CurrentsError::Unavailable(format!("cannot encode the connector: {e}"))
        };
        let config = serde_json::to_value(&connector).map_err(encode)?;
        let state_json = serde_json::to_value(&state).map_err(encode)?;
        self.store
            .put_connector_state(ws, connector.name.clone(), state_json)
            .await?;
        self.store
            .put_connector_config(ws, connector.name.clone(), config)
            .await?;
        if self.leading() {
            self.spawn(ws, connector.clone())?;
        }
        Ok(connector)
    }

    fn spawn(&self, ws: u32, connector: Connector) -> Result<(), CurrentsError> {
        let state: DeliveryState = match self.store.connector_state(ws, &connector.name)? {
            // A damaged cursor must not turn into a full replay (or a skip) unnoticed.
            Some(v) => serde_json::from_value(v).map_err(|e| {
                CurrentsError::Store(StoreError::Corrupt {
                    table: "meta",
                    reason: format!("delivery state of connector '{}': {e}", connector.name),
                })
            })?,
            None => DeliveryState::default(),
        };
        let (sender, requests) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(Status {
            delivered: state.delivered,
            dropped: state.dropped,
            read_pos: state.cursor,
            ..Status::default()
        }));
        let source = OutboxReader {
            store: self.store.clone(),
            ws,
            connector: connector.clone(),
            read_pos: state.cursor,
        };
        let handle = match (&connector.sink, connector.sink.files()) {
            (_, Some(files)) => {
                let task = FileTask::new(
                    source,
                    file_store(&connector.sink),
                    files,
                    state,
                    status.clone(),
                );
                tokio::spawn(task.run(requests))
            }
            (Sink::Amplitude(settings), None) => {
                let task = AmplitudeTask::new(source, settings.clone(), state, status.clone())?;
                tokio::spawn(task.run(requests))
            }
            (_, None) => {
                return Err(CurrentsError::Invalid(
                    "a connector that neither writes files nor posts to Amplitude".into(),
                ));
            }
        };
        let mut running = self
            .running
            .lock()
            .map_err(|_| CurrentsError::Unavailable("the connector registry is poisoned".into()))?;
        running.insert(
            (ws, connector.name.clone()),
            Running {
                connector,
                requests: sender,
                status,
                task: handle,
            },
        );
        Ok(())
    }

    /// A connector's state, counters and last error, as the admin API shows them.
    pub fn status(&self, ws: u32, name: &str) -> Option<Value> {
        let (connector, status) = {
            let running = self.running.lock().ok()?;
            let r = running.get(&(ws, name.to_string()))?;
            let status = r.status.lock().ok()?.clone();
            (r.connector.clone(), status)
        };
        // Pending counts what was acknowledged before the question too, read by the task or not.
        let reader = OutboxReader {
            store: self.store.clone(),
            ws,
            connector: connector.clone(),
            read_pos: status.read_pos,
        };
        let (unread, first_unread_at) = reader
            .count_unread(status.read_pos, MAX_COUNTED_UNREAD)
            .unwrap_or((0, None));
        // Lag: how long the oldest event not yet delivered has waited (0 when none waits).
        let oldest = status.oldest_pending_at.or(first_unread_at);
        let lag_seconds = oldest.map_or(0, |at| (eddy_model::time::now_ms() - at).max(0) / 1000);
        Some(json!({
            "name": connector.name, "type": connector.sink.kind(),
            "integration_id": connector.integration_id,
            "event_types": connector.event_types, "transforms": connector.transforms,
            "state": if status.last_error.is_some() { "error" } else { "active" },
            "delivered": status.delivered, "pending": status.pending + unread, "dropped": status.dropped,
            "skipped": status.skipped, "lag_seconds": lag_seconds,
            "last_error": status.last_error,
            "next_retry_at": status.next_retry_at.map(eddy_model::time::format_iso),
        }))
    }

    /// Every connector of a workspace (running or paused), by name.
    pub fn list(&self, ws: u32) -> Result<Vec<Value>, CurrentsError> {
        let mut out = Vec::new();
        for (owner, value) in self.store.connectors()? {
            if owner != ws {
                continue;
            }
            let Some(name) = value.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some(status) = self.describe(ws, name)? {
                out.push(status);
            }
        }
        out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(out)
    }

    /// A connector's status, whether it runs, is paused, or could not start.
    pub fn describe(&self, ws: u32, name: &str) -> Result<Option<Value>, CurrentsError> {
        if let Some(status) = self.status(ws, name) {
            return Ok(Some(status));
        }
        let Some(value) = self.store.connector(ws, name)? else {
            return Ok(None);
        };
        let connector: Connector = serde_json::from_value(value).map_err(|e| {
            CurrentsError::Store(StoreError::Corrupt {
                table: "meta",
                reason: format!("connector '{name}': {e}"),
            })
        })?;
        let state: DeliveryState = self
            .store
            .connector_state(ws, name)?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let (label, error) = if connector.paused {
            ("paused", None)
        } else if !self.leading() {
            // It runs on the leader node; these counters are its last saved ones.
            ("active", None)
        } else {
            (
                "stopped",
                Some("the connector could not start; see the log"),
            )
        };
        Ok(Some(json!({
            "name": connector.name, "type": connector.sink.kind(),
            "integration_id": connector.integration_id, "event_types": connector.event_types,
            "transforms": connector.transforms, "state": label,
            "delivered": state.delivered, "pending": 0, "dropped": state.dropped,
            "skipped": state.skipped, "lag_seconds": 0, "last_error": error.map(str::to_string).or(state.last_error),
        })))
    }

    /// Stops a connector's task (within a few seconds) and forgets its settings and cursor.
    pub async fn delete(&self, ws: u32, name: &str) -> Result<(), CurrentsError> {
        if self.store.connector(ws, name)?.is_none() {
            return Err(CurrentsError::NotFound(name.to_string()));
        }
        self.stop_one(ws, name).await;
        self.store.delete_connector(ws, name.to_string()).await?;
        tracing::info!(ws, connector = name, "currents connector deleted");
        Ok(())
    }

    /// Stops every connector task of a workspace that is about to be deleted; what they
    /// delivered is saved, what they did not stays in the outbox until it is trimmed.
    pub async fn stop_workspace(&self, ws: u32) {
        let names: Vec<String> = match self.running.lock() {
            Ok(running) => running
                .keys()
                .filter(|(owner, _)| *owner == ws)
                .map(|(_, name)| name.clone())
                .collect(),
            Err(_) => Vec::new(),
        };
        for name in names {
            self.stop_one(ws, &name).await;
        }
    }

    /// Pauses (`true`) or resumes a connector. Paused, no task runs and the cursor keeps its
    /// place; resumed, it delivers everything queued meanwhile.
    pub async fn set_paused(&self, ws: u32, name: &str, paused: bool) -> Result<(), CurrentsError> {
        let mut connector = self.stored(ws, name)?;
        if connector.paused == paused {
            return Ok(());
        }
        connector.paused = paused;
        self.save(ws, &connector).await?;
        if paused {
            self.stop_one(ws, name).await;
        } else if self.leading() {
            self.spawn(ws, connector)?;
        }
        Ok(())
    }

    /// Replaces a connector's settings, validated as at creation; its cursor, integration id
    /// and counters stay, so delivery goes on from where it was.
    pub async fn update(
        &self,
        ws: u32,
        name: &str,
        request: CreateRequest,
    ) -> Result<Connector, CurrentsError> {
        let current = self.stored(ws, name)?;
        if request.name != name {
            return Err(CurrentsError::Invalid(format!(
                "the body's name '{}' is not the connector's '{name}'",
                request.name
            )));
        }
        let validate = request.validate;
        let mut connector = request
            .into_connector(current.integration_id.clone())
            .map_err(CurrentsError::Invalid)?;
        check_sink(&connector.sink, validate).await?;
        connector.paused = current.paused;
        self.stop_one(ws, name).await;
        self.save(ws, &connector).await?;
        if !connector.paused && self.leading() {
            self.spawn(ws, connector.clone())?;
        }
        Ok(connector)
    }

    fn stored(&self, ws: u32, name: &str) -> Result<Connector, CurrentsError> {
        let value = self
            .store
            .connector(ws, name)?
            .ok_or_else(|| CurrentsError::NotFound(name.to_string()))?;
        serde_json::from_value(value).map_err(|e| {
            CurrentsError::Store(StoreError::Corrupt {
                table: "meta",
                reason: format!("connector '{name}': {e}"),
            })
        })
    }

    async fn save(&self, ws: u32, connector: &Connector) -> Result<(), CurrentsError> {
        let config = serde_json::to_value(connector)
            .map_err(|e| CurrentsError::Unavailable(format!("cannot encode the connector: {e}")))?;
        self.store
            .put_connector_config(ws, connector.name.clone(), config)
            .await?;
        Ok(())
    }

    /// Ends one connector's task: its channel closes and it ends after its current round; one
    /// stuck on a sink that does not answer is stopped after 5 s (the outbox keeps its events).
    async fn stop_one(&self, ws: u32, name: &str) {
        let removed = match self.running.lock() {
            Ok(mut running) => running.remove(&(ws, name.to_string())),
            Err(_) => None,
        };
        let Some(r) = removed else {
            return;
        };
        drop(r.requests);
        let mut task = r.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Every running connector's figures, for `/metrics`.
    pub fn metrics(&self) -> Vec<ConnectorMetrics> {
        let Ok(running) = self.running.lock() else {
            return Vec::new();
        };
        let now = eddy_model::time::now_ms();
        let mut out: Vec<ConnectorMetrics> = running
            .iter()
            .filter_map(|((ws, name), r)| {
                let status = r.status.lock().ok()?.clone();
                Some(ConnectorMetrics {
                    ws: *ws,
                    name: name.clone(),
                    kind: r.connector.sink.kind(),
                    delivered: status.delivered,
                    pending: status.pending,
                    dropped: status.dropped,
                    skipped: status.skipped,
                    failing: status.last_error.is_some(),
                    lag_seconds: status
                        .oldest_pending_at
                        .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.ws, &a.name).cmp(&(b.ws, &b.name)));
        out
    }

    /// Writes what a connector has buffered now; returns how many events it stored.
    pub async fn flush(&self, ws: u32, name: &str) -> Result<u64, CurrentsError> {
        self.ask(ws, name, Request::Flush).await
    }

    /// Delivers again every event queued since `from_ms` (within the outbox's retention);
    /// returns the outbox sequence number delivery restarts from.
    pub async fn replay(&self, ws: u32, name: &str, from_ms: i64) -> Result<u64, CurrentsError> {
        let seq = self.store.outbox_seq_at(from_ms)?;
        self.ask(ws, name, |reply| Request::Replay(seq, reply))
            .await
    }

    /// Sends one placeholder event of each selected type through the connector alone, as
    /// Braze's "Send Test Events", and writes them at once; returns how many it stored.
    pub async fn send_test_events(&self, ws: u32, name: &str) -> Result<u64, CurrentsError> {
        let connector = {
            let running = self.running.lock().map_err(|_| {
                CurrentsError::Unavailable("the connector registry is poisoned".into())
            })?;
            running
                .get(&(ws, name.to_string()))
                .map(|r| r.connector.clone())
                .ok_or_else(|| self.not_running(ws, name))?
        };
        let types: Vec<String> = match &connector.event_types {
            Some(types) => types.clone(),
            None => catalogue::event_types()
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        let mut events = Vec::with_capacity(types.len());
        for event_type in types {
            if let Some(record) = catalogue::placeholder(&event_type) {
                events.push(eddy_model::currents::OutboxEvent { event_type, record });
            }
        }
        self.store.emit(ws, events, Some(name.to_string())).await?;
        self.flush(ws, name).await
    }

    async fn ask(
        &self,
        ws: u32,
        name: &str,
        request: impl FnOnce(Reply) -> Request,
    ) -> Result<u64, CurrentsError> {
        let sender = {
            let running = self.running.lock().map_err(|_| {
                CurrentsError::Unavailable("the connector registry is poisoned".into())
            })?;
            running
                .get(&(ws, name.to_string()))
                .map(|r| r.requests.clone())
                .ok_or_else(|| self.not_running(ws, name))?
        };
        let (reply, answer) = oneshot::channel();
        sender
            .send(request(reply))
            .await
            .map_err(|_| CurrentsError::Unavailable("the connector has stopped".into()))?;
        answer
            .await
            .map_err(|_| CurrentsError::Unavailable("the connector has stopped".into()))?
            .map_err(CurrentsError::Upstream)
    }

    /// Why a connector has no task here: it runs on the leader node, it is stored but not
    /// started yet (made on another node a moment ago: the leader starts it at its next tick),
    /// or there is no such connector.
    fn not_running(&self, ws: u32, name: &str) -> CurrentsError {
        let stored = matches!(self.store.connector(ws, name), Ok(Some(_)));
        match (stored, self.leading()) {
            (true, false) => CurrentsError::NotLeader(name.to_string()),
            (true, true) => CurrentsError::Starting(name.to_string()),
            (false, _) => CurrentsError::NotFound(name.to_string()),
        }
    }

    /// Flushes every connector and stops them all, in parallel, within `deadline` overall.
    /// A connector whose sink is down does not hold up the others; what it could not write stays
    /// in the outbox (its cursor only moves after delivery) and goes out at the next start.
    pub async fn shutdown(&self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        let names: Vec<(u32, String)> = match self.running.lock() {
            Ok(running) => running.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let flushes = names.iter().map(|(ws, name)| async move {
            match self.flush(*ws, name).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(ws, connector = %name, error = %e, "flush at shutdown failed; the outbox keeps the events");
                    false
                }
            }
        });
        if tokio::time::timeout_at(end, futures_util::future::join_all(flushes))
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "not every connector flushed before the shutdown deadline; the outbox keeps their events"
            );
        }
        let running: Vec<Running> = match self.running.lock() {
            Ok(mut map) => map.drain().map(|(_, r)| r).collect(),
            Err(_) => return,
        };
        let mut tasks = Vec::with_capacity(running.len());
        for r in running {
            // Closing its request channel ends the task after its current round.
            drop(r.requests);
            tasks.push((r.connector.name, r.task));
        }
        for (name, mut task) in tasks {
            if tokio::time::timeout_at(end, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(connector = %name, "connector stopped at the shutdown deadline; the outbox keeps what it had not delivered");
            }
        }
    }
}

/// Settings must make a client now, not fail later in the task; with `validate` the destination
/// must also take a write (or accept the key) before the connector is saved.
async fn check_sink(sink: &Sink, validate: bool) -> Result<(), CurrentsError> {
    if !matches!(sink, Sink::Amplitude(_)) {
        file_store(sink).map_err(CurrentsError::Invalid)?;
    }
    if validate {
        probe(sink).await.map_err(CurrentsError::Invalid)?;
    }
    Ok(())
}
