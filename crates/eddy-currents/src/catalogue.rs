//! The Currents event catalogue: every event type and its writer schema, embedded at build.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::avro::Schema;

include!(concat!(env!("OUT_DIR"), "/schemas.rs"));

fn parsed() -> &'static HashMap<&'static str, Schema> {
    static PARSED: OnceLock<HashMap<&'static str, Schema>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let mut map = HashMap::new();
        for (event_type, json) in SCHEMAS {
            match Schema::parse(json) {
                Ok(schema) => {
                    map.insert(*event_type, schema);
                }
                Err(e) => tracing::error!(event_type, error = %e, "unusable Currents schema"),
            }
        }
        map
    })
}

/// The writer schema of an event type.
pub fn schema(event_type: &str) -> Option<&'static Schema> {
    parsed().get(event_type)
}

/// Every event type, sorted.
pub fn event_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = parsed().keys().copied().collect();
    types.sort_unstable();
    types
}

/// The `time` Braze's test events carry.
pub const TEST_TIME: i64 = 2_033_802_504;

/// A placeholder record of an event type, as Braze's "Send Test Events": every field filled with a
/// value of its type (strings with the field's name).
pub fn placeholder(event_type: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use crate::avro::Type;
    use serde_json::{Value, json};
    fn value(name: &str, ty: &Type) -> Value {
        match ty {
            Type::Null => Value::Null,
            Type::Boolean => json!(true),
            Type::Int | Type::Long if name == "time" => json!(TEST_TIME),
            Type::Long if name.ends_with("_ms") => json!(TEST_TIME * 1000),
            Type::Int | Type::Long => json!(1),
            Type::Float | Type::Double => json!(1.5),
            Type::String => json!(name),
            Type::Array(items) => json!([value(name, items)]),
            Type::Union(branches) => branches
                .iter()
                .find(|b| **b != Type::Null)
                .map_or(Value::Null, |b| value(name, b)),
        }
    }
    let schema = schema(event_type)?;
    Some(
        schema
            .fields
            .iter()
            .map(|f| (f.name.clone(), value(&f.name, &f.ty)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses() {
        assert_eq!(SCHEMAS.len(), 100);
        assert_eq!(
            event_types().len(),
            100,
            "every embedded schema is understood"
        );
        let custom = schema("users.behaviors.CustomEvent").unwrap();
        assert_eq!(custom.fields[0].name, "id");
        assert_eq!(
            custom
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .len(),
            16
        );
    }

    #[test]
    fn every_type_has_an_encodable_placeholder() {
        for event_type in event_types() {
            let record = placeholder(event_type).expect("placeholder");
            let schema = schema(event_type).expect("schema");
            schema
                .validate(&record)
                .unwrap_or_else(|e| panic!("{event_type}: {e}"));
            let mut out = Vec::new();
            schema
                .encode(&record, &mut out)
                .unwrap_or_else(|e| panic!("{event_type}: {e}"));
            assert_eq!(record["time"].as_i64(), Some(TEST_TIME), "{event_type}");
        }
    }
}
