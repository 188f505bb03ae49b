//! The values every layer shares, below all of them: a payload's byte stream with
//! its checks, its request id, the content type that routes it, and who sent it. Protocols,
//! pipeline, storage and queue import these; these import none of them.

pub mod content_type;
pub mod identity;
pub mod payload;
pub mod request_id;
pub mod sha256_state;

pub use content_type::Route;
pub use identity::Identity;
pub use payload::{BodyStream, Checks, Payload};
pub use request_id::RequestId;
