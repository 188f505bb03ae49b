//! Limits enforced while bytes arrive, and memory that does not grow with payload size.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// A client announcing and sending 100 MiB against a 1 MiB limit gets 413 once the
/// limit is passed, long before it has sent everything; nothing is stored.
#[tokio::test]
async fn too_large_is_refused_while_streaming() {
    let t = spawn_app(&["--max-length", "1MiB"]).await;
    let boundary = "b0undary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big\"\r\nContent-Type: application/vnd.redhat.advisor.big+tgz\r\n\r\n"
    );
    let total = 100 * MIB;
    let length = head.len() as u64 + total + format!("\r\n--{boundary}--\r\n").len() as u64;
    let stream = tokio::net::TcpStream::connect(t.app.addr()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let req = format!(
                "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n{head}"
            );
            wr.write_all(req.as_bytes()).await?;
            let chunk = vec![b'z'; 64 * 1024];
            while sent.load(Ordering::Relaxed) < total {
                wr.write_all(&chunk).await?;
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
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
    let sent_when_answered = sent.load(Ordering::Relaxed);
    writer.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("Should not exceed 1048576 bytes"), "{response}");
    // The client had sent only a fraction when the answer came (the rest of what it
    // sent sits in socket buffers), and the gateway read little more than the limit.
    assert!(sent_when_answered < total / 4, "client had sent {sent_when_answered} bytes");
    let read = t.metric("upload_gateway_received_bytes_total").await as u64;
    assert!(read > MIB && read < MIB + 512 * 1024, "the gateway read {read} bytes");
    assert!(t.bucket_files("quarantine").is_empty());
}

/// Bytes made on the fly, never held whole: `total` bytes in `chunk`-sized pieces.
fn generated(total: u64, chunk: usize) -> impl futures_util::Stream<Item = Vec<u8>> {
    let piece: Vec<u8> = (0..chunk).map(|i| (i % 253) as u8).collect();
    futures_util::stream::iter((0..total / chunk as u64).map(move |_| piece.clone()))
}

async fn idle_rss(gw: &GatewayProcess) -> u64 {
    // One small upload first, so buffers that stay allocated count as idle.
    let c = reqwest::Client::new();
    let part = reqwest::multipart::Part::bytes(vec![0u8; 100_000]).file_name("w").mime_str("application/vnd.redhat.advisor.w+tgz").unwrap();
    let r = c.post(format!("{}/api/ingress/v1/upload", gw.base)).multipart(reqwest::multipart::Form::new().part("file", part)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB during a 200 MiB upload");
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
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB during a 200 MiB upload");
}
