//! The REST shim (contract §2): routes under the three prefixes, translated into
//! pipeline calls. No storage or queue in here.

use axum::routing::get;
use axum::Router;

use crate::app::AppState;

mod download;
mod form_guard;
mod info;
mod upload;

/// Every REST path is served under each of these.
pub const PREFIXES: [&str; 3] = ["/api/ingress", "/r/insights/platform/ingress", "/api"];

pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(info::healthz))
        .route("/readyz", get(info::readyz))
        .route("/metrics", get(info::metrics))
        .route("/download/{bucket}/{key}", get(download::signed));
    for p in PREFIXES {
        r = r
            .route(p, get(info::root))
            .route(&format!("{p}/v1/upload"), get(info::accepted).post(upload::upload))
            .route(&format!("{p}/v1/version"), get(info::version))
            .route(&format!("{p}/v1/openapi.json"), get(info::openapi))
            .route(&format!("{p}/v1/track/{{request_id}}"), get(info::track));
    }
    r.with_state(state)
}
