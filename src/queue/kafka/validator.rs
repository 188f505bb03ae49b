//! A platform validator's side of Kafka, with rdkafka directly (no gateway in
//! between): read one service's announcements in a consumer group, answer each on
//! the validation topic. For `upload-gateway validate --via kafka`.
//!
//! One announcement at a time: its offset is stored only after its verdict's delivery
//! report, and stored offsets are committed in the background, so a validator that
//! dies re-reads at most the few last announcements (verdicts are idempotent).

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::messages::Announce;

/// Where the validator reads and writes.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub brokers: String,
    /// Extra librdkafka settings (SASL, TLS...).
    pub options: Vec<(String, String)>,
    pub service: String,
    /// `platform.upload.<service>`, or the single announce topic.
    pub announce_topic: String,
    pub validation_topic: String,
    pub group: String,
}

/// One announcement to decide.
#[derive(Debug, Clone)]
pub struct Announcement {
    pub announce: Announce,
    /// The message as it stood on the topic (echoed back with the verdict).
    pub raw: Value,
    /// The announcement's W3C `traceparent` header: sent on with the verdict, so the
    /// gateway's work on it joins the payload's trace.
    pub traceparent: Option<String>,
    partition: i32,
    offset: i64,
}

pub struct ValidatorLink {
    consumer: StreamConsumer,
    producer: FutureProducer,
    config: LinkConfig,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::QueueUnavailable(format!("{what}: {e}"))
}

impl ValidatorLink {
    pub fn connect(config: LinkConfig) -> Result<Self> {
        let mut base = super::client_config(&config.brokers, &config.options);
        let consumer: StreamConsumer = base
            .clone()
            .set("group.id", &config.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .create()
            .map_err(|e| unavailable("Kafka consumer", e))?;
        consumer
            .subscribe(&[&config.announce_topic])
            .map_err(|e| unavailable("subscribing", e))?;
        let producer: FutureProducer = base
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| unavailable("Kafka producer", e))?;
        Ok(ValidatorLink { consumer, producer, config })
    }

    /// The next announcement of the service. Messages for other services (on a single
    /// announce topic) and unreadable ones are skipped and marked done.
    pub async fn next(&self) -> Result<Announcement> {
        loop {
            let m = self.consumer.recv().await.map_err(|e| unavailable("reading announcements", e))?;
            let (partition, offset) = (m.partition(), m.offset());
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let (service, traceparent) = (header("service"), header("traceparent"));
            let parsed = m.payload().and_then(|p| {
                let raw: Value = serde_json::from_slice(p).ok()?;
                let announce: Announce = serde_json::from_value(raw.clone()).ok()?;
                Some((raw, announce))
            });
            match parsed {
                Some((raw, announce))
                    if service.as_deref().unwrap_or(&announce.service) == self.config.service =>
                {
                    return Ok(Announcement { announce, raw, traceparent, partition, offset })
                }
                Some(_) => {}
                None => tracing::warn!(partition, offset, "skipping an unreadable announcement"),
            }
            self.done(partition, offset);
        }
    }

    /// Sends the verdict (`success`, `failure` or `handoff`) echoing the announcement,
    /// waits until it is written, then marks the announcement done.
    pub async fn answer(&self, a: &Announcement, validation: &str, reason: Option<&str>) -> Result<()> {
        let mut msg = a.raw.clone();
        if let Some(obj) = msg.as_object_mut() {
            obj.insert("validation".into(), validation.into());
            if let Some(r) = reason {
                obj.insert("reason".into(), r.into());
            }
        }
        let payload = serde_json::to_vec(&msg).map_err(|e| Error::Internal(e.to_string()))?;
        let key = a.announce.request_id.as_str();
        let mut record = FutureRecord::to(&self.config.validation_topic).key(key).payload(&payload);
        if let Some(t) = &a.traceparent {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header { key: "traceparent", value: Some(t.as_bytes()) }));
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| unavailable("sending the verdict", e))?;
        self.done(a.partition, a.offset);
        Ok(())
    }

    fn done(&self, partition: i32, offset: i64) {
        // Stores offset + 1; committed with the next automatic commit.
        if let Err(e) = self.consumer.store_offset(&self.config.announce_topic, partition, offset) {
            tracing::debug!(error = %e, "offset not stored (partition moved to another member)");
        }
    }
}
