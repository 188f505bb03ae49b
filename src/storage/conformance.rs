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
    events(storage, &format!("{prefix}-history")).await;
    resumable(storage, prefix).await;
    resumable_races(storage, prefix).await;
}

/// A decision is recorded once: a second one reads the first; an update is read back;
/// once forgotten, a new one can be recorded. Ten different ones at once: one wins.
async fn decisions(storage: &dyn Storage, key: &str) {
    use super::Decision;
    let d = |v: &str, advertised| Decision { validation: v.into(), advertised, by: Some("r1".into()), at: None };
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

/// A payload's history: events read back in name order, whole; a name is written
/// once (the second write is refused and changes nothing); of ten writers of one name
/// at once, one wins; a payload with no events has an empty history.
async fn events(storage: &dyn Storage, key: &str) {
    assert!(storage.events(key).await.unwrap().is_empty(), "no events yet");
    assert!(storage.add_event(key, "b-announced", b"{\"n\":2}").await.unwrap(), "the first write of a name is kept");
    assert!(storage.add_event(key, "a-received", b"{\"n\":1}").await.unwrap());
    assert!(!storage.add_event(key, "b-announced", b"{\"n\":3}").await.unwrap(), "a second write of a name is refused");
    let got = storage.events(key).await.unwrap();
    assert_eq!(
        got,
        vec![("a-received".to_string(), b"{\"n\":1}".to_vec()), ("b-announced".to_string(), b"{\"n\":2}".to_vec())],
        "the events, in name order, as first written"
    );
    assert_eq!(storage.event_names(key).await.unwrap(), ["a-received", "b-announced"], "their names alone");
    let racing: Vec<Vec<u8>> = (0..10).map(|i| format!("{{\"writer\":{i}}}").into_bytes()).collect();
    let results = futures_util::future::join_all(racing.iter().map(|e| storage.add_event(key, "c-claim", e))).await;
    let won: Vec<usize> = results.iter().enumerate().filter(|(_, r)| matches!(r, Ok(true))).map(|(i, _)| i).collect();
    assert_eq!(won.len(), 1, "exactly one of ten writers of one name wins: {results:?}");
    let got = storage.events(key).await.unwrap();
    assert_eq!(got.last().unwrap(), &("c-claim".to_string(), racing[won[0]].clone()), "the winner's event is the one kept");
    assert!(storage.events(&format!("{key}-other")).await.unwrap().is_empty(), "another payload's history is its own");
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

/// A new resumable upload's record (version 1, nothing stored yet).
pub fn upload_record(id: &str) -> super::UploadRecord {
    super::UploadRecord {
        id: id.to_string(),
        version: 1,
        service: "testareno".into(),
        category: "conformance".into(),
        content_type: "application/vnd.redhat.testareno.conformance+tgz".into(),
        file_name: Some("archive.tgz".into()),
        metadata: None,
        account: Some("000001".into()),
        org_id: Some("org1".into()),
        b64_identity: String::new(),
        length: None,
        limit: 1 << 30,
        offset: 0,
        expected_sha256: None,
        hash: Default::default(),
        created_at: "2026-11-28T00:00:00Z".into(),
        expires_at_ms: super::resumable::now_ms() + 3_600_000,
        claim: None,
        bytes: Default::default(),
        finished: false,
    }
}

/// What the pipeline does with one request's bytes: a writer from `rec`, `data` written
/// in chunks of the given sizes (in turn), never more than the writer takes, flushed at
/// each part boundary and at the end. The record to save is returned (not saved).
pub async fn append(storage: &dyn Storage, rec: &super::UploadRecord, data: &[u8], chunk_sizes: &[usize]) -> super::UploadRecord {
    let mut w = storage.upload_writer(rec).await.unwrap_or_else(|e| panic!("upload_writer for {}: {e}", rec.id));
    let part = w.part_size();
    assert!(part >= 5 << 20, "parts are at least 5 MiB (S3's minimum), got {part}");
    let start_pending = w.pending();
    assert!(start_pending < part, "a new writer holds less than a part ({start_pending})");
    let mut next = rec.clone();
    let (mut at, mut turn) = (0, 0);
    while at < data.len() {
        let room = (part - w.pending()) as usize;
        let n = chunk_sizes[turn % chunk_sizes.len()].min(room).min(data.len() - at);
        turn += 1;
        w.write(Bytes::copy_from_slice(&data[at..at + n])).await.unwrap();
        at += n;
        assert!(w.pending() <= part, "pending stays within a part");
        if w.pending() == part {
            next.bytes = w.flush().await.unwrap();
            assert_eq!(w.pending(), 0, "a part's flush leaves nothing pending");
        }
    }
    next.bytes = w.flush().await.unwrap();
    next.offset += data.len() as u64;
    next.hash.update(data);
    next.version += 1;
    next
}

/// Resumable uploads' durable side (`create_upload` ... `list_uploads`): bytes written
/// over several requests, in odd chunks, continue from what was committed; a save made
/// from a stale record is refused; an uncommitted writer's bytes never count; the
/// finished payload is exactly the bytes, with its size and sha256, and a finish retried
/// gives the same; removed uploads are gone.
pub async fn resumable(storage: &dyn Storage, prefix: &str) {
    let id = format!("{prefix}-resumable");
    let rec = upload_record(&id);
    storage.create_upload(&rec).await.unwrap_or_else(|e| panic!("create_upload {id}: {e}"));
    let again = storage.create_upload(&rec).await.expect_err("a second create_upload of an id is refused");
    assert!(matches!(again, Error::Conflict(_)), "create_upload twice answers Conflict, got: {again}");
    assert_eq!(storage.load_upload(&id).await.unwrap().as_ref(), Some(&rec), "load_upload gives the created record");
    assert!(storage.list_uploads().await.unwrap().contains(&id), "list_uploads names {id}");
    assert_eq!(storage.load_upload(&format!("{prefix}-no-such-upload")).await.unwrap(), None, "no record: None");

    let part = storage.upload_writer(&rec).await.unwrap().part_size() as usize;
    // 2.5 parts and a bit, not a multiple of anything.
    let data: Vec<u8> = (0..part * 5 / 2 + 12_345).map(|i| (i % 253) as u8 ^ (i >> 13) as u8).collect();
    let odd = [100_003, 65_537, 1, 333_331, 7];

    // Request 1: 1.3 parts: one part, then a tail.
    let cut1 = part + part * 3 / 10;
    let r2 = append(storage, &rec, &data[..cut1], &odd).await;
    assert!(storage.save_upload(&r2).await.unwrap(), "a save made from the stored record is taken");
    assert_eq!(storage.load_upload(&id).await.unwrap().as_ref(), Some(&r2), "load_upload gives the saved record");
    assert!(!storage.save_upload(&r2).await.unwrap(), "the same version saved again is refused");
    // (Made without a writer: on local disk a writer from a stale record would cut the
    // file back to that record's offset.)
    let stale = super::UploadRecord { version: rec.version + 1, offset: 16, ..rec.clone() };
    assert!(!storage.save_upload(&stale).await.unwrap(), "a save made from a stale record is refused");
    assert_eq!(storage.load_upload(&id).await.unwrap().as_ref(), Some(&r2), "and changes nothing");

    // A writer that wrote (across a part boundary) but whose record was never saved:
    // the stored bytes stay as they were.
    let junk = vec![0xEEu8; part];
    let _lost = append(storage, &r2, &junk, &[part / 3 + 1]).await;

    // Request 2, from the stored record: to a bit past two parts (continues the tail).
    let cut2 = 2 * part + 777;
    let r3 = append(storage, &r2, &data[cut1..cut2], &odd[1..]).await;
    assert!(storage.save_upload(&r3).await.unwrap());
    // Request 3: nothing at all (a flush with nothing pending changes nothing).
    let r4 = append(storage, &r3, &[], &odd).await;
    assert_eq!((&r4.bytes, r4.offset), (&r3.bytes, r3.offset), "no bytes: the layout is unchanged");
    assert!(storage.save_upload(&r4).await.unwrap());
    // Request 4: the rest.
    let r5 = append(storage, &r4, &data[cut2..], &odd[2..]).await;
    assert!(storage.save_upload(&r5).await.unwrap());
    assert_eq!(r5.offset, data.len() as u64);

    let sha = hex::encode(Sha256::digest(&data));
    assert_eq!(r5.hash.hex(), sha, "the stored hash state continued over the requests");
    let want = ObjectMeta { size: r5.offset, sha256: r5.hash.hex(), ..meta(&id) };
    let done = storage.finish_upload(&r5, want.clone()).await.unwrap_or_else(|e| panic!("finish_upload {id}: {e}"));
    assert_eq!((done.size, done.sha256.as_str()), (data.len() as u64, sha.as_str()), "finish keeps size and sha256");
    assert_eq!(ObjectMeta { put_id: None, ..done.clone() }, want, "finish stores the meta it is given");
    assert_eq!(storage.head(Bucket::Quarantine, &id).await.unwrap().as_ref(), Some(&done), "head gives the finished meta");
    let (got_meta, back) = read_all(storage, Bucket::Quarantine, &id).await.expect("the finished payload is in quarantine");
    assert_eq!(got_meta, done);
    assert!(back == data, "the payload is exactly the bytes written ({} bytes, {} back)", data.len(), back.len());
    let retried = storage.finish_upload(&r5, want.clone()).await.expect("a finish retried finds its own payload");
    assert_eq!(retried, done, "and gives its meta");
    assert!(storage.list(Bucket::Quarantine).await.unwrap().contains(&id), "list names the finished payload");
    assert!(!storage.list(Bucket::Quarantine).await.unwrap().iter().any(|k| k.starts_with('.')), "and no upload objects");

    storage.remove_upload(&r5).await.unwrap();
    assert_eq!(storage.load_upload(&id).await.unwrap(), None, "a removed upload has no record");
    assert!(!storage.list_uploads().await.unwrap().contains(&id), "list_uploads no longer names it");
    let (_, back) = read_all(storage, Bucket::Quarantine, &id).await.expect("removing a finished upload keeps its payload");
    assert!(back == data);
    storage.remove_upload(&r5).await.expect("removing what is gone is fine");
    storage.delete(Bucket::Quarantine, &id).await.unwrap();

    // Less than a part in all, over two requests: one small object, its meta inside.
    let small_id = format!("{prefix}-resumable-small");
    let small = upload_record(&small_id);
    storage.create_upload(&small).await.unwrap();
    let s2 = append(storage, &small, b"a small ", &[3]).await;
    assert!(storage.save_upload(&s2).await.unwrap());
    let s3 = append(storage, &s2, b"resumable payload", &[5]).await;
    assert!(storage.save_upload(&s3).await.unwrap());
    let m = ObjectMeta { size: s3.offset, sha256: s3.hash.hex(), ..meta(&small_id) };
    let done = storage.finish_upload(&s3, m).await.unwrap();
    let (got, back) = read_all(storage, Bucket::Quarantine, &small_id).await.unwrap();
    assert_eq!((got, back.as_slice()), (done.clone(), &b"a small resumable payload"[..]));
    assert_eq!(done.sha256, hex::encode(Sha256::digest(b"a small resumable payload")));
    assert_eq!(storage.finish_upload(&s3, meta(&small_id)).await.unwrap(), done, "retried: the same meta");
    storage.remove_upload(&s3).await.unwrap();
    storage.delete(Bucket::Quarantine, &small_id).await.unwrap();

    // Exactly one part (no tail), finished; and an empty upload.
    let whole_id = format!("{prefix}-resumable-whole");
    let whole = upload_record(&whole_id);
    storage.create_upload(&whole).await.unwrap();
    let w2 = append(storage, &whole, &data[..part], &[part]).await;
    assert!(storage.save_upload(&w2).await.unwrap());
    let done = storage.finish_upload(&w2, ObjectMeta { size: w2.offset, sha256: w2.hash.hex(), ..meta(&whole_id) }).await.unwrap();
    let (got, back) = read_all(storage, Bucket::Quarantine, &whole_id).await.unwrap();
    assert!(got == done && back == data[..part], "one whole part comes back whole");
    storage.remove_upload(&w2).await.unwrap();
    storage.delete(Bucket::Quarantine, &whole_id).await.unwrap();
    let empty_id = format!("{prefix}-resumable-empty");
    let empty = upload_record(&empty_id);
    storage.create_upload(&empty).await.unwrap();
    let e2 = append(storage, &empty, &[], &[1]).await;
    assert!(storage.save_upload(&e2).await.unwrap());
    let done = storage.finish_upload(&e2, ObjectMeta { size: 0, sha256: e2.hash.hex(), ..meta(&empty_id) }).await.unwrap();
    let (_, back) = read_all(storage, Bucket::Quarantine, &empty_id).await.unwrap();
    assert!(back.is_empty() && done.size == 0, "an empty upload is an empty payload");
    storage.remove_upload(&e2).await.unwrap();
    storage.delete(Bucket::Quarantine, &empty_id).await.unwrap();

    // An id a stored payload already has: the finish is refused, the payload untouched.
    let taken_id = format!("{prefix}-resumable-taken");
    let first = storage.put(Bucket::Quarantine, &taken_id, meta(&taken_id), payload(b"first".to_vec(), u64::MAX)).await.unwrap();
    let taken = upload_record(&taken_id);
    storage.create_upload(&taken).await.unwrap();
    let t2 = append(storage, &taken, b"second", &[6]).await;
    assert!(storage.save_upload(&t2).await.unwrap());
    let e = storage.finish_upload(&t2, ObjectMeta { size: 6, sha256: t2.hash.hex(), ..meta(&taken_id) }).await;
    assert!(matches!(e, Err(Error::Conflict(_))), "finishing onto a stored payload answers Conflict, got: {e:?}");
    let (got, back) = read_all(storage, Bucket::Quarantine, &taken_id).await.unwrap();
    assert_eq!((got, back.as_slice()), (first, &b"first"[..]), "the stored payload is untouched");
    storage.remove_upload(&t2).await.unwrap();
    storage.delete(Bucket::Quarantine, &taken_id).await.unwrap();

    // Removed before it was finished: 1.5 parts, nothing of it stays.
    let gone_id = format!("{prefix}-resumable-removed");
    let gone = upload_record(&gone_id);
    storage.create_upload(&gone).await.unwrap();
    let g2 = append(storage, &gone, &data[..part * 3 / 2], &odd).await;
    assert!(storage.save_upload(&g2).await.unwrap());
    storage.remove_upload(&g2).await.unwrap();
    assert_eq!(storage.load_upload(&gone_id).await.unwrap(), None);
    assert!(!storage.list_uploads().await.unwrap().contains(&gone_id), "list_uploads no longer names a removed upload");
    assert_eq!(storage.head(Bucket::Quarantine, &gone_id).await.unwrap(), None, "a removed upload leaves no payload");
    storage.create_upload(&gone).await.expect("a removed upload's id can be created again");
    storage.remove_upload(&gone).await.unwrap();
}

/// The compare-and-set under the one-writer rule: of ten creates of one id at once, one
/// is taken; of ten saves made from one record at once, one is taken, and the stored
/// record is the winner's. (Needs conditional writes: run where `run` runs, not on Garage.)
pub async fn resumable_races(storage: &dyn Storage, prefix: &str) {
    let id = format!("{prefix}-resumable-race");
    let rec = upload_record(&id);
    let creates = futures_util::future::join_all((0..10).map(|_| storage.create_upload(&rec))).await;
    let won = creates.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one of ten racing creates is taken: {creates:?}");
    for r in creates.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(r, Error::Conflict(_)), "the others answer Conflict: {r}");
    }
    let saves: Vec<super::UploadRecord> =
        (0..10u64).map(|i| super::UploadRecord { version: 2, offset: i, ..rec.clone() }).collect();
    let results = futures_util::future::join_all(saves.iter().map(|r| storage.save_upload(r))).await;
    let won: Vec<usize> = results.iter().enumerate().filter(|(_, r)| matches!(r, Ok(true))).map(|(i, _)| i).collect();
    assert_eq!(won.len(), 1, "exactly one of ten racing saves is taken: {results:?}");
    assert!(results.iter().all(|r| r.is_ok()), "the others answer false: {results:?}");
    assert_eq!(storage.load_upload(&id).await.unwrap().as_ref(), Some(&saves[won[0]]), "the stored record is the winner's");
    storage.remove_upload(&saves[won[0]]).await.unwrap();
}
