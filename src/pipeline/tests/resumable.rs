//! Resumable uploads through the pipeline on local disk: commits, offsets, claims,
//! checksums, the declared sha256, expiry, restarts.

use std::sync::atomic::AtomicBool;

use sha2::Digest;
use tokio::sync::mpsc;

use super::*;
use crate::pipeline::{Append, ChecksumAlgorithm, ChunkChecksum};

fn sized(length: Option<u64>) -> UploadHeader {
    UploadHeader { content_type: ADVISOR.into(), expected_size: length, ..Default::default() }
}

fn bytes_body(data: Vec<u8>, piece: usize) -> BodyStream {
    let pieces: Vec<Result<Bytes>> = data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(pieces))
}

fn append(offset: u64, data: Vec<u8>) -> Append {
    Append { offset, body: bytes_body(data, 7), length: None, ends: None, checksum: None }
}

/// A body fed by hand: the test decides when bytes come and when it ends or breaks.
fn channel_body() -> (mpsc::Sender<Result<Bytes>>, BodyStream) {
    let (tx, rx) = mpsc::channel(4);
    (tx, Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test]
async fn an_upload_in_three_requests_is_stored_and_announced_once() {
    let f = fixture().await;
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let u = f.pipeline.create_upload(sized(Some(3000))).await.unwrap();
    assert_eq!((u.offset, u.length, u.finished), (0, Some(3000), false));
    let a = f.pipeline.append_upload(&u.id, None, append(0, data[..1000].to_vec())).await.unwrap();
    assert_eq!((a.upload.offset, a.receipt.is_none()), (1000, true));
    let a = f.pipeline.append_upload(&u.id, None, append(1000, data[1000..2500].to_vec())).await.unwrap();
    assert_eq!(a.upload.offset, 2500);
    assert!(f.held(Bucket::Quarantine).await.is_empty(), "nothing is a payload before the last byte");
    let a = f.pipeline.append_upload(&u.id, None, append(2500, data[2500..].to_vec())).await.unwrap();
    let r = a.receipt.expect("the last request gets the receipt");
    assert_eq!((r.request_id.as_str(), r.size, r.sha256.clone()), (u.id.as_str(), 3000, sha(&data)));
    let (meta, mut stream) = f.storage.get(Bucket::Quarantine, &u.id).await.unwrap().unwrap();
    let mut stored = Vec::new();
    while let Some(c) = stream.next().await {
        stored.extend_from_slice(&c.unwrap());
    }
    assert_eq!((stored == data, meta.sha256), (true, sha(&data)));
    let announced = f.messages("platform.upload.advisor").await;
    assert_eq!(announced.len(), 1);
    // A retried last request is answered with the same receipt, and announces nothing.
    let again = f.pipeline.append_upload(&u.id, None, append(3000, vec![])).await.unwrap();
    assert_eq!(again.receipt.map(|r| r.sha256), Some(sha(&data)));
    assert!(f.messages("platform.upload.advisor").await.len() == 1);
    assert!(f.pipeline.upload_info(&u.id, None).await.unwrap().finished);
}

#[tokio::test]
async fn a_request_at_another_offset_is_refused_and_changes_nothing() {
    let f = fixture().await;
    let u = f.pipeline.create_upload(sized(Some(10))).await.unwrap();
    f.pipeline.append_upload(&u.id, None, append(0, b"abcd".to_vec())).await.unwrap();
    let e = f.pipeline.append_upload(&u.id, None, append(2, b"xx".to_vec())).await.unwrap_err();
    assert!(matches!(e, Error::OffsetMismatch { expected: 4, got: 2 }), "{e}");
    let e = f.pipeline.append_upload(&u.id, None, append(4, b"too many bytes".to_vec())).await.unwrap_err();
    assert!(matches!(e, Error::BadRequest(_)), "{e}");
    assert_eq!(f.pipeline.upload_info(&u.id, None).await.unwrap().offset, 4);
}

#[tokio::test]
async fn bytes_before_a_break_are_kept_and_the_upload_continues_from_them() {
    let f = fixture().await;
    let u = f.pipeline.create_upload(sized(Some(12))).await.unwrap();
    let (tx, body) = channel_body();
    let p = f.pipeline.clone();
    let id = u.id.clone();
    let writing = tokio::spawn(async move {
        p.append_upload(&id, None, Append { offset: 0, body, length: None, ends: None, checksum: None }).await
    });
    tx.send(Ok(Bytes::from_static(b"hello "))).await.unwrap();
    tx.send(Err(Error::ClientGone("connection reset".into()))).await.unwrap();
    let e = writing.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::ClientGone(_)), "{e}");
    let info = f.pipeline.upload_info(&u.id, None).await.unwrap();
    assert_eq!(info.offset, 6, "what arrived before the break is committed");
    let done = f.pipeline.append_upload(&u.id, None, append(6, b"world!".to_vec())).await.unwrap();
    assert_eq!(done.receipt.unwrap().sha256, sha(b"hello world!"));
}

#[tokio::test]
async fn a_second_writer_is_refused_while_the_first_holds_the_upload() {
    let f = fixture().await;
    let u = f.pipeline.create_upload(sized(Some(8))).await.unwrap();
    let (tx, body) = channel_body();
    let p = f.pipeline.clone();
    let id = u.id.clone();
    let first = tokio::spawn(async move {
        p.append_upload(&id, None, Append { offset: 0, body, length: None, ends: None, checksum: None }).await
    });
    tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
    // Once the first has claimed the upload (its record says so), a second is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.storage.load_upload(&u.id).await.unwrap().unwrap().claim.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the first writer never claimed the upload");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e = f.pipeline.append_upload(&u.id, None, append(0, b"zzzzzzzz".to_vec())).await.unwrap_err();
    assert!(matches!(e, Error::Locked(_)), "{e}");
    tx.send(Ok(Bytes::from_static(b"cdefgh"))).await.unwrap();
    drop(tx);
    let r = first.await.unwrap().unwrap().receipt.unwrap();
    assert_eq!(r.sha256, sha(b"abcdefgh"), "the stored payload is the first writer's");
}

#[tokio::test]
async fn a_stalled_writers_claim_expires_and_its_late_bytes_never_land() {
    let f = fixture_with(Arc::new(MemoryQueue::default()), &["--upload-claim-secs", "1", "--body-idle-timeout-secs", "30"]).await;
    const LEN: usize = 600 * 1024;
    let u = f.pipeline.create_upload(sized(Some(LEN as u64))).await.unwrap();
    let (tx, body) = channel_body();
    let p = f.pipeline.clone();
    let id = u.id.clone();
    let stalled = tokio::spawn(async move {
        p.append_upload(&id, None, Append { offset: 0, body, length: None, ends: None, checksum: None }).await
    });
    tx.send(Ok(Bytes::from_static(b"ab"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let theirs = vec![b'w'; LEN];
    assert!(matches!(f.pipeline.append_upload(&u.id, None, append(0, theirs.clone())).await.unwrap_err(), Error::Locked(_)));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = f.pipeline.append_upload(&u.id, None, append(0, theirs.clone())).await.unwrap();
    assert_eq!(r.receipt.unwrap().sha256, sha(&theirs), "the claim ran out; the second writer took over");
    // The stalled writer sends again, more than its write buffer holds: it has lost
    // the upload, and none of its bytes reach the stored payload.
    let _ = tx.send(Ok(Bytes::from(vec![b'L'; 300 * 1024]))).await;
    drop(tx);
    let late = stalled.await.unwrap();
    assert!(matches!(late, Err(Error::Locked(_))), "{late:?}");
    let (meta, mut stream) = f.storage.get(Bucket::Quarantine, &u.id).await.unwrap().unwrap();
    let mut stored = Vec::new();
    while let Some(c) = stream.next().await {
        stored.extend_from_slice(&c.unwrap());
    }
    assert!(stored == theirs, "the stalled writer's late bytes landed in the payload");
    assert_eq!(meta.sha256, sha(&theirs));
}

#[tokio::test]
async fn a_request_whose_checksum_differs_keeps_none_of_its_bytes() {
    let f = fixture().await;
    let u = f.pipeline.create_upload(sized(Some(6))).await.unwrap();
    let bad = ChunkChecksum { algorithm: ChecksumAlgorithm::Sha1, digest: vec![0; 20] };
    let e = f
        .pipeline
        .append_upload(&u.id, None, Append { checksum: Some(bad), ..append(0, b"abc".to_vec()) })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch(_)), "{e}");
    assert_eq!(f.pipeline.upload_info(&u.id, None).await.unwrap().offset, 0);
    let good = ChunkChecksum { algorithm: ChecksumAlgorithm::Sha256, digest: sha2::Sha256::digest(b"abc").to_vec() };
    let a = f.pipeline.append_upload(&u.id, None, Append { checksum: Some(good), ..append(0, b"abc".to_vec()) }).await.unwrap();
    assert_eq!(a.upload.offset, 3);
}

#[tokio::test]
async fn a_declared_sha256_that_differs_keeps_and_announces_nothing() {
    let f = fixture().await;
    let mut h = sized(Some(3));
    h.expected_sha256 = Some(sha(b"not these bytes"));
    let u = f.pipeline.create_upload(h).await.unwrap();
    let e = f.pipeline.append_upload(&u.id, None, append(0, b"abc".to_vec())).await.unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch(_)), "{e}");
    assert!(f.held(Bucket::Quarantine).await.is_empty());
    assert!(f.messages("platform.upload.advisor").await.is_empty());
    assert!(matches!(f.pipeline.upload_info(&u.id, None).await.unwrap_err(), Error::NotFound(_)));
}

#[tokio::test]
async fn a_deferred_length_is_set_by_the_end_of_the_stream_and_bounded_by_the_limit() {
    let f = fixture_with(Arc::new(MemoryQueue::default()), &["--service-limits", "advisor=10"]).await;
    let u = f.pipeline.create_upload(sized(None)).await.unwrap();
    assert_eq!(u.length, None);
    let e = f.pipeline.append_upload(&u.id, None, append(0, b"more than ten bytes".to_vec())).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 10, .. }), "{e}");
    let u = f.pipeline.create_upload(sized(None)).await.unwrap();
    let ends = Arc::new(AtomicBool::new(true));
    let a = f.pipeline.append_upload(&u.id, None, Append { ends: Some(ends), ..append(0, b"short".to_vec()) }).await.unwrap();
    assert_eq!((a.upload.length, a.receipt.map(|r| r.size)), (Some(5), Some(5)));
    let e = f.pipeline.create_upload(sized(Some(11))).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "a length over the limit is refused at creation: {e}");
}

#[tokio::test]
async fn another_identitys_upload_is_unknown() {
    use base64::Engine;
    let f = fixture().await;
    let id = |org: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(format!(r#"{{"identity":{{"org_id":"{org}","account_number":"1"}}}}"#))
    };
    let mut h = sized(Some(2));
    h.identity = Some(id("o1"));
    let u = f.pipeline.create_upload(h).await.unwrap();
    let theirs = id("o2");
    assert!(matches!(f.pipeline.upload_info(&u.id, Some(&theirs)).await.unwrap_err(), Error::NotFound(_)));
    assert!(matches!(f.pipeline.cancel_upload(&u.id, Some(&theirs)).await.unwrap_err(), Error::NotFound(_)));
    assert!(matches!(f.pipeline.append_upload(&u.id, Some(&theirs), append(0, b"xy".to_vec())).await.unwrap_err(), Error::NotFound(_)));
    assert!(matches!(f.pipeline.upload_info(&u.id, None).await.unwrap_err(), Error::NotFound(_)));
    assert_eq!(f.pipeline.upload_info(&u.id, Some(&id("o1"))).await.unwrap().offset, 0);
}

#[tokio::test]
async fn an_expired_upload_is_gone_and_its_bytes_are_removed() {
    let f = fixture_with(Arc::new(MemoryQueue::default()), &["--upload-expiry-secs", "1"]).await;
    let u = f.pipeline.create_upload(sized(Some(10))).await.unwrap();
    f.pipeline.append_upload(&u.id, None, append(0, b"abc".to_vec())).await.unwrap();
    assert_eq!(f.pipeline.sweep_uploads_once().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(f.pipeline.upload_info(&u.id, None).await.unwrap_err(), Error::Gone(_)));
    assert_eq!(f.pipeline.sweep_uploads_once().await.unwrap(), 1);
    assert!(matches!(f.pipeline.upload_info(&u.id, None).await.unwrap_err(), Error::NotFound(_)));
    assert!(f.storage.list_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_supplied_request_id_is_used_once_across_both_kinds_of_upload() {
    let f = fixture().await;
    let r = f.upload(b"plain").await;
    let mut h = sized(Some(1));
    h.request_id = Some(r.request_id.to_string());
    assert!(matches!(f.pipeline.create_upload(h.clone()).await.unwrap_err(), Error::Conflict(_)));
    h.request_id = Some("fresh-id-1".into());
    f.pipeline.create_upload(h.clone()).await.unwrap();
    assert!(matches!(f.pipeline.create_upload(h).await.unwrap_err(), Error::Conflict(_)));
}
