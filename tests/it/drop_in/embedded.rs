//! On the embedded default: a payload file without the gateway's meta is read, decided
//! and tracked (item 2); re-announcements at start-up carry the metadata (item 3);
//! gRPC verdicts carry every validation field into the messages (item 3); a malformed
//! id is an unknown one for `track` and GetStatus (item 4).

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tonic::Code;

use crate::common::*;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";

async fn verdict(t: &TestApp, v: pb::Verdict) -> pb::VerdictAck {
    let mut acks = t.grpc().await.validation_result(futures_util::stream::iter([v])).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(10), acks.next()).await.expect("an ack").unwrap().unwrap()
}

fn outcome(ack: &pb::VerdictAck) -> pb::verdict_ack::Outcome {
    pb::verdict_ack::Outcome::try_from(ack.outcome).unwrap()
}

async fn json_message(t: &TestApp, topic: &str, group: &str) -> Value {
    serde_json::from_slice(&t.next_message(topic, group).await.payload).unwrap()
}

/// `track` as a caller without identity (it sees payloads stored without one).
async fn track(t: &TestApp, id: &str) -> (u16, Value) {
    track_as(t, id, None).await
}

/// `track` as the org that owns the payload (status is tenant-scoped), with no
/// validator credential (`t.http` carries the operator's).
async fn track_as(t: &TestApp, id: &str, identity: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(t.url(&format!("/api/ingress/v1/track/{id}")));
    if let Some(i) = identity {
        req = req.header("x-rh-identity", i);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn statuses(v: &Value) -> Vec<&str> {
    v["history"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_payload_file_without_meta_is_read_decided_and_tracked() {
    let t = spawn_app(&[]).await;
    // Put in place by other means: no `.meta` beside it.
    let (kept, refused) = ("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "legacy-refused-1");
    let body = b"a payload written by an older service".to_vec();
    for id in [kept, refused] {
        std::fs::write(t.data.path().join("quarantine").join(id), &body).unwrap();
    }

    // `track` finds it, and gRPC Download reads it.
    let (status, v) = track(&t, kept).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(statuses(&v), ["received"]);
    let mut chunks = t.grpc().await.download(pb::DownloadRequest { request_id: kept.into() }).await.unwrap().into_inner();
    let first = chunks.message().await.unwrap().unwrap();
    assert_eq!((first.size, first.bucket.as_str()), (body.len() as u64, "quarantine"));
    let mut got = Vec::new();
    while let Some(c) = chunks.message().await.unwrap() {
        got.extend_from_slice(&c.data);
    }
    assert_eq!(got, body);

    // A success verdict fills in what the file does not say from the echoed fields.
    let ack = verdict(
        &t,
        pb::Verdict {
            request_id: kept.into(),
            validation: "success".into(),
            id: "inventory-host-7".into(),
            satellite_managed: Some(false),
            service: "advisor".into(),
            category: "collection".into(),
            account: "acct-old".into(),
            org_id: "org-old".into(),
            b64_identity: identity("acct-old", "org-old"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(outcome(&ack), pb::verdict_ack::Outcome::Promoted, "{}", ack.message);
    assert_eq!(t.bucket_files("perm"), [kept]);
    let a = json_message(&t, "platform.upload.available", "t").await;
    assert_eq!(a["request_id"], kept);
    assert_eq!(a["id"], "inventory-host-7");
    assert_eq!(a["satellite_managed"], false);
    assert_eq!((a["service"].as_str(), a["category"].as_str()), (Some("advisor"), Some("collection")));
    assert_eq!((a["account"].as_str(), a["org_id"].as_str()), (Some("acct-old"), Some("org-old")));
    assert_eq!(a["principal"], "org-old");
    assert_eq!(a["b64_identity"], identity("acct-old", "org-old"));
    assert_eq!(a["size"], body.len() as u64);
    assert_eq!(a["sha256"], "", "the gateway did not see these bytes arrive");
    let fetched = reqwest::get(a["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().to_vec(), body);
    // Its history now names the org the verdict gave it: that org reads it.
    let owner = identity("acct-old", "org-old");
    assert_eq!(statuses(&track_as(&t, kept, Some(&owner)).await.1), ["success", "advertised"]);
    assert_eq!(track(&t, kept).await.0, 404, "another caller does not see it");

    // A failure moves the other one to reject, with nothing echoed: service unknown.
    let ack = verdict(&t, pb::Verdict { request_id: refused.into(), validation: "FAILURE".into(), ..Default::default() }).await;
    assert_eq!(outcome(&ack), pb::verdict_ack::Outcome::Rejected, "{}", ack.message);
    assert_eq!(t.bucket_files("reject"), [refused]);
    assert!(t.bucket_files("quarantine").is_empty());
    let (status, v) = track(&t, refused).await;
    assert_eq!((status, statuses(&v)), (200, vec!["rejected"]));
}

#[tokio::test]
async fn start_up_re_announcements_carry_the_metadata() {
    let t = spawn_app(&[]).await;
    // REST, the real client's order: the metadata part after the file.
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"rest".to_vec()).file_name("a.tgz").mime_str(TESTARENO).unwrap())
        .part("metadata", reqwest::multipart::Part::text(r#"{"display_name":"rest-host"}"#).file_name("metadata"));
    let resp = t.http.post(t.url("/api/ingress/v1/upload")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let rest_id = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    // gRPC: the metadata in the header, before the bytes.
    let header = pb::UploadHeader {
        content_type: TESTARENO.into(),
        metadata_json: r#"{"display_name":"grpc-host"}"#.into(),
        ..Default::default()
    };
    let msgs = [
        pb::UploadRequest { part: Some(pb::upload_request::Part::Header(header)) },
        pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(b"grpc".to_vec().into())) },
    ];
    let grpc_id = t.grpc().await.upload(futures_util::stream::iter(msgs)).await.unwrap().into_inner().request_id;
    // A file without meta is not announced again: its service is unknown.
    std::fs::write(t.data.path().join("quarantine").join("legacy-unannounced"), b"x").unwrap();

    let TestApp { app, data, .. } = t;
    app.stop().await.unwrap();
    let t = spawn_app_in(data, &[]).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2 {
        let a = json_message(&t, "platform.upload.testareno", "after-restart").await;
        seen.insert(a["request_id"].as_str().unwrap().to_string(), a["metadata"]["display_name"].clone());
    }
    assert_eq!(seen[&rest_id], "rest-host", "{seen:?}");
    assert_eq!(seen[&grpc_id], "grpc-host", "{seen:?}");
}

#[tokio::test]
async fn grpc_verdicts_carry_every_validation_field_into_the_messages() {
    let t = spawn_app(&[]).await;
    let part = reqwest::multipart::Part::bytes(b"abc".to_vec()).file_name("a.tgz").mime_str(TESTARENO).unwrap();
    let resp = t
        .http
        .post(t.url("/api/ingress/v1/upload"))
        .header("x-rh-identity", identity("acct-1", "org-1"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    let ack = verdict(
        &t,
        pb::Verdict {
            request_id: id.clone(),
            validation: "Success".into(),
            reason: "looks fine".into(),
            id: "host-42".into(),
            satellite_managed: Some(true),
            // Echoed fields never override the gateway's own record.
            service: "advisor".into(),
            account: "someone-else".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(outcome(&ack), pb::verdict_ack::Outcome::Promoted);
    let a = json_message(&t, "platform.upload.available", "t").await;
    assert_eq!(a["id"], "host-42");
    assert_eq!(a["satellite_managed"], true);
    assert_eq!((a["service"].as_str(), a["account"].as_str()), (Some("testareno"), Some("acct-1")));
    let (_, v) = track_as(&t, &id, Some(&identity("acct-1", "org-1"))).await;
    let success = v["history"].as_array().unwrap().iter().find(|e| e["status"] == "success").cloned().unwrap();
    assert_eq!(success["status_msg"], "looks fine");

    // Without them: `id` is the request id and satellite_managed is null.
    let part = reqwest::multipart::Part::bytes(b"def".to_vec()).file_name("a.tgz").mime_str(TESTARENO).unwrap();
    let resp = t.http.post(t.url("/api/ingress/v1/upload")).multipart(reqwest::multipart::Form::new().part("file", part)).send().await.unwrap();
    let id = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    let ack = verdict(&t, pb::Verdict { request_id: id.clone(), validation: "success".into(), ..Default::default() }).await;
    assert_eq!(outcome(&ack), pb::verdict_ack::Outcome::Promoted);
    let a = json_message(&t, "platform.upload.available", "t").await;
    assert_eq!((a["id"].as_str(), a["satellite_managed"].is_null()), (Some(id.as_str()), true));
}

#[tokio::test]
async fn a_malformed_id_is_an_unknown_one() {
    let t = spawn_app(&[]).await;
    let mut client = t.grpc().await;
    // (as in a URL path, as sent over gRPC): ids that are not request ids, and one
    // well-formed id nobody used. Each is just unknown.
    let long = "a".repeat(65);
    let ids = [
        ("bad%20id", "bad id"),
        ("-starts-with-a-dash", "-starts-with-a-dash"),
        (".hidden", ".hidden"),
        ("%C3%A9t%C3%A9", "\u{e9}t\u{e9}"),
        ("..%2F..%2F.signing-key", "../../.signing-key"),
        (long.as_str(), long.as_str()),
        ("never-used-1", "never-used-1"),
    ];
    for (in_url, id) in ids {
        let resp = t.http.get(t.url(&format!("/api/ingress/v1/track/{in_url}"))).send().await.unwrap();
        assert_eq!(resp.status(), 404, "track {in_url}");
        let err = client.get_status(pb::StatusRequest { request_id: id.to_string() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "GetStatus {id:?}: {err}");
    }
    // Not UTF-8 once decoded: unknown too.
    let resp = t.http.get(t.url("/api/ingress/v1/track/%FF%FE")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    for id in ["", "a/b", "../x", "a\u{0}b"] {
        let err = client.get_status(pb::StatusRequest { request_id: id.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "GetStatus {id:?}: {err}");
    }
}
