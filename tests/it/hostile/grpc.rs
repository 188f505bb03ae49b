//! gRPC senders for the hostile table: streams that stall or never end, compressed
//! messages, and raw message bytes that are not protobuf at all.

use bytes::{Buf, BufMut};
use futures_util::{Stream, StreamExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::common::pb::{self, upload_request::Part, UploadHeader, UploadRequest};

pub fn header(h: UploadHeader) -> UploadRequest {
    UploadRequest { part: Some(Part::Header(h)) }
}

pub fn chunk(bytes: Vec<u8>) -> UploadRequest {
    UploadRequest { part: Some(Part::Chunk(bytes.into())) }
}

pub fn advisor() -> UploadHeader {
    UploadHeader {
        content_type: "application/vnd.redhat.advisor.hostile+tgz".into(),
        ..Default::default()
    }
}

/// How a gRPC upload stream goes on after its listed messages.
#[derive(Clone, Copy)]
pub enum Tail {
    /// The stream ends: a normal client.
    End,
    /// The stream stays open, sending nothing more.
    Stall,
    /// 64 KiB chunks, forever.
    Endless,
}

pub fn stream(msgs: Vec<UploadRequest>, tail: Tail) -> impl Stream<Item = UploadRequest> + Send + 'static {
    let head = futures_util::stream::iter(msgs);
    let rest: std::pin::Pin<Box<dyn Stream<Item = UploadRequest> + Send>> = match tail {
        Tail::End => Box::pin(futures_util::stream::empty()),
        Tail::Stall => Box::pin(futures_util::stream::pending()),
        Tail::Endless => Box::pin(futures_util::stream::repeat_with(|| chunk(vec![b'e'; 64 * 1024]))),
    };
    head.chain(rest)
}

/// Uploads with the generated client; gzip-compresses every message when asked.
pub async fn upload(base: &str, msgs: Vec<UploadRequest>, tail: Tail, gzip: bool) -> Result<String, Status> {
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base.to_string())
        .await
        .expect("grpc connects");
    if gzip {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    client.upload(stream(msgs, tail)).await.map(|r| r.into_inner().request_id)
}

/// Request metadata (header name, value) a call carries.
pub type Metadata = Vec<(&'static str, String)>;

fn with_metadata<T>(msg: T, metadata: &Metadata) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    for (name, value) in metadata {
        // Appended, not inserted: a name listed twice is sent twice.
        req.metadata_mut().append(*name, value.parse().expect("a valid metadata value"));
    }
    req
}

/// An upload (the stream ends after `msgs`) with request metadata.
pub async fn upload_with(base: &str, msgs: Vec<UploadRequest>, metadata: &Metadata) -> Result<String, Status> {
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base.to_string())
        .await
        .expect("grpc connects");
    client.upload(with_metadata(futures_util::stream::iter(msgs), metadata)).await.map(|r| r.into_inner().request_id)
}

/// Subscribes to a service's work with request metadata (a validator's credentials).
/// A stream that opens is closed at once: it answers with what it was let do.
pub async fn subscribe(base: &str, service: &str, metadata: &Metadata) -> Result<String, Status> {
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base.to_string())
        .await
        .expect("grpc connects");
    let req = with_metadata(pb::SubscribeRequest { service: service.into() }, metadata);
    let mut work = client.subscribe(req).await?.into_inner();
    // A refusal can come after the response head (an HTTP status with no grpc-status:
    // the stream ends with it at once); work comes only after an upload, so a stream
    // still quiet after a moment was let in.
    match tokio::time::timeout(std::time::Duration::from_millis(500), work.message()).await {
        Ok(Err(status)) => Err(status),
        Ok(Ok(_)) | Err(_) => Ok(format!("a Subscribe stream for {service} was opened")),
    }
}

/// Sends these bytes as the Upload call's messages, protobuf or not.
pub async fn upload_raw(base: &str, messages: Vec<Vec<u8>>) -> Result<String, Status> {
    let channel = tonic::transport::Channel::from_shared(base.to_string())
        .unwrap()
        .connect()
        .await
        .expect("grpc connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/upload.v1.UploadGateway/Upload");
    let req = tonic::Request::new(futures_util::stream::iter(messages));
    grpc.client_streaming(req, path, RawCodec)
        .await
        .map(|r| String::from_utf8_lossy(&r.into_inner()).to_string())
}

/// Passes message bytes through untouched.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}
