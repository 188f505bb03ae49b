//! Resumable uploads (README, "Resumable uploads"): one upload resource, reached over
//! tus (`rest/tus.rs`) and gRPC (`CreateUpload`/`QueryWriteStatus`/`Write`), kept by
//! the storage so that any replica can continue it after any crash.
//!
//! - Creation checks what the multipart upload checks (identity, request id, content
//!   type, service, size limit) and stores the upload's record; its id is the payload's
//!   request id.
//! - An append takes the upload's claim (a compare-and-set of its record), streams the
//!   bytes to the storage's writer, hashing them, and commits (saves the record with the
//!   new offset and the hash so far) at every part (8 MiB) and when the request ends,
//!   also when it breaks off. With a per-request checksum it commits only at the end,
//!   and only when the checksum matches.
//! - The append that reaches the length puts the bytes in quarantine and announces them:
//!   from there on the payload is an ordinary one.
//! - An unfinished upload expires; the expiry sweep removes its bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use sha1::Digest as _;
use tracing::{info, warn};

use super::ingest::{Receipt, Staged, UploadHeader};
use super::Pipeline;
use crate::domain::{content_type, identity, BodyStream, Identity};
use crate::error::{Error, Result};
use crate::messages::now_rfc3339;
use crate::storage::resumable::{now_ms, Claim, UploadRecord, UploadWriter};
use crate::storage::{Bucket, ObjectMeta};

/// Where an upload stands, for the protocols to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: String,
    /// Bytes durably stored.
    pub offset: u64,
    /// None while deferred.
    pub length: Option<u64>,
    /// Unix milliseconds.
    pub expires_at_ms: u64,
    /// Stored in quarantine and announced.
    pub finished: bool,
    pub content_type: String,
    pub file_name: Option<String>,
    pub metadata: Option<Value>,
    pub expected_sha256: Option<String>,
}

/// A per-request checksum (tus `Upload-Checksum`): the request's bytes must hash to it.
#[derive(Debug, Clone)]
pub struct ChunkChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const NAMES: &'static str = "sha1,sha256";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(ChecksumAlgorithm::Sha1),
            "sha256" => Some(ChecksumAlgorithm::Sha256),
            _ => None,
        }
    }
}

enum ChunkHasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl ChunkHasher {
    fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Sha1 => ChunkHasher::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => ChunkHasher::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            ChunkHasher::Sha1(h) => h.update(b),
            ChunkHasher::Sha256(h) => sha2::Digest::update(h, b),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            ChunkHasher::Sha1(h) => h.finalize().to_vec(),
            ChunkHasher::Sha256(h) => sha2::Digest::finalize(h).to_vec(),
        }
    }
}

/// One request's bytes for an upload.
pub struct Append {
    /// Where the client says its bytes go: must be the committed offset.
    pub offset: u64,
    pub body: BodyStream,
    /// The total length, when this request sets it (tus `Upload-Length` on a PATCH of a
    /// deferred upload).
    pub length: Option<u64>,
    /// Set (by the protocol, while the body streams) when the body's end is the
    /// upload's end (gRPC `finish_write`): the length becomes the offset reached.
    pub ends: Option<Arc<AtomicBool>>,
    pub checksum: Option<ChunkChecksum>,
}

/// What an append did.
#[derive(Debug)]
pub struct Appended {
    pub upload: UploadInfo,
    /// Set when this request finished the upload (or it was finished already).
    pub receipt: Option<Receipt>,
}

fn info(rec: &UploadRecord) -> UploadInfo {
    UploadInfo {
        id: rec.id.clone(),
        offset: rec.offset,
        length: rec.length,
        expires_at_ms: rec.expires_at_ms,
        finished: rec.finished,
        content_type: rec.content_type.clone(),
        file_name: rec.file_name.clone(),
        metadata: rec.metadata.clone(),
        expected_sha256: rec.expected_sha256.clone(),
    }
}

fn receipt(rec: &UploadRecord) -> Receipt {
    Receipt {
        request_id: crate::domain::RequestId::parse(&rec.id).unwrap_or_else(|_| crate::domain::RequestId::generate()),
        account_number: rec.account.clone(),
        org_id: rec.org_id.clone(),
        service: rec.service.clone(),
        category: rec.category.clone(),
        size: rec.offset,
        sha256: rec.hash.hex(),
    }
}

fn unknown(id: &str) -> Error {
    Error::NotFound(format!("no upload {id}"))
}

impl Pipeline {
    /// Creates a resumable upload: the same checks as [`Pipeline::store`] makes before
    /// any byte (identity, request id, content type, service, the size limit against
    /// `header.expected_size`, the length). `header.expected_size` None: the length is
    /// deferred.
    pub async fn create_upload(&self, header: UploadHeader) -> Result<UploadInfo> {
        let caller = self.check_caller(&header)?;
        if header.content_type.len() > 256 {
            return Err(Error::UnsupportedMediaType);
        }
        let route = content_type::route(&header.content_type)?;
        let settings = self.settings();
        if !settings.valid_services.contains(&route.service) {
            return Err(Error::UnsupportedService { service: route.service });
        }
        let limit = settings.limit_for(&route.service);
        if header.expected_size.is_some_and(|s| s > limit) {
            return Err(Error::TooLarge { service: route.service, limit });
        }
        let expected_sha256 = match header.expected_sha256 {
            Some(sha) if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(Error::bad_request("the declared sha256 must be 64 hex characters"))
            }
            sha => sha.map(|s| s.to_ascii_lowercase()),
        };
        let metadata = header.metadata.as_deref().map(|m| self.parse_metadata(m)).transpose()?;
        if let Some(name) = &header.file_name {
            if name.len() > 1024 {
                return Err(Error::bad_request("the file name is longer than 1024 bytes"));
            }
        }
        let id = caller.request_id.as_str().to_string();
        if caller.supplied {
            for b in Bucket::ALL {
                if self.inner.storage.head(b, &id).await?.is_some() {
                    return Err(Error::Conflict(format!("request id {id} was already used for another payload")));
                }
            }
        }
        let rec = UploadRecord {
            id: id.clone(),
            version: 1,
            service: route.service,
            category: route.category,
            content_type: header.content_type,
            file_name: header.file_name,
            metadata,
            account: caller.identity.account_number.clone(),
            org_id: caller.identity.org_id.clone(),
            b64_identity: caller.identity.raw.clone(),
            length: header.expected_size,
            limit,
            offset: 0,
            expected_sha256,
            hash: Default::default(),
            created_at: now_rfc3339(),
            expires_at_ms: now_ms() + settings.upload_expiry.as_millis() as u64,
            claim: None,
            bytes: Default::default(),
            finished: false,
        };
        self.inner.storage.create_upload(&rec).await?;
        self.metrics().resumable("created");
        info!(request_id = %id, length = ?rec.length, "resumable upload created");
        Ok(info(&rec))
    }

    /// The record of an upload the caller owns; NotFound for an unknown id and for
    /// another identity's upload alike, Gone when it expired unfinished.
    async fn owned_upload(&self, id: &str, identity: Option<&str>) -> Result<UploadRecord> {
        if !crate::domain::request_id::is_valid(id) {
            return Err(unknown(id));
        }
        let rec = self.inner.storage.load_upload(id).await?.ok_or_else(|| unknown(id))?;
        let caller = match identity {
            Some(raw) if !raw.is_empty() => identity::decode(raw)?,
            _ => Identity::default(),
        };
        if caller.org_id != rec.org_id || caller.account_number != rec.account {
            return Err(unknown(id));
        }
        if !rec.finished && now_ms() > rec.expires_at_ms {
            return Err(Error::Gone(format!("upload {id} expired unfinished; start again")));
        }
        Ok(rec)
    }

    /// Where an upload stands (tus HEAD, gRPC `QueryWriteStatus`).
    pub async fn upload_info(&self, id: &str, identity: Option<&str>) -> Result<UploadInfo> {
        Ok(info(&self.owned_upload(id, identity).await?))
    }

    /// Throws an unfinished upload away (tus DELETE, gRPC `CancelUpload`).
    pub async fn cancel_upload(&self, id: &str, identity: Option<&str>) -> Result<UploadInfo> {
        let rec = self.owned_upload(id, identity).await?;
        if rec.finished {
            return Err(Error::Conflict(format!("upload {id} is complete: its payload was handed on")));
        }
        if rec.claim.as_ref().is_some_and(|c| self.claim_holds(c)) {
            return Err(Error::Locked(format!("upload {id} is being written right now; try again")));
        }
        self.inner.storage.remove_upload(&rec).await?;
        self.metrics().resumable("cancelled");
        info!(request_id = %id, "resumable upload cancelled");
        Ok(info(&rec))
    }

    /// Appends one request's bytes (tus PATCH, gRPC `Write`), and finishes the upload
    /// when they reach its length. The work runs in a task of its own: a client that
    /// goes away ends the body, and what arrived is committed all the same.
    pub async fn append_upload(&self, id: &str, identity: Option<&str>, append: Append) -> Result<Appended> {
        let rec = self.owned_upload(id, identity).await?;
        let p = self.clone();
        let span = tracing::info_span!("append", request_id = %id);
        tokio::spawn(tracing::Instrument::instrument(async move { p.append_owned(rec, append).await }, span))
            .await
            .map_err(|e| Error::Internal(format!("appending: {e}")))?
    }

    async fn append_owned(&self, mut rec: UploadRecord, mut append: Append) -> Result<Appended> {
        if rec.offset != append.offset {
            return Err(Error::OffsetMismatch { expected: rec.offset, got: append.offset });
        }
        if rec.finished {
            // A retried last request: the payload was handed on already.
            return Ok(Appended { upload: info(&rec), receipt: Some(receipt(&rec)) });
        }
        if let Some(len) = append.length {
            match rec.length {
                Some(l) if l != len => {
                    return Err(Error::bad_request(format!("the upload's length is {l}; this request says {len}")))
                }
                Some(_) => {}
                None if len > rec.limit => return Err(Error::TooLarge { service: rec.service.clone(), limit: rec.limit }),
                None if len < rec.offset => {
                    return Err(Error::bad_request(format!("length {len} is less than the {} bytes stored", rec.offset)))
                }
                None => rec.length = Some(len),
            }
        }
        let holder = uuid::Uuid::new_v4().simple().to_string();
        let claim_for = self.settings().upload_claim;
        if let Some(c) = &rec.claim {
            if self.claim_holds(c) {
                return Err(Error::Locked(format!(
                    "upload {} is being written by another request; its claim ends within {} s unless it goes on",
                    rec.id,
                    (c.until_ms - now_ms()).div_ceil(1000)
                )));
            }
        }
        rec.claim = Some(Claim { holder, until_ms: now_ms() + claim_for.as_millis() as u64, replica: self.replica().to_string() });
        self.save(&mut rec).await?;
        let started = rec.clone();
        // The claim is ours: a writer of a request whose claim lapsed (it stalled) is
        // cut off by the storage as this one opens (its later bytes never land).
        let result = match self.inner.storage.upload_writer(&rec).await {
            Ok(mut writer) => self.write_body(&mut rec, &mut *writer, &mut append, claim_for).await,
            Err(e) => Err(e),
        };
        // Give the claim back whatever happened (a failed save left it to expire).
        let released = if rec.claim.is_some() {
            rec.claim = None;
            self.save(&mut rec).await
        } else {
            Ok(())
        };
        let wrote = result?;
        released?;
        if wrote.refused_checksum {
            return Err(Error::ChecksumMismatch(
                "the request's bytes do not match the checksum declared for them; none of them were kept".into(),
            ));
        }
        self.metrics().resumable_bytes(rec.offset - started.offset);
        if append.ends.as_ref().is_some_and(|e| e.load(Ordering::Acquire)) {
            match rec.length {
                Some(l) if l != rec.offset => {
                    return Err(Error::bad_request(format!("the upload ended at {} bytes; its length is {l}", rec.offset)))
                }
                _ => rec.length = Some(rec.offset),
            }
        }
        if rec.length != Some(rec.offset) {
            return Ok(Appended { upload: info(&rec), receipt: None });
        }
        let receipt = self.finish(&mut rec).await?;
        Ok(Appended { upload: info(&rec), receipt: Some(receipt) })
    }

    /// Whether a writer's claim still keeps others out: until it runs out, unless it is
    /// a killed process's on local disk (one process per data folder).
    fn claim_holds(&self, c: &Claim) -> bool {
        let local = matches!(self.settings().storage, crate::config::StorageChoice::Local);
        c.until_ms > now_ms() && !(local && c.replica != self.replica())
    }

    /// Saves the next version of `rec` (its claim renewed when it holds one); Locked
    /// when another request saved first (it took the upload over).
    async fn save(&self, rec: &mut UploadRecord) -> Result<()> {
        rec.version += 1;
        if let Some(c) = &mut rec.claim {
            c.until_ms = now_ms() + self.settings().upload_claim.as_millis() as u64;
        }
        if self.inner.storage.save_upload(rec).await? {
            return Ok(());
        }
        rec.claim = None; // not ours any more: nothing to give back
        Err(Error::Locked(format!("upload {} was taken over by another request; ask where it stands", rec.id)))
    }

    async fn write_body(&self, rec: &mut UploadRecord, writer: &mut dyn UploadWriter, append: &mut Append, claim_for: Duration) -> Result<Wrote> {
        let mut hash = rec.hash.clone();
        let mut chunk_hash = append.checksum.as_ref().map(|c| ChunkHasher::new(c.algorithm));
        // Bytes taken by this request and not yet committed.
        let mut taken: u64 = 0;
        let idle = self.settings().body_idle_timeout;
        let mut body_error = None;
        loop {
            let next = match tokio::time::timeout(idle, append.body.next()).await {
                Ok(Some(Ok(b))) => b,
                Ok(Some(Err(e))) => {
                    body_error = Some(e);
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    body_error = Some(Error::Timeout(format!("the upload's body stalled for {} s", idle.as_secs())));
                    break;
                }
            };
            let at = rec.offset + taken + next.len() as u64;
            let over = match rec.length {
                Some(l) if at > l => Some(Error::bad_request(format!("the request's bytes go past the upload's length, {l}"))),
                None if at > rec.limit => Some(Error::TooLarge { service: rec.service.clone(), limit: rec.limit }),
                _ => None,
            };
            if let Some(e) = over {
                body_error = Some(e);
                break;
            }
            if let Some(h) = &mut chunk_hash {
                h.update(&next);
            }
            self.metrics().bytes_received(next.len() as u64);
            let mut rest: Bytes = next;
            while !rest.is_empty() {
                let room = (writer.part_size() - writer.pending()).min(rest.len() as u64) as usize;
                let piece = rest.split_to(room);
                hash.update(&piece);
                taken += piece.len() as u64;
                writer.write(piece).await?;
                if writer.pending() >= writer.part_size() && chunk_hash.is_none() {
                    self.commit(rec, writer, &hash, &mut taken, false).await?;
                }
            }
            // A slow client holds its claim by sending: renew it before it runs out.
            let half = claim_for.as_millis() as u64 / 2;
            if rec.claim.as_ref().is_some_and(|c| c.until_ms < now_ms() + half) {
                self.save(rec).await?;
            }
        }
        let refused_checksum = match (chunk_hash, &append.checksum) {
            (Some(h), Some(want)) => body_error.is_some() || h.finish() != want.digest,
            _ => false,
        };
        if !refused_checksum && taken > 0 {
            // The last commit gives the claim back in the same save: whoever sees
            // these bytes committed may go on at once.
            self.commit(rec, writer, &hash, &mut taken, true).await?;
        }
        match body_error {
            // The client's own failure: what arrived before it is kept (tus: a
            // broken-off PATCH keeps its bytes), and the client hears of it.
            Some(e) if !refused_checksum => Err(e),
            _ => Ok(Wrote { refused_checksum }),
        }
    }

    /// Makes what the writer holds durable and saves the record that counts it; with
    /// `release`, the claim is given back in the same save.
    async fn commit(
        &self,
        rec: &mut UploadRecord,
        writer: &mut dyn UploadWriter,
        hash: &crate::domain::sha256_state::Sha256State,
        taken: &mut u64,
        release: bool,
    ) -> Result<()> {
        let bytes = writer.flush().await?;
        let before = rec.clone();
        rec.bytes = bytes;
        rec.offset += *taken;
        rec.hash = hash.clone();
        if release {
            rec.claim = None;
        }
        if let Err(e) = self.save(rec).await {
            // Taken over (Locked): nothing to give back. Otherwise the claim is still
            // ours, and the caller gives it back.
            let claim = if matches!(e, Error::Locked(_)) { None } else { before.claim.clone() };
            *rec = before;
            rec.claim = claim;
            return Err(e);
        }
        *taken = 0;
        Ok(())
    }

    /// All bytes are in: check the declared sha256, put the payload in quarantine,
    /// announce it, mark the upload finished.
    async fn finish(&self, rec: &mut UploadRecord) -> Result<Receipt> {
        let sha256 = rec.hash.hex();
        if let Some(want) = &rec.expected_sha256 {
            if *want != sha256 {
                // Nothing is kept: the upload is removed with its bytes.
                if let Err(e) = self.inner.storage.remove_upload(rec).await {
                    warn!(request_id = %rec.id, error = %e, "could not remove an upload whose sha256 differed");
                }
                return Err(Error::ChecksumMismatch(format!(
                    "the payload's sha256 is {sha256}; its upload declared {want}; nothing was kept"
                )));
            }
        }
        let meta = ObjectMeta { received_at: now_rfc3339(), ..rec.object_meta() };
        let identity = Identity { account_number: rec.account.clone(), org_id: rec.org_id.clone(), raw: rec.b64_identity.clone() };
        let hold = self.inner.in_hand.hold(&rec.id);
        let stored = self.inner.storage.finish_upload(rec, meta).await?;
        let staged = Staged::resumed(self.clone(), identity, stored, hold)?;
        let receipt = staged.announce().await?;
        rec.finished = true;
        if let Err(e) = self.save(rec).await {
            // Stored and announced: the client's 2xx stands. A retried last request
            // finds the payload in quarantine and announces it again (consumers
            // de-duplicate by request id).
            warn!(request_id = %rec.id, error = %e, "could not mark a finished upload");
        }
        self.metrics().resumable("finished");
        Ok(receipt)
    }

    /// Removes expired unfinished uploads (and finished ones' records past their
    /// expiry), every `every`, until shutdown. Any replica may run it: removing twice
    /// is harmless, and an upload being written (its claim holds) is left alone.
    pub async fn sweep_uploads(self, every: Duration) {
        let shutdown = self.shutdown_token();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.sweep_uploads_once().await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "removed expired resumable uploads"),
                Err(e) => warn!(error = %e, "the resumable upload sweep failed; will try again"),
            }
        }
    }

    pub async fn sweep_uploads_once(&self) -> Result<usize> {
        let mut removed = 0;
        for id in self.inner.storage.list_uploads().await? {
            let Some(rec) = self.inner.storage.load_upload(&id).await? else { continue };
            let now = now_ms();
            if now <= rec.expires_at_ms || rec.claim.as_ref().is_some_and(|c| self.claim_holds(c)) {
                continue;
            }
            self.inner.storage.remove_upload(&rec).await?;
            if !rec.finished {
                self.metrics().resumable("expired");
            }
            removed += 1;
        }
        Ok(removed)
    }
}

struct Wrote {
    refused_checksum: bool,
}
