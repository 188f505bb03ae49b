//! The gateway killed (SIGKILL) between announce and verdict, then started again.

use serde_json::json;

use crate::common::*;
use super::support::*;
use super::{SVC, WAIT};

fn start(data: &std::path::Path, flags: &[String]) -> GatewayProcess {
    GatewayProcess::start(data, &as_strs(flags))
}

/// A payload's status history, as `GET .../track/{id}` answers it.
async fn track(http: &reqwest::Client, base: &str, id: &str) -> serde_json::Value {
    // Status answers the org that owns the payload.
    http.get(format!("{base}/api/ingress/v1/track/{id}")).header("x-rh-identity", identity(IDENTITY_ACCOUNT, IDENTITY_ORG)).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_verdict_sent_while_the_gateway_was_killed_is_applied_once_after_restart() {
    let _broker = BROKER.read().await;
    let n = Names::new("sigkill");
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let flags = n.flags();
    let (p, f) = (path.clone(), flags.clone());
    let mut gw = tokio::task::spawn_blocking(move || start(&p, &f)).await.unwrap();
    let http = operator_http(&path);
    let before = accepted_id(upload_to(&http, &gw.base, SVC, None, b"decided before".to_vec()).await).await;
    let after = accepted_id(upload_to(&http, &gw.base, SVC, None, b"decided after".to_vec()).await).await;
    wait_records(&n.announce(SVC), &after, 1, WAIT).await;

    let v = Validator::new();
    v.send(&n.validation, &before, &json!({"request_id": before, "validation": "success"})).await;
    wait_file(&path, "perm", &before, WAIT).await;
    // Its promotion whole (copied, advertised, removed from quarantine) before the kill:
    // a kill inside a promotion applies it again after the restart, a second
    // `available` that issue 12 (one decision per payload, fleet-wide) is about.
    let deadline = std::time::Instant::now() + WAIT;
    while list_bucket(&path, "quarantine").contains(&before) {
        assert!(std::time::Instant::now() < deadline, "{before} never left quarantine");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // And its statuses on the topic: the outbox publishes them just after, from
    // memory, so a SIGKILL before that loses them from the topic (not from the
    // payload's history in storage, which `track` reads).
    wait_records(&n.status, &before, 4, WAIT).await;

    // Killed between announce and verdict: no drain, no last commit.
    gw.signal("KILL");
    let status = tokio::task::spawn_blocking(move || gw.child.wait().map(|s| (s, gw))).await.unwrap().unwrap();
    assert!(!status.0.success());
    drop(status.1);
    v.send(&n.validation, &after, &json!({"request_id": after, "validation": "success"})).await;
    // The verdict is on the topic before any gateway runs again: only the restarted
    // one can apply it, from its group's committed offset.
    assert_eq!(records_for(&n.validation, &after).await.len(), 1, "the verdict was written while the gateway was down");
    assert!(list_bucket(&path, "perm").iter().all(|f| f != &after), "applied with no gateway running");

    let (p, f) = (path.clone(), flags.clone());
    let gw = tokio::task::spawn_blocking(move || start(&p, &f)).await.unwrap();
    wait_file(&path, "perm", &after, WAIT).await;
    // Whatever was read again after the restart changed nothing twice: once the
    // gateway's group has committed the whole validation topic, every verdict it
    // read again has been handled.
    wait_committed_to_end(&n.validation, &n.group, WAIT).await;
    for id in [&before, &after] {
        assert_eq!(records_for(&n.available, id).await.len(), 1, "{id} advertised once");
        // Statuses go out through the outbox, just after the verdict's commit.
        let statuses = || async {
            records_for(&n.status, id).await.iter().map(|r| r.json()["status"].as_str().unwrap().to_string()).collect::<Vec<String>>()
        };
        eventually(WAIT, "four statuses", || async { statuses().await.len() >= 4 }).await;
        assert_eq!(statuses().await, ["received", "announced", "success", "advertised"], "{id}");
    }
    assert!(list_bucket(&path, "quarantine").is_empty());
    // The restarted gateway knows the whole history, its first life included.
    let track = track(&http, &gw.base, &after).await;
    assert_eq!(track["status"], "advertised", "{track}");
    assert_eq!(track["history"].as_array().unwrap().len(), 4, "{track}");
    drop(gw);
    n.cleanup().await;
}

/// Killed while the broker was to confirm an announcement: the payload is stored, its
/// client got no answer, nothing is on the topic. The next gateway's quarantine sweep
/// announces it, once; a payload announced before the kill is not announced again.
#[tokio::test]
async fn a_payload_stored_but_never_announced_before_a_kill_is_announced_after_restart() {
    let _broker = BROKER.write().await;
    let n = Names::new("unannounced");
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let mut first = n.flags();
    first.extend(["--kafka-publish-timeout-secs", "120", "--quarantine-sweep-secs", "600"].map(String::from));
    let (p, f) = (path.clone(), first.clone());
    let mut gw = tokio::task::spawn_blocking(move || start(&p, &f)).await.unwrap();
    let http = operator_http(&path);
    let before = accepted_id(upload_to(&http, &gw.base, SVC, None, b"announced before".to_vec()).await).await;
    wait_records(&n.announce(SVC), &before, 1, WAIT).await;
    wait_records(&n.status, &before, 2, WAIT).await;

    // The broker goes away; an upload is stored and waits for its delivery report.
    kafka_script(&["down"]).await;
    let orphan = "stored-never-announced-1";
    let body = b"stored, then the gateway was killed".repeat(1000);
    let (base, b) = (gw.base.clone(), body.clone());
    let client = tokio::spawn(async move { upload_to(&reqwest::Client::new(), &base, SVC, Some(orphan), b).await });
    wait_file(&path, "quarantine", orphan, WAIT).await;
    gw.signal("KILL");
    let status = tokio::task::spawn_blocking(move || gw.child.wait().map(|s| (s, gw))).await.unwrap().unwrap();
    assert!(!status.0.success());
    drop(status.1);
    // The client never got a 2xx (reqwest sees the connection close).
    let answered = tokio::time::timeout(WAIT, client).await.expect("the client hears the connection close");
    assert!(answered.is_err() || answered.as_ref().is_ok_and(|r| !r.status().is_success()));
    kafka_script(&["up"]).await;
    assert!(records_for(&n.announce(SVC), orphan).await.is_empty(), "nothing was announced before the restart");

    let mut second = n.flags();
    second.extend(["--kafka-publish-timeout-secs", "2", "--quarantine-sweep-secs", "3"].map(String::from));
    let (p, f) = (path.clone(), second.clone());
    let gw = tokio::task::spawn_blocking(move || start(&p, &f)).await.unwrap();
    let recs = wait_records(&n.announce(SVC), orphan, 1, WAIT).await;
    let ann = recs[0].json();
    assert_eq!(ann["request_id"], orphan);
    assert_eq!(ann["size"], body.len() as u64);
    assert_eq!(ann["sha256"], sha256_hex(&body));
    let fetched = http.get(ann["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), body.as_slice());

    // More sweeps pass: nothing is announced twice, the earlier payload not again. The
    // marker: a copy of the orphan put into quarantine behind the gateway's back
    // (stored, never announced) is announced by a later sweep, two looks on; every
    // sweep that could have announced something again has run by then.
    let q = path.join("quarantine");
    let mut meta: serde_json::Value = serde_json::from_slice(&crate::common::local_meta(&path, "quarantine", orphan).unwrap()).unwrap();
    meta["request_id"] = json!("sweep-marker-1");
    std::fs::write(q.join(".meta/sweep-marker-1.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
    std::fs::write(q.join("sweep-marker-1"), crate::common::local_bytes(&path, "quarantine", orphan).unwrap()).unwrap();
    wait_records(&n.announce(SVC), "sweep-marker-1", 1, WAIT).await;
    assert_eq!(records_for(&n.announce(SVC), orphan).await.len(), 1, "announced once");
    assert_eq!(records_for(&n.announce(SVC), &before).await.len(), 1, "an announced payload is left alone");
    let metrics = http.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    // The orphan and the marker.
    assert!(metrics.lines().any(|l| l == "upload_gateway_reannounced_total 2"), "{metrics}");
    let track = track(&http, &gw.base, orphan).await;
    assert_eq!(track["status"], "announced", "{track}");

    // From here on it is a payload like any other: a verdict promotes it.
    let v = Validator::new();
    v.send(&n.validation, orphan, &json!({"request_id": orphan, "validation": "success"})).await;
    wait_file(&path, "perm", orphan, WAIT).await;
    assert_eq!(wait_records(&n.available, orphan, 1, WAIT).await.len(), 1);
    drop(gw);
    n.cleanup().await;
}
