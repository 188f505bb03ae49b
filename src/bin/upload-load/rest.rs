//! REST multipart uploads over HTTP/1.1, one keep-alive connection per uploader
//! (hyper's client connection, no pool: 64 uploaders are exactly 64 connections).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::driver::Uploader;
use crate::payload::{Multipart, PayloadSource};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Bodies up to this size are built once and sent from one buffer.
const WHOLE_BODY_MAX: u64 = 4 << 20;

pub struct Target {
    pub addr: String,
    pub authority: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str, path: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse()?;
        anyhow::ensure!(uri.scheme_str() == Some("http"), "--target must be an http:// URL");
        let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("--target has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            addr: format!("{}:{port}", authority.host()),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Makes the request body for each upload.
#[derive(Clone)]
pub struct BodyMaker {
    content_type: String,
    len: u64,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Whole(Bytes),
    Streamed { prefix: Bytes, payload: PayloadSource, suffix: Bytes },
}

impl BodyMaker {
    pub fn new(payload: &PayloadSource, service: &str) -> Self {
        let mp = Multipart::new(service);
        let len = mp.len(payload.size());
        let kind = if len <= WHOLE_BODY_MAX {
            let mut whole = Vec::with_capacity(len as usize);
            whole.extend_from_slice(&mp.prefix);
            whole.extend_from_slice(&payload.contiguous());
            whole.extend_from_slice(&mp.suffix);
            Kind::Whole(whole.into())
        } else {
            Kind::Streamed { prefix: mp.prefix, payload: payload.clone(), suffix: mp.suffix }
        };
        BodyMaker { content_type: mp.content_type, len, kind }
    }

    fn body(&self) -> Body {
        match &self.kind {
            Kind::Whole(b) => Full::new(b.clone()).boxed_unsync(),
            Kind::Streamed { prefix, payload, suffix } => {
                let parts = std::iter::once(prefix.clone())
                    .chain(payload.chunks())
                    .chain(std::iter::once(suffix.clone()))
                    .map(|b| Ok(Frame::data(b)));
                StreamBody::new(futures_util::stream::iter(parts)).boxed_unsync()
            }
        }
    }
}

pub struct RestUploader {
    target: Arc<Target>,
    body: BodyMaker,
    sender: Option<SendRequest<Body>>,
}

impl RestUploader {
    pub fn new(target: Arc<Target>, body: BodyMaker) -> Self {
        RestUploader { target, body, sender: None }
    }

    async fn connection(&mut self) -> Result<&mut SendRequest<Body>, String> {
        connection(&mut self.sender, &self.target).await
    }

    async fn send(&mut self) -> Result<(), String> {
        let req = Request::post(self.target.path.as_str())
            .header(header::HOST, self.target.authority.as_str())
            .header(header::CONTENT_TYPE, self.body.content_type.as_str())
            .header(header::CONTENT_LENGTH, self.body.len)
            .body(self.body.body())
            .map_err(|e| format!("request: {e}"))?;
        let sender = self.connection().await?;
        sender.ready().await.map_err(|_| "connection closed".to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("send: {}", short(&e)))?;
        let status = resp.status();
        resp.into_body().collect().await.map_err(|e| format!("response body: {}", short(&e)))?;
        if status != StatusCode::ACCEPTED {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        Ok(())
    }
}

impl Uploader for RestUploader {
    async fn upload(&mut self) -> Result<(), String> {
        let r = self.send().await;
        if r.is_err() {
            self.sender = None; // a fresh connection for the next upload
        }
        r
    }
}

/// The uploader's HTTP/1.1 connection to the target, opened (again) when it has none
/// or it closed (REST and tus uploaders).
pub async fn connection<'a>(sender: &'a mut Option<SendRequest<Body>>, target: &Target) -> Result<&'a mut SendRequest<Body>, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = TcpStream::connect(&target.addr).await.map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = tcp.set_nodelay(true);
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|_| "handshake".to_string())?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    Ok(sender.as_mut().expect("just set"))
}

fn short(e: &hyper::Error) -> &'static str {
    if e.is_closed() || e.is_incomplete_message() {
        "connection closed"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "protocol error"
    }
}
