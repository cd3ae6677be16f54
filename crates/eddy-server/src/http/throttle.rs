//! Wrong admin tokens, throttled per client address: after [`MAX_FAILURES`] failures within a
//! minute an address is answered 429 for a minute (logged once), on the admin API and the
//! dashboard's sign-in alike. The right token from any other address is never held back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The address a request came from, put in its extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Failures an address may have within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in, and how long a blocked address waits.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it, those whose window ended are forgotten.
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug)]
struct Failures {
    since: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// Failed admin-token attempts per address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

impl AuthThrottle {
    /// `Err(seconds to wait)` while the address is blocked.
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), u64> {
        let Some(addr) = addr else { return Ok(()) };
        let addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        match addresses.get(&addr).and_then(|f| f.blocked_until) {
            Some(until) if until > Instant::now() => {
                Err(until.duration_since(Instant::now()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a wrong token from `addr`; the failure that reaches the limit blocks it.
    pub fn failed(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if addresses.len() >= MAX_ADDRESSES {
            addresses.retain(|_, f| {
                now.duration_since(f.since) < WINDOW || f.blocked_until.is_some_and(|u| u > now)
            });
        }
        let entry = addresses.entry(addr).or_insert(Failures {
            since: now,
            count: 0,
            blocked_until: None,
        });
        if now.duration_since(entry.since) >= WINDOW {
            entry.since = now;
            entry.count = 0;
        }
        entry.count += 1;
        if entry.count == MAX_FAILURES {
            entry.blocked_until = Some(now + WINDOW);
            tracing::warn!(
                client = %addr,
                failures = MAX_FAILURES,
                "wrong admin tokens: this address is refused for a minute"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_at_the_limit_and_others_are_not() {
        let throttle = AuthThrottle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(Some(a));
        }
        assert!(throttle.check(Some(a)).is_ok());
        throttle.failed(Some(a));
        assert!(throttle.check(Some(a)).is_err());
        assert!(throttle.check(Some(b)).is_ok());
        assert!(throttle.check(None).is_ok());
    }
}
