//! Verdicts: success promotes to perm and advertises, failure moves to reject,
//! handoff leaves the payload where it is. Idempotent, and applied from storage
//! alone, so a restarted gateway applies a verdict as well as the one that announced.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::consume::pause;
use super::Pipeline;
use crate::auth::Validator;
use crate::error::Result;
use crate::messages::{now_rfc3339, Available, Validation, ValidationResult, VerdictDetails};
use crate::queue::Message;
use crate::storage::{Bucket, Decision, ObjectMeta};

/// What applying one verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    Rejected,
    HandedOff,
    AlreadyDecided,
    UnknownId,
    Invalid,
    /// Storage or queue failed; nothing was lost, apply the verdict again later.
    Retry,
    /// The validator's credential does not cover the payload's service.
    Forbidden,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::Rejected => "rejected",
            Outcome::HandedOff => "handed_off",
            Outcome::AlreadyDecided => "already_decided",
            Outcome::UnknownId => "unknown_id",
            Outcome::Invalid => "invalid",
            Outcome::Retry => "retry",
            Outcome::Forbidden => "forbidden",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictReport {
    pub request_id: String,
    pub outcome: Outcome,
    pub message: String,
}

impl VerdictReport {
    fn new(request_id: &str, outcome: Outcome, message: impl Into<String>) -> Self {
        VerdictReport {
            request_id: request_id.to_string(),
            outcome,
            message: message.into(),
        }
    }
}

/// The default consumer group the gateway reads the validation topic in
/// (`--consumer-group` changes it).
pub const VERDICT_GROUP: &str = "upload-gateway";

/// Decisions on one payload are serialized by striped locks (no duplicate promotion
/// when the same verdict arrives by Kafka and gRPC at once).
const STRIPES: usize = 64;

pub(crate) struct DecisionLocks(Vec<tokio::sync::Mutex<()>>);

impl Default for DecisionLocks {
    fn default() -> Self {
        DecisionLocks((0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl DecisionLocks {
    async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.0[(h.finish() as usize) % STRIPES].lock().await
    }
}

/// How long a replica leaves a verdict another one recorded (and has not advertised)
/// to that one: a promotion takes well under a second; one whose replica died is
/// finished by another after this.
const UNDER_WAY: Duration = Duration::from_secs(20);

/// How long ago a decision was recorded (none when its record has no date).
fn age(d: &Decision) -> Option<Duration> {
    super::status::age(d.at.as_deref()?)
}

/// Verdicts from the validation topic applied at once, per replica: each waits on a
/// dozen storage and broker round trips, so many at once keep a replica busy (bench
/// P6).
const VERDICTS_AT_ONCE: usize = 64;

impl Pipeline {
    /// Which bucket holds a payload, and its meta. Quarantine is looked at first.
    pub(crate) async fn locate(&self, key: &str) -> Result<Option<(Bucket, ObjectMeta)>> {
        for b in Bucket::ALL {
            if let Some(meta) = self.inner.storage.head(b, key).await? {
                return Ok(Some((b, meta)));
            }
        }
        Ok(None)
    }

    /// Parses and applies a validation message as read from the validation topic.
    pub async fn apply_message(&self, bytes: &[u8]) -> VerdictReport {
        self.apply_message_from(bytes, None).await
    }

    /// [`Pipeline::apply_message`] for a message that carried a `traceparent` header:
    /// the verdict's span joins that trace.
    pub async fn apply_message_from(&self, bytes: &[u8], traceparent: Option<&str>) -> VerdictReport {
        match ValidationResult::parse(bytes) {
            Ok(result) => self.apply_as(result, None, traceparent).await,
            Err(e) => {
                self.metrics().verdict(Outcome::Invalid.as_str());
                warn!(error = %e, "skipping a malformed validation message");
                VerdictReport::new("", Outcome::Invalid, e.to_string())
            }
        }
    }

    /// Applies a verdict as a gRPC validator sends it (its validation word not yet
    /// parsed); the same path as a Kafka validation message.
    /// The validator's credential must cover the payload's service.
    pub async fn apply_verdict(&self, validator: &Validator, request_id: &str, validation: &str, reason: Option<String>) -> VerdictReport {
        let details = VerdictDetails { reason, ..Default::default() };
        self.apply_verdict_details(validator, request_id, validation, details).await
    }

    /// [`Pipeline::apply_verdict`] with every field a validation message can carry.
    pub async fn apply_verdict_details(
        &self,
        validator: &Validator,
        request_id: &str,
        validation: &str,
        details: VerdictDetails,
    ) -> VerdictReport {
        let Some(validation) = Validation::parse(validation) else {
            self.metrics().verdict(Outcome::Invalid.as_str());
            return VerdictReport::new(
                request_id,
                Outcome::Invalid,
                format!("unknown validation {validation:?} (expected success, failure or handoff)"),
            );
        };
        let result = ValidationResult {
            request_id: request_id.to_string(),
            validation,
            reason: details.reason,
            satellite_managed: details.satellite_managed,
            id: details.id,
            echo: details.echo,
        };
        self.apply_as(result, Some(validator), None).await
    }

    /// Applies one verdict. Safe to repeat: a verdict on a decided payload changes nothing.
    pub async fn apply(&self, result: ValidationResult) -> VerdictReport {
        self.apply_as(result, None, None).await
    }

    /// Applies one verdict, from a validator whose credential is checked against the
    /// payload's service (`None`: from the validation topic, whose access the broker
    /// controls).
    async fn apply_as(&self, result: ValidationResult, validator: Option<&Validator>, traceparent: Option<&str>) -> VerdictReport {
        let id = result.request_id.clone();
        let span = tracing::info_span!("verdict", request_id = %id, validation = result.validation.as_str());
        crate::telemetry::adopt(&span, traceparent, None);
        // Applied in a task of its own: a validator that hangs up meanwhile cannot stop
        // it between its recorded decision and the move.
        let (me, validator) = (self.clone(), validator.cloned());
        let applying = tokio::spawn(tracing::Instrument::instrument(
            async move { me.apply_inner(result, validator.as_ref()).await },
            span,
        ));
        let report = match applying.await {
            Ok(r) => r,
            Err(e) => VerdictReport::new(&id, Outcome::Retry, format!("applying the verdict: {e}")),
        };
        self.metrics().verdict(report.outcome.as_str());
        if !matches!(report.outcome, Outcome::Retry | Outcome::Forbidden) {
            self.inner.leases.settle(&id);
        }
        report
    }

    async fn apply_inner(&self, result: ValidationResult, validator: Option<&Validator>) -> VerdictReport {
        let id = result.request_id.as_str();
        if id.is_empty() {
            return VerdictReport::new(id, Outcome::Invalid, "the verdict names no request_id");
        }
        if !super::request_id::is_valid(id) {
            return VerdictReport::new(id, Outcome::Invalid, "not a request id the gateway gives out");
        }
        let _guard = self.inner.decisions.lock(id).await;
        let found = match self.locate(id).await {
            Ok(f) => f,
            Err(e) if e.is_retryable() => return VerdictReport::new(id, Outcome::Retry, e.to_string()),
            // Retrying cannot help (the stored meta is unreadable): the verdict is
            // answered and counted, so it does not hold up its partition forever.
            Err(e) => {
                warn!(error = %e, "a verdict for a payload whose stored record cannot be read; not retried");
                return VerdictReport::new(id, Outcome::Invalid, format!("the payload's stored record cannot be read, so this verdict cannot be applied: {e}"));
            }
        };
        let found = found.map(|(b, meta)| (b, completed(meta, &result)));
        if let Some(v) = validator {
            let service = found.as_ref().map(|(_, m)| m.service.as_str());
            if service.is_some_and(|s| !v.services.allows(s)) {
                let msg = format!("the credential {:?} may act for {}, not for {:?}", v.name, v.services, service.unwrap_or_default());
                return VerdictReport::new(id, Outcome::Forbidden, msg);
            }
        }
        let meta = match found {
            None => return VerdictReport::new(id, Outcome::UnknownId, "no stored payload has this request id"),
            Some((Bucket::Quarantine, meta)) => meta,
            Some((b, _)) => {
                return VerdictReport::new(id, Outcome::AlreadyDecided, format!("already decided: the payload is in {}", b.as_str()))
            }
        };
        // The verdict is recorded once for every replica and channel before anything
        // moves: of two different verdicts at the same moment, on two replicas, one is
        // applied and the other answered ALREADY_DECIDED with what was decided. The
        // same verdict again (redelivered, retried) finishes what the first began.
        let mut advertised = false;
        if let Some(validation) = match result.validation {
            Validation::Success => Some("success"),
            Validation::Failure => Some("failure"),
            Validation::Handoff => None,
        } {
            let ours = Decision { validation: validation.into(), advertised: false, by: Some(self.replica().to_string()), at: Some(now_rfc3339()) };
            match self.inner.storage.decide(id, &ours).await {
                Err(e) => return VerdictReport::new(id, Outcome::Retry, e.to_string()),
                // Recorded. Unless another replica decided, moved the payload and
                // forgot its record between our look and our record: then it is gone
                // from quarantine, and our record goes too.
                Ok(None) => match self.inner.storage.head(Bucket::Quarantine, id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        self.forget_decision(id).await;
                        let now = match self.locate(id).await {
                            Ok(Some((b, _))) => format!("the payload is in {}", b.as_str()),
                            _ => "the payload has left quarantine".to_string(),
                        };
                        return VerdictReport::new(id, Outcome::AlreadyDecided, format!("already decided: {now} (another verdict came first)"));
                    }
                    Err(e) => {
                        self.forget_decision(id).await;
                        return VerdictReport::new(id, Outcome::Retry, e.to_string());
                    }
                },
                // The same verdict, recorded by another replica moments ago and not
                // advertised yet: most likely being applied there now. Left to it for
                // a while (tried again later), so `available` goes out once.
                Ok(Some(recorded)) if recorded.validation == validation && !recorded.advertised && self.under_way_elsewhere(&recorded) => {
                    return VerdictReport::new(id, Outcome::Retry, "another replica is applying the same verdict");
                }
                Ok(Some(recorded)) if recorded.validation == validation => {
                    advertised = recorded.advertised;
                    // Recorded earlier by another replica (or process) and not noted
                    // as advertised: that one may have published `available` and died
                    // before noting it. The topic says. (This process notes its own
                    // before it lets go of a verdict.)
                    if !advertised && validation == "success" && recorded.by.as_deref() != Some(self.replica()) {
                        match self.advertised_since(id, &recorded).await {
                            Ok(found) => advertised = found,
                            Err(e) => return VerdictReport::new(id, Outcome::Retry, e.to_string()),
                        }
                    }
                }
                Ok(Some(recorded)) => {
                    return VerdictReport::new(
                        id,
                        Outcome::AlreadyDecided,
                        format!("already decided: {} (another verdict came first)", recorded.validation),
                    )
                }
            }
        }
        let applied = match result.validation {
            Validation::Success => self.promote(&meta, &result, advertised).await.map(|()| Outcome::Promoted),
            Validation::Failure => self.reject(&meta, &result).await.map(|()| Outcome::Rejected),
            // Recorded once in the payload's history, whichever replica comes first.
            Validation::Handoff => match self.record_durably(&meta, "handoff", result.reason.as_deref().unwrap_or("handed off by its validator")).await {
                Ok(true) => Ok(Outcome::HandedOff),
                Ok(false) => return VerdictReport::new(id, Outcome::AlreadyDecided, "already decided: the payload was handed off"),
                Err(e) => Err(e),
            },
        };
        match applied {
            Ok(outcome) => {
                info!(outcome = outcome.as_str(), "verdict applied");
                let done = match outcome {
                    Outcome::Promoted => "moved to perm and published on the available topic",
                    Outcome::Rejected => "moved to reject",
                    _ => "left in quarantine: handed off",
                };
                VerdictReport::new(id, outcome, done)
            }
            Err(e) => {
                warn!(error = %e, "verdict not applied; it will be retried");
                // Recorded once per failure streak, not on every retry.
                if !self.status().last_is(id, "error") {
                    let msg = format!("the {} verdict could not be applied yet: {e}", result.validation.as_str());
                    self.record(&meta, "error", &msg);
                }
                VerdictReport::new(id, Outcome::Retry, e.to_string())
            }
        }
    }

    /// Copy to perm, advertise, then delete from quarantine: a crash anywhere leaves
    /// the payload in quarantine, so the verdict is applied again, never lost.
    /// (Spans: `promote` for the copy, `advertise` for the `available` message, both
    /// under the verdict's.)
    async fn promote(&self, meta: &ObjectMeta, result: &ValidationResult, advertised: bool) -> Result<()> {
        let started = std::time::Instant::now();
        self.verdict_latency(meta);
        let key = &meta.request_id;
        let copy = self.inner.storage.copy(Bucket::Quarantine, Bucket::Perm, key);
        tracing::Instrument::instrument(copy, tracing::info_span!("promote", request_id = %key)).await?;
        if !advertised {
            self.advertise(meta, result).await?;
            // The `available` message is out: its record is retried here until it is
            // written, not by applying the verdict again (which would publish it twice).
            let done = Decision { validation: "success".into(), advertised: true, by: Some(self.replica().to_string()), at: Some(now_rfc3339()) };
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.inner.storage.update_decision(key, &done).await {
                warn!(error = %e, "advertised, but its record is not written yet; retrying");
                if pause(&self.shutdown_token(), backoff).await {
                    return Err(e);
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        self.metrics().stage(crate::metrics::Stage::Advertised, started.elapsed());
        // Its statuses are stored and delivered before it leaves quarantine: a kill
        // before that leaves it there, and the verdict applied again publishes them.
        let validated = result.reason.as_deref().unwrap_or("validated");
        self.record_verdict(meta, &[("success", validated), ("advertised", "published on the available topic")]).await?;
        self.inner.storage.delete(Bucket::Quarantine, key).await?;
        self.forget_decision(key).await;
        Ok(())
    }

    /// Whether the payload's `available` message is on the topic, published since its
    /// decision was recorded (a minute of clock difference between replicas allowed;
    /// a record with no date: the last day).
    async fn advertised_since(&self, id: &str, d: &Decision) -> Result<bool> {
        let since = age(d).map_or(Duration::from_secs(86_400), |a| a + Duration::from_secs(60));
        self.inner.queue.written_since(&self.settings().topics.available, id, since).await
    }

    /// Whether a decision was recorded by another replica less than [`UNDER_WAY`] ago.
    fn under_way_elsewhere(&self, d: &Decision) -> bool {
        let Some(by) = &d.by else { return false };
        by != self.replica() && age(d).is_some_and(|a| a < UNDER_WAY)
    }

    /// Publishes the `available` message of a promoted payload.
    async fn advertise(&self, meta: &ObjectMeta, result: &ValidationResult) -> Result<()> {
        let key = &meta.request_id;
        let advertise = tracing::info_span!("advertise", request_id = %key);
        let url = tracing::Instrument::instrument(self.url(Bucket::Perm, key), advertise.clone()).await?;
        let available = Available {
            id: result.id.clone().unwrap_or_else(|| key.clone()),
            url,
            service: meta.service.clone(),
            category: meta.category.clone(),
            request_id: key.clone(),
            payload_id: key.clone(),
            account: meta.account.clone(),
            rh_account: meta.account.clone(),
            org_id: meta.org_id.clone(),
            principal: meta.org_id.clone(),
            rh_principal: meta.org_id.clone(),
            b64_identity: meta.b64_identity.clone(),
            satellite_managed: result.satellite_managed,
            size: meta.size,
            sha256: meta.sha256.clone(),
            timestamp: now_rfc3339(),
        };
        let msg = advertise.in_scope(|| Message::json(&self.settings().topics.available, key, &available));
        // Waits out a broker outage rather than give up not knowing whether it was
        // written: applying the verdict again would publish it a second time.
        tracing::Instrument::instrument(self.inner.queue.publish_until_written(msg), advertise).await
    }

    /// The decision record's job is done once the payload left quarantine (a later
    /// verdict finds it in perm or reject). Left behind (S3 down), it is harmless.
    async fn forget_decision(&self, key: &str) {
        if let Err(e) = self.inner.storage.forget_decision(key).await {
            warn!(request_id = key, error = %e, "could not remove a decided payload's decision record");
        }
    }

    /// Received to decided: the payload's wait for its verdict.
    fn verdict_latency(&self, meta: &ObjectMeta) {
        if let Some(waited) = super::status::age(&meta.received_at) {
            self.metrics().stage(crate::metrics::Stage::Verdict, waited);
        }
    }

    async fn reject(&self, meta: &ObjectMeta, result: &ValidationResult) -> Result<()> {
        self.verdict_latency(meta);
        let key = &meta.request_id;
        self.inner.storage.copy(Bucket::Quarantine, Bucket::Reject, key).await?;
        self.record_verdict(meta, &[("rejected", result.reason.as_deref().unwrap_or("refused by its validator"))]).await?;
        self.inner.storage.delete(Bucket::Quarantine, key).await?;
        self.forget_decision(key).await;
        Ok(())
    }

    /// Reads the validation topic until shutdown, applying each verdict before its
    /// offset is committed; malformed messages are counted and skipped, and the loop
    /// survives queue outages.
    pub async fn run_verdict_consumer(self, shutdown: CancellationToken) {
        let topic = self.settings().topics.validation.clone();
        let group = self.settings().consumer_group.clone();
        let (me, stop) = (self.clone(), shutdown.clone());
        // Verdicts for different payloads are applied side by side; one payload's in
        // the order they came (its request id is the message key).
        self.consume_by_key(&topic, &group, &shutdown, VERDICTS_AT_ONCE, move |message| {
            let (me, stop) = (me.clone(), stop.clone());
            async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let report = me.apply_message_from(&message.payload, message.header("traceparent")).await;
                    if report.outcome != Outcome::Retry {
                        return true;
                    }
                    if pause(&stop, backoff).await {
                        return false; // not acked: read again after the restart
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        })
        .await
    }
}

/// The meta of a payload stored without the gateway's (by the services it replaces),
/// completed from the fields its validator echoed: service and category (else
/// `unknown`), identity, and account and org when the object's own metadata had none.
/// The gateway's own record is never overridden.
fn completed(mut meta: ObjectMeta, result: &ValidationResult) -> ObjectMeta {
    if !meta.derived {
        return meta;
    }
    let echo = &result.echo;
    let or_unknown = |have: String, echoed: &Option<String>| match have.is_empty() {
        true => echoed.clone().unwrap_or_else(|| "unknown".into()),
        false => have,
    };
    meta.service = or_unknown(std::mem::take(&mut meta.service), &echo.service);
    meta.category = or_unknown(std::mem::take(&mut meta.category), &echo.category);
    if meta.b64_identity.is_empty() {
        meta.b64_identity = echo.b64_identity.clone().unwrap_or_default();
    }
    meta.account = meta.account.or_else(|| echo.account.clone());
    meta.org_id = meta.org_id.or_else(|| echo.org_id.clone());
    meta
}
