//! The consumer loop behind the gateway's reader of the validation topic: subscribe in
//! a group, survive queue outages, ack a message only once it is handled, stop at
//! shutdown. Several messages are handled at once, those of one key in order
//! ([`Pipeline::consume_by_key`]: verdicts for different payloads).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::queue::Message;

/// One lock per key with messages in hand, so that a key's messages are handled in
/// the order they came.
#[derive(Default)]
struct KeyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap();
        if map.len() > 4096 {
            map.retain(|_, l| Arc::strong_count(l) > 1); // keys nothing holds any more
        }
        map.entry(key.to_string()).or_default().clone()
    }
}

impl Pipeline {
    /// Hands each message of `topic` (group `group`) to `handle` until shutdown, up to
    /// `limit` at once; those of one key (a request id) one after another, in the
    /// order they came. A message is acked once handled, whatever the order (the
    /// queue commits only past handled ones); one that `handle` gives back (false:
    /// shutdown) stays unacked.
    pub(crate) async fn consume_by_key<F, Fut>(&self, topic: &str, group: &str, shutdown: &CancellationToken, limit: usize, handle: F)
    where
        F: Fn(Message) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let permits = Arc::new(tokio::sync::Semaphore::new(limit));
        let keys = Arc::new(KeyLocks::default());
        self.deliveries(topic, group, shutdown, |delivery| {
            let (permits, keys, handle) = (permits.clone(), keys.clone(), handle.clone());
            async move {
                let Ok(permit) = permits.acquire_owned().await else { return false };
                let lock = keys.get(&delivery.message.key);
                // Taken here, in arrival order: a key's next message waits for the one
                // before it (the others go on meanwhile).
                let turn = match lock.clone().try_lock_owned() {
                    Ok(t) => t,
                    Err(_) => lock.lock_owned().await,
                };
                tokio::spawn(async move {
                    let _held = (permit, turn);
                    if handle(delivery.message.clone()).await {
                        delivery.ack();
                    }
                });
                true
            }
        })
        .await
    }

    /// The loop: hands each delivery of `topic` (group `group`) to `take` until
    /// shutdown, surviving outages; ends when `take` returns false.
    async fn deliveries<F, Fut>(&self, topic: &str, group: &str, shutdown: &CancellationToken, mut take: F)
    where
        F: FnMut(crate::queue::Delivery) -> Fut,
        Fut: Future<Output = bool>,
    {
        while !shutdown.is_cancelled() {
            let mut sub = match self.inner.queue.subscribe(topic, group).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(topic, error = %e, "cannot subscribe; retrying");
                    if pause(shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = sub.next() => item,
                };
                let delivery = match item {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!(topic, error = %e, "topic unreadable; retrying");
                        if pause(shutdown, Duration::from_secs(1)).await {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(d)) => d,
                };
                if !take(delivery).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps; true when shutdown came first.
pub(crate) async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
