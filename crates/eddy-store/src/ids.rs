//! Random identifiers: UUIDs for events, keys and app groups; 24-hex Braze ids.

/// N bytes from the OS generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator only fails on broken systems; a zeroed id would still be unique by its
    // other parts (time, counters) where it matters.
    let _ = getrandom::fill(&mut bytes);
    bytes
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
    static FAST: std::cell::Cell<u64> = std::cell::Cell::new(u64::from_le_bytes(random::<8>()) | 1);
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

/// A random (version 4) UUID from the OS generator: for secrets such as API keys.
pub fn uuid_v4() -> String {
    format_uuid(random())
}

/// A version 4 UUID from the fast generator: for event ids and other non-secret ids.
pub fn event_id() -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fast_u64().to_le_bytes());
    b[8..].copy_from_slice(&fast_u64().to_le_bytes());
    format_uuid(b)
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

/// A random secret of `n` bytes as hex.
pub fn secret_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    let _ = getrandom::fill(&mut bytes);
    hex(&bytes)
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
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
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
