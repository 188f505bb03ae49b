//! On Garage and Kafka: the payloads the old services left in the quarantine bucket
//! (plain PutObject, their user metadata, key = request id, no sidecar) get their
//! verdicts over the validation topic like any other (item 2); the quarantine sweep's
//! re-announcement carries the metadata (item 3).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{json, Value};

use crate::common::s3::*;
use crate::common::s3::as_strs;
use crate::common::*;
use crate::kafka::support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn put_legacy(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8], ct: Option<&str>, md: &[(&str, &str)]) {
    let metadata: HashMap<String, String> = md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    c.put_object()
        .bucket(bucket)
        .key(key)
        .set_content_type(ct.map(str::to_string))
        .set_metadata(Some(metadata))
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .expect("PutObject as the old service did");
}

/// `track` as the payload's owner (status is tenant-scoped).
async fn track(t: &TestApp, id: &str, owner: &str) -> Value {
    let resp = t
        .http
        .get(t.url(&format!("/api/ingress/v1/track/{id}")))
        .header("x-rh-identity", owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "track {id}");
    resp.json().await.unwrap()
}

fn statuses(v: &Value) -> Vec<String> {
    v["history"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_string()).collect()
}

async fn wait_until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(what: &str, mut f: F) {
    let deadline = Instant::now() + WAIT;
    while !f().await {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn payloads_the_old_services_stored_get_their_verdicts_over_kafka() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("legacy");
    let _broker = BROKER.read().await;
    let n = Names::new("legacy");
    let mut flags = s3_flags(&env, &b, &[]);
    flags.extend(n.flags());
    let t = spawn_app(&as_strs(&flags)).await; // creates the buckets
    let c = env.client();
    let q = &b.quarantine;

    // The Python service: user metadata `account` and `user-agent`, no content type.
    let py_ok = uuid::Uuid::new_v4().simple().to_string();
    let py_bad = uuid::Uuid::new_v4().simple().to_string();
    let py_body = b"stored by insights-upload (Python)".repeat(50);
    for key in [&py_ok, &py_bad] {
        put_legacy(&c, q, key, &py_body, None, &[("account", "0000001"), ("user-agent", "insights-client/3.1")]).await;
    }
    // The Go service: `requestid`, `account`, `org`; content type always application/gzip.
    let go_ok = uuid::Uuid::new_v4().simple().to_string();
    let go_bad = uuid::Uuid::new_v4().simple().to_string();
    let go_body = b"stored by insights-ingress-go".repeat(70);
    for key in [&go_ok, &go_bad] {
        let md = [("requestid", key.as_str()), ("account", "0000002"), ("org", "org-go")];
        put_legacy(&c, q, key, &go_body, Some("application/gzip"), &md).await;
    }

    // Before any verdict, `track` finds them, for their owners: the Python service's
    // by account (it knew no org), the Go service's by org.
    use base64::Engine;
    let py_owner = base64::engine::general_purpose::STANDARD.encode(r#"{"identity":{"account_number":"0000001","type":"User"}}"#);
    let go_owner = identity("0000002", "org-go");
    assert_eq!(statuses(&track(&t, &py_ok, &py_owner).await), ["received"]);
    assert_eq!(statuses(&track(&t, &go_ok, &go_owner).await), ["received"]);

    // The validators answer on the validation topic as they always did: echoing the
    // announce fields the old service sent them (or not).
    let v = Validator::new();
    let ident = identity("0000001", "org-py");
    v.send(
        &n.validation,
        &py_ok,
        &json!({"payload_id": py_ok, "validation": "success", "service": "advisor", "category": "collection",
                "account": "0000001", "principal": "org-py", "b64_identity": ident, "id": "inv-py",
                "satellite_managed": false, "size": py_body.len()}),
    )
    .await;
    v.send(&n.validation, &go_ok, &json!({"request_id": go_ok, "validation": "success"})).await;
    v.send(&n.validation, &py_bad, &json!({"payload_id": py_bad, "validation": "failure", "reason": "not a tarball"})).await;
    v.send(&n.validation, &go_bad, &json!({"request_id": go_bad, "validation": "FAILURE", "service": "compliance"})).await;

    // perm and reject get them, quarantine lets go.
    for (key, bucket) in [(&py_ok, &b.perm), (&go_ok, &b.perm), (&py_bad, &b.reject), (&go_bad, &b.reject)] {
        wait_until(&format!("{key} in {bucket}"), || exists(&c, bucket, key)).await;
        wait_until(&format!("{key} out of quarantine"), || async { !exists(&c, q, key).await }).await;
    }
    // The moved objects keep what the old service wrote on them.
    let head = c.head_object().bucket(&b.perm).key(&go_ok).send().await.unwrap();
    assert_eq!(head.metadata().unwrap()["org"], "org-go");

    // `available`, for the two successes only: facts from the object, the rest from the verdict.
    let a = wait_records(&n.available, &py_ok, 1, WAIT).await[0].json();
    assert_eq!(a["id"], "inv-py");
    assert_eq!((a["service"].as_str(), a["category"].as_str()), (Some("advisor"), Some("collection")));
    assert_eq!((a["account"].as_str(), a["rh_account"].as_str()), (Some("0000001"), Some("0000001")));
    assert_eq!((a["org_id"].as_str(), a["principal"].as_str()), (Some("org-py"), Some("org-py")));
    assert_eq!(a["b64_identity"], ident);
    assert_eq!(a["satellite_managed"], false);
    assert_eq!(a["size"], py_body.len() as u64);
    assert_eq!(a["sha256"], "");
    let got = reqwest::get(a["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), py_body);

    let a = wait_records(&n.available, &go_ok, 1, WAIT).await[0].json();
    assert_eq!(a["id"], go_ok.as_str());
    assert_eq!((a["service"].as_str(), a["category"].as_str()), (Some("unknown"), Some("unknown")));
    assert_eq!((a["account"].as_str(), a["org_id"].as_str()), (Some("0000002"), Some("org-go")));
    assert_eq!(a["size"], go_body.len() as u64);
    let got = reqwest::get(a["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.bytes().await.unwrap().to_vec(), go_body);
    for key in [&py_bad, &go_bad] {
        assert!(records_for(&n.available, key).await.is_empty(), "a rejected payload is not available");
    }

    // Their status, on `track` and the status topic.
    assert_eq!(statuses(&track(&t, &py_ok, &ident).await), ["success", "advertised"]);
    assert_eq!(statuses(&track(&t, &go_bad, &go_owner).await), ["rejected"]);
    let rejected = wait_records(&n.status, &py_bad, 1, WAIT).await[0].json();
    assert_eq!((rejected["status"].as_str(), rejected["status_msg"].as_str()), (Some("rejected"), Some("not a tarball")));
    assert_eq!(rejected["account"], "0000001");

    t.app.stop().await.unwrap();
    n.cleanup().await;
}

#[tokio::test]
async fn the_quarantine_sweep_re_announces_with_the_metadata() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("sweepmd");
    let _broker = BROKER.read().await;
    let n = Names::new("sweepmd");
    let mut flags = s3_flags(&env, &b, &[]);
    flags.extend(n.flags());
    let t = spawn_app(&as_strs(&flags)).await;
    // The real client's form: the metadata part after the file.
    let id = "sweep-metadata-1";
    let resp = upload(&t, "testareno", Some(id), b"kept with its metadata".to_vec()).await;
    assert_eq!(resp.status(), 202);
    let first = wait_records(&n.announce("testareno"), id, 1, WAIT).await;
    let sent: Value = serde_json::from_str(METADATA).unwrap();
    assert_eq!(first[0].json()["metadata"], sent);
    let sidecar = stored_meta(&env.client(), &b.quarantine, id).await.expect("its meta");
    assert_eq!(sidecar["metadata"], sent, "the metadata is kept with the payload's meta");
    t.app.stop().await.unwrap();

    // As if its gateway had been killed before the broker confirmed the announcement:
    // no event in its history. The next gateway's sweep, at two looks 3 s apart,
    // announces the payload again, metadata and all.
    let c = env.client();
    for key in all_keys(&c, &b.quarantine).await.into_iter().filter(|k| k.starts_with(&format!(".status/{id}/"))) {
        c.delete_object().bucket(&b.quarantine).key(key).send().await.unwrap();
    }
    let mut other = Names::new("sweepmd2");
    other.prefix = n.prefix.clone();
    let mut flags = s3_flags(&env, &b, &[]);
    flags.extend(other.flags());
    flags.extend(["--kafka-publish-timeout-secs", "2", "--quarantine-sweep-secs", "3"].map(String::from));
    let t = spawn_app(&as_strs(&flags)).await;
    let again = wait_records(&n.announce("testareno"), id, 2, WAIT).await;
    assert_eq!(again[1].json()["request_id"], id);
    assert_eq!(again[1].json()["metadata"], sent);
    t.app.stop().await.unwrap();
    n.cleanup().await;
    other.cleanup().await;
}
