//! `GET /download/<bucket>/<key>?expires=..&signature=..`: the URLs the gateway signs
//! for the embedded storage.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::Error;

#[derive(Deserialize)]
pub struct Signed {
    expires: Option<u64>,
    signature: Option<String>,
}

pub async fn signed(
    State(app): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<Signed>,
) -> Result<Response, Error> {
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        return Err(Error::Forbidden("the URL needs expires and signature".into()));
    };
    let (meta, bytes) = app.pipeline.open_signed(&bucket, &key, expires, &signature).await?;
    let body = Body::from_stream(bytes.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (http::header::CONTENT_LENGTH, meta.size.to_string()),
            (http::HeaderName::from_static("x-sha256"), meta.sha256),
        ],
        body,
    )
        .into_response())
}
