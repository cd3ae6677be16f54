//! Key layout of every table. Integers are big-endian so that keys sort numerically.

/// Identifier kinds in the `idents` table.
pub mod kind {
    /// external_id → id.
    pub const EXTERNAL: u8 = b'e';
    /// braze_id → id.
    pub const BRAZE: u8 = b'b';
    /// alias (label, name) → id.
    pub const ALIAS: u8 = b'a';
    /// lowercase email → ids (several profiles may share one).
    pub const EMAIL: u8 = b'm';
    /// phone → ids.
    pub const PHONE: u8 = b'p';
    /// device id → id.
    pub const DEVICE: u8 = b'd';
    /// merged-away id → surviving id.
    pub const MERGED: u8 = b'M';
}

/// `profiles`: workspace, internal id.
pub fn profile(ws: u32, id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8);
    key.extend_from_slice(&ws.to_be_bytes());
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Splits a `profiles` key into its internal id.
pub fn profile_id(key: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = key.get(4..8)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// The prefix of every key of a workspace.
pub fn workspace_prefix(ws: u32) -> Vec<u8> {
    ws.to_be_bytes().to_vec()
}

/// `idents`: workspace, kind, value.
pub fn ident(ws: u32, kind: u8, value: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + value.len());
    key.extend_from_slice(&ws.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(value);
    key
}

/// The ident value of an alias: label, NUL, name.
pub fn alias_value(label: &str, name: &str) -> Vec<u8> {
    let mut value = Vec::with_capacity(label.len() + 1 + name.len());
    value.extend_from_slice(label.as_bytes());
    value.push(0);
    value.extend_from_slice(name.as_bytes());
    value
}

/// `outbox`: global sequence number.
pub fn outbox(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// `usage`: workspace, `YYYY-MM-DD`.
pub fn usage(ws: u32, day: &str) -> Vec<u8> {
    let mut key = ws.to_be_bytes().to_vec();
    key.extend_from_slice(day.as_bytes());
    key
}

/// Encodes an internal id list (email and phone indexes).
pub fn encode_ids(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_be_bytes()).collect()
}

/// Decodes an internal id list.
pub fn decode_ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Decodes one internal id.
pub fn decode_id(bytes: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// `members`: workspace, partner, NUL, cohort id, NUL, internal id.
pub fn member(ws: u32, partner: &str, cohort_id: &str, id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(14 + partner.len() + cohort_id.len());
    key.extend_from_slice(&ws.to_be_bytes());
    key.extend_from_slice(partner.as_bytes());
    key.push(0);
    key.extend_from_slice(cohort_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Splits a `members` key into (workspace, partner, cohort id, internal id).
pub fn parse_member(key: &[u8]) -> Option<(u32, String, String, u32)> {
    if key.len() < 10 {
        return None;
    }
    let ws = u32::from_be_bytes(key[..4].try_into().ok()?);
    let id = u32::from_be_bytes(key[key.len() - 4..].try_into().ok()?);
    let middle = &key[4..key.len() - 5];
    let split = middle.iter().position(|b| *b == 0)?;
    let partner = String::from_utf8(middle[..split].to_vec()).ok()?;
    let cohort_id = String::from_utf8(middle[split + 1..].to_vec()).ok()?;
    Some((ws, partner, cohort_id, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys_round_trip() {
        let key = member(7, "amplitude", "abc 1", 42);
        assert_eq!(
            parse_member(&key),
            Some((7, "amplitude".into(), "abc 1".into(), 42))
        );
    }
}
