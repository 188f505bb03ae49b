//! The status view of a replica among several on one broker: fed from the status
//! topic as well as by this process's own milestones.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::status::ORIGIN_HEADER;
use super::Pipeline;
use crate::messages::PayloadStatus;

impl Pipeline {
    /// With several replicas on one broker: builds this replica's status view from the
    /// status topic too, so `track` answers for payloads another replica took in or
    /// decided. Reads the whole topic in a group of its own (from the oldest message
    /// kept); its own events are already in the book and are skipped.
    pub async fn run_status_feed(self, shutdown: CancellationToken) {
        let topic = self.settings().topics.status.clone();
        let group = format!("{}.status.{}", self.settings().consumer_group, self.replica());
        'outer: while !shutdown.is_cancelled() {
            let mut sub = match self.inner.queue.subscribe(&topic, &group).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to the status topic; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let item = tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    item = sub.next() => item,
                };
                let delivery = match item {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "status topic unreadable; retrying");
                        continue;
                    }
                    Some(Ok(d)) => d,
                };
                let m = &delivery.message;
                if m.header(ORIGIN_HEADER) != Some(self.replica()) {
                    match serde_json::from_slice::<PayloadStatus>(&m.payload) {
                        Ok(event) => {
                            self.inner.status.add_new(event);
                        }
                        Err(e) => tracing::debug!(error = %e, "skipping an unreadable status message"),
                    }
                }
                delivery.ack();
            }
        }
    }
}
