//! Kafka fixtures for the tests: unique topic names, an independent reader of whole
//! topics, a producer playing the validator, and the broker's stop/start script.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::common::{self, TestApp};

pub fn brokers() -> String {
    crate::common::required_env("TEST_KAFKA_BROKERS")
}

/// Only one test at a time stops the broker; the others hold it up meanwhile.
pub static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Topic names and a consumer group of one test's own.
#[derive(Clone)]
pub struct Names {
    pub validation: String,
    pub available: String,
    pub status: String,
    pub prefix: String,
    pub group: String,
}

impl Names {
    pub fn new(tag: &str) -> Self {
        let sfx = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let base = format!("test.{tag}.{sfx}");
        Names {
            validation: format!("{base}.validation"),
            available: format!("{base}.available"),
            status: format!("{base}.status"),
            prefix: format!("{base}.upload."),
            group: format!("{base}.gateway"),
        }
    }

    pub fn announce(&self, service: &str) -> String {
        format!("{}{service}", self.prefix)
    }

    /// The gateway flags that point it at the broker and at these names.
    pub fn flags(&self) -> Vec<String> {
        let mut v = vec!["--kafka-brokers".to_string(), brokers()];
        v.extend(self.topic_flags());
        v
    }

    /// The flags for these names alone (the broker set some other way).
    pub fn topic_flags(&self) -> Vec<String> {
        [
            "--validation-topic",
            &self.validation,
            "--available-topic",
            &self.available,
            "--status-topic",
            &self.status,
            "--announce-topic-prefix",
            &self.prefix,
            "--consumer-group",
            &self.group,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(
            // KAFKA_TEST_DEBUG=eos,msg,... turns on librdkafka's debug logs in the gateway.
            std::env::var("KAFKA_TEST_DEBUG")
                .ok()
                .into_iter()
                .flat_map(|d| ["--kafka-option".to_string(), format!("debug={d}")]),
        )
        .collect()
    }
}

impl Names {
    /// Deletes the test's topics, so the shared broker stays small (its shutdown and
    /// restart slow down with every topic it holds).
    pub async fn cleanup(&self) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = config().create().unwrap();
        let mut topics = vec![self.validation.clone(), self.available.clone(), self.status.clone()];
        for s in ["advisor", "compliance", "hccm", "qpc", "testareno", "announce"] {
            topics.push(self.announce(s));
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = admin.delete_topics(&names, &opts).await {
            eprintln!("could not delete the test topics: {e}");
        }
    }
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One message as read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("the gateway writes JSON")
    }
}

pub fn config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers());
    c
}

/// Every message of a topic from the oldest to the newest, read partition by
/// partition without a consumer group (so it changes nothing for the gateway).
pub fn read_all_blocking(topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = config()
        .set("enable.auto.commit", "false")
        .set("group.id", "unused-assign-only")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    // A topic just created may not have its leaders yet: ask again for a while.
    let deadline = Instant::now() + timeout;
    let (tpl, mut ends) = loop {
        match watermarks(&consumer, topic, timeout) {
            Ok(w) => break w,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading {topic}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("cannot read {topic}: {e}"),
        }
    };
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "could not read {topic} to its end within 30 s");
        let Some(m) = consumer.poll(Duration::from_millis(500)) else { continue };
        let m = m.expect("read a message");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    out
}

/// Where each partition of a topic starts and ends.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<(TopicPartitionList, HashMap<i32, i64>)> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok((tpl, ends));
    };
    for p in t.partitions() {
        let (lo, hi) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if hi > lo {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))?;
            ends.insert(p.id(), hi);
        }
    }
    Ok((tpl, ends))
}

pub async fn read_all(topic: &str) -> Vec<Record> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_all_blocking(&topic)).await.unwrap()
}

/// The messages of one request id on a topic.
pub async fn records_for(topic: &str, id: &str) -> Vec<Record> {
    read_all(topic).await.into_iter().filter(|r| r.key == id).collect()
}

/// Waits until a topic holds at least `n` messages keyed `id`, and returns them.
pub async fn wait_records(topic: &str, id: &str, n: usize, within: Duration) -> Vec<Record> {
    let deadline = Instant::now() + within;
    loop {
        let got = records_for(topic, id).await;
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{topic}: {} of {n} messages for {id} within {within:?}", got.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A producer playing a validator.
pub struct Validator(FutureProducer);

impl Validator {
    pub fn new() -> Self {
        Validator(config().set("message.timeout.ms", "10000").create().unwrap())
    }

    /// One that may send messages up to `max_bytes` (librdkafka refuses anything over
    /// 1 MB by default, before the broker sees it).
    pub fn sending_up_to(max_bytes: usize) -> Self {
        let max = max_bytes.to_string();
        Validator(config().set("message.timeout.ms", "10000").set("message.max.bytes", &max).create().unwrap())
    }

    /// Sends raw bytes (or nothing: a tombstone) with an optional key.
    pub async fn send_raw(&self, topic: &str, key: Option<&str>, payload: Option<&[u8]>) {
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(p) = payload {
            r = r.payload(p);
        }
        self.0.send(r, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("validator message written");
    }

    pub async fn send(&self, topic: &str, key: &str, value: &Value) {
        self.send_raw(topic, Some(key), Some(&serde_json::to_vec(value).unwrap())).await
    }
}

/// Creates a topic of one partition with these settings (before the gateway would
/// create it with the broker's defaults).
pub async fn create_topic(name: &str, settings: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = config().create().unwrap();
    let topic = settings.iter().fold(NewTopic::new(name, 1, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v));
    let made = admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await.unwrap();
    assert!(made[0].is_ok(), "creating {name}: {made:?}");
}

/// Runs `scripts/kafka.sh <args>` and fails the test if it fails.
pub async fn kafka_script(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "scripts/kafka.sh {args:?} failed");
}

pub const IDENTITY_ACCOUNT: &str = "0001234";
pub const IDENTITY_ORG: &str = "5556789";
pub const METADATA: &str = r#"{"display_name":"host-1","branch_info":{"remote_leaf":-1}}"#;

/// An upload the way the real client sends one: identity, a metadata part, the
/// service's content type.
pub fn client_upload(service: &str, id: Option<&str>, body: Vec<u8>) -> common::Upload {
    let u = common::Upload::new(&format!("application/vnd.redhat.{service}.collection+tgz"), body)
        .file_name("insights-archive.tar.gz")
        .metadata(METADATA)
        .identity(IDENTITY_ACCOUNT, IDENTITY_ORG);
    match id {
        Some(id) => u.request_id(id),
        None => u,
    }
}

pub async fn upload(t: &TestApp, service: &str, id: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    client_upload(service, id, body).send(&t.http, &t.base).await
}

pub async fn upload_to(
    http: &reqwest::Client,
    base: &str,
    service: &str,
    id: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    client_upload(service, id, body).send(http, base).await
}

/// Waits until a bucket folder holds a file.
pub async fn wait_file(data: &std::path::Path, bucket: &str, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !crate::common::list_bucket(data, bucket).iter().any(|f| f == id) {
        assert!(Instant::now() < deadline, "{id} did not reach {bucket} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a timestamp is RFC 3339 in UTC.
pub fn assert_utc_rfc3339(v: &Value, what: &str) {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: not a string: {v}"));
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{what}: {s:?}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "{what}: {s:?} is not UTC");
}

/// Waits until consumer group `group` has committed every message of `topic` (its
/// committed offset is the end of each partition). The gateway commits only past
/// messages it has handled, so this is the positive marker that everything on the
/// topic was handled: what re-reading could have done twice has been done by then.
pub async fn wait_committed_to_end(topic: &str, group: &str, within: Duration) {
    let (topic, group) = (topic.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config().set("group.id", &group).set("enable.auto.commit", "false").create().unwrap();
        let deadline = Instant::now() + within;
        loop {
            let (_, ends) = watermarks(&consumer, &topic, Duration::from_secs(10)).expect("topic watermarks");
            let mut tpl = TopicPartitionList::new();
            for p in ends.keys() {
                tpl.add_partition(&topic, *p);
            }
            let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
            let behind: Vec<String> = ends
                .iter()
                .filter(|(p, end)| match committed.find_partition(&topic, **p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o < **end,
                    _ => true,
                })
                .map(|(p, end)| format!("partition {p} (end {end})"))
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{group} has not committed {topic} to its end: {behind:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap()
}

/// Waits until consumer group `group` has no members (the last one left): a new
/// member then starts from the group's committed offsets, without a rebalance with
/// the one that left.
pub async fn wait_group_empty(group: &str, within: Duration) {
    let group = group.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config().create().unwrap();
        let deadline = Instant::now() + within;
        loop {
            let list = consumer.fetch_group_list(Some(&group), Duration::from_secs(10)).expect("group list");
            let members = list.groups().iter().find(|g| g.name() == group).map_or(0, |g| g.members().len());
            if members == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{group} still has {members} members after {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}
