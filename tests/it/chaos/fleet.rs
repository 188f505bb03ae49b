//! The chaos run's fleet mode (issue 12): three gateway replicas on one Kafka and one
//! S3, uploads spread over them, while replicas are SIGKILLed and restarted and Kafka
//! and S3 (MinIO) go down and come back; a validator answers every announcement, half over
//! Kafka and half over gRPC to a replica picked at random. Beside the single gateway's
//! tally (nothing accepted lost, nothing announced without its payload), it counts:
//! `available` messages per request id (at most one), payloads with a verdict still in
//! quarantine at the end (none), and decided payloads announced again after all three
//! replicas restart (none).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use super::clients::SERVICE;
use super::{blocking, drive, live, reconcile, tally, uncaptured, Cloud, Gateway, Run, SeedOnFailure, Tally};
use crate::common::pb;

const REPLICAS: usize = 3;

/// What the fleet mode adds to the tally.
#[derive(Debug, Default)]
pub(super) struct FleetTally {
    pub base: Tally,
    pub verdicts: usize,
    pub duplicate_available: Vec<String>,
    pub decided_in_quarantine: Vec<String>,
    pub reannounced: Vec<String>,
}

impl FleetTally {
    pub fn assert_clean(&self) {
        let seed = self.base.seed;
        self.base.assert_clean();
        assert!(self.verdicts > 0, "seed {seed}: no verdict was sent: the run measured nothing");
        assert!(self.duplicate_available.is_empty(), "seed {seed}: advertised twice: {:?}", self.duplicate_available);
        assert!(self.decided_in_quarantine.is_empty(), "seed {seed}: decided, yet in quarantine: {:?}", self.decided_in_quarantine);
        assert!(self.reannounced.is_empty(), "seed {seed}: decided, then announced again: {:?}", self.reannounced);
    }
}

pub(super) async fn fleet_run(name: &str, run: Run) -> FleetTally {
    let _seed = SeedOnFailure::announce(name, run.seed);
    // MinIO: replicas decide a payload's fate with conditional writes, which Garage
    // ignores (README, "Trust").
    let (cloud, flags) = Cloud::start(crate::common::s3::PrivateS3::minio).await;
    let dirs: Vec<tempfile::TempDir> = (0..REPLICAS).map(|_| tempfile::tempdir().unwrap()).collect();
    let paths: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let started = Instant::now();
    let gateway = blocking({
        let paths = paths.clone();
        move || Gateway::fleet(paths, flags)
    })
    .await;
    let stop = CancellationToken::new();
    let decided: Arc<Mutex<BTreeMap<String, &'static str>>> = Arc::default();
    let validator = tokio::spawn(validate(cloud.clone(), gateway.bases.clone(), paths.clone(), decided.clone(), stop.clone()));
    let (outcomes, faults, gateway) = drive(&run, gateway, Some(cloud.clone())).await;
    let took = started.elapsed();

    // Everything up again: every replica restarted, then the validator's verdicts run out.
    let mut gateway = gateway.restart_for_the_tally().await;
    let s3 = cloud.s3.env.client();
    let announce_topic = cloud.topic(&format!("upload.{SERVICE}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let (t, in_quarantine) = loop {
        let (stored, traces, quarantine) = stored_anywhere(&s3, &cloud).await;
        let (brokers, topic) = (cloud.kafka.brokers.clone(), announce_topic.clone());
        let announced = blocking(move || reconcile::topic_keys(&brokers, &topic)).await;
        let t = tally(run.seed, &outcomes, &stored, &traces, &announced);
        let waiting = announced.iter().filter(|id| quarantine.contains(*id)).count();
        let settled = t.lost.is_empty() && t.refused_left.is_empty() && t.unknown_ends.1 == 0 && waiting == 0;
        if settled || Instant::now() > deadline {
            break (t, quarantine);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let count = |topic: String| {
        let brokers = cloud.kafka.brokers.clone();
        blocking(move || reconcile::topic_key_counts(&brokers, &topic))
    };
    let announcements = count(announce_topic.clone()).await;
    // All three restart once more, and sweep (every 4 s) a few times.
    gateway.kill();
    gateway = blocking(move || {
        gateway.restart();
        gateway
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let again = count(announce_topic).await;
    let available = count(cloud.topic("available")).await;
    stop.cancel();
    let _ = validator.await;
    let decided = decided.lock().unwrap().clone();
    let mut f = FleetTally { verdicts: decided.len(), ..Default::default() };
    for (id, n) in &available {
        if *n > 1 {
            f.duplicate_available.push(format!("{id} ({n} times)"));
        }
    }
    for id in decided.keys() {
        if in_quarantine.contains(id) {
            f.decided_in_quarantine.push(id.clone());
        }
        let (before, after) = (announcements.get(id).copied().unwrap_or(0), again.get(id).copied().unwrap_or(0));
        if after > before {
            f.reannounced.push(format!("{id} ({before} then {after})"));
        }
    }
    t.print(name, &run, took, &faults);
    uncaptured(&format!(
        "chaos {name}: {REPLICAS} replicas · verdicts sent {} (Kafka and gRPC) · advertised twice {} · decided yet in quarantine {} · decided, then announced again {}\n",
        f.verdicts,
        f.duplicate_available.len(),
        f.decided_in_quarantine.len(),
        f.reannounced.len()
    ));
    f.base = t;
    gateway.kill();
    drop(gateway);
    super::delete_buckets(&s3, &cloud.buckets).await;
    f
}

/// Payloads stored (with the gateway's meta) in any bucket, anything left in any, and
/// the payloads in quarantine.
async fn stored_anywhere(s3: &aws_sdk_s3::Client, cloud: &Cloud) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let b = &cloud.buckets;
    let (mut stored, mut traces, mut quarantine) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for bucket in [&b.quarantine, &b.perm, &b.reject] {
        let (payloads, metas) = reconcile::s3_stored(s3, bucket).await;
        // The payloads' histories (`.status/<id>/...`) are neither.
        let payloads: BTreeSet<String> = payloads.into_iter().filter(|k| !k.starts_with('.')).collect();
        if bucket == &b.quarantine {
            quarantine.extend(payloads.iter().cloned());
        }
        stored.extend(payloads.intersection(&metas).cloned());
        traces.extend(payloads.union(&metas).cloned());
    }
    (stored, traces, quarantine)
}

/// The validator: reads the announce topic in a group of its own and answers each
/// payload once, success or failure by its id, over Kafka or over gRPC to a running
/// replica (Kafka when that replica cannot be reached), until `stop`.
async fn validate(
    cloud: Arc<Cloud>,
    bases: Arc<RwLock<Vec<Option<String>>>>,
    data: Vec<std::path::PathBuf>,
    decided: Arc<Mutex<BTreeMap<String, &'static str>>>,
    stop: CancellationToken,
) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cloud.kafka.brokers)
        .set("group.id", cloud.topic("validator"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let topic = cloud.topic(&format!("upload.{SERVICE}"));
    consumer.subscribe(&[&topic]).unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &cloud.kafka.brokers).create().unwrap();
    let validation = cloud.topic("validation");
    let mut n = 0usize;
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = consumer.recv() => m,
        };
        let id = match m {
            Ok(m) => String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if id.is_empty() || decided.lock().unwrap().contains_key(&id) {
            continue; // announced again: answered already
        }
        let digits: usize = id.bytes().map(usize::from).sum();
        let verdict = if digits % 2 == 0 { "success" } else { "failure" };
        n += 1;
        let over_grpc = n % 2 == 0 && send_grpc(&bases, &data, n, &id, verdict).await;
        if !over_grpc {
            let body = serde_json::json!({ "request_id": id, "validation": verdict }).to_string();
            loop {
                let sent = producer.send(FutureRecord::to(&validation).key(&id).payload(&body), Duration::from_secs(10)).await;
                if sent.is_ok() || stop.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        decided.lock().unwrap().insert(id, verdict);
    }
}

/// One verdict over gRPC to a running replica; false when it did not get an answer
/// that settles it (the replica is down or went down, or S3 was away: retry).
async fn send_grpc(bases: &RwLock<Vec<Option<String>>>, data: &[std::path::PathBuf], n: usize, id: &str, verdict: &str) -> bool {
    let Some(base) = live(bases, n) else { return false };
    let Some(i) = bases.read().unwrap().iter().position(|b| b.as_deref() == Some(base.as_str())) else { return false };
    let Ok(channel) = tonic::transport::Channel::from_shared(base).unwrap().connect().await else { return false };
    let token = crate::common::validator_token(&data[i]);
    let mut client = upload_gateway::validator::connect::client(channel, &token).unwrap();
    let v = pb::Verdict { request_id: id.into(), validation: verdict.into(), reason: "chaos fleet".into(), ..Default::default() };
    let Ok(acks) = client.validation_result(futures_util::stream::iter(vec![v])).await else { return false };
    let Ok(Some(ack)) = acks.into_inner().message().await else { return false };
    use pb::verdict_ack::Outcome;
    matches!(Outcome::try_from(ack.outcome), Ok(Outcome::Promoted | Outcome::Rejected | Outcome::AlreadyDecided))
}
