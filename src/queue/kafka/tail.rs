//! A topic read in full from a moment on (its end, or a little before), in no consumer
//! group: each replica reads every status event this way. Its partitions are assigned, not subscribed, so the broker
//! keeps no group for it (a restart leaves nothing behind) and nothing is committed.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::group::owned;
use crate::error::{Error, Result};
use crate::queue::{Delivery, Subscription};

/// A reader's settings: librdkafka assigns partitions only to a consumer with a group
/// id; one that never joins (assign, not subscribe) nor commits leaves no trace of it on
/// the broker. `purpose` names it (`tail`, `lookup`).
pub(super) fn ungrouped(base: &ClientConfig, purpose: &str) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", format!("upload-gateway.{purpose}.{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

/// Partitions `0..partitions` of `topic`, each at the moment `since` ago (in ms since
/// the epoch), for `offsets_for_times`: the broker's time index answers each with its
/// first message at or after then.
pub(super) fn times_since(topic: &str, partitions: i32, since: Duration) -> Result<TopicPartitionList> {
    let from = std::time::SystemTime::now()
        .checked_sub(since)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut times = TopicPartitionList::new();
    for p in 0..partitions {
        times
            .add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(|e| Error::Internal(format!("assigning {topic}/{p}: {e}")))?;
    }
    Ok(times)
}

pub(super) async fn start(base: &ClientConfig, topic: &str, since: Duration) -> Result<Subscription> {
    let consumer: StreamConsumer = ungrouped(base, "tail")
        .create()
        .map_err(|e| Error::QueueUnavailable(format!("cannot create a Kafka reader of {topic}: {e}")))?;
    let consumer = Arc::new(consumer);
    let (c, t) = (consumer.clone(), topic.to_string());
    let partitions = tokio::task::spawn_blocking(move || {
        c.fetch_metadata(Some(&t), Duration::from_secs(10))
            .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
    .map_err(|e| Error::QueueUnavailable(format!("partitions of {topic}: {e}")))?;
    if partitions == 0 {
        return Err(Error::QueueUnavailable(format!("topic {topic} has no partitions yet")));
    }
    // Each partition from its first message at or after `since` ago; where there is
    // none, from its end.
    let times = times_since(topic, partitions as i32, since)?;
    let c = consumer.clone();
    let found = tokio::task::spawn_blocking(move || c.offsets_for_times(times, Duration::from_secs(10)))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::QueueUnavailable(format!("offsets of {topic} by time: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    for e in found.elements() {
        let at = match e.offset() {
            Offset::Offset(o) if since > Duration::ZERO => Offset::Offset(o),
            _ => Offset::End,
        };
        tpl.add_partition_offset(topic, e.partition(), at)
            .map_err(|e| Error::Internal(format!("assigning {topic}: {e}")))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::QueueUnavailable(format!("reading {topic}: {e}")))?;
    Ok(Box::pin(futures_util::stream::unfold(consumer, |c| async move {
        let item = match c.recv().await {
            Ok(m) => Ok(Delivery::new(owned(&m), |_| {})),
            Err(e) => Err(Error::QueueUnavailable(format!("reading a topic from its end: {e}"))),
        };
        Some((item, c))
    })))
}
