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
}
