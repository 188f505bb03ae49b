//! The broker stopped and started (or paused) under the gateway: uploads are either
//! announced exactly once, or refused with nothing kept, or (the broker's confirmation
//! not back in time) refused and kept, then announced by the quarantine sweep; never an
//! announcement without its payload. Readiness follows the broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;
use super::support::*;
use super::{count_by_key, SVC, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_during_a_broker_outage_are_announced_once_or_refused_with_nothing_kept() {
    const TOTAL: usize = 1000;
    const CLIENTS: usize = 4;
    let _broker = BROKER.write().await;
    let n = Names::new("outage");
    let mut flags = n.flags();
    flags.extend(["--kafka-publish-timeout-secs", "3", "--quarantine-sweep-secs", "4"].map(String::from));
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

    // Every 2xx has exactly one announce message; read the topic to its end. A refused
    // upload is either gone and unannounced (the broker surely did not write it), or
    // kept and announced: the sweep announces what the broker may have written, so no
    // announcement points at nothing. Removal and the sweep run after the 503: ask again.
    let ok_set: BTreeSet<String> = ok.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (counts, kept) = loop {
        let counts = count_by_key(&read_all(&n.announce(SVC)).await);
        let stored: BTreeSet<String> = t.bucket_files("quarantine").into_iter().collect();
        let missing: Vec<&String> = ok_set.difference(&stored).collect();
        assert!(missing.is_empty(), "accepted payloads missing from quarantine: {missing:?}");
        for id in &ok {
            assert_eq!(counts.get(*id), Some(&1), "{id} was accepted: announced exactly once");
        }
        let kept: BTreeSet<String> = stored.difference(&ok_set).cloned().collect();
        let phantoms: Vec<&String> = refused.iter().map(|r| &r.1).filter(|id| counts.contains_key(*id) && !kept.contains(*id)).collect();
        assert!(phantoms.is_empty(), "refused, announced, and not stored: {phantoms:?}");
        let unannounced: Vec<&String> = kept.iter().filter(|id| !counts.contains_key(*id)).collect();
        if unannounced.is_empty() {
            break (counts, kept);
        }
        assert!(Instant::now() < deadline, "refused uploads stored and not announced: {unannounced:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "outage run: {TOTAL} uploads from {CLIENTS} clients in {:?}; broker down+up took {outage:?}; \
         {} accepted, {} refused with 503; {} of those kept (unconfirmed) and announced ({} times in all)",
        started.elapsed(),
        ok.len(),
        refused.len(),
        kept.len(),
        kept.iter().map(|id| counts[id]).sum::<usize>()
    );
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

/// Resumes a paused broker when dropped, so a failing test leaves it running.
struct Paused(bool);

impl Paused {
    async fn start() -> Paused {
        kafka_script(&["pause"]).await;
        Paused(true)
    }

    async fn resume(mut self) {
        self.0 = false;
        kafka_script(&["resume"]).await;
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.0 {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
            let _ = std::process::Command::new("bash").arg(script).arg("resume").status();
        }
    }
}

/// The ambiguous produce (issue 18), made deterministic: the producer's connection is
/// up, the broker is paused (SIGSTOP), the announcement's produce request goes out and
/// its answer is held back past the publish timeout. The client gets 503; the payload
/// stays in quarantine, marked unconfirmed; once the broker is back the quarantine
/// sweep announces it, and each announcement of it leads to the stored payload.
#[tokio::test]
async fn an_unconfirmed_announcement_keeps_its_payload_and_the_sweep_announces_it() {
    let _broker = BROKER.write().await;
    let n = Names::new("unconfirmed");
    let mut flags = n.flags();
    flags.extend(["--kafka-publish-timeout-secs", "2", "--quarantine-sweep-secs", "3"].map(String::from));
    let t = spawn_app(&as_strs(&flags)).await;
    let warm = upload(&t, SVC, Some("unconfirmed-warm"), b"the connection is up".to_vec()).await;
    assert_eq!(warm.status(), 202);
    // Its status messages delivered too: no other produce request is in flight (one
    // at a time per connection), so the next one is sent as soon as it is made.
    wait_records(&n.status, "unconfirmed-warm", 2, WAIT).await;

    let id = "unconfirmed-1";
    let body = b"announced while the broker was paused".repeat(100);
    let paused = Paused::start().await;
    let asked = Instant::now();
    let r = upload(&t, SVC, Some(id), body.clone()).await;
    let took = asked.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let said = r.text().await.unwrap();
    eprintln!("unconfirmed: the 503 said {said:?}");
    assert!(took < Duration::from_secs(10), "the 503 came after {took:?}");
    // Kept, and marked in its meta.
    assert!(t.bucket_files("quarantine").iter().any(|f| f == id), "the payload is kept");
    let meta = crate::common::local_meta(t.data.path(), "quarantine", id).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert!(meta["unconfirmed"].is_string(), "{meta}");
    paused.resume().await;

    // The sweep announces it: its status says so (the upload recorded none).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !records_for(&n.status, id).await.iter().any(|r| r.json()["status"] == "announced") {
        assert!(Instant::now() < deadline, "the sweep did not announce {id}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let recs = wait_records(&n.announce(SVC), id, 1, Duration::from_secs(10)).await;
    for rec in &recs {
        let ann = rec.json();
        assert_eq!(ann["sha256"], sha256_hex(&body));
        let got = t.http.get(ann["url"].as_str().unwrap()).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice(), "the announcement leads to the payload");
    }
    assert!(t.bucket_files("quarantine").iter().any(|f| f == id), "still stored");
    eprintln!(
        "unconfirmed: 503 after {took:?}; announced {} time(s) (2: the broker wrote the first one too)",
        recs.len()
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
