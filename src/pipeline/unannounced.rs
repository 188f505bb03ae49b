//! Payloads stored but never announced. A gateway killed between storing a payload and
//! the broker's delivery report leaves it in quarantine with no announcement (its
//! client got no 2xx). On a durable queue nothing announces it again at start-up, so a
//! periodic sweep does: a payload in quarantine with no status at two looks in a row is
//! announced (at least once: consumers de-duplicate by request id), so none waits in
//! quarantine forever, and whatever the broker already holds still points at a payload.
//!
//! Two looks a sweep period apart (longer than an announcement may take) keep the sweep
//! off uploads in flight: by the second look such a payload has its `announced` status
//! (in this replica's book, or from another replica through the status topic) or was
//! removed after a failed announcement.
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

    /// One look: payloads in quarantine without any status become suspects; a suspect
    /// of the previous look that still has none, or one marked unconfirmed, is
    /// announced. Returns how many were.
    pub async fn sweep_quarantine(&self, suspects: &mut HashSet<String>) -> Result<usize> {
        let mut now = HashSet::new();
        let mut announced = 0;
        for key in self.inner.storage.list(Bucket::Quarantine).await? {
            if self.inner.status.history(&key).is_some() || self.inner.in_hand.holds(&key) {
                continue;
            }
            let (why, announced_now) = if suspects.contains(&key) {
                // Still there, still without a status, a whole period later.
                let why = "announced by the quarantine sweep: stored, but its announcement was never confirmed";
                (why, self.announce_stored(&key).await?)
            } else {
                match self.inner.storage.head(Bucket::Quarantine, &key).await? {
                    Some(meta) if meta.unconfirmed.is_some() => {
                        let why = "announced by the quarantine sweep: its client was answered 503 before the broker confirmed its announcement";
                        (why, self.announce_meta(meta).await?)
                    }
                    _ => {
                        now.insert(key);
                        continue;
                    }
                }
            };
            let Some(meta) = announced_now else {
                continue;
            };
            self.record(&meta, "announced", why);
            self.metrics().reannounced();
            announced += 1;
        }
        *suspects = now;
        Ok(announced)
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
