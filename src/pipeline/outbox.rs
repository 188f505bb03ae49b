//! Messages that must go out after the client's 2xx (status, and nothing else yet):
//! retried until delivered, in order per request id, counted.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::queue::{Message, Queue};

const SHARDS: usize = 8;

pub struct Outbox {
    shards: Vec<mpsc::UnboundedSender<Message>>,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Outbox {
    pub fn start(queue: Arc<dyn Queue>, metrics: Arc<Metrics>) -> Self {
        let pending = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Notify::new());
        let shards = (0..SHARDS)
            .map(|_| {
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                let (queue, metrics) = (queue.clone(), metrics.clone());
                let (pending, idle) = (pending.clone(), idle.clone());
                tokio::spawn(async move {
                    while let Some(msg) = rx.recv().await {
                        let mut backoff = Duration::from_millis(100);
                        while let Err(e) = queue.publish(msg.clone()).await {
                            metrics.outbox_retry();
                            tracing::warn!(topic = %msg.topic, request_id = %msg.key, error = %e,
                                "publish failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
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
        let mut h = std::collections::hash_map::DefaultHasher::new();
        msg.key.hash(&mut h);
        let shard = (h.finish() as usize) % SHARDS;
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.shards[shard].send(msg).is_err() {
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
