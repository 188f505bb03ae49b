//! The payload stream between a protocol and storage: counts bytes, enforces the size
//! limit while they arrive, hashes them, and times out a stalled sender.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::time::{Instant, Sleep};

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What a protocol hands the pipeline: the payload's bytes, in order.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// The checked payload. Yields the bytes; yields one error and ends when a check fails.
pub struct Payload {
    body: BodyStream,
    service: String,
    limit: u64,
    expected_size: Option<u64>,
    expected_sha256: Option<String>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    size: u64,
    hasher: Sha256,
    state: State,
    metrics: Arc<Metrics>,
    on_failure: Option<Box<dyn FnOnce(Error) + Send>>,
    key_generated: bool,
}

enum State {
    Streaming,
    Done(String),
    Failed(Error),
}

/// What a [`Payload`] checks while the bytes arrive.
pub struct Checks {
    pub service: String,
    pub limit: u64,
    pub expected_size: Option<u64>,
    pub expected_sha256: Option<String>,
    pub idle: Duration,
}

impl Payload {
    pub fn new(body: BodyStream, checks: Checks, metrics: Arc<Metrics>) -> Self {
        Payload {
            body,
            service: checks.service,
            limit: checks.limit,
            expected_size: checks.expected_size,
            expected_sha256: checks.expected_sha256.map(|s| s.to_ascii_lowercase()),
            idle_timer: Box::pin(tokio::time::sleep(checks.idle)),
            idle: checks.idle,
            size: 0,
            hasher: Sha256::new(),
            state: State::Streaming,
            metrics,
            on_failure: None,
            key_generated: false,
        }
    }

    /// Says the payload's key was generated for it by the gateway (a new random id),
    /// so no stored payload can have it: storage may skip looking for one.
    pub fn with_generated_key(mut self) -> Self {
        self.key_generated = true;
        self
    }

    pub fn key_generated(&self) -> bool {
        self.key_generated
    }

    /// The size and sha256 (lower-case hex) once the stream has ended cleanly.
    pub fn finish(&self) -> Result<(u64, String)> {
        match &self.state {
            State::Done(sha) => Ok((self.size, sha.clone())),
            State::Failed(e) => Err(e.clone()),
            State::Streaming => Err(Error::Internal(
                "storage finished before the payload stream ended".into(),
            )),
        }
    }

    /// Calls `f` with the payload's own error if it fails (too large, stalled, short),
    /// so the caller can report that rather than what storage made of it.
    pub(crate) fn on_failure(mut self, f: impl FnOnce(Error) + Send + 'static) -> Self {
        self.on_failure = Some(Box::new(f));
        self
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Bytes>>> {
        if let Some(f) = self.on_failure.take() {
            f(e.clone());
        }
        self.state = State::Failed(e.clone());
        Poll::Ready(Some(Err(e)))
    }

    /// The body ended: check what the header declared and seal the digest.
    fn end(&mut self) -> Poll<Option<Result<Bytes>>> {
        if let Some(want) = self.expected_size {
            if want != self.size {
                return self.fail(Error::bad_request(format!(
                    "the payload ended after {} bytes; its header declared {want}",
                    self.size
                )));
            }
        }
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if let Some(want) = &self.expected_sha256 {
            if *want != sha {
                return self.fail(Error::bad_request(format!(
                    "the payload's sha256 is {sha}; its header declared {want}"
                )));
            }
        }
        self.state = State::Done(sha);
        Poll::Ready(None)
    }
}

impl Stream for Payload {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !matches!(this.state, State::Streaming) {
            return Poll::Ready(None);
        }
        match this.body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.size += chunk.len() as u64;
                this.metrics.bytes_received(chunk.len() as u64);
                if this.size > this.limit {
                    let e = Error::TooLarge {
                        service: this.service.clone(),
                        limit: this.limit,
                    };
                    return this.fail(e);
                }
                if let Some(want) = this.expected_size {
                    if this.size > want {
                        return this.fail(Error::bad_request(format!(
                            "the payload is longer than the {want} bytes its header declared"
                        )));
                    }
                }
                this.hasher.update(&chunk);
                let deadline = Instant::now() + this.idle;
                this.idle_timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e),
            Poll::Ready(None) => this.end(),
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => this.fail(Error::Timeout(format!(
                    "the upload body stalled for {} s",
                    this.idle.as_secs()
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn payload(chunks: Vec<&'static [u8]>, limit: u64, size: Option<u64>, sha: Option<&str>) -> Payload {
        let body = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        Payload::new(
            Box::pin(body),
            Checks {
                service: "advisor".into(),
                limit,
                expected_size: size,
                expected_sha256: sha.map(str::to_string),
                idle: Duration::from_secs(5),
            },
            Arc::new(Metrics::default()),
        )
    }

    async fn drain(p: &mut Payload) -> Option<Error> {
        while let Some(item) = p.next().await {
            if let Err(e) = item {
                return Some(e);
            }
        }
        None
    }

    #[tokio::test]
    async fn hashes_and_counts() {
        let mut p = payload(vec![b"hello ", b"world"], 100, Some(11), None);
        assert!(drain(&mut p).await.is_none());
        let (size, sha) = p.finish().unwrap();
        assert_eq!(size, 11);
        assert_eq!(sha, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }

    #[tokio::test]
    async fn stops_at_the_limit() {
        let mut p = payload(vec![b"12345", b"67890", b"never read"], 8, None, None);
        assert!(matches!(drain(&mut p).await, Some(Error::TooLarge { limit: 8, .. })));
        assert!(p.next().await.is_none());
        assert!(p.finish().is_err());
    }

    #[tokio::test]
    async fn short_stream_and_wrong_sha_are_refused() {
        let mut p = payload(vec![b"abc"], 100, Some(4), None);
        assert!(matches!(drain(&mut p).await, Some(Error::BadRequest(_))));
        let mut p = payload(vec![b"abc"], 100, None, Some(&"0".repeat(64)));
        assert!(matches!(drain(&mut p).await, Some(Error::BadRequest(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let body = futures_util::stream::pending::<Result<Bytes>>();
        let mut p = Payload::new(
            Box::pin(body),
            Checks { service: "a".into(), limit: 10, expected_size: None, expected_sha256: None, idle: Duration::from_secs(3) },
            Arc::new(Metrics::default()),
        );
        assert!(matches!(drain(&mut p).await, Some(Error::Timeout(_))));
    }
}
