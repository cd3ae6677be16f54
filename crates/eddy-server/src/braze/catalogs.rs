//! Braze's catalog endpoints: catalogs, their fields, and their items one at a time or up to 50
//! at once. Refusals carry Braze's error ids in Braze's error body. Braze runs the bulk and
//! field endpoints asynchronously and answers 202; eddy answers the same 202 once the change is
//! durable.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use eddy_messaging::catalogs::{self, CatalogFailure, Write};
use eddy_model::time;
use serde_json::{Value, json};

use crate::SharedState;
use crate::extract::{
    AdminWorkspace, CatalogsAddItems, CatalogsCreate, CatalogsCreateFields, CatalogsCreateItem,
    CatalogsDelete, CatalogsDeleteFields, CatalogsDeleteItem, CatalogsDeleteItems, CatalogsGet,
    CatalogsGetItem, CatalogsGetItems, CatalogsReplaceItem, CatalogsReplaceItems,
    CatalogsUpdateItem, CatalogsUpdateItems, Rest,
};
use crate::http::{HttpError, json_response, query_param};

type Answer = Result<Response, HttpError>;

/// A refusal as Braze's body and status; an internal failure as eddy's 500.
fn answer(result: Result<Value, CatalogFailure>, status: StatusCode) -> Answer {
    match result {
        Ok(body) => Ok(json_response(status, &body)),
        Err(CatalogFailure::Refused(refusal)) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
            Ok(json_response(status, &refusal.body()))
        }
        Err(CatalogFailure::Internal(e)) => Err(e.into()),
    }
}

fn success() -> Value {
    json!({"message": "success"})
}

fn now() -> String {
    time::format_iso(time::now_ms())
}

fn body<P>(rest: &Rest<P>) -> Result<Value, HttpError> {
    rest.json::<Value>()
}

/// `GET /catalogs`.
pub async fn list(State(state): State<SharedState>, rest: Rest<CatalogsGet>) -> Answer {
    answer(
        catalogs::list(&state.store, rest.workspace.id),
        StatusCode::OK,
    )
}

/// `GET /eddy/v1/workspaces/{ws}/catalogs`: Braze's list, with the admin token.
pub async fn admin_list(
    State(state): State<SharedState>,
    AdminWorkspace(ws): AdminWorkspace,
) -> Answer {
    answer(catalogs::list(&state.store, ws.id), StatusCode::OK)
}

/// `GET /eddy/v1/workspaces/{ws}/catalogs/{name}/items[?cursor=…]`: a page of items with the
/// catalog's fields and the cursors of the pages beside it (for the dashboard).
pub async fn admin_items(
    State(state): State<SharedState>,
    Path((_, name)): Path<(String, String)>,
    AdminWorkspace(ws): AdminWorkspace,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Answer {
    let cursor = query_param(query.as_deref(), "cursor");
    let page = match catalogs::items_page(&state.store, ws.id, &name, cursor.as_deref()) {
        Ok(page) => page,
        Err(failure) => return answer(Err(failure), StatusCode::OK),
    };
    let fields = match catalogs::catalog(&state.store, ws.id, &name) {
        Ok(catalog) => catalog.fields,
        Err(failure) => return answer(Err(failure), StatusCode::OK),
    };
    let mut body = page.body;
    body["fields"] = json!(fields);
    body["prev"] = json!(page.prev);
    body["next"] = json!(page.next);
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /catalogs`.
pub async fn create(State(state): State<SharedState>, rest: Rest<CatalogsCreate>) -> Answer {
    let body = body(&rest)?;
    let created = catalogs::create(&state.store, rest.workspace.id, &body, &now()).await;
    answer(created, StatusCode::CREATED)
}

/// `DELETE /catalogs/{catalog_name}`.
pub async fn delete(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsDelete>,
) -> Answer {
    let deleted = catalogs::delete(&state.store, rest.workspace.id, &name).await;
    answer(deleted.map(|()| success()), StatusCode::OK)
}

/// `POST /catalogs/{catalog_name}/fields`.
pub async fn add_fields(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsCreateFields>,
) -> Answer {
    let body = body(&rest)?;
    let added = catalogs::add_fields(&state.store, rest.workspace.id, &name, &body, &now()).await;
    answer(added.map(|()| success()), StatusCode::ACCEPTED)
}

/// `DELETE /catalogs/{catalog_name}/fields/{field_name}`.
pub async fn delete_field(
    State(state): State<SharedState>,
    Path((name, field)): Path<(String, String)>,
    rest: Rest<CatalogsDeleteFields>,
) -> Answer {
    let deleted =
        catalogs::delete_field(&state.store, rest.workspace.id, &name, &field, &now()).await;
    answer(deleted.map(|()| success()), StatusCode::ACCEPTED)
}

/// `GET /catalogs/{catalog_name}/items`: 50 a page, the others through the `Link` header.
pub async fn list_items(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsGetItems>,
) -> Answer {
    let cursor = query_param(rest.query.as_deref(), "cursor");
    let page = match catalogs::items_page(&state.store, rest.workspace.id, &name, cursor.as_deref())
    {
        Ok(page) => page,
        Err(failure) => return answer(Err(failure), StatusCode::OK),
    };
    let mut response = json_response(StatusCode::OK, &page.body);
    let link = |cursor: &str, rel: &str| {
        format!("</catalogs/{name}/items?cursor={cursor}>; rel=\"{rel}\"")
    };
    let links: Vec<String> = [
        page.prev.as_deref().map(|c| link(c, "prev")),
        page.next.as_deref().map(|c| link(c, "next")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !links.is_empty()
        && let Ok(value) = HeaderValue::from_str(&links.join(","))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

async fn bulk<P>(state: &SharedState, name: &str, rest: &Rest<P>, how: Option<Write>) -> Answer {
    let body = body(rest)?;
    let written =
        catalogs::write_items(&state.store, rest.workspace.id, name, &body, how, &now()).await;
    answer(written.map(|()| success()), StatusCode::ACCEPTED)
}

/// `POST /catalogs/{catalog_name}/items`: up to 50 items, created or replaced.
pub async fn add_items(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsAddItems>,
) -> Answer {
    bulk(&state, &name, &rest, Some(Write::Replace)).await
}

/// `PUT /catalogs/{catalog_name}/items`: up to 50 items, created or replaced.
pub async fn replace_items(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsReplaceItems>,
) -> Answer {
    bulk(&state, &name, &rest, Some(Write::Replace)).await
}

/// `PATCH /catalogs/{catalog_name}/items`: up to 50 existing items changed.
pub async fn update_items(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsUpdateItems>,
) -> Answer {
    bulk(&state, &name, &rest, Some(Write::Patch)).await
}

/// `DELETE /catalogs/{catalog_name}/items`: up to 50 items removed.
pub async fn delete_items(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    rest: Rest<CatalogsDeleteItems>,
) -> Answer {
    bulk(&state, &name, &rest, None).await
}

/// `GET /catalogs/{catalog_name}/items/{item_id}`.
pub async fn get_item(
    State(state): State<SharedState>,
    Path((name, id)): Path<(String, String)>,
    rest: Rest<CatalogsGetItem>,
) -> Answer {
    answer(
        catalogs::get_item(&state.store, rest.workspace.id, &name, &id),
        StatusCode::OK,
    )
}

async fn one<P>(
    state: &SharedState,
    (name, id): (String, String),
    rest: &Rest<P>,
    how: Write,
    status: StatusCode,
) -> Answer {
    let body = body(rest)?;
    let written = catalogs::write_item(
        &state.store,
        rest.workspace.id,
        &name,
        &id,
        &body,
        how,
        &now(),
    )
    .await;
    answer(written.map(|()| success()), status)
}

/// `POST /catalogs/{catalog_name}/items/{item_id}`: a new item.
pub async fn create_item(
    State(state): State<SharedState>,
    Path(path): Path<(String, String)>,
    rest: Rest<CatalogsCreateItem>,
) -> Answer {
    one(&state, path, &rest, Write::Create, StatusCode::CREATED).await
}

/// `PUT /catalogs/{catalog_name}/items/{item_id}`: an item created or replaced.
pub async fn replace_item(
    State(state): State<SharedState>,
    Path(path): Path<(String, String)>,
    rest: Rest<CatalogsReplaceItem>,
) -> Answer {
    one(&state, path, &rest, Write::Replace, StatusCode::OK).await
}

/// `PATCH /catalogs/{catalog_name}/items/{item_id}`: an existing item changed.
pub async fn update_item(
    State(state): State<SharedState>,
    Path(path): Path<(String, String)>,
    rest: Rest<CatalogsUpdateItem>,
) -> Answer {
    one(&state, path, &rest, Write::Patch, StatusCode::OK).await
}

/// `DELETE /catalogs/{catalog_name}/items/{item_id}`.
pub async fn delete_item(
    State(state): State<SharedState>,
    Path((name, id)): Path<(String, String)>,
    rest: Rest<CatalogsDeleteItem>,
) -> Answer {
    let deleted = catalogs::delete_item(&state.store, rest.workspace.id, &name, &id, &now()).await;
    answer(deleted.map(|()| success()), StatusCode::OK)
}
