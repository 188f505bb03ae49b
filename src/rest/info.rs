//! The REST routes other than the upload: liveness, readiness, metrics, version,
//! what is accepted, the OpenAPI document, status tracking.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::AppState;
use crate::auth::PeerNames;
use crate::error::Error;

pub async fn root() -> &'static str {
    "lubdub"
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): State<AppState>) -> Response {
    if app.pipeline.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: shutting down").into_response();
    }
    match app.pipeline.check().await {
        Ok(()) => "ready".into_response(),
        Err(e) => Error::Overloaded(format!("not ready: {e}")).into_response(),
    }
}

/// OpenMetrics when the client asks for it (Prometheus does), else the classic text
/// format.
pub async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let open = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let m = app.pipeline.metrics();
    if open {
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], m.render()).into_response()
    } else {
        ([(header::CONTENT_TYPE, crate::metrics::TEXT_CONTENT_TYPE)], m.render_text()).into_response()
    }
}

pub async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("UPLOAD_GATEWAY_COMMIT"),
        "date": env!("UPLOAD_GATEWAY_DATE"),
    }))
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// `GET {p}/v1/upload`: what the gateway accepts.
pub async fn accepted(State(app): State<AppState>) -> Json<serde_json::Value> {
    let s = app.pipeline.settings();
    let services: serde_json::Map<String, serde_json::Value> = s
        .valid_services
        .iter()
        .map(|svc| (svc.clone(), json!({ "max_size": s.limit_for(svc) })))
        .collect();
    Json(json!({
        "content_type_pattern": r"^application/vnd\.redhat\.([a-z0-9-]+)\.([a-z0-9-]+).*",
        "legacy_content_types": {
            "types": ["application/x-gzip; charset=binary", "application/gzip", "application/gzip; charset=binary"],
            "service": "advisor",
            "category": "upload"
        },
        "file_fields": ["file", "upload"],
        "services": services,
        "default_max_size": s.default_limit,
        "identity_required": s.require_identity,
    }))
}

/// `GET {p}/v1/track/{id}`: 404 for an unknown id, a malformed one included (contract §2),
/// even one that is not UTF-8 once decoded.
pub async fn track(
    State(app): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: http::HeaderMap,
    peer: Option<axum::Extension<PeerNames>>,
) -> Result<Response, Error> {
    let Ok(Path(id)) = id else {
        return Err(Error::NotFound("no payload with this request id is known: it is not UTF-8".into()));
    };
    let caller = super::caller(&app.pipeline, &headers, peer.as_ref().map(|p| &p.0))?;
    let history = app.pipeline.history(&caller, &id).await?;
    let last = history.last().map(|e| e.status.clone());
    Ok(Json(json!({ "request_id": id, "status": last, "history": history })).into_response())
}
