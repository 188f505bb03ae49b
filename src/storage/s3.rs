//! Storage on S3 or an S3-compatible store (aws-sdk-s3).
//!
//! ```text
//! <bucket>/<key>               the payload; visible only once whole
//! <bucket>/.meta/<key>.json    its ObjectMeta (the record the verdict path reads)
//! ```
//! The meta lives in a small sidecar object rather than in user metadata: S3 caps user
//! metadata at 2 KB (an identity header can be larger), and a multipart upload learns
//! its size and sha256 only at the end. Keys are request ids, which never start with
//! '.' nor hold a '/', so sidecars cannot clash with payloads.
//!
//! Order keeps "a payload is never visible without its meta": the sidecar is written
//! before the payload becomes visible (PutObject, or CompleteMultipartUpload), copied
//! before the payload is copied, and deleted after it.

use std::time::Duration;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::Client;
use futures_util::StreamExt;

use super::{Bucket, ByteStream, ObjectMeta, Storage};
use crate::config::{parse_size, Config};
use crate::error::{Error, Result};
use crate::pipeline::Payload;

mod copy;
mod sweep;
mod upload;

/// S3's own limits.
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;
/// Chunk size when reading a payload back.
const READ_CHUNK: usize = 64 * 1024;
/// How long readiness waits for S3.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The S3 settings, checked.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub quarantine: String,
    pub perm: String,
    pub reject: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub credentials: Option<(String, String)>,
    pub part_size: usize,
    pub max_inflight_parts: usize,
    pub create_buckets: bool,
    pub stale_upload_after: Duration,
    pub multipart_copy_threshold: u64,
    /// Sign request payloads (SigV4): over plain HTTP only, see `upload.rs`.
    pub sign_payloads: bool,
}

impl S3Options {
    /// Checks the S3 part of the config. `largest_limit` is the largest payload the
    /// gateway accepts: it must fit in 10,000 parts.
    pub fn from_config(c: &Config, largest_limit: u64) -> Result<Self, String> {
        let buckets = [
            ("S3_QUARANTINE", &c.s3_quarantine),
            ("S3_PERM", &c.s3_perm),
            ("S3_REJECT", &c.s3_reject),
        ];
        for (name, b) in buckets {
            if !is_bucket_name(b) {
                return Err(format!(
                    "{name}: {b:?} is not a bucket name (3-63 of lower-case letters, digits, '.' and '-')"
                ));
            }
        }
        if c.s3_quarantine == c.s3_perm || c.s3_quarantine == c.s3_reject || c.s3_perm == c.s3_reject {
            return Err("S3_QUARANTINE, S3_PERM and S3_REJECT must be three different buckets".into());
        }
        let part_size = parse_size(&c.s3_part_size).map_err(|e| format!("S3_PART_SIZE: {e}"))?;
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err("S3_PART_SIZE: between 5MiB and 5GiB (S3's part limits)".into());
        }
        if largest_limit.div_ceil(part_size) > MAX_PARTS {
            return Err(format!(
                "S3_PART_SIZE: {part_size} bytes is too small for payloads of {largest_limit} bytes \
                 (S3 allows 10000 parts); use at least {} bytes",
                largest_limit.div_ceil(MAX_PARTS)
            ));
        }
        if c.s3_max_inflight_parts == 0 {
            return Err("S3_MAX_INFLIGHT_PARTS: must be at least 1".into());
        }
        if c.s3_stale_upload_secs == 0 {
            return Err("S3_STALE_UPLOAD_SECS: must be at least 1".into());
        }
        let multipart_copy_threshold = parse_size(&c.s3_multipart_copy_threshold)
            .map_err(|e| format!("S3_MULTIPART_COPY_THRESHOLD: {e}"))?;
        if !(MIN_PART..=MAX_PART).contains(&multipart_copy_threshold) {
            return Err("S3_MULTIPART_COPY_THRESHOLD: between 5MiB and 5GiB".into());
        }
        if let Some(url) = &c.s3_endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("S3_ENDPOINT_URL: {url:?} should start with http:// or https://"));
            }
        }
        let credentials = match (&c.s3_access_key_id, &c.s3_secret_access_key) {
            (Some(k), Some(s)) => Some((k.clone(), s.clone())),
            (None, None) => None,
            _ => return Err("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither".into()),
        };
        Ok(S3Options {
            quarantine: c.s3_quarantine.clone(),
            perm: c.s3_perm.clone(),
            reject: c.s3_reject.clone(),
            endpoint_url: c.s3_endpoint_url.clone(),
            region: c.s3_region.clone(),
            credentials,
            part_size: part_size as usize,
            max_inflight_parts: c.s3_max_inflight_parts,
            create_buckets: c.s3_create_buckets,
            stale_upload_after: Duration::from_secs(c.s3_stale_upload_secs),
            multipart_copy_threshold,
            sign_payloads: c.s3_endpoint_url.as_deref().is_some_and(|u| u.starts_with("http://")),
        })
    }
}

fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

pub struct S3Storage {
    client: Client,
    options: S3Options,
}

impl S3Storage {
    /// Builds the client and, when configured to, creates missing buckets.
    pub async fn open(options: S3Options) -> Result<Self> {
        let client = client(&options).await;
        let storage = S3Storage { client, options };
        if storage.options.create_buckets {
            for b in Bucket::ALL {
                storage.ensure_bucket(b).await?;
            }
        }
        Ok(storage)
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
        let name = self.name(bucket);
        let out = match self.client.get_object().bucket(name).key(sidecar(key)).send().await {
            Ok(o) => o,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(unavailable(&format!("meta of {key} in {name}"), e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::StorageUnavailable(format!("meta of {key} in {name}: {e}")))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("meta of {key} in {name}: {e}")))
    }

    async fn write_meta(&self, bucket: &str, meta: &ObjectMeta) -> Result<()> {
        let json = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(sidecar(&meta.request_id))
            .content_type("application/json")
            .body(S3Body::from(json))
            .send()
            .await
            .map_err(|e| unavailable(&format!("writing meta of {} in {bucket}", meta.request_id), e))?;
        Ok(())
    }

    async fn exists(&self, bucket: Bucket, key: &str) -> Result<bool> {
        let name = self.name(bucket);
        match self.client.head_object().bucket(name).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(unavailable(&format!("{key} in {name}"), e)),
        }
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
    async fn put(&self, bucket: Bucket, key: &str, meta: ObjectMeta, payload: Payload) -> Result<ObjectMeta> {
        upload::put(self, bucket, key, meta, payload).await
    }

    async fn head(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>> {
        let (exists, meta) = tokio::join!(self.exists(bucket, key), self.read_meta(bucket, key));
        if !exists? {
            return Ok(None);
        }
        let meta = meta?;
        if meta.is_none() {
            tracing::warn!(key, bucket = self.name(bucket), "object without its meta; ignoring it");
        }
        Ok(meta)
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
        let Some(meta) = self.read_meta(bucket, key).await? else {
            return Ok(None);
        };
        let name = self.name(bucket);
        let out = match self.client.get_object().bucket(name).key(key).send().await {
            Ok(o) => o,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(unavailable(&format!("{key} in {name}"), e)),
        };
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

    async fn check(&self) -> Result<()> {
        let heads = Bucket::ALL.map(|b| {
            let name = self.name(b).to_string();
            let req = self.client.head_bucket().bucket(name.clone()).send();
            async move { req.await.map_err(|e| unavailable(&format!("bucket {name}"), e)) }
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

    async fn recover(&self) -> Result<()> {
        let o = &self.options;
        let buckets = vec![o.quarantine.clone(), o.perm.clone(), o.reject.clone()];
        let sweeper = sweep::Sweeper::new(self.client.clone(), buckets, o.stale_upload_after);
        sweeper.sweep().await?;
        tokio::spawn(sweeper.run_periodically());
        Ok(())
    }
}

async fn client(o: &S3Options) -> Client {
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
    Client::from_conf(builder.build())
}

/// Where a payload's meta is kept.
fn sidecar(key: &str) -> String {
    format!(".meta/{key}.json")
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

/// Any S3 failure that is not "not found": the storage is unavailable, retry later.
fn unavailable<E, R>(what: &str, e: SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::StorageUnavailable(format!("S3, {what}: {}", DisplayErrorContext(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str], largest: u64) -> Result<S3Options, String> {
        let mut v = vec!["gw", "--storage-driver", "s3"];
        v.extend_from_slice(args);
        S3Options::from_config(&Config::from_args(v).unwrap(), largest)
    }

    #[test]
    fn defaults_are_the_original_buckets_and_8_mib_parts() {
        let o = options(&[], 100 << 20).unwrap();
        assert_eq!(o.quarantine, "insights-upload-quarantine");
        assert_eq!((o.part_size, o.max_inflight_parts), (8 << 20, 4));
        assert!(o.create_buckets && o.credentials.is_none() && !o.sign_payloads);
        assert_eq!(o.region, "us-east-1");
        let o = options(&["--s3-create-buckets", "false", "--s3-endpoint-url", "http://127.0.0.1:3900"], 1).unwrap();
        assert!(!o.create_buckets && o.sign_payloads);
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let err = |args: &[&str], largest| options(args, largest).unwrap_err();
        assert!(err(&["--s3-part-size", "1MiB"], 1).contains("S3_PART_SIZE"));
        assert!(err(&["--s3-perm", "insights-upload-quarantine"], 1).contains("three different buckets"));
        assert!(err(&["--s3-reject", "Bad_Bucket"], 1).contains("S3_REJECT"));
        assert!(err(&["--s3-max-inflight-parts", "0"], 1).contains("S3_MAX_INFLIGHT_PARTS"));
        assert!(err(&["--s3-access-key-id", "k"], 1).contains("both or neither"));
        assert!(err(&["--s3-endpoint-url", "127.0.0.1:3900"], 1).contains("S3_ENDPOINT_URL"));
        // 100 GiB in 8 MiB parts is 12800 parts: more than S3 allows.
        let e = err(&[], 100 << 30);
        assert!(e.contains("10000 parts") && e.contains("10737419"), "{e}");
        assert!(options(&["--s3-part-size", "16MiB"], 100 << 30).is_ok());
    }
}
