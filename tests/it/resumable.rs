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

/// The byte at `i` of the test payloads: different in every position of a part.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn bytes(from: u64, to: u64) -> Vec<u8> {
    (from..to).map(byte_at).collect()
}

fn sha_of(len: u64) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut at = 0;
    while at < len {
        let end = (at + 4 * MIB).min(len);
        h.update(bytes(at, end));
        at = end;
    }
    hex::encode(h.finalize())
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
    assert_eq!(std::fs::read(t.data.path().join("quarantine").join(&id)).unwrap(), bytes(0, len));
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
    let mut peak_rss = 0;
    let mut at = 0;
    while at < half {
        let end = (at + MIB).min(half);
        let m = WriteRequest { upload_id: if at == 0 { id.clone() } else { String::new() }, write_offset: 0, data: bytes(at, end).into(), finish_write: false };
        tx.send(m).await.unwrap();
        at = end;
        if at % (64 * MIB) == 0 {
            peak_rss = peak_rss.max(first.rss_kib());
        }
    }
    let base = first.base.clone();
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the gateway read every byte sent", || {
        let (http, base) = (http.clone(), base.clone());
        async move { received(&http, &base).await >= half }
    })
    .await;
    let addr = first.addr.to_string();
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
        if at % (64 * MIB) == 0 {
            peak_rss = peak_rss.max(second.rss_kib());
        }
    }
    drop(tx);
    let done = call.await.unwrap().unwrap_or_else(|e| panic!("the resumed write failed: {e:?}")).into_inner();
    let receipt = done.receipt.unwrap();
    assert_eq!((receipt.size, receipt.sha256), (len, sha_of(len)));
    let stored = std::fs::metadata(data.path().join("quarantine").join(&id)).unwrap().len();
    assert_eq!(stored, len);
    assert!(peak_rss < 64 * 1024, "peak RSS {peak_rss} KiB while taking a 1 GiB upload");
    eprintln!("resumed at {committed} after {half} read: {} bytes sent again; peak RSS {peak_rss} KiB", half - committed);
}

async fn received(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with("upload_gateway_received_bytes_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}
