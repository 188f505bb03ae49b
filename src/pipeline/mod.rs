//! The one pipeline that owns an upload's life: accept a byte stream plus its header,
//! store it in quarantine, announce it, apply verdicts, promote, advertise, track
//! status. It knows nothing of HTTP or gRPC; storage and queue are traits.

use std::sync::Arc;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::storage::Storage;

pub mod content_type;
mod consume;
mod decide;
mod dispatch;
pub mod identity;
mod ingest;
pub mod links;
mod outbox;
mod payload;
pub mod request_id;
pub mod status;
mod status_feed;
mod unannounced;

pub use decide::{Outcome, VerdictReport, VERDICT_GROUP};
pub use dispatch::Work;
pub use identity::Identity;
pub use ingest::{Receipt, Staged, UploadHeader};
pub use payload::{BodyStream, Checks, Payload};
pub use request_id::RequestId;
pub use status::{StatusBook, TERMINAL};

/// The pipeline; cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    storage: Arc<dyn Storage>,
    queue: Arc<dyn Queue>,
    links: links::Links,
    status: StatusBook,
    /// This gateway process among its replicas (tags the status events it publishes).
    replica: String,
    outbox: outbox::Outbox,
    leases: dispatch::Leases,
    decisions: decide::DecisionLocks,
    /// Keys this process is storing, announcing or removing (the sweep skips them).
    in_hand: unannounced::InHand,
    metrics: Arc<Metrics>,
    /// Cancelled when shutdown begins: the endless server streams end.
    closing: tokio_util::sync::CancellationToken,
}

impl Pipeline {
    pub fn new(
        settings: Settings,
        storage: Arc<dyn Storage>,
        queue: Arc<dyn Queue>,
        links: links::Links,
        metrics: Arc<Metrics>,
    ) -> Self {
        let outbox = outbox::Outbox::start(Arc::clone(&queue), Arc::clone(&metrics));
        Pipeline {
            inner: Arc::new(Inner {
                settings,
                storage,
                queue,
                links,
                status: StatusBook::new(status::DEFAULT_CAPACITY),
                replica: uuid::Uuid::new_v4().simple().to_string(),
                outbox,
                leases: dispatch::Leases::default(),
                decisions: decide::DecisionLocks::default(),
                in_hand: Default::default(),
                metrics,
                closing: Default::default(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn status(&self) -> &StatusBook {
        &self.inner.status
    }

    /// This process's id among the gateway replicas sharing one broker.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    pub fn links(&self) -> &links::Links {
        &self.inner.links
    }

    /// Readiness: storage and queue both answer.
    pub async fn check(&self) -> crate::Result<()> {
        self.inner.storage.check().await?;
        self.inner.queue.check().await
    }

    /// Ends the server streams (Subscribe, WatchStatus, ValidationResult once its
    /// current verdict is applied), so a graceful shutdown need not wait for
    /// validators to hang up; they connect again, and what they held goes back.
    pub fn end_streams(&self) {
        self.inner.closing.cancel();
    }

    /// Resolves when the server streams should end.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.closing.clone().cancelled_owned()
    }

    /// Waits until pending status and available messages are delivered (shutdown).
    pub async fn flush(&self, timeout: std::time::Duration) -> crate::Result<()> {
        self.inner.outbox.drained(timeout).await;
        self.inner.queue.flush(timeout).await
    }
}
