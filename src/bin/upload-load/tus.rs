//! Resumable uploads over tus 1.0.0: `run --protocol tus` (create, then one PATCH with
//! the whole payload, over one HTTP/1.1 connection per uploader) and `tus-resume` (one
//! payload whose PATCH is cut off part-way, then resumed from the offset the gateway
//! reports: how many bytes had to be sent again).

use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::driver::Uploader;
use crate::payload::{content_type, PayloadSource};
use crate::rest::Target;

use crate::rest::Body;

pub struct TusUploader {
    target: Arc<Target>,
    payload: PayloadSource,
    metadata: String,
    sender: Option<SendRequest<Body>>,
}

fn metadata(service: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!("filetype {},filename {}", b64(&content_type(service)), b64("bench.tgz"))
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

impl TusUploader {
    pub fn new(target: Arc<Target>, payload: PayloadSource, service: &str) -> Self {
        TusUploader { target, payload, metadata: metadata(service), sender: None }
    }

    async fn call(&mut self, req: Request<Body>) -> Result<http::Response<hyper::body::Incoming>, String> {
        let sender = crate::rest::connection(&mut self.sender, &self.target).await?;
        sender.ready().await.map_err(|_| "connection closed".to_string())?;
        sender.send_request(req).await.map_err(|e| format!("send: {e}"))
    }

    /// POST: a new upload of the payload's length; its path.
    async fn create(&mut self) -> Result<String, String> {
        let req = Request::post(self.target.path.as_str())
            .header(header::HOST, self.target.authority.as_str())
            .header("tus-resumable", "1.0.0")
            .header("upload-length", self.payload.size())
            .header("upload-metadata", self.metadata.as_str())
            .body(empty())
            .map_err(|e| format!("request: {e}"))?;
        let resp = self.call(req).await?;
        let status = resp.status();
        let location = resp.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        resp.into_body().collect().await.map_err(|_| "response body".to_string())?;
        match (status, location) {
            (StatusCode::CREATED, Some(l)) => Ok(l),
            (s, _) => Err(format!("create: HTTP {}", s.as_u16())),
        }
    }

    /// PATCH the payload's bytes from `offset` to its end.
    async fn patch(&mut self, path: &str, offset: u64) -> Result<(), String> {
        let step = self.payload.chunks().next().map(|c| c.len() as u64).unwrap_or(1).max(1);
        let skip = offset / step;
        let mut first_cut = (offset % step) as usize;
        let frames = self.payload.chunks().skip(skip as usize).map(move |c| {
            let c = c.slice(first_cut.min(c.len())..);
            first_cut = 0;
            Ok(Frame::data(c))
        });
        let req = Request::patch(path)
            .header(header::HOST, self.target.authority.as_str())
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset)
            .header(header::CONTENT_TYPE, "application/offset+octet-stream")
            .header(header::CONTENT_LENGTH, self.payload.size() - offset)
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
            .map_err(|e| format!("request: {e}"))?;
        let resp = self.call(req).await?;
        let status = resp.status();
        resp.into_body().collect().await.map_err(|_| "response body".to_string())?;
        if status != StatusCode::NO_CONTENT {
            return Err(format!("patch: HTTP {}", status.as_u16()));
        }
        Ok(())
    }

    /// HEAD: the committed offset; None while another request holds the upload.
    async fn offset(&mut self, path: &str) -> Result<u64, String> {
        let req = Request::head(path)
            .header(header::HOST, self.target.authority.as_str())
            .header("tus-resumable", "1.0.0")
            .body(empty())
            .map_err(|e| format!("request: {e}"))?;
        let resp = self.call(req).await?;
        let status = resp.status();
        let offset = resp.headers().get("upload-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        resp.into_body().collect().await.map_err(|_| "response body".to_string())?;
        match (status, offset) {
            (StatusCode::OK, Some(o)) => Ok(o),
            (s, _) => Err(format!("head: HTTP {}", s.as_u16())),
        }
    }
}

impl Uploader for TusUploader {
    async fn upload(&mut self) -> Result<(), String> {
        let r = async {
            let path = self.create().await?;
            self.patch(&path, 0).await
        }
        .await;
        if r.is_err() {
            self.sender = None;
        }
        r
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct ResumeArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// The tus creation path.
    #[arg(long, default_value = "/api/ingress/v1/uploads/")]
    pub path: String,
    #[arg(long, default_value = "1GiB", value_parser = crate::parse_size)]
    pub size: u64,
    /// Where the first PATCH's connection is closed, as a fraction of the payload.
    #[arg(long, default_value_t = 0.5)]
    pub cut: f64,
    #[arg(long, default_value = "256KiB", value_parser = crate::parse_size)]
    pub chunk: u64,
    #[arg(long, default_value = "advisor")]
    pub service: String,
}

/// One payload: PATCH until `cut`, the connection closed there (the client's link
/// drops), HEAD for the committed offset, PATCH the rest. Prints one JSON line.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&args.cut), "--cut is a fraction below 1");
    let target = Arc::new(Target::parse(&args.target, &args.path)?);
    let payload = PayloadSource::new(args.size, args.chunk);
    let mut up = TusUploader::new(target.clone(), payload.clone(), &args.service);
    let started = Instant::now();
    let path = up.create().await.map_err(anyhow::Error::msg)?;

    // The first PATCH over a raw socket, so it can be cut mid-body.
    let cut = (args.size as f64 * args.cut) as u64;
    let mut tcp = TcpStream::connect(&target.addr).await?;
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        target.authority, args.size
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut sent = 0u64;
    for c in payload.chunks() {
        if sent >= cut {
            break;
        }
        let n = (cut - sent).min(c.len() as u64) as usize;
        tcp.write_all(&c[..n]).await?;
        sent += n as u64;
    }
    drop(tcp); // the link drops
    let cut_at = started.elapsed();

    // Resume from what the gateway committed. It may still be committing the cut
    // request (423 / an offset that moves): ask again until a PATCH is taken.
    let mut resent_from = None;
    for _ in 0..600 {
        let offset = up.offset(&path).await.map_err(anyhow::Error::msg)?;
        match up.patch(&path, offset).await {
            Ok(()) => {
                resent_from = Some(offset);
                break;
            }
            // 409/423 while the gateway still commits the cut request; over HTTP/1.1 an
            // early refusal can also reach us as a broken connection mid-body.
            Err(e) if e.ends_with("409") || e.ends_with("423") || e.starts_with("send:") => {
                up.sender = None;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => anyhow::bail!("{e}"),
        }
    }
    let offset = resent_from.ok_or_else(|| anyhow::anyhow!("the upload stayed locked for 30 s"))?;
    let total = sent + (args.size - offset);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "size": args.size,
            "cut_at_bytes": sent,
            "cut_after_s": cut_at.as_secs_f64(),
            "resumed_at_offset": offset,
            "bytes_sent": total,
            "bytes_sent_again": total - args.size,
            "elapsed_s": secs,
            "mb_per_s": args.size as f64 / secs / 1e6,
        })
    );
    Ok(())
}
