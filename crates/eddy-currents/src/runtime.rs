//! Delivery: one task per connector reads the outbox from its durable cursor, buffers records
//! per (event type, queue hour), writes Avro files on size, interval or request, and moves the
//! cursor only past events whose files are stored. At-least-once: after a crash the events after
//! the cursor are delivered again (in files of a new partition, so no key is ever reused).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_store::{Mutation, Store, StoreError, ids};
use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::avro::Container;
use crate::catalogue;
use crate::connector::{
    AzureConnector, Connector, CreateRequest, DeliveryState, FileOptions, GcsConnector, Sink,
    hour_of, object_key,
};
use crate::source::{Item, Source};

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a connector shows through the admin API.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub delivered: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub pending: u64,
    pub last_error: Option<String>,
}

pub(crate) type Reply = oneshot::Sender<Result<u64, String>>;

/// What a connector's task is asked to do besides its periodic work.
pub(crate) enum Request {
    /// Write what is buffered now.
    Flush(Reply),
    /// Write what is buffered, then deliver again from this outbox sequence number.
    Replay(u64, Reply),
}

struct Running {
    connector: Connector,
    requests: mpsc::Sender<Request>,
    status: Arc<Mutex<Status>>,
    task: tokio::task::JoinHandle<()>,
}

/// Every running connector.
pub struct Currents {
    store: Store,
    running: Mutex<HashMap<(u32, String), Running>>,
    /// How long the outbox keeps events (for replays) once every connector is past them.
    outbox_retention: Duration,
}

/// The object-store client's own retries: few and short. The file task retries a failed write
/// forever with its own backoff, and a flush or an export must learn of an outage in seconds,
/// not after the client's default three minutes of retrying.
fn client_retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
        ..object_store::RetryConfig::default()
    }
}

/// An S3 client for connector or export settings: path-style, plain HTTP allowed for local servers.
pub fn s3_store(
    settings: &eddy_store::meta::S3Settings,
    sse: Option<&str>,
) -> Result<AmazonS3, object_store::Error> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&settings.bucket)
        .with_region(&settings.region)
        .with_retry(client_retry());
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    if let Some(sse) = sse {
        // The key's enum is not re-exported; its documented name parses to it.
        let key: AmazonS3ConfigKey = "aws_server_side_encryption".parse()?;
        builder = builder.with_config(key, sse);
    }
    builder.build()
}

impl Currents {
    /// Starts every stored connector, and the outbox trimming (every minute).
    pub fn start(store: Store, outbox_retention: Duration) -> Result<Arc<Currents>, CurrentsError> {
        let currents = Arc::new(Currents {
            store: store.clone(),
            running: Mutex::new(HashMap::new()),
            outbox_retention,
        });
        for (ws, value) in store.connectors()? {
            match serde_json::from_value::<Connector>(value) {
                // One damaged connector must not keep the others (or the server) down.
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
                if let Err(e) = currents.trim_outbox().await {
                    tracing::warn!(error = %e, "outbox trim failed");
                }
            }
        });
        Ok(currents)
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
            self.store.apply(Mutation::DeleteOutbox(seqs)).await?;
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
        let connector = request
            .into_connector(integration_id)
            .map_err(CurrentsError::Invalid)?;
        // A file connector's settings must make a client now, not fail later in its task.
        if !matches!(connector.sink, Sink::Amplitude(_))
            && let Err(e) = file_store(&connector.sink)
        {
            return Err(CurrentsError::Invalid(e));
        }
        let state = DeliveryState {
            cursor: self.store.outbox_head()?,
            ..DeliveryState::default()
        };
        let config =
            serde_json::to_value(&connector).map_err(|e| CurrentsError::Invalid(e.to_string()))?;
        let state_json =
            serde_json::to_value(&state).map_err(|e| CurrentsError::Invalid(e.to_string()))?;
        self.store
            .apply(Mutation::PutConnectorState(
                ws,
                connector.name.clone(),
                state_json,
            ))
            .await?;
        self.store
            .apply(Mutation::PutConnector(ws, connector.name.clone(), config))
            .await?;
        self.spawn(ws, connector.clone())?;
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
            ..Status::default()
        }));
        let source = Source {
            store: self.store.clone(),
            ws,
            connector: connector.clone(),
            read_pos: state.cursor,
        };
        let handle = match (&connector.sink, connector.sink.files()) {
            (_, Some(files)) => {
                let task = FileTask {
                    source,
                    store: file_store(&connector.sink),
                    settings: files,
                    saved: state.clone(),
                    state,
                    status: status.clone(),
                    buffers: BTreeMap::new(),
                    files: Vec::new(),
                };
                tokio::spawn(task.run(requests))
            }
            (Sink::Amplitude(settings), None) => {
                let task = crate::deliver::AmplitudeTask::new(
                    source,
                    settings.clone(),
                    state,
                    status.clone(),
                )?;
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
            .map_err(|_| CurrentsError::Invalid("poisoned".into()))?;
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
        let running = self.running.lock().ok()?;
        let r = running.get(&(ws, name.to_string()))?;
        let status = r.status.lock().ok()?.clone();
        let kind = match r.connector.sink {
            Sink::S3(_) => "s3",
            Sink::Azure(_) => "azure",
            Sink::Gcs(_) => "gcs",
            Sink::Amplitude(_) => "amplitude",
        };
        Some(json!({
            "name": r.connector.name, "type": kind, "integration_id": r.connector.integration_id,
            "event_types": r.connector.event_types, "transforms": r.connector.transforms,
            "state": if status.last_error.is_some() { "error" } else { "active" },
            "delivered": status.delivered, "pending": status.pending, "dropped": status.dropped,
            "skipped": status.skipped,
            "last_error": status.last_error,
        }))
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
            let running = self
                .running
                .lock()
                .map_err(|_| CurrentsError::Invalid("poisoned".into()))?;
            running
                .get(&(ws, name.to_string()))
                .map(|r| r.connector.clone())
                .ok_or_else(|| CurrentsError::NotFound(name.to_string()))?
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
        self.store
            .apply(Mutation::Emit(ws, events, Some(name.to_string())))
            .await?;
        self.flush(ws, name).await
    }

    async fn ask(
        &self,
        ws: u32,
        name: &str,
        request: impl FnOnce(Reply) -> Request,
    ) -> Result<u64, CurrentsError> {
        let sender = {
            let running = self
                .running
                .lock()
                .map_err(|_| CurrentsError::Invalid("poisoned".into()))?;
            running
                .get(&(ws, name.to_string()))
                .map(|r| r.requests.clone())
                .ok_or_else(|| CurrentsError::NotFound(name.to_string()))?
        };
        let (reply, answer) = oneshot::channel();
        sender
            .send(request(reply))
            .await
            .map_err(|_| CurrentsError::Invalid("connector stopped".into()))?;
        answer
            .await
            .map_err(|_| CurrentsError::Invalid("connector stopped".into()))?
            .map_err(CurrentsError::Invalid)
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

/// Files built but not yet stored before the task stops reading the outbox.
const MAX_WAITING_FILES: usize = 4;

/// Records of one event type queued in one hour, not yet written.
struct Buffer {
    container: Container,
    first: u64,
    /// Queue time of its first (oldest) event, UTC ms.
    first_at: i64,
    opened: Instant,
}

/// A finished file waiting to be stored (retried until it is).
struct File {
    key: String,
    bytes: Vec<u8>,
    events: u64,
    first: u64,
    first_at: i64,
}

/// The object store a file-writing connector writes to.
fn file_store(sink: &Sink) -> Result<Arc<dyn object_store::ObjectStore>, String> {
    match sink {
        Sink::S3(s3) => s3_store(&s3.s3, s3.server_side_encryption.as_deref())
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid s3 settings: {e}")),
        Sink::Azure(azure) => azure_store(azure)
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid azure settings: {e}")),
        Sink::Gcs(gcs) => gcs_store(gcs)
            .map(|s| Arc::new(s) as Arc<dyn object_store::ObjectStore>)
            .map_err(|e| format!("invalid gcs settings: {e}")),
        Sink::Amplitude(_) => Err("amplitude connectors write no files".into()),
    }
}

/// A Google Cloud Storage client; an endpoint without a key is an emulator (no real token).
fn gcs_store(
    settings: &GcsConnector,
) -> Result<object_store::gcp::GoogleCloudStorage, object_store::Error> {
    let mut builder = object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(&settings.bucket)
        .with_retry(client_retry());
    if let Some(key) = &settings.service_account_key {
        builder = builder.with_service_account_key(key);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_base_url(endpoint.trim_end_matches('/'))
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true));
        if settings.service_account_key.is_none() {
            // Emulators take any token; a static one keeps the client from asking the cloud
            // metadata server for a real one.
            builder = builder.with_bearer_token("emulator");
        }
    }
    builder.build()
}

/// An Azure Blob Storage client; an endpoint (Azurite) is used as given, over plain HTTP.
fn azure_store(
    settings: &AzureConnector,
) -> Result<object_store::azure::MicrosoftAzure, object_store::Error> {
    let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
        .with_retry(client_retry())
        .with_account(&settings.account)
        .with_container_name(&settings.container);
    if let Some(key) = &settings.access_key {
        builder = builder.with_access_key(key);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint.clone())
            .with_allow_http(true);
    }
    builder.build()
}

/// Writes Avro files to an object store (S3, Azure Blob Storage or Google Cloud Storage).
struct FileTask {
    source: Source,
    store: Result<Arc<dyn object_store::ObjectStore>, String>,
    settings: FileOptions,
    state: DeliveryState,
    /// The state as last saved.
    saved: DeliveryState,
    status: Arc<Mutex<Status>>,
    buffers: BTreeMap<(String, String), Buffer>,
    files: Vec<File>,
}

impl FileTask {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        self.state.generation += 1;
        self.source.read_pos = self.state.cursor;
        self.save().await;
        let store = match self.store.clone() {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let interval = Duration::from_secs(self.settings.flush_interval_seconds);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            let request = tokio::select! {
                _ = ticker.tick() => None,
                request = requests.recv() => match request {
                    Some(request) => Some(request),
                    None => return,
                },
            };
            if let Err(e) = self.read() {
                self.fail(format!("reading the outbox: {e}"));
            }
            let now = Instant::now();
            let due: Vec<(String, String)> = self
                .buffers
                .iter()
                .filter(|(_, b)| request.is_some() || now.duration_since(b.opened) >= interval)
                .map(|(k, _)| k.clone())
                .collect();
            for key in due {
                self.close(&key);
            }
            let stored = self.upload(&store).await;
            self.expire();
            let failed = if self.files.is_empty() {
                None
            } else {
                self.state.last_error.clone()
            };
            let reply = match request {
                None => None,
                Some(Request::Flush(reply)) => Some((reply, failed.map_or(Ok(stored), Err))),
                Some(Request::Replay(seq, reply)) => match failed {
                    Some(e) => Some((reply, Err(e))),
                    None => {
                        // Everything read so far is stored: restart reading from `seq`, in a new
                        // partition, so the files written again never reuse a key.
                        self.source.read_pos = seq;
                        self.state.cursor = seq;
                        self.state.generation += 1;
                        Some((reply, Ok(seq)))
                    }
                },
            };
            self.save().await;
            if let Some((reply, result)) = reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Reads new events into the buffers, closing those that reach the size limit. While files
    /// wait for a failing destination it reads nothing more: the outbox keeps the rest.
    fn read(&mut self) -> Result<(), StoreError> {
        while self.files.len() < MAX_WAITING_FILES {
            let (items, more) = self.source.read(self.settings.max_events_per_file)?;
            for item in items {
                self.take(item);
            }
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn take(&mut self, item: Item) {
        let Some(schema) = catalogue::schema(&item.event_type) else {
            return;
        };
        let key = (item.event_type, hour_of(item.at));
        let buffer = self.buffers.entry(key.clone()).or_insert_with(|| Buffer {
            container: Container::new(schema, self.settings.codec, ids::unique_bytes::<16>()),
            first: item.seq,
            first_at: item.at,
            opened: Instant::now(),
        });
        if let Err(e) = buffer.container.append(&item.record) {
            // The outbox only holds records built from the schemas; one that still does not fit
            // is counted as dropped rather than blocking the connector.
            tracing::error!(event_type = key.0, seq = item.seq, error = %e, "outbox record does not fit its schema; dropped");
            self.state.dropped += 1;
            return;
        }
        if buffer.container.len() as usize >= self.settings.max_events_per_file {
            self.close(&key);
        }
    }

    /// Turns a buffer into a file waiting to be stored. Never called on an empty buffer.
    fn close(&mut self, key: &(String, String)) {
        let Some(buffer) = self.buffers.remove(key) else {
            return;
        };
        let events = buffer.container.len();
        let (event_type, hour) = key;
        let name = object_key(
            self.settings.connection,
            &self.settings.prefix,
            &self.source.connector.integration_id,
            event_type,
            hour,
            self.state.generation,
            buffer.first,
        );
        match buffer.container.finish() {
            Ok(bytes) => self.files.push(File {
                key: name,
                bytes,
                events,
                first: buffer.first,
                first_at: buffer.first_at,
            }),
            Err(e) => {
                tracing::error!(error = %e, "could not build an Avro file; its events are dropped");
                self.state.dropped += events;
            }
        }
    }

    /// Stores waiting files in order; stops at the first failure (retried next tick).
    async fn upload(&mut self, store: &Arc<dyn object_store::ObjectStore>) -> u64 {
        let mut stored = 0;
        while let Some(file) = self.files.first() {
            let path = object_store::path::Path::from(file.key.as_str());
            match store.put(&path, file.bytes.clone().into()).await {
                Ok(_) => {
                    stored += file.events;
                    self.state.delivered += file.events;
                    self.state.last_error = None;
                    self.files.remove(0);
                }
                Err(e) => {
                    self.fail(format!("writing {}: {e}", file.key));
                    break;
                }
            }
        }
        stored
    }

    /// Drops, and counts, files still not stored after the retention window.
    fn expire(&mut self) {
        let horizon =
            eddy_model::time::now_ms() - (self.settings.retention_hours as i64) * 3_600_000;
        let (expired, kept): (Vec<File>, Vec<File>) =
            self.files.drain(..).partition(|f| f.first_at < horizon);
        self.files = kept;
        let events: u64 = expired.iter().map(|f| f.events).sum();
        if events > 0 {
            tracing::warn!(
                connector = self.source.connector.name,
                events,
                "undeliverable events dropped after the retention window"
            );
            self.state.dropped += events;
        }
    }

    fn fail(&mut self, message: String) {
        tracing::warn!(
            connector = self.source.connector.name,
            error = message,
            "currents delivery error"
        );
        self.state.last_error = Some(message);
    }

    /// Moves the cursor to the first event not yet stored and saves the state if it changed.
    async fn save(&mut self) {
        let first_unstored = self
            .files
            .iter()
            .map(|f| f.first)
            .chain(self.buffers.values().map(|b| b.first))
            .min();
        self.state.cursor = first_unstored
            .unwrap_or(self.source.read_pos)
            .max(self.state.cursor);
        let pending = self.files.iter().map(|f| f.events).sum::<u64>()
            + self
                .buffers
                .values()
                .map(|b| b.container.len())
                .sum::<u64>();
        if let Ok(mut status) = self.status.lock() {
            *status = Status {
                delivered: self.state.delivered,
                dropped: self.state.dropped,
                skipped: self.state.skipped,
                pending,
                last_error: self.state.last_error.clone(),
            };
        }
        if self.state == self.saved {
            return;
        }
        let Ok(value) = serde_json::to_value(&self.state) else {
            return;
        };
        match self
            .source
            .store
            .apply(Mutation::PutConnectorState(
                self.source.ws,
                self.source.connector.name.clone(),
                value,
            ))
            .await
        {
            Ok(_) => self.saved = self.state.clone(),
            Err(e) => tracing::error!(error = %e, "could not save the connector's cursor"),
        }
    }
}
