//! What every connector reads: the outbox after its position, filtered to its workspace, its
//! selected event types and itself (test events), with its field transformations applied.

use eddy_store::{Store, StoreError};
use serde_json::{Map, Value};

use crate::connector::Connector;

/// One event for a connector.
pub(crate) struct Item {
    /// Outbox sequence number.
    pub seq: u64,
    /// When it was queued, UTC ms.
    pub at: i64,
    /// Currents event type.
    pub event_type: String,
    /// The record, transformed.
    pub record: Map<String, Value>,
}

/// Outbox entries read per page.
const PAGE: usize = 4096;

/// A connector's read position in the outbox.
pub(crate) struct OutboxReader {
    pub store: Store,
    pub ws: u32,
    pub connector: Connector,
    /// The next sequence number to read.
    pub read_pos: u64,
}

impl OutboxReader {
    /// Events for this connector queued since the last read, reading at most `max` outbox
    /// entries; the second value is true when the outbox may hold more.
    pub fn read(&mut self, max: usize) -> Result<(Vec<Item>, bool), StoreError> {
        let mut out = Vec::new();
        let mut left = max;
        while left > 0 {
            let page = self.store.outbox(self.read_pos, PAGE.min(left))?;
            let full = page.len() == PAGE.min(left);
            left -= page.len();
            for (seq, entry) in page {
                self.read_pos = seq + 1;
                if let Some(item) = self.accept(seq, entry) {
                    out.push(item);
                }
            }
            if !full {
                return Ok((out, false));
            }
        }
        Ok((out, true))
    }

    fn accept(&self, seq: u64, mut entry: Value) -> Option<Item> {
        if entry.get("ws").and_then(Value::as_u64) != Some(u64::from(self.ws)) {
            return None;
        }
        if entry
            .get("to")
            .and_then(Value::as_str)
            .is_some_and(|to| to != self.connector.name)
        {
            return None;
        }
        let event_type = entry.get("type").and_then(Value::as_str)?.to_string();
        if !self.connector.wants(&event_type) {
            return None;
        }
        let at = entry.get("at").and_then(Value::as_i64).unwrap_or_default();
        let Value::Object(mut record) = entry.get_mut("record")?.take() else {
            return None;
        };
        self.connector.transform(&mut record);
        Some(Item {
            seq,
            at,
            event_type,
            record,
        })
    }
}
