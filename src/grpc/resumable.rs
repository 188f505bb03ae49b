//! The resumable upload RPCs (`CreateUpload`, `QueryWriteStatus`, `Write`,
//! `CancelUpload`): the same resource as the tus endpoint, translated into the
//! pipeline's resumable calls (pipeline/resumable.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{metadata_str, pb, receipt, stream_error, upload_header, GatewayService};
use crate::error::Error;
use crate::pipeline::{Append, UploadInfo};

/// The tus path of an upload, under the first REST prefix.
fn tus_path(id: &str) -> String {
    format!("/api/ingress/v1/uploads/{id}")
}

fn state(u: UploadInfo) -> pb::UploadState {
    let expires = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(u.expires_at_ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    pb::UploadState {
        tus_path: tus_path(&u.id),
        upload_id: u.id,
        committed_size: u.offset,
        length: u.length.unwrap_or(0),
        length_known: u.length.is_some(),
        complete: u.finished,
        expires_at: if u.finished { String::new() } else { expires },
    }
}

impl GatewayService {
    pub(super) async fn create_resumable(
        &self,
        request: Request<pb::CreateUploadRequest>,
    ) -> Result<Response<pb::UploadState>, Status> {
        let identity = metadata_str(request.metadata(), "x-rh-identity")?;
        let request_id = metadata_str(request.metadata(), "x-rh-insights-request-id")?;
        let h = request
            .into_inner()
            .header
            .ok_or_else(|| Status::invalid_argument("CreateUpload needs a header: the payload's content type at least"))?;
        let header = upload_header(h, identity, request_id)?;
        Ok(Response::new(state(self.pipeline.create_upload(header).await?)))
    }

    pub(super) async fn query_resumable(
        &self,
        request: Request<pb::QueryWriteStatusRequest>,
    ) -> Result<Response<pb::UploadState>, Status> {
        let identity = metadata_str(request.metadata(), "x-rh-identity")?;
        let id = request.into_inner().upload_id;
        Ok(Response::new(state(self.pipeline.upload_info(&id, identity.as_deref()).await?)))
    }

    pub(super) async fn cancel_resumable(
        &self,
        request: Request<pb::CancelUploadRequest>,
    ) -> Result<Response<pb::UploadState>, Status> {
        let identity = metadata_str(request.metadata(), "x-rh-identity")?;
        let id = request.into_inner().upload_id;
        Ok(Response::new(state(self.pipeline.cancel_upload(&id, identity.as_deref()).await?)))
    }

    pub(super) async fn write_resumable(
        &self,
        request: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let identity = metadata_str(request.metadata(), "x-rh-identity")?;
        let mut stream = request.into_inner();
        let idle = self.pipeline.settings().body_idle_timeout;
        let first = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| Error::Timeout(format!("the write stream stalled for {} s before its first message", idle.as_secs())))?
            .ok_or_else(|| Status::invalid_argument("the write stream ended before its first message"))?
            .map_err(stream_error)?;
        let id = first.upload_id.clone();
        if id.is_empty() {
            return Err(Status::invalid_argument("the first WriteRequest must name the upload (upload_id)"));
        }
        let ends = Arc::new(AtomicBool::new(false));
        let offset = first.write_offset;
        // The bytes of every message, the first one's included, until `finish_write`.
        let seen_end = ends.clone();
        let name = id.clone();
        let body = futures_util::stream::once(async { Ok(first) })
            .chain(stream)
            .map(move |m| {
                let m = m.map_err(stream_error)?;
                if seen_end.load(Ordering::Acquire) {
                    return Err(Error::bad_request("a WriteRequest came after the one with finish_write"));
                }
                if !m.upload_id.is_empty() && m.upload_id != name {
                    return Err(Error::bad_request("every WriteRequest of a stream must name the same upload"));
                }
                if m.finish_write {
                    seen_end.store(true, Ordering::Release);
                }
                Ok(m.data)
            });
        let append = Append { offset, body: Box::pin(body), length: None, ends: Some(ends), checksum: None };
        let done = self.pipeline.append_upload(&id, identity.as_deref(), append).await?;
        let mut resp = Response::new(pb::WriteResponse {
            committed_size: done.upload.offset,
            receipt: done.receipt.map(receipt),
        });
        if done.upload.finished {
            if let Ok(v) = id.parse() {
                resp.metadata_mut().insert("x-rh-insights-request-id", v);
            }
        }
        Ok(resp)
    }
}
