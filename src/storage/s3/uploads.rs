//! Resumable uploads on S3 (issue #14): everything in the quarantine bucket, so any
//! replica can continue an upload and a SIGKILL loses nothing committed.
//!
//! ```text
//! <quarantine>/.uploads/<id>/record.<version, 20 digits>   its UploadRecord, one object per version
//! <quarantine>/.uploads/<id>/tail.<version, 20 digits>.<n> the bytes after the last part (< a part)
//! <quarantine>/<id>                                         ONE multipart upload, created with the
//!                                                           first part, completed by finish_upload
//! ```
//! - A record is written once, with `If-None-Match: *`, under its version: the
//!   compare-and-set of `save_upload` is "record.<v> does not exist yet, and the newest
//!   stored is v-1". The previous record stays (a reader that listed a moment ago still
//!   finds one); older ones are deleted after a save.
//! - Parts are exactly the configured part size (S3's minimum for every part but the
//!   last is 5 MiB), numbered in order. What a request ends with below a part is a tail
//!   object of its own, under a fresh name, named for the version that will point at it:
//!   the tail a stored record points at is never overwritten nor deleted before a newer
//!   record is saved. The next writer reads it back into its part buffer.
//! - Finishing uploads the tail as the last part (read back: less than a part in
//!   memory), writes the sidecar, then completes the multipart upload onto the payload's key: no copy of
//!   the payload. An upload without a whole part is one PutObject, as a small `put`.
//!   The payload carries a put id derived from the upload (its id and creation time),
//!   so a finish retried after a crash recognises its own object.
//! - The multipart upload is not in the journal (it outlives the process on purpose),
//!   and the stale-upload sweep leaves it alone while the upload has a record: the
//!   pipeline's expiry sweep removes expired uploads (`remove_upload`).
//!
//! A writer that wrote parts but whose record was never saved (it lost the race, or
//! the process died) leaves nothing the record refers to changed except parts with
//! numbers after the record's last: the next writer from the record uploads those
//! numbers again, replacing them. A writer looks before each part whether the newest
//! record already counts that part number (another writer went on meanwhile), and
//! stops if so; CompleteMultipartUpload
//! checks every part's ETag against the record's, so stray bytes can fail a finish,
//! never end up in a payload.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::upload::{abort, user_metadata, UnsignedOverTls};
use super::{inline, refused_or_unavailable, status, unavailable, S3Storage, MAX_PARTS};
use crate::error::{Error, Result};
use crate::storage::resumable::{PartRef, StoredBytes, TailRef, UploadRecord, UploadWriter};
use crate::storage::{Bucket, ObjectMeta};

/// Where every upload's objects are, in quarantine (dot-prefixed: `list` skips it).
pub(super) const UPLOADS: &str = ".uploads/";
/// S3's smallest part (all but the last).
const MIN_PART: usize = 5 << 20;

fn upload_prefix(id: &str) -> String {
    format!("{UPLOADS}{id}/")
}

fn record_prefix(id: &str) -> String {
    format!("{UPLOADS}{id}/record.")
}

fn record_key(id: &str, version: u64) -> String {
    format!("{UPLOADS}{id}/record.{version:020}")
}

fn tail_key(id: &str, version: u64) -> String {
    format!("{UPLOADS}{id}/tail.{version:020}.{}", uuid::Uuid::new_v4().simple())
}

/// The prefix of the records of the upload that has key `key` as payload.
pub(super) fn records_of(key: &str) -> String {
    record_prefix(key)
}

/// What an object under `.uploads/<id>/` is: a record or a tail, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Tail,
}

fn parse(prefix: &str, key: &str) -> Option<(Kind, u64)> {
    let name = key.strip_prefix(prefix)?;
    let (kind, rest) = if let Some(r) = name.strip_prefix("record.") {
        (Kind::Record, r)
    } else if let Some(r) = name.strip_prefix("tail.") {
        (Kind::Tail, r.split('.').next()?)
    } else {
        return None;
    };
    (rest.len() == 20).then_some(())?;
    Some((kind, rest.parse().ok()?))
}

/// The put id of an upload's payload: the same for every replica and every retry.
fn put_id(rec: &UploadRecord) -> String {
    let digest = Sha256::digest(format!("resumable\n{}\n{}", rec.id, rec.created_at).as_bytes());
    hex::encode(&digest[..16])
}

/// What the payload object says of itself (user metadata), from the record: the same
/// names a `put` writes, so a reader without the sidecar sees the same.
fn object_meta(rec: &UploadRecord) -> ObjectMeta {
    // What the object's own metadata may carry before its bytes are all in: no
    // identity, size or hash yet (the sidecar or the finished object has them).
    ObjectMeta {
        b64_identity: String::new(),
        size: 0,
        sha256: String::new(),
        metadata: None,
        put_id: Some(put_id(rec)),
        ..rec.object_meta()
    }
}

/// The objects of one upload, by kind, oldest version first.
struct Objects {
    records: Vec<(u64, String)>,
    tails: Vec<(u64, String)>,
}

impl S3Storage {
    fn quarantine(&self) -> &str {
        self.name(Bucket::Quarantine)
    }

    /// Every key under `prefix` in quarantine.
    pub(super) async fn keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        let bucket = self.quarantine();
        let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(&format!("listing {prefix} in {bucket}"), e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        Ok(keys)
    }

    /// The records (and, unless `records_only`, the tails) of upload `id`.
    async fn upload_objects(&self, id: &str, records_only: bool) -> Result<Objects> {
        let prefix = upload_prefix(id);
        let listed = if records_only { record_prefix(id) } else { prefix.clone() };
        let mut objects = Objects { records: Vec::new(), tails: Vec::new() };
        for key in self.keys_under(&listed).await? {
            match parse(&prefix, &key) {
                Some((Kind::Record, v)) => objects.records.push((v, key)),
                Some((Kind::Tail, v)) => objects.tails.push((v, key)),
                None => {}
            }
        }
        objects.records.sort();
        objects.tails.sort();
        Ok(objects)
    }

    /// Writes `record.<rec.version>` unless it exists: false when it does.
    async fn put_record(&self, rec: &UploadRecord) -> Result<bool> {
        let json = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let what = format!("the record of upload {}", rec.id);
        self.create_json(self.quarantine(), &record_key(&rec.id, rec.version), json, &what).await
    }

    /// Deletes keys, logging what fails: what is left is removed later (the next save,
    /// finish, remove, or the sweep).
    async fn delete_quietly(&self, keys: Vec<String>) {
        let bucket = self.quarantine();
        for key in &keys {
            if let Err(e) = self.client.delete_object().bucket(bucket).key(key).send().await {
                tracing::warn!(key = %key, bucket, error = %unavailable("deleting", e), "could not delete an upload's old object");
            }
        }
    }

    /// The multipart uploads S3 holds for payload key `id` (the record's, and any that a
    /// writer began and never got into a record).
    async fn multipart_uploads_of(&self, id: &str) -> Result<Vec<String>> {
        let bucket = self.quarantine();
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(id)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| unavailable(&format!("listing the unfinished uploads of {id} in {bucket}"), e))?;
            for u in page.uploads() {
                if let (Some(k), Some(upload)) = (u.key(), u.upload_id()) {
                    if k == id {
                        ids.push(upload.to_string());
                    }
                }
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                return Ok(ids);
            }
        }
    }

    /// Aborts every multipart upload of payload key `id`: true when all are gone.
    async fn abort_all(&self, id: &str, known: Option<&str>) -> Result<bool> {
        let mut uploads = self.multipart_uploads_of(id).await?;
        if let Some(k) = known {
            if !uploads.iter().any(|u| u == k) {
                uploads.push(k.to_string());
            }
        }
        let mut all = true;
        for u in &uploads {
            all &= abort(&self.client, self.quarantine(), id, u).await;
        }
        Ok(all)
    }

    /// An object of the gateway's, whole, in memory (a tail: less than a part).
    async fn read_small(&self, key: &str, limit: usize) -> Result<Bytes> {
        let bucket = self.quarantine();
        let out = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) if self.absent(&e).await => {
                return Err(Error::NotFound(format!("{key} is not in {bucket}: the upload's bytes are gone")))
            }
            Err(e) => return Err(unavailable(&format!("{key} in {bucket}"), e)),
        };
        if out.content_length().is_some_and(|n| n < 0 || n as usize > limit) {
            return Err(Error::Internal(format!("{key} in {bucket} is larger than a part")));
        }
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::StorageUnavailable(format!("reading {key} in {bucket}: {e}")))?
            .into_bytes();
        Ok(bytes)
    }

    pub(super) async fn create_upload(&self, rec: &UploadRecord) -> Result<()> {
        let taken = || Error::Conflict(format!("request id {} is already used by another upload", rec.id));
        if !self.upload_objects(&rec.id, true).await?.records.is_empty() {
            return Err(taken());
        }
        if self.put_record(rec).await? {
            Ok(())
        } else {
            Err(taken())
        }
    }

    pub(super) async fn load_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        // The newest record can be deleted between the listing and the read (two saves
        // came in between): list again.
        for _ in 0..5 {
            let objects = self.upload_objects(id, true).await?;
            let Some((_, key)) = objects.records.last() else {
                return Ok(None);
            };
            if let Some(rec) = self.read_json(self.quarantine(), key, &format!("the record of upload {id}")).await? {
                return Ok(Some(rec));
            }
        }
        Err(Error::StorageUnavailable(format!("the record of upload {id} kept changing while it was read")))
    }

    pub(super) async fn save_upload(&self, rec: &UploadRecord) -> Result<bool> {
        let objects = self.upload_objects(&rec.id, false).await?;
        // The stored record must be the one `rec` was made from. The conditional write
        // alone would not do: a record deleted as old (two saves ago) could be written
        // again by a writer that long stalled.
        match objects.records.last() {
            Some((v, _)) if v + 1 == rec.version => {}
            _ => return Ok(false),
        }
        if !self.put_record(rec).await? {
            return Ok(false);
        }
        // Keep this record and the one before it (and the tails they point at).
        let current_tail = rec.bytes.tail.as_ref().map(|t| t.key.as_str());
        let mut old = Vec::new();
        for (v, k) in objects.tails.into_iter().chain(objects.records) {
            if v + 2 <= rec.version && Some(k.as_str()) != current_tail {
                old.push(k);
            }
        }
        self.delete_quietly(old).await;
        Ok(true)
    }

    pub(super) async fn upload_writer(&self, rec: &UploadRecord) -> Result<Box<dyn UploadWriter>> {
        let part_size = self.options.part_size.max(MIN_PART);
        let mut w = S3Writer {
            client: self.client.clone(),
            bucket: self.quarantine().to_string(),
            id: rec.id.clone(),
            version: rec.version,
            part_size,
            unsigned: !self.options.sign_payloads,
            content_type: rec.content_type.clone(),
            metadata: user_metadata(&object_meta(rec)),
            layout: rec.bytes.clone(),
            buf: Buffer::default(),
        };
        if let Some(tail) = &rec.bytes.tail {
            // Straight into the part buffer, chunk by chunk: one part in memory.
            let bucket = self.quarantine();
            let mut out = match self.client.get_object().bucket(bucket).key(&tail.key).send().await {
                Ok(o) => o,
                Err(e) if self.absent(&e).await => {
                    return Err(Error::NotFound(format!("upload {}: its tail {} is gone", rec.id, tail.key)))
                }
                Err(e) => return Err(unavailable(&format!("the tail of upload {}", rec.id), e)),
            };
            while let Some(chunk) = out.body.next().await {
                let chunk = chunk.map_err(|e| Error::StorageUnavailable(format!("reading the tail of upload {}: {e}", rec.id)))?;
                w.buf.append(&chunk, part_size)?;
            }
            if w.buf.len as u64 != tail.size {
                return Err(Error::Internal(format!(
                    "upload {}: its tail {} holds {} bytes, its record says {}",
                    rec.id, tail.key, w.buf.len, tail.size
                )));
            }
        }
        Ok(Box::new(w))
    }

    pub(super) async fn finish_upload(&self, rec: &UploadRecord, meta: ObjectMeta) -> Result<ObjectMeta> {
        let id = rec.id.as_str();
        let pid = put_id(rec);
        if let Some(done) = self.finished_already(id, &pid).await? {
            self.clean_after_finish(rec).await;
            return Ok(done);
        }
        let b = &rec.bytes;
        let stored = b.parts.iter().map(|p| p.size).sum::<u64>() + b.tail.as_ref().map_or(0, |t| t.size);
        if stored != rec.offset {
            return Err(Error::Internal(format!(
                "upload {id}: its record holds {stored} bytes in parts and tail, its offset says {}",
                rec.offset
            )));
        }
        let bucket = self.quarantine().to_string();
        let meta = ObjectMeta { put_id: Some(pid.clone()), ..meta };
        let result = if b.parts.is_empty() {
            self.finish_single(rec, &meta).await
        } else {
            self.finish_multipart(rec, &meta).await
        };
        match result {
            Ok(()) => {}
            // Taken: by this upload's own finish running elsewhere (or done before a
            // crash), or by another payload.
            Err(e @ (Error::Conflict(_) | Error::NotFound(_))) => {
                return match self.finished_already(id, &pid).await? {
                    Some(done) => Ok(done),
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        tracing::debug!(key = id, bucket = %bucket, "finished a resumable upload");
        self.clean_after_finish(rec).await;
        Ok(meta)
    }

    /// The meta of payload `id` when quarantine holds it with put id `pid` (this
    /// upload's); Conflict when it holds another payload under that id.
    async fn finished_already(&self, id: &str, pid: &str) -> Result<Option<ObjectMeta>> {
        let Some(object) = self.head_object(Bucket::Quarantine, id).await? else {
            return Ok(None);
        };
        if inline::put_id(object.metadata()).as_deref() != Some(pid) {
            return Err(Error::Conflict(format!(
                "request id {id} is already used by a stored payload, or by one being stored right now"
            )));
        }
        match crate::storage::Storage::head(self, Bucket::Quarantine, id).await? {
            Some(meta) => Ok(Some(meta)),
            None => Ok(None),
        }
    }

    /// Writes the sidecar unless there is one; one of this upload's own (a retried
    /// finish) is fine.
    async fn create_meta_once(&self, key: &str, meta: &ObjectMeta) -> Result<()> {
        match self.create_meta(self.quarantine(), key, meta).await {
            Err(Error::Conflict(c)) => match self.read_meta(Bucket::Quarantine, key).await? {
                Some(m) if m.put_id == meta.put_id => Ok(()),
                _ => Err(Error::Conflict(c)),
            },
            other => other,
        }
    }

    /// No whole part: the tail (or nothing) becomes the payload in one PutObject, its
    /// meta inside when it fits, as a small `put`.
    async fn finish_single(&self, rec: &UploadRecord, meta: &ObjectMeta) -> Result<()> {
        let id = rec.id.as_str();
        let body = match &rec.bytes.tail {
            Some(t) => self.read_small(&t.key, self.options.part_size.max(MIN_PART))
                .await?,
            None => Bytes::new(),
        };
        if body.len() as u64 != rec.offset {
            return Err(Error::Internal(format!("upload {id}: its tail holds {} bytes, not {}", body.len(), rec.offset)));
        }
        let metadata = match inline::with_meta(user_metadata(meta), meta) {
            Some(m) => m,
            None => {
                self.create_meta_once(id, meta).await?;
                user_metadata(meta)
            }
        };
        let bucket = self.quarantine();
        self.client
            .put_object()
            .bucket(bucket)
            .key(id)
            .if_none_match("*")
            .content_type(&meta.content_type)
            .set_metadata(Some(metadata))
            .body(S3Body::from(body))
            .customize()
            .disable_payload_signing_if(!self.options.sign_payloads)
            .send()
            .await
            .map_err(|e| refused_or_unavailable(id, &format!("storing {id} in {bucket}"), e))?;
        Ok(())
    }

    /// The tail goes in as the last part, the sidecar is written,
    /// and the multipart upload is completed onto the payload's key.
    async fn finish_multipart(&self, rec: &UploadRecord, meta: &ObjectMeta) -> Result<()> {
        let id = rec.id.as_str();
        let bucket = self.quarantine();
        let upload_id = rec
            .bytes
            .upload_id
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("upload {id}: parts without a multipart upload")))?;
        let gone = |what: &str| Error::NotFound(format!("upload {id}: {what}: its multipart upload is gone"));
        let mut parts: Vec<CompletedPart> = rec
            .bytes
            .parts
            .iter()
            .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build())
            .collect();
        if let Some(tail) = &rec.bytes.tail {
            // Read back and sent as a part (less than a part in memory): UploadPartCopy
            // would keep it inside S3, but Garage refuses a copy source under 5 MiB even
            // for the last part.
            let number = rec.bytes.parts.last().map_or(1, |p| p.number + 1);
            let body = self.read_small(&tail.key, self.options.part_size.max(MIN_PART)).await?;
            if body.len() as u64 != tail.size {
                return Err(Error::Internal(format!("upload {id}: its tail holds {} bytes, not {}", body.len(), tail.size)));
            }
            let out = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(id)
                .upload_id(upload_id)
                .part_number(number)
                .body(S3Body::from(body))
                .customize()
                .disable_payload_signing_if(!self.options.sign_payloads)
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => return Err(gone("its last part")),
                Err(e) => return Err(unavailable(&format!("sending the tail of upload {id} as its last part"), e)),
            };
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_string)).build());
        }
        self.create_meta_once(id, meta).await?;
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(id)
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => Err(gone("completing it")),
            Err(e) if e.code() == Some("InvalidPart") || e.code() == Some("InvalidPartOrder") => Err(Error::Internal(format!(
                "upload {id}: S3 holds other parts than its record says ({}); it cannot be finished",
                e.code().unwrap_or_default()
            ))),
            Err(e) => Err(refused_or_unavailable(id, &format!("completing upload {id} in {bucket}"), e)),
        }
    }

    /// Once the payload is whole: the tails and any multipart upload a writer began and
    /// never got into a record go (best-effort; `remove_upload` and the sweep retry).
    async fn clean_after_finish(&self, rec: &UploadRecord) {
        match self.upload_objects(&rec.id, false).await {
            Ok(o) => self.delete_quietly(o.tails.into_iter().map(|(_, k)| k).collect()).await,
            Err(e) => tracing::warn!(upload = %rec.id, error = %e, "could not list a finished upload's tails"),
        }
        if let Err(e) = self.abort_all(&rec.id, None).await {
            tracing::warn!(upload = %rec.id, error = %e, "could not list a finished upload's stray multipart uploads");
        }
    }

    pub(super) async fn remove_upload(&self, rec: &UploadRecord) -> Result<()> {
        // A finished upload's payload is a completed object, not an upload: aborting
        // leaves it alone.
        if !self.abort_all(&rec.id, rec.bytes.upload_id.as_deref()).await? {
            return Err(Error::StorageUnavailable(format!("S3 did not abort the multipart upload of {}", rec.id)));
        }
        // Tails first and the newest record last, so that what an interrupted removal
        // leaves is still an upload with a record, removed again by the next sweep.
        let o = self.upload_objects(&rec.id, false).await?;
        let bucket = self.quarantine();
        for (_, key) in o.tails.iter().chain(o.records.iter()) {
            self.delete_key(bucket, key).await?;
        }
        // Anything else under the upload's folder (none is written today).
        for key in self.keys_under(&upload_prefix(&rec.id)).await? {
            self.delete_key(bucket, &key).await?;
        }
        Ok(())
    }

    pub(super) async fn list_uploads(&self) -> Result<Vec<String>> {
        let bucket = self.quarantine();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(UPLOADS)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(&format!("listing the uploads in {bucket}"), e))?;
            for p in page.common_prefixes() {
                if let Some(id) = p.prefix().and_then(|p| p.strip_prefix(UPLOADS)).and_then(|p| p.strip_suffix('/')) {
                    if !id.is_empty() {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// The bytes since the last part: one part at most, in memory of its own (an
/// anonymous mapping, returned to the system once the part is sent; see `parts.rs`).
/// Shared with the request body while a tail is sent, then taken back.
#[derive(Default)]
struct Buffer {
    map: Option<Arc<memmap2::MmapMut>>,
    len: usize,
}

/// A view of the first `len` bytes of a buffer, as a request body.
struct View(Arc<memmap2::MmapMut>, usize);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        &self.0[..self.1]
    }
}

impl Buffer {
    fn append(&mut self, data: &[u8], part_size: usize) -> Result<()> {
        if self.len + data.len() > part_size {
            return Err(Error::Internal(format!(
                "an upload writer was given {} bytes with {} of a {part_size}-byte part pending",
                data.len(),
                self.len
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        let map = match &mut self.map {
            Some(m) => m,
            None => self.map.insert(Arc::new(map_anon(part_size)?)),
        };
        if Arc::get_mut(map).is_none() {
            // Still held by a request body: continue in a copy.
            let mut fresh = map_anon(part_size)?;
            fresh[..self.len].copy_from_slice(&map[..self.len]);
            *map = Arc::new(fresh);
        }
        let m = Arc::get_mut(map).expect("not shared");
        m[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(())
    }

    fn bytes(&self) -> Bytes {
        match &self.map {
            Some(m) => Bytes::from_owner(View(m.clone(), self.len)),
            None => Bytes::new(),
        }
    }

    fn clear(&mut self) {
        *self = Buffer::default();
    }
}

fn map_anon(size: usize) -> Result<memmap2::MmapMut> {
    memmap2::MmapMut::map_anon(size)
        .map_err(|e| Error::Internal(format!("cannot map {size} bytes for an upload part: {e}")))
}

struct S3Writer {
    client: Client,
    bucket: String,
    id: String,
    /// The version of the record the writer was made from: its tails are named for
    /// the next.
    version: u64,
    part_size: usize,
    unsigned: bool,
    content_type: String,
    /// The payload object's user metadata, given when the multipart upload starts.
    metadata: HashMap<String, String>,
    /// Where the bytes are, as of the last flush.
    layout: StoredBytes,
    buf: Buffer,
}

impl S3Writer {
    async fn multipart_upload(&mut self) -> Result<String> {
        if let Some(u) = &self.layout.upload_id {
            return Ok(u.clone());
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.id)
            .content_type(&self.content_type)
            .set_metadata(Some(self.metadata.clone()))
            .send()
            .await
            .map_err(|e| unavailable(&format!("starting the multipart upload of {} in {}", self.id, self.bucket), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::StorageUnavailable("S3 started an upload without an id".into()))?
            .to_string();
        self.layout.upload_id = Some(upload_id.clone());
        Ok(upload_id)
    }

    /// Refuses to send part `number` when the newest saved record already counts a part
    /// with that number in the same multipart upload: another writer continued from the
    /// record this one was made from (this one stalled past its claim), and this part
    /// would replace one of its. (What is left, a part sent in the moment between this
    /// look and the other's save, fails the finish's ETag check: never a wrong payload.)
    async fn still_current(&self, upload_id: &str, number: i32) -> Result<()> {
        let what = || format!("the record of upload {}", self.id);
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(record_prefix(&self.id))
            .send()
            .await
            .map_err(|e| unavailable(&what(), e))?;
        let newest = listed.contents().iter().filter_map(|o| o.key()).max();
        let Some(newest) = newest else {
            return Err(Error::NotFound(format!("upload {} is gone", self.id)));
        };
        let out = match self.client.get_object().bucket(&self.bucket).key(newest).send().await {
            Ok(o) => o,
            // Replaced by a newer one meanwhile: the writer that saved it is the one
            // that decides; its save of this writer's bytes cannot follow anyway.
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(unavailable(&what(), e)),
        };
        let bytes = out.body.collect().await.map_err(|e| Error::StorageUnavailable(format!("{}: {e}", what())))?.into_bytes();
        let rec: UploadRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("{}: {e}", what())))?;
        let counted = rec.bytes.upload_id.as_deref() == Some(upload_id) && rec.bytes.parts.iter().any(|p| p.number >= number);
        if counted {
            return Err(Error::Conflict(format!(
                "upload {} was continued by another request; this request's bytes are not kept",
                self.id
            )));
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<()> {
        let number = self.layout.parts.last().map_or(1, |p| p.number + 1);
        if let Some(upload_id) = &self.layout.upload_id {
            self.still_current(upload_id, number).await?;
        }
        let upload_id = self.multipart_upload().await?;
        // One more for the tail at the end, at most.
        if number as u64 >= MAX_PARTS {
            return Err(Error::Internal(format!("upload {}: more than {MAX_PARTS} parts", self.id)));
        }
        let size = self.buf.len as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.id)
            .upload_id(&upload_id)
            .part_number(number)
            .body(S3Body::from(self.buf.bytes()))
            .customize()
            .disable_payload_signing_if(self.unsigned)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => {
                return Err(Error::NotFound(format!("upload {}: its multipart upload is gone", self.id)))
            }
            Err(e) => return Err(unavailable(&format!("sending part {number} of upload {}", self.id), e)),
        };
        let etag = out
            .e_tag()
            .ok_or_else(|| Error::StorageUnavailable(format!("S3 took part {number} of upload {} without an ETag", self.id)))?
            .to_string();
        self.layout.parts.push(PartRef { number, etag, size });
        self.layout.tail = None;
        self.buf.clear();
        Ok(())
    }

    async fn send_tail(&mut self) -> Result<()> {
        let key = tail_key(&self.id, self.version + 1);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(S3Body::from(self.buf.bytes()))
            .customize()
            .disable_payload_signing_if(self.unsigned)
            .send()
            .await
            .map_err(|e| unavailable(&format!("storing the tail of upload {}", self.id), e))?;
        self.layout.tail = Some(TailRef { key, size: self.buf.len as u64 });
        Ok(())
    }
}

#[async_trait::async_trait]
impl UploadWriter for S3Writer {
    fn pending(&self) -> u64 {
        self.buf.len as u64
    }

    fn part_size(&self) -> u64 {
        self.part_size as u64
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buf.append(&chunk, self.part_size)
    }

    async fn flush(&mut self) -> Result<StoredBytes> {
        if self.buf.len == self.part_size {
            self.send_part().await?;
        } else if self.buf.len > 0 && self.layout.tail.as_ref().map(|t| t.size) != Some(self.buf.len as u64) {
            // (A tail already stored holds exactly these bytes when nothing was written
            // since it was read back or sent.)
            self.send_tail().await?;
        }
        Ok(self.layout.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_version_and_parse_back() {
        let p = upload_prefix("abc");
        assert_eq!(parse(&p, &record_key("abc", 12)), Some((Kind::Record, 12)));
        assert!(record_key("abc", 9) < record_key("abc", 10), "zero-padded: string order is version order");
        assert_eq!(parse(&p, &tail_key("abc", 7)), Some((Kind::Tail, 7)));
        assert_ne!(tail_key("abc", 7), tail_key("abc", 7), "every tail has a name of its own");
        assert_eq!(parse(&p, ".uploads/abc/record.12"), None);
        assert_eq!(parse(&p, ".uploads/abcd/record.00000000000000000001"), None);
    }
}
