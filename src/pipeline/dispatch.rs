//! Work for validators that subscribe over gRPC: each announcement of a service goes
//! to one subscriber, which holds it (a lease) until its verdict arrives. A lease
//! whose subscriber leaves is given back to the queue, and so to another subscriber;
//! one that outlives the visibility timeout is handed straight to another subscriber
//! of the same service (back to the queue when there is none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::Pipeline;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::messages::Announce;
use crate::queue::{Delivery, Subscription};
use crate::storage::Bucket;

/// Announcements one subscriber may hold without verdicts before it gets more.
pub const MAX_IN_FLIGHT: usize = 16;

/// One payload for a subscriber: the announce message, with a fresh URL.
#[derive(Debug, Clone)]
pub struct Work {
    pub announce: Announce,
    /// The announce message as JSON, as it stands on the service topic.
    pub json: String,
}

#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<String, Lease>>,
    /// The live subscribers, and where to hand them a lease another one let expire.
    members: Mutex<HashMap<u64, Member>>,
    next_id: AtomicU64,
}

struct Lease {
    subscriber: u64,
    generation: u64,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
    _counted: Counted,
}

/// Counts one in a per-service gauge (held payloads, subscribers) while it lives.
struct Counted {
    metrics: Arc<crate::metrics::Metrics>,
    service: String,
    gauge: fn(&crate::metrics::Metrics, &str, i64),
}

impl Counted {
    fn new(metrics: &Arc<crate::metrics::Metrics>, service: &str, gauge: fn(&crate::metrics::Metrics, &str, i64)) -> Counted {
        gauge(metrics, service, 1);
        Counted { metrics: metrics.clone(), service: service.to_string(), gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics, &self.service, -1);
    }
}

struct Member {
    service: String,
    inbox: mpsc::UnboundedSender<Delivery>,
}

impl Leases {
    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The verdict arrived: the delivery is done.
    pub fn settle(&self, request_id: &str) {
        let lease = self.held.lock().unwrap().remove(request_id);
        if let Some(l) = lease {
            l.delivery.ack();
        }
    }

    fn join(&self, id: u64, service: &str) -> mpsc::UnboundedReceiver<Delivery> {
        let (inbox, rx) = mpsc::unbounded_channel();
        let member = Member { service: service.to_string(), inbox };
        self.members.lock().unwrap().insert(id, member);
        rx
    }

    /// A subscriber left: it gets nothing more, and what it held goes back (unacked)
    /// to the queue, so to another subscriber.
    fn leave(&self, subscriber: u64) {
        self.members.lock().unwrap().remove(&subscriber);
        let released: Vec<Lease> = {
            let mut held = self.held.lock().unwrap();
            let ids: Vec<String> = held
                .iter()
                .filter(|(_, l)| l.subscriber == subscriber)
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| held.remove(k)).collect()
        };
        if !released.is_empty() {
            tracing::info!(count = released.len(), "a subscriber left: giving back what it held");
        }
        drop(released); // dropping an unacked delivery gives it back to the queue
    }

    /// Drops the leases of deliveries this replica no longer owns (a rebalance gave
    /// their partition to another replica, which delivers them to its subscribers):
    /// each payload is held by one subscriber at a time, and the subscriber here gets
    /// its room back. Returns how many were dropped.
    pub fn drop_disowned(&self) -> usize {
        let gone: Vec<Lease> = {
            let mut held = self.held.lock().unwrap();
            let ids: Vec<String> = held.iter().filter(|(_, l)| !l.delivery.still_owned()).map(|(k, _)| k.clone()).collect();
            ids.iter().filter_map(|k| held.remove(k)).collect()
        };
        if !gone.is_empty() {
            tracing::info!(count = gone.len(), "a rebalance gave these payloads' partitions away: no longer held here");
        }
        gone.len() // dropping a delivery of a revoked partition leaves it to its new owner
    }

    /// The visibility timeout passed without a verdict: another subscriber of the
    /// service gets the payload (the one with the fewest leases), else the queue.
    fn expire(&self, request_id: &str, generation: u64) {
        let lease = {
            let mut held = self.held.lock().unwrap();
            if !held.get(request_id).is_some_and(|l| l.generation == generation) {
                return;
            }
            held.remove(request_id)
        };
        let Some(lease) = lease else { return };
        let Lease { subscriber, delivery, .. } = lease;
        let target = {
            let members = self.members.lock().unwrap();
            let service = members.get(&subscriber).map(|m| m.service.clone());
            let load = |id: &u64| {
                self.held.lock().unwrap().values().filter(|l| l.subscriber == *id).count()
            };
            members
                .iter()
                .filter(|(id, m)| **id != subscriber && Some(&m.service) == service.as_ref())
                .min_by_key(|(id, _)| load(id))
                .map(|(id, m)| (*id, m.inbox.clone()))
        };
        match target {
            Some((to, inbox)) => {
                tracing::info!(request_id, from = subscriber, to, "visibility timeout: handing the payload to another subscriber");
                // When that subscriber is gone meanwhile, the delivery is dropped, so
                // it goes back to the queue.
                let _ = inbox.send(delivery);
            }
            None => {
                tracing::info!(request_id, "visibility timeout: giving the payload back to the queue");
                drop(delivery);
            }
        }
    }
}

/// Leaves the subscribers when its stream is dropped (it disconnected).
struct Subscriber {
    id: u64,
    pipeline: Pipeline,
    _counted: Counted,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.pipeline.inner.leases.leave(self.id);
    }
}

struct State {
    sub: Subscription,
    inbox: mpsc::UnboundedReceiver<Delivery>,
    me: Subscriber,
    service: String,
    permits: Arc<Semaphore>,
}

impl Pipeline {
    /// Every second, lets go of held payloads whose partitions a rebalance gave to
    /// another replica ([`Leases::drop_disowned`]), until shutdown.
    pub async fn run_lease_check(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            if super::consume::pause(&shutdown, std::time::Duration::from_secs(1)).await {
                return;
            }
            self.inner.leases.drop_disowned();
        }
    }

    /// A validator's share of one service's announcements; its credential must cover
    /// the service.
    pub async fn subscribe(&self, caller: &Caller, service: &str) -> Result<impl Stream<Item = Result<Work>> + Send + 'static> {
        caller.validator()?;
        if !self.settings().valid_services.iter().any(|s| s == service) {
            return Err(Error::bad_request(format!(
                "{service:?} is not a valid service ({})",
                self.settings().valid_services.join(", ")
            )));
        }
        caller.may_validate(service)?;
        let topic = self.settings().topics.announce(service);
        let group = format!("{}.subscribe.{service}", self.settings().consumer_group);
        let sub = self.inner.queue.subscribe(&topic, &group).await?;
        let leases = &self.inner.leases;
        let id = leases.next();
        let inbox = leases.join(id, service);
        let state = State {
            sub,
            inbox,
            me: Subscriber { id, pipeline: self.clone(), _counted: Counted::new(self.metrics(), service, crate::metrics::Metrics::subscribers) },
            service: service.to_string(),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        let closing = self.closing();
        let work = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                let permit = st.permits.clone().acquire_owned().await.ok()?;
                let delivery = tokio::select! {
                    biased;
                    Some(d) = st.inbox.recv() => d,
                    item = st.sub.next() => match item? {
                        Ok(d) => d,
                        Err(e) => return Some((Err(e), st)),
                    },
                };
                match st.me.pipeline.lease(&st.service, st.me.id, delivery, permit).await {
                    Ok(Some(work)) => return Some((Ok(work), st)),
                    Ok(None) => continue,
                    Err(e) => return Some((Err(e), st)),
                }
            }
        });
        // At shutdown the stream ends and what this subscriber held goes back.
        Ok(work.take_until(closing))
    }

    /// Turns a delivery into work for a subscriber, or skips it (acked) when it is
    /// for another service, unreadable, or already decided.
    async fn lease(
        &self,
        service: &str,
        subscriber: u64,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
    ) -> Result<Option<Work>> {
        let msg = &delivery.message;
        if msg.header("service").is_some_and(|s| s != service) {
            delivery.ack();
            return Ok(None);
        }
        let mut announce: Announce = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable announcement");
                delivery.ack();
                return Ok(None);
            }
        };
        if self.inner.storage.head(Bucket::Quarantine, &announce.request_id).await?.is_none() {
            delivery.ack(); // decided meanwhile
            return Ok(None);
        }
        announce.url = self.url(Bucket::Quarantine, &announce.request_id).await?;
        let json = serde_json::to_string(&announce).map_err(|e| Error::Internal(e.to_string()))?;
        let leases = &self.inner.leases;
        let generation = leases.next();
        let id = announce.request_id.clone();
        let old = leases.held.lock().unwrap().insert(
            id.clone(),
            Lease { subscriber, generation, delivery, _permit: permit, _counted: Counted::new(self.metrics(), service, crate::metrics::Metrics::held) },
        );
        if let Some(old) = old {
            old.delivery.ack(); // the same payload delivered twice: one lease is enough
        }
        let pipeline = self.clone();
        let timeout = self.settings().visibility_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            pipeline.inner.leases.expire(&id, generation);
        });
        Ok(Some(Work { announce, json }))
    }
}
