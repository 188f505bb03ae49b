//! Graceful drain (issue #7, item 1), on the gateway binary as its own process:
//! SIGTERM with 20 slow uploads in flight lets all of them finish with 202, refuses
//! new connections at once, and exits 0 well within the drain timeout; what was
//! accepted is stored, and announced again when the gateway restarts on the same
//! data. A second signal exits at once.
// The deprecated UploadHeader fields are still accepted; these tests send them.
#![allow(deprecated)]


use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADVISOR: &str = "application/vnd.redhat.advisor.drain+tgz";
const B: &str = "drain-b0undary";
/// Each slow upload sends this many pieces, one every `GAP`: about 3 s in all.
pub(crate) const PIECES: usize = 30;
pub(crate) const PIECE: usize = 1000;
const GAP: Duration = Duration::from_millis(100);
const DRAIN_TIMEOUT_SECS: u64 = 20;

pub(crate) fn payload(id: &str) -> Vec<u8> {
    id.bytes().cycle().take(PIECES * PIECE).collect()
}

/// A REST upload whose file part arrives a piece at a time; returns the status line
/// and body of the answer.
pub(crate) async fn slow_rest_upload(addr: SocketAddr, id: String, started: Arc<AtomicUsize>) -> Result<String, String> {
    let data = payload(&id);
    let head = format!(
        "--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tgz\"\r\nContent-Type: {ADVISOR}\r\n\r\n"
    );
    let tail = format!("\r\n--{B}--\r\n");
    let len = head.len() + data.len() + tail.len();
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!(
        "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\nx-rh-insights-request-id: {id}\r\nExpect: 100-continue\r\n\
         Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {len}\r\n\r\n{head}"
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    // The gateway says "100 Continue" when it starts reading the body: from then on
    // the upload is in flight.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => interim.push(byte[0]),
            other => return Err(format!("{id}: no 100 Continue: {other:?} after {:?}", String::from_utf8_lossy(&interim))),
        }
    }
    if !interim.starts_with(b"HTTP/1.1 100") {
        return Err(format!("{id}: expected 100 Continue, got {}", String::from_utf8_lossy(&interim)));
    }
    started.fetch_add(1, Ordering::SeqCst);
    for piece in data.chunks(PIECE) {
        tokio::time::sleep(GAP).await;
        s.write_all(piece).await.map_err(|e| format!("{id}: writing: {e}"))?;
    }
    s.write_all(tail.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => resp.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(format!("{id}: reading: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&resp).to_string())
}

/// A gRPC upload whose chunks arrive a piece at a time.
pub(crate) async fn slow_grpc_upload(base: String, id: String, started: Arc<AtomicUsize>) -> Result<String, String> {
    let data = payload(&id);
    let header = UploadRequest {
        part: Some(Part::Header(UploadHeader {
            content_type: ADVISOR.into(),
            request_id: id.clone(),
            expected_size: data.len() as u64,
            ..Default::default()
        })),
    };
    let chunks = futures_util::stream::unfold(0, move |i| {
        let (data, started) = (data.clone(), started.clone());
        async move {
            if i == 2 {
                // The call is open and its header and first chunks have gone out.
                started.fetch_add(1, Ordering::SeqCst);
            }
            if i == PIECES {
                return None;
            }
            tokio::time::sleep(GAP).await;
            let piece = data[i * PIECE..(i + 1) * PIECE].to_vec();
            Some((UploadRequest { part: Some(Part::Chunk(piece.into())) }, i + 1))
        }
    });
    use futures_util::StreamExt;
    let msgs = futures_util::stream::iter([header]).chain(chunks);
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base)
        .await
        .map_err(|e| e.to_string())?;
    client
        .upload(msgs)
        .await
        .map(|r| r.into_inner().request_id)
        .map_err(|s| format!("{id}: {:?} {}", s.code(), s.message()))
}

/// Waits until connecting to `addr` is refused (within 5 s).
pub(crate) async fn refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {
                assert!(Instant::now() < deadline, "still accepting connections 5 s after SIGTERM");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits for the process to exit; returns its code and when it exited.
pub(crate) fn wait_exit(gw: &mut GatewayProcess, within: Duration) -> (Option<i32>, Instant) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            return (status.code(), Instant::now());
        }
        assert!(Instant::now() < deadline, "the gateway did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_20_slow_uploads_refuses_new_connections_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let drain = DRAIN_TIMEOUT_SECS.to_string();
    let mut gw = GatewayProcess::start(data.path(), &["--drain-timeout-secs", &drain]);
    let addr = gw.addr;

    let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut uploads = Vec::new();
    for i in 0..20 {
        let (started, finished) = (started.clone(), finished.clone());
        let (base, id) = (gw.base.clone(), format!("drain-{i:02}"));
        uploads.push(tokio::spawn(async move {
            let r = if i % 4 == 3 {
                slow_grpc_upload(base, id.clone(), started).await.map(|got| format!("grpc-accepted {got}"))
            } else {
                slow_rest_upload(addr, id.clone(), started).await
            };
            finished.fetch_add(1, Ordering::SeqCst);
            (id, r)
        }));
    }
    // Every upload is sending its body when the signal comes: the clients have
    // started, and the gateway is taking each one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the 20 uploads did not all start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    being_written(&gw.base, 20).await;
    gw.signal("TERM");
    let signalled = Instant::now();

    // New connections are refused at once, while the uploads are still in flight.
    refused(addr).await;
    let refused_after = signalled.elapsed();
    assert!(refused_after < Duration::from_secs(1), "still accepting connections {refused_after:?} after SIGTERM");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "an upload finished before new connections were refused");

    let mut accepted = BTreeSet::new();
    for u in uploads {
        let (id, r) = u.await.unwrap();
        let answer = r.unwrap_or_else(|e| panic!("upload {id} failed during the drain: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 202") || answer == format!("grpc-accepted {id}"),
            "upload {id} got: {answer}"
        );
        assert!(answer.starts_with("grpc") || answer.contains(&format!("\"request_id\":\"{id}\"")), "{answer}");
        accepted.insert(id);
    }
    let (code, exited) = wait_exit(&mut gw, Duration::from_secs(DRAIN_TIMEOUT_SECS + 5));
    let took = exited - signalled;
    eprintln!("new connections refused {refused_after:?} after SIGTERM; exit {code:?} {took:?} after it");
    assert_eq!(code, Some(0), "exit code after a graceful drain");
    assert!(took < Duration::from_secs(DRAIN_TIMEOUT_SECS), "the drain took {took:?}");

    // All 20 are stored whole ...
    assert_eq!(accepted.len(), 20);
    for id in &accepted {
        let stored = crate::common::local_bytes(data.path(), "quarantine", id).unwrap();
        assert_eq!(stored, payload(id), "{id} stored whole");
    }
    assert!(list_bucket(data.path(), ".tmp").is_empty());

    // ... and announced again by a gateway restarted on the same data (the embedded
    // queue does not outlive the process; what quarantine holds is announced anew).
    let t = spawn_app_in(data, &[]).await;
    let mut announced = BTreeSet::new();
    for _ in 0..20 {
        let m = t.next_message("platform.upload.advisor", "drain-test").await;
        let a: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(a["size"], (PIECES * PIECE) as u64);
        announced.insert(a["request_id"].as_str().unwrap().to_string());
    }
    assert_eq!(announced, accepted);
}

/// Waits until the gateway is taking `n` uploads: its in-flight gauge says so (a
/// small payload gets no file until its stream ends, so the folders cannot tell).
async fn being_written(base: &str, n: usize) {
    let what = format!("the gateway should be taking {n} uploads");
    eventually(Duration::from_secs(10), &what, || async {
        metric_at(base, "upload_gateway_uploads_in_flight").await >= n as f64
    })
    .await;
}

/// Opens an upload that sends its head and a few bytes, then stalls; returns once the
/// gateway is writing it.
async fn stalled_upload(gw: &GatewayProcess) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\nContent-Type: multipart/form-data; boundary={B}\r\n\
         Content-Length: 100000\r\n\r\n--{B}\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: {ADVISOR}\r\n\r\nsome"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    being_written(&gw.base, 1).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_bounds_the_wait_for_a_stalled_upload() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::start(data.path(), &["--drain-timeout-secs", "2", "--body-idle-timeout-secs", "60"]);
    let _stalled = stalled_upload(&gw).await;
    gw.signal("TERM");
    let signalled = Instant::now();
    let (code, exited) = wait_exit(&mut gw, Duration::from_secs(10));
    let took = exited - signalled;
    eprintln!("exit {code:?} {took:?} after SIGTERM with a stalled upload and a 2 s drain timeout");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "took {took:?}");
    assert!(list_bucket(data.path(), "quarantine").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::start(data.path(), &["--drain-timeout-secs", "60", "--body-idle-timeout-secs", "60"]);
    // An upload that stalls: the drain alone would wait a minute for it.
    let _stalled = stalled_upload(&gw).await;
    gw.signal("TERM");
    // The first signal was handled once new connections are refused; the gateway
    // drains then, and does not exit while the upload is in flight.
    refused(gw.addr).await;
    assert!(gw.child.try_wait().unwrap().is_none(), "the first signal drains; it does not exit while an upload is in flight");
    let second = Instant::now();
    gw.signal("TERM");
    let (code, exited) = wait_exit(&mut gw, Duration::from_secs(5));
    eprintln!("exit {code:?} {:?} after the second signal", exited - second);
    assert!(exited - second < Duration::from_secs(2));
    assert_ne!(code, Some(0), "a forced exit does not claim a clean drain");
    // The stalled upload was not accepted, and nothing half-written is visible.
    assert!(list_bucket(data.path(), "quarantine").is_empty());
}

/// The same drain on Kafka and S3: every upload in flight at SIGTERM is stored in the
/// S3 quarantine (with its sidecar) and announced on the broker, once, before the
/// gateway exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_uploads_on_kafka_and_s3() {
    use crate::common::s3::*;
    use crate::kafka::support::{as_strs, records_for, Names, BROKER};
    let _broker = BROKER.read().await;
    let n = Names::new("drain");
    let env = S3Env::from_test_env();
    let b = Buckets::unique("drain");
    let mut flags = s3_flags(&env, &b, &["--drain-timeout-secs", &DRAIN_TIMEOUT_SECS.to_string()]);
    flags.extend(n.flags());
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let mut gw = tokio::task::spawn_blocking(move || GatewayProcess::start(&path, &as_strs(&flags))).await.unwrap();
    let addr = gw.addr;

    let started = Arc::new(AtomicUsize::new(0));
    let mut uploads = Vec::new();
    for i in 0..6 {
        let (started, base, id) = (started.clone(), gw.base.clone(), format!("drain-cloud-{i}"));
        uploads.push(tokio::spawn(async move {
            let r = if i % 3 == 2 {
                slow_grpc_upload(base, id.clone(), started).await.map(|got| format!("grpc-accepted {got}"))
            } else {
                slow_rest_upload(addr, id.clone(), started).await
            };
            (id, r)
        }));
    }
    eventually(Duration::from_secs(10), "the 6 uploads should all be in flight", || async {
        started.load(Ordering::SeqCst) == 6
    })
    .await;
    gw.signal("TERM");
    let signalled = Instant::now();
    refused(addr).await;

    let mut accepted = Vec::new();
    for u in uploads {
        let (id, r) = u.await.unwrap();
        let answer = r.unwrap_or_else(|e| panic!("upload {id} failed during the drain: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 202") || answer == format!("grpc-accepted {id}"),
            "upload {id} got: {answer}"
        );
        accepted.push(id);
    }
    let (code, exited) = wait_exit(&mut gw, Duration::from_secs(DRAIN_TIMEOUT_SECS + 5));
    assert_eq!(code, Some(0), "exit code after a graceful drain");
    assert!(exited - signalled < Duration::from_secs(DRAIN_TIMEOUT_SECS));

    let c = env.client();
    for id in &accepted {
        let meta = stored_meta(&c, &b.quarantine, id).await.unwrap_or_else(|| panic!("{id}: no sidecar in quarantine"));
        assert_eq!(meta["size"], (PIECES * PIECE) as u64, "{id}");
        assert_eq!(meta["sha256"], sha256_hex(&payload(id)), "{id}");
        assert_eq!(records_for(&n.announce("advisor"), id).await.len(), 1, "{id} announced once");
    }
    n.cleanup().await;
}
