//! The one error type. Each variant knows its HTTP status, its gRPC code and its
//! sentence; the protocol adapters only translate.

use http::StatusCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The multipart form has neither a `file` nor an `upload` part.
    #[error("Upload field not found")]
    UploadFieldNotFound,
    /// The content type matches no routing rule.
    #[error("Unsupported Media Type")]
    UnsupportedMediaType,
    /// The content type names a service that is not in the valid list.
    #[error("Unsupported MIME type")]
    UnsupportedService { service: String },
    /// The payload passed its service's size limit.
    #[error("Payload too large: more than {limit} bytes for service {service}. Should not exceed {limit} bytes")]
    TooLarge { service: String, limit: u64 },
    /// One protocol message (a gRPC message) is over its size limit.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The request itself is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// Identity is required by configuration and was not sent.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this: a signed URL whose signature is wrong or expired,
    /// a credential for another service, an identity that is not the request's.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request id was used before (or is being used right now).
    #[error("{0}")]
    Conflict(String),
    /// A resumable upload was written at another offset than the one stored (tus 409;
    /// gRPC FAILED_PRECONDITION: ask where it stands and continue from there).
    #[error("the upload stands at offset {expected}; this request writes at {got}")]
    OffsetMismatch { expected: u64, got: u64 },
    /// Another request is writing this resumable upload right now (tus 423; gRPC
    /// ABORTED). Its claim expires if it stalls.
    #[error("{0}")]
    Locked(String),
    /// A resumable upload that expired (tus 410; gRPC NOT_FOUND).
    #[error("{0}")]
    Gone(String),
    /// The bytes do not match the checksum the client declared (tus 460; REST 400;
    /// gRPC INVALID_ARGUMENT); nothing of them was kept.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// A protocol precondition is not met (tus: `Tus-Resumable` missing or another
    /// version: 412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The client stopped sending the body for longer than the idle timeout.
    #[error("{0}")]
    Timeout(String),
    /// The client went away before the payload was complete.
    #[error("client disconnected: {0}")]
    ClientGone(String),
    /// Storage failed; nothing was kept. Retry later.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// The queue failed; nothing was kept. Retry later.
    #[error("queue unavailable: {0}")]
    QueueUnavailable(String),
    /// The queue did not confirm a message in time, and may have written it (its
    /// request was in flight). An upload refused with it keeps its payload in
    /// quarantine, where the quarantine sweep announces it. Retry later.
    #[error("queue unavailable: {0}")]
    QueueUnconfirmed(String),
    /// The queue refused a message for good (too large, invalid): sending it again
    /// cannot succeed.
    #[error("queue refused the message: {0}")]
    QueueRefused(String),
    /// The gateway is shutting down or over its concurrency limit.
    #[error("{0}")]
    Overloaded(String),
    /// A bug: something that should not happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::UploadFieldNotFound
            | Error::UnsupportedMediaType
            | Error::UnsupportedService { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::TooLarge { .. } | Error::MessageTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadRequest(_) | Error::ClientGone(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::OffsetMismatch { .. } => StatusCode::CONFLICT,
            Error::Locked(_) => StatusCode::LOCKED,
            Error::Gone(_) => StatusCode::GONE,
            Error::ChecksumMismatch(_) => StatusCode::from_u16(460).expect("460 is a valid status"),
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::StorageUnavailable(_)
            | Error::QueueUnavailable(_)
            | Error::QueueUnconfirmed(_)
            | Error::Overloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) | Error::QueueRefused(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::UploadFieldNotFound
            | Error::UnsupportedMediaType
            | Error::UnsupportedService { .. }
            | Error::BadRequest(_) => Code::InvalidArgument,
            Error::TooLarge { .. } | Error::MessageTooLarge(_) => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::Conflict(_) => Code::AlreadyExists,
            Error::OffsetMismatch { .. } | Error::PreconditionFailed(_) => Code::FailedPrecondition,
            Error::Locked(_) => Code::Aborted,
            Error::Gone(_) => Code::NotFound,
            Error::ChecksumMismatch(_) => Code::InvalidArgument,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::ClientGone(_) => Code::Cancelled,
            Error::StorageUnavailable(_)
            | Error::QueueUnavailable(_)
            | Error::QueueUnconfirmed(_)
            | Error::Overloaded(_) => {
                Code::Unavailable
            }
            Error::Internal(_) | Error::QueueRefused(_) => Code::Internal,
        }
    }

    /// Whether the client should simply try again later (the 503 family).
    pub fn is_retryable(&self) -> bool {
        self.http_status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// A short stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UploadFieldNotFound => "upload_field_not_found",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::UnsupportedService { .. } => "unsupported_service",
            Error::TooLarge { .. } => "too_large",
            Error::MessageTooLarge(_) => "message_too_large",
            Error::BadRequest(_) => "bad_request",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::OffsetMismatch { .. } => "offset_mismatch",
            Error::Locked(_) => "locked",
            Error::Gone(_) => "gone",
            Error::ChecksumMismatch(_) => "checksum_mismatch",
            Error::PreconditionFailed(_) => "precondition_failed",
            Error::Timeout(_) => "timeout",
            Error::ClientGone(_) => "client_gone",
            Error::StorageUnavailable(_) => "storage_unavailable",
            Error::QueueUnavailable(_) => "queue_unavailable",
            Error::QueueUnconfirmed(_) => "queue_unconfirmed",
            Error::QueueRefused(_) => "queue_refused",
            Error::Overloaded(_) => "overloaded",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        let status = self.http_status();
        let mut resp = (
            status,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        }
        resp
    }
}
