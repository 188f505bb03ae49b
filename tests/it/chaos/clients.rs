//! The chaos clients: one upload each, REST or gRPC, never retried; each outcome is
//! what the client can know: a 2xx, an explicit refusal, or unknown (the connection
//! broke, or the gateway was killed, before an answer came).

use std::time::Duration;

use crate::common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use crate::common::{identity, pb, Upload};

pub const SERVICE: &str = "advisor";
const CONTENT_TYPE: &str = "application/vnd.redhat.advisor.collection+tgz";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx (REST) or OK (gRPC).
    Accepted,
    /// An explicit answer that is not a success: HTTP status or gRPC code.
    Refused(String),
    /// No answer the client can trust: the reason.
    Unknown(String),
}

pub fn payload(i: usize, seed: u64) -> Vec<u8> {
    let len = 1024 + (i * 7919 + seed as usize) % 24_000;
    (0..len).map(|k| ((k * 31 + i) % 251) as u8).collect()
}

pub async fn rest(http: &reqwest::Client, base: &str, id: &str, body: Vec<u8>) -> Outcome {
    let sent = Upload::new(CONTENT_TYPE, body)
        .file_name("insights-archive.tar.gz")
        .metadata(r#"{"display_name":"chaos"}"#)
        .identity("0001234", "5556789")
        .request_id(id)
        .request(http, base)
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Outcome::Accepted,
        Ok(r) => Outcome::Refused(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Outcome::Unknown(format!("REST: {e}")),
    }
}

pub async fn grpc(base: &str, id: &str, body: Vec<u8>) -> Outcome {
    let channel = match tonic::transport::Channel::from_shared(base.to_string()).unwrap().connect().await {
        Ok(c) => c,
        Err(e) => return Outcome::Unknown(format!("gRPC connect: {e}")),
    };
    let mut client = pb::upload_gateway_client::UploadGatewayClient::new(channel);
    let mut msgs = vec![UploadRequest {
        part: Some(Part::Header(UploadHeader {
            content_type: CONTENT_TYPE.into(),
            identity: identity("0001234", "5556789"),
            request_id: id.into(),
            metadata_json: r#"{"display_name":"chaos"}"#.into(),
            ..Default::default()
        })),
    }];
    msgs.extend(body.chunks(8 * 1024).map(|c| UploadRequest { part: Some(Part::Chunk(c.to_vec().into())) }));
    let call = client.upload(futures_util::stream::iter(msgs));
    match tokio::time::timeout(Duration::from_secs(120), call).await {
        Err(_) => Outcome::Unknown("gRPC: no answer within 120 s".into()),
        Ok(Ok(_)) => Outcome::Accepted,
        // A status the gateway sent comes from its trailers; a broken connection
        // becomes a status that carries the transport error as its source.
        Ok(Err(s)) if std::error::Error::source(&s).is_some() || s.message().contains("transport") => {
            Outcome::Unknown(format!("gRPC: {:?} {}", s.code(), s.message()))
        }
        Ok(Err(s)) => Outcome::Refused(format!("gRPC {:?}: {}", s.code(), s.message())),
    }
}
