//! Taking an upload in: check the header, stream the bytes into quarantine, announce.

use serde_json::Value;
use tracing::{info, warn};

use super::unannounced::Hold;
use super::Pipeline;
use crate::domain::{content_type, identity, BodyStream, Checks, Identity, Payload, RequestId};
use crate::error::{Error, Result};
use crate::messages::{now_rfc3339, Announce};
use crate::queue::Message;
use crate::storage::{Bucket, ObjectMeta};

/// What a protocol knows about an upload before its bytes arrive.
#[derive(Debug, Clone, Default)]
pub struct UploadHeader {
    /// The payload's content type; picks service and category.
    pub content_type: String,
    pub file_name: Option<String>,
    /// The raw `x-rh-identity` value, if sent.
    pub identity: Option<String>,
    /// The request id, if the client supplied one.
    pub request_id: Option<String>,
    /// The `metadata` JSON, if it came before the bytes (gRPC); REST may add it later.
    pub metadata: Option<Vec<u8>>,
    pub expected_size: Option<u64>,
    pub expected_sha256: Option<String>,
}

/// What the client gets once the payload is stored and announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub request_id: RequestId,
    pub account_number: Option<String>,
    pub org_id: Option<String>,
    pub service: String,
    pub category: String,
    pub size: u64,
    pub sha256: String,
}

/// A payload stored in quarantine but not yet announced. Announce it with
/// [`Staged::announce`]; dropped otherwise, it is removed from quarantine.
pub struct Staged {
    pipeline: Pipeline,
    request_id: RequestId,
    identity: Identity,
    meta: ObjectMeta,
    /// `metadata` came after the bytes: the stored meta must be written again.
    metadata_late: bool,
    done: bool,
    /// Kept in quarantine when its announcement fails (a resumable upload's bytes: the
    /// client's retried last request, or the quarantine sweep, announces it then).
    keep: bool,
    /// Keeps the quarantine sweep off this payload until it is settled (removal included).
    hold: Option<Hold>,
}

/// Checks a request's identity and id before any byte is read; shared by the
/// protocols so they refuse bad requests the same way.
pub(crate) struct Checked {
    pub request_id: RequestId,
    pub identity: Identity,
    /// Whether the client chose the id (and so may have used it before).
    pub supplied: bool,
}

/// A value a client may send in two places (request metadata, and the deprecated
/// field of the gRPC upload header): taken when only one place has it or both agree,
/// refused when they differ (a client may not name another identity or id in its body
/// than the one its request carries).
pub fn one_value(name: &str, metadata: Option<String>, body: Option<String>) -> Result<Option<String>> {
    match (metadata, body) {
        (Some(m), Some(b)) if m != b => Err(Error::Forbidden(format!(
            "the upload header's {name} differs from the request's {name} metadata: send it once, as metadata"
        ))),
        (m, b) => Ok(m.or(b)),
    }
}

impl Pipeline {
    /// The header checks that need no bytes: request id, identity.
    pub(crate) fn check_caller(&self, header: &UploadHeader) -> Result<Checked> {
        let request_id = RequestId::supplied_or_new(header.request_id.as_deref())?;
        let identity = match header.identity.as_deref() {
            Some(raw) if !raw.is_empty() => identity::decode(raw)?,
            _ if self.settings().require_identity => {
                return Err(Error::Unauthenticated(
                    "x-rh-identity is required: send the identity header".into(),
                ))
            }
            _ => Identity::default(),
        };
        Ok(Checked {
            supplied: header.request_id.as_deref().is_some_and(|s| !s.is_empty()),
            request_id,
            identity,
        })
    }

    /// Parses the `metadata` JSON: an object, within the configured size.
    pub fn parse_metadata(&self, raw: &[u8]) -> Result<Value> {
        let limit = self.settings().metadata_limit;
        if raw.len() > limit {
            return Err(Error::bad_request(format!(
                "metadata is larger than {limit} bytes"
            )));
        }
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| Error::bad_request(format!("metadata is not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(Error::bad_request("metadata must be a JSON object"));
        }
        Ok(v)
    }

    /// Streams a payload into quarantine. Everything that can be refused without the
    /// bytes is refused first; the size limit is enforced while they arrive. On
    /// error nothing is kept.
    pub async fn store(&self, header: UploadHeader, body: BodyStream) -> Result<Staged> {
        let started = std::time::Instant::now();
        let _in_flight = self.metrics().upload_in_flight();
        let request = tracing::Span::current();
        let span = tracing::info_span!("store", request_id = tracing::field::Empty);
        let result = tracing::Instrument::instrument(self.store_inner(header, body, &request), span).await;
        match &result {
            Ok(_) => self.metrics().observe_store(started.elapsed()),
            Err(e) => {
                self.metrics().upload_refused(e.kind());
                info!(error = %e, "upload refused");
            }
        }
        result
    }

    async fn store_inner(&self, header: UploadHeader, body: BodyStream, request: &tracing::Span) -> Result<Staged> {
        let caller = self.check_caller(&header)?;
        request.record("request_id", caller.request_id.as_str());
        tracing::Span::current().record("request_id", caller.request_id.as_str());
        // Bounded like every field that reaches a message (README "Trust").
        if header.content_type.len() > 256 {
            return Err(Error::UnsupportedMediaType);
        }
        let route = content_type::route(&header.content_type)?;
        let settings = self.settings();
        if !settings.valid_services.contains(&route.service) {
            return Err(Error::UnsupportedService {
                service: route.service,
            });
        }
        let limit = settings.limit_for(&route.service);
        if header.expected_size.is_some_and(|s| s > limit) {
            return Err(Error::TooLarge {
                service: route.service,
                limit,
            });
        }
        if let Some(sha) = &header.expected_sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::bad_request("expected sha256 must be 64 hex characters"));
            }
        }
        let metadata = header
            .metadata
            .as_deref()
            .map(|m| self.parse_metadata(m))
            .transpose()?;
        let key = caller.request_id.as_str().to_string();
        let payload = Payload::new(
            body,
            Checks {
                service: route.service.clone(),
                limit,
                expected_size: header.expected_size,
                expected_sha256: header.expected_sha256.clone(),
                idle: settings.body_idle_timeout,
            },
            self.metrics().clone(),
        );
        let meta = ObjectMeta {
            request_id: key.clone(),
            service: route.service,
            category: route.category,
            content_type: header.content_type,
            account: caller.identity.account_number.clone(),
            org_id: caller.identity.org_id.clone(),
            b64_identity: caller.identity.raw.clone(),
            size: 0,
            sha256: String::new(),
            received_at: now_rfc3339(),
            metadata,
            derived: false,
            unconfirmed: None,
            put_id: None,
        };
        // The storage consumes the payload; the payload's own failure (too large,
        // stalled, short) is what the client hears about, not the storage's echo.
        let failure = PayloadFailure::default();
        let watched = failure.watch(if caller.supplied { payload } else { payload.with_generated_key() });
        let hold = self.inner.in_hand.hold(&key);
        // A request id is used once. Storage refuses a second put of the key while
        // the payload is in quarantine (or being stored); a payload already decided
        // lives in perm or reject, so a supplied id is looked up there too, while the
        // bytes arrive rather than before (no round trip added to the upload): when
        // it is found, the put is dropped part-way, which leaves nothing behind.
        let put = async {
            self.inner.storage.put(Bucket::Quarantine, &key, meta, watched).await.map_err(|e| failure.take().unwrap_or(e))
        };
        let decided_already = async {
            if caller.supplied {
                for b in [Bucket::Perm, Bucket::Reject] {
                    if self.inner.storage.head(b, &key).await?.is_some() {
                        return Err(Error::Conflict(format!("request id {key} was already used for another payload")));
                    }
                }
            }
            Ok(())
        };
        tokio::pin!(put, decided_already);
        let mut checked = false;
        let meta = loop {
            tokio::select! {
                used = &mut decided_already, if !checked => {
                    used?;
                    checked = true;
                }
                stored = &mut put => break stored?,
            }
        };
        let staged = Staged {
            pipeline: self.clone(),
            request_id: caller.request_id,
            identity: caller.identity,
            meta,
            metadata_late: false,
            done: false,
            keep: false,
            hold: Some(hold),
        };
        if !checked {
            // Stored before the look-up answered: dropped on a refusal, the staged
            // payload is removed from quarantine.
            decided_already.await?;
        }
        Ok(staged)
    }

    /// The announce message of a stored payload, with a fresh URL.
    pub(crate) async fn announcement(&self, meta: &ObjectMeta) -> Result<Message> {
        let url = self.url(Bucket::Quarantine, &meta.request_id).await?;
        let announce = Announce {
            account: meta.account.clone(),
            rh_account: meta.account.clone(),
            org_id: meta.org_id.clone(),
            principal: meta.org_id.clone(),
            request_id: meta.request_id.clone(),
            payload_id: meta.request_id.clone(),
            size: meta.size,
            service: meta.service.clone(),
            category: meta.category.clone(),
            content_type: meta.content_type.clone(),
            b64_identity: meta.b64_identity.clone(),
            metadata: meta.metadata.clone(),
            url,
            timestamp: now_rfc3339(),
            sha256: meta.sha256.clone(),
        };
        let topics = &self.settings().topics;
        let mut msg = Message::json(&topics.announce(&meta.service), &meta.request_id, &announce);
        msg.headers.push(("service".into(), meta.service.clone()));
        Ok(msg)
    }

    /// Announces a payload that quarantine holds (again, or for the first time after a
    /// crash), with the metadata it was sent with. None when it is not there, or when
    /// its service is unknown: a payload the replaced services stored without the
    /// gateway's meta was announced by them, and waits for its verdict.
    pub(crate) async fn announce_stored(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self.inner.storage.head(Bucket::Quarantine, key).await? {
            Some(meta) => self.announce_meta(meta).await,
            None => Ok(None),
        }
    }

    /// [`Pipeline::announce_stored`] for a payload whose meta was just read.
    pub(crate) async fn announce_meta(&self, meta: ObjectMeta) -> Result<Option<ObjectMeta>> {
        let key = meta.request_id.as_str();
        if meta.service.is_empty() {
            tracing::debug!(request_id = key, "not announced again: stored without the gateway's meta, its service is unknown");
            return Ok(None);
        }
        let msg = self.announcement(&meta).await?;
        self.inner.queue.publish(msg).await?;
        Ok(Some(meta))
    }

    /// At start-up, when the queue keeps nothing across restarts: announce again what
    /// quarantine holds, so no stored payload waits forever. Consumers de-duplicate
    /// by request id.
    pub async fn reannounce_quarantine(&self) -> Result<usize> {
        if self.inner.queue.durable() {
            return Ok(0);
        }
        let mut n = 0;
        for key in self.inner.storage.list(Bucket::Quarantine).await? {
            if self.announce_stored(&key).await?.is_some() {
                n += 1;
            }
        }
        if n > 0 {
            info!(count = n, "announced again what quarantine held at start-up");
        }
        Ok(n)
    }
}

impl Staged {
    /// A resumable upload's payload, just put in quarantine whole.
    pub(crate) fn resumed(pipeline: Pipeline, identity: Identity, meta: ObjectMeta, hold: Hold) -> Result<Staged> {
        Ok(Staged {
            pipeline,
            request_id: RequestId::parse(&meta.request_id)?,
            identity,
            meta,
            metadata_late: false,
            done: false,
            keep: true,
            hold: Some(hold),
        })
    }

    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// Metadata that arrived after the bytes (REST sends it in a later part); it is
    /// kept with the stored payload's meta before the announcement.
    pub fn set_metadata(&mut self, metadata: Value) {
        self.meta.metadata = Some(metadata);
        self.metadata_late = true;
    }

    /// Removes the stored payload now, unannounced (a later form part replaced it).
    pub async fn discard(mut self) {
        self.done = true;
        let key = &self.meta.request_id;
        if let Err(e) = self.pipeline.inner.storage.delete(Bucket::Quarantine, key).await {
            warn!(request_id = %key, error = %e, "could not remove a replaced payload");
        }
    }

    /// Publishes the announcement and records the status. Returns the receipt, which
    /// the client gets as its 2xx. When the announcement was surely not written, the
    /// payload is removed from quarantine; when it may have been (`QueueUnconfirmed`),
    /// the payload is kept, marked, for the quarantine sweep to announce: an
    /// announcement never points at a payload that was thrown away.
    ///
    /// The publish and what follows from its outcome run in a task of their own, so a
    /// client that goes away meanwhile cannot cut them short between the two.
    pub async fn announce(self) -> Result<Receipt> {
        let p = self.pipeline.clone();
        if self.metadata_late {
            let key = &self.meta.request_id;
            p.inner.storage.set_meta(Bucket::Quarantine, key, &self.meta).await?; // Drop removes the object.
        }
        let span = tracing::info_span!("announce", request_id = %self.meta.request_id);
        let msg = tracing::Instrument::instrument(p.announcement(&self.meta), span.clone()).await?;
        let started = std::time::Instant::now();
        let settled = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let published = p.inner.queue.publish(msg).await;
                if published.is_ok() {
                    p.metrics().stage(crate::metrics::Stage::Announced, started.elapsed());
                }
                self.settle(published).await
            },
            span,
        ));
        settled.await.map_err(|e| Error::Internal(format!("announcing: {e}")))?
    }

    async fn settle(mut self, published: Result<()>) -> Result<Receipt> {
        let p = self.pipeline.clone();
        if let Err(e) = published {
            p.metrics().upload_refused(e.kind());
            if let Error::QueueUnconfirmed(why) = &e {
                self.done = true;
                self.keep_unconfirmed(why).await;
            } else {
                warn!(error = %e, "announce failed; removing the stored payload");
            }
            return Err(e); // Drop removes the object unless kept.
        }
        self.done = true;
        let m = &self.meta;
        p.record(m, "received", &format!("{} bytes stored in quarantine", m.size));
        p.record(m, "announced", "announced to the service's validator");
        p.metrics().upload_accepted(&m.service, m.size);
        Ok(Receipt {
            request_id: self.request_id.clone(),
            account_number: self.identity.account_number.clone(),
            org_id: self.identity.org_id.clone(),
            service: m.service.clone(),
            category: m.category.clone(),
            size: m.size,
            sha256: m.sha256.clone(),
        })
    }

    /// Marks a payload whose announcement is unconfirmed, in its meta. Unmarked (the
    /// storage failing too) it is still kept: the sweep finds it at its second look.
    async fn keep_unconfirmed(&self, why: &str) {
        let key = &self.meta.request_id;
        warn!(request_id = %key, reason = why,
            "announcement unconfirmed; keeping the payload for the quarantine sweep to announce");
        let meta = ObjectMeta { unconfirmed: Some(why.to_string()), ..self.meta.clone() };
        match self.pipeline.inner.storage.set_meta(Bucket::Quarantine, key, &meta).await {
            Ok(true) => {}
            Ok(false) => info!(request_id = %key, "the payload left quarantine meanwhile (a verdict)"),
            Err(e) => warn!(request_id = %key, error = %e, "could not mark an unconfirmed payload"),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.done || self.keep {
            return;
        }
        let storage = self.pipeline.inner.storage.clone();
        let key = self.meta.request_id.clone();
        let hold = self.hold.take();
        tokio::spawn(async move {
            if let Err(e) = storage.delete(Bucket::Quarantine, &key).await {
                warn!(request_id = %key, error = %e, "could not remove an unannounced payload");
            }
            drop(hold); // the sweep may look at what is left (removal failed: stored, announced later)
        });
    }
}

/// Remembers why a payload failed, after storage has consumed (and dropped) it.
#[derive(Default, Clone)]
struct PayloadFailure(std::sync::Arc<std::sync::Mutex<Option<Error>>>);

impl PayloadFailure {
    fn watch(&self, payload: Payload) -> Payload {
        let cell = self.clone();
        payload.on_failure(move |e| *cell.0.lock().unwrap() = Some(e))
    }

    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap().take()
    }
}
