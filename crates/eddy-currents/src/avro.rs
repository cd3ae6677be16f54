//! Avro binary encoding of Currents records and Object Container Files, for the types the
//! Currents schemas use: null, boolean, int, long, float, double, string, unions and arrays.

use serde_json::{Map, Value};

/// Why a record does not fit its schema, or a schema could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AvroError {
    /// The schema JSON is not one this encoder understands.
    #[error("unsupported schema: {0}")]
    Schema(String),
    /// A required field is missing.
    #[error("'{0}' is required")]
    Missing(String),
    /// A field's value does not have the field's type.
    #[error("'{field}' must be {expected}")]
    Type {
        /// The field.
        field: String,
        /// What the schema wants.
        expected: String,
    },
    /// The record has a field the schema does not.
    #[error("'{0}' is not a field of this event type")]
    Unknown(String),
}

/// A field type.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean,
    /// `int` (32-bit).
    Int,
    /// `long` (64-bit).
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `string`.
    String,
    /// A union, branches in schema order.
    Union(Vec<Type>),
    /// An array.
    Array(Box<Type>),
}

impl Type {
    fn parse(json: &Value) -> Result<Type, AvroError> {
        match json {
            Value::String(name) => match name.as_str() {
                "null" => Ok(Type::Null),
                "boolean" => Ok(Type::Boolean),
                "int" => Ok(Type::Int),
                "long" => Ok(Type::Long),
                "float" => Ok(Type::Float),
                "double" => Ok(Type::Double),
                "string" => Ok(Type::String),
                other => Err(AvroError::Schema(format!("type '{other}'"))),
            },
            Value::Array(branches) => Ok(Type::Union(
                branches.iter().map(Type::parse).collect::<Result<_, _>>()?,
            )),
            Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("array") => {
                let items = map
                    .get("items")
                    .ok_or_else(|| AvroError::Schema("array without items".into()))?;
                Ok(Type::Array(Box::new(Type::parse(items)?)))
            }
            other => Err(AvroError::Schema(other.to_string())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Type::Null => "null".into(),
            Type::Boolean => "a boolean".into(),
            Type::Int => "a 32-bit integer".into(),
            Type::Long => "an integer".into(),
            Type::Float | Type::Double => "a number".into(),
            Type::String => "a string".into(),
            Type::Union(branches) => branches
                .iter()
                .map(Type::describe)
                .collect::<Vec<_>>()
                .join(" or "),
            Type::Array(items) => format!("an array of {}", items.describe()),
        }
    }

    fn accepts(&self, value: &Value) -> bool {
        match (self, value) {
            (Type::Null, Value::Null) => true,
            (Type::Boolean, Value::Bool(_)) => true,
            (Type::Int, Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            (Type::Long, Value::Number(n)) => n.as_i64().is_some(),
            (Type::Float | Type::Double, Value::Number(_)) => true,
            (Type::String, Value::String(_)) => true,
            (Type::Array(items), Value::Array(values)) => values.iter().all(|v| items.accepts(v)),
            (Type::Union(branches), v) => branches.iter().any(|b| b.accepts(v)),
            _ => false,
        }
    }
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Type,
}

/// A Currents record schema.
#[derive(Debug, Clone)]
pub struct Schema {
    /// Fields in schema order.
    pub fields: Vec<Field>,
    /// The schema JSON as written into files.
    pub json: &'static str,
}

impl Schema {
    /// Reads a record schema.
    pub fn parse(json: &'static str) -> Result<Schema, AvroError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| AvroError::Schema(e.to_string()))?;
        if value.get("type").and_then(Value::as_str) != Some("record") {
            return Err(AvroError::Schema("not a record".into()));
        }
        let Some(Value::Array(fields)) = value.get("fields") else {
            return Err(AvroError::Schema("record without fields".into()));
        };
        let mut out = Vec::with_capacity(fields.len());
        for field in fields {
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| AvroError::Schema("field without name".into()))?;
            let ty = Type::parse(field.get("type").unwrap_or(&Value::Null))?;
            out.push(Field {
                name: name.to_string(),
                ty,
            });
        }
        Ok(Schema { fields: out, json })
    }

    /// Checks a record: every required field present and typed, no unknown field.
    pub fn validate(&self, record: &Map<String, Value>) -> Result<(), AvroError> {
        for name in record.keys() {
            if !self.fields.iter().any(|f| f.name == *name) {
                return Err(AvroError::Unknown(name.clone()));
            }
        }
        for field in &self.fields {
            let value = record.get(&field.name).unwrap_or(&Value::Null);
            if !field.ty.accepts(value) {
                if value.is_null() {
                    return Err(AvroError::Missing(field.name.clone()));
                }
                return Err(AvroError::Type {
                    field: field.name.clone(),
                    expected: field.ty.describe(),
                });
            }
        }
        Ok(())
    }

    /// Appends a record's Avro binary encoding; absent optional fields are null.
    pub fn encode(&self, record: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), AvroError> {
        for field in &self.fields {
            let value = record.get(&field.name).unwrap_or(&Value::Null);
            encode_value(&field.name, &field.ty, value, out)?;
        }
        Ok(())
    }
}

fn type_error(field: &str, ty: &Type) -> AvroError {
    AvroError::Type {
        field: field.to_string(),
        expected: ty.describe(),
    }
}

fn encode_value(field: &str, ty: &Type, value: &Value, out: &mut Vec<u8>) -> Result<(), AvroError> {
    match (ty, value) {
        (Type::Null, Value::Null) => Ok(()),
        (Type::Boolean, Value::Bool(b)) => {
            out.push(u8::from(*b));
            Ok(())
        }
        (Type::Int, Value::Number(n)) => match n.as_i64().filter(|i| i32::try_from(*i).is_ok()) {
            Some(i) => {
                put_long(out, i);
                Ok(())
            }
            None => Err(type_error(field, ty)),
        },
        (Type::Long, Value::Number(n)) => match n.as_i64() {
            Some(i) => {
                put_long(out, i);
                Ok(())
            }
            None => Err(type_error(field, ty)),
        },
        (Type::Float, Value::Number(n)) => {
            out.extend_from_slice(&(n.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
            Ok(())
        }
        (Type::Double, Value::Number(n)) => {
            out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            Ok(())
        }
        (Type::String, Value::String(s)) => {
            put_bytes(out, s.as_bytes());
            Ok(())
        }
        (Type::Array(items), Value::Array(values)) => {
            if !values.is_empty() {
                put_long(out, values.len() as i64);
                for v in values {
                    encode_value(field, items, v, out)?;
                }
            }
            put_long(out, 0);
            Ok(())
        }
        (Type::Union(branches), value) => {
            let Some(index) = branches.iter().position(|b| b.accepts(value)) else {
                return Err(type_error(field, ty));
            };
            put_long(out, index as i64);
            encode_value(field, &branches[index], value, out)
        }
        (Type::Null, _) => Err(type_error(field, ty)),
        (_, Value::Null) => Err(AvroError::Missing(field.to_string())),
        _ => Err(type_error(field, ty)),
    }
}

/// Zig-zag variable-length encoding of a long (also used for ints).
pub fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// Block compression of a container file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Uncompressed, as Braze writes.
    #[default]
    Null,
    /// Raw deflate (RFC 1951).
    Deflate,
}

/// An Object Container File being built: header, one data block, sync markers.
pub struct Container {
    schema: &'static Schema,
    codec: Codec,
    sync: [u8; 16],
    block: Vec<u8>,
    count: u64,
}

impl Container {
    /// A new file for `schema`, with a random sync marker.
    pub fn new(schema: &'static Schema, codec: Codec, sync: [u8; 16]) -> Container {
        Container {
            schema,
            codec,
            sync,
            block: Vec::new(),
            count: 0,
        }
    }

    /// Adds one record.
    pub fn append(&mut self, record: &Map<String, Value>) -> Result<(), AvroError> {
        let mark = self.block.len();
        if let Err(e) = self.schema.encode(record, &mut self.block) {
            self.block.truncate(mark);
            return Err(e);
        }
        self.count += 1;
        Ok(())
    }

    /// Records added.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when no record was added (such a file is never written).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The complete file.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.block.len() + self.schema.json.len() + 64);
        out.extend_from_slice(b"Obj\x01");
        // Metadata map: two entries, then the end of the map.
        put_long(&mut out, 2);
        put_bytes(&mut out, b"avro.schema");
        put_bytes(&mut out, self.schema.json.as_bytes());
        put_bytes(&mut out, b"avro.codec");
        put_bytes(
            &mut out,
            match self.codec {
                Codec::Null => b"null",
                Codec::Deflate => b"deflate",
            },
        );
        put_long(&mut out, 0);
        out.extend_from_slice(&self.sync);
        let data = match self.codec {
            Codec::Null => self.block,
            Codec::Deflate => {
                use std::io::Write;
                let mut encoder =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&self.block)?;
                encoder.finish()?
            }
        };
        put_long(&mut out, self.count as i64);
        put_long(&mut out, data.len() as i64);
        out.extend_from_slice(&data);
        out.extend_from_slice(&self.sync);
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A minimal reader for tests: the header's schema and codec, and the raw block.
    pub fn read_long(bytes: &[u8], pos: &mut usize) -> i64 {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let b = bytes[*pos];
            *pos += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        ((n >> 1) as i64) ^ -((n & 1) as i64)
    }

    fn schema() -> &'static Schema {
        Box::leak(Box::new(
            Schema::parse(
                r#"{"type":"record","name":"T","fields":[{"name":"id","type":"string"},{"name":"time","type":"int"},
                {"name":"ok","type":["null","boolean"],"default":null},{"name":"tags","type":["null",{"type":"array","items":"string"}],"default":null},
                {"name":"price","type":"float"}]}"#,
            )
            .unwrap(),
        ))
    }

    #[test]
    fn zigzag() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (-64, vec![127]),
            (64, vec![128, 1]),
        ] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            let mut pos = 0;
            assert_eq!(read_long(&out, &mut pos), v);
        }
    }

    #[test]
    fn encodes_records() {
        let s = schema();
        let mut out = Vec::new();
        s.encode(
            json!({"id": "a", "time": 1, "tags": ["x"], "price": 1.5})
                .as_object()
                .unwrap(),
            &mut out,
        )
        .unwrap();
        // id "a", time 1, ok null (branch 0), tags branch 1 [1 item "x", end], price 1.5f32
        let mut expected = vec![2, b'a', 2, 0, 2, 2, 2, b'x', 0];
        expected.extend_from_slice(&1.5f32.to_le_bytes());
        assert_eq!(out, expected);
    }

    #[test]
    fn validates_with_clear_errors() {
        let s = schema();
        let check = |v: Value| {
            s.validate(v.as_object().unwrap())
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(json!({"id": "a", "time": 1, "price": 2})), Ok(()));
        assert_eq!(
            check(json!({"time": 1, "price": 2})),
            Err("'id' is required".into())
        );
        assert_eq!(
            check(json!({"id": 1, "time": 1, "price": 2})),
            Err("'id' must be a string".into())
        );
        assert_eq!(
            check(json!({"id": "a", "time": 1e10, "price": 2})),
            Err("'time' must be a 32-bit integer".into())
        );
        assert_eq!(
            check(json!({"id": "a", "time": 1, "price": 2, "x": 1})),
            Err("'x' is not a field of this event type".into())
        );
        assert_eq!(
            check(json!({"id": "a", "time": 1, "price": 2, "ok": "yes"})),
            Err("'ok' must be null or a boolean".into())
        );
    }

    #[test]
    fn container_layout() {
        let s = schema();
        let mut c = Container::new(s, Codec::Null, [7; 16]);
        c.append(
            json!({"id": "a", "time": 1, "price": 0})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(c.append(json!({"id": 5}).as_object().unwrap()).is_err());
        assert_eq!(c.len(), 1);
        let file = c.finish().unwrap();
        assert_eq!(&file[..4], b"Obj\x01");
        assert_eq!(&file[file.len() - 16..], &[7; 16]);
        let mut pos = 4;
        assert_eq!(read_long(&file, &mut pos), 2, "two metadata entries");
    }
}
