//! Where messages go: topics and consumer groups behind one trait, in process (the
//! embedded default) or on Kafka.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::Result;

pub mod kafka;
pub mod memory;

/// One message: a JSON value keyed by request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    /// The request id.
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl Message {
    /// A message carrying `value` as JSON, and the W3C `traceparent` of the span it is
    /// made in when traces are on (so the consumer's work joins the payload's trace).
    pub fn json<T: serde::Serialize>(topic: &str, key: &str, value: &T) -> Self {
        let headers = crate::telemetry::traceparent(&tracing::Span::current())
            .map(|t| vec![("traceparent".to_string(), t)])
            .unwrap_or_default();
        Message {
            topic: topic.to_string(),
            key: key.to_string(),
            headers,
            payload: serde_json::to_vec(value)
                .expect("contract messages always serialize")
                .into(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A message handed to one member of a consumer group. Call [`Delivery::ack`] once it
/// is handled; a delivery dropped without an ack is given out again.
pub struct Delivery {
    pub message: Message,
    settle: Option<Box<dyn FnOnce(bool) + Send>>,
    /// Whether this consumer still owns the message (Kafka: its partition was not
    /// revoked by a rebalance since it was read); always true when not set.
    owned: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Delivery {
    /// `settle(true)` is called on ack, `settle(false)` when dropped unacked.
    pub fn new(message: Message, settle: impl FnOnce(bool) + Send + 'static) -> Self {
        Delivery {
            message,
            settle: Some(Box::new(settle)),
            owned: None,
        }
    }

    /// With a check of whether the message is still this consumer's.
    pub fn owned_while(mut self, owned: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.owned = Some(Box::new(owned));
        self
    }

    /// False once another consumer of the group owns the message (a rebalance gave its
    /// partition away): it will be delivered there, so whoever holds it here should let
    /// it go.
    pub fn still_owned(&self) -> bool {
        self.owned.as_ref().is_none_or(|f| f())
    }

    pub fn ack(mut self) {
        if let Some(f) = self.settle.take() {
            f(true)
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(f) = self.settle.take() {
            f(false)
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("message", &self.message).finish()
    }
}

/// A member's share of a topic: deliveries, or errors while the queue is unreachable.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>;

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Publishes a message and returns once it is durable (on Kafka: the delivery
    /// report of an idempotent, acks=all producer). Errors are `QueueUnavailable`
    /// (surely not written) or `QueueUnconfirmed` (the outcome is unknown: it may be).
    async fn publish(&self, message: Message) -> Result<()>;

    /// Publishes a message and waits however long the broker is away, so it is written
    /// once: never `QueueUnconfirmed` (a message whose outcome is unknown would be sent
    /// again, and could be there twice). For messages no client waits for (`available`).
    async fn publish_until_written(&self, message: Message) -> Result<()> {
        self.publish(message).await
    }

    /// Joins consumer group `group` on `topic`: each message goes to one member of the
    /// group. A new group starts at the oldest message still kept.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription>;

    /// Whether a message with this key was written to `topic` from `since` ago on, read
    /// to the topic's end as it is when asked (in no group). How a replica learns that
    /// another one, killed before it could note it, published a payload's `available`.
    async fn written_since(&self, topic: &str, key: &str, since: Duration) -> Result<bool>;

    /// Every message published on `topic` from `since` ago on, to this reader alone: no
    /// group, nothing committed, nothing left on the broker when it is dropped (what
    /// each replica reads in full, e.g. the status topic). Acks change nothing. (The
    /// in-process queue keeps no times: from its end.)
    async fn tail(&self, topic: &str, since: Duration) -> Result<Subscription>;

    /// Ok when the queue answers (readiness).
    async fn check(&self) -> Result<()>;

    /// Whether a published message survives a restart of the gateway. When not (the
    /// in-process queue), the gateway announces again at start-up what quarantine holds.
    fn durable(&self) -> bool;

    /// Waits (at most `timeout`) until everything published has been delivered.
    async fn flush(&self, timeout: Duration) -> Result<()>;
}
