//! `/users/export/segment`: the members of a segment written as newline-delimited JSON files
//! (zipped or gzipped, 5,000 users each) to the export directory or the workspace's bucket, in
//! the background, with Braze's callback when done.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use eddy_model::{ApiError, time};
use eddy_store::ids;
use eddy_store::meta::{ExportStorage, S3Settings};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{AdminWorkspace, JsonBody, Rest, UsersExportSegment};
use crate::http::{HttpError, json_response};
use crate::segments::{members, parse_filter};

type Answer = Result<Response, HttpError>;

/// Users per export file (Braze: about 5,000).
const USERS_PER_FILE: usize = 5000;

/// The body of `/users/export/segment`.
#[derive(Deserialize)]
pub struct ExportRequest {
    segment_id: Option<String>,
    callback_endpoint: Option<String>,
    fields_to_export: Option<Vec<String>>,
    custom_attributes_to_export: Option<Vec<String>>,
    output_format: Option<String>,
}

/// `POST /users/export/segment`: writes the members as newline-delimited JSON files under
/// `segment-export/SEGMENT_ID/YYYY-MM-dd/UUID-TIMESTAMP/` in the export directory, then posts
/// `{"success": true}` to `callback_endpoint` when one is given.
pub async fn export(State(state): State<SharedState>, rest: Rest<UsersExportSegment>) -> Answer {
    let req: ExportRequest = rest.json()?;
    start(state, rest.workspace, req).await
}

/// `POST /eddy/v1/workspaces/{ws}/segments/{id}/export` (admin) with the body of
/// `/users/export/segment` less `segment_id`: the same export, started by the admin token.
pub async fn export_admin(
    State(state): State<SharedState>,
    Path((_, id)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    JsonBody(mut req): JsonBody<ExportRequest>,
) -> Answer {
    req.segment_id = Some(id);
    start(state, ws, req).await
}

/// Checks the request and starts the export in the background.
async fn start(state: SharedState, ws: eddy_store::Workspace, req: ExportRequest) -> Answer {
    let Some(segment_id) = req.segment_id.filter(|s| !s.is_empty()) else {
        return Err(ApiError::BadRequest("segment_id is required".into()).into());
    };
    let Some(fields) = req.fields_to_export.filter(|f| !f.is_empty()) else {
        return Err(ApiError::BadRequest("fields_to_export is required".into()).into());
    };
    if req
        .custom_attributes_to_export
        .as_ref()
        .is_some_and(|c| c.len() > 500)
    {
        return Err(ApiError::BadRequest(
            "custom_attributes_to_export takes at most 500 names".into(),
        )
        .into());
    }
    let gzip = match req.output_format.as_deref() {
        None | Some("zip") => false,
        Some("gzip") => true,
        Some(_) => {
            return Err(ApiError::BadRequest("output_format must be zip or gzip".into()).into());
        }
    };
    let segment = state.store.segment(ws.id, &segment_id)?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "segment_id '{segment_id}' is not a segment of this workspace"
        ))
    })?;
    let filter = parse_filter(&segment.filter)?;
    let now = time::now_ms();
    let prefix = format!("{}-{}", ids::uuid_v4(), now / 1000);
    let day = jiff::Timestamp::from_millisecond(now)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let relative = format!("segment-export/{segment_id}/{day}/{prefix}");
    let (destination, url) = match state.store.export_storage(ws.id)? {
        ExportStorage::Local => {
            // Absolute, so the URL means the same to whoever reads it, wherever eddy started.
            let dir = std::path::absolute(state.export_dir.join(&relative))
                .map_err(|e| ApiError::BadRequest(format!("export directory: {e}")))?;
            let url = format!("file://{}", dir.display());
            (Destination::Local(dir), Some(url))
        }
        ExportStorage::S3(settings) => {
            let store = s3_store(&settings)
                .map_err(|e| ApiError::BadRequest(format!("export storage: {e}")))?;
            let key = if settings.prefix.is_empty() {
                relative
            } else {
                format!("{}/{relative}", settings.prefix.trim_end_matches('/'))
            };
            (Destination::S3 { store, prefix: key }, None)
        }
    };
    let members = members(&state, ws.id, filter, now).await?;
    let job = ExportJob {
        state: state.clone(),
        ws: ws.id,
        members: members.iter().collect(),
        fields,
        custom: req.custom_attributes_to_export,
        gzip,
    };
    // The callback is a request a REST key makes eddy send: it follows the workspace's
    // destination rule, as webhooks do.
    let callback = match req.callback_endpoint {
        Some(endpoint) => {
            let allowed = eddy_messaging::templates::rules(&state.store, ws.id)?.allowed_hosts;
            let parsed = reqwest::Url::parse(&endpoint).map_err(|e| {
                ApiError::BadRequest(format!("callback_endpoint '{endpoint}' is not a URL: {e}"))
            })?;
            let policy = eddy_net::Policy::Workspace(allowed);
            policy
                .check_url(&parsed, false)
                .map_err(|refused| ApiError::BadRequest(format!("callback_endpoint: {refused}")))?;
            let client = eddy_net::client_builder(policy)
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .map_err(|_| ApiError::Internal)?;
            Some((endpoint, client))
        }
        None => None,
    };
    let callback_url = url.clone();
    let users = job.members.len();
    state.exports.started(ExportStatus {
        id: prefix.clone(),
        ws: ws.id,
        segment_id: segment_id.clone(),
        state: "running",
        users,
        url: url.clone(),
        error: None,
        started_at: now,
        finished_at: None,
    });
    let (exports, export_id) = (state.clone(), prefix.clone());
    tokio::spawn(async move {
        let result = job.run(&destination).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, export = %export_id, "segment export failed");
        }
        exports
            .exports
            .finished(&export_id, users, result.as_ref().err().cloned());
        if let Some((endpoint, client)) = callback {
            let mut body = json!({"success": result.is_ok()});
            if let Err(reason) = &result {
                body["error"] = json!(reason);
            }
            if let Some(url) = callback_url {
                body["url"] = json!(url);
            }
            if let Err(e) = client.post(&endpoint).json(&body).send().await {
                tracing::warn!(error = %e, endpoint, "segment export callback failed");
            }
        }
    });
    let mut body = json!({"message": "success", "object_prefix": prefix});
    if let Some(url) = url {
        body["url"] = json!(url);
    }
    Ok(json_response(StatusCode::CREATED, &body))
}

/// An S3 client for an export destination.
pub fn s3_store(settings: &S3Settings) -> Result<AmazonS3, object_store::Error> {
    eddy_currents::s3_store(settings, None)
}

/// Where export files go.
enum Destination {
    Local(PathBuf),
    S3 { store: AmazonS3, prefix: String },
}

struct ExportJob {
    state: SharedState,
    ws: u32,
    members: Vec<u32>,
    fields: Vec<String>,
    custom: Option<Vec<String>>,
    gzip: bool,
}

impl ExportJob {
    async fn run(self, destination: &Destination) -> Result<(), String> {
        if let Destination::Local(dir) = destination {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| e.to_string())?;
        }
        let job = Arc::new(self);
        let parts = job.members.len().div_ceil(USERS_PER_FILE);
        for part in 0..parts {
            let worker = job.clone();
            let bytes = tokio::task::spawn_blocking(move || worker.build_part(part))
                .await
                .map_err(|e| e.to_string())??;
            let name = part_name(part, job.gzip);
            match destination {
                Destination::Local(dir) => write_whole(dir, &name, bytes)
                    .await
                    .map_err(|e| e.to_string())?,
                Destination::S3 { store, prefix } => {
                    let path = object_store::path::Path::from(format!("{prefix}/{name}"));
                    store
                        .put(&path, bytes.into())
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// One file: up to 5,000 users as newline-delimited JSON, compressed.
    fn build_part(&self, part: usize) -> Result<Vec<u8>, String> {
        let want_cohorts = self.fields.iter().any(|f| f == "cohorts");
        let start = part * USERS_PER_FILE;
        let end = (start + USERS_PER_FILE).min(self.members.len());
        let mut lines = Vec::new();
        for id in &self.members[start..end] {
            let Some(profile) = self
                .state
                .store
                .profile(self.ws, *id)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let mut user = profile.export(Some(&self.fields));
            if let (Some(wanted), Some(Value::Object(attrs))) =
                (&self.custom, user.get_mut("custom_attributes"))
            {
                attrs.retain(|name, _| wanted.contains(name));
            }
            if want_cohorts {
                user["cohorts"] = json!(self.cohort_names(*id)?);
            }
            lines.extend_from_slice(user.to_string().as_bytes());
            lines.push(b'\n');
        }
        let stem = format!("part-{part:05}");
        let packed = if self.gzip {
            crate::export_files::gzip(&lines)
        } else {
            crate::export_files::zip_one(&format!("{stem}.txt"), &lines)
        };
        packed.map_err(|e| e.to_string())
    }

    fn cohort_names(&self, id: u32) -> Result<Vec<String>, String> {
        let memberships = self
            .state
            .store
            .index()
            .workspace(self.ws)
            .map(|w| w.memberships(id))
            .unwrap_or_default();
        let mut names = Vec::new();
        for (partner, cohort_ids) in memberships {
            let display = self
                .state
                .store
                .partner(&partner)
                .map_err(|e| e.to_string())?
                .map_or_else(
                    || crate::partners::default_display_name(&partner),
                    |p| p.display_name,
                );
            for cohort_id in cohort_ids {
                let name = self
                    .state
                    .store
                    .cohort(self.ws, &partner, &cohort_id)
                    .map_err(|e| e.to_string())?
                    .map(|c| c.name);
                names.push(crate::partners::cohort_display_name(
                    &display,
                    name.as_deref().unwrap_or(&cohort_id),
                    &cohort_id,
                ));
            }
        }
        Ok(names)
    }
}

fn part_name(part: usize, gzip: bool) -> String {
    if gzip {
        format!("part-{part:05}.txt.gz")
    } else {
        format!("part-{part:05}.zip")
    }
}

/// One export's progress, as `GET …/exports/{id}` answers it.
#[derive(Debug, Clone)]
pub struct ExportStatus {
    id: String,
    ws: u32,
    segment_id: String,
    /// `running`, `succeeded` or `failed`.
    state: &'static str,
    users: usize,
    url: Option<String>,
    error: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
}

/// The exports of this process (the last 1,000), by id (the answer's `object_prefix`).
#[derive(Debug, Default)]
pub struct Exports {
    by_id: std::sync::Mutex<std::collections::BTreeMap<String, ExportStatus>>,
    figures: ExportCounters,
}

/// Totals since start, for `/metrics` (the map above forgets old exports).
#[derive(Debug, Default)]
struct ExportCounters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    users_exported: AtomicU64,
}

/// Segment export totals since start, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportFigures {
    /// Exports running now.
    pub running: u64,
    /// Exports that wrote their files.
    pub succeeded: u64,
    /// Exports that failed (the reason is in their status and callback).
    pub failed: u64,
    /// Users written by succeeded exports.
    pub users_exported: u64,
}

/// Exports remembered at most.
const KEPT_EXPORTS: usize = 1000;

impl Exports {
    fn started(&self, status: ExportStatus) {
        self.figures.started.fetch_add(1, Ordering::Relaxed);
        let Ok(mut map) = self.by_id.lock() else {
            return;
        };
        if map.len() >= KEPT_EXPORTS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.started_at)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                map.remove(&id);
            }
        }
        map.insert(status.id.clone(), status);
    }

    fn finished(&self, id: &str, users: usize, error: Option<String>) {
        let figures = &self.figures;
        if error.is_some() {
            figures.failed.fetch_add(1, Ordering::Relaxed);
        } else {
            figures.succeeded.fetch_add(1, Ordering::Relaxed);
            figures
                .users_exported
                .fetch_add(users as u64, Ordering::Relaxed);
        }
        let Ok(mut map) = self.by_id.lock() else {
            return;
        };
        if let Some(status) = map.get_mut(id) {
            status.state = if error.is_some() {
                "failed"
            } else {
                "succeeded"
            };
            status.error = error;
            status.finished_at = Some(time::now_ms());
        }
    }

    /// Totals since start.
    pub fn figures(&self) -> ExportFigures {
        let f = &self.figures;
        let succeeded = f.succeeded.load(Ordering::Relaxed);
        let failed = f.failed.load(Ordering::Relaxed);
        let started = f.started.load(Ordering::Relaxed);
        ExportFigures {
            running: started.saturating_sub(succeeded + failed),
            succeeded,
            failed,
            users_exported: f.users_exported.load(Ordering::Relaxed),
        }
    }

    fn get(&self, ws: u32, id: &str) -> Option<ExportStatus> {
        let map = self.by_id.lock().ok()?;
        map.get(id).filter(|s| s.ws == ws).cloned()
    }
}

/// `GET /eddy/v1/workspaces/{ws}/exports/{id}`: a segment export's state (`running`,
/// `succeeded`, `failed` with its reason), users, where it went.
pub async fn status(
    State(state): State<SharedState>,
    axum::extract::Path((_, id)): axum::extract::Path<(String, String)>,
    crate::extract::AdminWorkspace(ws): crate::extract::AdminWorkspace,
) -> Answer {
    let status = state
        .exports
        .get(ws.id, &id)
        .ok_or_else(|| ApiError::ResourceNotFound(format!("export '{id}'")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": status.id, "segment_id": status.segment_id, "state": status.state,
                "users": status.users, "url": status.url, "error": status.error,
                "started_at": time::format_iso(status.started_at),
                "finished_at": status.finished_at.map(time::format_iso)}),
    ))
}

/// Writes a local export file so that it appears whole: written and synced under a temporary
/// name, then renamed, as an object appears in S3 only once uploaded.
async fn write_whole(dir: &std::path::Path, name: &str, bytes: Vec<u8>) -> std::io::Result<()> {
    let partial = dir.join(format!(".{name}.partial"));
    let file = dir.join(name);
    let mut out = tokio::fs::File::create(&partial).await?;
    tokio::io::AsyncWriteExt::write_all(&mut out, &bytes).await?;
    out.sync_all().await?;
    drop(out);
    tokio::fs::rename(&partial, &file).await
}
