//! The embedded queue: topics in process, bounded, with Kafka's consumer-group
//! semantics (each group reads the whole topic; a message goes to one member of a
//! group; an unacked delivery is given out again).
//!
//! Past its cap a topic drops its oldest message: never silently. Each drop is counted
//! (`upload_gateway_dropped_messages_total{topic}`) and logged (the first of a topic,
//! then every thousandth). A dropped announcement is not lost for good: the gateway
//! announces what quarantine holds again at its next start.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Delivery, Message, Queue, Subscription};
use crate::error::Result;
use crate::metrics::Metrics;

/// Messages kept per topic; past it the oldest are dropped (and counted).
pub const DEFAULT_RETENTION: usize = 100_000;

#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    retention: usize,
    /// Where drops are counted, when set.
    metrics: Option<Arc<Metrics>>,
    topics: Mutex<HashMap<String, Topic>>,
    /// Woken whenever a topic gets a message or a delivery comes back.
    notify: Notify,
}

#[derive(Default)]
struct Topic {
    log: VecDeque<Message>,
    /// Offset of `log[0]`.
    base: u64,
    dropped: u64,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    next: u64,
    redeliver: BTreeSet<u64>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl MemoryQueue {
    pub fn new(retention: usize) -> Self {
        MemoryQueue {
            inner: Arc::new(Inner {
                retention: retention.max(1),
                metrics: None,
                topics: Mutex::new(HashMap::new()),
                notify: Notify::new(),
            }),
        }
    }

    /// Counts drops in `metrics` too (call before the queue is shared).
    pub fn counting_into(mut self, metrics: Arc<Metrics>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = Some(metrics);
        }
        self
    }

    /// Messages dropped from a topic because it was full.
    pub fn dropped(&self, topic: &str) -> u64 {
        self.inner
            .topics
            .lock()
            .unwrap()
            .get(topic)
            .map_or(0, |t| t.dropped)
    }
}

impl Inner {
    /// The next message for a group, if any: first what came back, then what is new.
    fn take(self: &Arc<Self>, topic: &str, group: &str) -> Option<Delivery> {
        let mut topics = self.topics.lock().unwrap();
        let t = topics.get_mut(topic)?;
        let base = t.base;
        let end = base + t.log.len() as u64;
        let g = t.groups.get_mut(group)?;
        let offset = loop {
            match g.redeliver.pop_first() {
                Some(o) if o < base => continue,
                Some(o) => break o,
                None if g.next < base => g.next = base,
                None if g.next < end => {
                    g.next += 1;
                    break g.next - 1;
                }
                None => return None,
            }
        };
        let message = t.log[(offset - base) as usize].clone();
        let inner = Arc::clone(self);
        let (topic, group) = (topic.to_string(), group.to_string());
        Some(Delivery::new(message, move |acked| {
            if !acked {
                inner.give_back(&topic, &group, offset)
            }
        }))
    }

    fn give_back(&self, topic: &str, group: &str, offset: u64) {
        if let Some(g) = self
            .topics
            .lock()
            .unwrap()
            .get_mut(topic)
            .and_then(|t| t.groups.get_mut(group))
        {
            g.redeliver.insert(offset);
        }
        self.notify.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Queue for MemoryQueue {
    async fn publish(&self, message: Message) -> Result<()> {
        {
            let mut topics = self.inner.topics.lock().unwrap();
            let t = topics.entry(message.topic.clone()).or_default();
            t.log.push_back(message);
            while t.log.len() > self.inner.retention {
                let Some(old) = t.log.pop_front() else { break };
                t.base += 1;
                t.dropped += 1;
                if let Some(m) = &self.inner.metrics {
                    m.dropped_message(&old.topic);
                }
                if t.dropped % 1000 == 1 {
                    tracing::warn!(topic = %old.topic, dropped = t.dropped, cap = self.inner.retention,
                        "the in-process queue is full: dropped its oldest message (consumers too slow, or none)");
                }
            }
        }
        self.inner.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription> {
        {
            let mut topics = self.inner.topics.lock().unwrap();
            let t = topics.entry(topic.to_string()).or_default();
            let base = t.base;
            t.groups.entry(group.to_string()).or_insert_with(|| Group {
                next: base,
                redeliver: BTreeSet::new(),
            });
        }
        let inner = Arc::clone(&self.inner);
        let (topic, group) = (topic.to_string(), group.to_string());
        Ok(Box::pin(futures_util::stream::unfold(
            (inner, topic, group),
            |(inner, topic, group)| async move {
                loop {
                    let waker = Arc::clone(&inner);
                    let notified = waker.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if let Some(d) = inner.take(&topic, &group) {
                        return Some((Ok(d), (inner, topic, group)));
                    }
                    notified.await;
                }
            },
        )))
    }

    /// (It keeps no times: any message still kept.)
    async fn written_since(&self, topic: &str, key: &str, _since: Duration) -> Result<bool> {
        let topics = self.inner.topics.lock().unwrap();
        Ok(topics.get(topic).is_some_and(|t| t.log.iter().any(|m| m.key == key)))
    }

    async fn tail(&self, topic: &str, _since: Duration) -> Result<Subscription> {
        // A group of its own that starts at the end of the topic.
        let group = format!(".tail.{}", uuid::Uuid::new_v4().simple());
        {
            let mut topics = self.inner.topics.lock().unwrap();
            let t = topics.entry(topic.to_string()).or_default();
            let end = t.base + t.log.len() as u64;
            t.groups.insert(group.clone(), Group { next: end, redeliver: BTreeSet::new() });
        }
        self.subscribe(topic, &group).await
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    fn durable(&self) -> bool {
        false
    }

    async fn flush(&self, _: Duration) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_tail_reads_what_comes_after_it() {
        let q = MemoryQueue::default();
        q.publish(msg("before")).await.unwrap();
        let mut tail = q.tail("t", Duration::ZERO).await.unwrap();
        q.publish(msg("after")).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(1), tail.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(d.message.key, "after");
        // A group reading the whole topic is not disturbed by it.
        let mut group = q.subscribe("t", "g").await.unwrap();
        assert_eq!(group.next().await.unwrap().unwrap().message.key, "before");
    }

    fn msg(key: &str) -> Message {
        Message {
            topic: "t".into(),
            key: key.into(),
            headers: vec![],
            payload: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn each_message_goes_to_one_member_and_unacked_ones_come_back() {
        let q = MemoryQueue::default();
        let mut a = q.subscribe("t", "g").await.unwrap();
        let mut b = q.subscribe("t", "g").await.unwrap();
        q.publish(msg("1")).await.unwrap();
        q.publish(msg("2")).await.unwrap();
        let d1 = a.next().await.unwrap().unwrap();
        let d2 = b.next().await.unwrap().unwrap();
        assert_eq!((d1.message.key.as_str(), d2.message.key.as_str()), ("1", "2"));
        d2.ack();
        drop(d1); // not acked: goes out again
        let again = b.next().await.unwrap().unwrap();
        assert_eq!(again.message.key, "1");
    }

    #[tokio::test]
    async fn groups_each_read_everything_and_retention_is_bounded() {
        let metrics = Arc::new(Metrics::default());
        let q = MemoryQueue::new(2).counting_into(metrics.clone());
        for k in ["1", "2", "3", "4"] {
            q.publish(msg(k)).await.unwrap();
        }
        assert_eq!(q.dropped("t"), 2);
        assert_eq!(metrics.get("upload_gateway_dropped_messages_total", "t"), 2);
        assert!(metrics.render().contains("upload_gateway_dropped_messages_total{topic=\"t\"} 2"));
        for g in ["x", "y"] {
            let mut s = q.subscribe("t", g).await.unwrap();
            let first = s.next().await.unwrap().unwrap();
            assert_eq!(first.message.key, "3");
            first.ack();
        }
    }
}
