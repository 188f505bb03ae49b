//! Where payloads are kept: three buckets (quarantine, perm, reject) behind one trait,
//! on local disk (the embedded default) or S3.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::domain::Payload;

pub mod conformance;
pub mod local;
pub mod resumable;
pub mod s3;

pub use resumable::{UploadRecord, UploadWriter};

/// The three buckets of the original service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Uploaded, waiting for a verdict.
    Quarantine,
    /// Validated: what the platform may use.
    Perm,
    /// Refused by its validator.
    Reject,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::Quarantine, Bucket::Perm, Bucket::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Quarantine => "quarantine",
            Bucket::Perm => "perm",
            Bucket::Reject => "reject",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// What is kept with every stored payload, so that a verdict can be applied (and the
/// `available` message written) from storage alone, also after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub request_id: String,
    pub service: String,
    pub category: String,
    pub content_type: String,
    pub account: Option<String>,
    pub org_id: Option<String>,
    pub b64_identity: String,
    /// Filled in by the storage from the payload once its stream has ended.
    pub size: u64,
    /// Filled in by the storage from the payload once its stream has ended.
    pub sha256: String,
    /// RFC 3339 UTC.
    pub received_at: String,
    /// The `metadata` JSON object sent with the payload, kept so that a re-announcement
    /// (start-up on the in-process queue, the quarantine sweep) carries it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// True when the object has no meta of the gateway's (the services the gateway
    /// replaces wrote payloads straight into the bucket): these facts were read from
    /// the object itself, see [`ObjectMeta::without_sidecar`].
    #[serde(skip)]
    pub derived: bool,
    /// Set when its client was answered 503 while the broker had not confirmed its
    /// announcement (it may or may not have been written): why. Such a payload stays in
    /// quarantine and the quarantine sweep announces it. Absent from older metas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<String>,
    /// Which put stored the bytes this meta describes (S3: the object carries the same
    /// id in its user metadata, so a sidecar left by a put that lost a race for the
    /// key is never read as the winner's). Absent from older metas and on local disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put_id: Option<String>,
}

impl ObjectMeta {
    /// The facts of an object stored without the gateway's meta, as far as the object
    /// itself tells them: its key (the request id), size and time; the storage adds
    /// what the object's own metadata says (account, org). Service, category and
    /// identity are empty: the verdict's echoed fields fill them in (else `unknown`).
    /// sha256 stays empty: the gateway did not see the bytes arrive, and hashing them
    /// back would read the whole object on every lookup.
    pub fn without_sidecar(key: &str, size: u64, received_at: String) -> ObjectMeta {
        ObjectMeta {
            request_id: key.to_string(),
            service: String::new(),
            category: String::new(),
            content_type: String::new(),
            account: None,
            org_id: None,
            b64_identity: String::new(),
            size,
            sha256: String::new(),
            received_at,
            metadata: None,
            derived: true,
            unconfirmed: None,
            put_id: None,
        }
    }
}

/// A payload's verdict, recorded once for every replica: the first verdict applied
/// wins, and a replica (or channel) that comes second reads what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `success` or `failure`.
    pub validation: String,
    /// Set once its `available` message is out (success), so the verdict applied again
    /// (redelivered after a crash, retried) does not publish it twice.
    #[serde(default)]
    pub advertised: bool,
    /// The replica that recorded it, and when (RFC 3339): another replica that finds
    /// it not yet advertised leaves it to that one for a while (it is likely under
    /// way there) instead of publishing `available` a second time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Bytes read back from storage.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Streams `payload` into `bucket/key`. Once the stream has ended, `payload.finish()`
    /// gives the size and sha256 to record in `meta`; the stored meta is returned.
    ///
    /// `put` creates, it never replaces: while a put of `key` runs, and once it has
    /// stored the object, another put of `key` fails with `Error::Conflict` and leaves
    /// the first one's bytes and meta untouched (local disk: an `O_EXCL` claim and a
    /// no-replace rename; S3: conditional writes, `If-None-Match: *`).
    ///
    /// The object becomes visible only whole. When this returns an error, or the
    /// future is dropped part-way, nothing is left behind: no partial object, no
    /// temporary file, no unfinished multipart upload. When the payload stream yields
    /// an error, return it (the pipeline reports the payload's own error anyway).
    async fn put(&self, bucket: Bucket, key: &str, meta: ObjectMeta, payload: Payload)
        -> Result<ObjectMeta>;

    /// The meta of a stored object; `None` when the bucket does not hold it. An object
    /// without the gateway's meta (stored by the services the gateway replaces) is
    /// described from its own metadata: [`ObjectMeta::without_sidecar`].
    async fn head(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>>;

    /// Replaces the meta of a stored object (its `metadata` arrived after its bytes, or
    /// its announcement is unconfirmed); false (and nothing written) when the bucket
    /// does not hold it. A delete at the same moment may leave a lone meta, which is
    /// invisible and removed like a crash's (start-up, the S3 sweep).
    async fn set_meta(&self, bucket: Bucket, key: &str, meta: &ObjectMeta) -> Result<bool>;

    /// Records `decision` for the payload `key` in quarantine unless one is recorded,
    /// whichever replica recorded it: `None` when this one was, else the one that was
    /// (local disk: `O_EXCL`; S3: a conditional write, `If-None-Match: *`).
    async fn decide(&self, key: &str, decision: &Decision) -> Result<Option<Decision>>;

    /// Rewrites the recorded decision of `key` (it was advertised).
    async fn update_decision(&self, key: &str, decision: &Decision) -> Result<()>;

    /// Removes the decision of `key`, once its payload has left quarantine; removing
    /// what is not there is fine.
    async fn forget_decision(&self, key: &str) -> Result<()>;

    /// Adds one event to the durable history of payload `key`, under `name` (the event's
    /// name among that payload's, e.g. its status): create-only, so an event written
    /// twice (a verdict applied again) is kept once, and of two replicas writing one
    /// name, one wins. True when this call wrote it. Kept apart from the payload (it
    /// outlives its moves between buckets); a reader never sees half an event.
    async fn add_event(&self, key: &str, name: &str, event: &[u8]) -> Result<bool>;

    /// The events recorded for payload `key`, as (name, bytes), in name order; empty
    /// when there are none.
    async fn events(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// The names of the events recorded for payload `key`, in order, without reading
    /// them (the quarantine sweep's look: one listing).
    async fn event_names(&self, key: &str) -> Result<Vec<String>>;

    /// Copies an object (and its meta, when it has one) to another bucket; overwrites
    /// what is there.
    async fn copy(&self, from: Bucket, to: Bucket, key: &str) -> Result<()>;

    /// Deletes an object; deleting what is not there is fine.
    async fn delete(&self, bucket: Bucket, key: &str) -> Result<()>;

    /// Reads an object back as a stream of bounded chunks.
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>>;

    /// A presigned GET URL valid for `ttl`, or `None` when this storage has none (the
    /// gateway then hands out URLs it signs and serves itself).
    async fn presign(&self, bucket: Bucket, key: &str, ttl: Duration) -> Result<Option<String>>;

    /// The keys in a bucket (used at start-up to recover what an outage left).
    async fn list(&self, bucket: Bucket) -> Result<Vec<String>>;

    /// Creates the record of a new resumable upload (version 1); `Error::Conflict` when
    /// `rec.id` has one.
    async fn create_upload(&self, rec: &UploadRecord) -> Result<()>;

    /// The newest record of an upload; None when there is none.
    async fn load_upload(&self, id: &str) -> Result<Option<UploadRecord>>;

    /// Saves `rec` (whose `version` is one more than the record it was made from) if the
    /// stored record is still that one: false, and nothing written, when another save
    /// came first.
    async fn save_upload(&self, rec: &UploadRecord) -> Result<bool>;

    /// A writer that appends at `rec.offset`, for one request.
    async fn upload_writer(&self, rec: &UploadRecord) -> Result<Box<dyn UploadWriter>>;

    /// Puts an upload's bytes (all of them: `rec.offset` is its length) in quarantine as
    /// the payload `rec.id`, with `meta`, as `put` does: create-only, whole or not at
    /// all. Called again after a crash part-way, it finishes the job: when quarantine
    /// already holds the upload's bytes, it returns their meta.
    async fn finish_upload(&self, rec: &UploadRecord, meta: ObjectMeta) -> Result<ObjectMeta>;

    /// Removes an upload's record and whatever of its bytes are not in quarantine
    /// (expired, terminated, or finished and past its expiry).
    async fn remove_upload(&self, rec: &UploadRecord) -> Result<()>;

    /// The ids of every upload with a record (the expiry sweep).
    async fn list_uploads(&self) -> Result<Vec<String>>;

    /// Ok when the storage answers (readiness).
    async fn check(&self) -> Result<()>;

    /// Called once at start-up: removes what a crash left half-written, and starts
    /// the storage's own background clean-up, which ends when `shutdown` is cancelled.
    async fn recover(&self, shutdown: tokio_util::sync::CancellationToken) -> Result<()>;
}
