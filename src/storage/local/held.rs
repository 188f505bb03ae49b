//! The index of small payloads held in the write-ahead log (wal.rs): for each, the
//! record that holds its bytes and the one that holds its meta. It lives in memory and
//! is rebuilt from the logs at start-up; a payload leaves it when it is deleted (it
//! left quarantine). The log's checkpoint asks it which puts are still held, to
//! compact old logs, and points it at a compacted log's new places.
//!
//! It is also where a put takes its key: a key is claimed here before anything is
//! written, by small and large puts alike, so two puts of one key never both go on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::wal::{Durable, Index, Segment};
use crate::storage::Bucket;

/// Where one part (meta or bytes) of a held payload is.
#[derive(Clone)]
pub struct Part {
    pub log: Durable,
    pub span: (u64, usize),
}

impl Part {
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        self.log.0.read(self.span)
    }

    /// Counts this part as held in its log (`true`), or no more.
    fn count(&self, held: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.span.1 as u64;
        if held {
            self.log.0.live.fetch_add(n, Relaxed);
        } else {
            self.log.0.live.fetch_sub(n, Relaxed);
        }
    }
}

impl Entry {
    fn count(&self, held: bool) {
        self.bytes.count(held);
        self.meta.count(held);
    }
}

/// A held payload: its bytes and its (newest) meta.
#[derive(Clone)]
pub struct Entry {
    pub bytes: Part,
    pub meta: Part,
}

enum Slot {
    /// A put of this key is under way.
    Claimed,
    Held(Entry),
}

impl Slot {
    fn entry(&self) -> Option<&Entry> {
        match self {
            Slot::Held(e) => Some(e),
            Slot::Claimed => None,
        }
    }

    fn entry_mut(&mut self) -> Option<&mut Entry> {
        match self {
            Slot::Held(e) => Some(e),
            Slot::Claimed => None,
        }
    }
}

type Key = (Bucket, String);

#[derive(Default)]
pub struct Held {
    map: Mutex<HashMap<Key, Slot>>,
}

/// A key taken for one put: given back when dropped, unless its payload is held.
pub struct Taken {
    held: Arc<Held>,
    key: Option<Key>,
}

impl Taken {
    /// The put's record is durable: the payload is held from now on.
    pub fn hold(mut self, entry: Entry) {
        if let Some(key) = self.key.take() {
            entry.count(true);
            self.held.lock().insert(key, Slot::Held(entry));
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut map = self.held.lock();
            if matches!(map.get(&key), Some(Slot::Claimed)) {
                map.remove(&key);
            }
        }
    }
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        // A panic while holding the lock leaves the map as it was between two
        // statements of one of the short methods below: still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `key` for one put; `None` when a put of it is under way or it is held.
    pub fn claim(self: &Arc<Self>, bucket: Bucket, key: &str) -> Option<Taken> {
        let k = (bucket, key.to_string());
        let mut map = self.lock();
        if map.contains_key(&k) {
            return None;
        }
        map.insert(k.clone(), Slot::Claimed);
        Some(Taken { held: self.clone(), key: Some(k) })
    }

    /// Holds `entry` as `key` (reading the logs at start-up: a later record wins).
    pub fn insert(&self, bucket: Bucket, key: String, entry: Entry) {
        entry.count(true);
        if let Some(Slot::Held(old)) = self.lock().insert((bucket, key), Slot::Held(entry)) {
            old.count(false);
        }
    }

    /// The payload held as `key`, if one is.
    pub fn get(&self, bucket: Bucket, key: &str) -> Option<Entry> {
        self.lock().get(&(bucket, key.to_string())).and_then(Slot::entry).cloned()
    }

    /// Points a held payload at its new meta (nothing when it is not held any more).
    pub fn set_meta(&self, bucket: Bucket, key: &str, meta: Part) {
        if let Some(Slot::Held(e)) = self.lock().get_mut(&(bucket, key.to_string())) {
            meta.count(true);
            std::mem::replace(&mut e.meta, meta).count(false);
        }
    }

    /// Stops holding `key`; true when it was held.
    pub fn remove(&self, bucket: Bucket, key: &str) -> bool {
        let k = (bucket, key.to_string());
        let mut map = self.lock();
        if let Some(Slot::Held(entry)) = map.get(&k) {
            entry.count(false);
            map.remove(&k);
            return true;
        }
        false
    }

    /// The keys held in `bucket`.
    pub fn keys(&self, bucket: Bucket) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|((b, _), slot)| *b == bucket && slot.entry().is_some())
            .map(|((_, k), _)| k.clone())
            .collect()
    }

    /// Every held key (start-up: their files, if any, are stale copies).
    pub fn all(&self) -> Vec<(Bucket, String)> {
        self.lock().iter().filter(|(_, s)| s.entry().is_some()).map(|(k, _)| k.clone()).collect()
    }
}

impl Index for Held {
    fn live_puts(&self, log: &Arc<Segment>) -> HashSet<u64> {
        self.lock()
            .values()
            .filter_map(Slot::entry)
            .filter(|e| Arc::ptr_eq(&e.bytes.log.0, log))
            .map(|e| e.bytes.span.0)
            .collect()
    }

    fn repoint(&self, old: &Arc<Segment>, new: &Arc<Segment>, moved: &dyn Fn(u64) -> Option<u64>) {
        for entry in self.lock().values_mut().filter_map(Slot::entry_mut) {
            for part in [&mut entry.bytes, &mut entry.meta] {
                if Arc::ptr_eq(&part.log.0, old) {
                    if let Some(at) = moved(part.span.0) {
                        part.count(false);
                        *part = Part { log: Durable(new.clone()), span: (at, part.span.1) };
                        part.count(true);
                    }
                }
            }
        }
    }
}
