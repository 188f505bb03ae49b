//! Status tracking: every milestone of a payload, kept for `track` and `WatchStatus`
//! and published on the status topic.

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

/// Payloads whose history is kept in memory; the oldest are forgotten past it.
pub const DEFAULT_CAPACITY: usize = 200_000;

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

    /// The history so far and a receiver of what comes next, with no gap between.
    pub fn watch(
        &self,
        request_id: &str,
    ) -> Option<(Vec<PayloadStatus>, broadcast::Receiver<PayloadStatus>)> {
        let mut book = self.inner.lock().unwrap();
        let entry = book.entries.get_mut(request_id)?;
        let rx = entry
            .watchers
            .get_or_insert_with(|| broadcast::channel(64).0)
            .subscribe();
        Some((entry.events.clone(), rx))
    }

    /// A payload's events, first those so far, then each new one, ending after a
    /// terminal status (one in the past counts only when nothing came after it, so a
    /// payload that recovered from an `error` is followed to its real end).
    pub fn follow(&self, request_id: &str) -> Option<impl Stream<Item = PayloadStatus> + Send + 'static> {
        let (so_far, rx) = self.watch(request_id)?;
        let state = (so_far.into_iter().peekable(), rx, false);
        Some(futures_util::stream::unfold(state, |(mut past, mut rx, done)| async move {
            if done {
                return None;
            }
            let (event, live) = match past.next() {
                Some(e) => (e, false),
                None => loop {
                    match rx.recv().await {
                        Ok(e) => break (e, true),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                },
            };
            let done = TERMINAL.contains(&event.status.as_str()) && (live || past.peek().is_none());
            Some((event, (past, rx, done)))
        }))
    }
}

impl Pipeline {
    /// A payload's history, oldest first, as `track` and `GetStatus` answer it: to
    /// the org that owns it, or a validator of its service. To anyone else, and for
    /// an id that is not one the gateway gives out, it is as unknown as any other.
    /// A stored payload with no history here (stored by the services the gateway
    /// replaces, or forgotten: the book is bounded, and in memory on the embedded
    /// default) gets one event from the bucket that holds it.
    pub async fn history(&self, caller: &Caller, request_id: &str) -> Result<Vec<PayloadStatus>> {
        let history = match self.status().history(request_id) {
            Some(h) => h,
            None => self.stored_history(request_id).await?.ok_or_else(|| unknown(request_id))?,
        };
        self.readable(caller, request_id, &history)?;
        Ok(history)
    }

    /// A payload's events so far and then as they happen, until a terminal status or
    /// the drain (`WatchStatus`); to the same callers as [`Pipeline::history`].
    pub async fn follow(&self, caller: &Caller, request_id: &str) -> Result<impl Stream<Item = PayloadStatus> + Send + 'static> {
        self.history(caller, request_id).await?;
        let events = self.status().follow(request_id).ok_or_else(|| unknown(request_id))?;
        Ok(events.take_until(self.closing()))
    }

    /// The one event a stored payload without recorded history gets: where it is.
    async fn stored_history(&self, request_id: &str) -> Result<Option<Vec<PayloadStatus>>> {
        if !super::request_id::is_valid(request_id) {
            return Ok(None);
        }
        let Some((bucket, meta)) = self.locate(request_id).await? else {
            return Ok(None);
        };
        let (status, where_) = match bucket {
            crate::storage::Bucket::Quarantine => ("received", "waiting in quarantine for its verdict"),
            crate::storage::Bucket::Perm => ("success", "validated: kept in perm"),
            crate::storage::Bucket::Reject => ("rejected", "refused: kept in reject"),
        };
        Ok(Some(vec![PayloadStatus {
            service: "ingress".into(),
            status: status.into(),
            status_msg: format!("{where_} (no earlier history is recorded here)"),
            account: meta.account,
            org_id: meta.org_id,
            request_id: meta.request_id.clone(),
            payload_id: meta.request_id,
            date: meta.received_at,
        }]))
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
    /// outbox (retried until delivered, in order per payload).
    /// The message is cut to [`STATUS_MSG_LIMIT`] (a validator's reason can be long),
    /// so every status message stays far below what a broker accepts.
    pub(crate) fn record(&self, meta: &ObjectMeta, status: &str, msg: &str) {
        let msg = &cut(msg, STATUS_MSG_LIMIT);
        let event = PayloadStatus {
            service: "ingress".into(),
            status: status.into(),
            status_msg: msg.to_string(),
            account: meta.account.clone(),
            org_id: meta.org_id.clone(),
            request_id: meta.request_id.clone(),
            payload_id: meta.request_id.clone(),
            date: now_rfc3339(),
        };
        tracing::info!(request_id = %meta.request_id, status, msg = %msg, "status");
        let mut message = Message::json(&self.settings().topics.status, &meta.request_id, &event);
        message.headers.push((ORIGIN_HEADER.into(), self.inner.replica.clone()));
        self.inner.status.add(event);
        self.inner.outbox.send(message);
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
    async fn history_and_watch_have_no_gap() {
        let book = StatusBook::new(10);
        book.add(ev("a", "received"));
        let (so_far, mut rx) = book.watch("a").unwrap();
        book.add(ev("a", "announced"));
        assert_eq!(so_far.len(), 1);
        assert_eq!(rx.recv().await.unwrap().status, "announced");
        assert!(book.history("b").is_none());
    }

    #[tokio::test]
    async fn follow_ends_right_after_a_terminal_status() {
        use futures_util::StreamExt;
        let book = StatusBook::new(10);
        book.add(ev("a", "received"));
        book.add(ev("a", "error"));
        book.add(ev("a", "success"));
        let follow = book.follow("a").unwrap();
        book.add(ev("a", "advertised"));
        let got: Vec<String> = tokio::time::timeout(std::time::Duration::from_secs(5), follow.collect::<Vec<_>>())
            .await
            .expect("the stream ends at advertised")
            .into_iter()
            .map(|e| e.status)
            .collect();
        assert_eq!(got, ["received", "error", "success", "advertised"]);
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
