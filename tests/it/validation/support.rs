//! What the validation tests share: uploads, the validator as a child process,
//! verdict streams, subscriptions.

pub(crate) use std::process::Stdio;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use crate::common::*;
pub(crate) use futures_util::StreamExt;
pub(crate) use pb::verdict_ack::Outcome;
pub(crate) use serde_json::Value;
pub(crate) use tokio::sync::mpsc;
pub(crate) use tokio_stream::wrappers::ReceiverStream;

pub(crate) const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";
pub(crate) const SECS: Duration = Duration::from_secs(10);

/// Uploads a testareno payload with an identity; returns its request id.
pub(crate) async fn upload(t: &TestApp, bytes: Vec<u8>) -> String {
    Upload::new(TESTARENO, bytes).identity("acct-1", "org-1").accepted(&t.http, &t.base).await
}

/// Runs the real binary's built-in validator against the gateway; its output lines.
pub(crate) async fn validate(base: &str, data: &std::path::Path, args: &[&str]) -> Vec<String> {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args(["validate", "--gateway", base, "--service", "testareno"])
        .arg("--data-dir")
        .arg(data)
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

pub(crate) fn line_for<'a>(lines: &'a [String], id: &str) -> &'a str {
    let key = format!("request_id={id} ");
    lines
        .iter()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no output line for {id} in {lines:#?}"))
}

/// `GET {p}/v1/track/{id}` as JSON.
pub(crate) async fn track(t: &TestApp, id: &str) -> Value {
    let resp = t
        .http
        .get(t.url(&format!("/api/ingress/v1/track/{id}")))
        .header("x-rh-identity", identity("acct-1", "org-1")) // status answers the owner
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

pub(crate) fn statuses(track: &Value) -> Vec<String> {
    track["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect()
}

/// One `ValidationResult` stream: send verdicts, read acks.
pub(crate) struct Verdicts {
    pub(crate) tx: mpsc::Sender<pb::Verdict>,
    pub(crate) acks: tonic::Streaming<pb::VerdictAck>,
}

impl Verdicts {
    pub(crate) async fn open(t: &TestApp) -> Verdicts {
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

    pub(crate) async fn send(&self, id: &str, validation: &str) {
        let v = pb::Verdict {
            request_id: id.into(),
            validation: validation.into(),
            reason: String::new(),
            ..Default::default()
        };
        self.tx.send(v).await.unwrap();
    }

    pub(crate) async fn ack(&mut self) -> pb::VerdictAck {
        tokio::time::timeout(SECS, self.acks.message())
            .await
            .expect("an ack within 10 s")
            .unwrap()
            .unwrap()
    }

    pub(crate) async fn verdict(&mut self, id: &str, validation: &str) -> pb::VerdictAck {
        self.send(id, validation).await;
        self.ack().await
    }
}

pub(crate) fn outcome(ack: &pb::VerdictAck) -> Outcome {
    Outcome::try_from(ack.outcome).unwrap()
}

pub(crate) async fn subscribe(t: &TestApp) -> tonic::Streaming<pb::Announcement> {
    let req = pb::SubscribeRequest {
        service: "testareno".into(),
    };
    t.grpc().await.subscribe(req).await.unwrap().into_inner()
}

pub(crate) async fn next_announcement(
    s: &mut tonic::Streaming<pb::Announcement>,
) -> pb::Announcement {
    tokio::time::timeout(SECS, s.message())
        .await
        .expect("an announcement within 10 s")
        .unwrap()
        .unwrap()
}

pub(crate) fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
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
