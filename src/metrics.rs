//! Counters for `/metrics`, in the Prometheus text format. Hot paths use atomics;
//! labelled counters sit behind a mutex and are touched once per request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Default)]
pub struct Metrics {
    bytes_received: AtomicU64,
    bytes_stored: AtomicU64,
    outbox_retries: AtomicU64,
    reannounced: AtomicU64,
    dead_lettered: AtomicU64,
    dropped: AtomicU64,
    store_seconds_sum_micros: AtomicU64,
    store_count: AtomicU64,
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// The labelled counter families: (name, label name, help).
const FAMILIES: [(&str, &str, &str); 5] = [
    ("upload_gateway_uploads_accepted_total", "service", "Uploads stored and announced."),
    ("upload_gateway_uploads_refused_total", "reason", "Uploads refused, by reason."),
    ("upload_gateway_verdicts_total", "outcome", "Verdicts and validation messages, by outcome."),
    ("upload_gateway_http_requests_total", "status", "HTTP responses, by status code."),
    ("upload_gateway_dropped_messages_total", "topic", "Messages the in-process queue dropped past its cap, by topic."),
];

impl Metrics {
    fn inc(&self, family: &'static str, label: &str) {
        *self
            .labelled
            .lock()
            .unwrap()
            .entry((family, label.to_string()))
            .or_default() += 1;
    }

    pub fn bytes_received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn upload_accepted(&self, service: &str, size: u64) {
        self.bytes_stored.fetch_add(size, Ordering::Relaxed);
        self.inc(FAMILIES[0].0, service);
    }

    pub fn upload_refused(&self, reason: &str) {
        self.inc(FAMILIES[1].0, reason);
    }

    pub fn verdict(&self, outcome: &str) {
        self.inc(FAMILIES[2].0, outcome);
    }

    pub fn http_response(&self, status: u16) {
        self.inc(FAMILIES[3].0, &status.to_string());
    }

    pub fn dropped_message(&self, topic: &str) {
        self.inc(FAMILIES[4].0, topic);
    }

    pub fn outbox_retry(&self) {
        self.outbox_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A message refused for good, sent to the dead-letter topic.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// A message that could be neither delivered nor dead-lettered.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reannounced(&self) {
        self.reannounced.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_store(&self, d: Duration) {
        self.store_seconds_sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.store_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of one labelled counter (tests read it through `/metrics` too).
    pub fn get(&self, family: &str, label: &str) -> u64 {
        self.labelled
            .lock()
            .unwrap()
            .iter()
            .find(|((f, l), _)| *f == family && l == label)
            .map_or(0, |(_, v)| *v)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let plain = [
            ("upload_gateway_received_bytes_total", "Payload bytes read from clients.", &self.bytes_received),
            ("upload_gateway_stored_bytes_total", "Payload bytes of accepted uploads.", &self.bytes_stored),
            ("upload_gateway_outbox_retries_total", "Publishes retried after the 2xx (status messages).", &self.outbox_retries),
            ("upload_gateway_reannounced_total", "Payloads found stored but unannounced in quarantine, and announced.", &self.reannounced),
            ("upload_gateway_dead_lettered_messages_total", "Messages the queue refused for good, sent to the dead-letter topic.", &self.dead_lettered),
            ("upload_gateway_dropped_messages_total", "Messages that could be neither delivered nor dead-lettered.", &self.dropped),
        ];
        for (name, help, v) in plain {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        let name = "upload_gateway_store_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from first byte to stored.\n# TYPE {name} summary\n{name}_sum {}\n{name}_count {}",
            self.store_seconds_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.store_count.load(Ordering::Relaxed)
        );
        let labelled = self.labelled.lock().unwrap();
        for (family, label, help) in FAMILIES {
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} counter");
            for ((f, l), v) in labelled.iter() {
                if *f == family {
                    let _ = writeln!(out, "{family}{{{label}=\"{}\"}} {v}", l.replace('\\', "\\\\").replace('"', "\\\""));
                }
            }
        }
        out
    }
}
