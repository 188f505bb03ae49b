//! The gRPC adapter (contract §5): `upload.v1.UploadGateway`, translated into
//! pipeline calls, plus reflection and health.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::auth::{Caller, PeerNames, Validator};
use crate::messages::{Echoed, VerdictDetails};
use crate::pipeline::{one_value, Outcome, Pipeline, UploadHeader};

mod resumable;

pub mod pb {
    tonic::include_proto!("upload.v1");
    /// The descriptor set that reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("upload_descriptor");
}

use pb::upload_gateway_server::UploadGateway;
use pb::{upload_request::Part, verdict_ack};

pub struct GatewayService {
    pipeline: Pipeline,
}

impl GatewayService {
    pub fn new(pipeline: Pipeline) -> Self {
        GatewayService { pipeline }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Metadata that says who is calling (identity, request id, credential), as text. Sent
/// twice with different values it is refused (PERMISSION_DENIED), never one of them
/// preferred, as over REST.
fn metadata_str(req_meta: &tonic::metadata::MetadataMap, name: &str) -> Result<Option<String>, Status> {
    let mut values = req_meta
        .get_all(name)
        .iter()
        .map(|v| v.to_str().map_err(|_| Status::invalid_argument(format!("{name} metadata is not visible ASCII"))));
    let Some(first) = values.next().transpose()? else { return Ok(None) };
    for other in values {
        if other? != first {
            return Err(Error::Forbidden(format!("the {name} metadata is sent twice with different values: send it once")).into());
        }
    }
    Ok(Some(first.to_string()))
}

/// What a failed upload stream means: the client went away, sent a message over the
/// size limit (tonic says OutOfRange, or ResourceExhausted when decompressing), or
/// sent something that is not an upload message.
fn stream_error(s: Status) -> Error {
    use tonic::Code;
    match s.code() {
        Code::Cancelled => Error::ClientGone(s.message().to_string()),
        Code::OutOfRange | Code::ResourceExhausted => Error::MessageTooLarge(s.message().to_string()),
        _ => Error::bad_request(format!("upload stream failed: {}", s.message())),
    }
}

/// Who is calling: identity metadata, `authorization` metadata, client certificate.
fn caller<T>(pipeline: &Pipeline, req: &Request<T>) -> Result<Caller, Status> {
    let identity = metadata_str(req.metadata(), "x-rh-identity")?;
    let authorization = metadata_str(req.metadata(), "authorization")?;
    let names = req.extensions().get::<PeerNames>().map(|p| p.0.as_slice()).unwrap_or_default();
    Ok(pipeline.caller(identity.as_deref(), authorization.as_deref(), names)?)
}

/// The pipeline's header from the gRPC one and the request's identity and request id
/// metadata (`Upload` and `CreateUpload`).
fn upload_header(h: pb::UploadHeader, identity: Option<String>, request_id: Option<String>) -> Result<UploadHeader, Status> {
    #[allow(deprecated)] // read only to refuse a value that differs from the metadata's
    let (body_identity, body_request_id) = (h.identity, h.request_id);
    Ok(UploadHeader {
        content_type: h.content_type,
        file_name: non_empty(h.file_name),
        identity: one_value("x-rh-identity", identity, non_empty(body_identity))?,
        request_id: one_value("x-rh-insights-request-id", request_id, non_empty(body_request_id))?,
        metadata: non_empty(h.metadata_json).map(String::into_bytes),
        expected_size: (h.expected_size > 0).then_some(h.expected_size),
        expected_sha256: non_empty(h.expected_sha256),
    })
}

/// The receipt of a stored and announced payload, as the client gets it.
fn receipt(r: crate::pipeline::Receipt) -> pb::UploadReceipt {
    pb::UploadReceipt {
        request_id: r.request_id.to_string(),
        account_number: r.account_number.unwrap_or_default(),
        org_id: r.org_id.unwrap_or_default(),
        service: r.service,
        category: r.category,
        size: r.size,
        sha256: r.sha256,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl UploadGateway for GatewayService {
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadReceipt>, Status> {
        let identity = metadata_str(request.metadata(), "x-rh-identity")?;
        let request_id = metadata_str(request.metadata(), "x-rh-insights-request-id")?;
        let mut stream = request.into_inner();
        let idle = self.pipeline.settings().body_idle_timeout;
        let first = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| Error::Timeout(format!("the upload stream stalled for {} s before its header", idle.as_secs())))?
            .ok_or_else(|| Status::invalid_argument("the stream ended before its header"))?
            .map_err(stream_error)?;
        let Some(Part::Header(h)) = first.part else {
            return Err(Status::invalid_argument("the first message must carry the header"));
        };
        let header = upload_header(h, identity, request_id)?;
        let chunks = stream.map(|m| match m {
            Ok(pb::UploadRequest { part: Some(Part::Chunk(bytes)) }) => Ok(bytes),
            Ok(_) => Err(Error::bad_request("after the header, every message must carry a chunk")),
            Err(s) => Err(stream_error(s)),
        });
        let staged = self.pipeline.store(header, Box::pin(chunks)).await?;
        let r = staged.announce().await?;
        let id = r.request_id.as_str().parse();
        let mut resp = Response::new(receipt(r));
        if let Ok(v) = id {
            resp.metadata_mut().insert("x-rh-insights-request-id", v);
        }
        Ok(resp)
    }

    async fn create_upload(&self, request: Request<pb::CreateUploadRequest>) -> Result<Response<pb::UploadState>, Status> {
        self.create_resumable(request).await
    }

    async fn query_write_status(&self, request: Request<pb::QueryWriteStatusRequest>) -> Result<Response<pb::UploadState>, Status> {
        self.query_resumable(request).await
    }

    async fn write(&self, request: Request<Streaming<pb::WriteRequest>>) -> Result<Response<pb::WriteResponse>, Status> {
        self.write_resumable(request).await
    }

    async fn cancel_upload(&self, request: Request<pb::CancelUploadRequest>) -> Result<Response<pb::UploadState>, Status> {
        self.cancel_resumable(request).await
    }

    type SubscribeStream = BoxStream<pb::Announcement>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = caller(&self.pipeline, &request)?;
        let work = self.pipeline.subscribe(&caller, &request.into_inner().service).await?;
        let out = work.map(|w| {
            let w = w?;
            let a = w.announce;
            Ok(pb::Announcement {
                request_id: a.request_id,
                service: a.service,
                category: a.category,
                url: a.url,
                size: a.size,
                sha256: a.sha256,
                content_type: a.content_type,
                account: a.account.unwrap_or_default(),
                org_id: a.org_id.unwrap_or_default(),
                b64_identity: a.b64_identity,
                timestamp: a.timestamp,
                json: w.json,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    type ValidationResultStream = BoxStream<pb::VerdictAck>;

    async fn validation_result(
        &self,
        request: Request<Streaming<pb::Verdict>>,
    ) -> Result<Response<Self::ValidationResultStream>, Status> {
        let validator = caller(&self.pipeline, &request)?.validator()?.clone();
        let pipeline = self.pipeline.clone();
        // At shutdown no new verdict is taken; the one being applied is finished.
        let verdicts = request.into_inner().take_until(self.pipeline.closing());
        let acks = verdicts.then(move |v| {
            let (pipeline, validator) = (pipeline.clone(), validator.clone());
            async move {
                let v = v?;
                Ok(ack(&pipeline, &validator, v).await)
            }
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn get_status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusHistory>, Status> {
        let caller = caller(&self.pipeline, &request)?;
        let id = request.into_inner().request_id;
        let history = self.pipeline.history(&caller, &id).await?;
        Ok(Response::new(pb::StatusHistory {
            request_id: id,
            events: history.into_iter().map(event).collect(),
        }))
    }

    type WatchStatusStream = BoxStream<pb::StatusEvent>;

    async fn watch_status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let caller = caller(&self.pipeline, &request)?;
        let events = self.pipeline.follow(&caller, &request.into_inner().request_id).await?;
        Ok(Response::new(Box::pin(events.map(|e| Ok(event(e))))))
    }

    type DownloadStream = BoxStream<pb::DownloadChunk>;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = caller(&self.pipeline, &request)?;
        let (bucket, meta, bytes) = self.pipeline.download(&caller, &request.into_inner().request_id).await?;
        // The first message says what follows (also for an empty payload); the rest
        // carry the bytes.
        let first = pb::DownloadChunk { data: Default::default(), size: meta.size, bucket: bucket.as_str().into() };
        let chunks = bytes.map(|chunk| Ok(pb::DownloadChunk { data: chunk?, size: 0, bucket: String::new() }));
        Ok(Response::new(Box::pin(futures_util::stream::once(async { Ok(first) }).chain(chunks))))
    }
}

/// Applies one verdict from a gRPC validator and says what happened.
async fn ack(pipeline: &Pipeline, validator: &Validator, v: pb::Verdict) -> pb::VerdictAck {
    use verdict_ack::Outcome as O;
    let details = VerdictDetails {
        reason: non_empty(v.reason),
        satellite_managed: v.satellite_managed,
        id: non_empty(v.id),
        echo: Echoed {
            service: non_empty(v.service),
            category: non_empty(v.category),
            account: non_empty(v.account),
            org_id: non_empty(v.org_id),
            b64_identity: non_empty(v.b64_identity),
        },
    };
    let report = pipeline.apply_verdict_details(validator, &v.request_id, &v.validation, details).await;
    let outcome = match report.outcome {
        Outcome::Promoted => O::Promoted,
        Outcome::Rejected => O::Rejected,
        Outcome::HandedOff => O::HandedOff,
        Outcome::AlreadyDecided => O::AlreadyDecided,
        Outcome::UnknownId => O::UnknownId,
        Outcome::Invalid => O::Invalid,
        Outcome::Retry => O::Retry,
        Outcome::Forbidden => O::Forbidden,
    };
    pb::VerdictAck {
        request_id: report.request_id,
        outcome: outcome as i32,
        message: report.message,
    }
}

fn event(e: crate::messages::PayloadStatus) -> pb::StatusEvent {
    pb::StatusEvent {
        request_id: e.request_id,
        status: e.status,
        status_msg: e.status_msg,
        date: e.date,
        service: e.service,
        account: e.account.unwrap_or_default(),
        org_id: e.org_id.unwrap_or_default(),
    }
}

/// The gRPC services as one axum router: the gateway (also as gRPC-Web), health and
/// reflection v1 and v1alpha.
pub fn routes(pipeline: Pipeline) -> (tonic_health::server::HealthReporter, axum::Router) {
    use pb::upload_gateway_server::UploadGatewayServer;
    let (health, health_service) = tonic_health::server::health_reporter();
    let gateway = UploadGatewayServer::new(GatewayService::new(pipeline))
        .max_decoding_message_size(4 << 20)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    // Both reflection versions describe the same services, their own included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the descriptor sets are built by build.rs");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the descriptor sets are built by build.rs");
    let reporter = health.clone();
    tokio::spawn(async move {
        reporter.set_serving::<UploadGatewayServer<GatewayService>>().await;
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    });
    let routes = tonic::service::Routes::new(health_service)
        .add_service(gateway)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // The fallback is set after the gRPC-Web layer, which answers any other HTTP/1
    // request with an empty 400: an unknown REST path is a 404.
    let router = routes
        .prepare()
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .fallback(unknown_path);
    (health, router)
}

/// No route: gRPC's Unimplemented to a gRPC client, 404 to anyone else.
async fn unknown_path(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        Status::unimplemented(format!("no method {}", req.uri().path())).into_http()
    } else {
        Error::NotFound(format!("no such path: {}", req.uri().path())).into_response()
    }
}
