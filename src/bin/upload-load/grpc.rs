//! gRPC `Upload` calls: a header message, then the payload in chunk messages.

use tonic::transport::{Channel, Endpoint};
use upload_gateway::grpc::pb::{
    upload_gateway_client::UploadGatewayClient, upload_request::Part, UploadHeader, UploadRequest,
};

use crate::driver::Uploader;
use crate::payload::{content_type, PayloadSource};

/// `n` channels, each its own HTTP/2 connection.
pub async fn connect(target: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = Endpoint::from_shared(target.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await?;
        out.push(ch);
    }
    Ok(out)
}

pub struct GrpcUploader {
    client: UploadGatewayClient<Channel>,
    payload: PayloadSource,
    content_type: String,
}

impl GrpcUploader {
    pub fn new(channel: Channel, payload: PayloadSource, service: &str) -> Self {
        GrpcUploader {
            client: UploadGatewayClient::new(channel).max_decoding_message_size(16 << 20),
            payload,
            content_type: content_type(service),
        }
    }
}

/// The request stream of one upload.
pub fn messages(
    payload: &PayloadSource,
    header: UploadHeader,
) -> impl futures_util::Stream<Item = UploadRequest> + Send + 'static {
    let header = UploadRequest { part: Some(Part::Header(header)) };
    let chunks = payload.chunks().map(|c| UploadRequest { part: Some(Part::Chunk(c)) });
    futures_util::stream::iter(std::iter::once(header).chain(chunks))
}

impl Uploader for GrpcUploader {
    async fn upload(&mut self) -> Result<(), String> {
        let header = UploadHeader {
            content_type: self.content_type.clone(),
            file_name: "bench.tgz".into(),
            expected_size: self.payload.size(),
            ..Default::default()
        };
        let receipt = self
            .client
            .upload(messages(&self.payload, header))
            .await
            .map_err(|s| format!("gRPC {:?}", s.code()))?;
        if receipt.get_ref().size != self.payload.size() {
            return Err("receipt size mismatch".into());
        }
        Ok(())
    }
}
