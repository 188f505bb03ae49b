//! Publishing with an answer that tells a refusal from an unknown outcome.
//!
//! librdkafka's delivery report says whether a failed message may have been written
//! anyway: a message that timed out while its produce request was in flight (sent, the
//! broker's answer not back) is "possibly persisted", one that never left the client
//! (broker unreachable, queue full, refused outright) is "not persisted". The
//! FutureProducer drops that status, so the gateway's producer keeps it: its delivery
//! callback reads `rd_kafka_message_status` and hands it to the waiting publish. A
//! message that timed out counts as possibly written whatever that status says.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use rdkafka::bindings::{rd_kafka_message_status, rd_kafka_msg_status_t};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use super::super::Message;
use crate::error::{Error, Result};

/// The gateway's producer (cheap to clone: one librdkafka handle and poll thread).
pub type Producer = std::sync::Arc<ThreadedProducer<Reports>>;

/// A delivery report: written, or why not and whether it may have been written anyway.
type Report = std::result::Result<(), (KafkaError, bool)>;

/// Hands each delivery report to the publish waiting for it.
pub struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<Report>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let report = match result {
            Ok(_) => Ok(()),
            Err((e, m)) => {
                // SAFETY: the message is the one this report is about, alive for the
                // duration of the callback; the call only reads its status.
                let status = unsafe { rd_kafka_message_status(m.ptr()) };
                Err((e.clone(), status != rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED))
            }
        };
        let _ = tx.send(report); // the publish may have stopped waiting
    }
}

pub fn create(config: &ClientConfig) -> Result<Producer> {
    config
        .create_with_context(Reports)
        .map(std::sync::Arc::new)
        .map_err(|e| Error::QueueUnavailable(format!("cannot create a Kafka producer: {e}")))
}

/// Publishes and waits for the delivery report, at most `wait` (librdkafka's
/// `message.timeout.ms` is the same wait) plus a second for a report that never comes.
/// `QueueUnavailable` (or `QueueRefused`, for good) when the message was surely not
/// written, `QueueUnconfirmed` when it may have been.
pub async fn publish(producer: &Producer, message: &Message, wait: Duration) -> Result<()> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (k, v) in &message.headers {
        headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
    }
    let (tx, rx) = oneshot::channel();
    let mut record = BaseRecord::with_opaque_to(&message.topic, Box::new(tx))
        .key(message.key.as_bytes())
        .payload(&message.payload[..])
        .headers(headers);
    let topic = &message.topic;
    let started = Instant::now();
    // Enqueue; a full local queue is waited out within `wait` (nothing was sent).
    loop {
        match producer.send(record) {
            Ok(()) => break,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) if started.elapsed() < wait => {
                record = r;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((e, _)) => return Err(not_written(topic, &e)),
        }
    }
    match tokio::time::timeout(wait + Duration::from_secs(1), rx).await {
        Ok(Ok(Ok(()))) => Ok(()),
        // A message that timed out is not taken as surely unwritten even when
        // librdkafka says "not persisted": our broker-outage tests saw such a message
        // on the topic afterwards (the idempotent producer, its request cut off by
        // the broker stopping). Kept and marked instead, it is announced by the sweep.
        Ok(Ok(Err((e, false)))) if !timed_out(&e) => Err(not_written(topic, &e)),
        Ok(Ok(Err((e, _)))) => Err(Error::QueueUnconfirmed(format!(
            "publishing to {topic}: {e}, while the broker may have written it"
        ))),
        Ok(Err(_)) | Err(_) => Err(Error::QueueUnconfirmed(format!(
            "publishing to {topic}: no delivery report within {wait:?}"
        ))),
    }
}

fn timed_out(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut)
}

/// A message surely not written: refused for good (too large, invalid), or not now.
fn not_written(topic: &str, e: &KafkaError) -> Error {
    if super::refused_for_good(e) {
        Error::QueueRefused(format!("publishing to {topic}: {e}"))
    } else {
        Error::QueueUnavailable(format!("publishing to {topic}: {e}"))
    }
}
