//! Limits enforced while bytes arrive, and memory that does not grow with payload size.


use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// A client announcing and sending 100 MiB against a 1 MiB limit gets 413 once the
/// limit is passed, long before it has sent everything; nothing is stored. The client
/// writes each 64 KiB only once the gateway has read everything before it (its send
/// queue and the gateway's receive queue are empty), so what it has written when the
/// 413 comes is what the gateway took from the socket, within 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_is_refused_while_streaming() {
    use std::os::fd::AsRawFd;
    let t = spawn_app(&["--max-length", "1MiB"]).await;
    let boundary = "b0undary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\nContent-Type: application/vnd.redhat.advisor.big+tgz\r\n\r\n"
    );
    let total = 100 * MIB;
    let length = head.len() as u64 + total + format!("\r\n--{boundary}--\r\n").len() as u64;
    let stream = tokio::net::TcpStream::connect(t.app.addr()).await.unwrap();
    let (fd, client, server) = (stream.as_raw_fd(), stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let req = format!(
                "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}"
            );
            wr.write_all(req.as_bytes()).await?;
            sent.fetch_add(req.len() as u64, Ordering::SeqCst);
            let chunk = vec![b'z'; 64 * 1024];
            let mut body = 0;
            while body < total && tcp::wait_read(fd, client, server).await {
                // Counted before it is written: the count is never behind the socket.
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                wr.write_all(&chunk).await?;
                body += chunk.len() as u64;
            }
            Ok::<_, std::io::Error>(wr)
        })
    };
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("bytes") {
        let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
    }
    let sent_when_answered = sent.load(Ordering::SeqCst);
    writer.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("Should not exceed 1048576 bytes"), "{response}");
    // The gateway had taken little more than the limit from the socket when it answered
    // (the client had written no more than that), and read little more than the limit
    // into the upload by its own count.
    eprintln!("413 after the gateway had taken {sent_when_answered} bytes from the socket");
    assert!(sent_when_answered < READ_BOUND, "the gateway had taken {sent_when_answered} bytes (>= {READ_BOUND}) before it answered 413");
    let read = t.metric("upload_gateway_received_bytes_total").await as u64;
    assert!(read > MIB && read < MIB + 512 * 1024, "the gateway read {read} bytes");
    assert!(t.bucket_files("quarantine").is_empty());
}

/// The bound for the test above: the 1 MiB limit, plus the request head, the client's
/// last 64 KiB and what the HTTP layer reads ahead.
const READ_BOUND: u64 = MIB + 256 * 1024;

/// Bytes made on the fly, never held whole: `total` bytes in `chunk`-sized pieces.
fn generated(total: u64, chunk: usize) -> impl futures_util::Stream<Item = Vec<u8>> {
    let piece: Vec<u8> = (0..chunk).map(|i| (i % 253) as u8).collect();
    futures_util::stream::iter((0..total / chunk as u64).map(move |_| piece.clone()))
}

/// The README's figures for a 200 MiB upload: resident memory grows by about 1 MiB over
/// REST and 3 MiB over gRPC. The bounds: those figures with a margin for allocator
/// noise (measured here: see the README), far below what buffering the payload would take.
const REST_GROWTH_KIB: u64 = 4 * 1024;
const GRPC_GROWTH_KIB: u64 = 8 * 1024;

async fn idle_rss(gw: &GatewayProcess) -> u64 {
    // One small upload first, so buffers that stay allocated count as idle.
    Upload::new("application/vnd.redhat.advisor.w+tgz", vec![0u8; 100_000])
        .file_name("w")
        .accepted(&reqwest::Client::new(), &gw.base)
        .await;
    gw.rss_kib()
}

#[tokio::test]
async fn a_200_mib_rest_upload_keeps_memory_flat() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(data.path(), &["--max-length", "1GiB"]);
    let idle = idle_rss(&gw).await;
    let sampler = RssPeak::start(gw.pid());

    use futures_util::StreamExt;
    let total = 200 * MIB;
    let body = reqwest::Body::wrap_stream(generated(total, 64 * 1024).map(Ok::<_, std::io::Error>));
    let part = reqwest::multipart::Part::stream_with_length(body, total)
        .file_name("big.tgz")
        .mime_str("application/vnd.redhat.advisor.big+tgz")
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/ingress/v1/upload", gw.base))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let peak = sampler.peak();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    assert_eq!(std::fs::metadata(data.path().join("quarantine").join(id)).unwrap().len(), total);
    let grown = peak.saturating_sub(idle);
    eprintln!("REST 200 MiB: idle {idle} KiB, peak {peak} KiB, grown {grown} KiB");
    assert!(grown < REST_GROWTH_KIB, "resident memory grew by {grown} KiB (>= {REST_GROWTH_KIB}) during a 200 MiB upload");
}

#[tokio::test]
async fn a_200_mib_grpc_upload_keeps_memory_flat() {
    let data = tempfile::tempdir().unwrap();
    let gw = GatewayProcess::start(data.path(), &["--max-length", "1GiB"]);
    let idle = idle_rss(&gw).await;
    let sampler = RssPeak::start(gw.pid());

    use futures_util::StreamExt;
    let total = 200 * MIB;
    let head = UploadRequest {
        part: Some(Part::Header(UploadHeader {
            content_type: "application/vnd.redhat.advisor.big+tgz".into(),
            expected_size: total,
            ..Default::default()
        })),
    };
    let chunks = generated(total, 256 * 1024).map(|c| UploadRequest { part: Some(Part::Chunk(c.into())) });
    let msgs = futures_util::stream::iter([head]).chain(chunks);
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(gw.base.clone()).await.unwrap();
    let r = client.upload(msgs).await;
    let peak = sampler.peak();
    let r = r.unwrap().into_inner();
    assert_eq!(r.size, total);
    assert_eq!(std::fs::metadata(data.path().join("quarantine").join(&r.request_id)).unwrap().len(), total);
    let grown = peak.saturating_sub(idle);
    eprintln!("gRPC 200 MiB: idle {idle} KiB, peak {peak} KiB, grown {grown} KiB");
    assert!(grown < GRPC_GROWTH_KIB, "resident memory grew by {grown} KiB (>= {GRPC_GROWTH_KIB}) during a 200 MiB upload");
}

/// A service's own limit may be above MAX_LENGTH (`SERVICE_LIMITS=advisor=200MiB`
/// with the default 100 MiB): that service gets its own limit, the others the default,
/// over REST and gRPC alike.
#[tokio::test]
async fn a_service_limit_above_max_length_raises_that_services_limit_only() {
    let t = spawn_app(&["--max-length", "1000", "--service-limits", "qpc=5000"]).await;
    let info: serde_json::Value = t.http.get(t.url("/api/ingress/v1/upload")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["services"]["qpc"]["max_size"], 5000, "{info}");
    assert_eq!(info["services"]["advisor"]["max_size"], 1000, "{info}");

    let qpc = "application/vnd.redhat.qpc.limit+tgz";
    let advisor = "application/vnd.redhat.advisor.limit+tgz";
    assert_eq!(t.upload("file", qpc, vec![b'q'; 5000]).await.status(), 202);
    let over = t.upload("file", qpc, vec![b'q'; 5001]).await;
    assert_eq!(over.status(), 413);
    assert!(over.text().await.unwrap().contains("Should not exceed 5000 bytes"));
    assert_eq!(t.upload("file", advisor, vec![b'a'; 1000]).await.status(), 202);
    let over = t.upload("file", advisor, vec![b'a'; 1001]).await;
    assert_eq!(over.status(), 413);
    assert!(over.text().await.unwrap().contains("Should not exceed 1000 bytes"));

    let grpc = |ct: &'static str, len: usize| {
        let t = &t;
        async move {
            let head = UploadRequest {
                part: Some(Part::Header(UploadHeader { content_type: ct.into(), ..Default::default() })),
            };
            let chunk = UploadRequest { part: Some(Part::Chunk(vec![b'g'; len].into())) };
            t.grpc().await.upload(futures_util::stream::iter([head, chunk])).await
        }
    };
    assert_eq!(grpc(qpc, 5000).await.unwrap().into_inner().size, 5000);
    let e = grpc(qpc, 5001).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("Should not exceed 5000 bytes"), "{}", e.message());
    let e = grpc(advisor, 1001).await.unwrap_err();
    assert!(e.message().contains("Should not exceed 1000 bytes"), "{}", e.message());
    assert_eq!(t.bucket_files("quarantine").len(), 3);
}
