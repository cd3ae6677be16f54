//! Catalogs, as Braze's catalog endpoints keep them: a workspace's named tables of non-user data
//! (products, restaurants) with typed fields, `id` first, whose items messages read with
//! `{% catalog_items NAME id… %}`. Refusals carry Braze's error ids and texts; the HTTP handlers
//! only parse, call and answer.
//!
//! A catalog's definition is stored under its name; its items under a kind named after the
//! catalog's own id, so a deleted catalog's items are unreachable at once (and removed in
//! commits of [`DELETE_CHUNK`]) and a new catalog of the same name starts empty.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use eddy_store::{ObjectWrite, Store, StoreError};

use crate::MessagingError;

/// Store kind of catalog definitions, by name.
pub const CATALOG: &str = "catalog";

/// When a catalog's items last changed, by the catalog's uid: `{"at"}`.
pub const CATALOG_TOUCHED: &str = "catalog-touched";

/// Items per page of `GET /catalogs/{name}/items`, as Braze pages them.
pub const PAGE: usize = 50;

/// Items one request may write (Braze's limit per request).
pub const MAX_ITEMS_PER_REQUEST: usize = 50;

/// Fields a catalog may have.
const MAX_FIELDS: usize = 30;

/// Longest name, field name, description or item id.
const MAX_NAME: usize = 250;

/// Longest item, as its JSON.
const MAX_ITEM_CHARS: usize = 5_000;

/// Deepest nesting in an object field.
const MAX_NESTING: usize = 50;

/// Objects removed per commit when a catalog or a field goes.
const DELETE_CHUNK: usize = 1_000;

/// A refusal as Braze's catalog endpoints answer it: an error id, its text, the parameter and
/// the values at fault, and the HTTP status (400, or 404 for what does not exist).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{id}: {message}")]
pub struct CatalogError {
    /// 400 or 404.
    pub status: u16,
    /// Braze's error id, e.g. `catalog-not-found`.
    pub id: &'static str,
    /// Its text.
    pub message: String,
    /// The parameters at fault.
    pub parameters: Vec<String>,
    /// Their values.
    pub parameter_values: Vec<String>,
}

impl CatalogError {
    fn new(id: &'static str, message: impl Into<String>) -> CatalogError {
        CatalogError {
            status: 400,
            id,
            message: message.into(),
            parameters: Vec::new(),
            parameter_values: Vec::new(),
        }
    }

    fn at(mut self, parameter: &str, value: &str) -> CatalogError {
        self.parameters.push(parameter.to_string());
        self.parameter_values.push(value.to_string());
        self
    }

    fn not_found(mut self) -> CatalogError {
        self.status = 404;
        self
    }

    /// Braze's error body.
    pub fn body(&self) -> Value {
        json!({
            "errors": [{
                "id": self.id,
                "message": self.message,
                "parameters": self.parameters,
                "parameter_values": self.parameter_values,
            }],
            "message": "Invalid Request",
        })
    }
}

/// What a catalog operation failed with: a refusal in Braze's terms, or something inside eddy.
#[derive(Debug, thiserror::Error)]
pub enum CatalogFailure {
    /// The request is refused.
    #[error(transparent)]
    Refused(#[from] CatalogError),
    /// The store or stored data failed.
    #[error(transparent)]
    Internal(#[from] MessagingError),
}

impl From<StoreError> for CatalogFailure {
    fn from(e: StoreError) -> CatalogFailure {
        CatalogFailure::Internal(MessagingError::Store(e))
    }
}

type Result<T> = std::result::Result<T, CatalogFailure>;

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Text.
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A time, kept as ISO 8601.
    Time,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// A field of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: FieldType,
}

/// A catalog's definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Where its items live (`catalog-item/{uid}`), fixed at creation.
    pub uid: String,
    /// What it holds.
    pub description: String,
    /// Its fields, `id` first.
    pub fields: Vec<Field>,
    /// Last change to the definition or its items (ISO 8601).
    pub updated_at: String,
}

impl Catalog {
    fn item_kind(&self) -> String {
        format!("catalog-item/{}", self.uid)
    }

    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads `fields` of a create: objects of `name` and `type`, names unique and valid.
fn read_fields(value: Option<&Value>) -> std::result::Result<Vec<Field>, CatalogError> {
    let invalid = || CatalogError::new("invalid-fields", "fields is not formatted correctly");
    let Some(Value::Array(items)) = value else {
        return Err(invalid().at("fields", ""));
    };
    let mut fields = Vec::with_capacity(items.len());
    let mut seen = BTreeSet::new();
    for item in items {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            return Err(invalid());
        };
        if name.chars().count() > MAX_NAME {
            return Err(CatalogError::new(
                "field-names-too-large",
                "Character limit for a field name is 250",
            )
            .at("fields", name));
        }
        if !valid_name(name) {
            return Err(CatalogError::new(
                "invalid-field-names",
                "Fields can only include letters, numbers, hyphens, and underscores",
            )
            .at("fields", name));
        }
        let kind = item
            .get("type")
            .cloned()
            .and_then(|t| serde_json::from_value::<FieldType>(t).ok())
            .ok_or_else(|| {
                CatalogError::new("invalid-field-types", "Make sure the field types are valid")
                    .at("fields", name)
            })?;
        if !seen.insert(name.to_string()) {
            return Err(CatalogError::new(
                "field-names-not-unique",
                "The same field name is referenced twice",
            )
            .at("fields", name));
        }
        fields.push(Field {
            name: name.to_string(),
            kind,
        });
    }
    Ok(fields)
}

/// The catalog of that name, or Braze's `catalog-not-found` (404).
pub fn catalog(store: &Store, ws: u32, name: &str) -> Result<Catalog> {
    match store.object(ws, CATALOG, name)? {
        Some(value) => serde_json::from_value(value)
            .map_err(|e| MessagingError::internal(format!("stored catalog '{name}': {e}")).into()),
        None => Err(
            CatalogError::new("catalog-not-found", "Could not find catalog")
                .at("catalog_name", name)
                .not_found()
                .into(),
        ),
    }
}

/// How many items a catalog holds.
fn count_items(store: &Store, ws: u32, catalog: &Catalog) -> Result<usize> {
    let mut count = 0;
    visit_items(store, ws, catalog, None, |_, _| {
        count += 1;
        true
    })?;
    Ok(count)
}

/// Calls `visit` with the catalog's items in id order, from after `after`, a thousand read at a
/// time (so a large catalog is never held whole), until it answers `false`.
fn visit_items(
    store: &Store,
    ws: u32,
    catalog: &Catalog,
    after: Option<String>,
    mut visit: impl FnMut(String, Value) -> bool,
) -> Result<()> {
    let kind = catalog.item_kind();
    let mut after = after;
    loop {
        let page = store.objects_page(ws, &kind, "", after.as_deref(), 1_000)?;
        let full = page.len() == 1_000;
        for (id, item) in page {
            after = Some(id.clone());
            if !visit(id, item) {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// A catalog as Braze lists it; `updated_at` is the later of its definition's and its items'
/// last change.
fn listed(store: &Store, ws: u32, name: &str, catalog: &Catalog) -> Result<Value> {
    let touched = store
        .object(ws, CATALOG_TOUCHED, &catalog.uid)?
        .and_then(|t| t["at"].as_str().map(str::to_string));
    // Both are `format_iso` times, which sort as text.
    let updated_at = match touched {
        Some(at) if at > catalog.updated_at => at,
        _ => catalog.updated_at.clone(),
    };
    Ok(json!({
        "description": catalog.description,
        "fields": catalog.fields,
        "name": name,
        "num_items": count_items(store, ws, catalog)?,
        "updated_at": updated_at,
    }))
}

/// `POST /catalogs`: `{"catalogs": [one catalog]}` → the catalog as listed.
pub async fn create(store: &Store, ws: u32, body: &Value, now: &str) -> Result<Value> {
    let Some(Value::Array(catalogs)) = body.get("catalogs") else {
        return Err(CatalogError::new(
            "catalog-array-invalid",
            "catalogs must be an array of objects",
        )
        .into());
    };
    let [definition] = catalogs.as_slice() else {
        return Err(CatalogError::new(
            "too-many-catalog-atoms",
            "You can only create one catalog per request",
        )
        .into());
    };
    let name = definition.get("name").and_then(Value::as_str).unwrap_or("");
    if name.chars().count() > MAX_NAME {
        return Err(CatalogError::new(
            "catalog-name-too-large",
            "Character limit for a catalog name is 250",
        )
        .at("name", name)
        .into());
    }
    if !valid_name(name) {
        return Err(CatalogError::new(
            "invalid_catalog_name",
            "Catalog name can only include letters, numbers, hyphens, and underscores",
        )
        .at("name", name)
        .into());
    }
    let description = definition
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    if description.chars().count() > MAX_NAME {
        return Err(CatalogError::new(
            "description-too-long",
            "Character limit for description is 250",
        )
        .at("description", description)
        .into());
    }
    let fields = read_fields(definition.get("fields"))?;
    if fields.len() > MAX_FIELDS {
        return Err(CatalogError::new("too-many-fields", "Number of fields limit is 30").into());
    }
    if fields.first() != Some(&id_field()) {
        return Err(CatalogError::new(
            "id-not-first-column",
            "The id must be the first field in the array, of type string",
        )
        .at("fields", "id")
        .into());
    }
    let catalog = Catalog {
        uid: eddy_store::ids::uuid_v4(),
        description: description.to_string(),
        fields,
        updated_at: now.to_string(),
    };
    match store
        .create_object(ws, CATALOG, name.to_string(), stored(&catalog)?)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(CatalogError::new(
                "catalog-name-already-exists",
                "A catalog with that name already exists",
            )
            .at("name", name)
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(json!({"catalogs": [listed(store, ws, name, &catalog)?], "message": "success"}))
}

fn id_field() -> Field {
    Field {
        name: "id".into(),
        kind: FieldType::String,
    }
}

fn stored<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| MessagingError::internal(format!("catalog record: {e}")).into())
}

/// `GET /catalogs`.
pub fn list(store: &Store, ws: u32) -> Result<Value> {
    let mut catalogs = Vec::new();
    for (name, value) in store.objects(ws, CATALOG)? {
        let catalog: Catalog = serde_json::from_value(value)
            .map_err(|e| MessagingError::internal(format!("stored catalog '{name}': {e}")))?;
        catalogs.push(listed(store, ws, &name, &catalog)?);
    }
    Ok(json!({"catalogs": catalogs, "message": "success"}))
}

/// `DELETE /catalogs/{name}`: the definition goes in one commit (its items are unreachable
/// from then on), then the items in commits of [`DELETE_CHUNK`].
pub async fn delete(store: &Store, ws: u32, name: &str) -> Result<()> {
    let catalog = catalog(store, ws, name)?;
    let gone = vec![
        ObjectWrite {
            kind: CATALOG.into(),
            name: name.to_string(),
            value: None,
        },
        ObjectWrite {
            kind: CATALOG_TOUCHED.into(),
            name: catalog.uid.clone(),
            value: None,
        },
    ];
    store.record(ws, gone, Vec::new()).await?;
    let kind = catalog.item_kind();
    loop {
        let ids: Vec<String> = store
            .objects_page(ws, &kind, "", None, DELETE_CHUNK)?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let writes = ids
            .into_iter()
            .map(|id| ObjectWrite {
                kind: kind.clone(),
                name: id,
                value: None,
            })
            .collect();
        store.record(ws, writes, Vec::new()).await?;
    }
}

/// `POST /catalogs/{name}/fields`: adds fields (names not in the catalog yet).
pub async fn add_fields(store: &Store, ws: u32, name: &str, body: &Value, now: &str) -> Result<()> {
    let mut catalog = catalog(store, ws, name)?;
    let fields = read_fields(body.get("fields"))?;
    for field in fields {
        if catalog.field(&field.name).is_some() {
            return Err(CatalogError::new(
                "field-names-not-unique",
                "The same field name is referenced twice",
            )
            .at("fields", &field.name)
            .into());
        }
        catalog.fields.push(field);
    }
    if catalog.fields.len() > MAX_FIELDS {
        return Err(CatalogError::new("too-many-fields", "Number of fields limit is 30").into());
    }
    catalog.updated_at = now.to_string();
    store
        .put_object(ws, CATALOG, name.to_string(), stored(&catalog)?)
        .await?;
    Ok(())
}

/// `DELETE /catalogs/{name}/fields/{field}`: the field leaves the definition and every item.
pub async fn delete_field(
    store: &Store,
    ws: u32,
    name: &str,
    field: &str,
    now: &str,
) -> Result<()> {
    let mut catalog = catalog(store, ws, name)?;
    if field == "id" {
        return Err(
            CatalogError::new("id-field-required", "The id field cannot be deleted")
                .at("field_name", field)
                .into(),
        );
    }
    if catalog.field(field).is_none() {
        return Err(CatalogError::new("field-not-found", "Could not find field")
            .at("field_name", field)
            .not_found()
            .into());
    }
    catalog.fields.retain(|f| f.name != field);
    catalog.updated_at = now.to_string();
    store
        .put_object(ws, CATALOG, name.to_string(), stored(&catalog)?)
        .await?;
    // Items keep no value of a field that is gone, so a field added later under that name
    // starts empty.
    let kind = catalog.item_kind();
    let mut after: Option<String> = None;
    loop {
        let page = store.objects_page(ws, &kind, "", after.as_deref(), DELETE_CHUNK)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        let writes: Vec<ObjectWrite> = page
            .into_iter()
            .filter_map(|(id, mut item)| {
                let had = item.as_object_mut()?.remove(field).is_some();
                had.then(|| ObjectWrite {
                    kind: kind.clone(),
                    name: id,
                    value: Some(item),
                })
            })
            .collect();
        if !writes.is_empty() {
            store.record(ws, writes, Vec::new()).await?;
        }
    }
}

/// The `items` array of a body, with Braze's refusals for its shape.
fn items_of(body: &Value) -> std::result::Result<&Vec<Value>, CatalogError> {
    let invalid = || CatalogError::new("item-array-invalid", "items must be an array of objects");
    match body.get("items") {
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => Ok(items),
        _ => Err(invalid()),
    }
}

/// Checks an item id: a string of letters, digits, `-` and `_`, at most 250 characters.
fn check_id(id: &str) -> std::result::Result<(), CatalogError> {
    if id.chars().count() > MAX_NAME {
        return Err(CatalogError::new(
            "ids-too-large",
            "Item IDs can't be more than 250 characters",
        )
        .at("id", id));
    }
    if !valid_name(id) {
        return Err(CatalogError::new(
            "invalid-ids",
            "Item IDs can only include letters, numbers, hyphens, and underscores",
        )
        .at("id", id));
    }
    Ok(())
}

/// Checks and converts an item's values to the catalog's field types (`id` excluded); with
/// `patch`, `$add` and `$remove` of array fields are applied to `base`.
fn typed_values(
    catalog: &Catalog,
    id: &str,
    given: &Map<String, Value>,
    base: Option<&Map<String, Value>>,
) -> std::result::Result<Map<String, Value>, CatalogError> {
    let mut out = base.cloned().unwrap_or_default();
    for (name, value) in given {
        if name == "id" {
            continue;
        }
        let Some(field) = catalog.field(name) else {
            return Err(CatalogError::new(
                "invalid-fields",
                "Some of the fields given do not exist in the catalog",
            )
            .at("id", id));
        };
        let value = match (field.kind, value, base) {
            (FieldType::Array, Value::Object(ops), Some(_))
                if ops.keys().all(|k| k == "$add" || k == "$remove") =>
            {
                array_ops(out.get(name), ops, id)?
            }
            _ => coerce(field.kind, value).ok_or_else(|| {
                CatalogError::new("unable-to-coerce-value", "Item types can't be converted")
                    .at("id", id)
            })?,
        };
        check_nested(&value, 0).map_err(|e| e.at("id", id))?;
        out.insert(name.clone(), value);
    }
    out.insert("id".into(), Value::String(id.to_string()));
    if Value::Object(out.clone()).to_string().chars().count() > MAX_ITEM_CHARS {
        return Err(CatalogError::new(
            "items-too-large",
            "Item values can't exceed 5,000 characters",
        )
        .at("id", id));
    }
    Ok(out)
}

/// `$add` then `$remove` on an array field's current value.
fn array_ops(
    current: Option<&Value>,
    ops: &Map<String, Value>,
    id: &str,
) -> std::result::Result<Value, CatalogError> {
    let coerce_error = || {
        CatalogError::new("unable-to-coerce-value", "Item types can't be converted").at("id", id)
    };
    let mut values: Vec<Value> = match current {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    if let Some(add) = ops.get("$add") {
        let Value::Array(add) = add else {
            return Err(coerce_error());
        };
        values.extend(add.iter().cloned());
    }
    if let Some(remove) = ops.get("$remove") {
        let Value::Array(remove) = remove else {
            return Err(coerce_error());
        };
        values.retain(|v| !remove.contains(v));
    }
    Ok(Value::Array(values))
}

/// A value as a field of that type keeps it, or `None` when it cannot be one.
fn coerce(kind: FieldType, value: &Value) -> Option<Value> {
    if value.is_null() {
        return Some(Value::Null);
    }
    match (kind, value) {
        (FieldType::String, Value::String(_)) => Some(value.clone()),
        (FieldType::String, Value::Number(n)) => Some(Value::String(n.to_string())),
        (FieldType::String, Value::Bool(b)) => Some(Value::String(b.to_string())),
        (FieldType::Number, Value::Number(_)) => Some(value.clone()),
        (FieldType::Number, Value::String(s)) => {
            let n: f64 = s.trim().parse().ok()?;
            serde_json::Number::from_f64(n).map(Value::Number)
        }
        (FieldType::Boolean, Value::Bool(_)) => Some(value.clone()),
        (FieldType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (FieldType::Time, Value::String(s)) => {
            let ms = eddy_model::time::parse_time(s)?;
            Some(Value::String(eddy_model::time::format_iso(ms)))
        }
        (FieldType::Object, Value::Object(_)) => Some(value.clone()),
        (FieldType::Array, Value::Array(_)) => Some(value.clone()),
        _ => None,
    }
}

/// Object keys without `.` or `$`, at most [`MAX_NESTING`] levels.
fn check_nested(value: &Value, depth: usize) -> std::result::Result<(), CatalogError> {
    if depth > MAX_NESTING {
        return Err(CatalogError::new(
            "too-deep-nesting-in-value-object",
            "Item objects can't have more than 50 levels of nesting",
        ));
    }
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key.contains('.') || key.contains('$') {
                    return Err(CatalogError::new(
                        "invalid-keys-in-value-object",
                        "Item object keys can't include . or $",
                    ));
                }
                check_nested(inner, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_nested(v, depth + 1)),
        _ => Ok(()),
    }
}

/// An item by id (Braze's `item-not-found`, 404, when absent).
fn stored_item(store: &Store, ws: u32, catalog: &Catalog, id: &str) -> Result<Map<String, Value>> {
    match store.object(ws, &catalog.item_kind(), id)? {
        Some(Value::Object(item)) => Ok(item),
        Some(_) => Err(MessagingError::internal(format!(
            "stored catalog item '{id}' is not an object"
        ))
        .into()),
        None => Err(CatalogError::new("item-not-found", "Could not find item")
            .at("item_id", id)
            .not_found()
            .into()),
    }
}

/// An item as answered: the catalog's fields in their order, `id` first.
fn shown(catalog: &Catalog, item: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for field in &catalog.fields {
        if let Some(value) = item.get(&field.name) {
            out.insert(field.name.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// `GET /catalogs/{name}/items/{id}`.
pub fn get_item(store: &Store, ws: u32, name: &str, id: &str) -> Result<Value> {
    let catalog = catalog(store, ws, name)?;
    let item = stored_item(store, ws, &catalog, id)?;
    Ok(json!({"items": [shown(&catalog, &item)], "message": "success"}))
}

/// How one item is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Create; an existing item is `item-already-exists`.
    Create,
    /// Create or replace.
    Replace,
    /// Change the fields given of an existing item.
    Patch,
}

/// `POST|PUT|PATCH /catalogs/{name}/items/{id}`: one item, `{"items": [fields without id]}`.
pub async fn write_item(
    store: &Store,
    ws: u32,
    name: &str,
    id: &str,
    body: &Value,
    how: Write,
    now: &str,
) -> Result<()> {
    let catalog = catalog(store, ws, name)?;
    check_id(id)?;
    let items = items_of(body)?;
    let [given] = items.as_slice() else {
        return Err(CatalogError::new(
            "request-includes-too-many-items",
            "You can only write one catalog item per request",
        )
        .into());
    };
    let given = given.as_object().cloned().unwrap_or_default();
    if given.contains_key("id") {
        return Err(
            CatalogError::new("id-in-body", "Remove any item IDs in the request body")
                .at("id", id)
                .into(),
        );
    }
    let existing = match store.object(ws, &catalog.item_kind(), id)? {
        Some(Value::Object(item)) => Some(item),
        _ => None,
    };
    let base = match (how, existing) {
        (Write::Create, Some(_)) => {
            return Err(
                CatalogError::new("item-already-exists", "The item already exists")
                    .at("id", id)
                    .into(),
            );
        }
        (Write::Patch, None) => {
            return Err(CatalogError::new("item-not-found", "Could not find item")
                .at("item_id", id)
                .not_found()
                .into());
        }
        (Write::Patch, Some(item)) => Some(item),
        _ => None,
    };
    let item = typed_values(&catalog, id, &given, base.as_ref())?;
    write(store, ws, catalog, vec![(id.to_string(), Some(item))], now).await
}

/// `DELETE /catalogs/{name}/items/{id}`.
pub async fn delete_item(store: &Store, ws: u32, name: &str, id: &str, now: &str) -> Result<()> {
    let catalog = catalog(store, ws, name)?;
    stored_item(store, ws, &catalog, id)?;
    write(store, ws, catalog, vec![(id.to_string(), None)], now).await
}

/// The bulk endpoints: `POST|PUT|PATCH|DELETE /catalogs/{name}/items` with up to
/// [`MAX_ITEMS_PER_REQUEST`] items, each with its `id`. Every item is checked before any is
/// written, and all are written in one commit.
pub async fn write_items(
    store: &Store,
    ws: u32,
    name: &str,
    body: &Value,
    how: Option<Write>,
    now: &str,
) -> Result<()> {
    let catalog = catalog(store, ws, name)?;
    let items = items_of(body)?;
    if items.len() > MAX_ITEMS_PER_REQUEST {
        return Err(CatalogError::new(
            "request-includes-too-many-items",
            "Your request has too many items. The item limit per request is 50",
        )
        .into());
    }
    let mut seen = BTreeSet::new();
    let mut writes = Vec::with_capacity(items.len());
    let missing = items.iter().filter(|i| i.get("id").is_none()).count();
    if missing > 0 {
        return Err(CatalogError::new(
            "items-missing-ids",
            format!("There are {missing} item(s) that do not have ids"),
        )
        .into());
    }
    for given in items {
        let Some(Value::String(id)) = given.get("id") else {
            return Err(
                CatalogError::new("ids-not-strings", "Item IDs must be of type string").into(),
            );
        };
        check_id(id)?;
        if !seen.insert(id.clone()) {
            return Err(CatalogError::new(
                "ids-not-unique",
                "Item IDs must be unique in the request",
            )
            .at("id", id)
            .into());
        }
        let given = given.as_object().cloned().unwrap_or_default();
        let item = match how {
            None => None,
            Some(Write::Patch) => {
                let base = stored_item(store, ws, &catalog, id)?;
                Some(typed_values(&catalog, id, &given, Some(&base))?)
            }
            Some(_) => Some(typed_values(&catalog, id, &given, None)?),
        };
        writes.push((id.clone(), item));
    }
    write(store, ws, catalog, writes, now).await
}

/// Writes items and when the catalog's items last changed, in one commit. The definition is
/// not written again: a field added meanwhile would be lost under it.
async fn write(
    store: &Store,
    ws: u32,
    catalog: Catalog,
    items: Vec<(String, Option<Map<String, Value>>)>,
    now: &str,
) -> Result<()> {
    let kind = catalog.item_kind();
    let mut writes: Vec<ObjectWrite> = items
        .into_iter()
        .map(|(id, item)| ObjectWrite {
            kind: kind.clone(),
            name: id,
            value: item.map(Value::Object),
        })
        .collect();
    writes.push(ObjectWrite {
        kind: CATALOG_TOUCHED.into(),
        name: catalog.uid.clone(),
        value: Some(json!({"at": now})),
    });
    store.record(ws, writes, Vec::new()).await?;
    Ok(())
}

/// A page of `GET /catalogs/{name}/items`: the items, and the cursors of the pages before and
/// after it (opaque to clients, as Braze's are).
pub struct ItemsPage {
    /// The answer's body.
    pub body: Value,
    /// Cursor of the previous page.
    pub prev: Option<String>,
    /// Cursor of the next page.
    pub next: Option<String>,
}

/// A cursor: how many items come before the page, and (when known) the id of the last of them,
/// so that following `next` links reads from there instead of from the start.
fn cursor_for(skip: usize, after: Option<&str>) -> String {
    let text = match after {
        Some(id) => format!("skip:{skip}/after:{id}"),
        None => format!("skip:{skip}"),
    };
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn skip_of(cursor: &str) -> Option<(usize, Option<String>)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cursor.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix("skip:")?;
    match rest.split_once("/after:") {
        Some((skip, id)) => Some((skip.parse().ok()?, Some(id.to_string()))),
        None => Some((rest.parse().ok()?, None)),
    }
}

/// `GET /catalogs/{name}/items[?cursor=…]`: [`PAGE`] items in id order.
pub fn items_page(store: &Store, ws: u32, name: &str, cursor: Option<&str>) -> Result<ItemsPage> {
    let catalog = catalog(store, ws, name)?;
    let (skip, after) = match cursor {
        None => (0, None),
        Some(c) => skip_of(c).ok_or_else(|| {
            CatalogError::new("invalid-cursor", "'cursor' is not valid").at("cursor", c)
        })?,
    };
    // With the id the page starts after, nothing before it is read; without, `skip` items are.
    let mut to_skip = if after.is_some() { 0 } else { skip };
    let mut items = Vec::with_capacity(PAGE);
    let mut last = None;
    let mut more = false;
    visit_items(store, ws, &catalog, after, |id, item| {
        if to_skip > 0 {
            to_skip -= 1;
            return true;
        }
        if items.len() == PAGE {
            more = true;
            return false;
        }
        if let Some(i) = item.as_object() {
            items.push(shown(&catalog, i));
        }
        last = Some(id);
        true
    })?;
    let prev = (skip > 0).then(|| cursor_for(skip.saturating_sub(PAGE), None));
    let next = more.then(|| cursor_for(skip + PAGE, last.as_deref()));
    Ok(ItemsPage {
        body: json!({"items": items, "message": "success"}),
        prev,
        next,
    })
}

/// Items of a catalog by id, for `{% catalog_items %}`: in the order asked, ids the catalog
/// does not hold left out (Braze's items array then simply has fewer objects).
pub fn lookup(
    store: &Store,
    ws: u32,
    name: &str,
    ids: &[String],
) -> std::result::Result<Vec<Value>, String> {
    let catalog = match catalog(store, ws, name) {
        Ok(catalog) => catalog,
        Err(CatalogFailure::Refused(_)) => return Ok(Vec::new()),
        Err(CatalogFailure::Internal(e)) => return Err(e.to_string()),
    };
    let kind = catalog.item_kind();
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        match store.object(ws, &kind, id) {
            Ok(Some(Value::Object(item))) => items.push(shown(&catalog, &item)),
            Ok(_) => {}
            Err(e) => return Err(format!("catalog '{name}': {e}")),
        }
    }
    Ok(items)
}

/// A workspace's catalogs as a render reads them.
pub struct StoreCatalogs<'a> {
    /// The store.
    pub store: &'a Store,
    /// The workspace.
    pub ws: u32,
}

impl eddy_liquid::Catalogs for StoreCatalogs<'_> {
    fn items(&self, catalog: &str, ids: &[String]) -> std::result::Result<Vec<Value>, String> {
        lookup(self.store, self.ws, catalog, ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restaurants() -> Catalog {
        Catalog {
            uid: "u".into(),
            description: "My Restaurants".into(),
            fields: read_fields(Some(&json!([
                {"name": "id", "type": "string"}, {"name": "Name", "type": "string"},
                {"name": "Rating", "type": "number"}, {"name": "Loyalty_Program", "type": "boolean"},
                {"name": "Location", "type": "object"}, {"name": "Top_Dishes", "type": "array"},
                {"name": "Created_At", "type": "time"}
            ])))
            .unwrap(),
            updated_at: String::new(),
        }
    }

    fn values(given: Value, base: Option<Value>) -> std::result::Result<Value, &'static str> {
        let base = base.and_then(|b| b.as_object().cloned());
        typed_values(
            &restaurants(),
            "r1",
            given.as_object().unwrap(),
            base.as_ref(),
        )
        .map(Value::Object)
        .map_err(|e| e.id)
    }

    #[test]
    fn values_take_their_fields_types() {
        let item = values(
            json!({"Name": "Restaurant1", "Rating": "5", "Loyalty_Program": "true",
                   "Location": {"Latitude": 33.6112}, "Created_At": "2022-11-01T09:03:19.967+00:00"}),
            None,
        )
        .unwrap();
        assert_eq!(item["id"], "r1");
        assert_eq!(item["Rating"], 5.0);
        assert_eq!(item["Loyalty_Program"], true);
        assert_eq!(item["Created_At"], "2022-11-01T09:03:19.967Z");
        assert_eq!(
            values(json!({"Rating": "five"}), None),
            Err("unable-to-coerce-value")
        );
        assert_eq!(
            values(json!({"Location": [1]}), None),
            Err("unable-to-coerce-value")
        );
        assert_eq!(values(json!({"Nope": 1}), None), Err("invalid-fields"));
        assert_eq!(
            values(json!({"Location": {"a.b": 1}}), None),
            Err("invalid-keys-in-value-object")
        );
        assert_eq!(
            values(json!({"Name": "x".repeat(MAX_ITEM_CHARS)}), None),
            Err("items-too-large")
        );
        let mut deep = json!(1);
        for _ in 0..60 {
            deep = json!({"k": deep});
        }
        assert_eq!(
            values(json!({"Location": deep}), None),
            Err("too-deep-nesting-in-value-object")
        );
    }

    #[test]
    fn a_patch_adds_and_removes_array_values_and_keeps_the_rest() {
        let base = json!({"id": "r1", "Name": "A", "Top_Dishes": ["French Fries", "Soup"]});
        let patched = values(
            json!({"Top_Dishes": {"$add": ["Biscuits", "Coleslaw"], "$remove": ["French Fries"]}}),
            Some(base),
        )
        .unwrap();
        assert_eq!(patched["Name"], "A");
        assert_eq!(
            patched["Top_Dishes"],
            json!(["Soup", "Biscuits", "Coleslaw"])
        );
    }

    #[test]
    fn definitions_are_refused_with_brazes_ids() {
        let refused = |fields: Value| read_fields(Some(&fields)).unwrap_err().id;
        assert_eq!(refused(json!("x")), "invalid-fields");
        assert_eq!(
            refused(json!([{"name": "a b", "type": "string"}])),
            "invalid-field-names"
        );
        assert_eq!(
            refused(json!([{"name": "a", "type": "date"}])),
            "invalid-field-types"
        );
        assert_eq!(
            refused(json!([{"name": "a", "type": "string"}, {"name": "a", "type": "number"}])),
            "field-names-not-unique"
        );
        assert_eq!(check_id("ok-id_1"), Ok(()));
        assert_eq!(check_id("no/slash").unwrap_err().id, "invalid-ids");
    }

    #[test]
    fn cursors_round_trip_and_others_are_refused() {
        assert_eq!(
            cursor_for(0, None),
            "c2tpcDow",
            "Braze's own first-page cursor"
        );
        assert_eq!(skip_of(&cursor_for(150, None)), Some((150, None)));
        assert_eq!(
            skip_of(&cursor_for(50, Some("item-49"))),
            Some((50, Some("item-49".to_string())))
        );
        assert_eq!(skip_of("bad-cursor"), None);
    }
}
