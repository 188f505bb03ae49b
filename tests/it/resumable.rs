//! Resumable uploads over gRPC (`CreateUpload`, `QueryWriteStatus`, `Write`,
//! `CancelUpload`) on the embedded default: a broken stream keeps what arrived, the
//! gateway killed mid-upload resumes from what it committed, and the finished upload is
//! an ordinary payload. (The tus side is in `tus.rs`.)

use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Code;

use crate::common::pb::{CancelUploadRequest, CreateUploadRequest, QueryWriteStatusRequest, UploadHeader, WriteRequest};
use crate::common::*;

const ADVISOR: &str = "application/vnd.redhat.advisor.collection+tgz";
const MIB: u64 = 1 << 20;
/// A limit for the 1 GiB payload (qpc-sized).
const LARGE: [&str; 2] = ["--service-limits", "advisor=2147483648"];

fn with_identity<T>(msg: T, org: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("x-rh-identity", identity("acct", org).parse().unwrap());
    req
}

fn create(length: u64, sha256: &str) -> CreateUploadRequest {
    CreateUploadRequest {
        header: Some(UploadHeader {
            content_type: ADVISOR.into(),
            expected_size: length,
            expected_sha256: sha256.into(),
            ..Default::default()
        }),
    }
}

/// The test payloads' bytes: one endless [`Big`] (the tests take prefixes of it).
static PAYLOAD: std::sync::LazyLock<Big> = std::sync::LazyLock::new(|| Big::new(u64::MAX, 7));

fn bytes(from: u64, to: u64) -> Vec<u8> {
    PAYLOAD.pieces(from, to, to - from).next().unwrap_or_default()
}

fn sha_of(len: u64) -> String {
    PAYLOAD.prefix(len).sha256_hex()
}

fn write_msgs(id: &str, from: u64, to: u64, piece: u64, finish: bool) -> Vec<WriteRequest> {
    let mut msgs = Vec::new();
    let mut at = from;
    while at < to {
        let end = (at + piece).min(to);
        msgs.push(WriteRequest { upload_id: if at == from { id.into() } else { String::new() }, write_offset: if at == from { from } else { 0 }, data: bytes(at, end).into(), finish_write: false });
        at = end;
    }
    if finish {
        match msgs.last_mut() {
            Some(m) => m.finish_write = true,
            None => msgs.push(WriteRequest { upload_id: id.into(), write_offset: from, data: Default::default(), finish_write: true }),
        }
    }
    msgs
}

#[tokio::test]
async fn a_broken_write_keeps_what_arrived_and_the_upload_finishes_from_there() {
    let t = spawn_app(&[]).await;
    let len = 3 * MIB + 12345;
    let state = t.grpc().await.create_upload(with_identity(create(len, &sha_of(len)), "o1")).await.unwrap().into_inner();
    assert_eq!((state.committed_size, state.length, state.length_known, state.complete), (0, len, true, false));
    assert_eq!(state.tus_path, format!("/api/ingress/v1/uploads/{}", state.upload_id));
    let id = state.upload_id.clone();

    // A stream that sends 1 MiB and a half, then breaks off (the call is dropped).
    let (tx, rx) = mpsc::channel(4);
    let mut client = t.grpc().await;
    let call = tokio::spawn(async move {
        client.write(with_identity(tokio_stream::wrappers::ReceiverStream::new(rx), "o1")).await
    });
    let sent = 3 * MIB / 2;
    for m in write_msgs(&id, 0, sent, 256 * 1024, false) {
        tx.send(m).await.unwrap();
    }
    eventually(Duration::from_secs(10), "the gateway read every byte sent", || async {
        t.metric("upload_gateway_received_bytes_total").await as u64 >= sent
    })
    .await;
    call.abort();
    drop(tx);

    // What arrived is committed; the same identity sees it, another does not.
    let mut g = t.grpc().await;
    eventually(Duration::from_secs(10), "the broken stream's bytes are committed", || {
        let mut g = g.clone();
        let id = id.clone();
        async move {
            let q = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id }, "o1")).await.unwrap().into_inner();
            q.committed_size == sent
        }
    })
    .await;
    let other = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o2")).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);

    // Writing at another offset is refused; from the committed one, it finishes.
    let wrong = g.write(with_identity(futures_util::stream::iter(write_msgs(&id, 0, 10, 10, false)), "o1")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
    let done = g
        .write(with_identity(futures_util::stream::iter(write_msgs(&id, sent, len, 512 * 1024, true)), "o1"))
        .await
        .unwrap()
        .into_inner();
    let receipt = done.receipt.expect("the finishing write carries the receipt");
    assert_eq!((done.committed_size, receipt.size, receipt.request_id.as_str()), (len, len, id.as_str()));
    assert_eq!(receipt.sha256, sha_of(len));
    assert_eq!(crate::common::local_bytes(t.data.path(), "quarantine", &id).unwrap(), bytes(0, len));
    let a: serde_json::Value = serde_json::from_slice(&t.next_message("platform.upload.advisor", "t").await.payload).unwrap();
    assert_eq!((a["request_id"].as_str(), a["size"].as_u64()), (Some(id.as_str()), Some(len)));
    let q = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o1")).await.unwrap().into_inner();
    assert!(q.complete);
}

#[tokio::test]
async fn a_deferred_length_ends_with_finish_write_and_a_cancelled_upload_is_gone() {
    let t = spawn_app(&[]).await;
    let mut g = t.grpc().await;
    let id = g.create_upload(with_identity(create(0, ""), "o1")).await.unwrap().into_inner().upload_id;
    let done = g.write(with_identity(futures_util::stream::iter(write_msgs(&id, 0, 1000, 300, true)), "o1")).await.unwrap().into_inner();
    assert_eq!(done.receipt.map(|r| r.size), Some(1000));

    let id = g.create_upload(with_identity(create(50, ""), "o1")).await.unwrap().into_inner().upload_id;
    g.write(with_identity(futures_util::stream::iter(write_msgs(&id, 0, 20, 20, false)), "o1")).await.unwrap();
    let theirs = g.cancel_upload(with_identity(CancelUploadRequest { upload_id: id.clone() }, "o2")).await.unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    g.cancel_upload(with_identity(CancelUploadRequest { upload_id: id.clone() }, "o1")).await.unwrap();
    let gone = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o1")).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(!t.data.path().join(".uploads").join(&id).exists(), "its bytes are removed");
    let bad = g.create_upload(with_identity(CreateUploadRequest { header: None }, "o1")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

/// A resumable upload whose bytes are not the sha256 declared at its creation: the
/// finishing Write is refused (INVALID_ARGUMENT), nothing is kept or announced.
#[tokio::test]
async fn a_declared_sha256_that_differs_is_refused_and_nothing_is_kept() {
    let t = spawn_app(&[]).await;
    let mut g = t.grpc().await;
    let len = 3 * MIB;
    let declared = sha_of(len + 1); // the sha256 of other bytes
    let id = g.create_upload(with_identity(create(len, &declared), "o1")).await.unwrap().into_inner().upload_id;
    let refused = g.write(with_identity(write_stream(&id, 0, len, 256 * 1024, true), "o1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("sha256"), "the refusal names the checksum: {refused:?}");
    assert!(crate::common::local_bytes(t.data.path(), "quarantine", &id).is_none(), "nothing in quarantine");
    let mut sub = t.app.queue().subscribe("platform.upload.advisor", "t").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(1), futures_util::StreamExt::next(&mut sub)).await;
    assert!(next.is_err(), "nothing announced: {:?}", next.map(|d| d.map(|d| d.map(|d| d.message.key.clone()))));
}

/// The interruption case on the embedded default: a 1 GiB upload over gRPC, the
/// gateway SIGKILLed at about half (once it has read every byte sent so far) and
/// restarted on the same folder: the upload continues from the committed offset, at
/// most one part (8 MiB) behind what the gateway had read, and ends with one payload
/// whose sha256 is the file's; memory stays bounded meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_upload_resumes_from_what_it_committed() {
    let data = tempfile::tempdir().unwrap();
    let first = GatewayProcess::start(data.path(), &LARGE);
    let len = 1024 * MIB;
    let mut g = grpc_client(&first.base, data.path()).await;
    let id = g.create_upload(with_identity(create(len, &sha_of(len)), "o1")).await.unwrap().into_inner().upload_id;

    let (tx, rx) = mpsc::channel::<WriteRequest>(2);
    let mut client = g.clone();
    let call = tokio::spawn(async move { client.write(with_identity(tokio_stream::wrappers::ReceiverStream::new(rx), "o1")).await });
    let half = len / 2 + 3 * MIB / 2; // not on a part boundary
    let mut at = 0;
    while at < half {
        let end = (at + MIB).min(half);
        let m = WriteRequest { upload_id: if at == 0 { id.clone() } else { String::new() }, write_offset: 0, data: bytes(at, end).into(), finish_write: false };
        tx.send(m).await.unwrap();
        at = end;
    }
    let base = first.base.clone();
    eventually(Duration::from_secs(30), "the gateway read every byte sent", || {
        let base = base.clone();
        async move { received(&base).await >= half }
    })
    .await;
    let addr = first.addr.to_string();
    let mut peak_rss = first.peak_rss_kib();
    first.signal("KILL");
    drop(first);
    let _ = call.await;

    let second = GatewayProcess::start_on(&addr, data.path(), &LARGE);
    let mut g = grpc_client(&second.base, data.path()).await;
    let committed = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o1")).await.unwrap().into_inner().committed_size;
    assert!(committed <= half && half - committed <= 8 * MIB, "committed {committed} of {half} read: more than one part lost");

    let (tx, rx) = mpsc::channel::<WriteRequest>(2);
    let mut client = g.clone();
    let call = tokio::spawn(async move { client.write(with_identity(tokio_stream::wrappers::ReceiverStream::new(rx), "o1")).await });
    let mut at = committed;
    while at < len {
        let end = (at + MIB).min(len);
        let first_msg = at == committed;
        let m = WriteRequest {
            upload_id: if first_msg { id.clone() } else { String::new() },
            write_offset: if first_msg { committed } else { 0 },
            data: bytes(at, end).into(),
            finish_write: end == len,
        };
        if tx.send(m).await.is_err() {
            break; // the call ended: its result says why
        }
        at = end;
    }
    drop(tx);
    let done = call.await.unwrap().unwrap_or_else(|e| panic!("the resumed write failed: {e:?}")).into_inner();
    peak_rss = peak_rss.max(second.peak_rss_kib());
    let receipt = done.receipt.unwrap();
    assert_eq!((receipt.size, receipt.sha256), (len, sha_of(len)));
    let stored = std::fs::metadata(data.path().join("quarantine").join(&id)).unwrap().len();
    assert_eq!(stored, len);
    assert!(peak_rss < 64 * 1024, "peak RSS {peak_rss} KiB while taking a 1 GiB upload");
    announced_once_by(&second.base).await;
    eprintln!("resumed at {committed} after {half} read: {} bytes sent again; peak RSS {peak_rss} KiB", half - committed);
}

async fn received(base: &str) -> u64 {
    metric_at(base, "upload_gateway_received_bytes_total").await as u64
}

/// Checks that the gateway process at `base` announced one payload: one upload of its
/// own stored and announced, none found unannounced and announced again. (Each process
/// here has its own in-process queue: what it announced, its counters say.)
async fn announced_once_by(base: &str) {
    assert_eq!(metric_at(base, "upload_gateway_uploads_accepted_total{service=\"advisor\"}").await, 1.0, "payloads announced");
    assert_eq!(metric_at(base, "upload_gateway_reannounced_total").await, 0.0, "payloads announced again");
}

/// The sha256 and size of an object, read in pieces.
async fn s3_sha256(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (String, u64) {
    use sha2::Digest;
    let mut body = c.get_object().bucket(bucket).key(key).send().await.unwrap().body;
    let (mut h, mut len) = (sha2::Sha256::new(), 0u64);
    while let Some(piece) = body.try_next().await.unwrap() {
        h.update(&piece);
        len += piece.len() as u64;
    }
    (hex::encode(h.finalize()), len)
}

/// The Write messages for `from..to` of the test bytes, made as they are sent; the last
/// one finishes the upload if `finish`.
fn write_stream(id: &str, from: u64, to: u64, piece: u64, finish: bool) -> impl futures_util::Stream<Item = WriteRequest> + Send + 'static {
    let id = id.to_string();
    let pieces = PAYLOAD.pieces(from, to, piece).scan(from, move |at, data| {
        let first = *at == from;
        *at += data.len() as u64;
        Some(WriteRequest {
            upload_id: if first { id.clone() } else { String::new() },
            write_offset: if first { from } else { 0 },
            finish_write: finish && *at == to,
            data: data.into(),
        })
    });
    futures_util::stream::iter(pieces)
}

/// Two gateway processes on one S3 server (MinIO, which honours conditional writes),
/// each with its in-process queue: a fleet as far as resumable uploads go.
async fn two_on_minio(tag: &str) -> (crate::common::s3::S3Env, crate::common::s3::Buckets, GatewayProcess, GatewayProcess) {
    use crate::common::s3::*;
    let env = S3Env::minio_from_test_env();
    let buckets = Buckets::unique(tag);
    let flags = s3_flags(&env, &buckets, &["--service-limits", "advisor=2147483648"]);
    let (a, b) = two_gateways(&flags).await;
    (env, buckets, a, b)
}

/// Sends `from..to` of the test bytes in one Write, its stream held open at the end
/// until `release` says so (then it ends without finishing the upload).
async fn slow_write(mut g: Grpc, id: String, from: u64, to: u64, release: tokio::sync::oneshot::Receiver<()>) -> Result<pb::WriteResponse, tonic::Status> {
    let stream = write_stream(&id, from, to, 256 * 1024, false).chain(futures_util::stream::once(async move {
        let _ = release.await;
        WriteRequest { upload_id: String::new(), write_offset: 0, data: Default::default(), finish_write: false }
    }));
    g.write(with_identity(stream, "o1")).await.map(|r| r.into_inner())
}

use futures_util::StreamExt as _;

/// On S3 an upload begun on one replica is continued on another: the bytes A received
/// before its stream broke are committed in S3 (whole parts in the multipart upload,
/// the rest as the tail object), so B continues from there; the payload is whole and
/// nothing is left over (no unfinished multipart upload, no tail).
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_an_upload_broken_on_one_replica_is_finished_on_another() {
    use crate::common::s3::*;
    let (env, buckets, a, b) = two_on_minio("resume2").await;
    let len = 21 * MIB + 333;
    let mut ga = grpc_client(&a.base, &a.data).await;
    let id = ga.create_upload(with_identity(create(len, &sha_of(len)), "o1")).await.unwrap().into_inner().upload_id;
    let (release, held) = tokio::sync::oneshot::channel();
    let cut = 13 * MIB + 7; // a part and a half, and some
    let broken = tokio::spawn(slow_write(ga.clone(), id.clone(), 0, cut, held));
    let base = a.base.clone();
    eventually(Duration::from_secs(30), "A read every byte sent", || {
        let base = base.clone();
        async move { received(&base).await >= cut }
    })
    .await;
    broken.abort(); // the stream breaks off
    drop(release);

    let mut gb = grpc_client(&b.base, &b.data).await;
    eventually(Duration::from_secs(30), "B sees every byte A received as committed", || {
        let (mut gb, id) = (gb.clone(), id.clone());
        async move {
            let q = gb.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id }, "o1")).await;
            q.is_ok_and(|q| q.into_inner().committed_size == cut)
        }
    })
    .await;
    let done = gb
        .write(with_identity(futures_util::stream::iter(write_msgs(&id, cut, len, 512 * 1024, true)), "o1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.receipt.map(|r| (r.size, r.sha256)), Some((len, sha_of(len))));
    let c = env.client();
    let obj = c.get_object().bucket(&buckets.quarantine).key(&id).send().await.unwrap();
    let body = obj.body.collect().await.unwrap().into_bytes();
    assert!(body.len() as u64 == len && body.as_ref() == bytes(0, len).as_slice(), "the stored payload is the bytes sent");
    assert!(unfinished_uploads(&c, &buckets.quarantine).await.is_empty(), "no multipart upload left");
    let leftovers: Vec<String> = all_keys(&c, &buckets.quarantine).await.into_iter().filter(|k| k.contains("tail")).collect();
    assert!(leftovers.is_empty(), "tails left: {leftovers:?}");
}

/// Two writers on two replicas at once: one holds the upload, the other is refused
/// (ABORTED); the payload is exactly the holder's bytes.
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_two_writers_on_two_replicas_one_wins() {
    let (env, buckets, a, b) = two_on_minio("writers2").await;
    let len = 2 * MIB;
    let mut ga = grpc_client(&a.base, &a.data).await;
    let id = ga.create_upload(with_identity(create(len, ""), "o1")).await.unwrap().into_inner().upload_id;
    // A's writer takes the upload and holds it (its stream stays open).
    let (release, held) = tokio::sync::oneshot::channel();
    let first = tokio::spawn(slow_write(ga.clone(), id.clone(), 0, MIB, held));
    let base = a.base.clone();
    eventually(Duration::from_secs(30), "A read the first writer's bytes", || {
        let base = base.clone();
        async move { received(&base).await >= MIB }
    })
    .await;
    // B's writer, other bytes at the same offset: refused while A's holds.
    let mut gb = grpc_client(&b.base, &b.data).await;
    let other: Vec<WriteRequest> = write_msgs(&id, 0, len, 256 * 1024, true)
        .into_iter()
        .map(|mut m| {
            m.data = m.data.iter().map(|x| !x).collect::<Vec<u8>>().into();
            m
        })
        .collect();
    let refused = gb.write(with_identity(futures_util::stream::iter(other), "o1")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    let _ = release.send(());
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.committed_size, MIB);
    let done = ga
        .write(with_identity(futures_util::stream::iter(write_msgs(&id, MIB, len, 256 * 1024, true)), "o1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.receipt.map(|r| r.sha256), Some(sha_of(len)));
    let c = env.client();
    let body = c.get_object().bucket(&buckets.quarantine).key(&id).send().await.unwrap().body.collect().await.unwrap().into_bytes();
    assert!(body.as_ref() == bytes(0, len).as_slice(), "the stored payload is the winner's bytes");
    drop((a, b));
}

/// The gateway holding an upload on S3 is SIGKILLed mid-stream: another replica
/// continues it once the dead writer's claim lapses (UPLOAD_CLAIM_SECS), from what was
/// committed, at most one part (8 MiB) behind what the killed one had read.
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_an_upload_whose_gateway_is_killed_is_finished_on_another() {
    use crate::common::s3::*;
    let (env, buckets, a, b) = two_on_minio("resumekill").await;
    let len = 1024 * MIB + 5;
    let mut ga = grpc_client(&a.base, &a.data).await;
    let id = ga.create_upload(with_identity(create(len, &sha_of(len)), "o1")).await.unwrap().into_inner().upload_id;
    let (_release, held) = tokio::sync::oneshot::channel();
    let cut = len / 2 + 1000;
    let writing = tokio::spawn(slow_write(ga.clone(), id.clone(), 0, cut, held));
    let base = a.base.clone();
    eventually(Duration::from_secs(30), "A read every byte sent", || {
        let base = base.clone();
        async move { received(&base).await >= cut }
    })
    .await;
    a.signal("KILL");
    let _ = writing.await;

    let mut gb = grpc_client(&b.base, &b.data).await;
    let started = std::time::Instant::now();
    let (committed, done) = loop {
        let q = gb.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o1")).await.unwrap().into_inner();
        let msgs = write_stream(&id, q.committed_size, len, MIB, true);
        match gb.write(with_identity(msgs, "o1")).await {
            Ok(r) => break (q.committed_size, r.into_inner()),
            Err(s) if s.code() == tonic::Code::Aborted && started.elapsed() < Duration::from_secs(40) => {
                tokio::time::sleep(Duration::from_millis(500)).await; // the killed writer's claim holds
            }
            Err(s) => panic!("resuming on B: {s:?}"),
        }
    };
    assert!(committed <= cut && cut - committed <= 8 * MIB, "committed {committed} of {cut} read: more than one part lost");
    assert_eq!(done.receipt.map(|r| (r.size, r.sha256)), Some((len, sha_of(len))));
    let c = env.client();
    assert_eq!(s3_sha256(&c, &buckets.quarantine, &id).await, (sha_of(len), len), "the stored payload is the bytes sent");
    assert!(unfinished_uploads(&c, &buckets.quarantine).await.is_empty(), "no multipart upload left");
    announced_once_by(&b.base).await;
    eprintln!("resumed on B at {committed} after A read {cut}: {} bytes sent again, {:?} after the kill", cut - committed, started.elapsed());
}

/// One upload resource, two protocols: begun over tus and finished over gRPC, and the
/// other way round.
#[tokio::test]
async fn an_upload_begun_over_one_protocol_is_finished_over_the_other() {
    use base64::Engine;
    let t = spawn_app(&[]).await;
    let http = reqwest::Client::new();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let len = 300_000u64;

    // tus creation and a first PATCH; gRPC finishes.
    let created = http
        .post(t.url("/api/ingress/v1/uploads/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len.to_string())
        .header("upload-metadata", format!("filetype {}", b64(ADVISOR)))
        .header("x-rh-identity", identity("acct", "o1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap().to_string();
    let patched = http
        .patch(t.url(&location))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .header("x-rh-identity", identity("acct", "o1"))
        .body(bytes(0, 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204);
    let mut g = t.grpc().await;
    let q = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id.clone() }, "o1")).await.unwrap().into_inner();
    assert_eq!((q.committed_size, q.length, q.tus_path.as_str()), (100_000, len, location.as_str()));
    let done = g.write(with_identity(futures_util::stream::iter(write_msgs(&id, 100_000, len, 64 * 1024, true)), "o1")).await.unwrap().into_inner();
    assert_eq!(done.receipt.map(|r| r.sha256), Some(sha_of(len)));

    // gRPC creation and a first Write; tus finishes.
    let state = g.create_upload(with_identity(create(len, ""), "o1")).await.unwrap().into_inner();
    g.write(with_identity(futures_util::stream::iter(write_msgs(&state.upload_id, 0, 200_000, 64 * 1024, false)), "o1")).await.unwrap();
    let head = http
        .head(t.url(&state.tus_path))
        .header("tus-resumable", "1.0.0")
        .header("x-rh-identity", identity("acct", "o1"))
        .send()
        .await
        .unwrap();
    assert_eq!((head.status().as_u16(), head.headers()["upload-offset"].to_str().unwrap()), (200, "200000"));
    let last = http
        .patch(t.url(&state.tus_path))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "200000")
        .header("content-type", "application/offset+octet-stream")
        .header("x-rh-identity", identity("acct", "o1"))
        .body(bytes(200_000, len))
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 204);
    assert_eq!(last.headers()["x-rh-insights-request-id"].to_str().unwrap(), state.upload_id);
    assert_eq!(crate::common::local_bytes(t.data.path(), "quarantine", &state.upload_id).unwrap(), bytes(0, len));
}

/// Expiry on S3: an unfinished upload past UPLOAD_EXPIRY_SECS answers NOT_FOUND (gone),
/// and the sweep reclaims its bytes: its multipart upload is aborted and nothing is left
/// under `.uploads/`.
#[tokio::test(flavor = "multi_thread")]
async fn on_s3_an_expired_upload_loses_its_bytes() {
    use crate::common::s3::*;
    let env = S3Env::minio_from_test_env();
    let buckets = Buckets::unique("expiry");
    let flags = s3_flags(&env, &buckets, &["--upload-expiry-secs", "3"]);
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(data.path(), &as_strs(&flags));
    let mut g = grpc_client(&gw.base, data.path()).await;
    let len = 20 * MIB;
    let id = g.create_upload(with_identity(create(len, ""), "o1")).await.unwrap().into_inner().upload_id;
    // A part and a bit: a multipart upload with one part, and a tail object.
    let sent = 9 * MIB;
    let w = g.write(with_identity(futures_util::stream::iter(write_msgs(&id, 0, sent, 512 * 1024, false)), "o1")).await.unwrap().into_inner();
    assert_eq!(w.committed_size, sent);
    let c = env.client();
    assert_eq!(unfinished_uploads(&c, &buckets.quarantine).await, vec![id.clone()]);
    assert!(all_keys(&c, &buckets.quarantine).await.iter().any(|k| k.starts_with(&format!(".uploads/{id}/tail."))));
    eventually(Duration::from_secs(30), "the expired upload's bytes are reclaimed", || {
        let (c, q) = (c.clone(), buckets.quarantine.clone());
        async move { unfinished_uploads(&c, &q).await.is_empty() && keys_but_history(&c, &q).await.is_empty() }
    })
    .await;
    let gone = g.query_write_status(with_identity(QueryWriteStatusRequest { upload_id: id }, "o1")).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}
