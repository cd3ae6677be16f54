//! eddy's HTTP surface, a folder per surface; this file only assembles them.
//!
//! - [`http`]: what every surface shares: the accept loop ([`connections`]), extractors that
//!   authenticate and parse once ([`extract`]), the one table from domain errors to HTTP answers,
//!   rate limits ([`ratelimit`]), wrong admin tokens throttled ([`throttle`]), the request log
//!   and the dashboard's API log ([`request_log`], [`api_log`]), `/metrics` ([`metrics`]).
//! - [`braze`]: Braze's REST surface: [`users`], [`segments`] and [`segment_export`] (written
//!   by [`export_files`]), [`partners`] (cohort import), [`messaging`] (sends, schedules,
//!   campaigns and dispatches), [`subscriptions`], [`tracking`] (the links in emails), and the
//!   endpoints eddy answers 501.
//! - [`admin`]: `/eddy/v1` workspaces, keys, partners, usage; [`currents`] connectors,
//!   [`liquid`] rendering and Connected Content, [`profiles`] (stored users).
//! - [`dashboard`]: the pages under `/dashboard`, which read and act only by calling the admin
//!   API's routes in process.
//!
//! Around them: [`config`] (typed settings, the store to open) and [`cluster`] (on a store
//! several nodes share: the leader lease that connectors and dispatches follow).
//! [`App::build`] opens the store and prepares the router; [`App::serve`] runs it until a
//! shutdown signal, finishes in-flight requests and stops the writer after its last commit.

pub mod admin;
pub mod braze;
pub mod cluster;
pub mod config;
pub mod dashboard;
mod datadir;
pub mod http;

// Each surface keeps its files in its folder; their short paths stay what they were.
pub use admin::{currents, liquid, profiles};
use braze::unimplemented;
pub use braze::{
    canvas, catalogs, export_files, messaging, partners, segment_export, segments, subscriptions,
    templates, tracking, users,
};
pub use http::{api_log, connections, extract, metrics, ratelimit, request_log, throttle};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use eddy_model::ApiError;
use eddy_model::profile::Limits;
use eddy_store::{Store, StoreOptions, ids};
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tower_http::decompression::RequestDecompressionLayer;

pub use config::Config;
use http::HttpError;
use metrics::Metrics;
use ratelimit::{RateLimiter, group_of};

/// Everything a handler needs.
pub struct AppState {
    /// The store.
    pub store: Store,
    /// SHA-256 of the admin token.
    pub admin_token_hash: String,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// Where segment exports are written.
    pub export_dir: std::path::PathBuf,
    /// The Currents connectors.
    pub currents: Arc<eddy_currents::Currents>,
    /// Whether every request gets a log line.
    pub log_requests: bool,
    /// Segment exports of this process and their state.
    pub exports: segment_export::Exports,
    /// Connected Content's HTTP client and cache.
    pub liquid_http: Arc<eddy_liquid::http::HttpClient>,
    /// Wrong admin tokens per client address (admin API and dashboard sign-in).
    pub auth_throttle: throttle::AuthThrottle,
    /// Bounds of every render the server runs (`[liquid]`).
    pub liquid_limits: eddy_liquid::Limits,
    /// The delivery engine.
    pub engine: Arc<eddy_messaging::engine::Engine>,
    /// The last requests of each workspace, for the dashboard.
    pub api_log: api_log::ApiLog,
    /// Dashboard sign-ins: the key that signs session cookies, and sign-outs.
    pub sessions: dashboard::session::Sessions,
    /// On a shared store: whether this node holds the leader lease.
    pub leading: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The client that carries to the leader what only the leader does.
    pub peers: reqwest::Client,
}

/// The state as handlers hold it.
pub type SharedState = Arc<AppState>;

/// A built server: its router and store.
pub struct App {
    /// The router with every route and layer.
    pub router: Router,
    /// The store (for shutdown).
    pub store: Store,
    /// The Currents connectors (flushed at shutdown).
    pub currents: Arc<eddy_currents::Currents>,
    /// The delivery engine (stopped at shutdown, before the store).
    pub engine: Arc<eddy_messaging::engine::Engine>,
    /// Where the admin token was written, when it was generated.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Request and connection counters, shared with the accept loop.
    pub metrics: Arc<Metrics>,
    /// Timeouts and the connection cap.
    pub limits: connections::ConnectionLimits,
    /// How long connectors may take to flush at shutdown, all together.
    pub shutdown_deadline: std::time::Duration,
    /// On a shared store: this node's leader lease loop.
    pub node: Option<cluster::Node>,
}

/// Errors while starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] eddy_store::StoreError),
    /// A file could not be written or read.
    #[error("{0}")]
    Io(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Stored credentials cannot be opened, or the key cannot be read or made.
    #[error("secrets: {0}")]
    Secrets(String),
    /// Another process serves the same data directory.
    #[error("another eddy holds {}; stop it, or choose another --data-dir (or --store)", .0.display())]
    Locked(std::path::PathBuf),
}

impl App {
    /// Opens the store, makes sure the `default` workspace and an admin token exist, and builds the router.
    pub async fn build(config: &Config) -> Result<App, StartError> {
        config.validate().map_err(StartError::Config)?;
        if config.outbound_loopback_only {
            eddy_net::restrict_to_loopback();
        }
        let limiter = RateLimiter::new(&config.rate_limits).map_err(StartError::Config)?;
        datadir::private_umask();
        let tightened = datadir::secure(&config.data_dir).map_err(|e| {
            StartError::Io(format!("cannot prepare {}: {e}", config.data_dir.display()))
        })?;
        if tightened > 0 {
            tracing::warn!(
                entries = tightened,
                data_dir = %config.data_dir.display(),
                "data directory entries were readable by other users; now private (0700/0600)"
            );
        }
        let options = StoreOptions {
            cache_bytes: config.cache_mib * 1024 * 1024,
            limits: Limits {
                max_array_len: config.max_array_length,
            },
            sealer: Some(sealer(config)?),
            index_snapshot: Some(config.data_dir.join("index.snapshot")),
            cache_profiles: config.store.writer_cache_profiles,
            ..StoreOptions::default()
        };
        let store = match open_store(config, options).await {
            Ok(store) => store,
            Err(eddy_store::StoreError::Locked(where_)) => {
                return Err(StartError::Locked(match config.store.kind.as_str() {
                    "postgres" => where_,
                    _ => config.data_dir.clone(),
                }));
            }
            Err(e) => return Err(e.into()),
        };
        if store.workspace("default")?.is_none() && store.workspaces()?.is_empty() {
            match store.create_workspace("default").await {
                // Another node sharing the store made it first.
                Ok(_) | Err(eddy_store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A workspace deleted while its data was being purged is finished off in the background.
        let purging = store.clone();
        tokio::spawn(async move {
            if let Err(e) = purging.purge_deleted().await {
                tracing::error!(error = %e, "cannot purge the data of deleted workspaces");
            }
        });
        let resealed = store
            .reseal_secrets()
            .await
            .map_err(|e| StartError::Secrets(e.to_string()))?;
        if resealed > 0 {
            tracing::info!(
                records = resealed,
                "stored credentials encrypted with the current secrets key"
            );
        }
        let (token, admin_token_file) = match &config.admin_token {
            Some(token) if !token.is_empty() => (token.clone(), None),
            _ => {
                let path = config.data_dir.join("admin-token");
                (admin_token_from_file(&path)?, Some(path))
            }
        };
        let retention = std::time::Duration::from_secs(config.outbox_retention_hours * 3600);
        let currents = eddy_currents::Currents::start(store.clone(), retention)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let metrics = Arc::new(Metrics::default());
        let liquid_http = liquid::http_client().map_err(StartError::Config)?;
        let m = &config.messaging;
        let settings = eddy_messaging::engine::Settings {
            public_url: m
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.listen)),
            concurrency: m.concurrency,
            host_concurrency: m.host_concurrency,
            smtp_connections: m.smtp_connections,
            attempts: m.attempts,
            retry_base: std::time::Duration::from_millis(m.retry_base_ms),
            webhook_timeout: std::time::Duration::from_secs(m.webhook_timeout_seconds),
            chunk: m.chunk,
            liquid: config.liquid.limits(),
            history: std::time::Duration::from_secs(m.history_days.saturating_mul(86_400)),
        };
        let engine =
            eddy_messaging::engine::Engine::start(store.clone(), settings, liquid_http.clone())
                .await
                .map_err(|e| StartError::Config(format!("messaging: {e}")))?;
        let node = cluster::Node::start(
            &store,
            config.store.advertised(config.listen),
            currents.clone(),
            engine.clone(),
        );
        if node.is_some()
            && config.store.advertise_url.is_none()
            && config.listen.ip().is_unspecified()
        {
            tracing::warn!(
                listen = %config.listen,
                "other nodes cannot reach this one at its listen address; set [store] advertise_url so that they can carry connector actions to it when it leads"
            );
        }
        let state = Arc::new(AppState {
            leading: node.as_ref().map(|n| n.leading.clone()),
            peers: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .no_proxy()
                .build()
                .map_err(|e| StartError::Config(format!("the client for other nodes: {e}")))?,
            store: store.clone(),
            admin_token_hash: ids::sha256_hex(&token),
            limiter: limiter.share_through(&store),
            metrics: metrics.clone(),
            export_dir: config
                .export_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("exports")),
            currents: currents.clone(),
            log_requests: config.log_requests,
            exports: segment_export::Exports::default(),
            liquid_http,
            liquid_limits: config.liquid.limits(),
            auth_throttle: throttle::AuthThrottle::default(),
            engine: engine.clone(),
            api_log: api_log::ApiLog::new(
                config.dashboard.api_log_entries,
                config.dashboard.api_log_body_bytes,
            ),
            sessions: dashboard::session::Sessions::new(
                &token,
                std::time::Duration::from_secs(config.dashboard.session_seconds),
            )
            .remembered_in(store.clone())
            .secure(
                config
                    .messaging
                    .public_url
                    .as_deref()
                    .is_some_and(|url| url.starts_with("https://")),
            ),
        });
        Ok(App {
            router: router(state, config.max_body_bytes),
            store,
            currents,
            engine,
            admin_token_file,
            metrics,
            limits: connections::ConnectionLimits {
                header_read_timeout: std::time::Duration::from_secs(
                    config.header_read_timeout_seconds,
                ),
                idle_timeout: std::time::Duration::from_secs(config.idle_timeout_seconds),
                max_connections: config.max_connections,
            },
            shutdown_deadline: std::time::Duration::from_secs(config.shutdown_timeout_seconds),
            node,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains and stops the writer.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        connections::serve(listener, self.router, self.limits, self.metrics, shutdown).await?;
        if let Some(node) = self.node {
            node.stop().await;
        }
        // What connectors buffered is also in the outbox; flushing only spares the next start a re-read.
        self.currents.shutdown(self.shutdown_deadline).await;
        self.engine.shutdown(self.shutdown_deadline).await;
        // Another node takes over at its next tick rather than when this process ends.
        let resigning = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || resigning.resign()).await;
        self.store.close().await;
        Ok(())
    }
}

/// The store the configuration names: embedded under the data directory, or PostgreSQL.
async fn open_store(
    config: &Config,
    options: StoreOptions,
) -> Result<Store, eddy_store::StoreError> {
    match (config.store.kind.as_str(), &config.store.url) {
        ("postgres", Some(url)) => {
            let (url, connections) = (url.clone(), config.store.connections);
            // The synchronous client runs a runtime of its own: connect off this one.
            tokio::task::spawn_blocking(move || Store::open_postgres(&url, connections, options))
                .await
                .map_err(|e| eddy_store::StoreError::Backend(e.to_string()))?
        }
        _ => Store::open(&config.data_dir.join("store"), options),
    }
}

/// The key that encrypts stored credentials: `secrets_key` (from `EDDY_SECRETS_KEY`), else the
/// key file (created when missing), with the previous key while rotating.
fn sealer(config: &Config) -> Result<eddy_store::secrets::Sealer, StartError> {
    use eddy_store::secrets::{Sealer, SecretKey};
    let secrets = |e: eddy_store::StoreError| StartError::Secrets(e.to_string());
    let current = match &config.secrets_key {
        Some(hex) => SecretKey::from_hex(hex).map_err(secrets)?,
        None => {
            let path = config
                .secrets_key_file
                .clone()
                .unwrap_or_else(|| datadir::default_key_file(&config.data_dir));
            let (key, created) = SecretKey::load_or_create(&path).map_err(secrets)?;
            if created {
                tracing::warn!(path = %path.display(), "created the key that encrypts stored credentials; back it up apart from the data directory");
            }
            key
        }
    };
    let previous = match &config.previous_secrets_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| StartError::Secrets(format!("cannot read {}: {e}", path.display())))?;
            Some(SecretKey::from_hex(&text).map_err(secrets)?)
        }
        None => None,
    };
    Ok(Sealer::new(current, previous))
}

/// Reads the generated admin token, or generates one (mode 0600).
fn admin_token_from_file(path: &Path) -> Result<String, StartError> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let token = existing.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = ids::secret_hex(32).map_err(|e| StartError::Io(e.to_string()))?;
    write_private(path, &token)
        .map_err(|e| StartError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Every route: the API, and the dashboard (which calls the API routes in process), behind
/// the edge middleware.
fn router(state: SharedState, max_body_bytes: usize) -> Router {
    let api = api_routes(state.clone());
    api.clone()
        .merge(dashboard::routes(state.clone(), api))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn_with_state(state, edge))
}

/// The HTTP API: Braze's endpoints, the admin API, tracking links, health and metrics.
fn api_routes(state: SharedState) -> Router {
    Router::new()
        .route("/users/track", post(users::track))
        .route("/users/identify", post(users::identify))
        .route("/users/alias/new", post(users::alias_new))
        .route("/users/alias/update", post(users::alias_update))
        .route(
            "/users/external_ids/rename",
            post(users::rename_external_ids),
        )
        .route(
            "/users/external_ids/remove",
            post(users::remove_external_ids),
        )
        .route("/users/delete", post(users::delete))
        .route("/canvas/trigger/send", post(canvas::trigger_send))
        .route(
            "/canvas/trigger/schedule/create",
            post(canvas::schedule_create),
        )
        .route(
            "/canvas/trigger/schedule/update",
            post(canvas::schedule_update),
        )
        .route(
            "/canvas/trigger/schedule/delete",
            post(canvas::schedule_delete),
        )
        .route("/canvas/list", get(canvas::list))
        .route("/canvas/details", get(canvas::details))
        .route("/canvas/data_series", get(canvas::data_series))
        .route("/canvas/data_summary", get(canvas::data_summary))
        .route("/catalogs", get(catalogs::list).post(catalogs::create))
        .route("/catalogs/{catalog}", delete(catalogs::delete))
        .route("/catalogs/{catalog}/fields", post(catalogs::add_fields))
        .route(
            "/catalogs/{catalog}/fields/{field}",
            delete(catalogs::delete_field),
        )
        .route(
            "/catalogs/{catalog}/items",
            get(catalogs::list_items)
                .post(catalogs::add_items)
                .put(catalogs::replace_items)
                .patch(catalogs::update_items)
                .delete(catalogs::delete_items),
        )
        .route(
            "/catalogs/{catalog}/items/{item}",
            get(catalogs::get_item)
                .post(catalogs::create_item)
                .put(catalogs::replace_item)
                .patch(catalogs::update_item)
                .delete(catalogs::delete_item),
        )
        .route("/content_blocks/create", post(templates::create_block))
        .route("/content_blocks/update", post(templates::update_block))
        .route("/content_blocks/list", get(templates::list_blocks))
        .route("/content_blocks/info", get(templates::block_info))
        .route(
            "/templates/email/create",
            post(templates::create_email_template),
        )
        .route(
            "/templates/email/update",
            post(templates::update_email_template),
        )
        .route(
            "/templates/email/list",
            get(templates::list_email_templates),
        )
        .route("/templates/email/info", get(templates::email_template_info))
        .route("/users/merge", post(users::merge))
        .route("/users/export/ids", post(users::export_ids))
        .route("/users/export/segment", post(segment_export::export))
        .route("/segments/list", get(segments::list))
        .route("/segments/details", get(segments::details))
        .route("/partners/{partner}/cohorts", post(partners::cohorts))
        .route(
            "/partners/{partner}/cohorts/users",
            post(partners::cohort_users),
        )
        .route("/eddy/v1/partners", get(admin::list_partners))
        .route(
            "/eddy/v1/partners/{partner}",
            put(admin::put_partner)
                .get(admin::get_partner)
                .delete(admin::delete_partner),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/partners/{partner}/data-import-key",
            post(admin::create_data_import_key)
                .get(admin::get_data_import_key)
                .delete(admin::delete_data_import_key),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/export-storage",
            put(admin::put_export_storage)
                .get(admin::get_export_storage)
                .delete(admin::delete_export_storage),
        )
        .route("/currents/events", post(currents::events))
        .route(
            "/eddy/v1/workspaces/{ws}/currents",
            post(currents::create).get(currents::list),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}",
            get(currents::get)
                .put(currents::update)
                .delete(currents::delete),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}/flush",
            post(currents::flush),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}/pause",
            post(currents::pause),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}/resume",
            post(currents::resume),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}/test",
            post(currents::test),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/currents/{name}/replay",
            post(currents::replay),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/segments",
            post(segments::create).get(segments::list_admin),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/segments/{id}/export",
            post(segment_export::export_admin),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/segments/size",
            post(segments::preview_size),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/segments/{id}",
            get(segments::get)
                .put(segments::update)
                .delete(segments::delete),
        )
        .route(
            "/eddy/v1/workspaces",
            post(admin::create_workspace).get(admin::list_workspaces),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/api-keys/{id}",
            delete(admin::delete_api_key).get(admin::get_api_key),
        )
        .route(
            "/eddy/v1/workspaces/{ws}",
            get(admin::get_workspace)
                .patch(admin::rename_workspace)
                .put(admin::rename_workspace)
                .delete(admin::delete_workspace),
        )
        .route("/eddy/v1/workspaces/{ws}/users", get(profiles::list))
        .route(
            "/eddy/v1/workspaces/{ws}/liquid/render",
            post(liquid::render),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/content-blocks",
            get(liquid::list_content_blocks),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/content-blocks/{name}",
            get(liquid::get_content_block)
                .put(liquid::put_content_block)
                .delete(liquid::delete_content_block),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/connected-content",
            get(liquid::get_connected_content).put(liquid::put_connected_content),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/connected-content/credentials/{name}",
            put(liquid::put_credential).delete(liquid::delete_credential),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/exports/{id}",
            get(segment_export::status),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/users/{braze_id}",
            get(profiles::get).delete(profiles::delete),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/users/{braze_id}/events",
            get(profiles::events),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/users/merge",
            post(profiles::merge),
        )
        .route("/eddy/v1/workspaces/{ws}/cohorts", get(admin::list_cohorts))
        .route("/eddy/v1/workspaces/{ws}/usage", get(admin::usage))
        .route("/messages/send", post(messaging::messages_send))
        .route(
            "/messages/schedule/create",
            post(messaging::messages_schedule_create),
        )
        .route(
            "/messages/schedule/update",
            post(messaging::schedule_update::<extract::MessagesScheduleUpdate>),
        )
        .route(
            "/messages/schedule/delete",
            post(messaging::schedule_delete::<extract::MessagesScheduleDelete>),
        )
        .route(
            "/messages/scheduled_broadcasts",
            get(messaging::scheduled_broadcasts),
        )
        .route("/campaigns/trigger/send", post(messaging::trigger_send))
        .route(
            "/campaigns/trigger/schedule/create",
            post(messaging::trigger_schedule_create),
        )
        .route(
            "/campaigns/trigger/schedule/update",
            post(messaging::schedule_update::<extract::CampaignsTriggerScheduleUpdate>),
        )
        .route(
            "/campaigns/trigger/schedule/delete",
            post(messaging::schedule_delete::<extract::CampaignsTriggerScheduleDelete>),
        )
        .route(
            "/transactional/v1/campaigns/{campaign_id}/send",
            post(messaging::transactional_send),
        )
        .route("/sends/id/create", post(messaging::sends_id_create))
        .route("/campaigns/list", get(messaging::campaigns_list))
        .route("/campaigns/details", get(messaging::campaigns_details))
        .route("/subscription/status/set", post(subscriptions::status_set))
        .route(
            "/v2/subscription/status/set",
            post(subscriptions::status_set_v2),
        )
        .route("/subscription/status/get", get(subscriptions::status_get))
        .route("/subscription/user/status", get(subscriptions::user_status))
        .route("/email/status", post(subscriptions::email_status))
        .route("/email/hard_bounces", get(subscriptions::hard_bounces))
        .route("/email/unsubscribes", get(subscriptions::unsubscribes))
        .route("/email/bounce/remove", post(subscriptions::bounce_remove))
        .route("/email/spam/remove", post(subscriptions::spam_remove))
        .route("/email/blocklist", post(subscriptions::blocklist))
        .route("/email/blacklist", post(subscriptions::blocklist))
        .route(
            "/eddy/v1/workspaces/{ws}/campaigns",
            get(messaging::list_campaigns).post(messaging::create_campaign),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/catalogs",
            get(catalogs::admin_list),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/catalogs/{name}/items",
            get(catalogs::admin_items),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/canvases",
            get(canvas::list_canvases).post(canvas::create_canvas),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/canvases/{id}",
            get(canvas::get_canvas)
                .put(canvas::put_canvas)
                .delete(canvas::delete_canvas),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/campaigns/{id}/test-send",
            post(messaging::test_send),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/campaigns/{id}",
            get(messaging::get_campaign)
                .put(messaging::put_campaign)
                .delete(messaging::delete_campaign),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/dispatches",
            get(messaging::list_dispatches),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/dispatches/{id}",
            get(messaging::get_dispatch),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/dispatches/{id}/cancel",
            post(messaging::cancel_dispatch),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/email",
            get(messaging::get_email)
                .put(messaging::put_email)
                .delete(messaging::delete_email),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/users/messages",
            get(messaging::user_messages),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/subscription-groups",
            get(subscriptions::list_groups),
        )
        .route(
            "/eddy/v1/workspaces/{ws}/subscription-groups/{id}",
            put(subscriptions::put_group).delete(subscriptions::delete_group),
        )
        .route("/eddy/t/o/{token}", get(tracking::open))
        .route("/eddy/t/c/{token}", get(tracking::click))
        .route("/eddy/t/s/{token}", get(tracking::subscription))
        .route(
            "/eddy/t/l/{token}",
            get(tracking::list_unsubscribe_page).post(tracking::list_unsubscribe),
        )
        // A person who opens eddy's address in a browser lands on the dashboard's sign-in.
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/dashboard") }),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn health() -> Response {
    http::json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness: 200 while writes can commit, 503 otherwise (a full disk, a failed store).
async fn ready(State(state): State<SharedState>) -> Response {
    if state.store.ready().await {
        http::json_response(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        http::json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "message": "writes cannot commit now; see the log"}),
        )
    }
}

async fn metrics_text(State(state): State<SharedState>) -> Response {
    // Connectors are labelled by workspace name, as operators know them.
    let names: std::collections::HashMap<u32, String> = state
        .store
        .workspaces()
        .unwrap_or_default()
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let connectors: Vec<(String, eddy_currents::ConnectorMetrics)> = state
        .currents
        .metrics()
        .into_iter()
        .map(|c| {
            (
                names
                    .get(&c.ws)
                    .cloned()
                    .unwrap_or_else(|| c.ws.to_string()),
                c,
            )
        })
        .collect();
    let mut text = state.metrics.render(
        state.store.stats(),
        state.store.queue_depth(),
        &connectors,
        state.exports.figures(),
    );
    text.push_str(&state.engine.stats.render(state.engine.active()));
    if let Ok(index_bytes) = segments::with_index(&state, |index| index.heap_bytes()).await {
        text.push_str(&format!(
            "# HELP eddy_segment_index_bytes Approximate heap bytes of the segment index (by capacity).\n# TYPE eddy_segment_index_bytes gauge\neddy_segment_index_bytes {index_bytes}\n"
        ));
    }
    let start = state.store.index_start();
    text.push_str(&format!(
        "# HELP eddy_segment_index_start_seconds Time to make the segment index at start.\n# TYPE eddy_segment_index_start_seconds gauge\neddy_segment_index_start_seconds {:.3}\n# HELP eddy_segment_index_from_snapshot 1 when the index was loaded from the snapshot of the last clean shutdown, 0 when rebuilt from the profiles.\n# TYPE eddy_segment_index_from_snapshot gauge\neddy_segment_index_from_snapshot {}\n",
        start.seconds,
        u8::from(start.from_snapshot)
    ));
    if let (Some(leading), Some((applied, lag))) = (&state.leading, state.store.change_feed()) {
        text.push_str(&format!(
            "# HELP eddy_cluster_leader 1 while this node holds the leader lease (it runs connectors and dispatches).
# TYPE eddy_cluster_leader gauge
eddy_cluster_leader {}
# HELP eddy_change_feed_applied_total Commits of other nodes applied to this node's segment index.
# TYPE eddy_change_feed_applied_total counter
eddy_change_feed_applied_total {applied}
# HELP eddy_change_feed_lag_seconds Age of the last applied commit of another node when this node applied it.
# TYPE eddy_change_feed_lag_seconds gauge
eddy_change_feed_lag_seconds {lag:.3}
",
            u8::from(leading.load(Ordering::Relaxed)),
        ));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}

/// Marks an answer the router's fallbacks gave (no route, or a route without the method), so
/// that `/metrics` counts them apart from the endpoint groups.
#[derive(Clone, Copy)]
struct Unmatched;

/// No route: a Braze endpoint eddy lacks is named as such (501), anything else is Braze's 404.
async fn not_found(
    State(state): State<SharedState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    if uri.path() == "/dashboard" || uri.path().starts_with("/dashboard/") {
        return dashboard::unknown(&state, &headers);
    }
    let mut response = match unimplemented::braze_endpoint(method.as_str(), uri.path()) {
        Some(endpoint) => HttpError(ApiError::NotImplemented(endpoint)).into_response(),
        None => HttpError(ApiError::NotFound).into_response(),
    };
    response.extensions_mut().insert(Unmatched);
    response
}

/// A route without the request's method: 405 JSON (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut response = HttpError(ApiError::MethodNotAllowed(format!(
        "{method} {}",
        uri.path()
    )))
    .into_response();
    response.extensions_mut().insert(Unmatched);
    response
}

/// Applies the rate limit of the request's group, then sets `X-RateLimit-*` on the answer and
/// counts it, whatever the handler answered.
async fn edge(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let group = group_of(req.uri().path());
    let log = Arc::new(request_log::RequestLog::default());
    req.extensions_mut().insert(log.clone());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // Only the API log shows query strings; other requests skip the copy.
    let query = state
        .api_log
        .enabled()
        .then(|| req.uri().query().map(str::to_string))
        .flatten();
    let caller = caller_of(&req);
    // The Authorization header (a reference-counted copy), so that an answer refused before
    // any handler knew the key (a 403, 404, 413, 429, 501) is still logged in its workspace,
    // under the key's name; the key itself is read only for such answers.
    let authorization = state
        .api_log
        .enabled()
        .then(|| {
            req.headers()
                .get(axum::http::header::AUTHORIZATION)
                .cloned()
        })
        .flatten();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let decision = state.limiter.decide(caller, group, now).await;
    let mut response = if decision.allowed {
        match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                // A bug, never an input's fault: answer, count, and keep the connection.
                state.metrics.handler_panics.fetch_add(1, Ordering::Relaxed);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%method, %path, panic = %message, "handler panicked");
                HttpError(ApiError::Internal).into_response()
            }
        }
    } else {
        HttpError(ApiError::RateLimited).into_response()
    };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(decision.reset));
    let group = if response.extensions().get::<Unmatched>().is_some() {
        "unmatched"
    } else {
        group
    };
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.record(group, status, took);
    if state.log_requests {
        log.emit(&method, &path, status, took);
    }
    if log.workspace().is_none() && status >= 400 && state.api_log.enabled() {
        let mut headers = axum::http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(axum::http::header::AUTHORIZATION, value);
        }
        if let Some(secret) = http::presented_key(&headers, query.as_deref(), &[]) {
            attribute_refusal(&state, &log, &secret);
        }
    }
    if let Some(ws) = log.workspace()
        && state.api_log.enabled()
    {
        response = keep_in_api_log(
            &state, ws, &log, &method, &path, query, status, took, response,
        )
        .await;
    }
    response
}

/// Names the key and workspace of a refused request in its log, when the key it presents is
/// one of eddy's (an unknown key belongs to no workspace, so its 401 is in no API log).
fn attribute_refusal(state: &AppState, log: &request_log::RequestLog, secret: &str) {
    match state.store.api_key(&eddy_store::ids::sha256_hex(secret)) {
        Ok(Some(key)) => {
            log.set_key(&key.name);
            log.set_workspace(key.workspace, &axum::body::Bytes::new());
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "api log: the key of a refused request could not be read");
        }
    }
}

/// Adds a workspace's request to the API log, with its answer when the answer is small and
/// already whole (JSON answers are; streamed ones are not read).
#[allow(clippy::too_many_arguments)]
async fn keep_in_api_log(
    state: &AppState,
    ws: u32,
    log: &request_log::RequestLog,
    method: &axum::http::Method,
    path: &str,
    query: Option<String>,
    status: u16,
    took: std::time::Duration,
    response: Response,
) -> Response {
    use axum::body::HttpBody;
    let (parts, body) = response.into_parts();
    let whole = body
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= state.api_log.body_bytes());
    let (body, kept) = if whole {
        match axum::body::to_bytes(body, state.api_log.body_bytes()).await {
            Ok(bytes) => (axum::body::Body::from(bytes.clone()), Some(bytes)),
            Err(e) => {
                tracing::warn!(error = %e, "api log: the answer could not be read");
                (axum::body::Body::empty(), None)
            }
        }
    } else {
        (body, None)
    };
    state.api_log.push(
        ws,
        api_log::Entry {
            id: 0,
            at_ms: eddy_model::time::now_ms(),
            method: method.to_string(),
            path: api_log::redact_query(path, query.as_deref()),
            key: log.key().unwrap_or("-").to_string(),
            status,
            micros: took.as_micros() as u64,
            objects: log.objects(),
            request: log.body().cloned().unwrap_or_default(),
            request_truncated: false,
            response: kept,
            refused: false,
        },
    );
    Response::from_parts(parts, body)
}

/// A cheap hash of whatever key the request presents; requests without one share a bucket.
fn caller_of(req: &Request) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match req.headers().get(axum::http::header::AUTHORIZATION) {
        Some(value) => value.as_bytes().hash(&mut hasher),
        None => http::query_param(req.uri().query(), "api_key").hash(&mut hasher),
    }
    hasher.finish()
}

/// Binds `config.listen` and serves until `shutdown`.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    match connections::raise_open_file_limit() {
        Some((before, after)) if after > before => {
            tracing::info!(before, after, "raised the open-file limit")
        }
        Some((_, now)) if (now as usize) < config.max_connections + 64 => tracing::warn!(
            open_files = now,
            max_connections = config.max_connections,
            "the open-file limit is below max_connections; connections past it fail to accept"
        ),
        _ => {}
    }
    let app = App::build(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Io(format!("cannot listen on {}: {e}", config.listen)))?;
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        dashboard = %format!("http://{}/dashboard", config.listen),
        "eddy serving"
    );
    if let Some(path) = &app.admin_token_file {
        tracing::info!(path = %path.display(), "admin token file");
    }
    app.serve(listener, shutdown)
        .await
        .map_err(|e| StartError::Io(e.to_string()))
}
