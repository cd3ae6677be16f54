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

    /// Events for this connector after `from` that it has not read yet, counting at most
    /// `max_scanned` outbox entries (the count is then a lower bound), and the queue time of
    /// the first of them.
    pub fn count_unread(
        &self,
        from: u64,
        max_scanned: usize,
    ) -> Result<(u64, Option<i64>), StoreError> {
        let (mut pos, mut left, mut count, mut oldest) = (from, max_scanned, 0, None);
        while left > 0 {
            let page = self.store.outbox(pos, PAGE.min(left))?;
            let full = page.len() == PAGE.min(left);
            left -= page.len();
            for (seq, entry) in &page {
                pos = seq + 1;
                if self.selects(entry).is_some() {
                    count += 1;
                    if oldest.is_none() {
                        oldest = entry.get("at").and_then(Value::as_i64);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok((count, oldest))
    }

    /// The entry's event type when this connector delivers it.
    fn selects<'a>(&self, entry: &'a Value) -> Option<&'a str> {
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
        let event_type = entry.get("type").and_then(Value::as_str)?;
        self.connector.wants(event_type).then_some(event_type)
    }

    fn accept(&self, seq: u64, mut entry: Value) -> Option<Item> {
        let event_type = self.selects(&entry)?.to_string();
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
