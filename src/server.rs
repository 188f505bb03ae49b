//! The listener: one port, HTTP/1.1 and h2c (gRPC, gRPC-Web and REST) routed by path,
//! with the request-id span, a concurrency limit and graceful shutdown.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::auth::PeerNames;
use crate::config::Settings;
use crate::error::Error;

/// Builds the one router: REST routes and the gRPC services side by side.
pub fn router(state: AppState, settings: &Settings) -> (axum::Router, tonic_health::server::HealthReporter) {
    let (health, grpc) = crate::grpc::routes(state.pipeline.clone());
    let limit = Arc::new(Semaphore::new(settings.concurrency_limit));
    let metrics = state.pipeline.metrics().clone();
    let router = crate::rest::router(state)
        .merge(grpc)
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let limit = limit.clone();
            let metrics = metrics.clone();
            async move {
                let started = std::time::Instant::now();
                let (protocol, method) = request_labels(&req);
                let mut resp = match limit.try_acquire() {
                    Ok(_permit) => next.run(req).await,
                    Err(_) => Error::Overloaded("over the concurrency limit; retry shortly".into()).into_response(),
                };
                metrics.http_response(resp.status().as_u16());
                let status = response_status(protocol, &resp);
                metrics.request(protocol, &method, &status, started.elapsed());
                // The trace id, for the user to quote (traces on).
                if let Some(t) = crate::telemetry::traceparent(&tracing::Span::current()) {
                    if let Ok(v) = http::HeaderValue::from_str(&t) {
                        resp.headers_mut().insert("traceparent", v);
                    }
                }
                resp
            }
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(),
                request_id = tracing::field::Empty, trace_id = tracing::field::Empty);
            if let Some(id) = req.headers().get("x-rh-insights-request-id").and_then(|v| v.to_str().ok()) {
                span.record("request_id", id);
            }
            // The client's trace (W3C traceparent header, or gRPC metadata) is the parent.
            crate::telemetry::adopt_headers(&span, req.headers());
            if let Some(id) = crate::telemetry::trace_id(&span) {
                span.record("trace_id", id.as_str());
            }
            span
        }));
    (router, health)
}

/// The protocol of a request (`grpc` for gRPC and gRPC-Web, else `rest`) and the
/// method it is counted under: the gRPC method's path, or the REST route that matched
/// (its template, so ids do not make new series).
fn request_labels(req: &Request) -> (&'static str, String) {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"));
    if grpc {
        return ("grpc", req.uri().path().to_string());
    }
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
    ("rest", route.to_string())
}

/// A response's status as counted: the HTTP status, or for gRPC the code's name. A
/// gRPC failure that comes before any message is answered in the headers
/// (`grpc-status`); a call answered with messages is counted `OK` when it starts.
fn response_status(protocol: &str, resp: &axum::response::Response) -> String {
    if protocol != "grpc" {
        return resp.status().as_u16().to_string();
    }
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from(code) {
        tonic::Code::Ok => "OK".to_string(),
        other => format!("{other:?}"),
    }
}

/// Serves until `shutdown` is cancelled, then drains: stops accepting, lets requests
/// in flight finish (up to the drain timeout), and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    settings: Settings,
    shutdown: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let pipeline = state.pipeline.clone();
    let (router, health) = router(state, &settings);
    tokio::spawn(watch_readiness(pipeline, health.clone(), shutdown.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(1024)
        // HTTP/2 has no header timeout: a peer that does not answer a PING within
        // the header timeout (one that sent the preface and went silent) is closed.
        .keep_alive_interval(settings.header_timeout)
        .keep_alive_timeout(settings.header_timeout);
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router.clone());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        let router = router.clone();
        let (handshake_timeout, shutdown) = (settings.header_timeout, shutdown.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper tells HTTP/1 from HTTP/2 by the first bytes, with no time limit of
            // its own: a client that sends nothing (or half the HTTP/2 preface) would
            // hold its connection forever. (A TLS ClientHello passes at once.)
            tokio::select! {
                sent = first_bytes(&stream, handshake_timeout) => if !sent { return },
                _ = shutdown.cancelled() => return,
            }
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    // The client certificate's names travel with every request.
                    let peer = PeerNames(crate::tls::peer_names(stream.get_ref().1));
                    let service = TowerToHyperService::new(router.map_request(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        req
                    }));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    drop(listener);
    tracing::info!("draining connections");
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout passed with requests still in flight");
    }
    Ok(())
}

/// Keeps gRPC health in step with readiness (storage and queue answering): checked
/// every 2 s until shutdown, when `serve` sets NOT_SERVING for good.
async fn watch_readiness(
    pipeline: crate::pipeline::Pipeline,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
) {
    use tonic_health::ServingStatus;
    const GATEWAY: &str = "upload.v1.UploadGateway";
    let mut last = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let status = match pipeline.check().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                if last != Some(ServingStatus::NotServing) {
                    tracing::warn!(error = %e, "not ready: gRPC health says NOT_SERVING");
                }
                ServingStatus::NotServing
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if last != Some(status) {
            health.set_service_status("", status).await;
            health.set_service_status(GATEWAY, status).await;
            last = Some(status);
        }
    }
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2 (a byte that
/// leaves the HTTP/2 preface, or the whole preface); false when it closes or takes
/// longer than `within`.
async fn first_bytes(stream: &tokio::net::TcpStream, within: std::time::Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let sniff = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // Part of the preface so far: peek returns at once while bytes wait.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(within, sniff).await.unwrap_or(false)
}
