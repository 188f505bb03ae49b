//! The pipeline on its own, no server: local disk and the in-process queue, driven
//! through the same calls the protocols make. Timing-dependent paths (visibility
//! timeout, outbox retries) run on tokio's paused clock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::auth::{Services, Validator};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::messages::{Announce, Available};
use crate::queue::{memory::MemoryQueue, Message, Queue, Subscription};
use crate::storage::{conformance, local::LocalDisk, Bucket};

mod resumable;

struct Fixture {
    pipeline: Pipeline,
    queue: Arc<dyn Queue>,
    storage: Arc<dyn Storage>,
    _dir: tempfile::TempDir,
}

async fn fixture_with(queue: Arc<dyn Queue>, args: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["gw", "--data-dir", dir.path().to_str().unwrap()];
    argv.extend_from_slice(args);
    let settings = Config::from_args(argv).unwrap().settings().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalDisk::open(dir.path()).await.unwrap());
    let links = links::Links::new(vec![7; 32], "http://127.0.0.1:1", Duration::from_secs(60));
    let pipeline = Pipeline::new(
        settings,
        storage.clone(),
        queue.clone(),
        links,
        Arc::new(Metrics::default()),
        Arc::new(Credentials::new(crate::auth::Table::single_token("ops", "test-token"))),
        CancellationToken::new(),
    );
    Fixture { pipeline, queue, storage, _dir: dir }
}

async fn fixture() -> Fixture {
    fixture_with(Arc::new(MemoryQueue::default()), &[]).await
}

fn header(content_type: &str) -> UploadHeader {
    UploadHeader { content_type: content_type.into(), ..Default::default() }
}

fn body(bytes: &'static [u8]) -> BodyStream {
    Box::pin(futures_util::stream::iter(bytes.chunks(3).map(|c| Ok(Bytes::from_static(c)))))
}

/// A validator for every service, as the embedded default's token is.
fn validator() -> Validator {
    Validator { name: "ops".into(), services: Services::All }
}

fn ops() -> Caller {
    Caller { identity: None, validator: Some(validator()) }
}

const ADVISOR: &str = "application/vnd.redhat.advisor.collection+tgz";

impl Fixture {
    async fn upload(&self, bytes: &'static [u8]) -> Receipt {
        let staged = self.pipeline.store(header(ADVISOR), body(bytes)).await.unwrap();
        staged.announce().await.unwrap()
    }

    /// The messages on a topic so far, read in a group of its own.
    async fn messages(&self, topic: &str) -> Vec<Message> {
        let mut sub = self.queue.subscribe(topic, &uuid::Uuid::new_v4().to_string()).await.unwrap();
        let mut out = Vec::new();
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            let d = d.unwrap();
            out.push(d.message.clone());
            d.ack();
        }
        out
    }

    async fn held(&self, bucket: Bucket) -> Vec<String> {
        self.storage.list(bucket).await.unwrap()
    }
}

#[tokio::test]
async fn ingest_stores_announces_and_records() {
    let f = fixture().await;
    let r = f.upload(b"hello pipeline").await;
    assert_eq!((r.service.as_str(), r.category.as_str(), r.size), ("advisor", "collection", 14));
    assert_eq!(f.held(Bucket::Quarantine).await, [r.request_id.to_string()]);
    let announced = f.messages("platform.upload.advisor").await;
    assert_eq!(announced.len(), 1);
    let a: Announce = serde_json::from_slice(&announced[0].payload).unwrap();
    assert_eq!((a.request_id.as_str(), a.size, a.sha256.as_str()), (r.request_id.as_str(), 14, r.sha256.as_str()));
    let statuses: Vec<String> = f.pipeline.history(&ops(), r.request_id.as_str()).await.unwrap().into_iter().map(|e| e.status).collect();
    assert_eq!(statuses, ["received", "announced"]);
}

#[tokio::test]
async fn ingest_refuses_before_and_while_bytes_arrive_and_keeps_nothing() {
    let f = fixture_with(Arc::new(MemoryQueue::default()), &["--service-limits", "advisor=8"]).await;
    let e = f.pipeline.store(header("text/plain"), body(b"x")).await.err().unwrap();
    assert!(matches!(e, Error::UnsupportedMediaType), "{e}");
    let e = f.pipeline.store(header(ADVISOR), body(b"more than eight bytes")).await.err().unwrap();
    assert!(matches!(e, Error::TooLarge { limit: 8, .. }), "{e}");
    let mut h = header(ADVISOR);
    h.request_id = Some("../etc".into());
    assert!(matches!(f.pipeline.store(h, body(b"x")).await.err().unwrap(), Error::BadRequest(_)));
    assert!(f.held(Bucket::Quarantine).await.is_empty());
    assert!(f.messages("platform.upload.advisor").await.is_empty());
}

#[tokio::test]
async fn a_staged_payload_that_is_never_announced_is_removed() {
    let f = fixture().await;
    let staged = f.pipeline.store(header(ADVISOR), body(b"abandoned")).await.unwrap();
    assert_eq!(f.held(Bucket::Quarantine).await.len(), 1);
    drop(staged);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.held(Bucket::Quarantine).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the dropped payload is still in quarantine");
        tokio::task::yield_now().await;
    }
    assert!(f.messages("platform.upload.advisor").await.is_empty());
}

#[tokio::test]
async fn a_verdict_is_applied_once() {
    let f = fixture().await;
    let id = f.upload(b"to promote").await.request_id.to_string();
    let first = f.pipeline.apply_verdict(&validator(), &id, "success", None).await;
    assert_eq!(first.outcome, Outcome::Promoted, "{}", first.message);
    assert_eq!(f.held(Bucket::Perm).await, [id.clone()]);
    assert!(f.held(Bucket::Quarantine).await.is_empty());
    // The same verdict again, and a different one: nothing moves, nothing is advertised twice.
    for v in ["success", "failure"] {
        let again = f.pipeline.apply_verdict(&validator(), &id, v, None).await;
        assert_eq!(again.outcome, Outcome::AlreadyDecided, "{}", again.message);
    }
    assert!(f.held(Bucket::Reject).await.is_empty());
    let available = f.messages("platform.upload.available").await;
    assert_eq!(available.len(), 1);
    let a: Available = serde_json::from_slice(&available[0].payload).unwrap();
    assert_eq!((a.request_id.as_str(), a.size), (id.as_str(), 10));
}

#[tokio::test]
async fn failure_rejects_and_bad_verdicts_say_why() {
    let f = fixture().await;
    let id = f.upload(b"to reject").await.request_id.to_string();
    let r = f.pipeline.apply_verdict(&validator(), &id, "failure", Some("not a tarball".into())).await;
    assert_eq!(r.outcome, Outcome::Rejected);
    assert_eq!(f.held(Bucket::Reject).await, [id.clone()]);
    assert_eq!(f.pipeline.history(&ops(), &id).await.unwrap().last().unwrap().status_msg, "not a tarball");
    let r = f.pipeline.apply_verdict(&validator(), &id, "maybe", None).await;
    assert_eq!(r.outcome, Outcome::Invalid);
    assert!(r.message.contains("expected success, failure or handoff"), "{}", r.message);
    assert_eq!(f.pipeline.apply_verdict(&validator(), "", "success", None).await.outcome, Outcome::Invalid);
    assert_eq!(f.pipeline.apply_verdict(&validator(), "nosuchid", "success", None).await.outcome, Outcome::UnknownId);
    assert_eq!(f.pipeline.apply_message(b"{not json").await.outcome, Outcome::Invalid);
    assert!(f.messages("platform.upload.available").await.is_empty());
}

#[tokio::test]
async fn history_of_unknown_or_malformed_ids_is_not_found() {
    let f = fixture().await;
    for id in ["0123456789abcdef0123456789abcdef", "../../etc/passwd", ""] {
        assert!(matches!(f.pipeline.history(&ops(), id).await, Err(Error::NotFound(_))), "{id:?}");
        assert!(matches!(f.pipeline.follow(&ops(), id).await.err(), Some(Error::NotFound(_))), "{id:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lease_past_the_visibility_timeout_goes_to_another_subscriber() {
    let f = fixture_with(Arc::new(MemoryQueue::default()), &["--visibility-timeout-secs", "30"]).await;
    let mut a = Box::pin(f.pipeline.subscribe(&ops(), "advisor").await.unwrap());
    let id = f.upload(b"leased").await.request_id.to_string();
    let first = a.next().await.unwrap().unwrap();
    assert_eq!(first.announce.request_id, id);
    let mut b = Box::pin(f.pipeline.subscribe(&ops(), "advisor").await.unwrap());
    // B gets nothing while A holds it...
    assert!(tokio::time::timeout(Duration::from_secs(29), b.next()).await.is_err());
    // ...and gets it once A let the visibility timeout pass without a verdict.
    let second = tokio::time::timeout(Duration::from_secs(5), b.next()).await.expect("handed to B").unwrap().unwrap();
    assert_eq!(second.announce.request_id, id);
    // B's verdict settles the lease: nobody gets it again.
    assert_eq!(f.pipeline.apply_verdict(&validator(), &id, "success", None).await.outcome, Outcome::Promoted);
    assert!(tokio::time::timeout(Duration::from_secs(120), a.next()).await.is_err());
    assert!(tokio::time::timeout(Duration::from_secs(1), b.next()).await.is_err());
}

#[tokio::test]
async fn subscribing_to_an_unknown_service_is_refused() {
    let f = fixture().await;
    let e = f.pipeline.subscribe(&ops(), "nosuch").await.err().unwrap();
    assert!(matches!(e, Error::BadRequest(ref m) if m.contains("not a valid service")), "{e}");
}

#[tokio::test]
async fn the_sweep_announces_a_stored_but_unannounced_payload_once() {
    // A durable queue (the sweep runs only on one): its `announced` events are stored.
    let f = fixture_with(Faulty::new(|_| None), &[]).await;
    let announced = f.upload(b"announced normally").await.request_id.to_string();
    f.pipeline.flush(Duration::from_secs(5)).await.unwrap();
    // A payload stored by a gateway killed before its announcement: in quarantine,
    // with no status.
    let orphan = "0rphan0000000000000000000000000a";
    f.storage
        .put(Bucket::Quarantine, orphan, conformance::meta(orphan), conformance::payload(b"orphan".to_vec(), 1 << 20))
        .await
        .unwrap();
    let mut suspects = HashSet::new();
    assert_eq!(f.pipeline.sweep_quarantine(&mut suspects).await.unwrap(), 0, "first look: only suspects");
    assert_eq!(suspects, HashSet::from([orphan.to_string()]));
    assert_eq!(f.pipeline.sweep_quarantine(&mut suspects).await.unwrap(), 1, "second look announces it");
    assert_eq!(f.pipeline.sweep_quarantine(&mut suspects).await.unwrap(), 0, "and never again");
    let keys: Vec<String> = f.messages("platform.upload.testareno").await.into_iter().map(|m| m.key).collect();
    assert_eq!(keys, [orphan]);
    let keys: Vec<String> = f.messages("platform.upload.advisor").await.into_iter().map(|m| m.key).collect();
    assert_eq!(keys, [announced], "the payload announced at upload is not announced again");
    assert_eq!(f.pipeline.metrics().render().lines().find(|l| l.starts_with("upload_gateway_reannounced_total ")), Some("upload_gateway_reannounced_total 1"));
}

/// History is read from storage: a second pipeline on the same storage (another
/// replica, or this one after a restart, with an empty book) tells the whole history of
/// a payload the first one took in and decided, in order; a handoff is recorded once.
#[tokio::test]
async fn history_comes_from_storage_not_from_the_book() {
    let f = fixture_with(Faulty::new(|_| None), &[]).await;
    let id = f.upload(b"decided on the first").await.request_id.to_string();
    assert_eq!(f.pipeline.apply_verdict(&validator(), &id, "success", None).await.outcome, Outcome::Promoted);
    let handed = f.upload(b"handed off").await.request_id.to_string();
    assert_eq!(f.pipeline.apply_verdict(&validator(), &handed, "handoff", None).await.outcome, Outcome::HandedOff);
    f.pipeline.flush(Duration::from_secs(5)).await.unwrap();

    let settings = f.pipeline.settings().clone();
    let links = links::Links::new(vec![7; 32], "http://127.0.0.1:1", Duration::from_secs(60));
    let credentials = Arc::new(Credentials::new(crate::auth::Table::single_token("ops", "test-token")));
    let other = Pipeline::new(settings, f.storage.clone(), f.queue.clone(), links, Arc::new(Metrics::default()), credentials, CancellationToken::new());
    assert!(other.status().history(&id).is_none(), "the second pipeline's book knows nothing");
    let statuses = |h: Vec<crate::messages::PayloadStatus>| h.into_iter().map(|e| e.status).collect::<Vec<_>>();
    assert_eq!(statuses(other.history(&ops(), &id).await.unwrap()), ["received", "announced", "success", "advertised"]);
    assert_eq!(statuses(other.history(&ops(), &handed).await.unwrap()), ["received", "announced", "handoff"]);
    assert_eq!(other.apply_verdict(&validator(), &handed, "handoff", None).await.outcome, Outcome::AlreadyDecided, "handed off once, on any replica");
    assert!(matches!(other.history(&ops(), "00000000000000000000000000000000").await, Err(Error::NotFound(_))));
}

/// The in-process queue behind a fault of the test's choosing: `fault` sees each
/// publish and may fail it.
struct Faulty {
    inner: MemoryQueue,
    fault: Box<dyn Fn(&Message) -> Option<Error> + Send + Sync>,
}

impl Faulty {
    fn new(fault: impl Fn(&Message) -> Option<Error> + Send + Sync + 'static) -> Arc<Faulty> {
        Arc::new(Faulty { inner: MemoryQueue::default(), fault: Box::new(fault) })
    }
}

#[async_trait::async_trait]
impl Queue for Faulty {
    async fn publish(&self, message: Message) -> Result<()> {
        match (self.fault)(&message) {
            Some(e) => Err(e),
            None => self.inner.publish(message).await,
        }
    }
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription> {
        self.inner.subscribe(topic, group).await
    }
    async fn tail(&self, topic: &str, since: Duration) -> Result<Subscription> {
        self.inner.tail(topic, since).await
    }
    async fn written_since(&self, topic: &str, key: &str, since: Duration) -> Result<bool> {
        self.inner.written_since(topic, key, since).await
    }
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    fn durable(&self) -> bool {
        true
    }
    async fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).await
    }
}

/// A replica that applied a verdict but died before its statuses reached the status
/// topic: the payload is still in quarantine, its verdict not acknowledged, and the
/// verdict applied again (here on another replica) publishes the stored statuses, so
/// the topic has them; `available` went out once.
#[tokio::test(start_paused = true)]
async fn a_verdict_whose_statuses_were_not_delivered_is_applied_again_and_they_go_out() {
    // Replica A's status messages never reach the broker (it "dies" with them queued).
    let dead = Arc::new(std::sync::Mutex::new(String::new()));
    let queue = {
        let dead = dead.clone();
        Faulty::new(move |m| {
            let from_a = m.headers.iter().any(|(k, v)| k == status::ORIGIN_HEADER && *v == *dead.lock().unwrap());
            (m.topic == "platform.payload-status" && from_a).then(|| Error::QueueUnavailable("replica A is gone (test)".into()))
        })
    };
    let f = fixture_with(queue.clone(), &[]).await;
    *dead.lock().unwrap() = f.pipeline.replica().to_string();
    let id = f.upload(b"decided, its statuses lost").await.request_id.to_string();
    let report = f.pipeline.apply_verdict(&validator(), &id, "success", None).await;
    assert_eq!(report.outcome, Outcome::Retry, "not acknowledged before its statuses are out: {report:?}");
    assert!(f.storage.head(Bucket::Quarantine, &id).await.unwrap().is_some(), "still in quarantine");

    let settings = f.pipeline.settings().clone();
    let links = links::Links::new(vec![7; 32], "http://127.0.0.1:1", Duration::from_secs(60));
    let credentials = Arc::new(Credentials::new(crate::auth::Table::single_token("ops", "test-token")));
    let b = Pipeline::new(settings, f.storage.clone(), f.queue.clone(), links, Arc::new(Metrics::default()), credentials, CancellationToken::new());
    assert_eq!(b.apply_verdict(&validator(), &id, "success", None).await.outcome, Outcome::Promoted);
    assert!(f.storage.head(Bucket::Quarantine, &id).await.unwrap().is_none(), "out of quarantine");
    assert!(f.storage.head(Bucket::Perm, &id).await.unwrap().is_some(), "in perm");

    let mut statuses = queue.subscribe("platform.payload-status", "t").await.unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), statuses.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
        seen.push(v["status"].as_str().unwrap().to_string());
        d.ack();
    }
    assert_eq!(seen, ["success", "advertised"], "the stored statuses, published by the replica that applied the verdict again");
    let mut available = queue.subscribe("platform.upload.available", "t").await.unwrap();
    let mut times = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), available.next()).await {
        times += 1;
        d.ack();
    }
    assert_eq!(times, 1, "available once");
}

/// A replica recorded a success, published `available` and died before noting it: the
/// same verdict applied again (a minute later, on another replica) finds the message on
/// the topic and does not publish it again; with no message there, it publishes it.
#[tokio::test]
async fn a_verdict_applied_again_after_its_replica_died_publishes_available_once() {
    use crate::storage::Decision;
    let f = fixture().await;
    let available = f.pipeline.settings().topics.available.clone();
    let a_minute_ago = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    let died_after = |advertised_by_the_dead: bool| {
        let (f, available, at) = (&f, available.clone(), a_minute_ago.clone());
        async move {
            let id = f.upload(b"decided by a replica that died").await.request_id.to_string();
            let theirs = Decision { validation: "success".into(), advertised: false, by: Some("dead".into()), at: Some(at) };
            assert_eq!(f.storage.decide(&id, &theirs).await.unwrap(), None);
            if advertised_by_the_dead {
                f.queue.publish(Message::json(&available, &id, &serde_json::json!({"request_id": id}))).await.unwrap();
            }
            assert_eq!(f.pipeline.apply_verdict(&validator(), &id, "success", None).await.outcome, Outcome::Promoted);
            id
        }
    };
    let published = died_after(true).await;
    let not_yet = died_after(false).await;
    let mut sub = f.queue.subscribe(&available, "count").await.unwrap();
    let mut keys = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        keys.push(d.message.key.clone());
        d.ack();
    }
    assert_eq!(keys.iter().filter(|k| **k == published).count(), 1, "published by the dead replica, not again: {keys:?}");
    assert_eq!(keys.iter().filter(|k| **k == not_yet).count(), 1, "not published before: published now: {keys:?}");
}

#[tokio::test(start_paused = true)]
async fn the_outbox_retries_until_delivered_in_order() {
    // The broker is away for the first three publishes.
    let failures = AtomicUsize::new(3);
    let queue = Faulty::new(move |_| {
        let away = failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        away.then(|| Error::QueueUnavailable("broker away (test)".into()))
    });
    let metrics = Arc::new(Metrics::default());
    let outbox = outbox::Outbox::start(queue.clone(), metrics.clone(), "dead".into());
    for i in 0..5 {
        outbox.send(Message::json("platform.payload-status", "same-key", &i));
    }
    assert_eq!(outbox.pending(), 5);
    outbox.drained(Duration::from_secs(60)).await;
    assert_eq!(outbox.pending(), 0);
    let mut sub = queue.subscribe("platform.payload-status", "g").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = sub.next().await.unwrap().unwrap();
        got.push(String::from_utf8(d.message.payload.to_vec()).unwrap());
        d.ack();
    }
    assert_eq!(got, ["0", "1", "2", "3", "4"], "one key's messages keep their order across retries");
    assert!(metrics.render().contains("upload_gateway_outbox_retries_total 3"));
}

#[tokio::test(start_paused = true)]
async fn a_message_refused_for_good_is_dead_lettered_and_the_rest_go_on() {
    // A broker's size limit: larger messages are refused for good.
    let queue = Faulty::new(|m| (m.payload.len() > 6000).then(|| Error::QueueRefused(format!("{} bytes is over 6000", m.payload.len()))));
    let metrics = Arc::new(Metrics::default());
    let outbox = outbox::Outbox::start(queue.clone(), metrics.clone(), "platform.upload.dead-letter".into());
    outbox.send(Message::json("platform.payload-status", "k", &"before"));
    outbox.send(Message::json("platform.payload-status", "k", &"x".repeat(10_000)));
    outbox.send(Message::json("platform.payload-status", "k", &"after"));
    outbox.drained(Duration::from_secs(60)).await;
    assert_eq!(outbox.pending(), 0, "the refused message does not block the ones behind it");
    let mut sub = queue.subscribe("platform.payload-status", "g").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = sub.next().await.unwrap().unwrap();
        got.push(String::from_utf8(d.message.payload.to_vec()).unwrap());
        d.ack();
    }
    assert_eq!(got, ["\"before\"", "\"after\""]);
    let mut dead = queue.subscribe("platform.upload.dead-letter", "g").await.unwrap();
    let d = dead.next().await.unwrap().unwrap();
    let letter: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
    assert_eq!((letter["topic"].as_str(), letter["key"].as_str(), letter["size"].as_u64()), (Some("platform.payload-status"), Some("k"), Some(10_002)));
    assert!(letter["reason"].as_str().unwrap().contains("over 6000"));
    assert!(metrics.render().contains("upload_gateway_dead_lettered_messages_total 1"));
    assert!(metrics.render().contains("upload_gateway_outbox_retries_total 0"), "not retried");
}

#[tokio::test]
async fn a_long_verdict_reason_is_applied_and_cut_in_the_status() {
    let f = fixture().await;
    let id = f.upload(b"reasoned").await.request_id.to_string();
    let reason = "r".repeat(3 << 20);
    let r = f.pipeline.apply_verdict(&validator(), &id, "failure", Some(reason)).await;
    assert_eq!(r.outcome, Outcome::Rejected);
    let last = f.pipeline.history(&ops(), &id).await.unwrap().pop().unwrap();
    assert!(last.status_msg.len() <= status::STATUS_MSG_LIMIT);
    assert!(last.status_msg.ends_with(&format!("[cut: {} bytes]", 3 << 20)), "{}", &last.status_msg[4000..]);
    f.pipeline.flush(Duration::from_secs(5)).await.unwrap();
    let statuses = f.messages("platform.payload-status").await;
    assert!(statuses.iter().all(|m| m.payload.len() < 8192), "every status message stays small");
}

#[tokio::test]
async fn a_verdict_for_a_payload_whose_meta_cannot_be_read_is_answered_not_retried_forever() {
    let f = fixture().await;
    // Larger than a small payload, so that its meta is a file of its own (a small one's
    // lives in the write-ahead log).
    static LARGE: [u8; 300 << 10] = [b'm'; 300 << 10];
    let id = f.upload(&LARGE).await.request_id.to_string();
    std::fs::write(f._dir.path().join("quarantine/.meta").join(format!("{id}.json")), b"{not json").unwrap();
    let msg = serde_json::json!({"request_id": id, "validation": "success"}).to_string();
    let report = tokio::time::timeout(Duration::from_secs(5), f.pipeline.apply_message(msg.as_bytes())).await.unwrap();
    assert_eq!(report.outcome, Outcome::Invalid, "{report:?}");
    assert!(report.message.contains("cannot be read"), "{report:?}");
}
