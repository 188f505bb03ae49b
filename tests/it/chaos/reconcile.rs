//! What the run left, seen by independent clients: the keys in the quarantine bucket
//! (aws-sdk-s3), the keys on the announce topic (rdkafka, read to its end), and for
//! the embedded default the quarantine folder and what a gRPC subscriber is given.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::common::pb;

/// What an S3 quarantine bucket holds: the keys of visible payloads, and the keys
/// that have the gateway's meta (a `.meta/<key>.json` sidecar, or the meta a small
/// payload carries in its own user metadata).
pub async fn s3_stored(c: &aws_sdk_s3::Client, bucket: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut payloads, mut sidecars) = (BTreeSet::new(), BTreeSet::new());
    let mut token: Option<String> = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token.clone())
            .send()
            .await
            .expect("list the quarantine bucket");
        for k in page.contents().iter().filter_map(|o| o.key()) {
            match k.strip_prefix(".meta/") {
                Some(m) => sidecars.insert(m.strip_suffix(".json").unwrap_or(m).to_string()),
                None => payloads.insert(k.to_string()),
            };
        }
        token = page.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // A small payload carries its meta in itself (one PutObject): it counts as having one.
    for k in payloads.difference(&sidecars.clone()).cloned().collect::<Vec<_>>() {
        if crate::common::s3::inline_meta(c, bucket, &k).await.is_some() {
            sidecars.insert(k);
        }
    }
    (payloads, sidecars)
}

/// The keys of every message on a topic, read partition by partition to the end
/// without a consumer group.
pub fn topic_keys(brokers: &str, topic: &str) -> BTreeSet<String> {
    topic_key_counts(brokers, topic).into_keys().collect()
}

/// How many messages each key has on a topic, read as [`topic_keys`] reads it.
pub fn topic_key_counts(brokers: &str, topic: &str) -> HashMap<String, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.auto.commit", "false")
        .set("group.id", "chaos-reconcile-assign-only")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
        for p in t.partitions() {
            let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout).expect("watermarks");
            if hi > lo {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo)).unwrap();
                ends.insert(p.id(), hi);
            }
        }
    }
    let mut keys = HashMap::new();
    if ends.is_empty() {
        return keys;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "could not read {topic} to its end within 60 s");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.expect("read a message");
        *keys.entry(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned()).or_insert(0) += 1;
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    keys
}

/// The request ids a gRPC subscriber of `service` is given, handing each off (so
/// the lease is settled and the next comes), until `want` are all seen or nothing
/// new comes for `idle`.
pub async fn subscribed_ids(base: &str, data: &std::path::Path, service: &str, want: &BTreeSet<String>, idle: Duration) -> BTreeSet<String> {
    let mut client = crate::common::grpc_client(base, data).await;
    let mut work = client
        .subscribe(pb::SubscribeRequest { service: service.into() })
        .await
        .expect("subscribe")
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<pb::Verdict>();
    let mut acks = client
        .validation_result(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("verdict stream")
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = acks.message().await {} });
    let mut seen = BTreeSet::new();
    while !want.is_subset(&seen) {
        match tokio::time::timeout(idle, work.message()).await {
            Ok(Ok(Some(a))) => {
                let _ = tx.send(pb::Verdict {
                    request_id: a.request_id.clone(),
                    validation: "handoff".into(),
                    reason: "chaos reconciliation".into(),
                    ..Default::default()
                });
                seen.insert(a.request_id);
            }
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(e)) => panic!("subscription failed: {e}"),
        }
    }
    seen
}
