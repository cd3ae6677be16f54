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
    /// When the next attempt is due while the sink fails, UTC ms.
    pub next_retry_at: Option<i64>,
    /// The next outbox sequence number the task will read.
    pub read_pos: u64,
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

/// The one retry policy of every sink: exponential backoff from 1 s with jitter (each delay is
/// drawn between half and all of the doubled step, so connectors that failed together do not
/// retry together), capped.
#[derive(Debug)]
pub(crate) struct Backoff {
    cap: std::time::Duration,
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl Backoff {
    /// A policy whose delays never exceed `cap`.
    pub fn new(cap: std::time::Duration) -> Backoff {
        Backoff {
            cap: cap.max(std::time::Duration::from_secs(1)),
            failures: 0,
            next: None,
        }
    }

    /// The delay after the `failures`-th failure in a row.
    pub fn delay(&self, failures: u32) -> std::time::Duration {
        let step = std::time::Duration::from_secs(1)
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        let random = u64::from_le_bytes(eddy_store::ids::unique_bytes::<8>());
        let fraction = 0.5 + (random % 1000) as f64 / 2000.0;
        step.mul_f64(fraction)
    }

    /// Records a failure; answers when the next attempt may be made.
    pub fn failed(&mut self) -> tokio::time::Instant {
        self.failures = self.failures.saturating_add(1);
        let next = tokio::time::Instant::now() + self.delay(self.failures);
        self.next = Some(next);
        next
    }

    /// Records a success: the next failure starts from 1 s again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// Whether an attempt may be made now.
    pub fn ready(&self) -> bool {
        self.next.is_none_or(|at| tokio::time::Instant::now() >= at)
    }

    /// When the next attempt is due, UTC ms, while backing off.
    pub fn next_retry_ms(&self) -> Option<i64> {
        let at = self.next?;
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        Some(eddy_model::time::now_ms() + wait.as_millis() as i64)
    }
}

/// The root cause of an error first: the innermost source, with an S3-style `<Code>` (such as
/// `NoSuchBucket`) pulled to the front, instead of the outermost wrapper's message.
pub(crate) fn root_cause(context: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost: &(dyn std::error::Error + 'static) = error;
    let mut code = None;
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if code.is_none()
            && let Some(start) = text.find("<Code>")
            && let Some(end) = text[start..].find("</Code>")
        {
            code = Some(text[start + 6..start + end].to_string());
        }
        innermost = e;
        current = e.source();
    }
    // The wrappers repeat the cause with request details; the cause and the context say it all.
    let cause = innermost.to_string();
    let cause = cause.trim_end_matches([':', ' ']);
    match code {
        Some(code) => format!("{code}: {context}"),
        None => format!("{cause}: {context}"),
    }
}

/// A connector's delivery state, as the task works on it and as last saved.
pub(crate) struct Checkpoint {
    /// The state the task updates.
    pub state: DeliveryState,
    saved: DeliveryState,
    status: Arc<Mutex<Status>>,
    /// When the sink failed, when to try again.
    pub backoff: Backoff,
}

impl Checkpoint {
    /// Starts from the stored state, backing off at most `max_backoff` between attempts.
    pub fn new(
        state: DeliveryState,
        status: Arc<Mutex<Status>>,
        max_backoff: std::time::Duration,
    ) -> Checkpoint {
        Checkpoint {
            saved: state.clone(),
            state,
            status,
            backoff: Backoff::new(max_backoff),
        }
    }

    /// Records a delivery error (cleared by the next success) and backs off. It is logged once
    /// per change: the first failure and each new cause, not every retry.
    pub fn fail(&mut self, connector: &str, message: String) {
        let next = self.backoff.failed();
        if self.state.last_error.as_deref() != Some(message.as_str()) {
            let retry_in_ms = next
                .saturating_duration_since(tokio::time::Instant::now())
                .as_millis() as u64;
            tracing::warn!(
                connector,
                error = message,
                retry_in_ms,
                "currents delivery failing"
            );
        }
        self.state.last_error = Some(message);
    }

    /// Records a delivery that worked: the error is cleared (and the recovery logged once).
    pub fn delivered(&mut self, connector: &str) {
        if self.state.last_error.take().is_some() {
            tracing::info!(connector, "currents delivery working again");
        }
        self.backoff.succeeded();
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
                next_retry_at: self.backoff.next_retry_ms(),
                read_pos: source.read_pos,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(30));
        for (failures, step) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (5, 16.0),
            (6, 30.0),
            (40, 30.0),
        ] {
            for _ in 0..50 {
                let delay = backoff.delay(failures).as_secs_f64();
                assert!(
                    delay >= step * 0.5 - 1e-9 && delay <= step + 1e-9,
                    "failure {failures}: {delay} outside [{}, {step}]",
                    step * 0.5
                );
            }
        }
    }

    #[test]
    fn the_root_cause_comes_first() {
        #[derive(Debug)]
        struct Outer(Inner);
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Object at location x not found")
            }
        }
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("<Error><Code>NoSuchBucket</Code></Error>")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        impl std::error::Error for Inner {}
        let message = root_cause("writing k", &Outer(Inner));
        assert!(message.starts_with("NoSuchBucket: writing k"), "{message}");
    }
}
