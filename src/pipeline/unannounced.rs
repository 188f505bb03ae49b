//! Payloads stored but never announced. A gateway killed between storing a payload and
//! the broker's delivery report leaves it in quarantine with no announcement (its
//! client got no 2xx). On a durable queue nothing announces it again at start-up, so a
//! periodic sweep does: a payload in quarantine with no event in its durable history
//! at two looks in a row is announced, so none waits in quarantine forever, and
//! whatever the broker already holds still points at a payload. Judged from storage,
//! so replicas agree and a restart changes nothing: a payload announced, decided or
//! handed off has events and is never announced again; of several replicas sweeping,
//! the one whose claim is recorded first announces (a create-only event).
//!
//! An upload's announcement writes nothing to storage: every replica hears it on the
//! status topic ([`Announced`]), and a sweep that finds the payload still undecided
//! stores its `announced` event then (most payloads are decided before that, and their
//! verdict's events say the same). A replica reads the status topic from three sweep
//! periods (at least ten minutes) back when it starts, so a restart forgets nothing a
//! sweep still needs, unless every replica was down for longer than that: then what
//! was announced in the last period before may be announced again (at least once;
//! consumers de-duplicate by request id).
//!
//! Two looks a sweep period apart (longer than an announcement may take) keep the sweep
//! off uploads in flight: by the second look such a payload's announcement has been
//! heard or it was removed after a failed announcement.
//!
//! Neither look touches a payload this process still has in hand: being stored,
//! announced, or removed after a refusal ([`InHand`]). Without that, a look could
//! announce a refused payload whose removal was still under way (slow during an outage)
//! and leave an announcement that points at nothing.
//!
//! A payload whose client was answered 503 while the broker had not confirmed its
//! announcement (`unconfirmed` in its meta: the broker may have written it, or not) is
//! no upload in flight: it is announced at the first look. Whether the first
//! announcement reached the topic is not asked (it cannot be told cheaply); announcing
//! again is what at least once allows, and a phantom (an announcement whose payload
//! was thrown away) is what keeping the payload rules out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::consume::pause;
use super::Pipeline;
use crate::error::Result;
use crate::storage::Bucket;

impl Pipeline {
    /// Looks at quarantine every `period` until shutdown.
    pub async fn run_quarantine_sweep(self, period: Duration, shutdown: CancellationToken) {
        let mut suspects = HashSet::new();
        loop {
            if pause(&shutdown, period).await {
                return;
            }
            match self.sweep_quarantine(&mut suspects).await {
                Ok(0) => {}
                Ok(n) => info!(count = n, "announced payloads found stored but unannounced"),
                Err(e) => warn!(error = %e, "quarantine sweep failed; trying again next period"),
            }
        }
    }

    /// One look: payloads in quarantine with no event in their durable history become
    /// suspects; a suspect of the previous look that still
    /// has none, or one marked unconfirmed, is announced, by the one replica whose
    /// claim on it is recorded first. Returns how many this replica announced.
    pub async fn sweep_quarantine(&self, suspects: &mut HashSet<String>) -> Result<usize> {
        let mut now = HashSet::new();
        let mut announced = 0;
        for key in self.inner.storage.list(Bucket::Quarantine).await? {
            if self.inner.in_hand.holds(&key) {
                continue;
            }
            let names = self.inner.storage.event_names(&key).await?;
            if names.iter().any(|name| !name.starts_with(CLAIM)) {
                continue; // announced (or further along)
            }
            if let Some(date) = self.inner.announced.date(&key) {
                // Announced (here, or heard on the status topic), still undecided: its
                // `announced` event is stored now, so no later look, on any replica or
                // after a restart, needs to have heard it.
                if let Some(meta) = self.inner.storage.head(Bucket::Quarantine, &key).await? {
                    let mut event = super::status::make_event(&meta, "announced", super::status::ANNOUNCED);
                    event.date = date;
                    self.store_event(&event).await?;
                }
                continue;
            }
            let why = if suspects.contains(&key) {
                // Still there, still without an event, a whole period later.
                "announced by the quarantine sweep: stored, but its announcement was never confirmed"
            } else {
                match self.inner.storage.head(Bucket::Quarantine, &key).await? {
                    Some(meta) if meta.unconfirmed.is_some() => {
                        "announced by the quarantine sweep: its client was answered 503 before the broker confirmed its announcement"
                    }
                    _ => {
                        now.insert(key);
                        continue;
                    }
                }
            };
            if !self.claim(&key, !names.is_empty()).await? {
                continue; // another replica is announcing it
            }
            let Some(meta) = self.announce_stored(&key).await? else {
                continue;
            };
            self.record_durably(&meta, "announced", why).await?;
            self.metrics().reannounced();
            announced += 1;
        }
        *suspects = now;
        Ok(announced)
    }

    /// Claims the announcement of a payload found unannounced, for this replica: a
    /// create-only event in its history, so of several replicas sweeping at once one
    /// announces it. A claim older than [`Pipeline::claim_stale`] with no announcement
    /// after it (its replica died in between) can be claimed again, by a new claim.
    async fn claim(&self, key: &str, claimed_before: bool) -> Result<bool> {
        let history = if claimed_before { self.inner.storage.events(key).await? } else { Vec::new() };
        let claims: Vec<&Vec<u8>> = history.iter().filter(|(n, _)| n.starts_with(CLAIM)).map(|(_, b)| b).collect();
        if let Some(last) = claims.last() {
            let last = serde_json::from_slice::<serde_json::Value>(last).unwrap_or_default();
            let age = last["date"].as_str().and_then(super::status::age);
            // Its own claim (its announcement failed: the broker was away) this replica
            // takes again at once; another's, once its holder had time to announce.
            let mine = last["replica"].as_str() == Some(self.replica());
            if !mine && age.is_none_or(|a| a < self.claim_stale()) {
                return Ok(false);
            }
        }
        let name = format!("{CLAIM}-{:04}", claims.len() + 1);
        let claim = serde_json::json!({ "replica": self.replica(), "date": crate::messages::now_rfc3339() });
        self.inner.storage.add_event(key, &name, claim.to_string().as_bytes()).await
    }
}

/// Names of the sweep's claims in a payload's history (not status events: `track`
/// skips them).
const CLAIM: &str = "sweep-claim";

impl Pipeline {
    /// How old another replica's claim must be before this one may claim the payload
    /// again: long enough for its holder to have announced it (twice the publish
    /// timeout) and to have stored its event (a sweep period).
    fn claim_stale(&self) -> Duration {
        self.settings().kafka.as_ref().map_or(Duration::from_secs(300), |k| k.publish_timeout * 2 + k.quarantine_sweep)
    }
}

/// The payloads announced lately, with the date of their `announced` event: recorded
/// here, or heard on the status topic (which each replica reads from a few sweep
/// periods back when it starts). The sweep's evidence for a payload still undecided
/// whose `announced` event is not stored yet: an upload's announcement costs no storage
/// write; only a payload still undecided at a sweep's look gets its event stored.
pub(crate) struct Announced {
    keep: Duration,
    recent: Mutex<HashMap<String, (std::time::Instant, String)>>,
}

impl Announced {
    pub fn new(keep: Duration) -> Self {
        Announced { keep, recent: Mutex::new(HashMap::new()) }
    }

    pub fn note(&self, key: &str, date: &str) {
        let mut recent = self.recent.lock().unwrap();
        let now = std::time::Instant::now();
        if recent.len() >= 1024 && recent.len().is_power_of_two() {
            recent.retain(|_, (at, _)| now.duration_since(*at) < self.keep);
        }
        recent.entry(key.to_string()).or_insert_with(|| (now, date.to_string()));
    }

    /// When `key` was announced, if lately.
    pub fn date(&self, key: &str) -> Option<String> {
        let recent = self.recent.lock().unwrap();
        recent.get(key).filter(|(at, _)| at.elapsed() < self.keep).map(|(_, d)| d.clone())
    }
}

/// The keys this process is storing, announcing, or removing after a refusal.
#[derive(Default, Clone)]
pub(crate) struct InHand(Arc<Mutex<HashMap<String, usize>>>);

impl InHand {
    /// Holds `key` until the returned guard is dropped (the same key may be held twice:
    /// two uploads with one supplied id).
    pub fn hold(&self, key: &str) -> Hold {
        *self.0.lock().unwrap().entry(key.to_string()).or_default() += 1;
        Hold { set: self.clone(), key: key.to_string() }
    }

    pub fn holds(&self, key: &str) -> bool {
        self.0.lock().unwrap().contains_key(key)
    }
}

pub(crate) struct Hold {
    set: InHand,
    key: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.set.0.lock().unwrap();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}
