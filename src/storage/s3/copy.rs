//! Moving a payload between buckets without its bytes passing through the gateway:
//! CopyObject, or UploadPartCopy for objects larger than S3 copies at once (5 GiB).
//! The sidecar is copied first, so the payload is never visible without its meta; a
//! payload the replaced services stored has none, and is copied alone.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::copy_object::{CopyObjectError, CopyObjectOutput};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};

use super::{sidecar, unavailable, upload::abort, S3Storage, MAX_PARTS};
use crate::error::{Error, Result};
use crate::storage::Bucket;

pub(super) async fn copy(s: &S3Storage, from: Bucket, to: Bucket, key: &str) -> Result<()> {
    let (src, dst) = (s.name(from), s.name(to));
    let head = match s.client.head_object().bucket(src).key(key).send().await {
        Ok(h) => h,
        Err(e) if s.absent(&e).await => {
            return Err(Error::NotFound(format!("{key} is not in {src}")));
        }
        Err(e) => return Err(unavailable(&format!("{key} in {src}"), e)),
    };
    let size = head.content_length().unwrap_or(0).max(0) as u64;
    match copy_object(s, src, dst, &sidecar(key)).await {
        Ok(_) => {}
        Err(e) if s.absent(&e).await => {}
        Err(e) => return Err(unavailable(&format!("copying the meta of {key} from {src} to {dst}"), e)),
    }
    if size <= s.options.multipart_copy_threshold {
        copy_whole(s, src, dst, key).await
    } else {
        copy_in_parts(s, src, dst, key, size, &head).await
    }
}

async fn copy_whole(s: &S3Storage, src: &str, dst: &str, key: &str) -> Result<()> {
    copy_object(s, src, dst, key)
        .await
        .map_err(|e| unavailable(&format!("copying {key} from {src} to {dst}"), e))?;
    Ok(())
}

async fn copy_object(
    s: &S3Storage,
    src: &str,
    dst: &str,
    key: &str,
) -> std::result::Result<CopyObjectOutput, SdkError<CopyObjectError, HttpResponse>> {
    s.client
        .copy_object()
        .bucket(dst)
        .key(key)
        .copy_source(source(src, key))
        .metadata_directive(MetadataDirective::Copy)
        .send()
        .await
}

async fn copy_in_parts(
    s: &S3Storage,
    src: &str,
    dst: &str,
    key: &str,
    size: u64,
    head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
) -> Result<()> {
    let created = s
        .client
        .create_multipart_upload()
        .bucket(dst)
        .key(key)
        .set_content_type(head.content_type().map(str::to_string))
        .set_metadata(head.metadata().cloned())
        .send()
        .await
        .map_err(|e| unavailable(&format!("starting the copy of {key} to {dst}"), e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Error::StorageUnavailable("S3 started an upload without an id".into()))?
        .to_string();
    match copy_parts(s, src, dst, key, size, &upload_id).await {
        Ok(()) => Ok(()),
        Err(e) => {
            abort(&s.client, dst, key, &upload_id).await;
            Err(e)
        }
    }
}

async fn copy_parts(s: &S3Storage, src: &str, dst: &str, key: &str, size: u64, upload_id: &str) -> Result<()> {
    let part = s.options.multipart_copy_threshold.max(size.div_ceil(MAX_PARTS));
    let mut parts = Vec::new();
    let mut start = 0u64;
    let mut number = 0;
    while start < size {
        number += 1;
        let end = (start + part).min(size) - 1;
        let out = s
            .client
            .upload_part_copy()
            .bucket(dst)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(source(src, key))
            .copy_source_range(format!("bytes={start}-{end}"))
            .send()
            .await
            .map_err(|e| unavailable(&format!("copying part {number} of {key} to {dst}"), e))?;
        let etag = out.copy_part_result().and_then(|r| r.e_tag()).map(str::to_string);
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
        start = end + 1;
    }
    s.client
        .complete_multipart_upload()
        .bucket(dst)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| unavailable(&format!("completing the copy of {key} to {dst}"), e))?;
    Ok(())
}

/// `bucket/key` as CopySource wants it (keys are request ids: nothing to escape).
fn source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}
