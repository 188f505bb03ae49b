//! The status view of a replica among several on one broker: fed from the status
//! topic as well as by this process's own milestones. The same events release the
//! payloads this replica holds for its subscribers once they are decided elsewhere.

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
        let me = &self;
        self.consume(&topic, &group, &shutdown, |m| async move {
            if m.header(ORIGIN_HEADER) != Some(me.replica()) {
                match serde_json::from_slice::<PayloadStatus>(&m.payload) {
                    Ok(event) => {
                        // Decided on another replica (or from the validation topic there):
                        // a payload this replica holds for a subscriber is released now,
                        // not when the visibility timeout runs out.
                        if matches!(event.status.as_str(), "success" | "advertised" | "rejected" | "handoff") {
                            me.inner.leases.settle(&event.request_id);
                        }
                        me.inner.status.add_new(event);
                    }
                    Err(e) => tracing::debug!(error = %e, "skipping an unreadable status message"),
                }
            }
            true
        })
        .await;
    }
}
