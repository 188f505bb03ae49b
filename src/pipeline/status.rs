//! Status tracking: every milestone of a payload, kept for `track` and `WatchStatus`
//! and published on the status topic.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::Pipeline;
use crate::messages::{now_rfc3339, PayloadStatus};
use crate::queue::Message;
use crate::storage::ObjectMeta;

/// Payloads whose history is kept in memory; the oldest are forgotten past it.
pub const DEFAULT_CAPACITY: usize = 200_000;

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
        entry.events.push(event);
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
}

impl Pipeline {
    /// Records a milestone: in the book at once, on the status topic through the
    /// outbox (retried until delivered, in order per payload).
    pub(crate) fn record(&self, meta: &ObjectMeta, status: &str, msg: &str) {
        let event = PayloadStatus {
            service: "ingress".into(),
            status: status.into(),
            status_msg: msg.into(),
            account: meta.account.clone(),
            org_id: meta.org_id.clone(),
            request_id: meta.request_id.clone(),
            payload_id: meta.request_id.clone(),
            date: now_rfc3339(),
        };
        tracing::info!(request_id = %meta.request_id, status, msg, "status");
        let message = Message::json(&self.settings().topics.status, &meta.request_id, &event);
        self.inner.status.add(event);
        self.inner.outbox.send(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
