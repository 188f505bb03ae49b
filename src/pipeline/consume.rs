//! The one consumer loop behind the gateway's readers of its own topics (verdicts,
//! the replicas' status view): subscribe in a group, survive queue outages, ack a
//! message only once it is handled, stop at shutdown.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::queue::Message;

impl Pipeline {
    /// Hands each message of `topic` (group `group`) to `handle` until shutdown. A
    /// message is acked when `handle` returns true; when it returns false the loop
    /// ends without acking it, so it is read again after a restart.
    pub(crate) async fn consume<F, Fut>(&self, topic: &str, group: &str, shutdown: &CancellationToken, mut handle: F)
    where
        F: FnMut(Message) -> Fut,
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
                if !handle(delivery.message.clone()).await {
                    return; // dropped unacked: read again later
                }
                delivery.ack();
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
