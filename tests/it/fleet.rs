//! Several gateways on one Kafka and one S3 server behave as one (issue 12, its first
//! part): a verdict is applied once, whichever replica it reaches. Two different
//! verdicts for one payload, sent at the same moment to two gateway processes, give one
//! outcome and at most one `available`; the other verdict is answered ALREADY_DECIDED
//! with what was decided. On MinIO, which honours conditional writes (README "Trust").

use std::time::Duration;

use crate::common::pb::verdict_ack::Outcome;
use crate::common::s3::*;
use crate::common::*;
use crate::kafka::support::{records_for, Names, BROKER, IDENTITY_ACCOUNT, IDENTITY_ORG};

const ADVISOR: &str = "application/vnd.redhat.advisor.fleet+tgz";

/// Two gateway processes on one Kafka (topics of the test's own) and one S3 server
/// (MinIO, buckets of the test's own): a fleet of two.
async fn fleet_on_minio(tag: &str) -> (Names, S3Env, Buckets, GatewayProcess, GatewayProcess) {
    let (n, env, buckets, flags) = fleet_flags(tag, &[]);
    let (a, b) = two_gateways(&flags).await;
    (n, env, buckets, a, b)
}

/// A fleet's names, its MinIO, buckets and the replicas' flags (Kafka, S3, `extra`).
fn fleet_flags(tag: &str, extra: &[&str]) -> (Names, S3Env, Buckets, Vec<String>) {
    let n = Names::new(tag);
    let env = S3Env::minio_from_test_env();
    let buckets = Buckets::unique(tag);
    let mut flags = s3_flags(&env, &buckets, &as_strs(&n.flags()));
    flags.extend(extra.iter().map(|s| s.to_string()));
    (n, env, buckets, flags)
}

/// The statuses of a payload's history as `track` on the gateway at `base` tells them
/// (to the payload's org); asserts the answer is 200.
async fn history_on(http: &reqwest::Client, base: &str, id: &str) -> Vec<String> {
    let r = http
        .get(format!("{base}/api/ingress/v1/track/{id}"))
        .header("x-rh-identity", identity(IDENTITY_ACCOUNT, IDENTITY_ORG))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "track {id} on {base}");
    let v: serde_json::Value = r.json().await.unwrap();
    v["history"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_string()).collect()
}

/// One verdict over gRPC to the gateway at `base` (its own validator token), its ack.
async fn verdict(base: &str, data: &std::path::Path, id: &str, validation: &str) -> (Outcome, String) {
    let mut client = grpc_client(base, data).await;
    let v = pb::Verdict { request_id: id.into(), validation: validation.into(), reason: "fleet test".into(), ..Default::default() };
    let mut acks = client.validation_result(futures_util::stream::iter(vec![v])).await.expect("ValidationResult").into_inner();
    let ack = acks.message().await.expect("an ack").expect("one ack");
    (Outcome::try_from(ack.outcome).expect("a known outcome"), ack.message)
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_verdicts_on_two_gateways_give_one_outcome_and_one_available() {
    let _broker = BROKER.read().await;
    let (n, env, buckets, a, b) = fleet_on_minio("fleet").await;
    let s3 = env.client();
    let http = reqwest::Client::new();

    for round in 0..6 {
        let id = format!("fleet-{round:02}-00000000000000000000000001");
        Upload::new(ADVISOR, format!("payload {round}").into_bytes()).request_id(&id).accepted(&http, &a.base).await;
        // success to one replica, failure to the other, at the same moment (which gets
        // which alternates).
        let (to_success, to_failure) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (s, f) = tokio::join!(
            verdict(&to_success.base, &to_success.data, &id, "success"),
            verdict(&to_failure.base, &to_failure.data, &id, "failure"),
        );
        let outcomes = [s.0, f.0];
        let applied: Vec<_> = outcomes.iter().filter(|o| matches!(o, Outcome::Promoted | Outcome::Rejected)).collect();
        assert_eq!(applied.len(), 1, "round {round}: exactly one verdict applied: {s:?} {f:?}");
        let loser = if matches!(s.0, Outcome::Promoted) { &f } else { &s };
        assert_eq!(loser.0, Outcome::AlreadyDecided, "round {round}: the other is ALREADY_DECIDED: {s:?} {f:?}");
        let promoted = s.0 == Outcome::Promoted;
        let decided = if promoted { "success" } else { "failure" };
        assert!(loser.1.contains(decided) || loser.1.contains(if promoted { "perm" } else { "reject" }), "round {round}: it says what was decided: {}", loser.1);

        // One outcome in the buckets: the winner's, and nothing left in quarantine.
        let (in_perm, in_reject, in_quarantine) = (
            exists(&s3, &buckets.perm, &id).await,
            exists(&s3, &buckets.reject, &id).await,
            exists(&s3, &buckets.quarantine, &id).await,
        );
        assert_eq!((in_perm, in_reject, in_quarantine), (promoted, !promoted, false), "round {round}: where the payload is");
        // The same verdict again, on either replica: already decided, nothing published.
        let again = verdict(&to_success.base, &to_success.data, &id, "success").await;
        assert_eq!(again.0, Outcome::AlreadyDecided, "round {round}: a repeated verdict: {again:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let available = records_for(&n.available, &id).await.len();
        assert_eq!(available, usize::from(promoted), "round {round}: `available` published once if promoted, never if rejected");
    }
    drop((a, b));
    n.cleanup().await;
}

/// Kafka with local-disk storage is one replica: the gateway says so at start-up, and
/// when a second one joins its consumer group, says that in a warning.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_replica_on_local_disk_is_warned_about() {
    let _broker = BROKER.read().await;
    let n = Names::new("fleetlocal");
    let (a, b) = two_gateways(&n.flags()).await;
    let said = |p: &GatewayProcess, what: &str| p.log_lines().iter().any(|l| l.contains(what));
    for p in [&a, &b] {
        assert!(said(p, "a single-replica setup"), "the start-up warning names the setup:\n{}", p.log_lines().join("\n"));
    }
    eventually(Duration::from_secs(30), "a replica warns that another shares its consumer group", || async {
        said(&a, "another replica shares this consumer group") || said(&b, "another replica shares this consumer group")
    })
    .await;
    drop((a, b));
    n.cleanup().await;
}

/// A fleet rests on conditional writes: a gateway with Kafka on an S3 store that ignores
/// them (Garage 2.5.0) says so at start-up, with what to do; on one that honours them
/// (MinIO) it says nothing of the kind.
#[tokio::test]
async fn a_store_that_ignores_conditional_writes_is_warned_about() {
    let _broker = BROKER.read().await;
    let warning = "this S3 store ignores conditional writes";
    let n = Names::new("condgarage");
    let data = tempfile::tempdir().unwrap();
    let flags = s3_flags(&S3Env::from_test_env(), &Buckets::unique("condgarage"), &as_strs(&n.flags()));
    let garage = tokio::task::spawn_blocking({
        let d = data.path().to_path_buf();
        move || GatewayProcess::start(&d, &as_strs(&flags))
    })
    .await
    .unwrap();
    let said = garage.log_lines().iter().any(|l| l.contains(warning) && l.contains("run one replica"));
    assert!(said, "the warning on Garage:\n{}", garage.log_lines().join("\n"));
    let (m, _env, _buckets, a, b) = fleet_on_minio("condminio").await;
    for p in [&a, &b] {
        assert!(!p.log_lines().iter().any(|l| l.contains(warning)), "no such warning on MinIO:\n{}", p.log_lines().join("\n"));
    }
    drop((garage, a, b));
    n.cleanup().await;
    m.cleanup().await;
}

/// A payload held for a subscriber on one replica is released as soon as its verdict
/// lands on another (via the status topic every replica reads), not after the
/// visibility timeout: 40 payloads go through one subscriber that holds at most 16,
/// with every verdict sent to the other replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_on_another_replica_releases_the_subscribers_hold_at_once() {
    use tokio_stream::StreamExt as _;
    let _broker = BROKER.read().await;
    let (n, _env, _buckets, a, b) = fleet_on_minio("fleethold").await;
    let mut work = grpc_client(&a.base, &a.data)
        .await
        .subscribe(pb::SubscribeRequest { service: "advisor".into() })
        .await
        .expect("Subscribe on A")
        .into_inner();
    const PAYLOADS: usize = 40;
    let http = reqwest::Client::new();
    for i in 0..PAYLOADS {
        Upload::new(ADVISOR, format!("held {i}").into_bytes()).accepted(&http, &a.base).await;
    }
    let started = std::time::Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < PAYLOADS {
        let next = tokio::time::timeout(Duration::from_secs(60), work.next()).await;
        let item = next.unwrap_or_else(|_| panic!("stalled after {} payloads: holds not released by verdicts on B", seen.len()));
        let item = item.expect("the stream goes on").expect("work");
        let id = item.request_id;
        if seen.insert(id.clone()) {
            let (outcome, msg) = verdict(&b.base, &b.data, &id, "success").await;
            assert_eq!(outcome, Outcome::Promoted, "{id}: {msg}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120), "40 payloads took {:?}", started.elapsed());
    drop((a, b));
    n.cleanup().await;
}

/// The held-payloads gauge of one gateway for advisor.
async fn held(base: &str) -> u64 {
    metric_at(base, "upload_gateway_held_payloads{service=\"advisor\"}").await as u64
}

/// Issue 12, part 2: a rebalance that moves partitions to another replica lets go of
/// their payloads where they were held, so each payload is held by one subscriber at a
/// time. A's subscriber holds all 16 payloads; a subscriber on B joins the group; the
/// payloads of the partitions B now owns reach B's subscriber, and A holds only the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_lets_go_of_the_payloads_whose_partitions_moved() {
    use tokio_stream::StreamExt as _;
    let _broker = BROKER.read().await;
    let (n, _env, _buckets, a, b) = fleet_on_minio("fleetrebal").await;
    let mut on_a = grpc_client(&a.base, &a.data)
        .await
        .subscribe(pb::SubscribeRequest { service: "advisor".into() })
        .await
        .expect("Subscribe on A")
        .into_inner();
    const PAYLOADS: usize = 16;
    let http = reqwest::Client::new();
    for i in 0..PAYLOADS {
        Upload::new(ADVISOR, format!("rebalanced {i}").into_bytes()).accepted(&http, &a.base).await;
    }
    let mut held_by_a = std::collections::BTreeSet::new();
    while held_by_a.len() < PAYLOADS {
        let item = tokio::time::timeout(Duration::from_secs(60), on_a.next()).await.expect("A gets every payload");
        held_by_a.insert(item.expect("the stream goes on").expect("work").request_id);
    }
    assert_eq!(held(&a.base).await, PAYLOADS as u64);

    let mut on_b = grpc_client(&b.base, &b.data)
        .await
        .subscribe(pb::SubscribeRequest { service: "advisor".into() })
        .await
        .expect("Subscribe on B")
        .into_inner();
    let mut held_by_b = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), on_b.next()).await {
            held_by_b.insert(item.expect("work").request_id);
        }
        let (ha, hb) = (held(&a.base).await, held(&b.base).await);
        if !held_by_b.is_empty() && ha + hb == PAYLOADS as u64 && hb == held_by_b.len() as u64 {
            assert!(held_by_b.is_subset(&held_by_a), "B got only what A had held");
            assert_eq!(ha as usize, PAYLOADS - held_by_b.len(), "A let go of exactly what moved to B");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 90 s: A holds {ha}, B holds {hb} ({} received): the moved payloads are held twice or not at all",
            held_by_b.len()
        );
    }
    drop((on_a, on_b, a, b));
    n.cleanup().await;
}

/// Status is the same on every replica, read from S3: `track` on B right after A's 2xx
/// has the upload's history; `WatchStatus` on B follows to its end a payload decided on
/// A; after a restart B still tells the whole history; and the replicas leave no
/// consumer group of their own on the broker (they read the status topic from its end,
/// in no group), only the verdict group they share.
#[tokio::test(flavor = "multi_thread")]
async fn status_is_the_same_on_every_replica_right_after_the_2xx() {
    use tokio_stream::StreamExt as _;
    let _broker = BROKER.read().await;
    let (n, env, buckets, a, b) = fleet_on_minio("fleetstatus").await;
    let http = reqwest::Client::new();
    for round in 0..5 {
        let id = format!("fleetstatus-{round:02}-000000000000000000000001");
        Upload::new(ADVISOR, b"status everywhere".to_vec())
            .request_id(&id)
            .identity(IDENTITY_ACCOUNT, IDENTITY_ORG)
            .accepted(&http, &a.base)
            .await;
        // Read your writes, on the other replica, at once.
        assert_eq!(history_on(&http, &b.base, &id).await, ["received", "announced"], "round {round}");
    }

    // Watched on B, decided on A: B's stream goes to the end.
    let id = "fleetstatus-00-000000000000000000000001";
    let mut watch = grpc_client(&b.base, &b.data)
        .await
        .watch_status(pb::StatusRequest { request_id: id.into() })
        .await
        .expect("WatchStatus on B")
        .into_inner();
    assert_eq!(verdict(&a.base, &a.data, id, "success").await.0, Outcome::Promoted);
    let seen: Vec<String> = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Some(e) = watch.next().await {
            seen.push(e.expect("a status event").status);
        }
        seen
    })
    .await
    .expect("WatchStatus on B ends after the payload is advertised on A");
    assert_eq!(seen, ["received", "announced", "success", "advertised"]);
    assert_eq!(history_on(&http, &b.base, &id).await, ["received", "announced", "success", "advertised"]);

    // A new replica, started after all this, tells the same at once.
    let flags = s3_flags(&env, &buckets, &as_strs(&n.flags()));
    let (c, d) = two_gateways(&flags).await;
    drop(d);
    assert_eq!(history_on(&http, &c.base, &id).await, ["received", "announced", "success", "advertised"]);
    assert_eq!(history_on(&http, &c.base, "fleetstatus-01-000000000000000000000001").await, ["received", "announced"]);

    // On the broker: the verdict group, and no group per replica.
    let groups = consumer_groups().await;
    let base = n.group.trim_end_matches(".gateway");
    let ours: Vec<&String> = groups.iter().filter(|g| g.starts_with(base) || g.contains(".tail.")).collect();
    assert_eq!(ours, [&n.group], "consumer groups on the broker: {groups:?}");
    drop((a, b, c));
    n.cleanup().await;
}

/// Every consumer group the broker knows.
async fn consumer_groups() -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    tokio::task::spawn_blocking(|| {
        let consumer: BaseConsumer = crate::kafka::support::config().create().unwrap();
        let list = consumer.fetch_group_list(None, Duration::from_secs(10)).expect("the broker lists its groups");
        list.groups().iter().map(|g| g.name().to_string()).collect()
    })
    .await
    .unwrap()
}

/// The quarantine sweep judges from S3 and what the replicas heard on the status
/// topic: two replicas sweeping every 3 s announce a payload stored and never announced
/// exactly once between them, store the `announced` event of a payload that waits for
/// its verdict, and never announce again one that was announced, handed off or decided.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_sweeping_announce_a_never_announced_payload_once() {
    use base64::Engine as _;
    let _broker = BROKER.read().await;
    let (n, env, buckets, flags) = fleet_flags("fleetsweep", &["--quarantine-sweep-secs", "3", "--kafka-publish-timeout-secs", "2"]);
    let (a, b) = two_gateways(&flags).await;
    let (s3, http) = (env.client(), reqwest::Client::new());
    let ids: Vec<String> = ["waiting", "handoff", "decided"].iter().map(|k| format!("fleetsweep-{k}-0000000000000000001")).collect();
    for id in &ids {
        Upload::new(ADVISOR, id.clone().into_bytes()).request_id(id).accepted(&http, &a.base).await;
    }
    assert_eq!(verdict(&b.base, &b.data, &ids[1], "handoff").await.0, Outcome::HandedOff);
    assert_eq!(verdict(&b.base, &b.data, &ids[2], "success").await.0, Outcome::Promoted);
    // The orphan: a payload stored as the gateway stores one (its meta in the object's
    // user metadata), whose announcement nobody made or heard, as if its replica had
    // been killed before the broker confirmed it.
    let orphan = "fleetsweep-orphan-0000000000000000001";
    let head = s3.head_object().bucket(&buckets.quarantine).key(&ids[0]).send().await.unwrap();
    let mut md = head.metadata().cloned().unwrap_or_default();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut meta: serde_json::Value = serde_json::from_slice(&engine.decode(&md["gateway-meta"]).unwrap()).unwrap();
    meta["request_id"] = serde_json::json!(orphan);
    md.insert("gateway-meta".into(), engine.encode(serde_json::to_vec(&meta).unwrap()));
    let body = ids[0].clone().into_bytes();
    s3.put_object().bucket(&buckets.quarantine).key(orphan).set_metadata(Some(md)).body(body.into()).send().await.unwrap();

    let announce = n.announce("advisor");
    eventually(Duration::from_secs(30), "the orphan announced by a sweep", || async { records_for(&announce, orphan).await.len() >= 1 }).await;
    eventually(Duration::from_secs(10), "the waiting payload's announced event stored by a sweep", || async {
        history_names(&s3, &buckets.quarantine, &ids[0]).await == ["announced"]
    })
    .await;
    // Several more sweeps of both replicas.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(records_for(&announce, orphan).await.len(), 1, "the orphan: one sweep's announcement, of two replicas sweeping");
    for id in &ids {
        assert_eq!(records_for(&announce, id).await.len(), 1, "{id}: announced, handed off or decided: never again");
    }
    assert_eq!(history_names(&s3, &buckets.quarantine, orphan).await, ["announced", "sweep-claim-0001"], "one claim, one announcement");
    let sweepers = [&a, &b].iter().filter(|p| p.log_lines().iter().any(|l| l.contains("announced payloads found stored but unannounced"))).count();
    assert_eq!(sweepers, 1, "one replica announced it");
    drop((a, b));
    n.cleanup().await;
}

/// Three gateway processes on one Kafka and one S3 server (MinIO), each call to a
/// replica picked at random: uploads, `track` right after each 2xx, verdicts over
/// gRPC (to a random replica) and over Kafka; one `Subscribe` on A takes 200 payloads,
/// holding at most 16, each released at once by its verdict wherever it landed (far
/// inside the 300 s visibility timeout). Then all three replicas restart: every
/// history is whole on any of them, and no decided payload is announced again.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_behave_as_one_gateway() {
    use tokio_stream::StreamExt as _;
    let _broker = BROKER.read().await;
    let (n, env, buckets, flags) = fleet_flags("fleet3", &["--quarantine-sweep-secs", "3", "--kafka-publish-timeout-secs", "2"]);
    let start3 = |flags: Vec<String>| async move {
        let ((a, b), (c, d)) = tokio::join!(two_gateways(&flags), two_gateways(&flags));
        drop(d);
        [a, b, c]
    };
    let fleet = start3(flags.clone()).await;
    let http = reqwest::Client::new();
    let pick = |fleet: &[GatewayProcess; 3]| -> usize { (uuid::Uuid::new_v4().as_u128() % fleet.len() as u128) as usize };

    let mut on_a = grpc_client(&fleet[0].base, &fleet[0].data)
        .await
        .subscribe(pb::SubscribeRequest { service: "advisor".into() })
        .await
        .expect("Subscribe on A")
        .into_inner();
    const PAYLOADS: usize = 200;
    let mut ids = Vec::new();
    for i in 0..PAYLOADS {
        let id = format!("fleet3-{i:04}-0000000000000000000001");
        let to = &fleet[pick(&fleet)];
        Upload::new(ADVISOR, format!("fleet of three, {i}").into_bytes())
            .request_id(&id)
            .identity(IDENTITY_ACCOUNT, IDENTITY_ORG)
            .accepted(&http, &to.base)
            .await;
        let other = &fleet[pick(&fleet)];
        assert_eq!(history_on(&http, &other.base, &id).await, ["received", "announced"], "{id} on another replica at once");
        ids.push(id);
    }

    let started = std::time::Instant::now();
    let (kafka, mut seen) = (crate::kafka::support::Validator::new(), std::collections::BTreeSet::new());
    while seen.len() < PAYLOADS {
        let next = tokio::time::timeout(Duration::from_secs(60), on_a.next()).await;
        let item = next.unwrap_or_else(|_| panic!("stalled after {} payloads", seen.len()));
        let id = item.expect("the stream goes on").expect("work").request_id;
        assert!(seen.insert(id.clone()), "{id} delivered twice");
        if seen.len() % 2 == 0 {
            let to = &fleet[pick(&fleet)];
            let (outcome, msg) = verdict(&to.base, &to.data, &id, "success").await;
            assert_eq!(outcome, Outcome::Promoted, "{id}: {msg}");
        } else {
            kafka.send(&n.validation, &id, &serde_json::json!({"request_id": id, "validation": "success"})).await;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(150), "{PAYLOADS} payloads took {:?}", started.elapsed());
    let s3 = env.client();
    eventually(Duration::from_secs(60), "every payload in perm", || async { keys_but_history(&s3, &buckets.quarantine).await.is_empty() }).await;

    // All three restart.
    drop(on_a);
    drop(fleet);
    let fleet = start3(flags.clone()).await;
    for id in &ids {
        let on = &fleet[pick(&fleet)];
        assert_eq!(history_on(&http, &on.base, &id).await, ["received", "announced", "success", "advertised"], "{id} after the restart");
    }
    // Sweeps (every 3 s) of three replicas have passed: nothing announced again, and
    // each payload advertised once.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let count = |records: Vec<crate::kafka::support::Record>| {
        let mut by_id = std::collections::HashMap::<String, usize>::new();
        for r in records {
            *by_id.entry(r.key).or_default() += 1;
        }
        by_id
    };
    let announced = count(crate::kafka::support::read_all(&n.announce("advisor")).await);
    let available = count(crate::kafka::support::read_all(&n.available).await);
    for id in &ids {
        assert_eq!(announced.get(id), Some(&1), "{id} announced once");
        assert_eq!(available.get(id), Some(&1), "{id} advertised once");
    }
    drop(fleet);
    n.cleanup().await;
}
