//! Key layout of every table. Integers are big-endian so that keys sort numerically.
//!
//! Every variable part of a key (an identifier, a name) goes through [`push_part`], which keeps
//! it as is up to [`MAX_KEY_PART`] bytes and replaces a longer one by its first bytes, a 0xFF
//! marker and the hex SHA-256 of the whole. A key therefore stays a few KiB at most, far below
//! any engine's limit (fjall's is 65,535 bytes), whatever reaches the store: the edge validates
//! lengths, and this makes an over-long key impossible even where validation was missed. 0xFF
//! never occurs in UTF-8, so a hashed part cannot equal a stored one.

use sha2::{Digest, Sha256};

/// Longest variable key part kept verbatim, in bytes.
pub const MAX_KEY_PART: usize = 1024;

/// Appends a variable key part, hashed when longer than [`MAX_KEY_PART`].
pub fn push_part(key: &mut Vec<u8>, part: &[u8]) {
    if part.len() <= MAX_KEY_PART {
        key.extend_from_slice(part);
        return;
    }
    let digest = Sha256::digest(part);
    let kept = MAX_KEY_PART - 1 - 2 * digest.len();
    key.extend_from_slice(&part[..kept]);
    key.push(0xFF);
    for byte in digest {
        key.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    debug_assert!(key.len() <= 16 + 3 * MAX_KEY_PART);
}

/// A key part as a string, bounded like [`push_part`].
pub fn bounded_str(part: &str) -> std::borrow::Cow<'_, str> {
    if part.len() <= MAX_KEY_PART {
        return std::borrow::Cow::Borrowed(part);
    }
    let mut bytes = Vec::with_capacity(MAX_KEY_PART);
    push_part(&mut bytes, part.as_bytes());
    std::borrow::Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

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
    let mut key = Vec::with_capacity(5 + value.len().min(MAX_KEY_PART));
    key.extend_from_slice(&ws.to_be_bytes());
    key.push(kind);
    push_part(&mut key, value);
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

/// Decodes an outbox sequence number (a key, or the stored head); anything but 8 bytes is damage.
pub fn decode_seq(bytes: &[u8]) -> Result<u64, crate::StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| crate::StoreError::Corrupt {
        table: "outbox",
        reason: format!("a sequence number of {} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
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
    push_part(&mut key, partner.as_bytes());
    key.push(0);
    push_part(&mut key, cohort_id.as_bytes());
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
    fn long_parts_are_bounded_and_distinct() {
        let long = vec![b'x'; 70_000];
        let key = ident(1, kind::ALIAS, &long);
        assert_eq!(key.len(), 5 + MAX_KEY_PART);
        let mut other = long.clone();
        other[69_999] = b'y';
        assert_ne!(key, ident(1, kind::ALIAS, &other));
        // At the limit a part is kept as is.
        let exact = vec![b'x'; MAX_KEY_PART];
        assert_eq!(&ident(1, kind::ALIAS, &exact)[5..], &exact[..]);
        let member_key = member(1, &"p".repeat(70_000), &"c".repeat(70_000), 3);
        assert!(member_key.len() < 3 * MAX_KEY_PART);
        assert!(bounded_str(&"n".repeat(70_000)).len() < 2 * MAX_KEY_PART);
    }

    #[test]
    fn member_keys_round_trip() {
        let key = member(7, "amplitude", "abc 1", 42);
        assert_eq!(
            parse_member(&key),
            Some((7, "amplitude".into(), "abc 1".into(), 42))
        );
    }
}
