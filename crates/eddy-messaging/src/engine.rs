//! The delivery engine: runs every dispatch of the store to its end, across restarts.
//!
//! A dispatch is visited in chunks of recipients in ascending profile id. For a chunk the engine
//! (1) prepares every recipient on a blocking thread: reads the profile, decides eligibility and
//! the control group, renders the messages (Connected Content may wait on HTTP there);
//! (2) delivers the prepared messages concurrently, bounded per process and per receiving host,
//! paced by `messages_per_minute`, retrying what is worth retrying; (3) commits every outcome,
//! its Currents events, the dispatch's counters and its progress (`next`, and `claimed` for the
//! following chunk) in one store commit. So a crash loses nothing and repeats at most the one
//! chunk that was claimed and in flight; those repeats are counted.
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
use futures_util::StreamExt;
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
    webhook_clients: StdMutex<HashMap<eddy_net::AllowedHosts, reqwest::Client>>,
    liquid_http: Arc<HttpClient>,
    signer: Signer,
    hosts: StdMutex<HashMap<String, Arc<Semaphore>>>,
    pools: StdMutex<HashMap<u32, (Relay, Arc<Pool>)>>,
    running: StdMutex<std::collections::HashSet<(u32, String)>>,
    /// The dispatch tasks, so that shutdown can wait for them (and the store they hold).
    tasks: StdMutex<tokio::task::JoinSet<()>>,
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

/// The SMTP relay settings of a workspace as stored (`kinds::EMAIL`/`settings`).
pub fn relay_of(store: &Store, ws: u32) -> Result<Option<Relay>, MessagingError> {
    let Some(settings) = store.object(ws, kinds::EMAIL, "settings")? else {
        return Ok(None);
    };
    let relay: Relay = Relay {
        host: settings["host"].as_str().unwrap_or_default().to_string(),
        port: settings["port"].as_u64().unwrap_or(25) as u16,
        implicit_tls: settings["implicit_tls"].as_bool().unwrap_or(false),
        starttls: settings["starttls"].as_bool().unwrap_or(false),
        username: settings["username"].as_str().map(str::to_string),
        password: settings["password"].as_str().map(str::to_string),
    };
    Ok(Some(relay))
}

/// The tracking domain of a workspace's email settings, if set.
fn tracking_base(store: &Store, ws: u32, default: &str) -> String {
    let configured = store
        .object(ws, kinds::EMAIL, "settings")
        .ok()
        .flatten()
        .and_then(|s| s["tracking_domain"].as_str().map(str::to_string))
        .filter(|s| !s.is_empty());
    match configured {
        Some(domain) if domain.starts_with("http://") || domain.starts_with("https://") => {
            domain.trim_end_matches('/').to_string()
        }
        Some(domain) => format!("https://{}", domain.trim_end_matches('/')),
        None => default.trim_end_matches('/').to_string(),
    }
}

/// The key that signs tracking links, made once and kept in the store: of several processes
/// starting at once on one database, the first to commit it wins and all use it.
async fn tracking_key(store: &Store) -> Result<Vec<u8>, MessagingError> {
    if let Some(key) = stored_tracking_key(store)? {
        return Ok(key);
    }
    let secret =
        eddy_store::ids::secret_hex(32).map_err(|e| MessagingError::invalid(e.to_string()))?;
    let created = store
        .create_object(
            eddy_store::GLOBAL_OBJECTS,
            kinds::TRACKING,
            "key".into(),
            // Under a credential's name, so that it is sealed at rest like one.
            json!({"password": secret}),
        )
        .await;
    match created {
        Ok(()) | Err(eddy_store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    stored_tracking_key(store)?.ok_or_else(|| {
        MessagingError::invalid("the stored key that signs tracking links is malformed")
    })
}

fn stored_tracking_key(store: &Store) -> Result<Option<Vec<u8>>, MessagingError> {
    let Some(value) = store.object(eddy_store::GLOBAL_OBJECTS, kinds::TRACKING, "key")? else {
        return Ok(None);
    };
    let Some(hex) = value["password"].as_str().filter(|h| h.len() == 64) else {
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
            stopping: std::sync::atomic::AtomicBool::new(false),
            leading: std::sync::atomic::AtomicBool::new(!store_shared),
            converting: StdMutex::new(Default::default()),
            wake: Notify::new(),
            stats: Stats::default(),
        });
        // A failure to build a client shows at start, not at the first send.
        engine.webhook_client(&eddy_net::AllowedHosts::default())?;
        engine.resume()?;
        let expiring = engine.clone();
        engine
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(async move { expiring.expire_history().await });
        Ok(engine)
    }

    /// Every hour (on the leader), removes the records of sends that ended longer ago than
    /// `history`: each recipient's message record (found through the send's audience) and the
    /// dispatch, whose counts are added to the workspace's totals first.
    async fn expire_history(self: Arc<Self>) {
        const EVERY: Duration = Duration::from_secs(3600);
        let mut last = tokio::time::Instant::now() - EVERY + Duration::from_secs(60);
        while !self.stopping() {
            let _ = tokio::time::timeout(Duration::from_secs(60), self.wake.notified()).await;
            if self.stopping() || last.elapsed() < EVERY || !self.leading.load(Ordering::SeqCst) {
                continue;
            }
            last = tokio::time::Instant::now();
            if let Err(e) = self.expire_once().await {
                tracing::error!(error = %e, "removing expired message history failed; tried again in an hour");
            }
        }
    }

    /// One pass of [`Engine::expire_history`]; answers how many sends were removed.
    pub async fn expire_once(&self) -> Result<usize, MessagingError> {
        let cutoff = eddy_model::time::now_ms() - self.settings.history.as_millis() as i64;
        let mut removed = 0;
        for ws in self.store.workspaces()? {
            for (id, value) in self.store.objects(ws.id, kinds::DISPATCH)? {
                let Ok(dispatch) = serde_json::from_value::<Dispatch>(value) else {
                    tracing::warn!(dispatch_id = id, "a stored dispatch does not read; kept");
                    continue;
                };
                let ended = matches!(
                    dispatch.state,
                    State::Done | State::Cancelled | State::Failed
                );
                if !ended || dispatch.finished_at.is_none_or(|at| at >= cutoff) {
                    continue;
                }
                self.remove_send(&ws, &dispatch).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn remove_send(&self, ws: &Workspace, dispatch: &Dispatch) -> Result<(), MessagingError> {
        let bitmap = dispatch.bitmap()?;
        let names: Vec<String> = bitmap
            .iter()
            .map(|p| message_name(p, &dispatch.id))
            .collect();
        for batch in names.chunks(1000) {
            let mut objects = Vec::with_capacity(batch.len() * 2);
            for name in batch {
                for kind in [kinds::MESSAGE, kinds::CONVERTIBLE] {
                    objects.push(ObjectWrite {
                        kind: kind.into(),
                        name: name.clone(),
                        value: None,
                    });
                }
            }
            self.store.record(ws.id, objects, Vec::new()).await?;
        }
        // The dispatch goes last, with its counts kept in the totals, in one commit.
        let mut totals: crate::dispatch::ExpiredTotals =
            match self.store.object(ws.id, kinds::HISTORY_TOTALS, "expired")? {
                Some(value) => serde_json::from_value(value)
                    .map_err(|e| MessagingError::internal(format!("stored history totals: {e}")))?,
                None => Default::default(),
            };
        totals.sends += 1;
        add_counts(&mut totals.counts, &dispatch.counts);
        let totals = serde_json::to_value(&totals)
            .map_err(|e| MessagingError::internal(format!("history totals: {e}")))?;
        let mut objects = vec![ObjectWrite {
            kind: kinds::HISTORY_TOTALS.into(),
            name: "expired".into(),
            value: Some(totals),
        }];
        if let Some(schedule_id) = &dispatch.schedule_id {
            objects.push(ObjectWrite {
                kind: kinds::SCHEDULE.into(),
                name: schedule_id.clone(),
                value: None,
            });
        }
        for kind in [kinds::DISPATCH, kinds::OPEN_DISPATCH] {
            objects.push(ObjectWrite {
                kind: kind.into(),
                name: dispatch.id.clone(),
                value: None,
            });
        }
        self.store.record(ws.id, objects, Vec::new()).await?;
        Ok(())
    }

    /// The webhook client for a workspace's allowed hosts.
    fn webhook_client(
        &self,
        allowed: &eddy_net::AllowedHosts,
    ) -> Result<reqwest::Client, MessagingError> {
        let mut clients = self
            .webhook_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(allowed) {
            return Ok(client.clone());
        }
        let client = eddy_net::client_builder(eddy_net::Policy::Workspace(allowed.clone()))
            .pool_max_idle_per_host(self.settings.host_concurrency)
            .build()
            .map_err(|e| MessagingError::internal(format!("http client: {e}")))?;
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
            .map_err(|e| MessagingError::invalid(e.to_string()))??;
        if leading {
            self.wake();
        }
        Ok(())
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
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Re-reads whether a workspace has campaigns with conversion events.
    pub fn campaigns_changed(&self, ws: u32) -> Result<(), MessagingError> {
        let any = self
            .store
            .objects(ws, kinds::CAMPAIGN)?
            .iter()
            .any(|(_, c)| {
                c["conversion_events"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            });
        let mut converting = self.converting.lock().unwrap_or_else(|p| p.into_inner());
        if any {
            converting.insert(ws);
        } else {
            converting.remove(&ws);
        }
        Ok(())
    }

    /// Whether tracked events of a workspace can convert (it has campaigns with conversion
    /// events); `/users/track` asks before collecting them.
    pub fn watches_conversions(&self, ws: u32) -> bool {
        self.converting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ws)
    }

    /// Records `users.campaigns.Conversion` for tracked behaviours that follow a message of a
    /// campaign with a matching conversion event, within its window; once per recipient and
    /// send, in the commit that marks the send converted.
    pub async fn conversions(
        &self,
        ws: &Workspace,
        behaviours: &[Behaviour],
    ) -> Result<usize, MessagingError> {
        if !self.watches_conversions(ws.id) {
            return Ok(0);
        }
        let mut writes: HashMap<String, Map<String, Value>> = HashMap::new();
        let mut settled: Vec<String> = Vec::new();
        let mut events = Vec::new();
        for behaviour in behaviours {
            let Some((id, profile)) = self.store.find(ws.id, &behaviour.ident)? else {
                continue;
            };
            // Only the messages that may still convert are read, whatever the history's size.
            let prefix = format!("{id:010}/");
            for (name, index) in
                self.store
                    .objects_page(ws.id, kinds::CONVERTIBLE, &prefix, None, usize::MAX)?
            {
                let until = index["until"].as_i64().unwrap_or(i64::MAX);
                if until < eddy_model::time::now_ms() {
                    settled.push(name);
                    continue;
                }
                let record = match writes.entry(name) {
                    std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        match self.store.object(ws.id, kinds::MESSAGE, slot.key())? {
                            Some(Value::Object(stored)) => slot.insert(stored),
                            _ => {
                                settled.push(slot.key().clone());
                                continue;
                            }
                        }
                    }
                };
                let Some(found) = conversion_of(record, behaviour) else {
                    continue;
                };
                record.insert("converted_at".into(), json!(behaviour.time_ms));
                let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_string);
                let context = Context {
                    send_id: text("send_id"),
                    campaign_id: text("campaign_id"),
                    campaign_name: text("campaign_name"),
                    ..Context::of(
                        &profile,
                        &ws.app_group_id,
                        text("dispatch_id").unwrap_or_default(),
                    )
                };
                let variation = found
                    .channel
                    .and_then(|c| campaign::variation_id(context.campaign_id.as_deref(), c, None));
                events.push(context.event(
                    "users.campaigns.Conversion".into(),
                    behaviour.time_ms,
                    variation.as_deref(),
                    vec![
                        ("conversion_behavior_index", json!(found.index)),
                        ("conversion_behavior", json!(found.behaviour.to_string())),
                        ("app_id", json!(behaviour.app_id)),
                    ],
                ));
            }
        }
        let converted: Vec<(String, Map<String, Value>)> = writes
            .into_iter()
            .filter(|(_, r)| r.contains_key("converted_at"))
            .collect();
        if converted.is_empty() && settled.is_empty() {
            return Ok(0);
        }
        // A converted or expired message leaves the index with the conversion's commit.
        let mut objects = Vec::with_capacity(converted.len() * 2 + settled.len());
        for name in settled {
            objects.push(ObjectWrite {
                kind: kinds::CONVERTIBLE.into(),
                name,
                value: None,
            });
        }
        for (name, record) in converted {
            objects.push(ObjectWrite {
                kind: kinds::CONVERTIBLE.into(),
                name: name.clone(),
                value: None,
            });
            objects.push(ObjectWrite {
                kind: kinds::MESSAGE.into(),
                name,
                value: Some(Value::Object(record)),
            });
        }
        Ok(self.store.record(ws.id, objects, events).await?)
    }

    /// Dispatches running or waiting for their schedule in this process.
    pub fn active(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes scheduled dispatches to re-read their schedule.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    fn load(&self, ws: u32, id: &str) -> Result<Option<Dispatch>, MessagingError> {
        match self.store.object(ws, kinds::DISPATCH, id)? {
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| MessagingError::invalid(format!("stored dispatch {id}: {e}"))),
            None => Ok(None),
        }
    }

    async fn run(self: &Arc<Self>, ws: &Workspace, id: &str) -> Result<(), MessagingError> {
        // Wait for the schedule, re-reading it whenever a schedule changes.
        let mut dispatch = loop {
            let Some(dispatch) = self.load(ws.id, id)? else {
                return Ok(());
            };
            let open = matches!(dispatch.state, State::Scheduled | State::Sending);
            if open && self.cancel_requested(ws.id, id)? {
                return self.finish_cancelled(ws, dispatch).await;
            }
            match dispatch.state {
                State::Done | State::Cancelled | State::Failed => {
                    // A schedule deleted before it was due leaves its request behind.
                    if self.cancel_requested(ws.id, id)? {
                        self.store
                            .delete_object(ws.id, kinds::DISPATCH_CANCEL, id.to_string())
                            .await?;
                    }
                    return Ok(());
                }
                State::Sending => break dispatch,
                State::Scheduled => {}
            }
            let now = eddy_model::time::now_ms();
            let first_due = if dispatch.in_local_time {
                dispatch.send_at - 14 * 3_600_000
            } else {
                dispatch.send_at
            };
            if first_due <= now {
                let mut started = dispatch;
                started.state = State::Sending;
                self.save(ws.id, &started, Vec::new(), Vec::new()).await?;
                break started;
            }
            let wait = Duration::from_millis((first_due - now).min(60_000) as u64);
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
            if self.stopping() {
                return Ok(());
            }
        };
        if dispatch.starts_without_progress >= MAX_STARTS_WITHOUT_PROGRESS {
            return self.park(ws, dispatch).await;
        }
        dispatch.starts_without_progress += 1;
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        loop {
            match self.pass(ws, &mut dispatch).await? {
                PassEnd::Done => break,
                PassEnd::Stopped => return Ok(()),
                PassEnd::Cancelled => return self.finish_cancelled(ws, dispatch).await,
                PassEnd::PendingUntil(due) => {
                    // Recipients in later time zones: sleep until the next one is due, then
                    // visit the audience again (recipients already settled are skipped).
                    loop {
                        let wait = (due - eddy_model::time::now_ms()).clamp(0, 3_600_000);
                        if wait == 0 {
                            break;
                        }
                        let _ = tokio::time::timeout(
                            Duration::from_millis(wait as u64),
                            self.wake.notified(),
                        )
                        .await;
                        if self.stopping() {
                            return Ok(());
                        }
                        if self.cancel_requested(ws.id, id)? {
                            return self.finish_cancelled(ws, dispatch).await;
                        }
                    }
                    dispatch.next = 0;
                    dispatch.claimed = 0;
                }
            }
        }
        dispatch.state = State::Done;
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        tracing::info!(
            dispatch_id = id,
            workspace = ws.name,
            sent = dispatch.counts.sent,
            failed = dispatch.counts.failed,
            "dispatch finished"
        );
        Ok(())
    }

    /// Asks a dispatch to stop: the engine running it stops before its next chunk (or before
    /// it starts, when it waits for its schedule), counts what was not sent, and marks it
    /// cancelled; a restart never resumes it. Works from any node: the request is stored.
    pub async fn request_cancel(&self, ws: u32, id: &str) -> Result<(), MessagingError> {
        self.store
            .put_object(
                ws,
                kinds::DISPATCH_CANCEL,
                id.to_string(),
                json!({"at": eddy_model::time::now_ms()}),
            )
            .await?;
        self.wake();
        Ok(())
    }

    fn cancel_requested(&self, ws: u32, id: &str) -> Result<bool, MessagingError> {
        Ok(self.store.object(ws, kinds::DISPATCH_CANCEL, id)?.is_some())
    }

    /// Ends a dispatch as cancelled, in one commit with the request's removal.
    async fn finish_cancelled(
        &self,
        ws: &Workspace,
        mut dispatch: Dispatch,
    ) -> Result<(), MessagingError> {
        let c = &dispatch.counts;
        let settled = c.sent + c.aborted + c.failed + c.control + c.skipped;
        dispatch.counts.cancelled = dispatch.audience_size()?.saturating_sub(settled);
        dispatch.state = State::Cancelled;
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        let request = ObjectWrite {
            kind: kinds::DISPATCH_CANCEL.into(),
            name: dispatch.id.clone(),
            value: None,
        };
        self.save(ws.id, &dispatch, vec![request], Vec::new())
            .await?;
        tracing::info!(
            dispatch_id = dispatch.id,
            workspace = ws.name,
            sent = dispatch.counts.sent,
            not_sent = dispatch.counts.cancelled,
            "dispatch cancelled"
        );
        Ok(())
    }

    /// Gives a dispatch up: what was not settled is never sent, and the reason is kept.
    async fn park(&self, ws: &Workspace, mut dispatch: Dispatch) -> Result<(), MessagingError> {
        let reason = format!(
            "its last {} runs ended without delivering a chunk (an error each time, or the process stopped while sending); it is not tried again",
            dispatch.starts_without_progress
        );
        tracing::error!(
            dispatch_id = dispatch.id,
            workspace = ws.name,
            reason,
            "dispatch parked as failed"
        );
        dispatch.state = State::Failed;
        dispatch.failure = Some(reason);
        dispatch.finished_at = Some(eddy_model::time::now_ms());
        self.save(ws.id, &dispatch, Vec::new(), Vec::new()).await?;
        self.stats.dispatches_failed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Saves a dispatch with what it settled, in one commit; a dispatch that is no longer
    /// open leaves the list resumed at start.
    async fn save(
        &self,
        ws: u32,
        dispatch: &Dispatch,
        mut objects: Vec<ObjectWrite>,
        events: Vec<OutboxEvent>,
    ) -> Result<(), MessagingError> {
        objects.extend(dispatch.writes()?);
        self.store.record(ws, objects, events).await?;
        Ok(())
    }

    /// One visit of the audience from `dispatch.next`; answers the earliest time a recipient
    /// left for later (local-time sends) is due.
    async fn pass(
        self: &Arc<Self>,
        ws: &Workspace,
        dispatch: &mut Dispatch,
    ) -> Result<PassEnd, MessagingError> {
        let bitmap = dispatch.bitmap()?;
        let blocks = crate::templates::content_blocks(&self.store, ws.id)?;
        let compiled = Arc::new(Compiled::new(
            &dispatch.messages,
            blocks,
            self.settings.liquid,
        )?);
        let rules = Arc::new(crate::templates::rules(&self.store, ws.id)?);
        let pool = match &dispatch.messages.email {
            Some(_) => self.pool(ws.id)?,
            None => None,
        };
        let http = self.webhook_client(&rules.allowed_hosts)?;
        let base = tracking_base(&self.store, ws.id, &self.settings.public_url);
        let in_doubt_until = dispatch.claimed;
        let mut pending_until: Option<i64> = None;
        let pacer = dispatch.messages_per_minute.map(Pacer::new).map(Arc::new);
        let mut chunk = dispatch.recipients_from(Some(&bitmap), dispatch.next, self.settings.chunk);
        // A chunk's outcomes commit while the next chunk is delivered, so what is claimed runs
        // two chunks ahead of what is settled.
        let ahead = 2 * self.settings.chunk;
        if let Some(claim) = claim_through(dispatch, &bitmap, dispatch.next, ahead)
            && dispatch.claimed < claim
        {
            dispatch.claimed = claim;
            self.save(ws.id, dispatch, Vec::new(), Vec::new()).await?;
        }
        let mut committing: Option<tokio::task::JoinHandle<Result<(), MessagingError>>> = None;
        let mut end = PassEnd::Done;
        let job = Arc::new(Prepare {
            ws: ws.clone(),
            dispatch: dispatch.clone(),
            compiled: compiled.clone(),
            rules: rules.clone(),
            base: base.clone(),
            has_relay: pool.is_some(),
            // Only recipients claimed before this run (or any, for local-time sends visited
            // again) can have an outcome already.
            settled_below: if dispatch.in_local_time {
                u64::MAX
            } else {
                in_doubt_until
            },
            shared: shared_variables(dispatch),
        });
        // The next chunk is prepared (read, rendered) while the current one is delivered.
        let mut preparing = Some(self.spawn_prepare(&job, std::mem::take(&mut chunk)));
        while let Some(current) = preparing.take() {
            let (chunk_end, prepared) = current
                .await
                .map_err(|e| MessagingError::invalid(format!("prepare: {e}")))??;
            if let Some(upcoming_from) = chunk_end {
                let next_chunk =
                    dispatch.recipients_from(Some(&bitmap), upcoming_from, self.settings.chunk);
                if !next_chunk.is_empty() {
                    preparing = Some(self.spawn_prepare(&job, next_chunk));
                }
            }
            let Some(chunk_end) = chunk_end else {
                break;
            };
            let cancelled = self.cancel_requested(ws.id, &dispatch.id)?;
            if self.stopping() || cancelled {
                // Stopping: what was claimed and not delivered is sent after the restart.
                // Cancelled: it is never sent. Either way the chunk being prepared is let
                // finish so that nothing holds the store afterwards.
                if let Some(next) = preparing.take() {
                    let _ = next.await;
                }
                end = if cancelled {
                    PassEnd::Cancelled
                } else {
                    PassEnd::Stopped
                };
                break;
            }
            let mut works = Vec::new();
            for p in prepared {
                match p {
                    Prepared::Settled | Prepared::Gone => {}
                    Prepared::Pending(due) => {
                        pending_until = Some(pending_until.map_or(due, |d: i64| d.min(due)));
                    }
                    Prepared::Ready(work) => works.push(*work),
                }
            }
            let finished: Vec<Finished> =
                futures_util::stream::iter(works.into_iter().map(|work| {
                    let engine = self.clone();
                    let channels = Channels {
                        http: http.clone(),
                        pool: pool.clone(),
                        pacer: pacer.clone(),
                    };
                    let in_doubt = u64::from(work.id) < in_doubt_until;
                    async move { engine.deliver(work, channels, in_doubt).await }
                }))
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            let mut objects = Vec::with_capacity(finished.len());
            let mut events = Vec::new();
            // The longest conversion window of the send: how long a delivered message stays
            // in the index of those that may convert.
            let window_ms = dispatch
                .conversion_events
                .iter()
                .map(|c| c.window_seconds.max(0) * 1000)
                .max();
            for done in finished {
                add_counts(&mut dispatch.counts, &done.counts);
                let name = message_name(done.id, &dispatch.id);
                if let Some(window_ms) = window_ms
                    && reached(&done.history).is_some()
                {
                    let at = done
                        .history
                        .get("at_ms")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    objects.push(ObjectWrite {
                        kind: kinds::CONVERTIBLE.into(),
                        name: name.clone(),
                        value: Some(json!({"until": at.saturating_add(window_ms)})),
                    });
                }
                objects.push(ObjectWrite {
                    kind: kinds::MESSAGE.into(),
                    name,
                    value: Some(Value::Object(done.history)),
                });
                objects.extend(done.extra);
                events.extend(done.events);
            }
            dispatch.next = chunk_end;
            dispatch.starts_without_progress = 0;
            if let Some(claim) = claim_through(dispatch, &bitmap, chunk_end, ahead) {
                dispatch.claimed = dispatch.claimed.max(claim);
            }
            // In order: the previous chunk's commit is durable before this one is sent, so
            // the next chunk is delivered only under a durable claim.
            if let Some(previous) = committing.take() {
                previous
                    .await
                    .map_err(|e| MessagingError::invalid(format!("commit: {e}")))??;
            }
            let (engine, ws_id, snapshot) = (self.clone(), ws.id, dispatch.clone());
            committing = Some(tokio::spawn(async move {
                engine.save(ws_id, &snapshot, objects, events).await
            }));
        }
        if let Some(last) = committing.take() {
            last.await
                .map_err(|e| MessagingError::invalid(format!("commit: {e}")))??;
        }
        if !matches!(end, PassEnd::Done) {
            return Ok(end);
        }
        Ok(match pending_until {
            Some(due) => PassEnd::PendingUntil(due),
            None => PassEnd::Done,
        })
    }

    /// Prepares a chunk on a blocking thread; answers where it ends (none when empty).
    fn spawn_prepare(
        self: &Arc<Self>,
        job: &Arc<Prepare>,
        recipients: Vec<Recipient>,
    ) -> tokio::task::JoinHandle<Result<PreparedChunk, MessagingError>> {
        let engine = self.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            let end = recipients.last().map(|r| u64::from(r.id) + 1);
            let prepared = engine.prepare_chunk(&job, recipients)?;
            Ok((end, prepared))
        })
    }

    /// The SMTP pool of a workspace's relay (made again when the settings change).
    fn pool(&self, ws: u32) -> Result<Option<Arc<Pool>>, MessagingError> {
        let Some(relay) = relay_of(&self.store, ws)? else {
            return Ok(None);
        };
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, pool)) = pools.get(&ws)
            && *known == relay
        {
            return Ok(Some(pool.clone()));
        }
        let helo = self
            .settings
            .public_url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or("localhost")
            .to_string();
        let pool = Arc::new(Pool::new(
            relay.clone(),
            helo,
            self.settings.smtp_connections,
        ));
        pools.insert(ws, (relay, pool.clone()));
        Ok(Some(pool))
    }

    fn host_permits(&self, url: &str) -> Arc<Semaphore> {
        let host = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host)
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.host_concurrency.max(1))))
            .clone()
    }
}

/// How one visit of a dispatch's audience ended.
enum PassEnd {
    /// Every recipient is settled.
    Done,
    /// Some recipients are due later (local time): at this UTC ms.
    PendingUntil(i64),
    /// The engine is shutting down; the dispatch resumes at the next start.
    Stopped,
    /// A cancellation was asked for: nothing more is sent.
    Cancelled,
}

/// A tracked custom event or purchase, checked for conversions.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Who did it.
    pub ident: eddy_model::track::Identifier,
    /// The custom event's name.
    pub event: Option<String>,
    /// The purchased product.
    pub product: Option<String>,
    /// When, UTC ms.
    pub time_ms: i64,
    /// The app it came from.
    pub app_id: Option<String>,
}

struct Found {
    index: usize,
    behaviour: Value,
    channel: Option<&'static str>,
}

/// The channel by which a message record reached its recipient, if one did.
fn reached(record: &Map<String, Value>) -> Option<&'static str> {
    let channels = record.get("channels")?.as_object()?;
    ["email", "webhook"].into_iter().find(|c| {
        let status = channels.get(*c).and_then(|v| v["status"].as_str());
        matches!(status, Some("sent" | "delivered"))
    })
}

/// Whether a behaviour converts a recipient's message record: the message reached them, the
/// record is not converted yet, and a conversion event matches within its window.
fn conversion_of(record: &Map<String, Value>, behaviour: &Behaviour) -> Option<Found> {
    if record.contains_key("converted_at") {
        return None;
    }
    let at = record.get("at_ms")?.as_i64()?;
    let channel = reached(record)?;
    let conversions: Vec<campaign::ConversionEvent> =
        serde_json::from_value(record.get("conversion_events")?.clone()).ok()?;
    for (index, conversion) in conversions.iter().enumerate() {
        let in_window =
            behaviour.time_ms >= at && behaviour.time_ms - at <= conversion.window_seconds * 1000;
        if in_window && conversion.matches(behaviour.event.as_deref(), behaviour.product.as_deref())
        {
            let mut described =
                json!({"type": conversion.braze_type(), "window": conversion.window_seconds});
            if let Some(name) = &conversion.custom_event_name {
                described["custom_event_name"] = json!(name);
            }
            if let Some(product) = &conversion.product {
                described["product"] = json!(product);
            }
            return Some(Found {
                index,
                behaviour: described,
                channel: Some(channel),
            });
        }
    }
    None
}

/// What preparing a chunk needs.
/// What a recipient's delivery goes through: the dispatch's webhook client, its SMTP pool and
/// its pacer.
struct Channels {
    http: reqwest::Client,
    pool: Option<Arc<Pool>>,
    pacer: Option<Arc<Pacer>>,
}

struct Prepare {
    ws: Workspace,
    dispatch: Dispatch,
    compiled: Arc<Compiled>,
    rules: Arc<Rules>,
    base: String,
    has_relay: bool,
    settled_below: u64,
    shared: Vec<(String, LValue)>,
}

/// Variables every recipient of a dispatch shares: its trigger properties, the campaign, and
/// empty Canvas and event properties.
fn shared_variables(dispatch: &Dispatch) -> Vec<(String, LValue)> {
    let mut campaign = Map::new();
    campaign.insert("dispatch_id".into(), json!(dispatch.id));
    if let Some(id) = &dispatch.campaign_id {
        campaign.insert("api_id".into(), json!(id));
    }
    if let Some(name) = &dispatch.campaign_name {
        campaign.insert("name".into(), json!(name));
    }
    if let Some(send_id) = &dispatch.send_id {
        campaign.insert("send_id".into(), json!(send_id));
    }
    let properties = Value::Object(dispatch.trigger_properties.clone());
    vec![
        (
            "api_trigger_properties".into(),
            LValue::from_json(&properties),
        ),
        (
            "campaign".into(),
            LValue::from_json(&Value::Object(campaign)),
        ),
        (
            "canvas_entry_properties".into(),
            LValue::from_json(&json!({})),
        ),
        ("event_properties".into(), LValue::from_json(&json!({}))),
    ]
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

fn add_counts(total: &mut crate::dispatch::Counts, add: &crate::dispatch::Counts) {
    total.sent += add.sent;
    total.aborted += add.aborted;
    total.failed += add.failed;
    total.control += add.control;
    total.skipped += add.skipped;
    total.resent_after_restart += add.resent_after_restart;
    total.cancelled += add.cancelled;
}

/// The id just past the `n` recipients from `from` (none when there are none).
fn claim_through(
    dispatch: &Dispatch,
    bitmap: &roaring::RoaringBitmap,
    from: u64,
    n: usize,
) -> Option<u64> {
    dispatch
        .recipients_from(Some(bitmap), from, n)
        .last()
        .map(|r| u64::from(r.id) + 1)
}

/// Whether a recipient falls in the control group: a stable hash of the campaign (or dispatch)
/// and the user, so one user is in or out for every send of a campaign.
pub fn in_control(key: &str, braze_id: &str, percent: u8) -> bool {
    if percent == 0 {
        return false;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{key}\u{0}{braze_id}").as_bytes());
    (hash % 100) < u64::from(percent)
}

/// The UTC ms at which a wall-clock time (given as if it were UTC) happens in a time zone.
pub fn local_due(naive_ms: i64, time_zone: Option<&str>) -> i64 {
    let Some(tz) = time_zone.and_then(|name| jiff::tz::TimeZone::get(name).ok()) else {
        return naive_ms;
    };
    let Ok(ts) = jiff::Timestamp::from_millisecond(naive_ms) else {
        return naive_ms;
    };
    let civil = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    match civil.to_zoned(tz) {
        Ok(zoned) => zoned.timestamp().as_millisecond(),
        Err(_) => naive_ms,
    }
}

impl Engine {
    fn prepare_chunk(
        &self,
        job: &Prepare,
        recipients: Vec<Recipient>,
    ) -> Result<Vec<Prepared>, MessagingError> {
        let scope = job.ws.id.to_string();
        let fetch = self.liquid_http.scoped(&scope, &job.rules);
        let mut out = Vec::with_capacity(recipients.len());
        let now = eddy_model::time::now_ms();
        for recipient in recipients {
            let name = message_name(recipient.id, &job.dispatch.id);
            if u64::from(recipient.id) < job.settled_below
                && self
                    .store
                    .object(job.ws.id, kinds::MESSAGE, &name)?
                    .is_some()
            {
                out.push(Prepared::Settled);
                continue;
            }
            let Some(profile) = self.store.profile(job.ws.id, recipient.id)? else {
                out.push(Prepared::Gone);
                continue;
            };
            let time_zone = profile.fields.get("time_zone").and_then(Value::as_str);
            if job.dispatch.in_local_time {
                let due = local_due(job.dispatch.send_at, time_zone);
                if due > now {
                    out.push(Prepared::Pending(due));
                    continue;
                }
            }
            // A bug that panics while preparing one recipient ends this run with an error
            // (tried again, then parked), never the process nor a thread the runtime needs.
            let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.prepare_one(job, &recipient, &profile, &fetch, now)
            }));
            let work = match prepared {
                Ok(work) => work?,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(MessagingError::internal(format!(
                        "preparing recipient {} panicked: {what}",
                        recipient.id
                    )));
                }
            };
            out.push(Prepared::Ready(Box::new(work)));
        }
        Ok(out)
    }

    fn prepare_one(
        &self,
        job: &Prepare,
        recipient: &Recipient,
        profile: &Profile,
        fetch: &dyn eddy_liquid::Fetch,
        now: i64,
    ) -> Result<Work, MessagingError> {
        let dispatch = &job.dispatch;
        let context = Context {
            send_id: dispatch.send_id.clone(),
            campaign_id: dispatch.campaign_id.clone(),
            campaign_name: dispatch.campaign_name.clone(),
            ..Context::of(profile, &job.ws.app_group_id, dispatch.id.clone())
        };
        let mut history = Map::new();
        history.insert("dispatch_id".into(), json!(dispatch.id));
        history.insert("at".into(), json!(eddy_model::time::format_iso(now)));
        if let Some(c) = &dispatch.campaign_id {
            history.insert("campaign_id".into(), json!(c));
        }
        if let Some(c) = &dispatch.campaign_name {
            history.insert("campaign_name".into(), json!(c));
        }
        if let Some(s) = &dispatch.send_id {
            history.insert("send_id".into(), json!(s));
        }
        history.insert("at_ms".into(), json!(now));
        if !dispatch.conversion_events.is_empty() {
            history.insert(
                "conversion_events".into(),
                json!(dispatch.conversion_events),
            );
        }
        let mut work = Work {
            ws: job.ws.id,
            id: recipient.id,
            context,
            history,
            events: Vec::new(),
            counts: Default::default(),
            webhook: None,
            email: None,
        };
        let control_key = dispatch.campaign_id.as_deref().unwrap_or(&dispatch.id);
        if in_control(
            control_key,
            &profile.braze_id,
            dispatch.control_group_percent,
        ) {
            work.history.insert("status".into(), json!("control"));
            work.events.push(work.context.event(
                "users.campaigns.EnrollInControl".into(),
                now,
                None,
                Vec::new(),
            ));
            work.counts.control = 1;
            return Ok(work);
        }
        let variables = self.variables(job, recipient.id, recipient, profile);
        let mut channels = Map::new();
        if let Some(message) = &dispatch.messages.webhook {
            let variation = campaign::variation_id(
                dispatch.campaign_id.as_deref(),
                "webhook",
                message.message_variation_id.as_deref(),
            );
            match render_webhook(
                &job.compiled,
                message,
                &variables,
                fetch,
                &job.rules.allowed_hosts,
            ) {
                Ok(request) => {
                    work.webhook = Some(WebhookWork {
                        request,
                        variation,
                        extras: message.extras.clone(),
                    })
                }
                Err(abort) => {
                    channels.insert("webhook".into(), aborted(&abort));
                    work.events.push(abort_event(
                        &work.context,
                        "webhook",
                        variation.as_deref(),
                        &abort,
                        now,
                        None,
                    ));
                    work.counts.aborted += 1;
                }
            }
        }
        if let Some(message) = &dispatch.messages.email {
            let variation = campaign::variation_id(
                dispatch.campaign_id.as_deref(),
                "email",
                message.message_variation_id.as_deref(),
            );
            match self.email_eligibility(job, profile)? {
                Err(reason) => {
                    channels.insert(
                        "email".into(),
                        json!({"status": "skipped", "reason": reason}),
                    );
                    work.counts.skipped += 1;
                }
                Ok(to) => {
                    match self.render_email(job, recipient.id, message, &variables, fetch, &to, now)
                    {
                        Ok((email, subject)) => {
                            channels.insert("email".into(), json!({"to": to, "subject": subject}));
                            work.email = Some(EmailWork {
                                variation,
                                extras: message.extras.clone(),
                                ..email
                            });
                        }
                        Err(abort) => {
                            channels.insert("email".into(), aborted(&abort));
                            work.events.push(abort_event(
                                &work.context,
                                "email",
                                variation.as_deref(),
                                &abort,
                                now,
                                Some(&to),
                            ));
                            work.counts.aborted += 1;
                        }
                    }
                }
            }
        }
        work.history
            .insert("channels".into(), Value::Object(channels));
        Ok(work)
    }

    fn variables(
        &self,
        job: &Prepare,
        profile_id: u32,
        recipient: &Recipient,
        profile: &Profile,
    ) -> Object {
        let mut variables = eddy_liquid::user_variables(&profile.export(None));
        // Braze's subscription links are variables of their own, so that every form reads
        // them: `{{${set_user_to_unsubscribed_url}}}`, with filters, in any field.
        if job.compiled.uses_subscription_links() {
            for (name, state) in SUBSCRIPTION_LINKS {
                let url = self.link(job, profile_id, 's', None, Some(state));
                variables.insert(name.to_string(), LValue::Str(url));
            }
        }
        // What every recipient shares is built once per pass; values share their contents.
        for (name, value) in &job.shared {
            variables.insert(name.clone(), value.clone());
        }
        if let Some(own) = &recipient.trigger_properties {
            let mut properties = job.dispatch.trigger_properties.clone();
            for (k, v) in own {
                properties.insert(k.clone(), v.clone());
            }
            variables.insert(
                "api_trigger_properties".into(),
                LValue::from_json(&Value::Object(properties)),
            );
        }
        variables
    }

    /// A signed link of eddy's for one recipient of this send: an open pixel (`o`), a click
    /// (`c`, to `url`), one-click unsubscribe (`l`) or a subscription change (`s`, to `state`).
    fn link(
        &self,
        job: &Prepare,
        profile_id: u32,
        kind: char,
        url: Option<String>,
        state: Option<&str>,
    ) -> String {
        let token = self.signer.token(&Link {
            w: job.ws.id,
            p: profile_id,
            d: job.dispatch.id.clone(),
            k: kind,
            u: url,
            s: state.map(str::to_string),
        });
        let path = match kind {
            'o' => "o",
            'c' => "c",
            'l' => "l",
            _ => "s",
        };
        format!("{}/eddy/t/{path}/{token}", job.base)
    }

    /// The address to send to, or why not.
    fn email_eligibility(
        &self,
        job: &Prepare,
        profile: &Profile,
    ) -> Result<Result<String, String>, MessagingError> {
        let Some(to) = profile.email() else {
            return Ok(Err("no email address".into()));
        };
        if !job.has_relay {
            return Ok(Err("the workspace has no SMTP relay".into()));
        }
        let address = self
            .store
            .object(job.ws.id, kinds::EMAIL_ADDRESS, to)?
            .filter(Value::is_object);
        // A state set for the address (`/email/status`) before this user had it applies until
        // the user's own state is set.
        let address_state = address
            .as_ref()
            .and_then(|r| r["subscription_state"].as_str());
        let state = match profile
            .fields
            .get("email_subscribe")
            .and_then(Value::as_str)
        {
            Some(own) => own,
            None => address_state.unwrap_or("subscribed"),
        };
        let wanted = job.dispatch.recipient_subscription_state.as_str();
        let eligible = match wanted {
            "all" => true,
            "opted_in" => state == "opted_in",
            _ => state == "opted_in" || state == "subscribed",
        };
        if !eligible {
            return Ok(Err(format!("email state is {state}")));
        }
        if let Some(group) = &job.dispatch.subscription_group_id
            && profile.subscription_groups.get(group).map(String::as_str) != Some("subscribed")
        {
            return Ok(Err(format!("not subscribed to group {group}")));
        }
        if let Some(record) = &address {
            for (field, reason) in [
                ("hard_bounced_at", "the address hard bounced"),
                ("spam_at", "the address marked email as spam"),
                ("blocklisted_at", "the address is blocklisted"),
            ] {
                if !record[field].is_null() {
                    return Ok(Err(reason.into()));
                }
            }
        }
        Ok(Ok(to.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn render_email(
        &self,
        job: &Prepare,
        profile_id: u32,
        message: &campaign::EmailMessage,
        variables: &Object,
        fetch: &dyn eddy_liquid::Fetch,
        to: &str,
        now: i64,
    ) -> Result<(EmailWork, String), Abort> {
        let c = &job.compiled;
        let render = |field: &str| c.render(field, variables, Some(fetch));
        // Addresses rendered from Liquid or profile data are parsed before they are written
        // anywhere: a recipient whose address does not parse is aborted with the reason.
        let mailbox = |field: &str, text: &str| {
            Mailbox::parse(text).map_err(|e| Abort::Error(format!("email {field}: {e}")))
        };
        let from = mailbox("from", &render("email.from")?)?;
        let to = mailbox("to", to)?;
        let subject = render("email.subject")?;
        let body = render("email.body")?;
        let reply_to = match &message.reply_to {
            Some(_) => Some(mailbox("reply_to", &render("email.reply_to")?)?),
            None => None,
        };
        let bcc = match &message.bcc {
            Some(text) => Some(mailbox("bcc", text)?.address),
            None => None,
        };
        let preheader = match &message.preheader {
            Some(_) => render("email.preheader")?,
            None => String::new(),
        };
        let mut headers = Vec::new();
        for name in message.headers.keys() {
            headers.push((name.clone(), render(&format!("email.headers.{name}"))?));
        }
        let link = |kind: char, url: Option<String>, state: Option<&str>| {
            self.link(job, profile_id, kind, url, state)
        };
        let mut html = body;
        // The bare `${…}` form, outside Liquid's braces, is Braze's too.
        for (name, state) in SUBSCRIPTION_LINKS {
            let placeholder = format!("${{{name}}}");
            if html.contains(&placeholder) {
                html = html.replace(&placeholder, &link('s', None, Some(state)));
            }
        }
        let own_prefix = format!("{}/eddy/t/", job.base);
        html = crate::tracking::rewrite_marked_links(&html, c.link_marker(), |url| {
            if url.starts_with(&own_prefix) {
                None
            } else {
                Some(link('c', Some(url.to_string()), None))
            }
        });
        html = mime::with_preheader(&html, &preheader);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            link('o', None, None)
        );
        html = mime::append_to_body(&html, &pixel);
        let mut text = match &message.plaintext_body {
            Some(_) => render("email.plaintext_body")?,
            None => mime::html_to_text(&html),
        };
        for (name, state) in SUBSCRIPTION_LINKS {
            let placeholder = format!("${{{name}}}");
            if text.contains(&placeholder) {
                text = text.replace(&placeholder, &link('s', None, Some(state)));
            }
        }
        let from_address = from.address.clone();
        let domain = from.domain().to_string();
        let to_address = to.address.clone();
        let mail = Mail {
            from,
            to,
            reply_to,
            subject: subject.clone(),
            html,
            text,
            headers,
            message_id: format!("{}.{profile_id}@{domain}", job.dispatch.id),
            list_unsubscribe: Some(link('l', None, Some("unsubscribed"))),
            date_ms: now,
        };
        let boundary = format!("eddy-{}-{profile_id}", job.dispatch.id);
        let data = mime::format(&mail, &boundary);
        Ok((
            EmailWork {
                to: to_address,
                from_address,
                data,
                bcc,
                variation: None,
                extras: None,
            },
            subject,
        ))
    }

    async fn deliver(self: Arc<Self>, mut work: Work, via: Channels, in_doubt: bool) -> Finished {
        let Channels { http, pool, pacer } = via;
        let mut extra = Vec::new();
        let mut channels = match work.history.remove("channels") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut attempted = false;
        if let Some(WebhookWork {
            request,
            variation,
            extras,
        }) = work.webhook.take()
        {
            if let Some(p) = &pacer {
                p.wait().await;
            }
            attempted = true;
            let entry = self
                .deliver_webhook(&http, &mut work, &request, variation.as_deref(), extras)
                .await;
            channels.insert("webhook".into(), entry);
        }
        if let Some(email) = work.email.take() {
            if let Some(p) = &pacer {
                p.wait().await;
            }
            attempted = true;
            let mut entry = match channels.remove("email") {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            let (status, reason, bounced) = match &pool {
                Some(pool) => self.deliver_email(&mut work, pool, &email).await,
                None => (
                    "failed",
                    Some("the workspace has no SMTP relay".to_string()),
                    false,
                ),
            };
            entry.insert("status".into(), json!(status));
            if let Some(reason) = reason {
                entry.insert("reason".into(), json!(reason));
            }
            if bounced {
                extra.push(self.hard_bounce(work.ws, &email.to));
            }
            channels.insert("email".into(), Value::Object(entry));
        }
        if attempted && in_doubt {
            work.counts.resent_after_restart += 1;
            self.stats
                .resent_after_restart
                .fetch_add(1, Ordering::Relaxed);
        }
        if !channels.is_empty() {
            work.history
                .insert("channels".into(), Value::Object(channels));
        }
        self.stats
            .aborted
            .fetch_add(work.counts.aborted, Ordering::Relaxed);
        Finished {
            id: work.id,
            history: work.history,
            events: work.events,
            counts: work.counts,
            extra,
        }
    }

    /// The address record after a hard bounce (merged with what the store has).
    fn hard_bounce(&self, ws: u32, address: &str) -> ObjectWrite {
        let mut record = self
            .store
            .object(ws, kinds::EMAIL_ADDRESS, address)
            .ok()
            .flatten()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        record["hard_bounced_at"] = json!(eddy_model::time::now_ms());
        ObjectWrite {
            kind: kinds::EMAIL_ADDRESS.into(),
            name: address.to_string(),
            value: Some(record),
        }
    }

    async fn deliver_webhook(
        &self,
        http: &reqwest::Client,
        work: &mut Work,
        request: &webhook::Request,
        variation: Option<&str>,
        extras: Option<Map<String, Value>>,
    ) -> Value {
        let permits = self.host_permits(&request.url);
        let attempts = self.settings.attempts.max(1);
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            let attempt = {
                let _permit = permits.acquire().await;
                webhook::send(http, request, self.settings.webhook_timeout).await
            };
            let now = eddy_model::time::now_ms();
            let verdict = attempt.verdict();
            if verdict == Verdict::Sent {
                let extras = extras.map(|e| Value::String(Value::Object(e).to_string()));
                work.events.push(work.context.event(
                    message_type("webhook", "Send"),
                    now,
                    variation,
                    vec![("message_extras", extras.unwrap_or(Value::Null))],
                ));
                work.counts.sent += 1;
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                return json!({"status": "sent", "http_status": attempt.status, "attempts": attempt_no});
            }
            let retry = verdict == Verdict::Retry && attempt_no < attempts;
            let (host, path) = split_url(&request.url);
            if retry {
                work.events.push(work.context.event(
                    message_type("webhook", "Retry"),
                    now,
                    variation,
                    vec![
                        ("retry_type", json!(retry_type(attempt.status))),
                        ("retry_log", json!(attempt.detail)),
                    ],
                ));
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(self.settings.retry_base, attempt_no)).await;
                continue;
            }
            work.events.push(work.context.event(
                message_type("webhook", "Failure"),
                now,
                variation,
                vec![
                    (
                        "http_status_code",
                        attempt.status.map_or(Value::Null, |s| json!(s)),
                    ),
                    ("endpoint_url", json!(request.url)),
                    ("host", json!(host)),
                    ("url_path", json!(path)),
                    ("raw_response", json!(attempt.detail)),
                    ("retry_count", json!(attempt_no - 1)),
                    (
                        "webhook_duration",
                        json!(attempt.duration.as_millis() as i64),
                    ),
                    (
                        "webhook_failure_source",
                        json!(if attempt.status.is_some() {
                            "http"
                        } else {
                            "network"
                        }),
                    ),
                    ("is_terminal", json!(true)),
                ],
            ));
            work.counts.failed += 1;
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return json!({"status": "failed", "http_status": attempt.status, "attempts": attempt_no,
                          "reason": attempt.detail});
        }
    }

    /// Answers (status, reason, hard bounced).
    async fn deliver_email(
        &self,
        work: &mut Work,
        pool: &Pool,
        email: &EmailWork,
    ) -> (&'static str, Option<String>, bool) {
        let variation = email.variation.as_deref();
        let domain_of = |address: &str| address.rsplit_once('@').map(|(_, d)| d.to_string());
        let from_domain = domain_of(&email.from_address);
        let recipient_domain = domain_of(&email.to);
        let extras = email
            .extras
            .clone()
            .map(|e| Value::String(Value::Object(e).to_string()));
        let address = json!(email.to);
        work.email_event(
            "Send",
            eddy_model::time::now_ms(),
            variation,
            &address,
            vec![
                ("message_extras", extras.unwrap_or(Value::Null)),
                ("from_domain", json!(from_domain)),
            ],
        );
        let mut recipients = vec![email.to.as_str()];
        if let Some(bcc) = &email.bcc {
            recipients.push(bcc);
        }
        let attempts = self.settings.attempts.max(1);
        let mut attempt_no = 0;
        loop {
            attempt_no += 1;
            let result = pool
                .send(&email.from_address, &recipients, &email.data)
                .await;
            let now = eddy_model::time::now_ms();
            let reason = match result {
                Ok(Reply::Accepted(_)) => {
                    work.email_event(
                        "Delivery",
                        now,
                        variation,
                        &address,
                        vec![("from_domain", json!(from_domain))],
                    );
                    work.counts.sent += 1;
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    return ("delivered", None, false);
                }
                Ok(Reply::Rejected(text)) => {
                    work.email_event(
                        "Bounce",
                        now,
                        variation,
                        &address,
                        vec![("bounce_reason", json!(text))],
                    );
                    work.counts.failed += 1;
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    return ("bounced", Some(text), true);
                }
                Ok(Reply::Deferred(text)) => text,
                Err(e) => e.0,
            };
            work.email_event(
                "Deferral",
                now,
                variation,
                &address,
                vec![
                    ("deferral_reason", json!(reason)),
                    ("attempt_count", json!(attempt_no)),
                    ("recipient_domain", json!(recipient_domain)),
                ],
            );
            if attempt_no < attempts {
                work.email_event(
                    "Retry",
                    now,
                    variation,
                    &address,
                    vec![
                        ("retry_type", json!("soft_bounce")),
                        ("retry_log", json!(reason)),
                    ],
                );
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(self.settings.retry_base, attempt_no)).await;
                continue;
            }
            work.email_event(
                "SoftBounce",
                now,
                variation,
                &address,
                vec![("bounce_reason", json!(reason))],
            );
            work.counts.failed += 1;
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return ("soft_bounced", Some(reason), false);
        }
    }
}

fn retry_type(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("http_{s}"),
        None => "network".into(),
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".into()),
    }
}

/// The delay before attempt `n + 1`: the base doubled per attempt, capped at ten minutes.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(600))
}

fn aborted(abort: &Abort) -> Value {
    match abort {
        Abort::Aborted(reason) => json!({"status": "aborted", "reason": reason}),
        Abort::Error(message) => json!({"status": "aborted", "reason": message}),
    }
}

fn abort_event(
    context: &Context,
    channel: &str,
    variation: Option<&str>,
    abort: &Abort,
    now: i64,
    address: Option<&str>,
) -> OutboxEvent {
    let (abort_type, log) = match abort {
        Abort::Aborted(reason) => ("liquid_abort_message", reason.as_str()),
        Abort::Error(message) => ("liquid_error", message.as_str()),
    };
    context.event(
        message_type(channel, "Abort"),
        now,
        variation,
        vec![
            ("abort_type", json!(abort_type)),
            ("abort_log", json!(log)),
            ("email_address", json!(address)),
        ],
    )
}

fn render_webhook(
    compiled: &Compiled,
    message: &campaign::WebhookMessage,
    variables: &Object,
    fetch: &dyn eddy_liquid::Fetch,
    allowed: &eddy_net::AllowedHosts,
) -> Result<webhook::Request, Abort> {
    let url = compiled.render("webhook.url", variables, Some(fetch))?;
    let url = url.trim().to_string();
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Abort::Error(format!("'{url}' is not an http(s) URL: {e}")))?;
    // A name is checked again once resolved, by the client's resolver.
    eddy_net::Policy::Workspace(allowed.clone())
        .check_url(&parsed, false)
        .map_err(|refused| Abort::Error(format!("webhook url: {refused}")))?;
    let body = match &message.body {
        Some(_) => Some(compiled.render("webhook.body", variables, Some(fetch))?),
        None => None,
    };
    let mut headers = Vec::new();
    for name in message.request_headers.keys() {
        let value = compiled.render(
            &format!("webhook.request_headers.{name}"),
            variables,
            Some(fetch),
        )?;
        headers.push((name.clone(), value));
    }
    Ok(webhook::Request {
        method: message.request_method.to_ascii_uppercase(),
        url,
        headers,
        body,
    })
}

/// Spaces deliveries of one dispatch to `messages_per_minute`.
pub struct Pacer {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A pacer for a rate per minute.
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(60) / per_minute.max(1),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_groups_are_stable_and_near_their_share() {
        let n = (0..10_000)
            .filter(|i| in_control("camp", &format!("user{i}"), 20))
            .count();
        assert!((1_700..2_300).contains(&n), "{n}");
        assert_eq!(in_control("camp", "u", 20), in_control("camp", "u", 20));
        assert!(!in_control("camp", "u", 0));
        assert!(in_control("camp", "u", 100));
    }

    #[test]
    fn local_time_is_the_wall_clock_of_the_zone() {
        // 2026-12-01 09:00 as a wall-clock time.
        let naive = jiff::civil::date(2026, 12, 1)
            .at(9, 0, 0, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond();
        assert_eq!(local_due(naive, None), naive);
        assert_eq!(local_due(naive, Some("Europe/Paris")), naive - 3_600_000);
        assert_eq!(
            local_due(naive, Some("America/New_York")),
            naive + 5 * 3_600_000
        );
        assert_eq!(local_due(naive, Some("Not/AZone")), naive);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, 40), Duration::from_secs(600));
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("https://h.test:8/a/b?c"),
            ("h.test:8".into(), "/a/b?c".into())
        );
        assert_eq!(split_url("http://h.test"), ("h.test".into(), "/".into()));
    }
}
