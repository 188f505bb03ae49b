//! The index of small payloads held in the write-ahead log (wal.rs): for each, the
//! record that holds its bytes and the one that holds its meta. It lives in memory and
//! is rebuilt from the logs at start-up; a payload leaves it when it is deleted (it
//! left quarantine) or given files of its own (the checkpoint, after `wal::HOLD`).
//!
//! It is also where a put takes its key: a key is claimed here before anything is
//! written, by small and large puts alike, so two puts of one key never both go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::wal::{Durable, Segment};
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
    /// Held, and being given files of its own (read from the log meanwhile).
    Placing(Entry),
    /// Deleted while being given files: whoever gives them removes them again.
    Gone,
}

impl Slot {
    fn entry(&self) -> Option<&Entry> {
        match self {
            Slot::Held(e) | Slot::Placing(e) => Some(e),
            _ => None,
        }
    }
}

type Key = (Bucket, String);

/// See [`Held::look`].
pub enum Look {
    Held(Entry),
    Gone,
    Files,
}

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
        self.lock().insert((bucket, key), Slot::Held(entry));
    }

    /// The payload held as `key`, if one is.
    pub fn get(&self, bucket: Bucket, key: &str) -> Option<Entry> {
        self.lock().get(&(bucket, key.to_string())).and_then(Slot::entry).cloned()
    }

    /// What a reader should go by for `key`: the log, nothing (deleted while it was
    /// being given files, which may still be seen for a moment), or the files.
    pub fn look(&self, bucket: Bucket, key: &str) -> Look {
        match self.lock().get(&(bucket, key.to_string())) {
            Some(Slot::Held(e) | Slot::Placing(e)) => Look::Held(e.clone()),
            Some(Slot::Gone) => Look::Gone,
            _ => Look::Files,
        }
    }

    /// Points a held payload at its new meta; false when it is not held (any more).
    pub fn set_meta(&self, bucket: Bucket, key: &str, meta: Part) -> bool {
        match self.lock().get_mut(&(bucket, key.to_string())) {
            Some(Slot::Held(e) | Slot::Placing(e)) => {
                e.meta = meta;
                true
            }
            _ => false,
        }
    }

    /// Stops holding `key`; true when it was held.
    pub fn remove(&self, bucket: Bucket, key: &str) -> bool {
        let k = (bucket, key.to_string());
        let mut map = self.lock();
        match map.get_mut(&k) {
            Some(Slot::Held(_)) => {
                map.remove(&k);
                true
            }
            Some(slot @ Slot::Placing(_)) => {
                *slot = Slot::Gone;
                true
            }
            _ => false,
        }
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

    /// Gives every payload whose bytes are in `log` files of their own: `place` writes
    /// them (outside the lock: a put is never kept waiting on the disk), `unplace`
    /// removes them when the payload was deleted meanwhile. While a payload is being
    /// placed its key stays taken, so no other put can make files of that key; a new
    /// meta that came meanwhile is placed again. How many were placed.
    pub fn materialize(
        &self,
        log: &Arc<Segment>,
        place: impl Fn(Bucket, &str, &Entry) -> std::io::Result<()>,
        place_meta: impl Fn(Bucket, &str, &Part) -> std::io::Result<()>,
        unplace: impl Fn(Bucket, &str) -> std::io::Result<()>,
    ) -> std::io::Result<usize> {
        let keys: Vec<Key> = self
            .lock()
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Held(e) if Arc::ptr_eq(&e.bytes.log.0, log)))
            .map(|(k, _)| k.clone())
            .collect();
        let mut placed = 0;
        for k in keys {
            let entry = {
                let mut map = self.lock();
                let Some(slot) = map.get_mut(&k) else { continue };
                let Slot::Held(entry) = slot else { continue };
                if !Arc::ptr_eq(&entry.bytes.log.0, log) {
                    continue;
                }
                let entry = entry.clone();
                *slot = Slot::Placing(entry.clone());
                entry
            };
            let written = place(k.0, &k.1, &entry);
            let mut map = self.lock();
            match (map.remove(&k), written) {
                (Some(Slot::Placing(now)), Ok(())) => {
                    let (a, b) = (&now.meta, &entry.meta);
                    if !Arc::ptr_eq(&a.log.0, &b.log.0) || a.span != b.span {
                        if let Err(e) = place_meta(k.0, &k.1, &now.meta) {
                            map.insert(k, Slot::Held(now));
                            return Err(e);
                        }
                    }
                    placed += 1;
                }
                (Some(Slot::Placing(now)), Err(e)) => {
                    map.insert(k, Slot::Held(now));
                    return Err(e);
                }
                (_, written) => {
                    // Deleted meanwhile: its files go again (the key is still taken).
                    let removed = unplace(k.0, &k.1);
                    written.and(removed)?;
                }
            }
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local::wal::{Record, Wal};
    use std::cell::RefCell;
    use std::time::Duration;

    async fn logged(wal: &Wal, key: &str, meta: &[u8]) -> Entry {
        let r = Record::Put { bucket: Bucket::Quarantine, key: key.into(), meta: meta.to_vec(), bytes: b"bytes".to_vec() };
        let (log, spans) = wal.append(&r).await.unwrap();
        Entry { bytes: Part { log: log.clone(), span: spans.bytes }, meta: Part { log, span: spans.meta } }
    }

    /// Being given files is not atomic: a delete or a new meta can come in between.
    /// A payload deleted meanwhile has its new files removed again (its key taken until
    /// then); a new meta is placed too; the others leave the index.
    #[tokio::test]
    async fn a_delete_or_a_new_meta_during_the_move_to_files_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let keep: crate::storage::local::wal::Materialize = Box::new(|_| Ok(()));
        let wal = Wal::open(dir.path(), &dir.path().join(".wal"), |_| Ok(()), keep, Duration::from_secs(3600)).unwrap();
        let held = Arc::new(Held::default());
        for key in ["plain", "deleted", "remetaed"] {
            held.insert(Bucket::Quarantine, key.into(), logged(&wal, key, b"{}").await);
        }
        let log = held.get(Bucket::Quarantine, "plain").unwrap().bytes.log.0.clone();
        let newer = logged(&wal, "remetaed", b"{\"new\":1}").await.meta;
        let (placed, metas, unplaced) = (RefCell::new(vec![]), RefCell::new(vec![]), RefCell::new(vec![]));
        let n = held
            .materialize(
                &log,
                |_, key, _| {
                    placed.borrow_mut().push(key.to_string());
                    assert!(held.claim(Bucket::Quarantine, key).is_none(), "the key stays taken");
                    match key {
                        "deleted" => assert!(held.remove(Bucket::Quarantine, key)),
                        "remetaed" => assert!(held.set_meta(Bucket::Quarantine, key, newer.clone())),
                        _ => {}
                    }
                    Ok(())
                },
                |_, key, meta| {
                    metas.borrow_mut().push((key.to_string(), meta.read().unwrap()));
                    Ok(())
                },
                |_, key| {
                    unplaced.borrow_mut().push(key.to_string());
                    Ok(())
                },
            )
            .unwrap();
        let mut all = placed.into_inner();
        all.sort();
        assert_eq!(all, ["deleted", "plain", "remetaed"]);
        assert_eq!(n, 2, "the deleted one is not counted as placed");
        assert_eq!(metas.into_inner(), [("remetaed".to_string(), b"{\"new\":1}".to_vec())]);
        assert_eq!(unplaced.into_inner(), ["deleted"]);
        assert!(held.keys(Bucket::Quarantine).is_empty(), "all three left the index");
        assert!(held.claim(Bucket::Quarantine, "deleted").is_some(), "and the deleted key is free again");
    }
}
