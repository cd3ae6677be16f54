//! Credentials at rest: the secret fields of connector and export settings are stored encrypted
//! (XChaCha20-Poly1305, a random 24-byte nonce per value) with a key kept outside the store.
//!
//! One rule for every kind of settings: a JSON string field whose name is in [`SECRET_FIELDS`]
//! is sealed by [`crate::Store`]'s write methods before it reaches the writer and opened by
//! the read methods, so nothing above the store sees a sealed value and nothing on disk holds a
//! plain one. A sealed value reads `eddy-sealed:v1:<hex of nonce and ciphertext>`.
//!
//! Rotation: start with the new key as the current one and the old one as `previous`; values
//! sealed with the previous key (or stored in plain text by an older eddy) are sealed again with
//! the current one at start ([`crate::Store::reseal_secrets`]), after which the old key can go.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;

use crate::StoreError;

/// Field names whose string values are credentials.
pub const SECRET_FIELDS: &[&str] = &[
    "secret_access_key",
    "access_key",
    "service_account_key",
    "api_key",
    "password",
    "signing_key",
];

const SEALED_PREFIX: &str = "eddy-sealed:v1:";
const NONCE_BYTES: usize = 24;

/// A 256-bit key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

fn invalid_key(reason: &str) -> StoreError {
    StoreError::Secrets(format!("invalid secrets key: {reason}"))
}

impl SecretKey {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<SecretKey, StoreError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(invalid_key("expected 64 hex digits"));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| invalid_key("expected 64 hex digits"))?;
        }
        Ok(SecretKey(key))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new random key; fails rather than return a predictable one.
    pub fn generate() -> Result<SecretKey, StoreError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| StoreError::Secrets(format!("no randomness for a key: {e}")))?;
        Ok(SecretKey(key))
    }

    /// Reads the key file, or creates it (mode 0600) with a new key when it does not exist.
    /// Answers whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = SecretKey::from_hex(&text).map_err(|_| {
                    StoreError::Secrets(format!(
                        "{} does not hold a secrets key (64 hex digits)",
                        path.display()
                    ))
                })?;
                return Ok((key, false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Secrets(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        let key = SecretKey::generate()?;
        write_new_private(path, &key.to_hex())
            .map_err(|e| StoreError::Secrets(format!("cannot create {}: {e}", path.display())))?;
        Ok((key, true))
    }
}

fn write_new_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Seals and opens credential fields with the current key (and a previous one while rotating).
#[derive(Clone)]
pub struct Sealer {
    current: SecretKey,
    previous: Option<SecretKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with the current key and, while rotating, the previous one.
    pub fn new(current: SecretKey, previous: Option<SecretKey>) -> Sealer {
        Sealer { current, previous }
    }

    /// Encrypts one value.
    pub fn seal(&self, plain: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Secrets(format!("no randomness for a nonce: {e}")))?;
        let cipher = XChaCha20Poly1305::new((&self.current.0).into());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), plain.as_bytes())
            .map_err(|_| StoreError::Secrets("encryption failed".into()))?;
        let mut out = String::with_capacity(SEALED_PREFIX.len() + 2 * (NONCE_BYTES + sealed.len()));
        out.push_str(SEALED_PREFIX);
        for byte in nonce.iter().chain(sealed.iter()) {
            out.push_str(&format!("{byte:02x}"));
        }
        Ok(out)
    }

    /// Decrypts one sealed value; answers whether the previous key was needed.
    pub fn open(&self, sealed: &str) -> Result<(String, bool), StoreError> {
        let hex = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| StoreError::Secrets("not a sealed value".into()))?;
        let bytes = decode_hex(hex)
            .filter(|b| b.len() > NONCE_BYTES)
            .ok_or_else(|| StoreError::Secrets("a sealed value is damaged".into()))?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| StoreError::Secrets("a sealed value is damaged".into()))?;
        let keys =
            std::iter::once((&self.current, false)).chain(self.previous.iter().map(|k| (k, true)));
        for (key, is_previous) in keys {
            let cipher = XChaCha20Poly1305::new((&key.0).into());
            if let Ok(plain) = cipher.decrypt(&nonce, ciphertext) {
                let text = String::from_utf8(plain)
                    .map_err(|_| StoreError::Secrets("a sealed value is not text".into()))?;
                return Ok((text, is_previous));
            }
        }
        Err(StoreError::Secrets(
            "stored credentials were encrypted with another key: set the key they were stored with (secrets_key_file or EDDY_SECRETS_KEY), or the old one as previous_secrets_key_file while rotating".into(),
        ))
    }

    /// Seals every plain secret field in `value` (recursively). Already sealed values stay.
    pub fn seal_fields(&self, value: &mut Value) -> Result<(), StoreError> {
        visit_secrets(value, &mut |field| {
            if !field.starts_with(SEALED_PREFIX) {
                *field = self.seal(field)?;
            }
            Ok(())
        })
    }

    /// Opens every sealed secret field in `value` (recursively); plain ones stay as they are.
    pub fn open_fields(&self, value: &mut Value) -> Result<(), StoreError> {
        visit_secrets(value, &mut |field| {
            if field.starts_with(SEALED_PREFIX) {
                *field = self.open(field)?.0;
            }
            Ok(())
        })
    }

    /// Whether `value` holds a plain secret or one sealed with the previous key.
    pub fn needs_reseal(&self, value: &Value) -> Result<bool, StoreError> {
        let mut value = value.clone();
        let mut needed = false;
        visit_secrets(&mut value, &mut |field| {
            if !field.starts_with(SEALED_PREFIX) || self.open(field)?.1 {
                needed = true;
            }
            Ok(())
        })?;
        Ok(needed)
    }
}

fn visit_secrets(
    value: &mut Value,
    f: &mut dyn FnMut(&mut String) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match field {
                    Value::String(s) if SECRET_FIELDS.contains(&key.as_str()) => f(s)?,
                    other => visit_secrets(other, f)?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                visit_secrets(item, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_round_trip_and_nothing_plain_remains() {
        let sealer = Sealer::new(SecretKey::generate().unwrap(), None);
        let mut value = json!({"type": "s3", "bucket": "b", "secret_access_key": "AKIASECRET",
                               "nested": {"api_key": "k-123"}, "list": [{"access_key": "az"}]});
        sealer.seal_fields(&mut value).unwrap();
        let text = value.to_string();
        for plain in ["AKIASECRET", "k-123", "\"az\""] {
            assert!(!text.contains(plain), "{plain} left in {text}");
        }
        assert_eq!(value["bucket"], "b");
        assert!(!sealer.needs_reseal(&value).unwrap());
        sealer.open_fields(&mut value).unwrap();
        assert_eq!(value["secret_access_key"], "AKIASECRET");
        assert_eq!(value["nested"]["api_key"], "k-123");
        assert_eq!(value["list"][0]["access_key"], "az");
    }

    #[test]
    fn a_wrong_key_is_an_error_and_the_previous_key_opens() {
        let old = SecretKey::generate().unwrap();
        let new = SecretKey::generate().unwrap();
        let sealed = Sealer::new(old.clone(), None).seal("s3cret").unwrap();
        let wrong = Sealer::new(new.clone(), None);
        assert!(matches!(wrong.open(&sealed), Err(StoreError::Secrets(_))));
        let rotating = Sealer::new(new, Some(old));
        assert_eq!(rotating.open(&sealed).unwrap(), ("s3cret".into(), true));
        assert!(rotating.needs_reseal(&json!({"api_key": sealed})).unwrap());
        assert!(rotating.needs_reseal(&json!({"api_key": "plain"})).unwrap());
    }

    #[test]
    fn damaged_values_and_keys_are_refused() {
        let sealer = Sealer::new(SecretKey::generate().unwrap(), None);
        let mut sealed = sealer.seal("x").unwrap();
        let last = sealed.pop().unwrap();
        sealed.push(if last == '0' { '1' } else { '0' });
        assert!(sealer.open(&sealed).is_err());
        assert!(sealer.open("eddy-sealed:v1:zz").is_err());
        assert!(SecretKey::from_hex("abc").is_err());
        let key = SecretKey::generate().unwrap();
        assert_eq!(SecretKey::from_hex(&key.to_hex()).unwrap(), key);
    }

    #[test]
    fn key_files_are_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eddy.key");
        let (key, created) = SecretKey::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = SecretKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(SecretKey::load_or_create(&path).is_err());
    }
}
