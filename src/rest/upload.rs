//! `POST {p}/v1/upload`: the multipart form, parsed as a stream. The file part flows
//! straight into the pipeline; it is never collected in memory.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;

use super::form_guard::{Guarded, Taken};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::pipeline::{Staged, UploadHeader};

/// Parts in one form, beyond which the request is refused.
const MAX_PARTS: usize = 64;
/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

pub async fn upload(State(app): State<AppState>, req: Request) -> Response {
    match take_upload(&app, req).await {
        Ok(receipt) => {
            let id = receipt.request_id.to_string();
            let body = json!({
                "request_id": id,
                "upload": {
                    "account_number": receipt.account_number.unwrap_or_default(),
                    "org_id": receipt.org_id.unwrap_or_default(),
                }
            });
            (
                StatusCode::ACCEPTED,
                [("x-rh-insights-request-id", id)],
                Json(body),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::bad_request(format!("the {name} header is not visible ASCII")))
        })
        .transpose()
}

async fn take_upload(app: &AppState, req: Request) -> Result<crate::pipeline::Receipt> {
    let headers = req.headers();
    let base = UploadHeader {
        identity: super::header_once(headers, "x-rh-identity")?.map(str::to_string),
        request_id: super::header_once(headers, "x-rh-insights-request-id")?.map(str::to_string),
        // RFC 9530: the payload's sha256 (the body is the form, not the payload).
        expected_sha256: super::digest::repr_digest_sha256(headers)?,
        ..Default::default()
    };
    // Refuse a bad id or identity before reading any of the body.
    app.pipeline.check_caller(&base)?;
    let content_type = header(headers, "content-type")?.unwrap_or_default();
    let boundary = match multer::parse_boundary(&content_type) {
        Ok(b) => b,
        Err(_) if !content_type.starts_with("multipart/") => return Err(Error::UploadFieldNotFound),
        Err(e) => return Err(Error::bad_request(format!("malformed multipart content type: {e}"))),
    };
    if boundary.len() > MAX_BOUNDARY {
        return Err(Error::bad_request(format!(
            "the multipart boundary is {} characters; at most {MAX_BOUNDARY} are allowed",
            boundary.len()
        )));
    }
    let taken = Taken::default();
    let idle = app.pipeline.settings().body_idle_timeout;
    let body = Guarded::new(req.into_body().into_data_stream(), taken.clone(), idle);
    let mut form = multer::Multipart::new(body, boundary);

    let mut staged: Option<(Staged, bool)> = None; // (payload, came from the legacy `upload` part)
    let mut metadata = None;
    let mut parts = 0;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(Error::bad_request(format!("the form has more than {MAX_PARTS} parts")));
        }
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" | "upload" => {
                // The payload is the first `upload` part, else the first `file` part
                // (contract §2: `upload` wins, whatever the order); the others are
                // read through and dropped.
                let legacy = name == "upload";
                if staged.as_ref().is_some_and(|(_, was_legacy)| *was_legacy || !legacy) {
                    drain(&mut field, &taken).await?;
                    continue;
                }
                if let Some((earlier, _)) = staged.take() {
                    earlier.discard().await;
                }
                let header = UploadHeader {
                    content_type: field
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    file_name: field.file_name().map(str::to_string),
                    ..base.clone()
                };
                let taken = taken.clone();
                let bytes = field.inspect_ok(move |b| taken.add(b.len())).map_err(malformed);
                staged = Some((app.pipeline.store(header, Box::pin(bytes)).await?, legacy));
            }
            "metadata" => {
                let raw = read_small(&mut field, app.pipeline.settings().metadata_limit, &taken).await?;
                metadata = Some(app.pipeline.parse_metadata(&raw)?);
            }
            // Ignored whatever its size: read through, never kept.
            _ => drain(&mut field, &taken).await?,
        }
    }
    let (mut staged, _) = staged.ok_or(Error::UploadFieldNotFound)?;
    if let Some(m) = metadata {
        staged.set_metadata(m);
    }
    staged.announce().await
}

fn malformed(e: multer::Error) -> Error {
    match e {
        // The guard's own refusals (stalled, unbounded headers) come back through multer.
        multer::Error::StreamReadFailed(e) => match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::ClientGone(e.to_string()),
        },
        e => Error::bad_request(format!("malformed multipart body: {e}")),
    }
}

/// Reads a small part whole, refusing it past `limit` bytes.
async fn read_small(field: &mut multer::Field<'static>, limit: usize, taken: &Taken) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(malformed)?;
        taken.add(chunk.len());
        if buf.len() + chunk.len() > limit {
            return Err(Error::bad_request(format!(
                "the {} part is larger than {limit} bytes",
                field.name().unwrap_or("unnamed")
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Reads through a part the gateway does not use (any size), dropping each chunk as
/// it arrives: the contract ignores other parts, and a `file` after an `upload`.
async fn drain(field: &mut multer::Field<'static>, taken: &Taken) -> Result<()> {
    while let Some(chunk) = field.next().await {
        taken.add(chunk.map_err(malformed)?.len());
    }
    Ok(())
}

