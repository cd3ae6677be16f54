//! What a node does when several share one store (PostgreSQL): every second it takes or keeps
//! the leader lease, and the Currents connectors and the delivery engine follow it, so that each
//! connector and each dispatch runs on exactly one node and moves to another when its node dies.
//! On a store of one process nothing runs here: that process always leads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eddy_store::Store;
use tokio::sync::watch;

/// How often a node renews or tries to take the leader lease.
const TICK: Duration = Duration::from_secs(1);

/// The lease loop of a node on a shared store.
pub struct Node {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Whether this node held the lease at the last tick (for `/metrics`).
    pub leading: Arc<AtomicBool>,
}

impl Node {
    /// Starts the loop when `store` is shared; `None` otherwise. `advertised` is where other
    /// nodes reach this one's admin API, recorded while it leads.
    pub fn start(
        store: &Store,
        advertised: String,
        currents: Arc<eddy_currents::Currents>,
        engine: Arc<eddy_messaging::engine::Engine>,
    ) -> Option<Node> {
        if !store.is_shared() {
            return None;
        }
        let (stop, mut stopped) = watch::channel(false);
        let leading = Arc::new(AtomicBool::new(false));
        let shown = leading.clone();
        let store = store.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopped.changed() => return,
                }
                let (asking, url) = (store.clone(), advertised.clone());
                let lead = match tokio::task::spawn_blocking(move || asking.lead(&url)).await {
                    Ok(Ok(lead)) => lead,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot renew the leader lease; this node does not lead");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the leader lease; this node does not lead");
                        false
                    }
                };
                if lead != shown.swap(lead, Ordering::SeqCst) {
                    tracing::info!(leading = lead, "cluster leadership changed");
                }
                if let Err(e) = currents.set_leading(lead).await {
                    tracing::warn!(error = %e, "cannot match the running connectors to the stored ones");
                }
                if let Err(e) = engine.set_leading(lead).await {
                    tracing::warn!(error = %e, "cannot pick up the stored dispatches");
                }
            }
        });
        Some(Node {
            stop,
            task,
            leading,
        })
    }

    /// Ends the loop (at shutdown, before connectors and dispatches stop), waiting for its tick.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
