//! The status events other replicas make, as they happen: read from the status topic,
//! from three sweep periods (at least ten minutes) back at start-up (not the whole topic), in no consumer
//! group (a restart leaves no group behind). They feed this replica's `WatchStatus`
//! streams, release the payloads it holds for its subscribers once they are decided
//! elsewhere, and tell the quarantine sweep what was announced. History (`track`)
//! does not depend on them: it is read from storage.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::consume::pause;
use super::status::ORIGIN_HEADER;
use super::Pipeline;
use crate::messages::PayloadStatus;

/// The least of the status topic read again at start-up: a replica (or a whole fleet)
/// down for less than this forgets no announcement.
pub const MIN_CATCH_UP: Duration = Duration::from_secs(600);

impl Pipeline {
    /// Reads the status topic until shutdown; after an outage, from the same distance
    /// back again (what is heard twice changes nothing).
    pub async fn run_status_feed(self, shutdown: CancellationToken) {
        let topic = self.settings().topics.status.clone();
        loop {
            match self.inner.queue.tail(&topic, self.catch_up()).await {
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

    /// How far back the status topic is read when the feed starts: three sweep periods,
    /// and at least [`MIN_CATCH_UP`], so the quarantine sweep hears of every
    /// announcement it may still need to know of after a restart (`unannounced.rs`).
    pub(crate) fn catch_up(&self) -> Duration {
        self.settings().kafka.as_ref().map_or(Duration::ZERO, |k| catch_up_for(k.quarantine_sweep))
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
                if event.status == "announced" {
                    self.inner.announced.note(&event.request_id, &event.date);
                }
                self.inner.status.add_new(event);
            }
            Err(e) => tracing::debug!(error = %e, "skipping an unreadable status message"),
        }
    }
}

/// [`Pipeline::catch_up`] for a sweep period: three of them, at least [`MIN_CATCH_UP`].
pub(super) fn catch_up_for(sweep: Duration) -> Duration {
    (sweep * 3).max(MIN_CATCH_UP)
}
