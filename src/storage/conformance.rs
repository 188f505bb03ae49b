//! The contract every [`Storage`] keeps, as one suite: run on local disk by the unit
//! tests and on a real S3 server by the integration tests, so both implementations
//! answer the pipeline the same way.
//!
//! Each check uses keys of its own (prefixed with `prefix`), so the suite can run on
//! buckets that hold other objects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::{Bucket, ObjectMeta, Storage};
use crate::domain::{Checks, Payload};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Runs every check; panics with a sentence naming the broken promise.
pub async fn run(storage: &dyn Storage, prefix: &str) {
    storage.check().await.expect("check: a storage that is up answers Ok");
    round_trip(storage, &format!("{prefix}-small"), b"hello, storage".to_vec()).await;
    // Several MiB in socket-sized chunks: multipart on S3, buffered writes on disk.
    let big: Vec<u8> = (0..(9 << 20) + 12_345).map(|i: u32| (i % 251) as u8).collect();
    round_trip(storage, &format!("{prefix}-big"), big).await;
    round_trip(storage, &format!("{prefix}-empty"), Vec::new()).await;
    // A meta larger than S3's 2 KB of user metadata (a large identity): its sidecar.
    let key = format!("{prefix}-large-meta");
    round_trip_as(storage, &key, b"a large identity".to_vec(), large_meta(&key)).await;
    failed_put_leaves_nothing(storage, &format!("{prefix}-failed")).await;
    copy_and_delete(storage, &format!("{prefix}-copy")).await;
    write_once(storage, &format!("{prefix}-once")).await;
    meta_replaced(storage, &format!("{prefix}-meta")).await;
    absent_keys(storage, &format!("{prefix}-absent")).await;
    set_meta(storage, &format!("{prefix}-marked")).await;
    decisions(storage, &format!("{prefix}-decided")).await;
}

/// A decision is recorded once: a second one reads the first; an update is read back;
/// once forgotten, a new one can be recorded. Ten different ones at once: one wins.
async fn decisions(storage: &dyn Storage, key: &str) {
    use super::Decision;
    let d = |v: &str, advertised| Decision { validation: v.into(), advertised };
    assert_eq!(storage.decide(key, &d("success", false)).await.unwrap(), None, "the first decision is recorded");
    assert_eq!(storage.decide(key, &d("failure", false)).await.unwrap(), Some(d("success", false)), "a second reads the first");
    storage.update_decision(key, &d("success", true)).await.unwrap();
    assert_eq!(storage.decide(key, &d("success", false)).await.unwrap(), Some(d("success", true)), "the update is read back");
    storage.forget_decision(key).await.unwrap();
    storage.forget_decision(key).await.expect("forgetting what is gone is fine");
    assert_eq!(storage.decide(key, &d("failure", false)).await.unwrap(), None, "forgotten, a new one is recorded");
    storage.forget_decision(key).await.unwrap();
    let racing = format!("{key}-race");
    let all: Vec<Decision> = (0..10).map(|i| d(if i % 2 == 0 { "success" } else { "failure" }, false)).collect();
    let results = futures_util::future::join_all(all.iter().map(|x| storage.decide(&racing, x))).await;
    let won: Vec<usize> = results.iter().enumerate().filter(|(_, r)| matches!(r, Ok(None))).map(|(i, _)| i).collect();
    assert_eq!(won.len(), 1, "exactly one of ten racing decisions is recorded: {results:?}");
    for r in &results {
        if let Ok(Some(recorded)) = r {
            assert_eq!(recorded, &all[won[0]], "the others read the winner's");
        }
    }
    storage.forget_decision(&racing).await.unwrap();
}

/// set_meta rewrites the meta of a stored payload (the unconfirmed mark), and writes
/// nothing for a key that is not stored.
async fn set_meta(storage: &dyn Storage, key: &str) {
    let stored = storage.put(Bucket::Quarantine, key, meta(key), payload(b"marked".to_vec(), u64::MAX)).await.unwrap();
    let marked = ObjectMeta { unconfirmed: Some("outcome unknown".into()), ..stored };
    assert!(storage.set_meta(Bucket::Quarantine, key, &marked).await.unwrap(), "set_meta finds {key}");
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), Some(marked), "head gives the new meta");
    storage.delete(Bucket::Quarantine, key).await.unwrap();
    let gone = meta(key);
    assert!(!storage.set_meta(Bucket::Quarantine, key, &gone).await.unwrap(), "set_meta on an absent key");
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), None, "and writes nothing");
}

/// A payload stream over `bytes` in 64 KiB chunks, limited to `limit` bytes.
pub fn payload(bytes: Vec<u8>, limit: u64) -> Payload {
    let chunks: Vec<Result<Bytes>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Payload::new(
        Box::pin(futures_util::stream::iter(chunks)),
        Checks {
            service: "testareno".into(),
            limit,
            expected_size: None,
            expected_sha256: None,
            idle: Duration::from_secs(30),
        },
        Arc::new(Metrics::default()),
    )
}

/// The meta the pipeline hands storage before the bytes (size and sha256 unknown).
pub fn meta(key: &str) -> ObjectMeta {
    ObjectMeta {
        request_id: key.to_string(),
        service: "testareno".into(),
        category: "conformance".into(),
        content_type: "application/vnd.redhat.testareno.conformance+tgz".into(),
        account: Some("000001".into()),
        org_id: Some("org1".into()),
        b64_identity: String::new(),
        size: 0,
        sha256: String::new(),
        received_at: "2026-11-28T00:00:00Z".into(),
        metadata: None,
        derived: false,
        unconfirmed: None,
        put_id: None,
    }
}

async fn read_all(storage: &dyn Storage, bucket: Bucket, key: &str) -> Option<(ObjectMeta, Vec<u8>)> {
    let (meta, mut stream) = storage.get(bucket, key).await.expect("get answers")?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("get: the stream reads to the end");
        assert!(chunk.len() <= 8 << 20, "get: chunks are bounded, got {} bytes", chunk.len());
        out.extend_from_slice(&chunk);
    }
    Some((meta, out))
}

/// A meta whose identity alone is larger than S3's 2 KB of user metadata.
fn large_meta(key: &str) -> ObjectMeta {
    ObjectMeta { b64_identity: "eyJpZGVudGl0eSI6".repeat(256), ..meta(key) }
}

async fn round_trip(storage: &dyn Storage, key: &str, bytes: Vec<u8>) {
    round_trip_as(storage, key, bytes, meta(key)).await
}

async fn round_trip_as(storage: &dyn Storage, key: &str, bytes: Vec<u8>, meta: ObjectMeta) {
    let sha = hex::encode(Sha256::digest(&bytes));
    let stored = storage
        .put(Bucket::Quarantine, key, meta, payload(bytes.clone(), u64::MAX))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert_eq!((stored.size, stored.sha256.as_str()), (bytes.len() as u64, sha.as_str()), "put fills in size and sha256");
    let head = storage.head(Bucket::Quarantine, key).await.unwrap();
    assert_eq!(head.as_ref(), Some(&stored), "head gives the meta put returned");
    let (meta, back) = read_all(storage, Bucket::Quarantine, key).await.expect("get finds what put stored");
    assert_eq!(meta, stored, "get gives the stored meta");
    assert!(back == bytes, "get gives back the bytes put stored ({} bytes, {} back)", bytes.len(), back.len());
    let keys = storage.list(Bucket::Quarantine).await.unwrap();
    assert!(keys.iter().any(|k| k == key), "list names {key}");
    assert!(!keys.iter().any(|k| k.starts_with('.') || k.ends_with(".meta")), "list names payloads only: {keys:?}");
    storage.delete(Bucket::Quarantine, key).await.unwrap();
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), None, "delete removes {key}");
}

async fn failed_put_leaves_nothing(storage: &dyn Storage, key: &str) {
    // Over its limit part-way: the payload fails, the put fails, nothing is visible.
    let err = storage
        .put(Bucket::Quarantine, key, meta(key), payload(vec![7u8; 6 << 20], 1 << 20))
        .await
        .expect_err("a put whose payload fails is an error");
    assert!(matches!(err, Error::TooLarge { .. } | Error::StorageUnavailable(_) | Error::Internal(_)), "{err}");
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), None, "a failed put leaves no object");
    assert!(storage.get(Bucket::Quarantine, key).await.unwrap().is_none());
    assert!(!storage.list(Bucket::Quarantine).await.unwrap().iter().any(|k| k == key), "nor a listed key");
}

async fn copy_and_delete(storage: &dyn Storage, key: &str) {
    let stored = storage
        .put(Bucket::Quarantine, key, meta(key), payload(b"to be promoted".to_vec(), u64::MAX))
        .await
        .unwrap();
    storage.copy(Bucket::Quarantine, Bucket::Perm, key).await.unwrap();
    // Copying again overwrites (a verdict applied twice after a crash).
    storage.copy(Bucket::Quarantine, Bucket::Perm, key).await.unwrap();
    let (meta, bytes) = read_all(storage, Bucket::Perm, key).await.expect("copy makes the object in perm");
    assert_eq!((meta, bytes.as_slice()), (stored.clone(), &b"to be promoted"[..]), "copy keeps meta and bytes");
    assert!(storage.head(Bucket::Quarantine, key).await.unwrap().is_some(), "copy leaves the source");
    storage.delete(Bucket::Quarantine, key).await.unwrap();
    storage.delete(Bucket::Quarantine, key).await.expect("deleting what is gone is fine");
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), None);
    assert_eq!(storage.head(Bucket::Perm, key).await.unwrap(), Some(stored));
    storage.delete(Bucket::Perm, key).await.unwrap();
}

async fn write_once(storage: &dyn Storage, key: &str) {
    // Half of the racers have a meta that fits in the object, half one that needs a
    // sidecar: whichever wins, the meta read back is the winner's.
    let put = |k: String, bytes: &'static [u8]| async move {
        let m = if bytes.last().is_some_and(|b| b % 2 == 0) { large_meta(&k) } else { meta(&k) };
        storage.put(Bucket::Quarantine, &k, m, payload(bytes.to_vec(), u64::MAX)).await
    };
    let first = put(key.to_string(), b"first").await.unwrap();
    let e = put(key.to_string(), b"second").await.expect_err("a second put of a stored key is refused");
    assert!(matches!(e, Error::Conflict(_)), "a second put answers Conflict, got: {e}");
    let (meta, bytes) = read_all(storage, Bucket::Quarantine, key).await.unwrap();
    assert_eq!((meta, bytes.as_slice()), (first, &b"first"[..]), "the first put's bytes and meta are untouched");
    storage.delete(Bucket::Quarantine, key).await.unwrap();
    // Ten puts of one key at once: exactly one wins, and what is stored is all its own.
    let racing = format!("{key}-race");
    let bodies: [&'static [u8]; 10] = [b"r0", b"r1", b"r2", b"r3", b"r4", b"r5", b"r6", b"r7", b"r8", b"r9"];
    let results = futures_util::future::join_all(bodies.iter().map(|b| put(racing.clone(), b))).await;
    let won: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    assert_eq!(won.len(), 1, "exactly one of ten racing puts succeeds: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, Error::Conflict(_)), "the others answer Conflict: {r}");
    }
    let (meta, bytes) = read_all(storage, Bucket::Quarantine, &racing).await.unwrap();
    assert_eq!(bytes, bodies[won[0]], "the stored bytes are the winner's");
    assert_eq!(meta.sha256, hex::encode(Sha256::digest(bodies[won[0]])), "and so is the stored meta");
    assert_eq!(Some(meta), results[won[0]].as_ref().ok().cloned(), "all of it");
    storage.delete(Bucket::Quarantine, &racing).await.unwrap();
}

async fn absent_keys(storage: &dyn Storage, key: &str) {
    for b in Bucket::ALL {
        assert_eq!(storage.head(b, key).await.unwrap(), None, "head of an absent key is None");
        assert!(storage.get(b, key).await.unwrap().is_none(), "get of an absent key is None");
    }
    storage.delete(Bucket::Reject, key).await.expect("deleting an absent key is fine");
}

async fn meta_replaced(storage: &dyn Storage, key: &str) {
    let mut stored = storage
        .put(Bucket::Quarantine, key, meta(key), payload(b"metadata after the bytes".to_vec(), u64::MAX))
        .await
        .unwrap();
    stored.metadata = Some(serde_json::json!({"display_name": "host-1"}));
    storage.set_meta(Bucket::Quarantine, key, &stored).await.expect("set_meta on a stored key");
    assert_eq!(storage.head(Bucket::Quarantine, key).await.unwrap(), Some(stored.clone()), "head gives the replaced meta");
    storage.copy(Bucket::Quarantine, Bucket::Reject, key).await.unwrap();
    assert_eq!(storage.head(Bucket::Reject, key).await.unwrap(), Some(stored), "copy carries it");
    storage.delete(Bucket::Quarantine, key).await.unwrap();
    storage.delete(Bucket::Reject, key).await.unwrap();
}
