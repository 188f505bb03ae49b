//! gRPC `Subscribe`: shared work, redelivery when a subscriber leaves or stays
//! silent, and streams that end at shutdown.

use super::support::*;

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
