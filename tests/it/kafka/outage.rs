//! The broker stopped and started under the gateway: uploads are either announced
//! exactly once or refused with nothing kept; readiness follows the broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use super::support::*;
use super::{count_by_key, SVC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_during_a_broker_outage_are_announced_once_or_refused_with_nothing_kept() {
    const TOTAL: usize = 1000;
    const CLIENTS: usize = 4;
    let _broker = BROKER.write().await;
    let n = Names::new("outage");
    let mut flags = n.flags();
    flags.extend(["--kafka-publish-timeout-secs".to_string(), "3".into()]);
    let t = spawn_app(&as_strs(&flags)).await;

    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused_count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (next, accepted, base) = (next.clone(), accepted.clone(), t.base.clone());
        let refused_count = refused_count.clone();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TOTAL {
                    return results;
                }
                let id = format!("outage-{i:04}");
                let body = format!("payload {i}").repeat(50).into_bytes();
                let r = upload_to(&http, &base, SVC, Some(&id), body).await;
                let retry_after = r.headers().contains_key("retry-after");
                if r.status() == 202 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused_count.fetch_add(1, Ordering::Relaxed);
                }
                results.push((i, id, r.status().as_u16(), retry_after));
            }
        }));
    }
    // The outage, in the middle of the run.
    while accepted.load(Ordering::Relaxed) < TOTAL / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down_at = Instant::now();
    kafka_script(&["down"]).await;
    // The broker stays down until the outage has refused uploads (their delivery
    // reports timed out), then comes back while the clients go on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused_count.load(Ordering::Relaxed) < CLIENTS {
        assert!(Instant::now() < deadline, "no upload was refused within 60 s of the broker going down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kafka_script(&["up"]).await;
    let outage = down_at.elapsed();

    let mut results = Vec::new();
    for c in clients {
        results.extend(c.await.unwrap());
    }
    results.sort();
    let ok: Vec<&String> = results.iter().filter(|r| r.2 == 202).map(|r| &r.1).collect();
    let refused: Vec<&(usize, String, u16, bool)> = results.iter().filter(|r| r.2 != 202).collect();
    for r in &refused {
        assert_eq!(r.2, 503, "{} got {}, not 202 or 503", r.1, r.2);
        assert!(r.3, "{}: a 503 carries Retry-After", r.1);
    }
    assert_eq!(results.len(), TOTAL);
    assert!(!refused.is_empty(), "the outage refused no upload: it did not happen in the middle");
    let last_refused = refused.iter().map(|r| r.0).max().unwrap();
    assert!(
        results.iter().any(|r| r.0 > last_refused && r.2 == 202),
        "uploads are accepted again after the broker is back, without a gateway restart"
    );

    // Every 2xx has exactly one announce message; read the topic to its end.
    let counts = count_by_key(&read_all(&n.announce(SVC)).await);
    for id in &ok {
        assert_eq!(counts.get(*id), Some(&1), "{id} was accepted: announced exactly once");
    }
    // Every refused upload left nothing stored (removal runs just after the 503).
    let ok_set: std::collections::BTreeSet<String> = ok.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept: std::collections::BTreeSet<String> = t.bucket_files("quarantine").into_iter().collect();
        if kept == ok_set {
            break;
        }
        let extra: Vec<&String> = kept.difference(&ok_set).collect();
        let missing: Vec<&String> = ok_set.difference(&kept).collect();
        assert!(missing.is_empty(), "accepted payloads missing from quarantine: {missing:?}");
        assert!(Instant::now() < deadline, "refused uploads still stored: {extra:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stray = refused.iter().filter(|r| counts.contains_key(&r.1)).count();
    eprintln!(
        "outage run: {TOTAL} uploads from {CLIENTS} clients in {:?}; broker down+up took {outage:?}; \
         {} accepted, {} refused with 503; {stray} refused uploads had an announce reach the topic anyway \
         (delivery report lost in the outage)",
        started.elapsed(),
        ok.len(),
        refused.len()
    );
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

async fn health(t: &TestApp) -> i32 {
    let channel = tonic::transport::Channel::from_shared(t.base.clone()).unwrap().connect().await.unwrap();
    let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
    c.check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_ready_state(t: &TestApp, http: u16, grpc: tonic_health::ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let code = t.http.get(t.url("/readyz")).send().await.unwrap().status().as_u16();
        let h = health(t).await;
        if code == http && h == grpc as i32 {
            return;
        }
        assert!(Instant::now() < deadline, "readiness is {code} / gRPC health {h}, expected {http} / {grpc:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_and_grpc_health_follow_the_broker() {
    use tonic_health::ServingStatus::{NotServing, Serving};
    let _broker = BROKER.write().await;
    let n = Names::new("ready");
    let t = spawn_app(&as_strs(&n.flags())).await;
    wait_ready_state(&t, 200, Serving, Duration::from_secs(10)).await;
    kafka_script(&["down"]).await;
    wait_ready_state(&t, 503, NotServing, Duration::from_secs(15)).await;
    kafka_script(&["up"]).await;
    wait_ready_state(&t, 200, Serving, Duration::from_secs(30)).await;
    let r = upload(&t, SVC, None, b"after the outage".to_vec()).await;
    assert_eq!(r.status(), 202);
    t.app.stop().await.unwrap();
    n.cleanup().await;
}
