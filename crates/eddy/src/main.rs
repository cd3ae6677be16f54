//! The `eddy` binary: `eddy serve` runs the hub; `eddy admin …` is a thin client of its admin API.

mod liquid;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use eddy_server::Config;
use eddy_sync::metrics::SyncMetrics;
use serde_json::{Value, json};

// The writer allocates and frees many small objects per request; glibc's malloc spent more
// time than the writer's own code in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A self-hosted, Braze-compatible customer data hub.
#[derive(Parser)]
#[command(name = "eddy", version, about)]
struct Cli {
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, global = true, env = "EDDY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable; coloured on a terminal unless NO_COLOR is set.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage a running server through its admin API.
    Admin(AdminArgs),
    /// Delta sync of a table into Braze or eddy.
    Sync(SyncArgs),
    /// Configuration files.
    Config(ConfigArgs),
    /// Render and check Braze Liquid templates.
    Liquid(liquid::LiquidArgs),
    /// Create or upgrade eddy's tables in a PostgreSQL store, and nothing else.
    Migrate(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// The database: `postgres://user:password@host/database`.
    #[arg(long, env = "EDDY_STORE", hide_env_values = true)]
    store: String,
}

#[derive(Args)]
struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file as `eddy serve --config` would read it; exit 2 when invalid.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Args)]
struct SyncArgs {
    #[command(subcommand)]
    command: SyncCommand,
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Run syncs once: send what changed since the last run.
    Run {
        /// The sync file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Run only this sync [default: every sync of the file].
        #[arg(long)]
        name: Option<String>,
        /// Print the objects that would be sent (NDJSON on stdout); send and remember nothing.
        #[arg(long, conflicts_with = "mark_synced")]
        dry_run: bool,
        /// Remember the source as already sent, without sending (the target has the data).
        #[arg(long)]
        mark_synced: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Never draw the progress line.
        #[arg(long)]
        no_progress: bool,
    },
    /// Run each sync of the file on its cron schedule until stopped.
    Schedule {
        /// The sync file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Serve each sync's runs, rows and last run time for Prometheus at
        /// `http://ADDR/metrics`.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<SocketAddr>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "EDDY_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./eddy-data].
    #[arg(long, env = "EDDY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8780].
    #[arg(long, env = "EDDY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Keep data in PostgreSQL (`postgres://user:password@host/database`) instead of the
    /// embedded store; eddy creates and migrates its tables.
    #[arg(long, env = "EDDY_STORE", hide_env_values = true)]
    store: Option<String>,
}

#[derive(Args)]
struct AdminArgs {
    /// Base URL of the server.
    #[arg(
        long,
        global = true,
        env = "EDDY_URL",
        default_value = "http://127.0.0.1:8780"
    )]
    url: String,
    /// Admin token; read from <data-dir>/admin-token when not given.
    #[arg(long, global = true, env = "EDDY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory holding the generated admin token.
    #[arg(
        long,
        global = true,
        env = "EDDY_DATA_DIR",
        default_value = "./eddy-data"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// REST API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Workspaces.
    Workspaces {
        #[command(subcommand)]
        command: WorkspacesCommand,
    },
    /// Data points per day of a workspace.
    Usage {
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
    },
    /// Stored users.
    Users {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Currents connectors.
    Currents {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: CurrentsCommand,
    },
    /// Registered partners.
    Partners {
        #[command(subcommand)]
        command: PartnersCommand,
    },
    /// Segments.
    Segments {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: SegmentsCommand,
    },
    /// Sends (dispatches).
    Dispatches {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: DispatchesCommand,
    },
    /// Campaign definitions (the bodies `POST …/campaigns` takes, from JSON files).
    Campaigns {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: CampaignsCommand,
    },
    /// The workspace's SMTP relay, tracking domain and email footer.
    Email {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Content blocks (`{{content_blocks.${name}}}`).
    ContentBlocks {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: ContentBlocksCommand,
    },
    /// The hosts Connected Content and webhooks may call beyond public ones.
    ConnectedContent {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: ConnectedContentCommand,
    },
    /// Subscription groups.
    SubscriptionGroups {
        /// Workspace name.
        #[arg(long, global = true, default_value = "default")]
        workspace: String,
        #[command(subcommand)]
        command: SubscriptionGroupsCommand,
    },
}

#[derive(Subcommand)]
enum CampaignsCommand {
    /// Every campaign.
    List,
    /// One campaign.
    Get { id: String },
    /// Create a campaign from a JSON file (`-`: standard input); prints it with its id.
    Create {
        /// The campaign, as `POST …/campaigns` takes it.
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a campaign's definition from a JSON file.
    Update {
        id: String,
        /// The campaign, as `PUT …/campaigns/{id}` takes it.
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a campaign (sends already accepted still finish).
    Delete { id: String },
    /// Send a campaign now to one user, as `/campaigns/trigger/send` would; prints the dispatch.
    TestSend {
        id: String,
        /// The user's external id.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum EmailCommand {
    /// The relay (its password never shown), tracking domain and footer.
    Get,
    /// Set them from a JSON file: `{"smtp_url", "starttls"?, "tracking_domain"?,
    /// "custom_footer"?, "validate"?}`.
    Set {
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove them (email sends are refused until set again).
    Delete,
}

#[derive(Subcommand)]
enum ContentBlocksCommand {
    /// Every content block.
    List,
    /// One content block.
    Get { name: String },
    /// Save a content block from a Liquid file (refused with its line when it does not parse).
    Put {
        name: String,
        /// The block's Liquid.
        #[arg(long)]
        file: PathBuf,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a content block.
    Delete { name: String },
}

#[derive(Subcommand)]
enum ConnectedContentCommand {
    /// The allowed hosts and the credentials' names.
    Get,
    /// Replace the allowed hosts (`host` or `host:port`, repeat the flag; none clears them).
    SetHosts {
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SubscriptionGroupsCommand {
    /// Every subscription group.
    List,
    /// Create or replace a group from a JSON file (`{"name", "channel"}`).
    Put {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a group.
    Delete { id: String },
}

/// A JSON file's value (`-`: standard input).
fn json_file(path: &Path) -> anyhow::Result<Value> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

#[derive(Subcommand)]
enum DispatchesCommand {
    /// The latest sends with their state and counts.
    List,
    /// One send's state and counts.
    Get { id: String },
    /// Stop a send that is scheduled or in flight; what was not sent is never sent.
    Cancel { id: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Users named by an identifier of any kind (external id, braze id, email, phone, device id,
    /// or an alias as label:name), or every user, a page at a time.
    Find {
        /// The identifier; without it, the first page of every user.
        query: Option<String>,
    },
    /// One whole profile, by braze id.
    Get {
        /// The braze id.
        braze_id: String,
    },
}

#[derive(Subcommand)]
enum CurrentsCommand {
    /// Every connector with its state.
    List,
    /// One connector's state.
    Get { name: String },
    /// Stop and forget a connector (settings and cursor).
    Delete { name: String },
    /// Stop delivering, keeping the cursor.
    Pause { name: String },
    /// Deliver again from where it was paused.
    Resume { name: String },
}

#[derive(Subcommand)]
enum PartnersCommand {
    /// Every registered partner.
    List,
    /// Remove a partner and invalidate its Data Import Keys.
    Delete { name: String },
}

#[derive(Subcommand)]
enum SegmentsCommand {
    /// Every segment with its exact size.
    List,
    /// Delete a segment.
    Delete { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once.
    Create {
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// A label for the key.
        #[arg(long)]
        name: String,
        /// A permission, e.g. users.track (repeat; all permissions when none is given).
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// Every key of a workspace: name, permissions, created, last used (never a secret).
    List {
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
    },
    /// Revoke a key by id.
    Delete {
        /// Workspace name.
        #[arg(long, default_value = "default")]
        workspace: String,
        /// The key's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum WorkspacesCommand {
    /// Create a workspace.
    Create {
        /// Its name.
        name: String,
    },
    /// List workspaces.
    List,
    /// Rename a workspace; its keys, users and connectors stay.
    Rename {
        /// Its name now.
        name: String,
        /// Its new name.
        new_name: String,
    },
    /// Delete a workspace with everything in it (keys, users, cohorts, segments, connectors).
    Delete {
        /// Its name.
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Admin(args) => runtime.block_on(admin(args)),
        Command::Sync(args) => runtime.block_on(sync(args)),
        Command::Config(args) => config(args),
        Command::Liquid(args) => {
            let code = runtime.block_on(liquid::liquid(args))?;
            std::process::exit(code);
        }
        Command::Migrate(args) => migrate(&args),
    }
}

/// `eddy migrate --store URL`: applies the schema migrations and prints the version.
fn migrate(args: &MigrateArgs) -> anyhow::Result<()> {
    use eddy_store::postgres_backend;
    let mut client = postgres_backend::connect_creating(&args.store).with_context(|| {
        format!(
            "cannot connect to {}",
            postgres_backend::redact(&args.store)
        )
    })?;
    let version = postgres_backend::migrate(&mut client)?;
    println!(
        "{} is at eddy schema version {version}",
        postgres_backend::redact(&args.store)
    );
    Ok(())
}

/// `RUST_LOG` filters (default: info, the storage engine's own chatter at warn); colours only on
/// a terminal and without `NO_COLOR`.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let ansi = std::io::stderr().is_terminal() && !no_color;
            builder.with_ansi(ansi).init()
        }
    }
}

fn config(args: ConfigArgs) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let checked = Config::from_toml(&text).and_then(|c| c.validate());
            match checked {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    std::process::exit(2);
                }
            }
        }
    }
}

async fn sync(args: SyncArgs) -> anyhow::Result<()> {
    match args.command {
        SyncCommand::Run {
            config,
            name,
            dry_run,
            mark_synced,
            json,
            no_progress,
        } => {
            use std::io::IsTerminal;
            let file = eddy_sync::SyncFile::load(&config)?;
            let options = eddy_sync::RunOptions {
                dry_run,
                mark_synced,
                progress: !no_progress && !json && std::io::stderr().is_terminal(),
                dry_run_output: None,
            };
            let mut failed = false;
            for sync in file.select(name.as_deref())? {
                let report = eddy_sync::run(&file, sync, &options).await?;
                failed |= report.status != eddy_sync::RunStatus::Succeeded;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else if dry_run {
                    eprint!("{report}");
                } else {
                    print!("{report}");
                }
            }
            if failed {
                // Rows that failed are retried by the next run; the exit code tells schedulers.
                std::process::exit(2);
            }
            Ok(())
        }
        SyncCommand::Schedule {
            config,
            metrics_listen,
        } => {
            let file = eddy_sync::SyncFile::load(&config)?;
            let names = file.syncs.iter().filter(|s| s.schedule.is_some());
            let metrics = Arc::new(SyncMetrics::new(names.map(|s| s.name.as_str())));
            if let Some(addr) = metrics_listen {
                serve_sync_metrics(addr, metrics.clone()).await?;
            }
            eddy_sync::schedule::schedule(file, metrics, shutdown_signal()).await?;
            Ok(())
        }
    }
}

/// Serves `GET /metrics` for `eddy sync schedule` in the background; binding fails loudly.
async fn serve_sync_metrics(addr: SocketAddr, metrics: Arc<SyncMetrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tracing::info!(addr = %bound, "serving sync metrics at /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = &args.store {
        config.store.kind = "postgres".into();
        config.store.url = Some(url.clone());
    }
    if let Ok(token) = std::env::var("EDDY_ADMIN_TOKEN")
        && !token.is_empty()
    {
        config.admin_token = Some(token);
    }
    if let Ok(key) = std::env::var("EDDY_SECRETS_KEY")
        && !key.is_empty()
    {
        config.secrets_key = Some(key);
    }
    Ok(config)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    eddy_server::run(config, shutdown_signal()).await?;
    tracing::info!("eddy stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Percent-encodes a query value or path segment.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn admin_token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let path = args.data_dir.join("admin-token");
    read_token(&path)
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no --token given and cannot read {} (pass --token or --data-dir)",
            path.display()
        )
    })?;
    Ok(token.trim().to_string())
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let token = admin_token(&args)?;
    let base = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let (method, path, body) = match &args.command {
        AdminCommand::Keys {
            command:
                KeysCommand::Create {
                    workspace,
                    name,
                    permissions,
                },
        } => {
            let mut body = json!({"name": name});
            if !permissions.is_empty() {
                body["permissions"] = json!(permissions);
            }
            (
                reqwest::Method::POST,
                format!("/eddy/v1/workspaces/{workspace}/api-keys"),
                Some(body),
            )
        }
        AdminCommand::Keys {
            command: KeysCommand::List { workspace },
        } => (
            reqwest::Method::GET,
            format!("/eddy/v1/workspaces/{workspace}/api-keys"),
            None,
        ),
        AdminCommand::Keys {
            command: KeysCommand::Delete { workspace, id },
        } => (
            reqwest::Method::DELETE,
            format!("/eddy/v1/workspaces/{workspace}/api-keys/{id}"),
            None,
        ),
        AdminCommand::Workspaces {
            command: WorkspacesCommand::Create { name },
        } => (
            reqwest::Method::POST,
            "/eddy/v1/workspaces".to_string(),
            Some(json!({"name": name})),
        ),
        AdminCommand::Workspaces {
            command: WorkspacesCommand::List,
        } => (
            reqwest::Method::GET,
            "/eddy/v1/workspaces".to_string(),
            None,
        ),
        AdminCommand::Workspaces {
            command: WorkspacesCommand::Rename { name, new_name },
        } => (
            reqwest::Method::PATCH,
            format!("/eddy/v1/workspaces/{name}"),
            Some(json!({"name": new_name})),
        ),
        AdminCommand::Workspaces {
            command: WorkspacesCommand::Delete { name },
        } => (
            reqwest::Method::DELETE,
            format!("/eddy/v1/workspaces/{name}"),
            None,
        ),
        AdminCommand::Usage { workspace } => (
            reqwest::Method::GET,
            format!("/eddy/v1/workspaces/{workspace}/usage"),
            None,
        ),
        AdminCommand::Users { workspace, command } => {
            let path = match command {
                UsersCommand::Find { query: Some(q) } => {
                    format!("/eddy/v1/workspaces/{workspace}/users?q={}", encode(q))
                }
                UsersCommand::Find { query: None } => {
                    format!("/eddy/v1/workspaces/{workspace}/users")
                }
                UsersCommand::Get { braze_id } => {
                    format!("/eddy/v1/workspaces/{workspace}/users/{}", encode(braze_id))
                }
            };
            (reqwest::Method::GET, path, None)
        }
        AdminCommand::Currents { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/currents");
            match command {
                CurrentsCommand::List => (reqwest::Method::GET, base, None),
                CurrentsCommand::Get { name } => {
                    (reqwest::Method::GET, format!("{base}/{name}"), None)
                }
                CurrentsCommand::Delete { name } => {
                    (reqwest::Method::DELETE, format!("{base}/{name}"), None)
                }
                CurrentsCommand::Pause { name } => {
                    (reqwest::Method::POST, format!("{base}/{name}/pause"), None)
                }
                CurrentsCommand::Resume { name } => {
                    (reqwest::Method::POST, format!("{base}/{name}/resume"), None)
                }
            }
        }
        AdminCommand::Partners { command } => match command {
            PartnersCommand::List => (reqwest::Method::GET, "/eddy/v1/partners".into(), None),
            PartnersCommand::Delete { name } => (
                reqwest::Method::DELETE,
                format!("/eddy/v1/partners/{name}"),
                None,
            ),
        },
        AdminCommand::Segments { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/segments");
            match command {
                SegmentsCommand::List => (reqwest::Method::GET, base, None),
                SegmentsCommand::Delete { id } => {
                    (reqwest::Method::DELETE, format!("{base}/{id}"), None)
                }
            }
        }
        AdminCommand::Dispatches { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/dispatches");
            match command {
                DispatchesCommand::List => (reqwest::Method::GET, base, None),
                DispatchesCommand::Get { id } => {
                    (reqwest::Method::GET, format!("{base}/{id}"), None)
                }
                DispatchesCommand::Cancel { id } => {
                    (reqwest::Method::POST, format!("{base}/{id}/cancel"), None)
                }
            }
        }
        AdminCommand::Campaigns { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/campaigns");
            match command {
                CampaignsCommand::List => (reqwest::Method::GET, base, None),
                CampaignsCommand::Get { id } => {
                    (reqwest::Method::GET, format!("{base}/{}", encode(id)), None)
                }
                CampaignsCommand::Create { file } => {
                    (reqwest::Method::POST, base, Some(json_file(file)?))
                }
                CampaignsCommand::Update { id, file } => (
                    reqwest::Method::PUT,
                    format!("{base}/{}", encode(id)),
                    Some(json_file(file)?),
                ),
                CampaignsCommand::Delete { id } => (
                    reqwest::Method::DELETE,
                    format!("{base}/{}", encode(id)),
                    None,
                ),
                CampaignsCommand::TestSend { id, to } => (
                    reqwest::Method::POST,
                    format!("{base}/{}/test-send", encode(id)),
                    Some(serde_json::json!({"external_user_id": to})),
                ),
            }
        }
        AdminCommand::Email { workspace, command } => {
            let path = format!("/eddy/v1/workspaces/{workspace}/email");
            match command {
                EmailCommand::Get => (reqwest::Method::GET, path, None),
                EmailCommand::Set { file } => (reqwest::Method::PUT, path, Some(json_file(file)?)),
                EmailCommand::Delete => (reqwest::Method::DELETE, path, None),
            }
        }
        AdminCommand::ContentBlocks { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/content-blocks");
            match command {
                ContentBlocksCommand::List => (reqwest::Method::GET, base, None),
                ContentBlocksCommand::Get { name } => (
                    reqwest::Method::GET,
                    format!("{base}/{}", encode(name)),
                    None,
                ),
                ContentBlocksCommand::Put {
                    name,
                    file,
                    description,
                } => {
                    let content = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let mut body = json!({"content": content});
                    if let Some(description) = description {
                        body["description"] = json!(description);
                    }
                    (
                        reqwest::Method::PUT,
                        format!("{base}/{}", encode(name)),
                        Some(body),
                    )
                }
                ContentBlocksCommand::Delete { name } => (
                    reqwest::Method::DELETE,
                    format!("{base}/{}", encode(name)),
                    None,
                ),
            }
        }
        AdminCommand::ConnectedContent { workspace, command } => {
            let path = format!("/eddy/v1/workspaces/{workspace}/connected-content");
            match command {
                ConnectedContentCommand::Get => (reqwest::Method::GET, path, None),
                ConnectedContentCommand::SetHosts { hosts } => (
                    reqwest::Method::PUT,
                    path,
                    Some(json!({"allowed_hosts": hosts})),
                ),
            }
        }
        AdminCommand::SubscriptionGroups { workspace, command } => {
            let base = format!("/eddy/v1/workspaces/{workspace}/subscription-groups");
            match command {
                SubscriptionGroupsCommand::List => (reqwest::Method::GET, base, None),
                SubscriptionGroupsCommand::Put { id, file } => (
                    reqwest::Method::PUT,
                    format!("{base}/{}", encode(id)),
                    Some(json_file(file)?),
                ),
                SubscriptionGroupsCommand::Delete { id } => (
                    reqwest::Method::DELETE,
                    format!("{base}/{}", encode(id)),
                    None,
                ),
            }
        }
    };
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    if text.is_empty() {
        println!("ok");
    } else {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(())
}
