//! The partner cohort import API (`/partners/{partner}/cohorts[/users]`), keys in the body,
//! with Braze's texts (<https://www.braze.com/docs/partners/isv_partners/cohort_import/>).

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use eddy_model::ApiError;
use eddy_model::time::parse_time;
use eddy_model::users::could_exist;
use eddy_store::ids;
use eddy_store::{CohortMember, MemberChange};
use serde_json::{Value, json};

use crate::SharedState;
use crate::http::{HttpError, json_response};
use crate::request_log::RequestLog;
type Answer = Result<Response, HttpError>;

/// Most user ids, device ids and aliases in one `/cohorts/users` request.
pub const MAX_COHORT_IDS: usize = 1000;

const BAD_COHORT_ID: &str = "cohort_id must be a valid string";
const BAD_CHANGES: &str = "cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an array of strings, or an aliases object";
const TOO_MANY: &str = "Only 1,000 user_ids, device_ids, and aliases are allowed per request";
const BAD_NAME: &str = "name must be a non-empty string";
const BAD_CREATED_AT: &str = "created_at must be a valid time as an ISO-8601 string";

fn unauthorized(message: String) -> HttpError {
    HttpError(ApiError::Unauthorized(message))
}

/// Checks `partner_api_key` and `client_secret`; returns the workspace id.
fn authorize_partner(state: &SharedState, partner: &str, body: &Value) -> Result<u32, HttpError> {
    let registered = state.store.partner(partner)?;
    let key = body.get("partner_api_key").and_then(Value::as_str);
    let valid_key = match (&registered, key) {
        (Some(p), Some(k)) => ids::sha256_hex(k) == p.key_hash,
        _ => false,
    };
    if !valid_key {
        return Err(unauthorized("Invalid Partner API key".into()));
    }
    let Some(secret) = body
        .get("client_secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return Err(unauthorized("Invalid client secret".into()));
    };
    let Some(owner) = state.store.data_import_key(&ids::sha256_hex(secret))? else {
        return Err(unauthorized("Invalid client secret".into()));
    };
    if owner.partner != partner {
        return Err(unauthorized(format!(
            "Partner not enabled for client with client secret: {secret}"
        )));
    }
    Ok(owner.workspace)
}

fn cohort_id(body: &Value) -> Result<String, HttpError> {
    match body.get("cohort_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(s.clone()),
        _ => Err(ApiError::BadRequest(BAD_COHORT_ID.into()).into()),
    }
}

/// A partner's call about one cohort: the partner (path), its keys checked (body), the
/// workspace the Data Import Key belongs to, and the cohort id, with Braze's texts.
pub struct CohortCall {
    partner: String,
    ws: u32,
    cohort_id: String,
    body: Value,
    log: Option<std::sync::Arc<RequestLog>>,
}

impl FromRequest<SharedState> for CohortCall {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, HttpError> {
        let log = req
            .extensions()
            .get::<std::sync::Arc<RequestLog>>()
            .cloned();
        let (mut parts, body) = req.into_parts();
        let Path(partner) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(|_| HttpError(ApiError::NotFound))?;
        let raw = crate::http::body_bytes(
            axum::body::Bytes::from_request(Request::from_parts(parts, body), state).await,
        )?;
        let body: Value = crate::http::parse(&raw)?;
        let ws = authorize_partner(state, &partner, &body)?;
        if let Some(log) = &log {
            log.set_key(&format!("partner {partner}"));
            log.set_workspace(ws, &raw);
        }
        let cohort_id = cohort_id(&body)?;
        Ok(CohortCall {
            partner,
            ws,
            cohort_id,
            body,
            log,
        })
    }
}

/// `POST /partners/{partner}/cohorts`: create or rename a cohort.
pub async fn cohorts(State(state): State<SharedState>, call: CohortCall) -> Answer {
    let CohortCall {
        partner,
        ws,
        cohort_id: id,
        body,
        ..
    } = call;
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(ApiError::BadRequest(BAD_NAME.into()).into()),
    };
    let created_at = match body.get("created_at").and_then(Value::as_str) {
        Some(s) if parse_time(s).is_some() => s.to_string(),
        _ => return Err(ApiError::BadRequest(BAD_CREATED_AT.into()).into()),
    };
    state
        .store
        .upsert_cohort(ws, partner, id, name, created_at)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// Parses `cohort_changes` into member changes, with Braze's texts.
pub fn parse_changes(body: &Value) -> Result<Vec<MemberChange>, &'static str> {
    let Some(Value::Array(groups)) = body.get("cohort_changes") else {
        return Err(BAD_CHANGES);
    };
    let mut out = Vec::new();
    for group in groups {
        let Value::Object(map) = group else {
            return Err(BAD_CHANGES);
        };
        let add = match map.get("should_remove") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(remove)) => !remove,
            Some(_) => return Err(BAD_CHANGES),
        };
        if !map.contains_key("user_ids")
            && !map.contains_key("device_ids")
            && !map.contains_key("aliases")
        {
            return Err(BAD_CHANGES);
        }
        for (key, make) in [
            (
                "user_ids",
                CohortMember::ExternalId as fn(String) -> CohortMember,
            ),
            ("device_ids", CohortMember::DeviceId),
        ] {
            match map.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        let Some(s) = item.as_str().filter(|s| !s.is_empty()) else {
                            return Err(BAD_CHANGES);
                        };
                        // No profile can hold an id over the limit: like any unknown id, it
                        // changes nothing.
                        if !could_exist(s) {
                            continue;
                        }
                        out.push(MemberChange {
                            member: make(s.to_string()),
                            add,
                        });
                    }
                }
                Some(_) => return Err(BAD_CHANGES),
            }
        }
        match map.get("aliases") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let over_long = ["alias_name", "alias_label"].iter().any(|field| {
                        item.get(field)
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty() && !could_exist(s))
                    });
                    if over_long {
                        continue;
                    }
                    let alias = eddy_model::track::parse_alias(item).map_err(|_| BAD_CHANGES)?;
                    out.push(MemberChange {
                        member: CohortMember::Alias(alias),
                        add,
                    });
                }
            }
            Some(_) => return Err(BAD_CHANGES),
        }
        if out.len() > MAX_COHORT_IDS {
            return Err(TOO_MANY);
        }
    }
    Ok(out)
}

/// `POST /partners/{partner}/cohorts/users`: add and remove members.
pub async fn cohort_users(State(state): State<SharedState>, call: CohortCall) -> Answer {
    let CohortCall {
        partner,
        ws,
        cohort_id: id,
        body,
        log,
    } = call;
    let changes = parse_changes(&body).map_err(|m| ApiError::BadRequest(m.into()))?;
    if let Some(log) = log {
        log.add_objects(changes.len() as u64);
    }
    if !changes.is_empty() {
        state.store.cohort_changes(ws, partner, id, changes).await?;
    }
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"message": "success"}),
    ))
}

/// How a partner's name is shown in cohort names: `amplitude` → `Amplitude`.
pub fn default_display_name(partner: &str) -> String {
    let mut chars = partner.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A cohort as Braze shows it in filters: `[Amplitude] TEST_COHORT: abcd1234`.
pub fn cohort_display_name(partner_display: &str, name: &str, cohort_id: &str) -> String {
    format!("[{partner_display}] {name}: {cohort_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(default_display_name("amplitude"), "Amplitude");
        assert_eq!(
            cohort_display_name("Amplitude", "TEST_COHORT", "abcd1234"),
            "[Amplitude] TEST_COHORT: abcd1234"
        );
    }

    #[test]
    fn changes() {
        let ok = json!({"cohort_changes": [
            {"user_ids": ["a", "b"], "device_ids": [], "aliases": []},
            {"user_ids": ["c"], "device_ids": ["d"], "aliases": [{"alias_name": "n", "alias_label": "l"}], "should_remove": true}
        ]});
        let parsed = parse_changes(&ok).unwrap();
        assert_eq!(parsed.len(), 5);
        assert!(parsed[0].add && !parsed[2].add);
        assert_eq!(
            parse_changes(&json!({"cohort_changes": []})).unwrap(),
            vec![]
        );
        for bad in [
            json!({}),
            json!({"cohort_changes": [{}]}),
            json!({"cohort_changes": [{"user_ids": [1]}]}),
            json!({"cohort_changes": [{"user_ids": "a"}]}),
        ] {
            assert_eq!(parse_changes(&bad).unwrap_err(), BAD_CHANGES, "{bad}");
        }
        let long = "x".repeat(70_000);
        let skipped = parse_changes(
            &json!({"cohort_changes": [{"user_ids": [long, "a"], "device_ids": [long],
            "aliases": [{"alias_name": long, "alias_label": "l"}]}]}),
        )
        .unwrap();
        assert_eq!(
            skipped.len(),
            1,
            "over-long ids are unknown ids, the valid one stays"
        );
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert_eq!(
            parse_changes(&json!({"cohort_changes": [{"user_ids": many}]})).unwrap_err(),
            TOO_MANY
        );
    }
}
