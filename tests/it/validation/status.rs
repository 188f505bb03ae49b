//! Status tracking: `WatchStatus`, `GetStatus`, `track`, and the status topic.

use super::support::*;

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
