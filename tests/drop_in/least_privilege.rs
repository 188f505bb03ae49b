//! S3 under least privilege (item 5), on Garage: a key made by `scripts/garage.sh key`
//! with read and write on the three buckets (made by `scripts/garage.sh bucket`) and no right to create buckets
//! (Garage cannot limit finer). The gateway starts with S3_CREATE_BUCKETS=false and
//! takes uploads and verdicts. Then read on reject is taken away, so S3 answers 403 for
//! a missing key there, as AWS does under a policy without s3:ListBucket: lookups read
//! that as "absent", not as "storage unavailable".

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::common::s3::*;
use crate::common::*;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";

fn garage(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/garage.sh");
    let out = Command::new("bash").arg(script).args(args).output().expect("bash runs scripts/garage.sh");
    assert!(out.status.success(), "garage.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

async fn upload(t: &TestApp, id: &str) -> u16 {
    let part = reqwest::multipart::Part::bytes(id.as_bytes().to_vec()).file_name("a.tgz").mime_str(TESTARENO).unwrap();
    let resp = t
        .http
        .post(t.url("/api/ingress/v1/upload"))
        .header("x-rh-insights-request-id", id)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(status == 202, "upload {id}: {status} {}", resp.text().await.unwrap());
    status
}

async fn verdict(t: &TestApp, id: &str, validation: &str) -> (pb::verdict_ack::Outcome, String) {
    let v = pb::Verdict { request_id: id.into(), validation: validation.into(), ..Default::default() };
    let mut acks = t.grpc().await.validation_result(futures_util::stream::iter([v])).await.unwrap().into_inner();
    let ack = tokio::time::timeout(Duration::from_secs(10), acks.next()).await.expect("an ack").unwrap().unwrap();
    (pb::verdict_ack::Outcome::try_from(ack.outcome).unwrap(), ack.message)
}

async fn head_status(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> u16 {
    match c.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => 200,
        Err(e) => e.raw_response().map_or(0, |r| r.status().as_u16()),
    }
}

#[tokio::test]
async fn the_gateway_works_with_a_key_limited_to_its_buckets() {
    use pb::verdict_ack::Outcome::*;
    let admin = S3Env::from_test_env();
    let b = Buckets::unique("least");
    let c = admin.client();
    garage(&["bucket", &b.quarantine, &b.perm, &b.reject]);
    let name = format!("ugw-least-{}", &b.quarantine[10..22]);
    let out = garage(&["key", &name, &format!("{}=rw", b.quarantine), &format!("{}=rw", b.perm), &format!("{}=rw", b.reject)]);
    let vars: std::collections::HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let limited = S3Env {
        access_key: vars["AWS_ACCESS_KEY_ID"].to_string(),
        secret_key: vars["AWS_SECRET_ACCESS_KEY"].to_string(),
        ..admin.clone()
    };
    let lc = limited.client();
    assert!(
        lc.create_bucket().bucket(format!("{}-x", b.quarantine)).send().await.is_err(),
        "the limited key must not be able to create buckets"
    );

    let t = spawn_app(&as_strs(&s3_flags(&limited, &b, &["--s3-create-buckets", "false"]))).await;
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(upload(&t, "least-ok-1").await, 202);
    assert_eq!(upload(&t, "least-bad-1").await, 202);
    assert_eq!(verdict(&t, "least-ok-1", "success").await.0, Promoted);
    assert_eq!(verdict(&t, "least-bad-1", "failure").await.0, Rejected);
    let a: Value = serde_json::from_slice(&t.next_message("platform.upload.available", "t").await.payload).unwrap();
    assert_eq!(a["request_id"], "least-ok-1");
    assert!(exists(&c, &b.perm, "least-ok-1").await && exists(&c, &b.reject, "least-bad-1").await);

    // No read on reject: S3 now answers 403 for a key that is not there.
    garage(&["deny", &limited.access_key, &format!("{}=r", b.reject)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while head_status(&lc, &b.reject, "least-nothing-here").await != 403 {
        assert!(Instant::now() < deadline, "Garage did not start refusing reads on reject");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // An upload with a supplied id looks in every bucket first: 202, not 503.
    assert_eq!(upload(&t, "least-ok-2").await, 202);
    // A verdict for an id nobody stored: unknown, not "retry" forever.
    let (outcome, msg) = verdict(&t, "least-never-stored", "success").await;
    assert_eq!(outcome, UnknownId, "{msg}");
    let resp = t.http.get(t.url("/api/ingress/v1/track/least-never-stored")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 200);
    // Writing to reject still works.
    assert_eq!(verdict(&t, "least-ok-2", "failure").await.0, Rejected);
    assert!(exists(&c, &b.reject, "least-ok-2").await);

    // S3 refusing the gateway everything (Garage answers AccessDenied to a bad key as
    // well) is an outage, not an absence: not ready, and a verdict is to be retried
    // rather than dropped as an unknown id.
    garage(&["deny", &limited.access_key, &format!("{}=r", b.quarantine)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while head_status(&lc, &b.quarantine, "least-ok-2").await != 403 {
        assert!(Instant::now() < deadline, "Garage did not start refusing reads on quarantine");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 503);
    let (outcome, msg) = verdict(&t, "least-never-stored", "success").await;
    assert_eq!(outcome, Retry, "{msg}");
    t.app.stop().await.unwrap();
}

/// The README's IAM policies are JSON an operator can paste, and bucket creation is
/// only in the second.
#[test]
fn the_readme_policies_are_valid_json() {
    let readme = include_str!("../../README.md");
    let section = readme.split("## In place of the old service").nth(1).expect("the README section");
    let section = section.split("\n## ").next().unwrap();
    let blocks: Vec<Value> = section
        .split("```json")
        .skip(1)
        .map(|b| serde_json::from_str(b.split("```").next().unwrap()).expect("a JSON block parses"))
        .collect();
    assert_eq!(blocks.len(), 2);
    let actions = |statements: &[Value]| -> Vec<String> {
        statements.iter().flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string())).collect()
    };
    let base = actions(blocks[0]["Statement"].as_array().unwrap());
    assert!(!base.iter().any(|a| a == "s3:CreateBucket"), "{base:?}");
    assert!(actions(std::slice::from_ref(&blocks[1])).iter().any(|a| a == "s3:CreateBucket"));
}
