//! Micro-benchmarks of the per-upload hot paths, to check none of them bounds P1/P2
//! (`scripts/bench` compares them with the end-to-end figures in bench/results.md):
//! content-type routing, the payload chunk path (limit + sha256, alone and behind the
//! multipart parser), and announce-message serialization.
//!
//! `cargo bench --bench hot_paths`

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use upload_gateway::messages::Announce;
use upload_gateway::metrics::Metrics;
use upload_gateway::pipeline::{content_type, Checks, Payload};

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("content_type_route");
    for (name, ct) in [
        ("vendor", "application/vnd.redhat.advisor.collection+tgz"),
        ("legacy", "application/gzip; charset=binary"),
        ("unsupported", "text/plain"),
    ] {
        g.bench_function(name, |b| b.iter(|| content_type::route(std::hint::black_box(ct))));
    }
    g.finish();
}

const TOTAL: usize = 16 << 20;

fn block(len: usize) -> Bytes {
    (0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into()
}

fn payload(chunks: Vec<Bytes>) -> Payload {
    checked(Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))))
}

/// A payload under the checks an upload gets (no limit in the way).
fn checked(body: upload_gateway::pipeline::BodyStream) -> Payload {
    Payload::new(
        body,
        Checks {
            service: "advisor".into(),
            limit: u64::MAX,
            expected_size: None,
            expected_sha256: None,
            idle: Duration::from_secs(30),
        },
        Arc::new(Metrics::default()),
    )
}

async fn drain(mut p: Payload) -> (u64, String) {
    while let Some(c) = p.next().await {
        std::hint::black_box(c.unwrap());
    }
    p.finish().unwrap()
}

fn chunk_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut g = c.benchmark_group("payload_16MiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(20);
    g.bench_function("sha256_only", |b| {
        let data = block(TOTAL);
        b.iter(|| Sha256::digest(std::hint::black_box(&data)))
    });
    for chunk in [16 << 10, 256 << 10] {
        let one = block(chunk);
        g.bench_function(format!("payload_stream_{}KiB_chunks", chunk >> 10), |b| {
            b.to_async(&rt).iter_batched(
                || payload(vec![one.clone(); TOTAL / chunk]),
                drain,
                BatchSize::SmallInput,
            )
        });
    }
    // The REST path: multer splits the multipart body, the file part feeds Payload.
    let boundary = "------------------------bench";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tgz\"\r\n\
         Content-Type: application/vnd.redhat.advisor.collection+tgz\r\n\r\n"
    );
    let frame = block(16 << 10);
    g.bench_function("multipart_then_payload_16KiB_frames", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let mut frames = vec![Bytes::from(head.clone())];
                frames.extend(std::iter::repeat_n(frame.clone(), TOTAL / frame.len()));
                frames.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
                frames
            },
            |frames| async move {
                let body = futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::io::Error>));
                let mut form = multer::Multipart::new(body, boundary);
                let field = form.next_field().await.unwrap().unwrap();
                let bytes = field.map(|r| r.map_err(|e| upload_gateway::Error::bad_request(e.to_string())));
                drain(checked(Box::pin(bytes))).await
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn serialization(c: &mut Criterion) {
    let identity = "eyJpZGVudGl0eSI6IHsiYWNjb3VudF9udW1iZXIiOiAiMDAwMDAwMSIsICJvcmdfaWQiOiAiMDAwMDAwMSIsICJ0eXBlIjogIlVzZXIiLCAiaW50ZXJuYWwiOiB7Im9yZ19pZCI6ICIwMDAwMDAxIn0sICJ1c2VyIjogeyJ1c2VybmFtZSI6ICJqZG9lIn19fQ==";
    let a = Announce {
        account: Some("0000001".into()),
        rh_account: Some("0000001".into()),
        org_id: Some("0000001".into()),
        principal: Some("0000001".into()),
        request_id: "0f9e3c2a5b7d4e6f8a1b2c3d4e5f6a7b".into(),
        payload_id: "0f9e3c2a5b7d4e6f8a1b2c3d4e5f6a7b".into(),
        size: 10240,
        service: "advisor".into(),
        category: "collection".into(),
        content_type: "application/vnd.redhat.advisor.collection+tgz".into(),
        b64_identity: identity.into(),
        metadata: None,
        url: "http://127.0.0.1:8080/download/quarantine/0f9e3c2a5b7d4e6f8a1b2c3d4e5f6a7b?expires=1767225600&signature=5d41402abc4b2a76b9719d911017c5925d41402abc4b2a76b9719d911017c592".into(),
        timestamp: "2026-01-01T00:00:00.000000Z".into(),
        sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9".into(),
    };
    c.bench_function("announce_to_json", |b| b.iter(|| serde_json::to_vec(std::hint::black_box(&a)).unwrap()));
}

criterion_group!(benches, routing, chunk_path, serialization);
criterion_main!(benches);
