//! Validators, verdicts, downloads and status (issue #3; contract §3-§5): the whole
//! flow on the embedded default, client → gateway → validator → verdict → perm or
//! reject → `platform.upload.available`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use pb::verdict_ack::Outcome;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";
const SECS: Duration = Duration::from_secs(10);

/// Uploads a testareno payload with an identity; returns its request id.
async fn upload(t: &TestApp, bytes: Vec<u8>) -> String {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name("test-archive.tar.gz")
        .mime_str(TESTARENO)
        .unwrap();
    let resp = t
        .http
        .post(t.url("/api/ingress/v1/upload"))
        .header("x-rh-identity", identity("acct-1", "org-1"))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let json: Value = resp.json().await.unwrap();
    json["request_id"].as_str().unwrap().to_string()
}

/// Runs the real binary's built-in validator against the gateway; its output lines.
async fn validate(base: &str, args: &[&str]) -> Vec<String> {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args(["validate", "--gateway", base, "--service", "testareno"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the validator finishes within 60 s")
        .unwrap();
    assert!(out.status.success(), "validate exited with {}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn line_for<'a>(lines: &'a [String], id: &str) -> &'a str {
    let key = format!("request_id={id} ");
    lines
        .iter()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no output line for {id} in {lines:#?}"))
}

/// `GET {p}/v1/track/{id}` as JSON.
async fn track(t: &TestApp, id: &str) -> Value {
    let resp = t
        .http
        .get(t.url(&format!("/api/ingress/v1/track/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn statuses(track: &Value) -> Vec<String> {
    track["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect()
}

/// One `ValidationResult` stream: send verdicts, read acks.
struct Verdicts {
    tx: mpsc::Sender<pb::Verdict>,
    acks: tonic::Streaming<pb::VerdictAck>,
}

impl Verdicts {
    async fn open(t: &TestApp) -> Verdicts {
        let (tx, rx) = mpsc::channel(16);
        let acks = t
            .grpc()
            .await
            .validation_result(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Verdicts { tx, acks }
    }

    async fn send(&self, id: &str, validation: &str) {
        let v = pb::Verdict {
            request_id: id.into(),
            validation: validation.into(),
            reason: String::new(),
        };
        self.tx.send(v).await.unwrap();
    }

    async fn ack(&mut self) -> pb::VerdictAck {
        tokio::time::timeout(SECS, self.acks.message())
            .await
            .expect("an ack within 10 s")
            .unwrap()
            .unwrap()
    }

    async fn verdict(&mut self, id: &str, validation: &str) -> pb::VerdictAck {
        self.send(id, validation).await;
        self.ack().await
    }
}

fn outcome(ack: &pb::VerdictAck) -> Outcome {
    Outcome::try_from(ack.outcome).unwrap()
}

async fn subscribe(t: &TestApp) -> tonic::Streaming<pb::Announcement> {
    let req = pb::SubscribeRequest {
        service: "testareno".into(),
    };
    t.grpc().await.subscribe(req).await.unwrap().into_inner()
}

async fn next_announcement(s: &mut tonic::Streaming<pb::Announcement>) -> pb::Announcement {
    tokio::time::timeout(SECS, s.message())
        .await
        .expect("an announcement within 10 s")
        .unwrap()
        .unwrap()
}

/// Asserts that a consumer group gets nothing more on a topic for a while.
async fn no_message(t: &TestApp, topic: &str, group: &str, within: Duration) {
    let mut sub = t.app.queue().subscribe(topic, group).await.unwrap();
    if let Ok(Some(Ok(d))) = tokio::time::timeout(within, sub.next()).await {
        panic!(
            "unexpected message on {topic}: {}",
            String::from_utf8_lossy(&d.message.payload)
        );
    }
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn the_built_in_validator_with_failure_moves_the_payload_to_reject() {
    let t = spawn_app(&[]).await;
    let body = b"not really a tarball".to_vec();
    let id = upload(&t, body.clone()).await;

    let lines = validate(&t.base, &["--verdict", "failure", "--count", "1"]).await;
    let line = line_for(&lines, &id);
    assert!(line.contains("verdict=failure outcome=rejected"), "{line}");

    assert_eq!(t.bucket_files("reject"), [id.clone()]);
    assert!(t.bucket_files("quarantine").is_empty());
    assert!(t.bucket_files("perm").is_empty());
    assert_eq!(
        std::fs::read(t.data.path().join("reject").join(&id)).unwrap(),
        body
    );
    let history = track(&t, &id).await;
    assert_eq!(statuses(&history), ["received", "announced", "rejected"]);
    assert_eq!(history["status"], "rejected");
}

#[tokio::test]
async fn the_built_in_validator_with_success_promotes_and_the_available_url_downloads_the_bytes() {
    let t = spawn_app(&[]).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = upload(&t, body.clone()).await;

    let lines = validate(&t.base, &["--verdict", "success", "--count", "1"]).await;
    assert!(line_for(&lines, &id).contains("verdict=success outcome=promoted"));

    assert_eq!(t.bucket_files("perm"), [id.clone()]);
    assert!(t.bucket_files("quarantine").is_empty());
    let msg = t.next_message("platform.upload.available", "test").await;
    assert_eq!(msg.key, id);
    let a: Value = serde_json::from_slice(&msg.payload).unwrap();
    for field in ["id", "request_id", "payload_id"] {
        assert_eq!(a[field], id, "{field}");
    }
    assert_eq!(a["service"], "testareno");
    assert_eq!(a["category"], "something");
    assert_eq!(
        (a["account"].clone(), a["rh_account"].clone()),
        ("acct-1".into(), "acct-1".into())
    );
    assert_eq!(
        (a["org_id"].clone(), a["principal"].clone()),
        ("org-1".into(), "org-1".into())
    );
    assert_eq!(a["b64_identity"], identity("acct-1", "org-1"));
    assert_eq!(a["size"], body.len() as u64);
    assert_eq!(a["sha256"], sha256_hex(&body));

    let url = a["url"].as_str().unwrap();
    assert!(url.contains("/download/perm/"), "{url}");
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256_hex(&got.bytes().await.unwrap()), sha256_hex(&body));
    assert_eq!(
        statuses(&track(&t, &id).await),
        ["received", "announced", "success", "advertised"]
    );
}

#[tokio::test]
async fn check_passes_a_real_tar_gz_and_fails_what_is_not_one() {
    let t = spawn_app(&[]).await;
    let good = tar_gz(&[
        ("insights/data.json", br#"{"a":1}"#),
        ("insights/big", &[9u8; 200_000]),
    ]);
    let good_id = upload(&t, good).await;
    let garbage_id = upload(&t, b"definitely not gzip".to_vec()).await;
    let mut truncated = tar_gz(&[("x", &[1u8; 100_000])]);
    truncated.truncate(truncated.len() / 2);
    let truncated_id = upload(&t, truncated).await;

    // The bytes come over gRPC Download here (the other tests use the URLs).
    let lines = validate(
        &t.base,
        &["--verdict", "check", "--count", "3", "--download", "grpc"],
    )
    .await;
    assert!(line_for(&lines, &good_id).contains("verdict=success outcome=promoted"));
    assert!(line_for(&lines, &garbage_id).contains("verdict=failure outcome=rejected"));
    assert!(line_for(&lines, &truncated_id).contains("verdict=failure outcome=rejected"));

    assert_eq!(t.bucket_files("perm"), [good_id.clone()]);
    let mut rejected = vec![garbage_id.clone(), truncated_id.clone()];
    rejected.sort();
    assert_eq!(t.bucket_files("reject"), rejected);
    // The reason reaches the payload's history.
    let why = |h: Value| {
        h["history"].as_array().unwrap().last().unwrap()["status_msg"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(why(track(&t, &garbage_id).await).contains("not gzip"));
    assert!(why(track(&t, &truncated_id).await).contains("not a valid tar.gz"));
}

#[tokio::test]
async fn a_payload_left_by_a_disconnected_subscriber_goes_to_another() {
    let t = spawn_app(&[]).await;
    let mut first = subscribe(&t).await;
    let id = upload(&t, b"abc".to_vec()).await;
    let a = next_announcement(&mut first).await;
    assert_eq!(a.request_id, id);
    assert_eq!(a.size, 3);
    let json: Value = serde_json::from_str(&a.json).unwrap();
    assert_eq!(json["request_id"], id);

    // While the first one holds it, a second subscriber does not get it too.
    let mut second = subscribe(&t).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second.message())
            .await
            .is_err()
    );

    drop(first); // disconnects without a verdict
    let again = next_announcement(&mut second).await;
    assert_eq!(again.request_id, id);
    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);
}

#[tokio::test]
async fn a_silent_subscriber_loses_the_payload_to_another_after_the_visibility_timeout() {
    let t = spawn_app(&["--visibility-timeout-secs", "1"]).await;
    let mut silent = subscribe(&t).await;
    let id = upload(&t, b"abc".to_vec()).await;
    assert_eq!(next_announcement(&mut silent).await.request_id, id);
    let taken = Instant::now();

    let mut other = subscribe(&t).await;
    let again = next_announcement(&mut other).await;
    assert_eq!(again.request_id, id);
    // Not at once: only once the 1 s timeout has run (it started a little before `taken`).
    assert!(
        taken.elapsed() >= Duration::from_millis(500),
        "redelivered after {:?}",
        taken.elapsed()
    );
    // It went to the other subscriber, not back to the silent one.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), silent.message())
            .await
            .is_err()
    );

    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);
    // The silent one's late verdict changes nothing.
    assert_eq!(
        outcome(&v.verdict(&id, "failure").await),
        Outcome::AlreadyDecided
    );
    assert_eq!(t.bucket_files("perm"), [id]);
    assert!(t.bucket_files("reject").is_empty());
}

#[tokio::test]
async fn one_validation_stream_acks_each_result_and_goes_on() {
    let t = spawn_app(&[]).await;
    let id = upload(&t, b"abc".to_vec()).await;
    let mut v = Verdicts::open(&t).await;
    // All four sent before any ack is read: one ack each, in order.
    v.send("no-such-payload", "success").await;
    v.send(&id, "maybe").await;
    v.send("", "success").await;
    v.send(&id, "FAILURE").await;

    let unknown = v.ack().await;
    assert_eq!(
        (outcome(&unknown), unknown.request_id.as_str()),
        (Outcome::UnknownId, "no-such-payload")
    );
    let invalid = v.ack().await;
    assert_eq!(
        (outcome(&invalid), invalid.request_id.as_str()),
        (Outcome::Invalid, id.as_str())
    );
    assert!(invalid.message.contains("maybe"), "{}", invalid.message);
    let missing = v.ack().await;
    assert_eq!(outcome(&missing), Outcome::Invalid);
    assert!(
        missing.message.contains("request_id"),
        "{}",
        missing.message
    );
    let good = v.ack().await;
    assert_eq!(
        (outcome(&good), good.request_id.as_str()),
        (Outcome::Rejected, id.as_str())
    );

    assert_eq!(t.bucket_files("reject"), [id.clone()]);
    assert_eq!(
        statuses(&track(&t, &id).await),
        ["received", "announced", "rejected"]
    );
    assert_eq!(
        t.metric("upload_gateway_verdicts_total{outcome=\"invalid\"}")
            .await,
        2.0
    );
    assert_eq!(
        t.metric("upload_gateway_verdicts_total{outcome=\"unknown_id\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_restarted_gateway_applies_the_verdict_from_what_storage_kept() {
    let t = spawn_app(&[]).await;
    let body = b"kept across a restart".to_vec();
    let id = upload(&t, body.clone()).await;
    let TestApp { app, data, .. } = t;
    app.stop().await.unwrap();

    let t = spawn_app_in(data, &[]).await;
    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);
    assert_eq!(t.bucket_files("perm"), [id.clone()]);
    let msg = t.next_message("platform.upload.available", "test").await;
    let a: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(a["request_id"], id);
    assert_eq!(a["service"], "testareno");
    assert_eq!(a["category"], "something");
    assert_eq!(a["account"], "acct-1");
    assert_eq!(a["org_id"], "org-1");
    assert_eq!(a["b64_identity"], identity("acct-1", "org-1"));
    assert_eq!(a["size"], body.len() as u64);
    assert_eq!(a["sha256"], sha256_hex(&body));
    let got = reqwest::get(a["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test]
async fn a_killed_gateway_restarted_on_its_data_gives_the_payload_to_the_built_in_validator() {
    let data = tempfile::tempdir().unwrap();
    let first = GatewayProcess::start(data.path(), &[]);
    let part = reqwest::multipart::Part::bytes(b"survives kill -9".to_vec())
        .file_name("a.tar.gz")
        .mime_str(TESTARENO)
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/ingress/v1/upload", first.base))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    drop(first); // SIGKILL: no verdict was given

    let second = GatewayProcess::start(data.path(), &[]);
    let lines = validate(&second.base, &["--verdict", "success", "--count", "1"]).await;
    assert!(line_for(&lines, &id).contains("outcome=promoted"));
    assert_eq!(list_bucket(data.path(), "perm"), [id]);
    assert!(list_bucket(data.path(), "quarantine").is_empty());
}

#[tokio::test]
async fn signed_urls_serve_the_bytes_and_refuse_tampering() {
    let t = spawn_app(&[]).await;
    let body = b"signed bytes".to_vec();
    let id = upload(&t, body.clone()).await;
    let a: Value = serde_json::from_slice(
        &t.next_message("platform.upload.testareno", "test")
            .await
            .payload,
    )
    .unwrap();
    let url = a["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/download/quarantine/{id}?expires=", t.base)),
        "{url}"
    );

    let good = reqwest::get(&url).await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.bytes().await.unwrap().to_vec(), body);

    let (path, query) = url.split_once('?').unwrap();
    let sig = query.split("signature=").nth(1).unwrap();
    let flipped: String = sig.chars().rev().collect();
    let expires: u64 = query.split('&').next().unwrap()["expires=".len()..]
        .parse()
        .unwrap();
    let tampered = [
        url.replace(sig, &flipped),
        url.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600),
        ),
        url.replace("/download/quarantine/", "/download/perm/"),
        format!("{path}?expires={expires}"),
        path.to_string(),
    ];
    for bad in tampered {
        let resp = reqwest::get(&bad).await.unwrap();
        assert_eq!(resp.status(), 403, "{bad}");
    }
    // Another payload's key with this signature.
    let other = upload(&t, b"other".to_vec()).await;
    let resp = reqwest::get(url.replace(&id, &other)).await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn grpc_download_streams_the_same_bytes() {
    let t = spawn_app(&[]).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let id = upload(&t, body.clone()).await;
    let empty = upload(&t, Vec::new()).await;
    let mut client = t.grpc().await;
    let download = |id: String| {
        let mut client = client.clone();
        async move {
            let stream = client
                .download(pb::DownloadRequest { request_id: id })
                .await?
                .into_inner();
            stream
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        }
    };

    let chunks = download(id.clone()).await.unwrap();
    assert_eq!(
        (chunks[0].size, chunks[0].bucket.as_str()),
        (body.len() as u64, "quarantine")
    );
    assert!(chunks.len() > 2, "streamed in chunks");
    assert_eq!(
        chunks
            .iter()
            .flat_map(|c| c.data.to_vec())
            .collect::<Vec<u8>>(),
        body
    );

    let chunks = download(empty).await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (
            chunks[0].size,
            chunks[0].bucket.as_str(),
            chunks[0].data.len()
        ),
        (0, "quarantine", 0)
    );

    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "failure").await), Outcome::Rejected);
    assert_eq!(download(id).await.unwrap()[0].bucket, "reject");
    let missing = client
        .download(pb::DownloadRequest {
            request_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_expired_signed_url_is_refused() {
    let t = spawn_app(&["--url-expiry-secs", "1"]).await;
    upload(&t, b"short-lived".to_vec()).await;
    let a: Value = serde_json::from_slice(
        &t.next_message("platform.upload.testareno", "test")
            .await
            .payload,
    )
    .unwrap();
    let url = a["url"].as_str().unwrap();
    let expires: u64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn watch_status_follows_a_payload_from_received_to_advertised() {
    let t = spawn_app(&[]).await;
    let id = upload(&t, b"watch me".to_vec()).await;
    let mut client = t.grpc().await;
    let mut events = client
        .watch_status(pb::StatusRequest {
            request_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(SECS, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e.status);
    }
    assert_eq!(seen, ["received", "announced"]);

    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);
    // The stream ends by itself after the terminal status.
    let rest = tokio::time::timeout(SECS, async {
        let mut rest = Vec::new();
        while let Some(e) = events.message().await.unwrap() {
            assert_eq!(e.request_id, id);
            assert_eq!(e.service, "ingress");
            rest.push(e.status);
        }
        rest
    })
    .await
    .expect("WatchStatus ends after advertised");
    assert_eq!(rest, ["success", "advertised"]);

    let history = client
        .get_status(pb::StatusRequest {
            request_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let all: Vec<_> = history.events.iter().map(|e| e.status.as_str()).collect();
    assert_eq!(all, ["received", "announced", "success", "advertised"]);
    let unknown = client
        .watch_status(pb::StatusRequest {
            request_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let resp = t
        .http
        .get(t.url("/api/ingress/v1/track/nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_same_verdict_twice_changes_nothing_the_second_time() {
    let t = spawn_app(&[]).await;
    let id = upload(&t, b"once".to_vec()).await;
    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);
    let again = v.verdict(&id, "success").await;
    assert_eq!(outcome(&again), Outcome::AlreadyDecided);
    assert!(again.message.contains("perm"), "{}", again.message);
    assert_eq!(
        outcome(&v.verdict(&id, "failure").await),
        Outcome::AlreadyDecided
    );

    assert_eq!(t.bucket_files("perm"), [id.clone()]);
    assert!(t.bucket_files("reject").is_empty());
    assert_eq!(
        t.next_message("platform.upload.available", "test")
            .await
            .key,
        id
    );
    no_message(
        &t,
        "platform.upload.available",
        "test",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        statuses(&track(&t, &id).await),
        ["received", "announced", "success", "advertised"]
    );
}

#[tokio::test]
async fn status_messages_carry_the_contract_fields_in_order() {
    let t = spawn_app(&[]).await;
    let id = upload(&t, b"tracked".to_vec()).await;
    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "success").await), Outcome::Promoted);

    let mut seen = Vec::new();
    for _ in 0..4 {
        let msg = t.next_message("platform.payload-status", "test").await;
        assert_eq!(msg.key, id);
        let s: Value = serde_json::from_slice(&msg.payload).unwrap();
        let keys: std::collections::BTreeSet<&str> =
            s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "account",
                "date",
                "org_id",
                "payload_id",
                "request_id",
                "service",
                "status",
                "status_msg"
            ]
            .into()
        );
        assert_eq!(s["service"], "ingress");
        assert_eq!(s["request_id"], id);
        assert_eq!(s["payload_id"], id);
        assert_eq!(s["account"], "acct-1");
        assert_eq!(s["org_id"], "org-1");
        assert!(!s["status_msg"].as_str().unwrap().is_empty());
        let date = s["date"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(date).is_ok() && date.ends_with('Z'),
            "{date}"
        );
        seen.push(s["status"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["received", "announced", "success", "advertised"]);
}

#[tokio::test]
async fn handoff_leaves_the_payload_and_a_failed_move_is_recorded_as_error() {
    let t = spawn_app(&[]).await;
    let handed = upload(&t, b"handed off".to_vec()).await;
    let broken = upload(&t, b"cannot move yet".to_vec()).await;
    let mut v = Verdicts::open(&t).await;

    assert_eq!(
        outcome(&v.verdict(&handed, "handoff").await),
        Outcome::HandedOff
    );
    assert_eq!(
        outcome(&v.verdict(&handed, "handoff").await),
        Outcome::AlreadyDecided
    );
    let mut waiting = vec![handed.clone(), broken.clone()];
    waiting.sort();
    assert_eq!(t.bucket_files("quarantine"), waiting);
    assert_eq!(
        statuses(&track(&t, &handed).await),
        ["received", "announced", "handoff"]
    );

    // The perm folder is gone: the success verdict cannot be applied.
    let perm = t.data.path().join("perm");
    std::fs::rename(&perm, t.data.path().join("perm-away")).unwrap();
    let retry = v.verdict(&broken, "success").await;
    assert_eq!(outcome(&retry), Outcome::Retry);
    assert_eq!(
        outcome(&v.verdict(&broken, "success").await),
        Outcome::Retry
    );
    let history = track(&t, &broken).await;
    assert_eq!(statuses(&history), ["received", "announced", "error"]);
    let msg = history["history"][2]["status_msg"].as_str().unwrap();
    assert!(msg.contains("could not be applied"), "{msg}");
    assert!(
        t.bucket_files("quarantine").contains(&broken),
        "nothing is lost"
    );

    // Once storage is back, the same verdict applies.
    std::fs::rename(t.data.path().join("perm-away"), &perm).unwrap();
    assert_eq!(
        outcome(&v.verdict(&broken, "success").await),
        Outcome::Promoted
    );
    assert_eq!(
        statuses(&track(&t, &broken).await),
        ["received", "announced", "error", "success", "advertised"]
    );
    assert_eq!(t.bucket_files("perm"), [broken]);
}

#[tokio::test]
async fn the_built_in_validator_says_what_it_cannot_do() {
    let t = spawn_app(&[]).await;
    let run = |args: &'static [&'static str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
            .args(["validate", "--gateway", &t.base, "--verdict", "success"])
            .args(args)
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(SECS, run(&["--service", "nosuch"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("nosuch"),
        "{err}"
    );
    let out = tokio::time::timeout(SECS, run(&["--service", "testareno", "--via", "kafka"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available yet"));
}

#[tokio::test]
async fn shutdown_ends_the_validators_streams_instead_of_waiting_for_them() {
    let t = spawn_app(&[]).await;
    let mut work = subscribe(&t).await;
    let id = upload(&t, b"held at shutdown".to_vec()).await;
    assert_eq!(next_announcement(&mut work).await.request_id, id);
    let mut watch = t
        .grpc()
        .await
        .watch_status(pb::StatusRequest {
            request_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut v = Verdicts::open(&t).await;

    let TestApp { app, data, .. } = t;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("shutdown does not wait out the 30 s drain for open streams")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let work_end = tokio::time::timeout(SECS, work.message()).await.unwrap();
    assert!(
        !matches!(work_end, Ok(Some(_))),
        "the Subscribe stream ended"
    );
    while let Some(e) = tokio::time::timeout(SECS, watch.message())
        .await
        .unwrap()
        .ok()
        .flatten()
    {
        assert_ne!(e.status, "advertised");
    }
    let acks_end = tokio::time::timeout(SECS, v.acks.message()).await.unwrap();
    assert!(
        !matches!(acks_end, Ok(Some(_))),
        "the ValidationResult stream ended"
    );

    // Nothing was decided, so the restarted gateway offers the payload again.
    let t = spawn_app_in(data, &[]).await;
    let mut work = subscribe(&t).await;
    assert_eq!(next_announcement(&mut work).await.request_id, id);
}

#[tokio::test]
async fn the_built_in_validator_carries_on_across_a_gateway_restart() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let start = |data: &std::path::Path| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let p = GatewayProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
        };
        p.wait_ready(Duration::from_secs(30));
        p
    };
    let post = |base: String| async move {
        let part = reqwest::multipart::Part::bytes(b"abc".to_vec())
            .file_name("a")
            .mime_str(TESTARENO)
            .unwrap();
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/ingress/v1/upload"))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<Value>().await.unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut first = start(data.path());
    let mut validator = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args([
            "validate",
            "--gateway",
            &first.base,
            "--service",
            "testareno",
            "--verdict",
            "success",
            "--count",
            "2",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(validator.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };

    let one = post(first.base.clone()).await;
    assert!(next_line().await.starts_with(&format!("request_id={one} ")));
    first.signal("TERM");
    let stopped = Instant::now();
    while first.child.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the gateway drains within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = start(data.path());
    let two = post(second.base.clone()).await;
    let line = next_line().await;
    assert!(
        line.starts_with(&format!("request_id={two} ")) && line.contains("outcome=promoted"),
        "{line}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), validator.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut perm = vec![one, two];
    perm.sort();
    assert_eq!(list_bucket(data.path(), "perm"), perm);
}
