//! The ceiling: a minimal hyper server on the same kind of listener as the gateway
//! (HTTP/1.1 + h2c, nodelay), that reads each request body whole and answers at once:
//! REST requests get 202 with a small JSON body, gRPC `Upload` calls get a receipt
//! (tonic decodes the stream; nothing is stored, hashed or announced).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tonic::{Status, Streaming};
use tower::Service;
use upload_gateway::grpc::pb::{self, upload_gateway_server::UploadGateway, upload_request::Part};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

const ANSWER: &[u8] = br#"{"request_id":"baseline","upload":{"account_number":"","org_id":""}}"#;

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let builder = auto::Builder::new(TokioExecutor::new());
    let grpc = pb::upload_gateway_server::UploadGatewayServer::new(Baseline)
        .max_decoding_message_size(4 << 20);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let grpc = grpc.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut grpc = grpc.clone();
                async move {
                    if is_grpc(&req) {
                        let resp = grpc.call(req).await.unwrap_or_else(|e: Infallible| match e {});
                        Ok::<_, Infallible>(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                    } else {
                        Ok(bare(req).await)
                    }
                }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn is_grpc(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Reads the body, answers 202.
async fn bare(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return answer(StatusCode::BAD_REQUEST, Bytes::new());
        }
    }
    answer(StatusCode::ACCEPTED, Bytes::from_static(ANSWER))
}

fn answer(status: StatusCode, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body).map_err(|e: Infallible| match e {}).boxed_unsync())
        .expect("a valid response")
}

struct Baseline;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl UploadGateway for Baseline {
    async fn upload(
        &self,
        request: tonic::Request<Streaming<pb::UploadRequest>>,
    ) -> Result<tonic::Response<pb::UploadReceipt>, Status> {
        let mut stream = request.into_inner();
        let mut size = 0u64;
        while let Some(msg) = stream.next().await {
            if let Some(Part::Chunk(c)) = msg?.part {
                size += c.len() as u64;
            }
        }
        Ok(tonic::Response::new(pb::UploadReceipt {
            request_id: "baseline".into(),
            size,
            ..Default::default()
        }))
    }

    type SubscribeStream = BoxStream<pb::Announcement>;
    async fn subscribe(&self, _: tonic::Request<pb::SubscribeRequest>) -> Result<tonic::Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    type ValidationResultStream = BoxStream<pb::VerdictAck>;
    async fn validation_result(
        &self,
        _: tonic::Request<Streaming<pb::Verdict>>,
    ) -> Result<tonic::Response<Self::ValidationResultStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn get_status(&self, _: tonic::Request<pb::StatusRequest>) -> Result<tonic::Response<pb::StatusHistory>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    type WatchStatusStream = BoxStream<pb::StatusEvent>;
    async fn watch_status(&self, _: tonic::Request<pb::StatusRequest>) -> Result<tonic::Response<Self::WatchStatusStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    type DownloadStream = BoxStream<pb::DownloadChunk>;
    async fn download(&self, _: tonic::Request<pb::DownloadRequest>) -> Result<tonic::Response<Self::DownloadStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn create_upload(&self, _: tonic::Request<pb::CreateUploadRequest>) -> Result<tonic::Response<pb::UploadState>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn query_write_status(&self, _: tonic::Request<pb::QueryWriteStatusRequest>) -> Result<tonic::Response<pb::UploadState>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn write(&self, _: tonic::Request<tonic::Streaming<pb::WriteRequest>>) -> Result<tonic::Response<pb::WriteResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn cancel_upload(&self, _: tonic::Request<pb::CancelUploadRequest>) -> Result<tonic::Response<pb::UploadState>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}
