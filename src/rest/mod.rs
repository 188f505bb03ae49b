//! The REST shim (contract §2): routes under the three prefixes, translated into
//! pipeline calls. No storage or queue in here.

use axum::extract::{Path, Request, State};
use axum::routing::{any, get};
use axum::Router;

use crate::app::AppState;
use crate::auth::{Caller, PeerNames};
use crate::error::Error;
use crate::pipeline::Pipeline;

mod digest;
mod download;
mod form_guard;
mod info;
mod tus;
mod upload;

/// Who is calling: the `x-rh-identity` and `authorization` headers, and the client
/// certificate's names when the connection has one.
pub(crate) fn caller(pipeline: &Pipeline, headers: &http::HeaderMap, peer: Option<&PeerNames>) -> Result<Caller, Error> {
    let names = peer.map(|p| p.0.as_slice()).unwrap_or_default();
    pipeline.caller(header_once(headers, "x-rh-identity")?, header_once(headers, "authorization")?, names)
}

/// A header that says who is calling (identity, request id, credential), as text. Sent
/// twice with different values it is refused (403), never one of them preferred: a
/// proxy that adds `x-rh-identity` instead of replacing it must not let the client's
/// own value win.
pub(crate) fn header_once<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, Error> {
    let mut values = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().map_err(|_| Error::bad_request(format!("the {name} header is not visible ASCII"))));
    let Some(first) = values.next().transpose()? else { return Ok(None) };
    for other in values {
        if other? != first {
            return Err(Error::Forbidden(format!("the {name} header is sent twice with different values: send it once")));
        }
    }
    Ok(Some(first))
}

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
        // tus (README, "Resumable uploads"): the creation URL with and without its slash.
        for collection in [format!("{p}/v1/uploads/"), format!("{p}/v1/uploads")] {
            r = r.route(&collection, any(move |s: State<AppState>, req: Request| tus::collection(s, p, req)));
        }
        r = r.route(
            &format!("{p}/v1/uploads/{{id}}"),
            any(move |s: State<AppState>, id: Result<Path<String>, axum::extract::rejection::PathRejection>, req: Request| tus::resource(s, p, id, req)),
        );
    }
    r.with_state(state)
}
