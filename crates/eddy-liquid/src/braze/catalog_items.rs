//! `{% catalog_items NAME id… [:rerender] %}`: reads items of one of the workspace's catalogs
//! into `items`, in the order asked, as Braze documents. Liquid in the markup
//! (`{{ wishlist[0] }}`) is rendered first; ids the catalog does not hold are left out, so
//! `items` simply has fewer objects. With `:rerender`, Liquid in the items' text values is
//! rendered once, one level deep.

use crate::fetch::FetchError;
use crate::stop::Stop;
use crate::tree::{Block, Runtime, Tag};
use crate::value::{Object, Value};

use super::Braze;

/// Items one tag may read.
const MAX_IDS: usize = 100;

/// A `{% catalog_items … %}` tag as written.
#[derive(Debug, Clone)]
pub struct CatalogItems {
    names: Block,
    rerender: bool,
}

impl CatalogItems {
    /// Reads the markup: the catalog's name and ids (Liquid allowed), then `:rerender`.
    pub fn parse(markup: &str) -> Result<CatalogItems, String> {
        let trimmed = markup.trim();
        let (names, rerender) = match trimmed.strip_suffix(":rerender") {
            Some(rest) if rest.is_empty() || rest.ends_with(char::is_whitespace) => (rest, true),
            _ => (trimmed, false),
        };
        if names.trim().is_empty() {
            return Err("catalog_items needs a catalog name".into());
        }
        let names = crate::parse::parse(names, &Braze)
            .map_err(|e| format!("in catalog_items: {}", e.message))?;
        Ok(CatalogItems { names, rerender })
    }
}

impl Tag for CatalogItems {
    fn render(&self, runtime: &mut dyn Runtime, _out: &mut String) -> Result<(), Stop> {
        let text = runtime.render_fragment(&self.names)?;
        let mut words = text.split_whitespace();
        let Some(catalog) = words.next() else {
            return runtime.assign_weighed("items", Value::Array(Default::default()), 0);
        };
        let ids: Vec<String> = words.map(str::to_string).collect();
        // Each id is a read: a template that names ids without end (from a long array) stops
        // with a Liquid error, and a render past its time reads nothing more.
        if ids.len() > MAX_IDS {
            return Err(Stop::Error(format!(
                "catalog_items reads at most {MAX_IDS} items at a time"
            )));
        }
        runtime.time_left()?;
        let found = match runtime.catalog_items(catalog, &ids) {
            Ok(found) => found,
            Err(FetchError::Refused(reason)) => {
                runtime.warn(format!("catalog_items: {reason}"));
                Vec::new()
            }
            Err(FetchError::Failed(reason)) => {
                return Err(Stop::Error(format!("catalog_items: {reason}")));
            }
        };
        let mut items = Vec::with_capacity(found.len());
        for item in &found {
            let value = Value::from_json(item);
            items.push(if self.rerender {
                rerendered(runtime, value)?
            } else {
                value
            });
        }
        let value = Value::Array(std::sync::Arc::new(items));
        let weight = value.weight();
        runtime.assign_weighed("items", value, weight)
    }

    fn blank(&self) -> bool {
        true
    }
}

/// An item whose text values are rendered as Liquid (one level: what they render to is kept
/// as it is).
fn rerendered(runtime: &mut dyn Runtime, item: Value) -> Result<Value, Stop> {
    let Value::Object(fields) = item else {
        return Ok(item);
    };
    let mut out = Object::default();
    for (name, value) in fields.iter() {
        let value = match value {
            Value::Str(text) if text.contains("{{") || text.contains("{%") => {
                match crate::parse::parse(text, &Braze) {
                    Ok(block) => Value::Str(runtime.render_fragment(&block)?),
                    Err(e) => return Err(Stop::Error(format!("catalog item: {}", e.message))),
                }
            }
            other => other.clone(),
        };
        out.insert(name.clone(), value);
    }
    Ok(Value::Object(std::sync::Arc::new(out)))
}
