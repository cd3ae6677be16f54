//! What every delivery task shares: the requests the registry sends it and the status it
//! publishes, the wait for its next round, and the checkpoint — the
//! connector's cursor and counters, published to the admin API and saved through the writer
//! once they changed.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Interval;

use crate::connector::DeliveryState;
use crate::source::OutboxReader;

/// What a connector shows through the admin API.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub delivered: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub pending: u64,
    /// Queue time of the oldest event not yet delivered, UTC ms (the connector's lag).
    pub oldest_pending_at: Option<i64>,
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

/// Waits for the next tick or request: `Some(None)` on a tick, `Some(Some(request))` on a
/// request, `None` once the registry dropped the channel (the task should end).
pub(crate) async fn next_round(
    ticker: &mut Interval,
    requests: &mut mpsc::Receiver<Request>,
) -> Option<Option<Request>> {
    tokio::select! {
        _ = ticker.tick() => Some(None),
        request = requests.recv() => request.map(Some),
    }
}

/// The oldest queue time still within `retention_hours`, UTC ms: older undelivered events are
/// dropped and counted.
pub(crate) fn retention_horizon(retention_hours: u64) -> i64 {
    eddy_model::time::now_ms() - (retention_hours as i64) * 3_600_000
}

/// A connector's delivery state, as the task works on it and as last saved.
pub(crate) struct Checkpoint {
    /// The state the task updates.
    pub state: DeliveryState,
    saved: DeliveryState,
    status: Arc<Mutex<Status>>,
}

impl Checkpoint {
    /// Starts from the stored state.
    pub fn new(state: DeliveryState, status: Arc<Mutex<Status>>) -> Checkpoint {
        Checkpoint {
            saved: state.clone(),
            state,
            status,
        }
    }

    /// Records a delivery error (cleared by the next success) and logs it.
    pub fn fail(&mut self, connector: &str, message: String) {
        tracing::warn!(connector, error = message, "currents delivery error");
        self.state.last_error = Some(message);
    }

    /// Moves the cursor to the first event neither delivered nor counted (`first_pending`, or
    /// everything read when nothing is pending), publishes the status with `pending` events
    /// waiting, and saves the state if it changed.
    pub async fn save(
        &mut self,
        source: &OutboxReader,
        first_pending: Option<u64>,
        pending: u64,
        oldest_pending_at: Option<i64>,
    ) {
        self.state.cursor = first_pending
            .unwrap_or(source.read_pos)
            .max(self.state.cursor);
        if let Ok(mut status) = self.status.lock() {
            *status = Status {
                delivered: self.state.delivered,
                dropped: self.state.dropped,
                skipped: self.state.skipped,
                pending,
                oldest_pending_at,
                last_error: self.state.last_error.clone(),
            };
        }
        if self.state == self.saved {
            return;
        }
        let value = match serde_json::to_value(&self.state) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "could not encode the connector's cursor");
                return;
            }
        };
        let name = source.connector.name.clone();
        match source
            .store
            .put_connector_state(source.ws, name, value)
            .await
        {
            Ok(_) => self.saved = self.state.clone(),
            Err(e) => tracing::error!(error = %e, "could not save the connector's cursor"),
        }
    }
}
