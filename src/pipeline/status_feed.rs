//! The status events other replicas make, as they happen: read from the status topic's
//! end, in no consumer group (a restart neither replays the topic nor leaves a group
//! behind). They feed this replica's `WatchStatus` streams and release the payloads it
//! holds for its subscribers once they are decided elsewhere. History (`track`) does
//! not depend on them: it is read from storage.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::consume::pause;
use super::status::ORIGIN_HEADER;
use super::Pipeline;
use crate::messages::PayloadStatus;

impl Pipeline {
    /// Reads the status topic from its end until shutdown; after an outage, from its
    /// end again (what was missed meanwhile is in storage, where `WatchStatus` looks
    /// too, and a held payload's lease runs out).
    pub async fn run_status_feed(self, shutdown: CancellationToken) {
        let topic = self.settings().topics.status.clone();
        loop {
            match self.inner.queue.tail(&topic).await {
                Ok(mut events) => loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        next = events.next() => next,
                    };
                    match next {
                        Some(Ok(delivery)) => self.heard(&delivery.message),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "reading the status topic");
                            if pause(&shutdown, Duration::from_millis(500)).await {
                                return;
                            }
                        }
                        None => break,
                    }
                },
                Err(e) => tracing::warn!(error = %e, "cannot read the status topic; trying again"),
            }
            if pause(&shutdown, Duration::from_secs(1)).await {
                return;
            }
        }
    }

    /// One status event from the topic; this replica's own are in its book already.
    fn heard(&self, m: &crate::queue::Message) {
        if m.header(ORIGIN_HEADER) == Some(self.replica()) {
            return;
        }
        match serde_json::from_slice::<PayloadStatus>(&m.payload) {
            Ok(event) => {
                // Decided on another replica (or from the validation topic there): a
                // payload this replica holds for a subscriber is released now, not
                // when the visibility timeout runs out.
                if matches!(event.status.as_str(), "success" | "advertised" | "rejected" | "handoff") {
                    self.inner.leases.settle(&event.request_id);
                }
                self.inner.status.add_new(event);
            }
            Err(e) => tracing::debug!(error = %e, "skipping an unreadable status message"),
        }
    }
}
