//! The gRPC `Upload` as internal services use it: a header message, then chunks.
// The deprecated UploadHeader fields are still accepted; these tests send them.
#![allow(deprecated)]


use crate::common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use crate::common::*;
use tonic::Code;

const ADVISOR: &str = "application/vnd.redhat.advisor.collection+tgz";

fn header(h: UploadHeader) -> UploadRequest {
    UploadRequest { part: Some(Part::Header(h)) }
}

fn chunk(bytes: &[u8]) -> UploadRequest {
    UploadRequest { part: Some(Part::Chunk(bytes.to_vec().into())) }
}

fn advisor() -> UploadHeader {
    UploadHeader { content_type: ADVISOR.into(), ..Default::default() }
}

async fn send(t: &TestApp, msgs: Vec<UploadRequest>) -> Result<crate::common::pb::UploadReceipt, tonic::Status> {
    let mut client = t.grpc().await;
    client.upload(futures_util::stream::iter(msgs)).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_streamed_upload_is_stored_and_announced() {
    let t = spawn_app(&[]).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut msgs = vec![header(UploadHeader {
        metadata_json: r#"{"source":"grpc-test"}"#.into(),
        identity: identity("acct", "org1"),
        request_id: "grpc-upload-1".into(),
        expected_size: data.len() as u64,
        expected_sha256: sha256_hex(&data),
        ..advisor()
    })];
    msgs.extend(data.chunks(64 * 1024).map(chunk));
    let r = send(&t, msgs).await.unwrap();
    assert_eq!(r.request_id, "grpc-upload-1");
    assert_eq!((r.account_number.as_str(), r.org_id.as_str()), ("acct", "org1"));
    assert_eq!((r.service.as_str(), r.category.as_str()), ("advisor", "collection"));
    assert_eq!(r.size, data.len() as u64);
    assert_eq!(r.sha256, sha256_hex(&data));
    assert_eq!(crate::common::local_bytes(t.data.path(), "quarantine", "grpc-upload-1").unwrap(), data);
    let a: serde_json::Value =
        serde_json::from_slice(&t.next_message("platform.upload.advisor", "t").await.payload).unwrap();
    assert_eq!(a["request_id"], "grpc-upload-1");
    assert_eq!(a["metadata"]["source"], "grpc-test");
    assert_eq!(a["sha256"], sha256_hex(&data));
}

#[tokio::test]
async fn identity_and_request_id_may_come_as_request_metadata() {
    let t = spawn_app(&[]).await;
    let mut req = tonic::Request::new(futures_util::stream::iter(vec![header(advisor()), chunk(b"abc")]));
    req.metadata_mut().insert("x-rh-identity", identity("a9", "o9").parse().unwrap());
    req.metadata_mut().insert("x-rh-insights-request-id", "from-metadata".parse().unwrap());
    let r = t.grpc().await.upload(req).await.unwrap();
    assert_eq!(r.metadata().get("x-rh-insights-request-id").unwrap(), "from-metadata");
    let r = r.into_inner();
    assert_eq!((r.request_id.as_str(), r.org_id.as_str()), ("from-metadata", "o9"));
}

/// The contract's refusals, as gRPC codes; none leaves anything behind.
#[tokio::test]
async fn every_refusal_has_its_code_and_leaves_nothing() {
    let t = spawn_app(&["--service-limits", "qpc=10"]).await;
    let qpc = || UploadHeader { content_type: "application/vnd.redhat.qpc.thing+tgz".into(), ..Default::default() };
    let cases: Vec<(&str, Vec<UploadRequest>, Code, &str)> = vec![
        ("no message at all", vec![], Code::InvalidArgument, "header"),
        ("a chunk before the header", vec![chunk(b"x"), header(advisor())], Code::InvalidArgument, "header"),
        ("a second header", vec![header(advisor()), chunk(b"x"), header(advisor())], Code::InvalidArgument, "chunk"),
        (
            "content type matches no rule",
            vec![header(UploadHeader { content_type: "text/plain".into(), ..Default::default() })],
            Code::InvalidArgument,
            "Unsupported Media Type",
        ),
        (
            "service not valid",
            vec![header(UploadHeader { content_type: "application/vnd.redhat.nosuch.x".into(), ..Default::default() })],
            Code::InvalidArgument,
            "Unsupported MIME type",
        ),
        ("too large while streaming", vec![header(qpc()), chunk(b"123456"), chunk(b"789012")], Code::ResourceExhausted, "Should not exceed 10 bytes"),
        ("too large by declaration", vec![header(UploadHeader { expected_size: 11, ..qpc() })], Code::ResourceExhausted, "Should not exceed 10 bytes"),
        ("bad identity", vec![header(UploadHeader { identity: "%%".into(), ..advisor() })], Code::InvalidArgument, "x-rh-identity"),
        ("bad request id", vec![header(UploadHeader { request_id: "../x".into(), ..advisor() })], Code::InvalidArgument, "request id"),
        (
            "shorter than declared",
            vec![header(UploadHeader { expected_size: 10, ..advisor() }), chunk(b"12345")],
            Code::InvalidArgument,
            "declared 10",
        ),
        (
            "sha256 differs from the declared one",
            vec![header(UploadHeader { expected_sha256: "0".repeat(64), ..advisor() }), chunk(b"12345")],
            Code::InvalidArgument,
            "sha256",
        ),
        (
            "declared sha256 is not hex",
            vec![header(UploadHeader { expected_sha256: "xyz".into(), ..advisor() }), chunk(b"1")],
            Code::InvalidArgument,
            "sha256",
        ),
        (
            "metadata not a JSON object",
            vec![header(UploadHeader { metadata_json: "[1]".into(), ..advisor() }), chunk(b"1")],
            Code::InvalidArgument,
            "metadata",
        ),
    ];
    for (what, msgs, code, text) in cases {
        let e = send(&t, msgs).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(e.message().contains(text), "{what}: {:?} should contain {text:?}", e.message());
    }
    // A dropped stage is removed in the background: wait for the folders to empty.
    let empty = || t.bucket_files("quarantine").is_empty() && std::fs::read_dir(t.data.path().join(".tmp")).unwrap().next().is_none();
    eventually(std::time::Duration::from_secs(5), "left behind in quarantine or .tmp", || async { empty() }).await;
}

#[tokio::test]
async fn identity_can_be_required_over_grpc_too() {
    let t = spawn_app(&["--require-identity"]).await;
    let e = send(&t, vec![header(advisor()), chunk(b"x")]).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

/// One gRPC-Web call (HTTP/1.1, the way browsers and tonic-web clients make them):
/// the grpc-status and the data frames of the answer.
async fn grpc_web_call(t: &TestApp, path: &str, msg: Vec<u8>) -> (String, Vec<Vec<u8>>) {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    let resp = t
        .http
        .post(t.url(path))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(framed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let in_headers = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().await.unwrap();
    // Frames: a flag byte (0x80: trailers), a 4-byte length, the bytes.
    let (mut frames, mut trailers, mut rest) = (Vec::new(), String::new(), &body[..]);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let bytes = rest[5..5 + len].to_vec();
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8_lossy(&bytes).to_string();
        } else {
            frames.push(bytes);
        }
        rest = &rest[5 + len..];
    }
    let status = in_headers.unwrap_or_else(|| {
        trailers.split("grpc-status:").nth(1).unwrap_or("").trim().chars().take_while(|c| c.is_ascii_digit()).collect()
    });
    (status, frames)
}

/// gRPC-Web (browsers, tonic-web) reaches the same services on the same port: a
/// payload's status, and a NotFound for an unknown id.
#[tokio::test]
async fn grpc_web_is_served_on_the_same_port() {
    let t = spawn_app(&[]).await;
    let msg = |id: &str| prost::Message::encode_to_vec(&crate::common::pb::StatusRequest { request_id: id.into() });
    let (status, _) = grpc_web_call(&t, "/upload.v1.UploadGateway/GetStatus", msg("nosuchid")).await;
    assert_eq!(status, "5", "NotFound expected");

    let id = accepted_id(t.upload("file", ADVISOR, b"seen over grpc-web".to_vec()).await).await;
    let (status, frames) = grpc_web_call(&t, "/upload.v1.UploadGateway/GetStatus", msg(&id)).await;
    assert_eq!(status, "0", "OK expected");
    assert_eq!(frames.len(), 1, "one StatusHistory message");
    let history: pb::StatusHistory = prost::Message::decode(&frames[0][..]).unwrap();
    assert_eq!(history.request_id, id);
    let statuses: Vec<&str> = history.events.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(statuses, ["received", "announced"]);
    assert_eq!(history.events[0].service, "ingress", "the status events come from the ingress service");
}
