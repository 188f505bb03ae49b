//! One consumer-group member per (topic, group) in this process, shared by every local
//! subscription to it: a task polls the consumer into a small buffer, subscriptions
//! take from the buffer, and each message goes to one of them.
//!
//! At least once, never past an unacked message:
//! - auto commit and auto offset store are off; an offset is stored and committed
//!   only when every message before it in its partition has been acked
//!   ([`Offsets`]);
//! - a delivery dropped without an ack goes back to the front of the local buffer and
//!   is given out again (no seek: its offset was never committed, so a restart or a
//!   rebalance reads it again too);
//! - on a rebalance, what was fetched from a revoked partition is forgotten; its
//!   next owner reads it again from the committed offset (duplicates, never gaps).
//!
//! While the buffer is full the partitions are paused, and the consumer keeps being
//! polled (so it stays in its group however slow its subscribers are).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::offsets::Offsets;
use crate::error::{Error, Result};
use crate::queue::{Delivery, Message, Subscription};

/// Messages fetched ahead of the subscribers; past it the partitions are paused.
const BUFFER: usize = 64;
/// How often stored offsets are committed and the pause is reconsidered.
const TICK: Duration = Duration::from_millis(200);

/// What the reader task and the subscriptions share.
pub(super) struct Shared {
    topic: String,
    group: String,
    state: Mutex<State>,
    /// Wakes subscriptions waiting for a message.
    ready: Notify,
    /// Wakes the reader (acks to commit, the last subscription gone).
    reader: Notify,
    members: AtomicUsize,
}

#[derive(Default)]
struct State {
    buffer: VecDeque<Item>,
    offsets: Offsets,
    /// Partitions are paused because the buffer is full.
    paused: bool,
    /// The reader is gone (no subscription left, or a fatal consumer error).
    closed: bool,
}

enum Item {
    Message(Fetched),
    Error(Error),
}

#[derive(Clone)]
struct Fetched {
    message: Message,
    partition: i32,
    offset: i64,
    epoch: u64,
}

impl Shared {
    /// Whether a new subscription may join this reader.
    pub(super) fn join(self: &Arc<Self>) -> bool {
        let st = self.state.lock().unwrap();
        if st.closed {
            return false;
        }
        self.members.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn deliver(self: &Arc<Self>, f: Fetched) -> Delivery {
        let shared = Arc::clone(self);
        let back = f.clone();
        let (owner, partition, epoch) = (Arc::clone(self), f.partition, f.epoch);
        Delivery::new(f.message, move |acked| shared.settle(back, acked))
            .owned_while(move || owner.state.lock().unwrap().offsets.current(partition, epoch))
    }

    fn settle(&self, f: Fetched, acked: bool) {
        let mut st = self.state.lock().unwrap();
        if acked {
            st.offsets.acked(f.partition, f.offset, f.epoch);
            drop(st);
            self.reader.notify_one();
        } else if st.offsets.current(f.partition, f.epoch) && !st.closed {
            debug!(topic = %self.topic, partition = f.partition, offset = f.offset, "not acked: giving it out again");
            st.buffer.push_front(Item::Message(f));
            drop(st);
            self.ready.notify_waiters();
        }
        // Otherwise the partition was revoked (or the reader is gone): its next
        // owner reads the message again from the committed offset.
    }
}

/// Rebalances: forget revoked partitions, start an epoch for assigned ones, keep the
/// pause on new partitions while the buffer is full.
pub(super) struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(topic = %self.shared.topic, group = %self.shared.group, %error, reason, "kafka consumer");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Commit what is acked while the partitions are still ours.
            store_and_commit(consumer, &self.shared);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut st = self.shared.state.lock().unwrap();
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    st.offsets.assign(e.partition());
                }
                info!(topic = %self.shared.topic, group = %self.shared.group,
                    partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "assigned");
                if st.paused {
                    let _ = consumer.pause(tpl);
                }
            }
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in &revoked {
                    st.offsets.revoke(*p);
                }
                st.buffer.retain(|i| !matches!(i, Item::Message(f) if revoked.contains(&f.partition)));
                info!(topic = %self.shared.topic, group = %self.shared.group, partitions = ?revoked, "revoked");
            }
            Rebalance::Error(e) => warn!(topic = %self.shared.topic, error = %e, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(topic = %self.shared.topic, ?offsets, "offsets committed"),
            // Stored offsets stay stored: the next commit sends them again.
            Err(e) => warn!(topic = %self.shared.topic, error = %e, "offset commit failed; will retry"),
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

/// Stores the commit points that moved and commits them (asynchronously).
fn store_and_commit<C: Consumer<GroupContext>>(consumer: &C, shared: &Shared) {
    let points = shared.state.lock().unwrap().offsets.moved_points();
    if !points.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (p, off) in &points {
            let _ = tpl.add_partition_offset(&shared.topic, *p, Offset::Offset(*off));
        }
        // Refused for partitions no longer assigned: exactly what is wanted.
        if let Err(e) = consumer.store_offsets(&tpl) {
            debug!(topic = %shared.topic, error = %e, "offsets not stored");
        }
    }
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => debug!(topic = %shared.topic, error = %e, "commit not sent"),
    }
}

/// Starts the member of `group` on `topic` and its reader task; the caller holds the
/// first subscription (make it with [`subscription`]).
pub(super) fn start(config: &ClientConfig, topic: &str, group: &str) -> Result<Arc<Shared>> {
    let shared = Arc::new(Shared {
        topic: topic.to_string(),
        group: group.to_string(),
        state: Mutex::new(State::default()),
        ready: Notify::new(),
        reader: Notify::new(),
        // The caller's own subscription.
        members: AtomicUsize::new(1),
    });
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: GroupConsumer = config
        .create_with_context(GroupContext { shared: Arc::clone(&shared) })
        .map_err(|e| Error::QueueUnavailable(format!("cannot create a Kafka consumer: {e}")))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::QueueUnavailable(format!("cannot subscribe to {topic}: {e}")))?;
    tokio::spawn(read(Arc::new(consumer), Arc::clone(&shared)));
    Ok(shared)
}

/// The reader task: poll, buffer, commit, until no subscription is left.
async fn read(consumer: Arc<GroupConsumer>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let mut st = shared.state.lock().unwrap();
            if shared.members.load(Ordering::Acquire) == 0 {
                st.closed = true; // under the lock, so no subscription joins a closing reader
                break;
            }
        }
        tokio::select! {
            r = consumer.recv() => match r {
                Ok(m) => {
                    let mut st = shared.state.lock().unwrap();
                    let epoch = st.offsets.fetched(m.partition(), m.offset());
                    let fetched = Fetched { message: owned(&m), partition: m.partition(), offset: m.offset(), epoch };
                    st.buffer.push_back(Item::Message(fetched));
                    if st.buffer.len() >= BUFFER && !st.paused {
                        st.paused = true;
                        if let Ok(a) = consumer.assignment() {
                            let _ = consumer.pause(&a);
                        }
                    }
                    drop(st);
                    shared.ready.notify_waiters();
                }
                Err(e) => {
                    let fatal = matches!(e, rdkafka::error::KafkaError::MessageConsumptionFatal(_));
                    warn!(topic = %shared.topic, group = %shared.group, error = %e, "kafka consumer error");
                    let mut st = shared.state.lock().unwrap();
                    if !matches!(st.buffer.back(), Some(Item::Error(_))) {
                        st.buffer.push_back(Item::Error(Error::QueueUnavailable(format!(
                            "reading {} in group {}: {e}", shared.topic, shared.group
                        ))));
                    }
                    if fatal {
                        st.closed = true;
                        break;
                    }
                    drop(st);
                    shared.ready.notify_waiters();
                }
            },
            _ = tick.tick() => {
                store_and_commit(&*consumer, &shared);
                let mut st = shared.state.lock().unwrap();
                if st.paused && st.buffer.len() <= BUFFER / 2 {
                    st.paused = false;
                    if let Ok(a) = consumer.assignment() {
                        let _ = consumer.resume(&a);
                    }
                }
            }
            _ = shared.reader.notified() => {}
        }
    }
    shared.ready.notify_waiters();
    // Last commit, then leave the group; both block, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || {
        let points = shared.state.lock().unwrap().offsets.moved_points();
        if !points.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, off) in &points {
                let _ = tpl.add_partition_offset(&shared.topic, *p, Offset::Offset(*off));
            }
            let _ = consumer.store_offsets(&tpl);
        }
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
        info!(topic = %shared.topic, group = %shared.group, "leaving the consumer group");
        drop(consumer);
    })
    .await;
}

pub(super) fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let v = h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                    (h.key.to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: m.topic().to_string(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        headers,
        payload: bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    }
}

/// Leaves the reader when a subscription is dropped.
struct Member(Arc<Shared>);

impl Drop for Member {
    fn drop(&mut self) {
        if self.0.members.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.notify_one();
        }
    }
}

/// A subscription that takes from the shared buffer. Ends when the reader is gone.
pub(super) fn subscription(shared: Arc<Shared>) -> Subscription {
    Box::pin(futures_util::stream::unfold(Member(shared), |member| async move {
        loop {
            let shared = Arc::clone(&member.0);
            let notified = shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let item = {
                let mut st = shared.state.lock().unwrap();
                match st.buffer.pop_front() {
                    Some(i) => Some(i),
                    None if st.closed => return None,
                    None => None,
                }
            };
            match item {
                Some(Item::Message(f)) => return Some((Ok(shared.deliver(f)), member)),
                Some(Item::Error(e)) => return Some((Err(e), member)),
                None => notified.await,
            }
        }
    }))
}
