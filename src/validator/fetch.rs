//! Getting a payload's bytes: from the URL in its announcement, or over gRPC
//! `Download`, as a stream of chunks.

use std::pin::Pin;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use super::connect::Client;
use crate::grpc::pb;

/// A payload's bytes as they arrive.
pub type Chunks = Pin<Box<dyn Stream<Item = anyhow::Result<Bytes>> + Send>>;

/// Where the validator fetches payloads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The announced URL; gRPC `Download` when the URL cannot be fetched (e.g. it
    /// names an address this host cannot reach).
    Auto,
    /// The announced URL only.
    Url,
    /// gRPC `Download` only.
    Grpc,
}

pub struct Fetcher {
    pub source: Source,
    pub http: reqwest::Client,
    /// For gRPC `Download`; `None` when no gateway was given.
    pub grpc: Option<Client>,
}

impl Fetcher {
    /// Opens a payload's bytes; also says where they came from.
    pub async fn open(&self, a: &pb::Announcement) -> anyhow::Result<(Chunks, &'static str)> {
        match self.source {
            Source::Url => Ok((self.url(&a.url).await?, "url")),
            Source::Grpc => Ok((self.download(&a.request_id).await?, "grpc")),
            Source::Auto => match self.url(&a.url).await {
                Ok(c) => Ok((c, "url")),
                Err(e) => {
                    tracing::warn!(request_id = %a.request_id, error = %format!("{e:#}"), "the announced URL failed; using gRPC Download");
                    Ok((self.download(&a.request_id).await?, "grpc"))
                }
            },
        }
    }

    async fn url(&self, url: &str) -> anyhow::Result<Chunks> {
        anyhow::ensure!(!url.is_empty(), "the announcement has no URL");
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {}", redact(url)))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!(
                "GET {} answered {status}: {}",
                redact(url),
                body.chars().take(200).collect::<String>()
            );
        }
        Ok(Box::pin(resp.bytes_stream().map_err(|e| {
            anyhow::Error::new(e).context("reading the payload")
        })))
    }

    async fn download(&self, request_id: &str) -> anyhow::Result<Chunks> {
        let mut grpc = self
            .grpc
            .clone()
            .ok_or_else(|| anyhow::anyhow!("gRPC Download needs --gateway"))?;
        let stream = grpc
            .download(pb::DownloadRequest {
                request_id: request_id.to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("gRPC Download: {}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(Box::pin(stream.map(|c| match c {
            Ok(c) => Ok(c.data),
            Err(s) => Err(anyhow::anyhow!(
                "gRPC Download: {}: {}",
                s.code(),
                s.message()
            )),
        })))
    }
}

/// A URL without its query (signatures stay out of logs).
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
