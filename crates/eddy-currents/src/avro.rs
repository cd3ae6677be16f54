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
        let fields = parse_fields(json)?;
        Ok(Schema { fields, json })
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

/// The fields of a record schema given as JSON text.
pub fn parse_fields(json: &str) -> Result<Vec<Field>, AvroError> {
    let value: Value = serde_json::from_str(json).map_err(|e| AvroError::Schema(e.to_string()))?;
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
    Ok(out)
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

/// A decoding failure of an Object Container File.
#[derive(Debug, thiserror::Error)]
#[error("not a readable avro container file: {0}")]
pub struct ReadError(String);

fn bad(why: &str) -> ReadError {
    ReadError(why.to_string())
}

/// Reads an Object Container File (codec null or deflate) into its records, as JSON objects.
pub fn read_container(file: &[u8]) -> Result<Vec<Map<String, Value>>, ReadError> {
    let mut r = Reader { b: file, pos: 0 };
    if r.take(4)? != b"Obj\x01" {
        return Err(bad("missing magic"));
    }
    let mut schema_json = None;
    let mut codec = Codec::Null;
    loop {
        let mut entries = r.long()?;
        if entries == 0 {
            break;
        }
        if entries < 0 {
            entries = -entries;
            r.long()?;
        }
        for _ in 0..entries {
            let key = r.bytes()?.to_vec();
            let value = r.bytes()?;
            match key.as_slice() {
                b"avro.schema" => schema_json = Some(String::from_utf8_lossy(value).into_owned()),
                b"avro.codec" => {
                    codec = match value {
                        b"null" => Codec::Null,
                        b"deflate" => Codec::Deflate,
                        other => {
                            return Err(ReadError(format!(
                                "codec '{}' is not supported",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let schema_json = schema_json.ok_or_else(|| bad("no avro.schema"))?;
    let fields = parse_fields(&schema_json).map_err(|e| ReadError(e.to_string()))?;
    let sync = r.take(16)?.to_vec();
    let mut records = Vec::new();
    while r.pos < file.len() {
        let count = r.long()?;
        let size = usize::try_from(r.long()?).map_err(|_| bad("negative block size"))?;
        let raw = r.take(size)?;
        let data = match codec {
            Codec::Null => raw.to_vec(),
            Codec::Deflate => {
                use std::io::Read;
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(raw)
                    .read_to_end(&mut out)
                    .map_err(|e| ReadError(e.to_string()))?;
                out
            }
        };
        let mut block = Reader { b: &data, pos: 0 };
        for _ in 0..count {
            let mut record = Map::new();
            for field in &fields {
                let value = block.value(&field.ty)?;
                record.insert(field.name.clone(), value);
            }
            records.push(record);
        }
        if r.take(16)? != sync.as_slice() {
            return Err(bad("sync marker mismatch"));
        }
    }
    Ok(records)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let out = &self.b[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn long(&mut self) -> Result<i64, ReadError> {
        let mut n: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(bad("varint too long"));
            }
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let len = usize::try_from(self.long()?).map_err(|_| bad("negative length"))?;
        self.take(len)
    }

    fn value(&mut self, ty: &Type) -> Result<Value, ReadError> {
        Ok(match ty {
            Type::Null => Value::Null,
            Type::Boolean => Value::Bool(self.take(1)?[0] == 1),
            Type::Int | Type::Long => Value::from(self.long()?),
            Type::Float => {
                let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| bad("float"))?;
                let v = f32::from_le_bytes(raw);
                // Through the shortest decimal text, so 0.1f32 reads back as 0.1.
                let v: f64 = v.to_string().parse().unwrap_or(f64::from(v));
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
            }
            Type::Double => {
                let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("double"))?;
                serde_json::Number::from_f64(f64::from_le_bytes(raw))
                    .map_or(Value::Null, Value::Number)
            }
            Type::String => Value::String(String::from_utf8_lossy(self.bytes()?).into_owned()),
            Type::Union(branches) => {
                let i = usize::try_from(self.long()?).map_err(|_| bad("union branch"))?;
                let branch = branches.get(i).ok_or_else(|| bad("union branch"))?;
                self.value(branch)?
            }
            Type::Array(items) => {
                let mut out = Vec::new();
                loop {
                    let mut n = self.long()?;
                    if n == 0 {
                        break;
                    }
                    if n < 0 {
                        n = -n;
                        self.long()?;
                    }
                    for _ in 0..n {
                        out.push(self.value(items)?);
                    }
                }
                Value::Array(out)
            }
        })
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

    #[test]
    fn reads_back_what_it_writes_with_both_codecs() {
        let s = schema();
        for codec in [Codec::Null, Codec::Deflate] {
            let mut c = Container::new(s, codec, [7; 16]);
            let a = json!({"id": "a", "time": 1, "tags": ["x", "y"], "price": 1.5, "ok": true});
            let b = json!({"id": "b", "time": -3, "price": 0.1});
            c.append(a.as_object().unwrap()).unwrap();
            c.append(b.as_object().unwrap()).unwrap();
            let records = read_container(&c.finish().unwrap()).unwrap();
            assert_eq!(records.len(), 2);
            assert_eq!(Value::Object(records[0].clone()), a);
            assert_eq!(records[1]["price"], json!(0.1));
            assert_eq!(records[1]["ok"], Value::Null);
        }
        assert!(read_container(b"Obj\x01\x02").is_err());
        assert!(read_container(b"nope").is_err());
    }
}
