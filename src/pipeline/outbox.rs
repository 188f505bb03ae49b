//! Messages that must go out after the client's 2xx (status, and nothing else yet):
//! retried until delivered, in order per request id, counted. A message the queue
//! refuses for good (too large, invalid) is not retried: it goes to the dead-letter
//! topic (or, failing that, is dropped with an error log), counted, and the messages
//! behind it go on.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::queue::{Message, Queue};

/// How much of a refused message's payload the dead-letter message keeps.
const DEAD_LETTER_EXCERPT: usize = 4096;

/// Sends a message the queue refused for good to the dead-letter topic: its topic,
/// key and headers, why, and the start of its payload. When even that fails, the
/// message is dropped, loudly.
async fn set_aside(queue: &dyn Queue, metrics: &Metrics, topic: &str, msg: &Message, why: &str) {
    let excerpt = String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(DEAD_LETTER_EXCERPT)]).to_string();
    let letter = serde_json::json!({
        "topic": msg.topic,
        "key": msg.key,
        "headers": msg.headers,
        "reason": why,
        "size": msg.payload.len(),
        "payload_excerpt": excerpt,
    });
    match queue.publish(Message::json(topic, &msg.key, &letter)).await {
        Ok(()) => {
            metrics.dead_lettered();
            tracing::error!(topic = %msg.topic, request_id = %msg.key, reason = why, dead_letter = topic, "message refused for good: sent to the dead-letter topic");
        }
        Err(e) => {
            metrics.dropped_message(&msg.topic);
            tracing::error!(topic = %msg.topic, request_id = %msg.key, reason = why, error = %e, "message refused for good and not dead-lettered: dropped");
        }
    }
}

const SHARDS: usize = 8;

/// A message, and who waits for its delivery (if anyone).
type Item = (Message, Option<oneshot::Sender<()>>);

pub struct Outbox {
    shards: Vec<mpsc::UnboundedSender<Item>>,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Outbox {
    pub fn start(queue: Arc<dyn Queue>, metrics: Arc<Metrics>, dead_letter: String) -> Self {
        let pending = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Notify::new());
        let shards = (0..SHARDS)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
                let (queue, metrics) = (queue.clone(), metrics.clone());
                let (pending, idle) = (pending.clone(), idle.clone());
                let dead_letter = dead_letter.clone();
                tokio::spawn(async move {
                    while let Some((msg, delivered)) = rx.recv().await {
                        let mut backoff = Duration::from_millis(100);
                        while let Err(e) = queue.publish(msg.clone()).await {
                            if let Error::QueueRefused(why) = &e {
                                set_aside(&*queue, &metrics, &dead_letter, &msg, why).await;
                                break;
                            }
                            metrics.outbox_retry();
                            tracing::warn!(topic = %msg.topic, request_id = %msg.key, error = %e,
                                "publish failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                        if let Some(delivered) = delivered {
                            let _ = delivered.send(());
                        }
                        if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                            idle.notify_waiters();
                        }
                    }
                });
                tx
            })
            .collect();
        Outbox {
            shards,
            pending,
            idle,
        }
    }

    /// Queues a message; messages with the same key go out in the order sent.
    pub fn send(&self, msg: Message) {
        self.queue((msg, None));
    }

    /// [`Outbox::send`], and a receiver told once the message is delivered (or, refused
    /// for good, set aside); it errs if the outbox stops first.
    pub fn send_tracked(&self, msg: Message) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.queue((msg, Some(tx)));
        rx
    }

    fn queue(&self, item: Item) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        item.0.key.hash(&mut h);
        let shard = (h.finish() as usize) % SHARDS;
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.shards[shard].send(item).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Messages not yet delivered.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every queued message is delivered, or the timeout passes.
    pub async fn drained(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let notified = self.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}
