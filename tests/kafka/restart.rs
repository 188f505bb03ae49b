//! The gateway killed (SIGKILL) between announce and verdict, then started again.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::support::*;
use crate::{accepted_id, SVC, WAIT};

fn start(data: &std::path::Path, flags: &[String]) -> GatewayProcess {
    GatewayProcess::start(data, &as_strs(flags))
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
    let http = reqwest::Client::new();
    let before = accepted_id(upload_to(&http, &gw.base, SVC, None, b"decided before".to_vec()).await).await;
    let after = accepted_id(upload_to(&http, &gw.base, SVC, None, b"decided after".to_vec()).await).await;
    wait_records(&n.announce(SVC), &after, 1, WAIT).await;

    let v = Validator::new();
    v.send(&n.validation, &before, &json!({"request_id": before, "validation": "success"})).await;
    wait_file(&path, "perm", &before, WAIT).await;

    // Killed between announce and verdict: no drain, no last commit.
    gw.signal("KILL");
    let status = tokio::task::spawn_blocking(move || gw.child.wait().map(|s| (s, gw))).await.unwrap().unwrap();
    assert!(!status.0.success());
    drop(status.1);
    v.send(&n.validation, &after, &json!({"request_id": after, "validation": "success"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(list_bucket(&path, "quarantine").contains(&after), "nobody applied it while the gateway was down");

    let (p, f) = (path.clone(), flags.clone());
    let gw = tokio::task::spawn_blocking(move || start(&p, &f)).await.unwrap();
    wait_file(&path, "perm", &after, WAIT).await;
    // Whatever was read again after the restart changed nothing twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in [&before, &after] {
        assert_eq!(records_for(&n.available, id).await.len(), 1, "{id} advertised once");
        let statuses: Vec<String> = records_for(&n.status, id)
            .await
            .iter()
            .map(|r| r.json()["status"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(statuses, ["received", "announced", "success", "advertised"], "{id}");
    }
    assert!(list_bucket(&path, "quarantine").is_empty());
    // The restarted gateway knows the whole history, its first life included.
    let track: serde_json::Value = http
        .get(format!("{}/api/ingress/v1/track/{after}", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(track["status"], "advertised", "{track}");
    assert_eq!(track["history"].as_array().unwrap().len(), 4, "{track}");
    drop(gw);
    n.cleanup().await;
}
