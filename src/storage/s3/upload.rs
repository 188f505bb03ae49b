//! Streaming a payload into S3. What fits in one part goes up with one PutObject;
//! anything larger with a multipart upload whose parts are sent while the next one is
//! read, at most `max_inflight_parts` at once: memory stays under
//! part size x (parts in flight + 1), whatever the payload's size.
//!
//! A [`Leftovers`] guard follows what has been sent. When the upload fails, or its
//! future is dropped part-way (the client went away), it aborts the multipart upload
//! and deletes what may have become visible, so nothing is left behind.

use std::collections::HashMap;

use aws_sdk_s3::client::customize::CustomizableOperation;
use aws_sdk_s3::operation::{put_object::PutObjectOutput, upload_part::UploadPartOutput};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::journal::{Entry, Journal};
use super::parts::PartReader;
use super::{inline, refused_or_unavailable, sidecar, unavailable, S3Storage, MAX_PARTS};
use crate::error::{Error, Result};
use crate::domain::Payload;
use crate::storage::{Bucket, ObjectMeta};

pub(super) async fn put(
    s: &S3Storage,
    bucket: Bucket,
    key: &str,
    mut meta: ObjectMeta,
    payload: Payload,
) -> Result<ObjectMeta> {
    let name = s.name(bucket).to_string();
    let part_size = s.options.part_size;
    let mut reader = PartReader { payload, carry: None, failed: false };
    let mut left = Leftovers::new(s.client.clone(), &name, key);
    let result = async {
        let first = reader.next_part(part_size).await?;
        if reader.at_end().await? {
            single(s, &name, key, &mut meta, first, &mut reader, &mut left).await
        } else {
            multipart(s, &name, key, &mut meta, first, &mut reader, &mut left).await
        }
    }
    .await;
    match result {
        Ok(()) => {
            left.disarm();
            if let Some(path) = left.journal.take() {
                Journal::done(&path).await;
            }
            Ok(meta)
        }
        // The payload's own failure: S3 is fine, so clean up before answering.
        Err(e) if reader.failed => {
            left.remove_now().await;
            Err(e)
        }
        // S3 failed: the guard cleans up in the background as it drops, so the
        // client hears at once.
        Err(e) => Err(e),
    }
}

/// The whole payload in one PutObject (it fits in one part). Its meta rides in the
/// object's user metadata when it fits S3's 2 KB, so the put is one round trip, and its
/// `If-None-Match: *` is the key's write-once claim; a meta too large for that goes in
/// a sidecar first (the claim then), as a multipart upload's does.
async fn single(
    s: &S3Storage,
    bucket: &str,
    key: &str,
    meta: &mut ObjectMeta,
    body: Bytes,
    reader: &mut PartReader,
    left: &mut Leftovers,
) -> Result<()> {
    let (size, sha256) = reader.payload.finish()?;
    meta.size = size;
    meta.sha256 = sha256;
    meta.put_id = Some(new_put_id());
    let metadata = match inline::with_meta(user_metadata(meta), meta) {
        Some(m) => m,
        None => {
            s.create_meta(bucket, key, meta).await?;
            left.sidecar = true;
            user_metadata(meta)
        }
    };
    left.object = true;
    s.client
        .put_object()
        .bucket(bucket)
        .key(key)
        .if_none_match("*")
        .content_type(&meta.content_type)
        .set_metadata(Some(metadata))
        .body(S3Body::from(body))
        .customize()
        .disable_payload_signing_if(!s.options.sign_payloads)
        .send()
        .instrument(tracing::info_span!("s3.put_object"))
        .await
        .map_err(|e| refused_or_unavailable(key, &format!("storing {key} in {bucket}"), e))
        .inspect_err(|e| left.object &= !matches!(e, Error::Conflict(_)))?;
    Ok(())
}

/// A fresh id for one put, carried by its object and its sidecar.
fn new_put_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn multipart(
    s: &S3Storage,
    bucket: &str,
    key: &str,
    meta: &mut ObjectMeta,
    first: Bytes,
    reader: &mut PartReader,
    left: &mut Leftovers,
) -> Result<()> {
    let key = key.to_string();
    meta.put_id = Some(new_put_id());
    let created = s
        .client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .content_type(&meta.content_type)
        .set_metadata(Some(user_metadata(meta)))
        .send()
        .await
        .map_err(|e| unavailable(&format!("starting the upload of {key} to {bucket}"), e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Error::StorageUnavailable("S3 started an upload without an id".into()))?
        .to_string();
    left.upload_id = Some(upload_id.clone());
    if let Some(journal) = &s.journal {
        let entry = Entry { bucket: bucket.to_string(), key: key.clone(), upload_id: upload_id.clone() };
        left.journal = journal.add(&entry).await;
    }

    let max_inflight = s.options.max_inflight_parts;
    let unsigned = !s.options.sign_payloads;
    let part_size = s.options.part_size;
    let mut in_flight: JoinSet<Result<CompletedPart>> = JoinSet::new();
    let mut done = Vec::new();
    let mut next = Some(first);
    let mut number: i32 = 0;
    loop {
        // Surface a failed part early rather than after reading the whole payload.
        while let Some(r) = in_flight.try_join_next() {
            done.push(joined(r)?);
        }
        let body = match next.take() {
            Some(b) => b,
            None => match reader.next_part(part_size).await? {
                b if b.is_empty() => break,
                b => b,
            },
        };
        while in_flight.len() >= max_inflight {
            let r = in_flight.join_next().await.expect("the set is not empty");
            done.push(joined(r)?);
        }
        number += 1;
        if number as u64 > MAX_PARTS {
            return Err(Error::Internal("the payload needs more than 10000 parts".into()));
        }
        let req = s
            .client
            .upload_part()
            .bucket(bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(S3Body::from(body));
        let what = format!("sending part {number} of {key} to {bucket}");
        let span = tracing::info_span!("s3.upload_part", part = number);
        in_flight.spawn(
            async move {
                let out = req
                    .customize()
                    .disable_payload_signing_if(unsigned)
                    .send()
                    .await
                    .map_err(|e| unavailable(&what, e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            }
            .instrument(span),
        );
    }
    while let Some(r) = in_flight.join_next().await {
        done.push(joined(r)?);
    }
    let (size, sha256) = reader.payload.finish()?;
    meta.size = size;
    meta.sha256 = sha256;
    s.create_meta(bucket, &key, meta).await?;
    left.sidecar = true;

    done.sort_by_key(|p| p.part_number());
    left.object = true;
    s.client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(&upload_id)
        .if_none_match("*")
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .map_err(|e| refused_or_unavailable(&key, &format!("completing the upload of {key} to {bucket}"), e))
        .inspect_err(|e| left.object &= !matches!(e, Error::Conflict(_)))?;
    Ok(())
}

fn joined(r: std::result::Result<Result<CompletedPart>, tokio::task::JoinError>) -> Result<CompletedPart> {
    r.map_err(|e| Error::Internal(format!("part upload task: {e}")))?
}

/// What a reader of the bucket sees without the sidecar: who sent the payload and what
/// it is (ASCII only, as S3 wants; the sidecar has everything).
pub(super) fn user_metadata(meta: &ObjectMeta) -> HashMap<String, String> {
    let mut m = HashMap::new();
    if let Some(id) = &meta.put_id {
        m.insert(inline::PUT_ID.into(), id.clone());
    }
    m.insert("request-id".into(), meta.request_id.clone());
    m.insert("service".into(), meta.service.clone());
    m.insert("category".into(), meta.category.clone());
    m.insert("received-at".into(), meta.received_at.clone());
    let printable = |v: &str| v.len() <= 256 && v.bytes().all(|b| (0x20..0x7f).contains(&b));
    for (name, value) in [("account", &meta.account), ("org-id", &meta.org_id)] {
        if let Some(v) = value.as_deref().filter(|v| printable(v)) {
            m.insert(name.into(), v.to_string());
        }
    }
    m
}

/// What an unfinished put has sent, removed when the put does not complete.
struct Leftovers {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
    sidecar: bool,
    object: bool,
    /// The upload's journal file, removed once it is aborted or complete.
    journal: Option<std::path::PathBuf>,
    armed: bool,
}

impl Leftovers {
    fn new(client: Client, bucket: &str, key: &str) -> Self {
        Leftovers {
            client,
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: None,
            sidecar: false,
            object: false,
            journal: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Removes what the put sent, and waits for that. The work runs in a task of its
    /// own: a put failed because its client went away is often dropped right after
    /// (its connection is gone), and the removal must not go with it.
    async fn remove_now(&mut self) {
        self.armed = false;
        let removal = remove(self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.take(), self.sidecar, self.object);
        let journal = self.journal.take();
        let _ = tokio::spawn(async move {
            removal.await;
            if let Some(path) = journal {
                Journal::done(&path).await;
            }
        })
        .await;
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !self.armed || (self.upload_id.is_none() && !self.sidecar && !self.object) {
            return;
        }
        let removal = remove(
            self.client.clone(),
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            self.upload_id.take(),
            self.sidecar,
            self.object,
        );
        let journal = self.journal.take();
        let work = async move {
            removal.await;
            if let Some(path) = journal {
                Journal::done(&path).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(work);
            }
            Err(_) => tracing::warn!("no runtime to abort an unfinished upload; the sweep will"),
        }
    }
}

/// Aborts the multipart upload and deletes the payload and sidecar, if sent. A part
/// still arriving when the abort lands may be kept by some stores, so the abort is
/// repeated in the background once such parts had time to finish (S3's own advice).
async fn remove(client: Client, bucket: String, key: String, upload_id: Option<String>, sidecar_sent: bool, object_sent: bool) {
    if let Some(id) = &upload_id {
        // Bounded: the abort is tried again below, and the sweep finds what is left.
        if tokio::time::timeout(std::time::Duration::from_secs(10), abort(&client, &bucket, &key, id)).await.is_err() {
            tracing::warn!(key = %key, bucket = %bucket, "aborting an unfinished upload took over 10 s; trying again in 2 s");
        }
    }
    let mut keys = Vec::new();
    if object_sent {
        keys.push(key.clone());
    }
    if sidecar_sent {
        keys.push(sidecar(&key));
    }
    for k in keys {
        if let Err(e) = client.delete_object().bucket(&bucket).key(&k).send().await {
            tracing::warn!(key = %k, bucket = %bucket, error = %unavailable("deleting", e), "could not remove an unfinished upload's object");
        }
    }
    tracing::info!(key = %key, bucket = %bucket, "removed an unfinished upload");
    if let Some(id) = upload_id {
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            abort(&client, &bucket, &key, &id).await;
        });
    }
}

/// Aborts a multipart upload. True when it is gone (aborted now, or already finished
/// or aborted); false, with a warning, when S3 could not be asked.
pub(super) async fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) -> bool {
    let res = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match res {
        Ok(_) => true,
        Err(e) if aws_sdk_s3::error::ProvideErrorMetadata::code(&e) == Some("NoSuchUpload") => true,
        Err(e) if super::status(&e) == Some(404) => true,
        Err(e) => {
            tracing::warn!(key, bucket, error = %unavailable("aborting an upload", e),
                "could not abort an unfinished upload; the sweep will retry");
            false
        }
    }
}

/// Payload signing hashes every byte a second time (SigV4's sha256). Over TLS it adds
/// nothing (TLS and the request checksum already guard the bytes), so it is skipped
/// there; over plain HTTP it is what keeps the bytes from being altered on the way.
pub(super) trait UnsignedOverTls {
    fn disable_payload_signing_if(self, yes: bool) -> Self;
}

impl<E, B> UnsignedOverTls for CustomizableOperation<PutObjectOutput, E, B> {
    fn disable_payload_signing_if(self, yes: bool) -> Self {
        if yes { self.disable_payload_signing() } else { self }
    }
}

impl<E, B> UnsignedOverTls for CustomizableOperation<UploadPartOutput, E, B> {
    fn disable_payload_signing_if(self, yes: bool) -> Self {
        if yes { self.disable_payload_signing() } else { self }
    }
}
