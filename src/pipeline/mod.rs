//! The one pipeline that owns an upload's life: accept a byte stream plus its header,
//! store it in quarantine, announce it, apply verdicts, promote, advertise, track
//! status. It knows nothing of HTTP or gRPC; storage and queue are traits.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, Credentials};
use crate::config::Settings;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::storage::Storage;

mod consume;
mod decide;
mod dispatch;
mod ingest;
pub mod links;
mod outbox;
pub mod resumable;
pub mod status;
mod status_feed;
mod unannounced;

#[cfg(test)]
mod tests;

pub use decide::{Outcome, VerdictReport, VERDICT_GROUP};
pub use dispatch::Work;
pub use ingest::{one_value, Receipt, Staged, UploadHeader};
pub use resumable::{Append, Appended, ChecksumAlgorithm, ChunkChecksum, UploadInfo};
pub use crate::domain::{content_type, identity, request_id, BodyStream, Checks, Identity, Payload, RequestId};
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
    /// Status events being stored in their payloads' histories in the background.
    storing: tokio_util::task::TaskTracker,
    /// Status event writes at once (a drain stores every `announced` still waiting).
    store_slots: tokio::sync::Semaphore,
    leases: dispatch::Leases,
    decisions: decide::DecisionLocks,
    /// Keys this process is storing, announcing or removing (the sweep skips them).
    in_hand: unannounced::InHand,
    /// Payloads announced lately (the quarantine sweep's evidence).
    announced: unannounced::Announced,
    metrics: Arc<Metrics>,
    /// The validator credentials accepted (README, "Trust").
    credentials: Arc<Credentials>,
    /// The gateway's one shutdown signal: cancelled when the drain begins. The
    /// endless server streams and every background loop end on it.
    shutdown: CancellationToken,
}

impl Pipeline {
    pub fn new(
        settings: Settings,
        storage: Arc<dyn Storage>,
        queue: Arc<dyn Queue>,
        links: links::Links,
        metrics: Arc<Metrics>,
        credentials: Arc<Credentials>,
        shutdown: CancellationToken,
    ) -> Self {
        let dead_letter = settings.topics.dead_letter.clone();
        // Longer than any sweep may still need: the feed's catch-up plus its look.
        let sweep = settings.kafka.as_ref().map_or(std::time::Duration::from_secs(60), |k| k.quarantine_sweep);
        let settings_keep = status_feed::catch_up_for(sweep) + sweep;
        let outbox = outbox::Outbox::start(Arc::clone(&queue), Arc::clone(&metrics), dead_letter);
        Pipeline {
            inner: Arc::new(Inner {
                settings,
                storage,
                queue,
                links,
                status: StatusBook::new(status::DEFAULT_CAPACITY),
                replica: uuid::Uuid::new_v4().simple().to_string(),
                outbox,
                storing: Default::default(),
                store_slots: tokio::sync::Semaphore::new(32),
                leases: dispatch::Leases::default(),
                decisions: decide::DecisionLocks::default(),
                in_hand: Default::default(),
                announced: unannounced::Announced::new(settings_keep),
                metrics,
                credentials,
                shutdown,
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

    /// Who is calling: the `x-rh-identity` value (decoded and checked), and the
    /// validator behind an `authorization` value or a verified client certificate.
    /// A malformed identity is refused (400), a bad credential too (401).
    pub fn caller(&self, identity: Option<&str>, authorization: Option<&str>, cert_names: &[String]) -> Result<Caller> {
        let validator = self.inner.credentials.validator(authorization, cert_names)?;
        let identity = match identity {
            Some(raw) if !raw.is_empty() => Some(identity::decode(raw)?),
            _ => None,
        };
        Ok(Caller { identity, validator })
    }

    /// Readiness: storage and queue both answer.
    pub async fn check(&self) -> Result<()> {
        self.inner.storage.check().await?;
        self.inner.queue.check().await
    }

    /// Whether the drain has begun (readiness answers 503 from then on).
    pub fn draining(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Resolves when the drain begins: the server streams (Subscribe, WatchStatus,
    /// ValidationResult once its current verdict is applied) end on it, so a graceful
    /// shutdown need not wait for validators to hang up; they connect again, and
    /// what they held goes back.
    pub fn closing(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.shutdown.clone().cancelled_owned()
    }

    /// The shutdown signal, for the loops that run as long as the gateway does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Waits until pending status and available messages are delivered, and status
    /// events stored (shutdown).
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<()> {
        self.inner.storing.close();
        let _ = tokio::time::timeout(timeout, self.inner.storing.wait()).await;
        self.inner.outbox.drained(timeout).await;
        self.inner.queue.flush(timeout).await
    }
}
