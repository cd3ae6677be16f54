//! Segments: admin definitions with exact sizes, Braze's `/segments/list` and
//! `/segments/details`, and `/users/export/segment`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_model::{ApiError, time};
use eddy_segments::Filter;
use eddy_store::meta::{ExportStorage, S3Settings, Segment};
use eddy_store::{Mutation, ids};
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SharedState;
use crate::admin::admin_workspace;
use crate::http::{HttpError, authorize, body_bytes, json_response, parse, query_param};

type Body = Result<Bytes, BytesRejection>;
type Answer = Result<Response, HttpError>;

/// Users per export file (Braze: about 5,000).
const USERS_PER_FILE: usize = 5000;

/// The exact size of a segment now.
fn size(state: &SharedState, ws: u32, filter: &Filter) -> u64 {
    let index = state.store.index();
    index
        .workspace(ws)
        .map_or(0, |w| w.eval(filter, time::now_ms()).len())
}

fn parse_filter(value: &Value) -> Result<Filter, HttpError> {
    Filter::parse(value).map_err(|e| ApiError::BadRequest(e.to_string()).into())
}

fn segment_json(segment: &Segment, size: u64) -> Value {
    json!({"id": segment.id, "name": segment.name, "filter": segment.filter, "size": size,
           "created_at": time::format_iso(segment.created_at)})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSegment {
    name: String,
    filter: Value,
}

/// `POST /eddy/v1/workspaces/{ws}/segments` → 201 `{"id", "size"}`.
pub async fn create(
    State(state): State<SharedState>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let ws = admin_workspace(&state, &headers, &ws)?;
    let req: NewSegment = parse(&body_bytes(body)?)?;
    if req.name.trim().is_empty() {
        return Err(ApiError::BadRequest("segment names must be non-empty".into()).into());
    }
    eddy_model::limits::check_name("name", &req.name).map_err(ApiError::BadRequest)?;
    let filter = parse_filter(&req.filter)?;
    let segment = Segment {
        id: ids::uuid_v4(),
        name: req.name,
        filter: req.filter,
        created_at: time::now_ms(),
    };
    state
        .store
        .apply(Mutation::PutSegment(ws.id, segment.clone()))
        .await?;
    let size = size(&state, ws.id, &filter);
    Ok(json_response(
        StatusCode::CREATED,
        &segment_json(&segment, size),
    ))
}

/// `GET /eddy/v1/workspaces/{ws}/segments/{id}` → `{"id","name","filter","size"}`.
pub async fn get(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let ws = admin_workspace(&state, &headers, &ws)?;
    let segment = state
        .store
        .segment(ws.id, &id)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("segment '{id}'")))?;
    let filter = parse_filter(&segment.filter)?;
    let size = size(&state, ws.id, &filter);
    Ok(json_response(StatusCode::OK, &segment_json(&segment, size)))
}

/// `DELETE /eddy/v1/workspaces/{ws}/segments/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    Path((ws, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let ws = admin_workspace(&state, &headers, &ws)?;
    state
        .store
        .apply(Mutation::DeleteSegment(ws.id, id))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /segments/list?page=&sort_direction=` (100 per page, by creation time).
pub async fn list(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Answer {
    let (_, ws) = authorize(&state, &headers, q.as_deref(), b"", "segments.list")?;
    let page: usize = match query_param(q.as_deref(), "page") {
        Some(p) => p
            .parse()
            .map_err(|_| ApiError::BadRequest("page must be a non-negative integer".into()))?,
        None => 0,
    };
    let mut segments = state.store.segments(ws.id)?;
    match query_param(q.as_deref(), "sort_direction").as_deref() {
        None | Some("asc") => {}
        Some("desc") => segments.reverse(),
        Some(_) => {
            return Err(ApiError::BadRequest("sort_direction must be asc or desc".into()).into());
        }
    }
    let items: Vec<Value> = segments
        .iter()
        .skip(page.saturating_mul(100))
        .take(100)
        .map(|s| json!({"id": s.id, "name": s.name, "analytics_tracking_enabled": false, "tags": []}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": "success", "segments": items}),
    ))
}

/// `GET /segments/details?segment_id=`.
pub async fn details(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Answer {
    let (_, ws) = authorize(&state, &headers, q.as_deref(), b"", "segments.details")?;
    let Some(id) = query_param(q.as_deref(), "segment_id") else {
        return Err(ApiError::BadRequest("segment_id is required".into()).into());
    };
    let segment = state
        .store
        .segment(ws.id, &id)?
        .ok_or_else(|| ApiError::ResourceNotFound(format!("segment '{id}'")))?;
    let created = time::format_iso(segment.created_at);
    Ok(json_response(
        StatusCode::OK,
        &json!({"message": "success", "name": segment.name, "description": "",
                "text_description": segment.filter.to_string(), "created_at": created, "updated_at": created,
                "tags": [], "teams": []}),
    ))
}

#[derive(Deserialize)]
struct ExportRequest {
    segment_id: Option<String>,
    callback_endpoint: Option<String>,
    fields_to_export: Option<Vec<String>>,
    custom_attributes_to_export: Option<Vec<String>>,
    output_format: Option<String>,
}

/// `POST /users/export/segment`: writes the members as newline-delimited JSON files under
/// `segment-export/SEGMENT_ID/YYYY-MM-dd/UUID-TIMESTAMP/` in the export directory, then posts
/// `{"success": true}` to `callback_endpoint` when one is given.
pub async fn export(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Answer {
    let bytes = body_bytes(body)?;
    let (_, ws) = authorize(
        &state,
        &headers,
        q.as_deref(),
        &bytes,
        "users.export.segment",
    )?;
    let req: ExportRequest = parse(&bytes)?;
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
            let dir = state.export_dir.join(&relative);
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
    let members = state
        .store
        .index()
        .workspace(ws.id)
        .map(|w| w.eval(&filter, now))
        .unwrap_or_default();
    let job = ExportJob {
        state: state.clone(),
        ws: ws.id,
        members: members.iter().collect(),
        fields,
        custom: req.custom_attributes_to_export,
        gzip,
    };
    let callback = req.callback_endpoint;
    let callback_url = url.clone();
    tokio::spawn(async move {
        let result = job.run(&destination).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "segment export failed");
        }
        if let Some(endpoint) = callback {
            let mut body = json!({"success": result.is_ok()});
            if let Some(url) = callback_url {
                body["url"] = json!(url);
            }
            if let Err(e) = reqwest::Client::new()
                .post(&endpoint)
                .json(&body)
                .send()
                .await
            {
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
                Destination::Local(dir) => tokio::fs::write(dir.join(&name), bytes)
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
            crate::archive::gzip(&lines)
        } else {
            crate::archive::zip_one(&format!("{stem}.txt"), &lines)
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
