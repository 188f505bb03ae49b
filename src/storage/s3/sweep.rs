//! What a crash leaves behind on S3, removed: multipart uploads nobody will finish,
//! and sidecars of payloads that never became visible. An upload still running on
//! another replica looks the same, so only what has been idle for the stale age goes:
//! a multipart upload is abandoned when nobody has added a part to it (nor begun it)
//! for that long, whatever its start time, so a slow client's long upload lives on.
//! A resumable upload's multipart upload (its payload key has a record under
//! `.uploads/<key>/`) is never aborted here, however idle: its client may come back
//! until the upload expires, and the pipeline's expiry sweep removes it then.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;

use super::{sidecar, status, unavailable, upload::abort, uploads};
use crate::error::Result;
use crate::domain::request_id;

pub(super) struct Sweeper {
    client: Client,
    /// Every bucket (unfinished uploads and copies); the first is quarantine.
    buckets: Vec<String>,
    stale_after: Duration,
}

impl Sweeper {
    pub fn new(client: Client, buckets: Vec<String>, stale_after: Duration) -> Self {
        Sweeper {
            client,
            buckets,
            stale_after,
        }
    }

    /// Sweeps again every half stale age, until shutdown.
    pub async fn run_periodically(self, shutdown: tokio_util::sync::CancellationToken) {
        let every = (self.stale_after / 2).max(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "sweeping unfinished S3 uploads failed; will try again");
            }
        }
    }

    pub async fn sweep(&self) -> Result<()> {
        let cutoff = SystemTime::now() - self.stale_after;
        let mut aborted = 0;
        for bucket in &self.buckets {
            aborted += self.abort_stale_uploads(bucket, cutoff).await?;
        }
        let removed = self.remove_orphan_sidecars(&self.buckets[0], cutoff).await?;
        if aborted + removed > 0 {
            tracing::info!(aborted, removed, "removed what unfinished S3 uploads left");
        }
        Ok(())
    }

    async fn abort_stale_uploads(&self, bucket: &str, cutoff: SystemTime) -> Result<usize> {
        let mut n = 0;
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| unavailable(&format!("listing unfinished uploads in {bucket}"), e))?;
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
                // Only the gateway's own: keys that are request ids.
                if !request_id::is_valid(key) {
                    continue;
                }
                let started = u.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                if !started.is_some_and(|t| t < cutoff) {
                    continue;
                }
                if self.idle_since(bucket, key, id).await?.is_some_and(|t| t < cutoff) {
                    // A resumable upload's bytes wait for its client as long as it has
                    // a record: the pipeline's expiry sweep removes it, not this one.
                    if *bucket == self.buckets[0] && self.has_upload_record(bucket, key).await? {
                        continue;
                    }
                    abort(&self.client, bucket, key, id).await;
                    n += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(n);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(n);
            }
        }
    }

    /// Whether payload key `key` is a resumable upload's, with a record (`uploads.rs`).
    async fn has_upload_record(&self, bucket: &str, key: &str) -> Result<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(uploads::records_of(key))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| unavailable(&format!("looking for the upload record of {key} in {bucket}"), e))?;
        Ok(!page.contents().is_empty())
    }

    /// When the newest part of an upload was added (its start when it has none yet);
    /// None when the upload is gone (completed or aborted meanwhile).
    async fn idle_since(&self, bucket: &str, key: &str, id: &str) -> Result<Option<SystemTime>> {
        let mut newest = None;
        let mut marker = None;
        loop {
            let page = match self
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .set_part_number_marker(marker.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if status(&e) == Some(404) => return Ok(None),
                Err(e) => return Err(unavailable(&format!("listing the parts of {key} in {bucket}"), e)),
            };
            for p in page.parts() {
                let added = p.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                newest = newest.max(added);
            }
            marker = page.next_part_number_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || marker.is_none() {
                break;
            }
        }
        // No part yet: idle since it began (the caller has checked that is old).
        Ok(Some(newest.unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    /// Sidecars whose payload never became visible. One listing holds both: sidecars
    /// (`.meta/...`) sort before payloads, so a payload completed while the listing
    /// runs is still seen. The same listing finds what a resumable upload's writer left
    /// under `.uploads/<id>/` after its upload was removed (no record there any more):
    /// removed once older than the stale age.
    async fn remove_orphan_sidecars(&self, bucket: &str, cutoff: SystemTime) -> Result<usize> {
        let mut old_sidecars = Vec::new();
        let mut payloads = std::collections::HashSet::new();
        let mut with_record = std::collections::HashSet::new();
        let mut old_upload_objects: Vec<(String, String)> = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(bucket).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(&format!("listing {bucket}"), e))?;
            for o in page.contents() {
                let Some(k) = o.key() else { continue };
                if let Some((id, name)) = k.strip_prefix(uploads::UPLOADS).and_then(|r| r.split_once('/')) {
                    if name.starts_with("record.") {
                        with_record.insert(id.to_string());
                    } else {
                        let written = o.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                        if written.is_some_and(|t| t < cutoff) {
                            old_upload_objects.push((id.to_string(), k.to_string()));
                        }
                    }
                    continue;
                }
                match k.strip_prefix(".meta/").and_then(|k| k.strip_suffix(".json")) {
                    Some(key) => {
                        let written = o.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                        if written.is_some_and(|t| t < cutoff) {
                            old_sidecars.push(key.to_string());
                        }
                    }
                    None => {
                        payloads.insert(k.to_string());
                    }
                }
            }
        }
        let mut n = 0;
        for key in old_sidecars.iter().filter(|k| !payloads.contains(*k)) {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(sidecar(key))
                .send()
                .await
                .map_err(|e| unavailable(&format!("deleting the meta of {key} in {bucket}"), e))?;
            n += 1;
        }
        for (_, key) in old_upload_objects.iter().filter(|(id, _)| !with_record.contains(id)) {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| unavailable(&format!("deleting {key} in {bucket}"), e))?;
            n += 1;
        }
        Ok(n)
    }
}
