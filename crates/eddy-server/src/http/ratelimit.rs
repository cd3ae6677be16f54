//! Per-key, per-endpoint-group fixed-window rate limits with Braze's defaults, and the
//! `X-RateLimit-*` headers every response carries.
//!
//! On a store several eddy nodes share, a key's limit holds across the cluster: each window's
//! count lives in the database, and a node takes allowance from it in blocks (a hundredth of the
//! limit, 1 to 1,000 requests) that it then spends locally. The cluster never lets more than the
//! limit through; it may refuse a little early, by at most the blocks other nodes hold unspent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A fixed-window request limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u64,
    /// Window length in seconds.
    pub window_seconds: u64,
}

/// Endpoint groups and their default limits (Braze's: <https://www.braze.com/docs/api/api_limits/>).
pub const GROUPS: &[(&str, u64, u64)] = &[
    ("users.track", 3_000, 3),
    ("users.write", 20_000, 60),
    ("users.export.ids", 250, 60),
    ("users.external_ids", 1_000, 60),
    ("templates", 250_000, 3_600),
    ("catalogs", 5, 60),
    ("catalogs.items", 50, 60),
    ("catalogs.items.bulk", 100, 60),
    ("segments", 250_000, 3_600),
    ("partners", 250_000, 3_600),
    ("messages", 250_000, 3_600),
    ("subscription", 5_000, 60),
    ("email", 250_000, 3_600),
    ("campaigns.export", 250_000, 3_600),
    ("admin", 100_000, 60),
    ("dashboard", 100_000, 60),
    ("internal", 1_000_000, 60),
];

/// Groups counted by each node alone, even when nodes share a store: liveness probes and
/// metrics must answer while the database is slow or unreachable, so they never wait on it.
const PER_NODE: &[&str] = &["internal"];

/// The group a request path belongs to.
pub fn group_of(path: &str) -> &'static str {
    match path {
        "/users/track" => "users.track",
        "/users/delete"
        | "/users/alias/new"
        | "/users/alias/update"
        | "/users/identify"
        | "/users/merge" => "users.write",
        "/users/export/ids" => "users.export.ids",
        "/users/external_ids/rename" | "/users/external_ids/remove" => "users.external_ids",
        p if p == "/catalogs" || p.starts_with("/catalogs/") => catalog_group(p),
        p if p.starts_with("/content_blocks/") || p.starts_with("/templates/email/") => "templates",
        "/users/export/segment" | "/segments/list" | "/segments/details" => "segments",
        p if p.starts_with("/partners/") => "partners",
        "/currents/events" => "users.track",
        "/messages/send"
        | "/campaigns/trigger/send"
        | "/messages/schedule/create"
        | "/messages/schedule/update"
        | "/messages/schedule/delete"
        | "/campaigns/trigger/schedule/create"
        | "/campaigns/trigger/schedule/update"
        | "/campaigns/trigger/schedule/delete"
        | "/messages/scheduled_broadcasts"
        | "/sends/id/create"
        | "/canvas/trigger/send"
        | "/canvas/trigger/schedule/create"
        | "/canvas/trigger/schedule/update"
        | "/canvas/trigger/schedule/delete" => "messages",
        p if p.starts_with("/transactional/") => "messages",
        p if p.starts_with("/subscription/") || p.starts_with("/v2/subscription/") => {
            "subscription"
        }
        p if p.starts_with("/email/") => "email",
        "/campaigns/list"
        | "/campaigns/details"
        | "/canvas/list"
        | "/canvas/details"
        | "/canvas/data_series"
        | "/canvas/data_summary" => "campaigns.export",
        p if p.starts_with("/eddy/") => "admin",
        p if p.starts_with("/dashboard") => "dashboard",
        _ => "internal",
    }
}

/// Braze's three catalog groups: catalogs and fields, one item at a time, items in bulk.
fn catalog_group(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "catalogs", _, "items"] => "catalogs.items.bulk",
        ["", "catalogs", _, "items", _] => "catalogs.items",
        _ => "catalogs",
    }
}

/// The decision and the header values for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `X-RateLimit-Limit`.
    pub limit: u64,
    /// `X-RateLimit-Remaining`.
    pub remaining: u64,
    /// `X-RateLimit-Reset`: UTC epoch seconds when the window ends.
    pub reset: u64,
}

const SHARDS: usize = 16;
/// Windows remembered per shard before old ones are swept.
const MAX_WINDOWS_PER_SHARD: usize = 16_384;

/// (caller hash, group) → (window start, requests counted in it).
type Windows = HashMap<(u64, &'static str), (u64, u64)>;

/// Seconds since the epoch, now.
fn epoch_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A node's share of a window counted in the shared store.
#[derive(Debug, Clone, Copy)]
struct Lease {
    window_start: u64,
    /// Requests this node may still let through in the window.
    tokens: u64,
    /// The window's cluster-wide count (allowance taken by every node) when last asked.
    used: u64,
}

/// (caller hash, group) → this node's lease of its current window.
type Leases = HashMap<(u64, &'static str), Lease>;

/// Fixed-window counters keyed by (caller, group), sharded to keep lock hold times tiny.
pub struct RateLimiter {
    limits: HashMap<&'static str, RateLimit>,
    shards: Vec<Mutex<Windows>>,
    /// On a shared store: where windows are counted, and this node's leases of them.
    shared: Option<Shared>,
}

/// The cluster-wide side of a limiter.
struct Shared {
    store: eddy_store::Store,
    leases: Vec<Mutex<Leases>>,
    /// One allowance request per shard at a time: requests that find their lease empty wait for
    /// the one asking, instead of each taking a block (which would strand allowance here).
    asking: Vec<tokio::sync::Mutex<()>>,
}

impl RateLimiter {
    /// Builds a limiter from the defaults and the configured overrides.
    pub fn new(overrides: &BTreeMap<String, RateLimit>) -> Result<RateLimiter, String> {
        let mut limits = HashMap::new();
        for (name, limit, window) in GROUPS {
            limits.insert(
                *name,
                RateLimit {
                    limit: *limit,
                    window_seconds: *window,
                },
            );
        }
        for (name, limit) in overrides {
            let Some((group, _, _)) = GROUPS.iter().find(|(g, _, _)| g == name) else {
                return Err(format!("unknown rate limit group '{name}'"));
            };
            if limit.window_seconds == 0 {
                return Err(format!(
                    "rate limit group '{name}' needs window_seconds > 0"
                ));
            }
            limits.insert(*group, *limit);
        }
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Ok(RateLimiter {
            limits,
            shards,
            shared: None,
        })
    }

    /// Counts windows in `store` when other nodes share it, so that limits hold cluster-wide.
    pub fn share_through(mut self, store: &eddy_store::Store) -> RateLimiter {
        if store.is_shared() {
            self.shared = Some(Shared {
                store: store.clone(),
                leases: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                asking: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            });
        }
        self
    }

    fn limit_of(&self, group: &str) -> RateLimit {
        self.limits.get(group).copied().unwrap_or(RateLimit {
            limit: u64::MAX,
            window_seconds: 60,
        })
    }

    /// Counts a request of `caller` in `group` at `now`: in this process, or across the cluster
    /// on a shared store. Should the shared count fail, this node's own count decides (logged).
    pub async fn decide(&self, caller: u64, group: &'static str, now: u64) -> Decision {
        let Some(shared) = self.shared.as_ref().filter(|_| !PER_NODE.contains(&group)) else {
            return self.check(caller, group, now);
        };
        let limit = self.limit_of(group);
        let window_start = now - now % limit.window_seconds;
        let reset = window_start + limit.window_seconds;
        let shard = &shared.leases[(caller as usize) % SHARDS];
        let spend = |lease: &mut Lease| -> Option<Decision> {
            if lease.window_start != window_start {
                *lease = Lease {
                    window_start,
                    tokens: 0,
                    used: 0,
                };
            }
            if lease.tokens > 0 {
                lease.tokens -= 1;
                return Some(Decision {
                    allowed: true,
                    limit: limit.limit,
                    remaining: limit.limit.saturating_sub(lease.used) + lease.tokens,
                    reset,
                });
            }
            // The cluster-wide count only grows within a window: once at the limit, refuse.
            (lease.used >= limit.limit).then_some(Decision {
                allowed: false,
                limit: limit.limit,
                remaining: 0,
                reset,
            })
        };
        let try_spend = || {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > MAX_WINDOWS_PER_SHARD {
                map.retain(|_, lease| lease.window_start >= window_start);
            }
            let lease = map.entry((caller, group)).or_insert(Lease {
                window_start,
                tokens: 0,
                used: 0,
            });
            spend(lease)
        };
        if let Some(decision) = try_spend() {
            return decision;
        }
        let _turn = shared.asking[(caller as usize) % SHARDS].lock().await;
        // The request before this one in line may have brought allowance back.
        if let Some(decision) = try_spend() {
            return decision;
        }
        let block = (limit.limit / 100).clamp(1, 1_000);
        let taker = shared.store.clone();
        let taken = tokio::task::spawn_blocking(move || {
            taker.take_tokens(caller, group, window_start, block, limit.limit)
        })
        .await;
        let (used, granted) = match taken {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, group, "cannot count the request cluster-wide; this node's own count decides");
                return self.check(caller, group, now);
            }
            Err(e) => {
                tracing::warn!(error = %e, group, "cannot count the request cluster-wide; this node's own count decides");
                return self.check(caller, group, now);
            }
        };
        if granted == 0 && used < limit.limit {
            // Nothing granted below the limit: the shared window had moved on while this request
            // waited. It is served now, so it counts in the window of now.
            drop(_turn);
            let later = epoch_seconds().max(reset);
            return Box::pin(self.decide(caller, group, later)).await;
        }
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let lease = map.entry((caller, group)).or_insert(Lease {
            window_start,
            tokens: 0,
            used: 0,
        });
        if lease.window_start == window_start {
            lease.used = lease.used.max(used);
            lease.tokens += granted;
        }
        spend(lease).unwrap_or(Decision {
            allowed: false,
            limit: limit.limit,
            remaining: 0,
            reset,
        })
    }

    /// Counts a request of `caller` (a hash of its key) in `group` at `now` (epoch seconds), in
    /// this process.
    pub fn check(&self, caller: u64, group: &'static str, now: u64) -> Decision {
        let limit = self.limit_of(group);
        let window_start = now - now % limit.window_seconds;
        let reset = window_start + limit.window_seconds;
        let Ok(mut shard) = self.shards[(caller as usize) % SHARDS].lock() else {
            return Decision {
                allowed: true,
                limit: limit.limit,
                remaining: limit.limit,
                reset,
            };
        };
        if shard.len() > MAX_WINDOWS_PER_SHARD {
            shard.retain(|_, (start, _)| *start >= window_start);
        }
        let entry = shard.entry((caller, group)).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        if entry.1 >= limit.limit {
            return Decision {
                allowed: false,
                limit: limit.limit,
                remaining: 0,
                reset,
            };
        }
        entry.1 += 1;
        Decision {
            allowed: true,
            limit: limit.limit,
            remaining: limit.limit - entry.1,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reset() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "users.track".to_string(),
            RateLimit {
                limit: 2,
                window_seconds: 10,
            },
        );
        let rl = RateLimiter::new(&overrides).unwrap();
        let a = rl.check(1, "users.track", 100);
        assert_eq!((a.allowed, a.remaining, a.reset), (true, 1, 110));
        assert!(rl.check(1, "users.track", 101).allowed);
        assert!(!rl.check(1, "users.track", 109).allowed);
        assert!(
            rl.check(2, "users.track", 109).allowed,
            "other callers have their own window"
        );
        assert!(
            rl.check(1, "users.track", 110).allowed,
            "a new window starts"
        );
        assert!(
            RateLimiter::new(
                &[(
                    "nope".to_string(),
                    RateLimit {
                        limit: 1,
                        window_seconds: 1
                    }
                )]
                .into()
            )
            .is_err()
        );
    }

    #[test]
    fn groups() {
        assert_eq!(group_of("/users/track"), "users.track");
        assert_eq!(group_of("/users/merge"), "users.write");
        assert_eq!(group_of("/partners/amplitude/cohorts"), "partners");
        assert_eq!(group_of("/health"), "internal");
    }
}
