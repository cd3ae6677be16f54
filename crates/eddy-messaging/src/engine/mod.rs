//! The delivery engine: runs every dispatch of the store to its end, across restarts.
//!
//! A dispatch is visited in chunks of recipients in ascending profile id. For a chunk the engine
//! (1) prepares every recipient on a blocking thread: reads the profile, decides eligibility and
//! the control group, renders the messages (Connected Content may wait on HTTP there);
//! (2) delivers the prepared messages concurrently, bounded per process and per receiving host,
//! paced by `messages_per_minute`, retrying what is worth retrying; (3) commits every outcome,
//! its Currents events, the dispatch's counters and its progress (`next`, and `claimed` two
//! chunks further) in one store commit. The three overlap: a chunk is prepared while the one
//! before is delivered, and starts delivering beside that one's last requests, once the claim
//! covering it is durable. So a crash loses nothing and repeats at most the two claimed chunks
//! in flight; those repeats are counted.
//!
//! On a store several eddy nodes share, dispatches run on the leader node alone
//! ([`Engine::set_leading`]): any node stores a dispatch, the leader picks it up within a second,
//! and a new leader resumes what the last one left from its last commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use eddy_liquid::http::{HttpClient, Rules};
use eddy_liquid::{Object, Value as LValue};
use eddy_model::currents::OutboxEvent;
use eddy_model::profile::Profile;
use eddy_store::{ObjectWrite, Store, Workspace};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::address::Mailbox;
use crate::dispatch::{Dispatch, Recipient, State};
use crate::events::{Context, message_type};
use crate::mime::{self, Mail};
use crate::smtp::{Pool, Relay, Reply};
use crate::templates::{Abort, Compiled};
use crate::tracking::{Link, Signer};
use crate::webhook::{self, Verdict};
use crate::{MessagingError, campaign, kinds};

mod conversions;
mod deliver;
mod history;
mod prepare;
mod run;

pub use conversions::Behaviour;
pub use deliver::{Pacer, backoff};
pub use prepare::{in_control, local_due};

/// How the engine delivers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The base URL of this eddy as recipients reach it (tracking and unsubscribe links).
    pub public_url: String,
    /// Deliveries in flight per dispatch.
    pub concurrency: usize,
    /// Requests in flight per webhook host, across dispatches.
    pub host_concurrency: usize,
    /// Open connections per SMTP relay.
    pub smtp_connections: usize,
    /// Attempts per webhook or email before giving up.
    pub attempts: u32,
    /// The first retry's delay; each next one doubles.
    pub retry_base: Duration,
    /// Timeout of one webhook request.
    pub webhook_timeout: Duration,
    /// Recipients per chunk (per commit).
    pub chunk: usize,
    /// Bounds of each render.
    pub liquid: eddy_liquid::Limits,
    /// How long a finished send's records (its dispatch, each recipient's message record) are
    /// kept; its counts stay in the workspace's totals.
    pub history: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: "http://127.0.0.1:8780".into(),
            concurrency: 256,
            host_concurrency: 128,
            smtp_connections: 8,
            attempts: 5,
            retry_base: Duration::from_secs(2),
            webhook_timeout: Duration::from_secs(30),
            chunk: 512,
            liquid: eddy_liquid::Limits::default(),
            history: Duration::from_secs(400 * 86_400),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages accepted by a receiver (webhook 2xx, SMTP 2xx).
    pub sent: AtomicU64,
    /// Webhook failures and email bounces after the last attempt.
    pub failed: AtomicU64,
    /// Recipients aborted by Liquid.
    pub aborted: AtomicU64,
    /// Retries (webhook and email).
    pub retries: AtomicU64,
    /// Recipients in flight at a crash and sent again after the restart.
    pub resent_after_restart: AtomicU64,
    /// Dispatch runs that failed (each is tried again, with a pause, until it is parked).
    pub dispatch_errors: AtomicU64,
    /// Dispatches parked as failed.
    pub dispatches_failed: AtomicU64,
}

impl Stats {
    /// The counters in Prometheus' text format, with the dispatches running now.
    pub fn render(&self, active: usize) -> String {
        let mut out = String::new();
        let counters = [
            (
                "eddy_messages_sent_total",
                "Messages a receiver accepted (webhook 2xx, SMTP 2xx).",
                &self.sent,
            ),
            (
                "eddy_messages_failed_total",
                "Webhook failures and email bounces after the last attempt.",
                &self.failed,
            ),
            (
                "eddy_messages_aborted_total",
                "Recipients aborted by Liquid or Connected Content.",
                &self.aborted,
            ),
            (
                "eddy_messages_retries_total",
                "Webhook and email retries.",
                &self.retries,
            ),
            (
                "eddy_messages_resent_after_restart_total",
                "Recipients in flight at a crash, sent again after the restart.",
                &self.resent_after_restart,
            ),
            (
                "eddy_dispatch_errors_total",
                "Dispatch runs that stopped on an error (tried again until parked).",
                &self.dispatch_errors,
            ),
            (
                "eddy_dispatches_failed_total",
                "Dispatches parked in the failed state (their runs kept ending without progress).",
                &self.dispatches_failed,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP eddy_dispatches_active Dispatches sending or waiting for their schedule.\n# TYPE eddy_dispatches_active gauge\neddy_dispatches_active {active}\n"
        ));
        out
    }
}

/// Braze's subscription links: the variable and the state following it sets.
const SUBSCRIPTION_LINKS: [(&str, &str); 3] = [
    ("set_user_to_unsubscribed_url", "unsubscribed"),
    ("set_user_to_subscribed_url", "subscribed"),
    ("set_user_to_opted_in_url", "opted_in"),
];

/// Runs of one dispatch that may end without a committed chunk before it is parked as
/// failed: enough for a restart or a failover in the middle of a chunk, not for a send that
/// takes the process down each time.
const MAX_STARTS_WITHOUT_PROGRESS: u32 = 3;

/// The engine: one per server.
pub struct Engine {
    store: Store,
    settings: Settings,
    /// Webhook clients, one per set of allowed hosts: each resolver admits public addresses and
    /// those hosts, as Connected Content's does.
    webhook_clients: StdMutex<HashMap<eddy_net::AllowedHosts, webhook::Client>>,
    liquid_http: Arc<HttpClient>,
    signer: Signer,
    /// Request permits per host, by port then host name.
    hosts: StdMutex<HashMap<u16, HashMap<String, Arc<Semaphore>>>>,
    pools: StdMutex<HashMap<u32, (Relay, Arc<Pool>)>>,
    running: StdMutex<std::collections::HashSet<(u32, String)>>,
    /// The dispatch tasks, so that shutdown can wait for them (and the store they hold).
    tasks: StdMutex<tokio::task::JoinSet<()>>,
    /// The task that expires old history (ended at shutdown).
    history: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// The task that moves canvas users (ended at shutdown).
    canvases: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Whether this node runs dispatches (always on a store of one process).
    leading: std::sync::atomic::AtomicBool,
    /// Workspaces with a campaign that has conversion events (the only ones whose tracked
    /// events are checked for conversions).
    converting: StdMutex<std::collections::HashSet<u32>>,
    wake: Notify,
    /// Counters.
    pub stats: Stats,
}

/// The SMTP relay of a workspace, if it has one.
pub fn relay_of(store: &Store, ws: u32) -> Result<Option<Relay>, MessagingError> {
    Ok(crate::records::email_settings(store, ws)?.map(|settings| settings.relay()))
}

/// The tracking domain of a workspace's email settings, if set.
fn tracking_base(store: &Store, ws: u32, default: &str) -> Result<String, MessagingError> {
    // A read error fails the run (tried again), never sends links to the default domain.
    let configured = crate::records::email_settings(store, ws)?
        .and_then(|settings| settings.tracking_domain)
        .filter(|s| !s.is_empty());
    Ok(match configured {
        Some(domain) if domain.starts_with("http://") || domain.starts_with("https://") => {
            domain.trim_end_matches('/').to_string()
        }
        Some(domain) => format!("https://{}", domain.trim_end_matches('/')),
        None => default.trim_end_matches('/').to_string(),
    })
}

/// The key that signs tracking links, made once and kept in the store: of several processes
/// starting at once on one database, the first to commit it wins and all use it.
async fn tracking_key(store: &Store) -> Result<Vec<u8>, MessagingError> {
    if let Some(key) = stored_tracking_key(store)? {
        return Ok(key);
    }
    let secret =
        eddy_store::ids::secret_hex(32).map_err(|e| MessagingError::internal(e.to_string()))?;
    let created = store
        .create_object(
            eddy_store::GLOBAL_OBJECTS,
            kinds::TRACKING,
            "key".into(),
            // `signing_key` is a secret field: sealed at rest like a credential.
            json!({"signing_key": secret}),
        )
        .await;
    match created {
        Ok(()) | Err(eddy_store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    stored_tracking_key(store)?.ok_or_else(|| {
        MessagingError::internal("the stored key that signs tracking links is malformed")
    })
}

fn stored_tracking_key(store: &Store) -> Result<Option<Vec<u8>>, MessagingError> {
    let Some(value) = store.object(eddy_store::GLOBAL_OBJECTS, kinds::TRACKING, "key")? else {
        return Ok(None);
    };
    // Stores made before the key had its own field kept it as `password`.
    let Some(hex) = value["signing_key"]
        .as_str()
        .or_else(|| value["password"].as_str())
        .filter(|h| h.len() == 64)
    else {
        return Ok(None);
    };
    Ok((0..32)
        .map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect())
}

/// Name of a recipient's outcome record: profile first, so one user's history is one scan.
pub fn message_name(profile: u32, dispatch_id: &str) -> String {
    format!("{profile:010}/{dispatch_id}")
}

impl Engine {
    /// Starts the engine and resumes every unfinished dispatch of the store.
    pub async fn start(
        store: Store,
        settings: Settings,
        liquid_http: Arc<HttpClient>,
    ) -> Result<Arc<Engine>, MessagingError> {
        let key = tracking_key(&store).await?;
        let store_shared = store.is_shared();
        let engine = Arc::new(Engine {
            store,
            settings,
            webhook_clients: StdMutex::new(HashMap::new()),
            liquid_http,
            signer: Signer::new(key),
            hosts: StdMutex::new(HashMap::new()),
            pools: StdMutex::new(HashMap::new()),
            running: StdMutex::new(Default::default()),
            tasks: StdMutex::new(tokio::task::JoinSet::new()),
            history: StdMutex::new(None),
            canvases: StdMutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            leading: std::sync::atomic::AtomicBool::new(!store_shared),
            converting: StdMutex::new(Default::default()),
            wake: Notify::new(),
            stats: Stats::default(),
        });
        // A failure to build a client shows at start, not at the first send.
        engine.webhook_client(&eddy_net::AllowedHosts::default())?;
        engine.resume()?;
        // Its own task, not among the dispatches': losing the lease stops dispatches, not this
        // (it works only while the node leads).
        let expiring = engine.clone();
        let task = tokio::spawn(async move { expiring.expire_history().await });
        *engine.history.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let moving = engine.clone();
        let task = tokio::spawn(async move { moving.run_canvases().await });
        *engine.canvases.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(engine)
    }

    /// The webhook client for a workspace's allowed hosts.
    fn webhook_client(
        &self,
        allowed: &eddy_net::AllowedHosts,
    ) -> Result<webhook::Client, MessagingError> {
        let mut clients = self
            .webhook_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(allowed) {
            return Ok(client.clone());
        }
        let connector = eddy_net::connector(eddy_net::Policy::Workspace(allowed.clone()))
            .map_err(|e| MessagingError::internal(format!("http client: {e}")))?;
        let client = webhook::Client::new(connector, self.settings.host_concurrency);
        // Lists that change leave old clients behind; a bound keeps them from piling up.
        if clients.len() > 1024 {
            clients.clear();
        }
        clients.insert(allowed.clone(), client.clone());
        Ok(client)
    }

    /// Re-reads which workspaces convert and submits every unfinished dispatch (those running
    /// already are left to their tasks; on a node that does not lead, none is started).
    fn resume(self: &Arc<Self>) -> Result<(), MessagingError> {
        let leading = self.leading.load(Ordering::SeqCst);
        for ws in self.store.workspaces()? {
            self.campaigns_changed(ws.id)?;
            if !leading {
                continue;
            }
            for (id, _) in self.store.objects(ws.id, kinds::OPEN_DISPATCH)? {
                self.submit(ws.clone(), id);
            }
        }
        Ok(())
    }

    /// Makes this node run dispatches (`true`: pick up every unfinished one, including those
    /// other nodes stored, and let scheduled ones re-read their schedule) or stop them (`false`:
    /// each resumes on the next leader from its last commit). Called every second on a shared
    /// store with whether this node holds the leader lease; every node re-reads which
    /// workspaces convert, since campaigns may change on any node.
    pub async fn set_leading(self: &Arc<Self>, leading: bool) -> Result<(), MessagingError> {
        let was = self.leading.swap(leading, Ordering::SeqCst);
        if was && !leading {
            tracing::warn!(
                "this node lost the leader lease; its dispatches stop here and resume on the leader"
            );
            let mut tasks =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.resume())
            .await
            .map_err(|e| MessagingError::internal(e.to_string()))??;
        if leading {
            self.wake();
        }
        Ok(())
    }

    /// Commits a new dispatch and starts it: from here it is durable, and it runs on this node
    /// or, on a shared store, on the leader.
    pub async fn accept(
        self: &Arc<Self>,
        ws: &Workspace,
        dispatch: Dispatch,
    ) -> Result<(), MessagingError> {
        self.store
            .record(ws.id, dispatch.writes()?, Vec::new())
            .await?;
        self.submit(ws.clone(), dispatch.id);
        Ok(())
    }

    /// The members of a send's audience now: everyone, narrowed by each filter (a segment's, a
    /// connected audience's), evaluated by the segment index off the async workers.
    pub async fn members(
        &self,
        ws: u32,
        filters: Vec<eddy_segments::Filter>,
    ) -> Result<roaring::RoaringBitmap, MessagingError> {
        let store = self.store.clone();
        let now = eddy_model::time::now_ms();
        tokio::task::spawn_blocking(move || {
            let index = store.index();
            let Some(workspace) = index.workspace(ws) else {
                return roaring::RoaringBitmap::new();
            };
            let mut members = workspace.all().clone();
            for filter in &filters {
                members &= workspace.eval(filter, now);
            }
            members
        })
        .await
        .map_err(|e| MessagingError::internal(format!("evaluating an audience: {e}")))
    }

    /// The store dispatches and their records live in.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The signer of tracking links.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Runs a stored dispatch (once: a dispatch already running is left to its task).
    pub fn submit(self: &Arc<Self>, ws: Workspace, dispatch_id: String) {
        let key = (ws.id, dispatch_id.clone());
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(key.clone()) {
                return;
            }
        }
        if self.stopping.load(Ordering::SeqCst) || !self.leading.load(Ordering::SeqCst) {
            self.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            return;
        }
        let engine = self.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Finished tasks are collected here so that the set does not grow with every send.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            // A run that fails is tried again after a pause; each try counts as a start
            // without progress, so one that keeps failing is parked, not retried forever.
            let mut pause = Duration::from_secs(1);
            while let Err(e) = engine.run(&ws, &dispatch_id).await {
                engine.stats.dispatch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, dispatch_id, workspace = ws.name, "dispatch run failed; it is tried again");
                let _ = tokio::time::timeout(pause, engine.wake.notified()).await;
                if engine.stopping() || !engine.leading.load(Ordering::SeqCst) {
                    break;
                }
                pause = (pause * 2).min(Duration::from_secs(60));
            }
            engine
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }

    /// Stops the dispatches: each finishes the chunk it is delivering and commits it, within
    /// `deadline`; past it they are dropped. Either way every dispatch resumes at the next start
    /// from its last commit, and no task holds the store any more.
    pub async fn shutdown(&self, deadline: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let drained = tokio::time::timeout(deadline, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, (_, pool))| pool)
            .collect();
        if drained.is_err() {
            tracing::warn!(
                dispatches = tasks.len(),
                "dispatches still delivering at shutdown were stopped; they resume at the next start"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // Idle SMTP connections say QUIT rather than vanish.
        for pool in pools {
            pool.close().await;
        }
        for background in [&self.history, &self.canvases] {
            let task = background.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Whether the engine is shutting down.
    pub(crate) fn stopping_now(&self) -> bool {
        self.stopping()
    }

    /// Whether this node runs dispatches and moves canvas users.
    pub(crate) fn leading_now(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Waits until the engine is woken (a new send, a new canvas entry, shutdown).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Dispatches running or waiting for their schedule in this process.
    pub fn active(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes scheduled dispatches to re-read their schedule.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }
}

/// What preparing a chunk needs.
struct Prepare {
    ws: Workspace,
    dispatch: Dispatch,
    compiled: Arc<Compiled>,
    rules: Arc<Rules>,
    base: String,
    has_relay: bool,
    settled_below: u64,
    shared: Vec<(String, LValue)>,
    /// The profile fields templates read (`eddy_liquid::USER_FIELDS`), exported per recipient.
    user_fields: Vec<String>,
}

/// Where a prepared chunk ends (none when it was empty), and its recipients.
type PreparedChunk = (Option<u64>, Vec<Prepared>);

enum Prepared {
    /// An outcome is already recorded (an earlier pass).
    Settled,
    /// The profile no longer exists.
    Gone,
    /// Local-time send: due at this UTC ms.
    Pending(i64),
    /// Ready to deliver (or to record as not sent).
    Ready(Box<Work>),
}

/// One recipient, rendered.
struct Work {
    ws: u32,
    id: u32,
    context: Context,
    history: Map<String, Value>,
    events: Vec<OutboxEvent>,
    counts: crate::dispatch::Counts,
    webhook: Option<WebhookWork>,
    email: Option<EmailWork>,
}

impl Work {
    /// Records an email event of this recipient, with the address it concerns.
    fn email_event(
        &mut self,
        name: &str,
        time_ms: i64,
        variation: Option<&str>,
        address: &Value,
        extra: Vec<(&'static str, Value)>,
    ) {
        let mut fields = vec![("email_address", address.clone())];
        fields.extend(extra);
        let event = self
            .context
            .event(message_type("email", name), time_ms, variation, fields);
        self.events.push(event);
    }
}

struct WebhookWork {
    request: webhook::Request,
    variation: Option<String>,
    extras: Option<Map<String, Value>>,
}

struct EmailWork {
    to: String,
    from_address: String,
    data: String,
    bcc: Option<String>,
    variation: Option<String>,
    extras: Option<Map<String, Value>>,
}

/// One recipient, delivered.
struct Finished {
    id: u32,
    history: Map<String, Value>,
    events: Vec<OutboxEvent>,
    counts: crate::dispatch::Counts,
    extra: Vec<ObjectWrite>,
}
