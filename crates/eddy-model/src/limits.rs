//! The length limits of everything eddy stores, checked at the edge.
//!
//! Braze documents few of these for its REST API. Its SDKs refuse a user id longer than 997
//! bytes (`changeUser` in the Web SDK: "Rejected user id … because it is longer than 997
//! bytes"), so every identifier eddy resolves (external id, braze id, alias name and label,
//! device id, phone, push token, app id, cohort id, subscription group id) shares that limit.
//! Names given through the admin API (workspaces, partners, segments, connectors) are eddy's
//! own and get 255 bytes. Strings inside profiles keep Braze's 255-character rule
//! ([`crate::attrs::MAX_STRING_CHARS`]).

/// Longest identifier, in bytes (UTF-8).
pub const MAX_IDENTIFIER_BYTES: usize = 997;
/// Longest admin-given name (workspace, partner, segment, connector), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks an identifier: non-empty and at most [`MAX_IDENTIFIER_BYTES`].
pub fn check_identifier(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("'{field}' must be a non-empty string"));
    }
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "'{field}' is longer than {MAX_IDENTIFIER_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Checks an admin-given name: non-empty and at most [`MAX_NAME_BYTES`], no control characters.
pub fn check_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("'{field}' must be a non-empty string"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!("'{field}' is longer than {MAX_NAME_BYTES} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("'{field}' must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_at_the_limit() {
        assert!(check_identifier("external_id", &"a".repeat(997)).is_ok());
        assert_eq!(
            check_identifier("external_id", &"a".repeat(998)).unwrap_err(),
            "'external_id' is longer than 997 bytes"
        );
        // Bytes, not characters: 333 three-byte characters are 999 bytes.
        assert!(check_identifier("alias_name", &"€".repeat(333)).is_err());
        assert!(check_identifier("alias_name", "").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("name", &"n".repeat(255)).is_ok());
        assert!(check_name("name", &"n".repeat(256)).is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
        assert!(check_name("name", "").is_err());
    }
}
