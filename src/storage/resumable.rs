//! Resumable uploads' durable side (README, "Resumable uploads"): an upload's record
//! and its bytes so far, kept by the storage so that any replica can continue it after
//! any crash. The pipeline (`pipeline/resumable.rs`) owns the rules: checks, claims,
//! hashing, when to commit; the storage only keeps what it is given.
//!
//! A record is versioned: [`crate::storage::Storage::save_upload`] writes version n+1
//! only if the stored one is still n, so two replicas (or two requests) can never both
//! advance an upload: that compare-and-set is the one-writer rule and its claim.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::domain::sha256_state::Sha256State;
use crate::error::Result;

/// Everything known about one resumable upload, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The upload's id: the payload's request id (its key in quarantine once whole).
    pub id: String,
    /// Incremented by every save; 1 at creation.
    pub version: u64,
    pub service: String,
    pub category: String,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub account: Option<String>,
    pub org_id: Option<String>,
    pub b64_identity: String,
    /// The total length; None while deferred.
    pub length: Option<u64>,
    /// The service's size limit when the upload was created.
    pub limit: u64,
    /// Bytes durably stored.
    pub offset: u64,
    /// The whole payload's sha256 the client declared, lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_sha256: Option<String>,
    /// The hash of bytes `0..offset`.
    pub hash: Sha256State,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Unix milliseconds after which an unfinished upload is gone.
    pub expires_at_ms: u64,
    /// The writer appending right now, if any, and until when its claim holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// Where the storage keeps the bytes (S3: the multipart upload, its parts, the tail).
    #[serde(default)]
    pub bytes: StoredBytes,
    /// Set once the payload is in quarantine and announced: the upload is over.
    #[serde(default)]
    pub finished: bool,
}

impl UploadRecord {
    /// The meta of the payload these bytes become: everything the checks at creation
    /// settled, its size and sha256 so far, received at its creation.
    pub fn object_meta(&self) -> crate::storage::ObjectMeta {
        crate::storage::ObjectMeta {
            request_id: self.id.clone(),
            service: self.service.clone(),
            category: self.category.clone(),
            content_type: self.content_type.clone(),
            account: self.account.clone(),
            org_id: self.org_id.clone(),
            b64_identity: self.b64_identity.clone(),
            size: self.offset,
            sha256: self.hash.hex(),
            received_at: self.created_at.clone(),
            metadata: self.metadata.clone(),
            derived: false,
            unconfirmed: None,
            put_id: None,
        }
    }
}

/// A writer's hold on an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Unique per request.
    pub holder: String,
    /// Unix milliseconds; renewed with every commit, void after.
    pub until_ms: u64,
    /// The gateway process holding it. On local disk (one process per data folder) a
    /// claim of another process is a killed one's: void at once.
    #[serde(default)]
    pub replica: String,
}

/// Where the bytes `0..offset` are. Local disk needs none of it (one file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBytes {
    /// S3: the multipart upload holding the parts (created with the first part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// S3: the parts uploaded, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartRef>,
    /// S3: the bytes after the last part (less than a part), as an object of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub number: i32,
    pub etag: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailRef {
    pub key: String,
    pub size: u64,
}

/// Appends to one upload for one request. The caller writes at most
/// `part_size() - pending()` bytes at a time and calls [`UploadWriter::flush`] when
/// `pending()` reaches `part_size()` and at the end; what a flush returns, saved in the
/// record with the new offset, is the commit.
#[async_trait::async_trait]
pub trait UploadWriter: Send {
    /// Bytes taken since the last flush (S3: the stored tail, read back, counts).
    fn pending(&self) -> u64;
    /// How many bytes a flush at most covers.
    fn part_size(&self) -> u64;
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Makes every byte written durable and says where they are.
    async fn flush(&mut self) -> Result<StoredBytes>;
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
