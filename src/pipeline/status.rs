//! Status tracking: every milestone of a payload, kept in its durable history in
//! storage (what `track` and `GetStatus` read, on any replica), published on the
//! status topic, and held for a while in this replica's book (what `WatchStatus`
//! follows live).

use std::collections::{HashMap, VecDeque};

use std::sync::Mutex;

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast;

use super::Pipeline;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::messages::{now_rfc3339, PayloadStatus};
use crate::queue::Message;
use crate::storage::ObjectMeta;

/// Payloads whose recent events are kept in memory (for `WatchStatus`, and events not
/// stored yet); the oldest are forgotten past it. History is read from storage.
pub const DEFAULT_CAPACITY: usize = 50_000;

/// Header of a status message naming the gateway replica that recorded it.
pub const ORIGIN_HEADER: &str = "upload-gateway-replica";

/// The longest `status_msg` kept (bytes); longer ones are cut, with a marker saying so.
pub const STATUS_MSG_LIMIT: usize = 4096;

/// `text` cut to at most `limit` bytes (on a character boundary), with a marker that
/// says how much was left out; unchanged when it fits.
pub fn cut(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    let marker = format!(" [cut: {} bytes]", text.len());
    let mut end = limit.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end]).into()
}

/// Statuses after which nothing more happens to a payload.
pub const TERMINAL: [&str; 4] = ["advertised", "rejected", "handoff", "error"];

pub struct StatusBook {
    capacity: usize,
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    entries: HashMap<String, Entry>,
    order: VecDeque<String>,
}

struct Entry {
    events: Vec<PayloadStatus>,
    watchers: Option<broadcast::Sender<PayloadStatus>>,
}

impl StatusBook {
    pub fn new(capacity: usize) -> Self {
        StatusBook {
            capacity: capacity.max(1),
            inner: Mutex::new(Book::default()),
        }
    }

    /// Adds an event to its payload's history and tells its watchers.
    pub fn add(&self, event: PayloadStatus) {
        let mut book = self.inner.lock().unwrap();
        let book = &mut *book;
        let entry = match book.entries.get_mut(&event.request_id) {
            Some(e) => e,
            None => {
                book.order.push_back(event.request_id.clone());
                while book.order.len() > self.capacity {
                    if let Some(old) = book.order.pop_front() {
                        book.entries.remove(&old);
                    }
                }
                book.entries
                    .entry(event.request_id.clone())
                    .or_insert(Entry {
                        events: Vec::new(),
                        watchers: None,
                    })
            }
        };
        if let Some(tx) = &entry.watchers {
            let _ = tx.send(event.clone());
        }
        // In date order: events of one payload may come from several replicas, and
        // one read from the status topic may be older than one recorded here.
        let at = entry
            .events
            .iter()
            .rposition(|e| e.date <= event.date)
            .map_or(0, |i| i + 1);
        entry.events.insert(at, event);
    }

    /// Adds an event unless the payload's history already has it (a status message
    /// read twice). Returns whether it was added.
    pub fn add_new(&self, event: PayloadStatus) -> bool {
        let known = self
            .inner
            .lock()
            .unwrap()
            .entries
            .get(&event.request_id)
            .is_some_and(|e| e.events.contains(&event));
        if !known {
            self.add(event);
        }
        !known
    }

    /// The history of one payload, oldest first; `None` when unknown.
    pub fn history(&self, request_id: &str) -> Option<Vec<PayloadStatus>> {
        self.inner
            .lock()
            .unwrap()
            .entries
            .get(request_id)
            .map(|e| e.events.clone())
    }

    /// Whether the latest event of a payload has this status.
    pub fn last_is(&self, request_id: &str, status: &str) -> bool {
        self.inner
            .lock()
            .unwrap()
            .entries
            .get(request_id)
            .and_then(|e| e.events.last())
            .is_some_and(|e| e.status == status)
    }

    /// A receiver of the events of one payload recorded or read from now on.
    pub fn listen(&self, request_id: &str) -> broadcast::Receiver<PayloadStatus> {
        let mut book = self.inner.lock().unwrap();
        let book = &mut *book;
        if !book.entries.contains_key(request_id) {
            book.order.push_back(request_id.to_string());
            while book.order.len() > self.capacity {
                if let Some(old) = book.order.pop_front() {
                    book.entries.remove(&old);
                }
            }
        }
        let entry = book.entries.entry(request_id.to_string()).or_insert(Entry { events: Vec::new(), watchers: None });
        entry.watchers.get_or_insert_with(|| broadcast::channel(64).0).subscribe()
    }
}

impl Pipeline {
    /// A payload's history, oldest first, as `track` and `GetStatus` answer it: to
    /// the org that owns it, or a validator of its service. To anyone else, and for
    /// an id that is not one the gateway gives out, it is as unknown as any other.
    ///
    /// Read from storage, so every replica answers the same, right after the upload's
    /// 2xx and after any restart: `received` (and `announced`, which a 2xx implies)
    /// from the payload's meta, every later event from its durable history
    /// ([`Storage::add_event`](crate::storage::Storage::add_event)). Events this
    /// replica recorded and has not stored yet are added from its book. A payload
    /// stored by the services the gateway replaces gets one event from the bucket
    /// that holds it.
    pub async fn history(&self, caller: &Caller, request_id: &str) -> Result<Vec<PayloadStatus>> {
        if !super::request_id::is_valid(request_id) {
            return Err(unknown(request_id));
        }
        let history = self.stored_history(request_id).await?;
        self.readable(caller, request_id, &history)?;
        Ok(history)
    }

    /// A payload's events so far and then as they happen, until a terminal status or
    /// the drain (`WatchStatus`); to the same callers as [`Pipeline::history`]. Events
    /// come as this replica records them or reads them on the status topic, and from
    /// storage every [`WATCH_POLL`] (so none is missed while the topic is away).
    pub async fn follow(&self, caller: &Caller, request_id: &str) -> Result<impl Stream<Item = PayloadStatus> + Send + 'static> {
        // Listening before reading the history: nothing falls between the two.
        let live = self.status().listen(request_id);
        let past = self.history(caller, request_id).await?;
        let state = Follow { pipeline: self.clone(), id: request_id.to_string(), seen: Vec::new(), queue: past.into(), live, stored: None, done: false };
        let events = futures_util::stream::unfold(state, |mut f| async move {
            loop {
                if f.done {
                    return None;
                }
                if let Some(e) = f.queue.pop_front() {
                    if seen_before(&f.seen, &e) {
                        continue;
                    }
                    f.seen.push(e.clone());
                    // A terminal status ends the stream unless more came after it (a
                    // payload that recovered from an `error` is followed to its end).
                    f.done = TERMINAL.contains(&e.status.as_str()) && f.queue.iter().all(|n| seen_before(&f.seen, n));
                    return Some((e, f));
                }
                tokio::select! {
                    got = f.live.recv() => match got {
                        Ok(e) => f.queue.push_back(e),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = tokio::time::sleep(WATCH_POLL) => f.poll_storage().await,
                }
            }
        });
        Ok(events.take_until(self.closing()))
    }

    /// Everything known of a payload: its meta, its stored events, and what this
    /// replica's book has that is not stored yet; unknown when none says anything.
    async fn stored_history(&self, request_id: &str) -> Result<Vec<PayloadStatus>> {
        let storage = &self.inner.storage;
        let (located, stored) = tokio::join!(self.locate(request_id), storage.events(request_id));
        let located = located?;
        let mut events = parse_events(&stored?);
        for e in self.status().history(request_id).unwrap_or_default() {
            if !seen_before(&events, &e) {
                events.push(e);
            }
        }
        if let Some((bucket, meta)) = located {
            if meta.derived {
                if events.is_empty() {
                    events.push(legacy_event(bucket, meta));
                }
            } else {
                let received = received_event(&meta);
                if !seen_before(&events, &received) {
                    events.push(received);
                }
                // Stored with a confirmed announcement: its client had its 2xx.
                if meta.unconfirmed.is_none() && !events.iter().any(|e| e.status == "announced") {
                    let mut announced = received_event(&meta);
                    announced.status = "announced".into();
                    announced.status_msg = ANNOUNCED.into();
                    events.push(announced);
                }
            }
        }
        if events.is_empty() {
            return Err(unknown(request_id));
        }
        in_date_order(&mut events);
        Ok(events)
    }

    fn readable(&self, caller: &Caller, request_id: &str, history: &[PayloadStatus]) -> Result<()> {
        let first = history.first().ok_or_else(|| unknown(request_id))?;
        let owner = first.org_id.as_deref().or(first.account.as_deref());
        if caller.may_read(owner) {
            Ok(())
        } else {
            Err(unknown(request_id))
        }
    }

    /// Records a milestone: in the book at once, on the status topic through the
    /// outbox (retried until delivered, in order per payload), and in the payload's
    /// durable history in the background (retried; `received` needs no write: the
    /// payload's meta says it, and `announced` the quarantine sweep stores if the
    /// payload is still undecided then: `unannounced.rs`). For milestones on the verdict's path, which must be
    /// stored before the payload moves on, [`Pipeline::record_durably`].
    /// The message is cut to [`STATUS_MSG_LIMIT`] (a validator's reason can be long),
    /// so every status message stays far below what a broker accepts.
    pub(crate) fn record(&self, meta: &ObjectMeta, status: &str, msg: &str) {
        let event = self.publish_event(meta, status, msg);
        match status {
            "received" => {}
            // The quarantine sweep stores it if the payload is still undecided at its look.
            "announced" => self.inner.announced.note(&event.request_id, &event.date),
            _ => {
                let me = self.clone();
                self.inner.storing.spawn(async move { me.store_event_retrying(&event).await });
            }
        }
    }

    /// [`Pipeline::record`], with the event in the payload's durable history before
    /// this returns (a handoff, an `announced` the sweep makes). False when the
    /// history already had an event of this name (a handoff recorded by another
    /// replica); then nothing is published. A verdict's milestones:
    /// [`Pipeline::record_verdict`].
    pub(crate) async fn record_durably(&self, meta: &ObjectMeta, status: &str, msg: &str) -> Result<bool> {
        let event = make_event(meta, status, msg);
        let new = self.store_event(&event).await?;
        if new {
            self.publish(event);
        }
        Ok(new)
    }

    /// The milestones of an applied verdict (`success` and `advertised`, or
    /// `rejected`): stored side by side, published in the order given, and delivered
    /// to the status topic before this returns, so the payload leaves quarantine and
    /// the verdict is acknowledged only once they are out. A verdict applied again
    /// (its replica was killed before they were delivered) publishes them again, as
    /// stored: on the topic at least once. Not delivered within the broker's publish
    /// timeout: an error, and the verdict is applied again later.
    pub(crate) async fn record_verdict(&self, meta: &ObjectMeta, milestones: &[(&str, &str)]) -> Result<()> {
        let events: Vec<PayloadStatus> = milestones.iter().map(|(status, msg)| make_event(meta, status, msg)).collect();
        let new = futures_util::future::try_join_all(events.iter().map(|e| self.store_event(e))).await?;
        let stored: Vec<PayloadStatus> = if new.iter().all(|n| *n) {
            Vec::new()
        } else {
            parse_events(&self.inner.storage.events(&meta.request_id).await?)
        };
        let delivered: Vec<_> = events
            .into_iter()
            .zip(new)
            .map(|(event, new)| {
                let again = (!new).then(|| stored.iter().find(|e| e.status == event.status).cloned()).flatten();
                self.publish_tracked(again.unwrap_or(event))
            })
            .collect();
        let wait = self.settings().kafka.as_ref().map_or(STATUS_DELIVERY_WAIT, |k| k.publish_timeout);
        match tokio::time::timeout(wait, futures_util::future::join_all(delivered)).await {
            Ok(all) if all.iter().all(|d| d.is_ok()) => Ok(()),
            Ok(_) => Err(Error::QueueUnavailable("the gateway is stopping: the verdict's statuses are not delivered".into())),
            Err(_) => Err(Error::QueueUnavailable(format!("the verdict's statuses are not on the status topic after {wait:?}"))),
        }
    }

    /// In the book and on the status topic (not stored).
    fn publish_event(&self, meta: &ObjectMeta, status: &str, msg: &str) -> PayloadStatus {
        let event = make_event(meta, status, msg);
        self.publish(event.clone());
        event
    }

    fn publish(&self, event: PayloadStatus) {
        let message = self.status_message(event);
        self.inner.outbox.send(message);
    }

    /// [`Pipeline::publish`], told when the message is delivered.
    fn publish_tracked(&self, event: PayloadStatus) -> tokio::sync::oneshot::Receiver<()> {
        let message = self.status_message(event);
        self.inner.outbox.send_tracked(message)
    }

    /// Logs the event, puts it in the book, and makes its status topic message.
    fn status_message(&self, event: PayloadStatus) -> Message {
        tracing::info!(request_id = %event.request_id, status = %event.status, msg = %event.status_msg, "status");
        let mut message = Message::json(&self.settings().topics.status, &event.request_id, &event);
        message.headers.push((ORIGIN_HEADER.into(), self.inner.replica.clone()));
        self.inner.status.add_new(event);
        message
    }

    /// Stores an event once (true: written now; false: it was there).
    pub(super) async fn store_event(&self, event: &PayloadStatus) -> Result<bool> {
        let bytes = serde_json::to_vec(event).map_err(|e| Error::Internal(e.to_string()))?;
        self.inner.storage.add_event(&event.request_id, &event_name(event), &bytes).await
    }

    /// Stores an event, retried with backoff for [`STORE_EVENT_FOR`]; one that could
    /// not be stored by then is counted and logged (the book and the topic still
    /// have it; a never-stored `announced` makes the quarantine sweep announce the
    /// payload again, which at least once allows).
    async fn store_event_retrying(&self, event: &PayloadStatus) {
        let Ok(bytes) = serde_json::to_vec(event) else { return };
        let Ok(_slot) = self.inner.store_slots.acquire().await else { return };
        let name = event_name(event);
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            match self.inner.storage.add_event(&event.request_id, &name, &bytes).await {
                Ok(_) => return,
                Err(e) if started.elapsed() >= STORE_EVENT_FOR || !e.is_retryable() => {
                    self.metrics().status_event_unstored();
                    tracing::error!(request_id = %event.request_id, status = %event.status, error = %e, "a status event could not be stored");
                    return;
                }
                Err(e) => tracing::debug!(request_id = %event.request_id, error = %e, "storing a status event; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
        }
    }
}

/// How often `WatchStatus` looks at storage for events made elsewhere.
pub const WATCH_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an event recorded in the background is tried before it is given up on.
const STORE_EVENT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// How long an applied verdict waits for its statuses' delivery on the in-process
/// queue (on Kafka: the publish timeout).
const STATUS_DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) const ANNOUNCED: &str = "announced to the service's validator";

struct Follow {
    pipeline: Pipeline,
    id: String,
    seen: Vec<PayloadStatus>,
    queue: VecDeque<PayloadStatus>,
    live: broadcast::Receiver<PayloadStatus>,
    /// How many stored events the last look at storage found (none yet: `None`).
    stored: Option<usize>,
    done: bool,
}

impl Follow {
    /// Looks at the payload's stored events: one listing, and the events read only when
    /// there are new ones (events are create-only, so a new one raises the count). The
    /// meta's events (received, announced) were in the history the stream began with.
    async fn poll_storage(&mut self) {
        let storage = &self.pipeline.inner.storage;
        let Ok(names) = storage.event_names(&self.id).await else { return };
        if self.stored == Some(names.len()) {
            return;
        }
        if let Ok(events) = storage.events(&self.id).await {
            self.stored = Some(events.len());
            let mut events = parse_events(&events);
            in_date_order(&mut events);
            self.queue.extend(events);
        }
    }
}

/// The status events among a payload's stored events (a sweep's claims are not).
fn parse_events(stored: &[(String, Vec<u8>)]) -> Vec<PayloadStatus> {
    stored.iter().filter_map(|(_, bytes)| serde_json::from_slice(bytes).ok()).collect()
}

/// How long ago an RFC 3339 date was (none when unreadable, or in the future).
pub(super) fn age(date: &str) -> Option<std::time::Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(date).ok()?;
    chrono::Utc::now().signed_duration_since(at).to_std().ok()
}

/// Oldest first; of one moment, in the order of a payload's life.
fn in_date_order(events: &mut [PayloadStatus]) {
    events.sort_by(|a, b| (a.date.as_str(), rank(&a.status)).cmp(&(b.date.as_str(), rank(&b.status))));
}

pub(super) fn make_event(meta: &ObjectMeta, status: &str, msg: &str) -> PayloadStatus {
    PayloadStatus {
        service: "ingress".into(),
        status: status.into(),
        status_msg: cut(msg, STATUS_MSG_LIMIT).to_string(),
        account: meta.account.clone(),
        org_id: meta.org_id.clone(),
        request_id: meta.request_id.clone(),
        payload_id: meta.request_id.clone(),
        // Received when its meta says, on every replica and in every reading.
        date: if status == "received" { meta.received_at.clone() } else { now_rfc3339() },
    }
}

/// `received`, as a payload's meta tells it.
fn received_event(meta: &ObjectMeta) -> PayloadStatus {
    make_event(meta, "received", &format!("{} bytes stored in quarantine", meta.size))
}

/// The one event a payload without the gateway's meta gets: where it is.
fn legacy_event(bucket: crate::storage::Bucket, meta: ObjectMeta) -> PayloadStatus {
    let (status, where_) = match bucket {
        crate::storage::Bucket::Quarantine => ("received", "waiting in quarantine for its verdict"),
        crate::storage::Bucket::Perm => ("success", "validated: kept in perm"),
        crate::storage::Bucket::Reject => ("rejected", "refused: kept in reject"),
    };
    PayloadStatus {
        service: "ingress".into(),
        status: status.into(),
        status_msg: format!("{where_} (no earlier history is recorded here)"),
        account: meta.account,
        org_id: meta.org_id,
        request_id: meta.request_id.clone(),
        payload_id: meta.request_id,
        date: meta.received_at,
    }
}

/// An event's name in its payload's durable history: its status (a payload has each
/// once), or for `error`, which may come several times, the status and its time.
pub(crate) fn event_name(e: &PayloadStatus) -> String {
    match e.status.as_str() {
        "error" => format!("error-{}", e.date.chars().filter(char::is_ascii_digit).collect::<String>()),
        s => s.to_string(),
    }
}

/// Whether `e` is among `seen`: the same name (so one milestone read from the book,
/// the topic and storage counts once).
fn seen_before(seen: &[PayloadStatus], e: &PayloadStatus) -> bool {
    let name = event_name(e);
    seen.iter().any(|s| event_name(s) == name)
}

/// Order among events of one instant: the order a payload goes through them.
fn rank(status: &str) -> u8 {
    match status {
        "received" => 0,
        "announced" => 1,
        "advertised" => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_with_a_marker() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(3_000_000);
        let c = cut(&long, STATUS_MSG_LIMIT);
        assert!(c.len() <= STATUS_MSG_LIMIT, "{}", c.len());
        assert!(c.ends_with(" [cut: 6000000 bytes]"), "{}", &c[c.len() - 30..]);
    }

    fn ev(id: &str, status: &str) -> PayloadStatus {
        PayloadStatus {
            service: "ingress".into(),
            status: status.into(),
            status_msg: String::new(),
            account: None,
            org_id: None,
            request_id: id.into(),
            payload_id: id.into(),
            date: now_rfc3339(),
        }
    }

    #[tokio::test]
    async fn a_listener_hears_what_comes_after_it() {
        let book = StatusBook::new(10);
        book.add(ev("a", "received"));
        let mut rx = book.listen("a");
        let mut unknown_yet = book.listen("b");
        book.add(ev("a", "announced"));
        book.add(ev("b", "success"));
        assert_eq!(rx.recv().await.unwrap().status, "announced");
        assert_eq!(unknown_yet.recv().await.unwrap().status, "success");
        assert!(book.history("c").is_none());
    }

    #[test]
    fn an_error_is_named_by_its_time_and_any_other_status_by_itself() {
        let mut e = ev("a", "error");
        e.date = "2026-01-01T00:00:02.000001Z".into();
        assert_eq!(event_name(&e), "error-20260101000002000001");
        assert_eq!(event_name(&ev("a", "advertised")), "advertised");
        assert!(seen_before(&[ev("a", "success")], &ev("a", "success")), "a status is kept once whenever it was made");
        assert!(!seen_before(&[e.clone()], &ev("a", "error")), "two errors at two moments are two events");
    }

    #[test]
    fn history_is_in_date_order_whatever_the_arrival_order() {
        let book = StatusBook::new(10);
        let mut late = ev("a", "success");
        late.date = "2026-01-01T00:00:02.000000Z".into();
        let mut early = ev("a", "received");
        early.date = "2026-01-01T00:00:01.000000Z".into();
        book.add(late);
        book.add(early);
        let h: Vec<String> = book.history("a").unwrap().into_iter().map(|e| e.status).collect();
        assert_eq!(h, ["received", "success"]);
    }

    #[test]
    fn an_event_read_twice_is_kept_once() {
        let book = StatusBook::new(10);
        let e = ev("a", "received");
        assert!(book.add_new(e.clone()));
        assert!(!book.add_new(e));
        assert!(book.add_new(ev("a", "announced")));
        assert_eq!(book.history("a").unwrap().len(), 2);
    }

    #[test]
    fn oldest_payloads_are_forgotten_past_capacity() {
        let book = StatusBook::new(2);
        for id in ["a", "b", "c"] {
            book.add(ev(id, "received"));
        }
        assert!(book.history("a").is_none());
        assert!(book.history("c").is_some());
    }
}

/// The one answer for an id with no history here (malformed ids included, so the
/// answer says nothing about which ids exist).
fn unknown(request_id: &str) -> Error {
    let shown: String = request_id.chars().take(80).collect();
    Error::NotFound(format!("no payload with request id {shown} is known"))
}
