//! gRPC `ValidationResult`: one ack per result, idempotent verdicts, verdicts applied
//! after a restart, handoff, and a failed move recorded as `error`.

use super::support::*;

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
    // A marker promoted after the repeated verdicts: its `available` message is the
    // next one, unless a repeated verdict advertised the payload again before it.
    let marker = upload(&t, b"marker".to_vec()).await;
    assert_eq!(outcome(&v.verdict(&marker, "success").await), Outcome::Promoted);
    let next = t.next_message("platform.upload.available", "test").await;
    assert_eq!(next.key, marker, "{id} advertised twice");
    assert_eq!(
        statuses(&track(&t, &id).await),
        ["received", "announced", "success", "advertised"]
    );
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
