//! The file task: reads the outbox from its durable cursor, buffers records per (event type,
//! queue hour), writes Avro files on size, interval or request, and moves the cursor only past
//! events whose files are stored. At-least-once: after a crash the events after the cursor are
//! delivered again, in files of a new partition, so no key is ever reused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_store::{StoreError, ids};
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;

use crate::avro::Container;
use crate::catalogue;
use crate::checkpoint::{Checkpoint, Request, Status, next_round, retention_horizon, root_cause};
use crate::connector::DeliveryState;
use crate::sinks::files::config::{FileOptions, hour_of, object_key};
use crate::source::{Item, OutboxReader};

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

/// Writes Avro files to an object store (S3, Azure Blob Storage or Google Cloud Storage).
pub(crate) struct FileTask {
    source: OutboxReader,
    store: Result<Arc<dyn object_store::ObjectStore>, String>,
    settings: FileOptions,
    checkpoint: Checkpoint,
    buffers: BTreeMap<(String, String), Buffer>,
    files: Vec<File>,
}

impl FileTask {
    /// A task writing to `store` from the stored `state`.
    pub(crate) fn new(
        source: OutboxReader,
        store: Result<Arc<dyn object_store::ObjectStore>, String>,
        settings: FileOptions,
        state: DeliveryState,
        status: Arc<Mutex<Status>>,
    ) -> FileTask {
        let max_backoff = settings.settings.max_backoff_seconds;
        FileTask {
            source,
            store,
            settings,
            checkpoint: Checkpoint::new(state, status, Duration::from_secs(max_backoff)),
            buffers: BTreeMap::new(),
            files: Vec::new(),
        }
    }

    /// Delivers until the registry drops the request channel.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        self.checkpoint.state.generation += 1;
        self.source.read_pos = self.checkpoint.state.cursor;
        self.save().await;
        let store = match self.store.clone() {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let interval = Duration::from_secs(self.settings.settings.flush_interval_seconds);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        while let Some(request) = next_round(&mut ticker, &mut requests).await {
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
            // While the store fails, attempts wait for the backoff; a flush asks at once.
            let stored = if request.is_some() || self.checkpoint.backoff.ready() {
                self.upload(&store).await
            } else {
                0
            };
            self.expire();
            let failed = if self.files.is_empty() {
                None
            } else {
                self.checkpoint.state.last_error.clone()
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
                        self.checkpoint.state.cursor = seq;
                        self.checkpoint.state.generation += 1;
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
            let (items, more) = self
                .source
                .read(self.settings.settings.max_events_per_file)?;
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
            container: Container::new(
                schema,
                self.settings.settings.codec,
                ids::unique_bytes::<16>(),
            ),
            first: item.seq,
            first_at: item.at,
            opened: Instant::now(),
        });
        if let Err(e) = buffer.container.append(&item.record) {
            // The outbox only holds records built from the schemas; one that still does not fit
            // is counted as dropped rather than blocking the connector.
            tracing::error!(event_type = key.0, seq = item.seq, error = %e, "outbox record does not fit its schema; dropped");
            self.checkpoint.state.dropped += 1;
            return;
        }
        if buffer.container.len() as usize >= self.settings.settings.max_events_per_file {
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
            self.checkpoint.state.generation,
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
                self.checkpoint.state.dropped += events;
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
                    self.checkpoint.state.delivered += file.events;
                    self.checkpoint.delivered(&self.source.connector.name);
                    self.files.remove(0);
                }
                Err(e) => {
                    let message = root_cause(&format!("writing {}", file.key), &e);
                    self.fail(message);
                    break;
                }
            }
        }
        stored
    }

    /// Drops, and counts, files still not stored after the retention window.
    fn expire(&mut self) {
        let horizon = retention_horizon(self.settings.settings.retention_hours);
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
            self.checkpoint.state.dropped += events;
        }
    }

    fn fail(&mut self, message: String) {
        self.checkpoint.fail(&self.source.connector.name, message);
    }

    /// Moves the cursor to the first event not yet stored and saves the state if it changed.
    async fn save(&mut self) {
        let first_unstored = self
            .files
            .iter()
            .map(|f| f.first)
            .chain(self.buffers.values().map(|b| b.first))
            .min();
        let pending = self.files.iter().map(|f| f.events).sum::<u64>()
            + self
                .buffers
                .values()
                .map(|b| b.container.len())
                .sum::<u64>();
        let oldest = self
            .files
            .iter()
            .map(|f| f.first_at)
            .chain(self.buffers.values().map(|b| b.first_at))
            .min();
        self.checkpoint
            .save(&self.source, first_unstored, pending, oldest)
            .await;
    }
}
