//! The queue on Kafka (rdkafka over a bundled librdkafka).
//!
//! - Publishing: one idempotent, acks=all producer ([`produce`]); `publish` returns
//!   once the delivery report says the message is written, or fails past the
//!   configured wait (librdkafka's `message.timeout.ms` is the same wait, so a message
//!   is not retried after its publish failed): `QueueUnavailable` when it was surely
//!   not written, `QueueUnconfirmed` when it timed out or its produce request was in
//!   flight, so the broker may have written it, `QueueRefused` when it can never be written.
//! - Consuming: one group member per (topic, group) in this process ([`group`]), with
//!   offsets committed only past acked messages.
//! - Topics are created at start-up when missing (admin API).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use super::{Message, Queue, Subscription};
use crate::config::{KafkaSettings, Settings};
use crate::error::{Error, Result};

mod group;
mod lookup;
pub mod validator;
mod offsets;
mod produce;
mod tail;

/// How long a readiness check waits for the broker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct KafkaQueue {
    settings: KafkaSettings,
    /// Options every client shares (brokers, extra settings).
    base: ClientConfig,
    producer: RwLock<produce::Producer>,
    /// A producer whose messages never time out (librdkafka retries them, idempotent,
    /// until the broker takes them): `publish_until_written`. Made when first used.
    patient: std::sync::OnceLock<produce::Producer>,
    /// Local group members, shared by the subscriptions of one (topic, group).
    members: Mutex<HashMap<(String, String), Weak<group::Shared>>>,
    /// A topic that exists, for the readiness round trip.
    probe_topic: String,
    /// Where failed publishes are counted, by kind.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A client's settings: the brokers and the operator's extra librdkafka settings
/// (SASL, TLS...).
pub(crate) fn client_config(brokers: &str, options: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in options {
        c.set(k, v);
    }
    c
}

impl KafkaQueue {
    /// Connects (lazily: librdkafka retries in the background) and checks the
    /// settings; an unknown librdkafka option is refused here.
    /// How many members the consumer group `group` has now (its own included), as the
    /// group's coordinator says. Blocking: call from a blocking task.
    pub fn group_members(settings: &KafkaSettings, group: &str) -> Result<usize> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = client_config(&settings.brokers, &settings.options)
            .create()
            .map_err(|e| Error::QueueUnavailable(format!("cannot create a Kafka client: {e}")))?;
        let list = consumer
            .fetch_group_list(Some(group), Duration::from_secs(5))
            .map_err(|e| Error::QueueUnavailable(format!("describing consumer group {group}: {e}")))?;
        Ok(list.groups().iter().find(|g| g.name() == group).map_or(0, |g| g.members().len()))
    }

    /// Counts failed publishes into `metrics` (`upload_gateway_kafka_produce_errors_total`).
    pub fn counting_into(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        KafkaQueue { metrics: Some(metrics), ..self }
    }

    pub fn new(settings: &KafkaSettings, probe_topic: &str) -> Result<Self> {
        let mut base = client_config(&settings.brokers, &settings.options);
        base.set("client.id", "upload-gateway")
            // Come back quickly after an outage.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            // Consumers: quick joins, read a new group from the oldest message,
            // modest prefetch.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("queued.min.messages", "1000");
        // The operator's own settings win.
        for (k, v) in &settings.options {
            base.set(k, v);
        }
        let producer = producer(&base, settings.publish_timeout)?;
        Ok(KafkaQueue {
            metrics: None,
            settings: settings.clone(),
            base,
            producer: RwLock::new(producer),
            patient: std::sync::OnceLock::new(),
            members: Mutex::new(HashMap::new()),
            probe_topic: probe_topic.to_string(),
        })
    }

    /// The topics the gateway reads and writes: validation, available, status, and
    /// each valid service's announce topic (or the single announce topic).
    pub fn topics(settings: &Settings) -> Vec<String> {
        let t = &settings.topics;
        let mut v = vec![t.validation.clone(), t.available.clone(), t.status.clone(), t.dead_letter.clone()];
        for s in &settings.valid_services {
            let a = t.announce(s);
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// Creates the topics that do not exist yet; existing ones are left as they are.
    pub async fn ensure_topics(&self, topics: &[String], timeout: Duration) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .base
            .create()
            .map_err(|e| Error::QueueUnavailable(format!("cannot create a Kafka admin client: {e}")))?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, self.settings.partitions, TopicReplication::Fixed(self.settings.replication)))
            .collect();
        let opts = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = admin
            .create_topics(new.iter(), &opts)
            .await
            .map_err(|e| Error::QueueUnavailable(format!("creating topics: {e}")))?;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(t) => created.push(t),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => {
                    return Err(Error::QueueUnavailable(format!("creating topic {t}: {e}")))
                }
            }
        }
        if !created.is_empty() {
            info!(topics = ?created, partitions = self.settings.partitions,
                replication = self.settings.replication, "created Kafka topics");
        }
        self.wait_visible(topics, timeout).await
    }

    /// Waits until the broker's metadata shows every topic with a leader for each
    /// partition: a topic just created takes a moment to propagate, and a producer
    /// that sees it come and go in the meantime is best not started on it.
    async fn wait_visible(&self, topics: &[String], timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for topic in topics {
            loop {
                let producer = self.producer();
                let t = topic.clone();
                let ready = tokio::task::spawn_blocking(move || {
                    let md = producer.client().fetch_metadata(Some(&t), CHECK_TIMEOUT).ok()?;
                    let found = md.topics().iter().find(|x| x.name() == t)?;
                    Some(
                        found.error().is_none()
                            && !found.partitions().is_empty()
                            && found.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0),
                    )
                })
                .await
                .ok()
                .flatten()
                .unwrap_or(false);
                if ready {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::QueueUnavailable(format!("topic {topic} is not available yet")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn producer(&self) -> produce::Producer {
        self.producer.read().unwrap().clone()
    }

    /// A producer that hit a fatal error (possible with idempotence) is replaced.
    fn replace_if_fatal(&self, failed: &produce::Producer) {
        if let Some((code, reason)) = failed.client().fatal_error() {
            warn!(?code, reason, "the Kafka producer failed fatally; making a new one");
            match producer(&self.base, self.settings.publish_timeout) {
                Ok(p) => *self.producer.write().unwrap() = p,
                Err(e) => warn!(error = %e, "cannot make a new Kafka producer"),
            }
        }
    }
}

fn producer(base: &ClientConfig, publish_timeout: Duration) -> Result<produce::Producer> {
    let mut c = base.clone();
    // Options set by the user for consumers only would make librdkafka warn here;
    // the consumer settings above are dropped from the producer's copy.
    for k in ["session.timeout.ms", "heartbeat.interval.ms", "auto.offset.reset", "queued.min.messages"] {
        c.remove(k);
    }
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // One produce request in flight per broker: a later request cannot overtake
        // an earlier one that the broker refused (e.g. a partition it has not taken
        // the lead of yet), which can lose the earlier one silently (KAFKA-15591).
        // Concurrent uploads still share each request.
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", publish_timeout.as_millis().to_string());
    produce::create(&c)
}

#[async_trait::async_trait]
impl Queue for KafkaQueue {
    async fn publish(&self, message: Message) -> Result<()> {
        let producer = self.producer();
        let published = produce::publish(&producer, &message, self.settings.publish_timeout).await;
        if let Err(e) = &published {
            self.replace_if_fatal(&producer);
            if let Some(m) = &self.metrics {
                m.kafka_error(match e {
                    crate::error::Error::QueueRefused(_) => "refused",
                    crate::error::Error::QueueUnconfirmed(_) => "possibly_persisted",
                    _ => "not_persisted",
                });
            }
        }
        published
    }

    async fn publish_until_written(&self, message: Message) -> Result<()> {
        let patient = match self.patient.get() {
            Some(p) => p.clone(),
            // `message.timeout.ms` 0: no timeout.
            None => {
                let made = producer(&self.base, Duration::ZERO)?;
                self.patient.get_or_init(|| made).clone()
            }
        };
        produce::publish(&patient, &message, Duration::from_secs(365 * 86_400)).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription> {
        let key = (topic.to_string(), group.to_string());
        let mut members = self.members.lock().unwrap();
        if let Some(shared) = members.get(&key).and_then(Weak::upgrade) {
            if shared.join() {
                return Ok(group::subscription(shared));
            }
        }
        let shared = group::start(&self.base, topic, group)?;
        members.retain(|_, w| w.strong_count() > 0);
        members.insert(key, Arc::downgrade(&shared));
        Ok(group::subscription(shared))
    }

    async fn tail(&self, topic: &str, since: Duration) -> Result<Subscription> {
        tail::start(&self.base, topic, since).await
    }

    async fn written_since(&self, topic: &str, key: &str, since: Duration) -> Result<bool> {
        lookup::written_since(&self.base, topic, key, since).await
    }

    async fn check(&self) -> Result<()> {
        let producer = self.producer();
        let topic = self.probe_topic.clone();
        let probe = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), CHECK_TIMEOUT).map(|_| ())
        });
        match probe.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::QueueUnavailable(format!("Kafka does not answer: {e}"))),
            Err(e) => Err(Error::Internal(format!("readiness probe: {e}"))),
        }
    }

    fn durable(&self) -> bool {
        true
    }

    async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| Error::Internal(format!("flush: {e}")))?
            .map_err(|e| Error::QueueUnavailable(format!("flushing the Kafka producer: {e}")))
    }
}

/// Whether the broker (or the producer's own checks) refused a message in a way that
/// sending it again cannot change: too large, or not a valid record.
pub(super) fn refused_for_good(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessage | C::InvalidMessageSize | C::InvalidRecord)
    )
}
