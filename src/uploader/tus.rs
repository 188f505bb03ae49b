//! The tus 1.0.0 client (reqwest): create the upload, ask where it stands (HEAD),
//! append bounded chunks streamed from disk (PATCH, each with its `Upload-Checksum`
//! when the gateway offers sha256), throw one away (DELETE), and read `track`.
//! Every answer is sorted into what [`super::retry`] can act on.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use base64::Engine;
use reqwest::header::HeaderMap;

use super::file::Sending;
use super::retry::{self, Failure};

/// Where the uploader sends tus requests and reads `track`: the first of the
/// gateway's prefixes.
pub const PREFIX: &str = "/api/ingress";
const TUS_VERSION: &str = "1.0.0";
/// Bytes per piece of a PATCH body, as it is read from disk.
const PIECE: usize = 256 << 10;

#[derive(Clone)]
pub struct Tus {
    http: reqwest::Client,
    gateway: String,
    identity: Option<String>,
}

/// What a new upload is.
pub struct Create<'a> {
    pub size: u64,
    pub content_type: &'a str,
    pub file_name: &'a str,
    pub metadata: Option<&'a str>,
    pub sha256: &'a str,
    pub request_id: Option<&'a str>,
}

/// A created upload: its absolute URL and its id (the payload's request id).
#[derive(Debug, Clone)]
pub struct Created {
    pub url: String,
    pub id: String,
}

/// What a PATCH left: the gateway's offset, and the request id when it finished the upload.
#[derive(Debug)]
pub struct Patched {
    pub offset: u64,
    pub request_id: Option<String>,
}

/// A payload's status from `track`: the last status and its sentence.
#[derive(Debug, Clone)]
pub struct Track {
    pub status: String,
    pub status_msg: String,
}

impl Tus {
    pub fn new(gateway: &str, ca_file: Option<&Path>, identity: Option<String>) -> anyhow::Result<Tus> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("upload-gateway-uploader/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).with_context(|| format!("--ca-file {}", ca.display()))?);
        }
        Ok(Tus { http: b.build()?, gateway: gateway.trim_end_matches('/').to_string(), identity })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, url).header("Tus-Resumable", TUS_VERSION);
        if let Some(i) = &self.identity {
            r = r.header("x-rh-identity", i);
        }
        r
    }

    /// The creation URL: `{gateway}/api/ingress/v1/uploads/`.
    pub fn endpoint(&self) -> String {
        format!("{}{PREFIX}/v1/uploads/", self.gateway)
    }

    /// The URL of an upload by id (the state of a gRPC upload continued over tus).
    pub fn upload_url(&self, id: &str) -> String {
        format!("{}{PREFIX}/v1/uploads/{id}", self.gateway)
    }

    /// Whether the gateway takes `Upload-Checksum: sha256` (OPTIONS); no when it cannot say.
    pub async fn offers_sha256(&self) -> bool {
        let Ok(resp) = self.request(reqwest::Method::OPTIONS, &self.endpoint()).send().await else {
            return false;
        };
        let has = |name: &str, want: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|x| x.trim().eq_ignore_ascii_case(want)))
        };
        has("tus-extension", "checksum") && has("tus-checksum-algorithm", "sha256")
    }

    /// POST: a new upload of `c.size` bytes; the bytes follow by PATCH.
    pub async fn create(&self, c: &Create<'_>) -> Result<Created, Failure> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut meta = vec![format!("filetype {}", b64(c.content_type)), format!("filename {}", b64(c.file_name))];
        if let Some(m) = c.metadata {
            meta.push(format!("metadata {}", b64(m)));
        }
        meta.push(format!("sha256 {}", b64(c.sha256)));
        let mut req = self
            .request(reqwest::Method::POST, &self.endpoint())
            .header("Upload-Length", c.size)
            .header("Upload-Metadata", meta.join(","))
            .header("Content-Length", 0);
        if let Some(id) = c.request_id {
            req = req.header("x-rh-insights-request-id", id);
        }
        let resp = req.send().await.map_err(|e| network("creating the upload", e))?;
        if resp.status().as_u16() != 201 {
            return Err(refusal("creating the upload", resp, Conflict::Permanent).await);
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::Permanent("the gateway created the upload but sent no Location".into()))?;
        let url = reqwest::Url::parse(&self.endpoint())
            .and_then(|base| base.join(location))
            .map_err(|e| Failure::Permanent(format!("the gateway's Location {location:?} is not a URL: {e}")))?;
        let id = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Failure::Permanent(format!("the gateway's Location {location:?} names no upload")))?
            .to_string();
        Ok(Created { url: url.to_string(), id })
    }

    /// HEAD: the bytes the gateway holds (its `Upload-Offset`).
    pub async fn offset(&self, url: &str) -> Result<u64, Failure> {
        let resp = self
            .request(reqwest::Method::HEAD, url)
            .send()
            .await
            .map_err(|e| network("asking where the upload stands", e))?;
        if !resp.status().is_success() {
            return Err(refusal("asking where the upload stands", resp, Conflict::Transient).await);
        }
        header_u64(resp.headers(), "upload-offset")
            .ok_or_else(|| Failure::transient("the gateway's HEAD answer has no Upload-Offset"))
    }

    /// PATCH: `len` bytes of the file from `offset`, streamed from disk.
    pub async fn patch(&self, url: &str, file: &Sending, offset: u64, len: u64, checksum: Option<[u8; 32]>) -> Result<Patched, Failure> {
        let body = reqwest::Body::wrap_stream(file.stream(offset, len, PIECE));
        let mut req = self
            .request(reqwest::Method::PATCH, url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .header("Content-Length", len);
        if let Some(sum) = checksum {
            req = req.header(
                "Upload-Checksum",
                format!("sha256 {}", base64::engine::general_purpose::STANDARD.encode(sum)),
            );
        }
        // A gateway that stops reading without closing would hold the request forever:
        // two minutes, plus the chunk at 16 KiB/s, is the most one PATCH may take.
        let limit = Duration::from_secs(120) + Duration::from_secs_f64(len as f64 / 16384.0);
        let resp = match req.body(body).timeout(limit).send().await {
            Ok(r) => r,
            Err(e) => {
                if let Some(read) = file.read_error() {
                    return Err(Failure::Permanent(read));
                }
                return Err(network("sending bytes", e));
            }
        };
        match resp.status().as_u16() {
            200 | 204 => {
                let new = header_u64(resp.headers(), "upload-offset").unwrap_or(offset + len);
                let request_id = resp
                    .headers()
                    .get("x-rh-insights-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Patched { offset: new, request_id })
            }
            // Another offset than the gateway's: ask it again (HEAD) and go on from there.
            409 => Err(Failure::transient("the gateway holds another offset; asking it where the upload stands")),
            // The chunk arrived damaged (send it again), or the whole payload's sha256 is
            // not the declared one (the upload is gone: stop).
            460 => {
                let sentence: String = resp.text().await.unwrap_or_default().trim().chars().take(500).collect();
                match self.offset(url).await {
                    Err(Failure::Gone(_)) => Err(Failure::Permanent(format!(
                        "the gateway refused the payload (460 Checksum Mismatch): {sentence}"
                    ))),
                    _ => Err(Failure::transient(format!(
                        "a chunk did not arrive intact (460 Checksum Mismatch: {sentence}); sending it again"
                    ))),
                }
            }
            _ => Err(refusal("sending bytes", resp, Conflict::Transient).await),
        }
    }

    /// DELETE: throws an unfinished upload away (best effort: its bytes would expire anyway).
    pub async fn terminate(&self, url: &str) {
        let _ = self.request(reqwest::Method::DELETE, url).send().await;
    }

    /// The payload's status (`GET {p}/v1/track/{id}`): `None` while it is unknown.
    pub async fn track(&self, request_id: &str) -> Result<Option<Track>, Failure> {
        let url = format!("{}{PREFIX}/v1/track/{request_id}", self.gateway);
        let mut req = self.http.get(url);
        if let Some(i) = &self.identity {
            req = req.header("x-rh-identity", i);
        }
        let resp = req.send().await.map_err(|e| network("reading the status", e))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(refusal("reading the status", resp, Conflict::Transient).await);
        }
        let body = resp.bytes().await.map_err(|e| network("reading the status", e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| Failure::transient(format!("reading the status: {e}")))?;
        let last = v["history"].as_array().and_then(|h| h.last()).cloned().unwrap_or_default();
        let status = v["status"].as_str().or(last["status"].as_str()).unwrap_or("").to_string();
        Ok(Some(Track { status, status_msg: last["status_msg"].as_str().unwrap_or("").to_string() }))
    }
}

/// What a 409 means where it came.
#[derive(Clone, Copy)]
enum Conflict {
    /// The request id is taken (creation): stop.
    Permanent,
    /// Another writer or offset: try again.
    Transient,
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A failure to reach the gateway or to hear its answer: worth another try, but for a
/// certificate this client does not trust (no retry will change that).
fn network(what: &str, e: reqwest::Error) -> Failure {
    let mut msg = format!("{what}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    if retry::certificate_refused(&msg) {
        return Failure::Permanent(msg);
    }
    Failure::transient(msg)
}

/// An answer other than the one hoped for, sorted; the gateway's sentence kept.
async fn refusal(what: &str, resp: reqwest::Response, conflict: Conflict) -> Failure {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
    let body = resp.text().await.unwrap_or_default();
    let sentence: String = body.trim().chars().take(500).collect();
    let message = if sentence.is_empty() {
        format!("{what}: the gateway answered {status}")
    } else {
        format!("{what}: the gateway answered {status}: {sentence}")
    };
    let code = status.as_u16();
    if retry::http_transient(code) || (code == 409 && matches!(conflict, Conflict::Transient)) {
        Failure::Transient { message, retry_after }
    } else if code == 404 || code == 410 {
        Failure::Gone(message)
    } else {
        Failure::Permanent(message)
    }
}
