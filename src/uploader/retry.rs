//! When to try again, and how long to wait first: exponential backoff with jitter,
//! `Retry-After` honoured, and which failures are worth another try.

use std::time::{Duration, SystemTime};

/// A failure of one step, sorted by what to do next.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try (connection refused or reset, 5xx, 408, 423, 429, gRPC
    /// UNAVAILABLE or ABORTED), after `retry_after` when the gateway said so.
    Transient { message: String, retry_after: Option<Duration> },
    /// The upload the client holds is gone (unknown or expired): start a new one.
    Gone(String),
    /// Stop: the gateway refused what was asked; its sentence is in the message.
    Permanent(String),
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure::Transient { message: message.into(), retry_after: None }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Transient { message, .. } | Failure::Gone(message) | Failure::Permanent(message) => message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Whether an HTTP status from the gateway is worth another try. 409 is not here:
/// what it means depends on the request (an offset to ask again for, or a request id
/// already used), so the tus client decides.
pub fn http_transient(status: u16) -> bool {
    matches!(status, 408 | 423 | 429) || (500..600).contains(&status)
}

/// Whether a gRPC status code is worth another try: UNAVAILABLE (the gateway, its
/// storage or its queue is down, or the connection broke), ABORTED (another writer
/// holds the upload), DEADLINE_EXCEEDED, and UNKNOWN/INTERNAL as a broken transport
/// reports them. CANCELLED is the client's own doing and not retried.
pub fn grpc_transient(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unavailable | Aborted | DeadlineExceeded | Unknown | Internal)
}

/// Whether a connection failed because the gateway's certificate is not trusted (or
/// not valid for its name): no retry changes that, so it is said at once.
pub fn certificate_refused(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("certificate") && (m.contains("invalid") || m.contains("unknownissuer") || m.contains("not valid") || m.contains("expired"))
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110 §10.2.3); a date in the
/// past is no wait. `None` for what is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let when = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(when.timestamp()).ok()?))?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How many times to try again and how long to wait between tries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Tries after the first, in a row without progress.
    pub retries: u32,
    /// The first wait; each next one doubles, up to `max`.
    pub base: Duration,
    pub max: Duration,
    /// The longest `Retry-After` honoured (a longer one is cut to this).
    pub max_retry_after: Duration,
}

impl Policy {
    pub fn new(retries: u32) -> Policy {
        Policy {
            retries,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }

    /// The backoff ceiling before try `attempt` (1 = the first retry): base × 2^(attempt-1),
    /// at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before try `attempt`: "equal jitter" (half the ceiling, plus a random
    /// part of the other half, `jitter` in 0..=1), so that many clients cut off at
    /// once do not come back at once; never shorter than the gateway's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let backoff = ceiling / 2 + ceiling.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
        match retry_after {
            Some(ra) => ra.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }
}

/// Counts tries in a row without progress and sleeps between them.
#[derive(Debug)]
pub struct Retrier {
    policy: Policy,
    attempt: u32,
}

impl Retrier {
    pub fn new(policy: Policy) -> Retrier {
        Retrier { policy, attempt: 0 }
    }

    /// Progress was made: the next failure starts the count again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// After a transient failure: the wait before the next try, or `None` when the
    /// retries are used up.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempt >= self.policy.retries {
            return None;
        }
        self.attempt += 1;
        Some(self.policy.delay(self.attempt, retry_after, rand::random::<f64>()))
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        // A date in the past: no wait.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_with_jitter_in_the_upper_half() {
        let p = Policy::new(10);
        assert_eq!(p.ceiling(1), Duration::from_millis(500));
        assert_eq!(p.ceiling(2), Duration::from_secs(1));
        assert_eq!(p.ceiling(4), Duration::from_secs(4));
        assert_eq!(p.ceiling(7), Duration::from_secs(30));
        assert_eq!(p.ceiling(1000), Duration::from_secs(30));
        assert_eq!(p.delay(3, None, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(1500));
        // Jitter out of range is clamped.
        assert_eq!(p.delay(3, None, 7.0), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let p = Policy::new(10);
        // The gateway's wait wins over a shorter backoff.
        assert_eq!(p.delay(1, Some(Duration::from_secs(10)), 0.0), Duration::from_secs(10));
        // A longer backoff than Retry-After is kept.
        assert_eq!(p.delay(6, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(16));
        // An absurd Retry-After is cut.
        assert_eq!(p.delay(1, Some(Duration::from_secs(86_400)), 0.0), Duration::from_secs(300));
    }

    #[test]
    fn retries_are_counted_in_a_row_and_reset_by_progress() {
        let mut r = Retrier::new(Policy::new(2));
        assert!(r.next_delay(None).is_some());
        assert!(r.next_delay(None).is_some());
        assert!(r.next_delay(None).is_none());
        r.reset();
        assert!(r.next_delay(None).is_some());
        assert_eq!(r.attempt(), 1);
        let mut none = Retrier::new(Policy::new(0));
        assert!(none.next_delay(None).is_none());
    }

    #[test]
    fn which_failures_are_transient() {
        for s in [408, 423, 429, 500, 502, 503, 504] {
            assert!(http_transient(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 413, 415, 460] {
            assert!(!http_transient(s), "{s}");
        }
        assert!(grpc_transient(tonic::Code::Unavailable));
        assert!(grpc_transient(tonic::Code::Aborted));
        assert!(!grpc_transient(tonic::Code::InvalidArgument));
        assert!(!grpc_transient(tonic::Code::PermissionDenied));
        assert!(!grpc_transient(tonic::Code::NotFound));
        assert!(!grpc_transient(tonic::Code::FailedPrecondition));
        assert!(certificate_refused("sending bytes: error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"));
        assert!(!certificate_refused("sending bytes: error sending request: tcp connect error: Connection refused (os error 111)"));
    }
}
