//! The gRPC resumable client (tonic, generated from `proto/upload/v1/upload.proto`):
//! `CreateUpload`, `QueryWriteStatus`, one `Write` stream from the committed offset to
//! the end (`finish_write` on its last message), `CancelUpload`, and `WatchStatus`.
//! Identity and request id travel as request metadata, as the gateway wants them.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::file::Sending;
use super::retry::{self, Failure};
use crate::grpc::pb::{self, upload_gateway_client::UploadGatewayClient};

/// Bytes per `Write` message at most (the gateway takes messages of a few MiB).
pub const MAX_MESSAGE: u64 = 1 << 20;

pub type Client = UploadGatewayClient<InterceptedService<Channel, Headers>>;

/// Adds `x-rh-identity` and `x-rh-insights-request-id` to every call.
#[derive(Clone)]
pub struct Headers {
    identity: Option<MetadataValue<Ascii>>,
    request_id: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(i) = &self.identity {
            req.metadata_mut().insert("x-rh-identity", i.clone());
        }
        if let Some(r) = &self.request_id {
            req.metadata_mut().insert("x-rh-insights-request-id", r.clone());
        }
        Ok(req)
    }
}

/// A client on a lazily connected channel: a gateway that is not up yet is an
/// UNAVAILABLE answer to the first call, retried like any other.
pub fn client(gateway: &str, ca_file: Option<&Path>, identity: Option<&str>, request_id: Option<&str>) -> anyhow::Result<Client> {
    let connect = crate::validator::ConnectArgs { token: None, token_file: None, data_dir: ".".into(), ca_file: ca_file.map(Into::into) };
    let channel = connect.endpoint(gateway)?.connect_lazy();
    let value = |what: &str, v: Option<&str>| -> anyhow::Result<Option<MetadataValue<Ascii>>> {
        v.map(|v| MetadataValue::try_from(v).map_err(|_| anyhow::anyhow!("{what} has characters a header cannot carry")))
            .transpose()
    };
    let headers = Headers { identity: value("--identity", identity)?, request_id: value("--request-id", request_id)? };
    Ok(UploadGatewayClient::with_interceptor(channel, headers).max_decoding_message_size(16 << 20))
}

/// Sorts a gRPC status into what the retry loop does.
pub fn failure(what: &str, s: tonic::Status) -> Failure {
    let mut message = format!("{what}: {:?}: {}", s.code(), s.message());
    let mut src = std::error::Error::source(&s);
    while let Some(e) = src {
        message.push_str(&format!(": {e}"));
        src = e.source();
    }
    if retry::certificate_refused(&message) {
        return Failure::Permanent(message);
    }
    match s.code() {
        tonic::Code::NotFound => Failure::Gone(message),
        // Another offset than the committed one: ask again and go on from there.
        tonic::Code::FailedPrecondition => Failure::transient(message),
        c if retry::grpc_transient(c) => Failure::transient(message),
        _ => Failure::Permanent(message),
    }
}

/// What a new upload is.
pub struct Create<'a> {
    pub size: u64,
    pub content_type: &'a str,
    pub file_name: &'a str,
    pub metadata: Option<&'a str>,
    pub sha256: &'a str,
}

pub async fn create(client: &mut Client, c: &Create<'_>) -> Result<pb::UploadState, Failure> {
    #[allow(deprecated)]
    let header = pb::UploadHeader {
        content_type: c.content_type.to_string(),
        file_name: c.file_name.to_string(),
        metadata_json: c.metadata.unwrap_or_default().to_string(),
        expected_size: c.size,
        expected_sha256: c.sha256.to_string(),
        ..Default::default()
    };
    client
        .create_upload(pb::CreateUploadRequest { header: Some(header) })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| failure("creating the upload", s))
}

pub async fn query(client: &mut Client, upload_id: &str) -> Result<pb::UploadState, Failure> {
    client
        .query_write_status(pb::QueryWriteStatusRequest { upload_id: upload_id.to_string() })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| failure("asking where the upload stands", s))
}

pub async fn cancel(client: &mut Client, upload_id: &str) {
    let _ = client.cancel_upload(pb::CancelUploadRequest { upload_id: upload_id.to_string() }).await;
}

/// One `Write` stream: the file from `offset` to its end, in messages of `message`
/// bytes, the last one with `finish_write`.
pub async fn write(client: &mut Client, upload_id: &str, file: &Sending, offset: u64, message: u64) -> Result<pb::WriteResponse, Failure> {
    use futures_util::StreamExt;
    let size = file.size;
    let message = message.clamp(1, MAX_MESSAGE);
    let id = upload_id.to_string();
    let data = file.stream(offset, size - offset, message as usize);
    // The bytes (none for an empty rest), then the message that ends the upload.
    let pieces = data
        .map(Some)
        .chain(futures_util::stream::once(async { None }))
        .scan(true, move |first, piece| {
            let first_now = std::mem::replace(first, false);
            let req = match piece {
                Some(Ok(bytes)) => {
                    Some(pb::WriteRequest {
                        upload_id: if first_now { id.clone() } else { String::new() },
                        write_offset: if first_now { offset } else { 0 },
                        data: bytes,
                        finish_write: false,
                    })
                }
                // A read error: end the stream without finishing (the caller sees it).
                Some(Err(_)) => return std::future::ready(None),
                None => Some(pb::WriteRequest {
                    upload_id: id.clone(),
                    write_offset: if first_now { offset } else { 0 },
                    data: Default::default(),
                    finish_write: true,
                }),
            };
            std::future::ready(req)
        });
    match client.write(pieces).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) => {
            if let Some(read) = file.read_error() {
                return Err(Failure::Permanent(read));
            }
            Err(failure("sending bytes", s))
        }
    }
}

/// Follows the payload's status until a terminal one; `Ok(None)` when the stream
/// ended without one.
pub async fn watch(client: &mut Client, request_id: &str) -> Result<Option<pb::StatusEvent>, Failure> {
    let mut stream = client
        .watch_status(pb::StatusRequest { request_id: request_id.to_string() })
        .await
        .map_err(|s| failure("following the status", s))?
        .into_inner();
    let mut last = None;
    while let Some(ev) = stream.message().await.map_err(|s| failure("following the status", s))? {
        let terminal = crate::pipeline::status::TERMINAL.contains(&ev.status.as_str());
        last = Some(ev);
        if terminal {
            return Ok(last);
        }
    }
    Ok(last.filter(|e| crate::pipeline::status::TERMINAL.contains(&e.status.as_str())))
}
