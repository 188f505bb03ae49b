//! Whether a message with a given key was written to a topic lately: its partitions
//! read in no consumer group, each from its first message at or after a moment (the
//! broker's time index) to its end as it was when asked. Rare (a verdict applied again
//! after its replica died), so a consumer of its own each time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use super::tail::{times_since, ungrouped};
use crate::error::{Error, Result};

/// How long a look may take before it is given up (and the verdict tried again later).
const LOOK_FOR: Duration = Duration::from_secs(15);
/// The broker's answer to one metadata or offsets request.
const ASK: Duration = Duration::from_secs(10);

pub(super) async fn written_since(base: &ClientConfig, topic: &str, key: &str, since: Duration) -> Result<bool> {
    let mut config = ungrouped(base, "lookup");
    config.set("enable.partition.eof", "true");
    let (topic, key) = (topic.to_string(), key.to_string());
    tokio::task::spawn_blocking(move || look(config, &topic, &key, since))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

fn look(config: ClientConfig, topic: &str, key: &str, since: Duration) -> Result<bool> {
    let unavailable = |what: &str, e: KafkaError| Error::QueueUnavailable(format!("looking for {key} on {topic}: {what}: {e}"));
    let consumer: BaseConsumer = config.create().map_err(|e| unavailable("a reader", e))?;
    let metadata = consumer.fetch_metadata(Some(topic), ASK).map_err(|e| unavailable("its partitions", e))?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let starts = consumer.offsets_for_times(times_since(topic, partitions, since)?, ASK).map_err(|e| unavailable("offsets by time", e))?;
    // Each partition that has messages since then, up to its end now.
    let (mut assigned, mut ends) = (TopicPartitionList::new(), HashMap::new());
    for e in starts.elements() {
        let Offset::Offset(start) = e.offset() else { continue };
        let (_, end) = consumer.fetch_watermarks(topic, e.partition(), ASK).map_err(|e| unavailable("its end", e))?;
        if start < end {
            assigned.add_partition_offset(topic, e.partition(), Offset::Offset(start)).map_err(|e| unavailable("a partition", e))?;
            ends.insert(e.partition(), end);
        }
    }
    if ends.is_empty() {
        return Ok(false);
    }
    consumer.assign(&assigned).map_err(|e| unavailable("reading", e))?;
    let deadline = Instant::now() + LOOK_FOR;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::QueueUnavailable(format!("looking for {key} on {topic}: not read to its end within {LOOK_FOR:?}")));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            // Its end (what the watermark said, or past a gap in its offsets).
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => return Err(unavailable("reading", e)),
            Some(Ok(m)) => {
                if m.key() == Some(key.as_bytes()) {
                    return Ok(true);
                }
                if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    Ok(false)
}
