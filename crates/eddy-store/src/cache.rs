//! What the writer keeps in memory between group commits (decoded profiles, identifier values).

use std::collections::HashMap;

use eddy_model::profile::Profile;

use crate::written::Written;

/// What the writer keeps in memory between group commits: decoded profiles and identifier
/// index values (misses included). It only ever holds committed state: profiles move out of it
/// into a transaction and come back, and identifier writes are applied, after the commit
/// succeeds. Other processes sharing the backend make entries stale: the writer drops those
/// their change records name before each group (see `writer`).
#[derive(Debug, Default)]
pub struct WriterCache {
    // Keys come from clients (external ids); foldhash is fast and randomly seeded per process.
    profiles: HashMap<(u32, u32), Profile, foldhash::fast::RandomState>,
    idents: HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>,
    capacity: usize,
}

impl WriterCache {
    /// A cache of at most `capacity` profiles and as many identifier entries (0 disables it).
    pub fn new(capacity: usize) -> WriterCache {
        WriterCache {
            profiles: HashMap::default(),
            idents: HashMap::default(),
            capacity,
        }
    }

    /// Takes in what a committed group wrote.
    pub fn absorb(&mut self, written: Written) {
        for (key, profile) in written.profiles {
            match profile {
                Some(p) if self.capacity > 0 => {
                    self.profiles.insert(key, p);
                }
                _ => {
                    self.profiles.remove(&key);
                }
            }
        }
        if self.capacity > 0 {
            for (key, value) in written.idents {
                self.idents.insert(key, value);
            }
        }
        evict(&mut self.profiles, self.capacity);
        evict(&mut self.idents, self.capacity);
    }

    /// An identifier index value as committed (`Some(None)`: known to be absent).
    pub fn ident(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.idents.get(key)
    }

    /// Whether anything is kept (a capacity of 0 turns the cache off).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Remembers an identifier index value read from the backend (committed state).
    pub fn remember_ident(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.capacity > 0 {
            self.idents.insert(key, value);
        }
    }

    /// Remembers a profile read from the backend (committed state).
    pub fn remember_profile(&mut self, ws: u32, id: u32, profile: Profile) {
        if self.capacity > 0 {
            self.profiles.insert((ws, id), profile);
        }
    }

    /// A committed profile, if cached.
    pub fn profile(&self, ws: u32, id: u32) -> Option<&Profile> {
        self.profiles.get(&(ws, id))
    }

    /// Moves a committed profile out (into a group); it returns through [`Self::absorb`] once
    /// the group commits, and is simply gone if it fails.
    pub fn take_profile(&mut self, ws: u32, id: u32) -> Option<Profile> {
        self.profiles.remove(&(ws, id))
    }

    /// Forgets a profile another process wrote.
    pub fn forget_profile(&mut self, ws: u32, id: u32) {
        self.profiles.remove(&(ws, id));
    }

    /// Forgets an identifier index value another process wrote.
    pub fn forget_ident(&mut self, key: &[u8]) {
        self.idents.remove(key);
    }

    /// Forgets everything (after a failed commit).
    pub fn clear(&mut self) {
        self.profiles.clear();
        self.idents.clear();
    }
}

/// Drops about a tenth of an over-full map, in its arbitrary order: cheap, and unbiased enough
/// for Zipf-shaped traffic, whose hot entries come straight back.
fn evict<K, V, S>(map: &mut HashMap<K, V, S>, capacity: usize) {
    if map.len() <= capacity {
        return;
    }
    let mut excess = map.len() - capacity * 9 / 10;
    map.retain(|_, _| {
        if excess == 0 {
            return true;
        }
        excess -= 1;
        false
    });
}
