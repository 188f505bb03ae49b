//! The guard between the request body and the multipart parser. multer buffers
//! whatever is not part data (the preamble, boundaries, part headers) until it finds
//! what it looks for, and waits for bytes without a time limit; so this guard
//! refuses a body that stalls (408) and caps the bytes read but not yet handed out as
//! part data, which bounds multer's buffer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::Error;

/// Bytes the parser may hold that are not yet part data. Legitimate forms need a few
/// hundred bytes of boundaries and headers; the rest is slack for the chunks in
/// flight (an HTTP/2 stream window is 1 MiB).
pub const MAX_UNPARSED: u64 = 4 << 20;

/// Counts the part bytes the upload handler has taken out of the parser.
#[derive(Clone, Default)]
pub struct Taken(Arc<AtomicU64>);

impl Taken {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub struct Guarded<S> {
    body: S,
    taken: Taken,
    read: u64,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> Guarded<S> {
    pub fn new(body: S, taken: Taken, idle: Duration) -> Self {
        Guarded {
            body,
            taken,
            read: 0,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes, Error>>> {
        self.done = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl<S, E> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.body).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.read += chunk.len() as u64;
                let unparsed = this.read.saturating_sub(this.taken.0.load(Ordering::Relaxed));
                if unparsed > MAX_UNPARSED + chunk.len() as u64 {
                    return this.fail(Error::bad_request(format!(
                        "malformed multipart body: more than {MAX_UNPARSED} bytes without part data \
                         (a preamble, boundary or part header that does not end)"
                    )));
                }
                let deadline = Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(Error::ClientGone(e.to_string())),
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let secs = this.idle.as_secs();
                    this.fail(Error::Timeout(format!("the upload body stalled for {secs} s")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
