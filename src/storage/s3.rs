//! Storage on S3 or an S3-compatible store (aws-sdk-s3).
//!
//! ```text
//! <bucket>/<key>               the payload; visible only once whole
//! <bucket>/.meta/<key>.json    its ObjectMeta, when it is not in the object itself
//! <quarantine>/.decided/<key>.json  a payload's verdict, once decided (conditional write)
//! <quarantine>/.uploads/<id>/...    a resumable upload's records and tail (`uploads.rs`)
//! <quarantine>/.status/<key>/<name>.json  a payload's history, an event an object (conditional write)
//! ```
//! A small payload carries its meta in its own user metadata (`inline.rs`): one
//! PutObject stores both. The meta goes in a sidecar object when it cannot: S3 caps
//! user metadata at 2 KB (an identity header can be larger), a multipart upload learns
//! its size and sha256 only at the end, and a meta rewritten later (`set_meta`) is a
//! sidecar that wins over the object's own. Keys are request ids, which never start
//! with '.' nor hold a '/', so sidecars cannot clash with payloads.
//!
//! Order keeps "a payload is never visible without its meta": a sidecar is written
//! before the payload becomes visible (PutObject, or CompleteMultipartUpload), copied
//! before the payload is copied, and deleted after it. A payload the replaced services
//! stored has no sidecar; its meta comes from the object itself (`legacy.rs`).
//!
//! Least privilege: S3 answers 403 rather than 404 for a missing key when the policy
//! lacks `s3:ListBucket` on the bucket, so a 403 on a key reads as "absent" while S3
//! takes the gateway's credentials (`S3Storage::absent`; README: the IAM policy).

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::Client;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Bucket, ByteStream, Decision, ObjectMeta, Storage, UploadRecord, UploadWriter};
use crate::error::{Error, Result};
use crate::domain::Payload;

mod copy;
mod inline;
mod journal;
mod legacy;
mod parts;
mod sweep;
mod timing;
mod upload;
mod uploads;

pub use crate::config::S3Options;

use crate::config::s3_limits::MAX_PARTS;
/// Chunk size when reading a payload back.
const READ_CHUNK: usize = 64 * 1024;
/// How long readiness waits for S3.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub struct S3Storage {
    client: Client,
    options: S3Options,
    journal: Option<journal::Journal>,
}

impl S3Storage {
    /// Builds the client and, when configured to, creates missing buckets.
    pub async fn open(options: S3Options) -> Result<Self> {
        Self::open_counted(options, None).await
    }

    /// [`S3Storage::open`], with every S3 call timed into `metrics`.
    pub async fn open_counted(options: S3Options, metrics: Option<std::sync::Arc<crate::metrics::Metrics>>) -> Result<Self> {
        let client = client_with(&options, metrics.map(timing::Timing)).await;
        let journal = options.journal_dir.clone().map(journal::Journal::new);
        let storage = S3Storage { client, options, journal };
        if storage.options.create_buckets {
            for b in Bucket::ALL {
                storage.ensure_bucket(b).await?;
            }
        }
        Ok(storage)
    }

    /// Whether the store honours `If-None-Match: *` on PutObject (AWS S3, MinIO, R2
    /// do; Garage 2.5.0 does not): a probe object in quarantine written twice with it,
    /// then removed. Replicas deciding one payload's fate rely on it.
    pub async fn honours_conditional_writes(&self) -> Result<bool> {
        let bucket = self.name(Bucket::Quarantine).to_string();
        let key = format!(".probe/conditional-write-{}.json", uuid::Uuid::new_v4().simple());
        let write = || self.create_json(&bucket, &key, b"{}".to_vec(), "the conditional-write probe");
        let second = match write().await {
            Ok(_) => write().await,
            Err(e) => Err(e),
        };
        let _ = self.delete_key(&bucket, &key).await;
        Ok(!second?)
    }

    /// The client (tests and tools reach the same store with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn name(&self, bucket: Bucket) -> &str {
        match bucket {
            Bucket::Quarantine => &self.options.quarantine,
            Bucket::Perm => &self.options.perm,
            Bucket::Reject => &self.options.reject,
        }
    }

    /// Only with S3_CREATE_BUCKETS: HeadBucket (s3:ListBucket), then CreateBucket when
    /// missing.
    async fn ensure_bucket(&self, bucket: Bucket) -> Result<()> {
        let name = self.name(bucket);
        match self.client.head_bucket().bucket(name).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(unavailable(&format!("bucket {name}"), e)),
        }
        let mut create = self.client.create_bucket().bucket(name);
        if self.options.region != "us-east-1" {
            use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.options.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => {
                tracing::info!(bucket = name, "created bucket");
                Ok(())
            }
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(unavailable(&format!("creating bucket {name}"), e)),
        }
    }

    /// The sidecar of a payload, or `None` when absent.
    async fn read_meta(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>> {
        self.read_json(self.name(bucket), &sidecar(key), &format!("meta of {key}")).await
    }

    /// A small JSON object of the gateway's (a sidecar, a decision), or `None` when
    /// absent; `what` names it in errors.
    async fn read_json<T: serde::de::DeserializeOwned>(&self, bucket: &str, object: &str, what: &str) -> Result<Option<T>> {
        let out = match self.client.get_object().bucket(bucket).key(object).send().await {
            Ok(o) => o,
            Err(e) if self.absent(&e).await => return Ok(None),
            Err(e) => return Err(unavailable(&format!("{what} in {bucket}"), e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::StorageUnavailable(format!("{what} in {bucket}: {e}")))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("{what} in {bucket}: {e}")))
    }

    /// Writes the sidecar of a new payload: only if there is none (`If-None-Match: *`),
    /// so of two puts of one key only one gets this far (the key's claim).
    async fn create_meta(&self, bucket: &str, key: &str, meta: &ObjectMeta) -> Result<()> {
        self.write_meta(bucket, key, meta, true).await
    }

    /// Writes a sidecar; `create_only`: only where there is none (`Conflict` otherwise).
    async fn write_meta(&self, bucket: &str, key: &str, meta: &ObjectMeta, create_only: bool) -> Result<()> {
        let json = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(sidecar(key))
            .set_if_none_match(create_only.then(|| "*".to_string()))
            .content_type("application/json")
            .body(S3Body::from(json))
            .send()
            .await
            .map_err(|e| refused_or_unavailable(key, &format!("writing meta of {key} in {bucket}"), e))?;
        Ok(())
    }

    async fn head_object(&self, bucket: Bucket, key: &str) -> Result<Option<HeadObjectOutput>> {
        let name = self.name(bucket);
        match self.client.head_object().bucket(name).key(key).send().await {
            Ok(h) => Ok(Some(h)),
            Err(e) if self.absent(&e).await => Ok(None),
            Err(e) => Err(unavailable(&format!("{key} in {name}"), e)),
        }
    }

    /// Creates `key` with a JSON body unless it exists (`If-None-Match: *`): false when
    /// it does. A write that races another may be answered 409 while the other is in
    /// progress (before either is visible): asked again shortly.
    async fn create_json(&self, bucket: &str, key: &str, json: Vec<u8>, what: &str) -> Result<bool> {
        let mut pause = Duration::from_millis(20);
        for _ in 0..10 {
            let put = self
                .client
                .put_object()
                .bucket(bucket)
                .key(key)
                .if_none_match("*")
                .content_type("application/json")
                .body(S3Body::from(json.clone()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(true),
                Err(e) if status(&e) == Some(412) => return Ok(false),
                Err(e) if status(&e) == Some(409) => {}
                Err(e) => return Err(unavailable(&format!("writing {what}"), e)),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        Err(Error::StorageUnavailable(format!("{what}: S3 kept answering that another write is in progress")))
    }

    async fn delete_key(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(&format!("deleting {key} in {bucket}"), e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    async fn create_upload(&self, rec: &UploadRecord) -> Result<()> {
        S3Storage::create_upload(self, rec).await
    }

    async fn load_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        S3Storage::load_upload(self, id).await
    }

    async fn save_upload(&self, rec: &UploadRecord) -> Result<bool> {
        S3Storage::save_upload(self, rec).await
    }

    async fn upload_writer(&self, rec: &UploadRecord) -> Result<Box<dyn UploadWriter>> {
        S3Storage::upload_writer(self, rec).await
    }

    async fn finish_upload(&self, rec: &UploadRecord, meta: ObjectMeta) -> Result<ObjectMeta> {
        S3Storage::finish_upload(self, rec, meta).await
    }

    async fn remove_upload(&self, rec: &UploadRecord) -> Result<()> {
        S3Storage::remove_upload(self, rec).await
    }

    async fn list_uploads(&self) -> Result<Vec<String>> {
        S3Storage::list_uploads(self).await
    }

    async fn put(&self, bucket: Bucket, key: &str, meta: ObjectMeta, payload: Payload) -> Result<ObjectMeta> {
        upload::put(self, bucket, key, meta, payload).await
    }

    async fn decide(&self, key: &str, decision: &Decision) -> Result<Option<Decision>> {
        let json = serde_json::to_vec(decision).map_err(|e| Error::Internal(e.to_string()))?;
        let bucket = self.name(Bucket::Quarantine);
        let what = format!("the decision of {key}");
        // A record read back may be gone (its payload moved and the record forgotten
        // meanwhile): look again shortly.
        let mut pause = Duration::from_millis(20);
        for _ in 0..10 {
            if self.create_json(bucket, &decision_key(key), json.clone(), &what).await? {
                return Ok(None);
            }
            let recorded = self.read_json(bucket, &decision_key(key), &what).await?;
            if recorded.is_some() {
                return Ok(recorded);
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        Err(Error::StorageUnavailable(format!("{what}: it exists, yet could not be read")))
    }

    async fn update_decision(&self, key: &str, decision: &Decision) -> Result<()> {
        let json = serde_json::to_vec(decision).map_err(|e| Error::Internal(e.to_string()))?;
        let bucket = self.name(Bucket::Quarantine);
        self.client
            .put_object()
            .bucket(bucket)
            .key(decision_key(key))
            .content_type("application/json")
            .body(S3Body::from(json))
            .send()
            .await
            .map_err(|e| unavailable(&format!("the decision of {key}"), e))?;
        Ok(())
    }

    async fn add_event(&self, key: &str, name: &str, event: &[u8]) -> Result<bool> {
        let what = format!("the {name} event of {key}");
        self.create_json(self.name(Bucket::Quarantine), &event_key(key, name), event.to_vec(), &what).await
    }

    async fn event_names(&self, key: &str) -> Result<Vec<String>> {
        let prefix = events_prefix(key);
        let mut names: Vec<String> = self
            .keys_under(&prefix)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn events(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let bucket = self.name(Bucket::Quarantine);
        let names = self.event_names(key).await?;
        let reads = names.into_iter().map(|name| async move {
            let object = event_key(key, &name);
            let got = match self.client.get_object().bucket(bucket).key(&object).send().await {
                Ok(o) => o,
                Err(e) if self.absent(&e).await => return Ok(None),
                Err(e) => return Err(unavailable(&format!("{object} in {bucket}"), e)),
            };
            let body = got.body.collect().await.map_err(|e| Error::StorageUnavailable(format!("{object} in {bucket}: {e}")))?;
            Ok(Some((name, body.into_bytes().to_vec())))
        });
        let mut events: Vec<(String, Vec<u8>)> = futures_util::future::try_join_all(reads).await?.into_iter().flatten().collect();
        events.sort();
        Ok(events)
    }

    async fn forget_decision(&self, key: &str) -> Result<()> {
        self.delete_key(self.name(Bucket::Quarantine), &decision_key(key)).await
    }

    async fn set_meta(&self, bucket: Bucket, key: &str, meta: &ObjectMeta) -> Result<bool> {
        let Some(object) = self.head_object(bucket, key).await? else {
            return Ok(false);
        };
        // An overwrite (not create_meta's write-once): the payload and its meta exist.
        // Marked with the object's put id, it wins over the meta the object carries.
        let meta = ObjectMeta { put_id: inline::put_id(object.metadata()), ..meta.clone() };
        self.write_meta(self.name(bucket), key, &meta, false).await?;
        Ok(true)
    }

    async fn head(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>> {
        let (object, meta) = tokio::join!(self.head_object(bucket, key), self.read_meta(bucket, key));
        let meta = meta?;
        let Some(h) = object? else {
            return Ok(None);
        };
        if let Some(meta) = inline::choose(h.metadata(), meta) {
            return Ok(Some(meta));
        }
        // Read again: the two looks ran at once, and a sidecar is written before its
        // object, so only a second miss means the object has none.
        if let Some(meta) = inline::choose(h.metadata(), self.read_meta(bucket, key).await?) {
            return Ok(Some(meta));
        }
        let facts = legacy::Facts {
            size: h.content_length(),
            content_type: h.content_type(),
            last_modified: h.last_modified(),
            metadata: h.metadata(),
        };
        Ok(Some(legacy::meta(key, facts)))
    }

    async fn copy(&self, from: Bucket, to: Bucket, key: &str) -> Result<()> {
        copy::copy(self, from, to, key).await
    }

    async fn delete(&self, bucket: Bucket, key: &str) -> Result<()> {
        let name = self.name(bucket);
        self.delete_key(name, key).await?;
        self.delete_key(name, &sidecar(key)).await
    }

    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        let meta = self.read_meta(bucket, key).await?;
        let name = self.name(bucket);
        let out = match self.client.get_object().bucket(name).key(key).send().await {
            Ok(o) => o,
            Err(e) if self.absent(&e).await => return Ok(None),
            Err(e) => return Err(unavailable(&format!("{key} in {name}"), e)),
        };
        let meta = inline::choose(out.metadata(), meta).unwrap_or_else(|| {
            let facts = legacy::Facts {
                size: out.content_length(),
                content_type: out.content_type(),
                last_modified: out.last_modified(),
                metadata: out.metadata(),
            };
            legacy::meta(key, facts)
        });
        let reader = out.body.into_async_read();
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK)
            .map(|r| r.map_err(|e| Error::StorageUnavailable(format!("reading from S3: {e}"))));
        Ok(Some((meta, Box::pin(stream))))
    }

    async fn presign(&self, bucket: Bucket, key: &str, ttl: Duration) -> Result<Option<String>> {
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| Error::Internal(format!("URL expiry {ttl:?}: {e}")))?;
        let req = self
            .client
            .get_object()
            .bucket(self.name(bucket))
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| unavailable("presigning a URL", e))?;
        Ok(Some(req.uri().to_string()))
    }

    async fn list(&self, bucket: Bucket) -> Result<Vec<String>> {
        let name = self.name(bucket);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(name)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(&format!("listing {name}"), e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    if !k.starts_with('.') && !k.contains('/') {
                        keys.push(k.to_string());
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// HeadBucket on each bucket. Quarantine must answer 200 (the policy has
    /// s3:ListBucket there: the sweeps list it); perm and reject may answer 403 (a
    /// policy without s3:ListBucket on them): S3 answered, with the same credentials.
    async fn check(&self) -> Result<()> {
        let heads = Bucket::ALL.map(|b| {
            let name = self.name(b).to_string();
            let req = self.client.head_bucket().bucket(name.clone()).send();
            async move {
                match req.await {
                    Ok(_) => Ok(()),
                    Err(e) if b != Bucket::Quarantine && status(&e) == Some(403) => Ok(()),
                    Err(e) => Err(unavailable(&format!("bucket {name}"), e)),
                }
            }
        });
        let all = futures_util::future::try_join_all(heads);
        match tokio::time::timeout(CHECK_TIMEOUT, all).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(Error::StorageUnavailable(format!(
                "S3 did not answer within {} s",
                CHECK_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn recover(&self, shutdown: CancellationToken) -> Result<()> {
        let o = &self.options;
        let buckets = vec![o.quarantine.clone(), o.perm.clone(), o.reject.clone()];
        if let Some(journal) = &self.journal {
            self.abort_own_unfinished(journal).await;
        }
        let sweeper = sweep::Sweeper::new(self.client.clone(), buckets, o.stale_upload_after);
        sweeper.sweep().await?;
        tokio::spawn(sweeper.run_periodically(shutdown));
        Ok(())
    }
}

impl S3Storage {
    /// At start-up: aborts the multipart uploads an earlier life of this gateway left
    /// unfinished (it was killed), and removes the sidecar of any that never became an
    /// object. What cannot be aborted now stays noted, for the next start and the sweep.
    /// Only `put`'s uploads are noted: a resumable upload's multipart upload is meant to
    /// outlive the process (`uploads.rs`), and each entry names its own upload id.
    async fn abort_own_unfinished(&self, journal: &journal::Journal) {
        let mut aborted = 0;
        for (path, e) in journal.entries().await {
            if !upload::abort(&self.client, &e.bucket, &e.key, &e.upload_id).await {
                continue; // noted still: the next start or the stale-age sweep
            }
            aborted += 1;
            let object = self.client.head_object().bucket(&e.bucket).key(&e.key).send().await;
            let gone = match &object {
                Ok(_) => false,
                Err(err) => self.absent(err).await,
            };
            if gone {
                let _ = self.client.delete_object().bucket(&e.bucket).key(sidecar(&e.key)).send().await;
            }
            journal::Journal::done(&path).await;
        }
        if aborted > 0 {
            tracing::info!(aborted, "cleared the multipart uploads a killed gateway left unfinished");
        }
    }
}

/// The S3 client the gateway uses (region, credentials, timeouts, path-style for a
/// custom endpoint); `upload-load s3-put` builds its baseline on the same one.
pub async fn client(o: &S3Options) -> Client {
    client_with(o, None).await
}

async fn client_with(o: &S3Options, timing: Option<timing::Timing>) -> Client {
    use aws_config::timeout::TimeoutConfig;
    use aws_config::{BehaviorVersion, Region};
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(o.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // Until the response starts, the request's body included (one part).
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some((key, secret)) = &o.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            key.clone(),
            secret.clone(),
            None,
            None,
            "upload-gateway-config",
        ));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(url) = &o.endpoint_url {
        builder = builder.endpoint_url(url).force_path_style(true);
    }
    if let Some(t) = timing {
        builder = builder.interceptor(t);
    }
    Client::from_conf(builder.build())
}

/// Where a payload's decision is kept (in quarantine).
fn decision_key(key: &str) -> String {
    format!(".decided/{key}.json")
}

/// Where a payload's history is kept: an object per event, in quarantine (the
/// history outlives the payload's moves between buckets).
fn events_prefix(key: &str) -> String {
    format!(".status/{key}/")
}

fn event_key(key: &str, name: &str) -> String {
    format!(".status/{key}/{name}.json")
}

/// Where a payload's meta is kept.
fn sidecar(key: &str) -> String {
    format!(".meta/{key}.json")
}

/// A conditional write S3 refused (412 Precondition Failed, or 409 for a write that
/// raced another) means the key is taken: `Conflict`. Anything else: unavailable.
fn refused_or_unavailable<E, R>(key: &str, what: &str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: HasStatus + std::fmt::Debug,
{
    match status(&e) {
        Some(412) | Some(409) => Error::Conflict(format!(
            "request id {key} is already used by a stored payload, or by one being stored right now"
        )),
        _ => unavailable(what, e),
    }
}

/// The HTTP status S3 answered with, if it answered.
fn status<E, R>(e: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    e.raw_response().map(HasStatus::status_code)
}

trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Storage {
    /// Whether S3 said "no such key" to HeadObject, GetObject or CopyObject: 404, or
    /// 403 under a policy without s3:ListBucket on the bucket (S3 then hides whether
    /// the key exists; the gateway's policy allows s3:GetObject on every bucket, so
    /// such a 403 means the key is not there). A 403 is taken for "absent" only while
    /// S3 takes the gateway's credentials at all: its code does not say they were
    /// refused (AWS: InvalidAccessKeyId, SignatureDoesNotMatch...; HeadObject's answer
    /// has no body, so no code), and HeadBucket on quarantine, which the policy allows,
    /// answers (some stores, Garage among them, say AccessDenied for a bad key too).
    /// Otherwise it is an outage, and a verdict is retried, not dropped.
    async fn absent<E: ProvideErrorMetadata, R: HasStatus>(&self, e: &SdkError<E, R>) -> bool {
        const REFUSED: [&str; 6] = [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "RequestTimeTooSkewed",
        ];
        match status(e) {
            Some(404) => true,
            Some(403) if e.code().is_some_and(|c| REFUSED.contains(&c)) => false,
            Some(403) => self.client.head_bucket().bucket(&self.options.quarantine).send().await.is_ok(),
            _ => false,
        }
    }
}

/// Any S3 failure that is not "not found": the storage is unavailable, retry later.
fn unavailable<E, R>(what: &str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::StorageUnavailable(format!("S3, {what}: {}", DisplayErrorContext(&e)))
}
