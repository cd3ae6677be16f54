//! Random identifiers and secrets.
//!
//! Two sources, never mixed: secrets (API keys, Data Import Keys, the admin token) come from the
//! OS generator and fail closed — an error, never predictable bytes; ids that only need to be
//! unique (event ids, Braze ids, segment ids, app groups, sync markers) come from a fast
//! per-thread generator seeded by the OS.

/// The OS random generator failed, so no secret could be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed: {0}")]
pub struct RandomnessError(String);

/// N bytes from the OS generator, for secrets.
pub fn random<const N: usize>() -> Result<[u8; N], RandomnessError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| RandomnessError(e.to_string()))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

thread_local! {
    static FAST: std::cell::Cell<u64> = std::cell::Cell::new(fast_seed());
}

/// The OS's bytes; should it fail, the clock and the thread make ids that are still unique,
/// which is all these ids need (nothing secret is drawn from this generator).
fn fast_seed() -> u64 {
    if let Ok(bytes) = random::<8>() {
        return u64::from_le_bytes(bytes) | 1;
    }
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::thread::current().id().hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish() | 1
}

/// 64 bits from a per-thread SplitMix64 seeded by the OS: unique ids at no syscall cost.
/// Predictable from its output, so never for secrets.
fn fast_u64() -> u64 {
    FAST.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A version 4 UUID from the OS generator: a secret (API keys, Data Import Keys).
pub fn secret_uuid() -> Result<String, RandomnessError> {
    Ok(format_uuid(random()?))
}

/// A version 4 UUID from the fast generator: for event ids and other non-secret ids.
pub fn uuid_v4() -> String {
    format_uuid(unique_bytes())
}

/// A version 4 UUID for a Currents event.
pub fn event_id() -> String {
    uuid_v4()
}

/// N bytes from the fast generator: unique, not secret.
pub fn unique_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let word = fast_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

/// A non-secret id of `n` random bytes, as hex (connector integration ids, key ids).
pub fn id_hex(n: usize) -> String {
    let mut bytes = Vec::with_capacity(n + 8);
    while bytes.len() < n {
        bytes.extend_from_slice(&fast_u64().to_le_bytes());
    }
    hex(&bytes[..n])
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A Braze-style id: 24 hex digits, seconds first like a BSON ObjectId.
pub fn braze_id(now_ms: i64) -> String {
    let seconds = (now_ms / 1000) as u32;
    let tail = fast_u64().to_be_bytes();
    format!("{}{}", hex(&seconds.to_be_bytes()), hex(&tail))
}

/// A secret of `n` bytes from the OS generator, as hex.
pub fn secret_hex(n: usize) -> Result<String, RandomnessError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| RandomnessError(e.to_string()))?;
    Ok(hex(&bytes))
}

/// SHA-256 of a secret, hex; what is stored instead of the secret.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let u = secret_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, secret_uuid().unwrap());
        assert_eq!(secret_hex(32).unwrap().len(), 64);
        assert_eq!(id_hex(12).len(), 24);
        assert_ne!(unique_bytes::<16>(), unique_bytes::<16>());
        let e = event_id();
        assert_eq!((e.len(), &e[14..15]), (36, "4"));
        assert_ne!(e, event_id());
        assert_eq!(braze_id(1_600_000_000_000).len(), 24);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
