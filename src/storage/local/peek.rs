//! A read-only look at what a data folder's buckets hold, the write-ahead log included,
//! for operators and tests: small payloads live in the log (wal.rs) until they leave
//! quarantine, so listing a bucket's folder does not show them. Safe while the gateway
//! runs: it reads, never writes.

use std::collections::BTreeMap;
use std::path::Path;

use super::wal::{self, Record};
use crate::storage::Bucket;

/// A stored payload as found: its meta (the JSON the gateway keeps, when it has one)
/// and its bytes.
#[derive(Debug, Clone)]
pub struct Found {
    pub meta: Option<Vec<u8>>,
    pub bytes: Vec<u8>,
}

/// The payloads held in the logs of `root`, by bucket and key.
fn held(root: &Path) -> std::io::Result<BTreeMap<(String, String), Found>> {
    let mut logs: Vec<_> = match std::fs::read_dir(root.join(".wal")) {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    logs.sort();
    let mut held = BTreeMap::new();
    for log in logs {
        for (record, v1, _) in wal::records(&log)? {
            if v1 {
                continue; // the old format's puts placed files: listed below
            }
            match record {
                Record::Put { bucket, key, meta, bytes } => {
                    held.insert((bucket.as_str().to_string(), key), Found { meta: Some(meta), bytes });
                }
                Record::Meta { bucket, key, meta } => {
                    if let Some(found) = held.get_mut(&(bucket.as_str().to_string(), key)) {
                        found.meta = Some(meta);
                    }
                }
                Record::Delete { bucket, key } => {
                    held.remove(&(bucket.as_str().to_string(), key));
                }
            }
        }
    }
    Ok(held)
}

/// The keys `bucket` holds under the data folder `root`, sorted: files and the log's.
pub fn keys(root: &Path, bucket: Bucket) -> std::io::Result<Vec<String>> {
    // The logs first: a held payload given files in between is then found as files.
    let mut keys: Vec<String> = held(root)?.into_keys().filter(|(b, _)| b == bucket.as_str()).map(|(_, k)| k).collect();
    match std::fs::read_dir(root.join(bucket.as_str())) {
        Ok(dir) => keys.extend(
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.')),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The payload `key` in `bucket` under the data folder `root`, if it is there.
pub fn read(root: &Path, bucket: Bucket, key: &str) -> std::io::Result<Option<Found>> {
    if let Some(found) = held(root)?.remove(&(bucket.as_str().to_string(), key.to_string())) {
        return Ok(Some(found));
    }
    let bytes = match std::fs::read(root.join(bucket.as_str()).join(key)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = std::fs::read(root.join(bucket.as_str()).join(".meta").join(format!("{key}.json"))).ok();
    Ok(Some(Found { meta, bytes }))
}
