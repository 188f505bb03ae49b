//! `/metrics`, through the Prometheus project's own Rust client (`prometheus-client`):
//! typed families with label structs, histograms an operator can aggregate across
//! replicas, exposed as OpenMetrics text. Chosen over the `metrics` facade because each
//! gateway (and each test's gateway in one process) owns its registry: no global
//! recorder.
//!
//! Names and units follow Prometheus conventions: `upload_gateway_` prefix, seconds and
//! bytes, `_total` on counters.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::render`] (what Prometheus asks for).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::render_text`] (the classic text format, for clients
/// that do not ask for OpenMetrics: the contract's).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

macro_rules! label {
    ($name:ident, $field:ident) => {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct $name {
            $field: String,
        }
    };
}
label!(ServiceLabel, service);
label!(ReasonLabel, reason);
label!(OutcomeLabel, outcome);
label!(StatusLabel, status);
label!(TopicLabel, topic);
label!(StageLabel, stage);
label!(KindLabel, kind);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct S3Labels {
    operation: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, 0.5 ms to about 65 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Bytes, 1 KiB to 4 GiB.
fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1024.0, 4.0, 12))
}

/// A stage of a payload's life, for [`Metrics::stage`].
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    /// First byte to stored.
    Stored,
    /// Stored to announced (the queue's acknowledgement: Kafka's delivery report).
    Announced,
    /// Received to its verdict applied.
    Verdict,
    /// Verdict to `available` published.
    Advertised,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Stored => "stored",
            Stage::Announced => "announced",
            Stage::Verdict => "verdict",
            Stage::Advertised => "advertised",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    received_bytes: Counter,
    stored_bytes: Counter,
    outbox_retries: Counter,
    reannounced: Counter,
    dead_lettered: Counter,
    status_events_unstored: Counter,
    accepted: Family<ServiceLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    verdicts: Family<OutcomeLabel, Counter>,
    http_responses: Family<StatusLabel, Counter>,
    dropped: Family<TopicLabel, Counter>,
    kafka_errors: Family<KindLabel, Counter>,
    resumable: Family<KindLabel, Counter>,
    resumable_bytes: Counter,
    requests: Histograms<RequestLabels>,
    payload_size: Histograms<ServiceLabel>,
    stages: Histograms<StageLabel>,
    s3_requests: Histograms<S3Labels>,
    in_flight: Gauge,
    subscribers: Family<ServiceLabel, Gauge>,
    held: Family<ServiceLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("upload_gateway");
        let m = Metrics {
            received_bytes: Counter::default(),
            stored_bytes: Counter::default(),
            outbox_retries: Counter::default(),
            reannounced: Counter::default(),
            dead_lettered: Counter::default(),
            status_events_unstored: Counter::default(),
            accepted: Family::default(),
            refused: Family::default(),
            verdicts: Family::default(),
            http_responses: Family::default(),
            dropped: Family::default(),
            kafka_errors: Family::default(),
            resumable: Family::default(),
            resumable_bytes: Counter::default(),
            requests: Family::new_with_constructor(latency),
            payload_size: Family::new_with_constructor(sizes),
            stages: Family::new_with_constructor(latency),
            s3_requests: Family::new_with_constructor(latency),
            in_flight: Gauge::default(),
            subscribers: Family::default(),
            held: Family::default(),
            registry: Registry::default(),
        };
        r.register_with_unit("received", "Payload bytes read from clients", Unit::Bytes, m.received_bytes.clone());
        r.register_with_unit("stored", "Payload bytes of accepted uploads", Unit::Bytes, m.stored_bytes.clone());
        r.register("outbox_retries", "Publishes retried after the 2xx (status messages)", m.outbox_retries.clone());
        r.register("reannounced", "Payloads found stored but unannounced in quarantine, and announced", m.reannounced.clone());
        r.register("dead_lettered_messages", "Messages the queue refused for good, sent to the dead-letter topic", m.dead_lettered.clone());
        r.register("status_events_unstored", "Status events given up on after retrying to store them in their payload's history", m.status_events_unstored.clone());
        r.register("uploads_accepted", "Uploads stored and announced, by service", m.accepted.clone());
        r.register("uploads_refused", "Uploads refused, by reason", m.refused.clone());
        r.register("verdicts", "Verdicts and validation messages, by outcome", m.verdicts.clone());
        r.register("http_requests", "HTTP responses (REST and gRPC), by status code", m.http_responses.clone());
        r.register(
            "dropped_messages",
            "Messages dropped, by topic: past the in-process queue's cap, or neither delivered nor dead-lettered",
            m.dropped.clone(),
        );
        r.register("kafka_produce_errors", "Kafka publishes that failed, by kind (not_persisted, possibly_persisted, refused)", m.kafka_errors.clone());
        r.register(
            "resumable_uploads",
            "Resumable uploads by event: created, finished (stored and announced), cancelled, expired (removed by the expiry sweep)",
            m.resumable.clone(),
        );
        r.register_with_unit("resumable_committed", "Bytes of resumable uploads made durable (committed offsets advanced)", Unit::Bytes, m.resumable_bytes.clone());
        r.register_with_unit(
            "request_duration",
            "Request duration by protocol (rest, grpc), method (route or gRPC method) and status (HTTP status or gRPC code); for server-streaming methods, until the response starts",
            Unit::Seconds,
            m.requests.clone(),
        );
        r.register_with_unit("payload_size", "Size of accepted payloads, by service", Unit::Bytes, m.payload_size.clone());
        r.register_with_unit(
            "stage_duration",
            "Time per stage of a payload's life: stored (first byte to stored), announced (stored to the queue's ack), verdict (received to verdict applied), advertised (verdict to available published)",
            Unit::Seconds,
            m.stages.clone(),
        );
        r.register_with_unit("s3_request_duration", "S3 calls by operation and result (ok, error)", Unit::Seconds, m.s3_requests.clone());
        r.register("uploads_in_flight", "Uploads being received or stored now", m.in_flight.clone());
        r.register("subscribers", "gRPC Subscribe streams open, by service", m.subscribers.clone());
        r.register("held_payloads", "Payloads handed to a gRPC subscriber and not decided yet, by service", m.held.clone());
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("UPLOAD_GATEWAY_COMMIT").into(),
            })
            .set(1);
        r.register("build_info", "The gateway's version and commit (value 1)", build);
        Metrics { registry: r, ..m }
    }

    pub fn bytes_received(&self, n: u64) {
        self.received_bytes.inc_by(n);
    }

    pub fn resumable(&self, event: &str) {
        self.resumable.get_or_create(&KindLabel { kind: event.into() }).inc();
    }

    pub fn resumable_bytes(&self, n: u64) {
        self.resumable_bytes.inc_by(n);
    }

    pub fn upload_accepted(&self, service: &str, size: u64) {
        self.stored_bytes.inc_by(size);
        let label = ServiceLabel { service: service.into() };
        self.accepted.get_or_create(&label).inc();
        self.payload_size.get_or_create(&label).observe(size as f64);
    }

    pub fn upload_refused(&self, reason: &str) {
        self.refused.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
    }

    pub fn verdict(&self, outcome: &str) {
        self.verdicts.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }

    pub fn http_response(&self, status: u16) {
        self.http_responses.get_or_create(&StatusLabel { status: status.to_string() }).inc();
    }

    /// A finished request: `protocol` rest or grpc, `method` its route or gRPC method,
    /// `status` its HTTP status or gRPC code name.
    pub fn request(&self, protocol: &str, method: &str, status: &str, took: Duration) {
        let labels = RequestLabels { protocol: protocol.into(), method: method.into(), status: status.into() };
        self.requests.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// A message dropped on `topic`: past the in-process queue's cap, or one that could
    /// be neither delivered nor dead-lettered.
    pub fn dropped_message(&self, topic: &str) {
        self.dropped.get_or_create(&TopicLabel { topic: topic.into() }).inc();
    }

    pub fn outbox_retry(&self) {
        self.outbox_retries.inc();
    }

    /// A message refused for good, sent to the dead-letter topic.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    pub fn status_event_unstored(&self) {
        self.status_events_unstored.inc();
    }

    pub fn reannounced(&self) {
        self.reannounced.inc();
    }

    /// A Kafka publish that failed: `kind` is not_persisted, possibly_persisted or refused.
    pub fn kafka_error(&self, kind: &str) {
        self.kafka_errors.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    pub fn observe_store(&self, d: Duration) {
        self.stage(Stage::Stored, d);
    }

    pub fn stage(&self, stage: Stage, d: Duration) {
        self.stages.get_or_create(&StageLabel { stage: stage.as_str().into() }).observe(d.as_secs_f64());
    }

    /// One S3 call (every attempt the SDK makes).
    pub fn s3_request(&self, operation: &str, ok: bool, d: Duration) {
        let labels = S3Labels { operation: operation.into(), result: if ok { "ok" } else { "error" }.into() };
        self.s3_requests.get_or_create(&labels).observe(d.as_secs_f64());
    }

    /// Counts an upload in flight until the guard drops.
    pub fn upload_in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Subscribers of `service`: +1 when a stream opens, -1 when it ends.
    pub fn subscribers(&self, service: &str, delta: i64) {
        self.subscribers.get_or_create(&ServiceLabel { service: service.into() }).inc_by(delta);
    }

    /// Payloads of `service` held for a subscriber: +1 when handed out, -1 when released.
    pub fn held(&self, service: &str, delta: i64) {
        self.held.get_or_create(&ServiceLabel { service: service.into() }).inc_by(delta);
    }

    /// The value of one sample of a counter or gauge family with one label, as
    /// exposed: `get("upload_gateway_verdicts_total", "promoted")` (tests read it).
    pub fn get(&self, family: &str, label: &str) -> u64 {
        let text = self.render();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, rest) = l.split_once('{')?;
                let (labels, value) = rest.rsplit_once("} ")?;
                let quoted = labels.split_once("=\"")?.1.strip_suffix('"')?;
                (name == family && quoted == label).then(|| value.trim().parse::<f64>().ok()).flatten()
            })
            .map_or(0, |v| v as u64)
    }

    /// The classic Prometheus text exposition ([`TEXT_CONTENT_TYPE`]): the OpenMetrics
    /// one with counters' `# HELP`/`# TYPE` named as their samples (`_total`), and no
    /// `# UNIT` or `# EOF` lines.
    pub fn render_text(&self) -> String {
        let open = self.render();
        let counters: std::collections::HashSet<&str> =
            open.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
            match meta {
                Some((p, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let name = if counters.contains(name) { format!("{name}_total") } else { name.to_string() };
                    out.push_str(&format!("{p}{name} {tail}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// An upload counted in `upload_gateway_uploads_in_flight` until dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_labels_and_get_reads_them() {
        let m = Metrics::new();
        m.upload_accepted("advisor", 10_240);
        m.verdict("promoted");
        m.verdict("promoted");
        m.dropped_message("t");
        m.request("rest", "/api/ingress/v1/upload", "202", Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("upload_gateway_uploads_accepted_total{service=\"advisor\"} 1"), "{text}");
        assert!(text.contains("upload_gateway_request_duration_seconds_count{protocol=\"rest\",method=\"/api/ingress/v1/upload\",status=\"202\"} 1"), "{text}");
        assert!(text.contains("upload_gateway_build_info{"), "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        let classic = m.render_text();
        assert!(classic.contains("# TYPE upload_gateway_verdicts_total counter\n"), "{classic}");
        assert!(classic.contains("upload_gateway_verdicts_total{outcome=\"promoted\"} 2\n"), "{classic}");
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"), "{classic}");
        assert_eq!(m.get("upload_gateway_verdicts_total", "promoted"), 2);
        assert_eq!(m.get("upload_gateway_dropped_messages_total", "t"), 1);
        assert_eq!(m.get("upload_gateway_verdicts_total", "rejected"), 0);
    }
}
