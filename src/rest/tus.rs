//! tus 1.0.0 (https://tus.io/protocols/resumable-upload) at `{p}/v1/uploads/` and
//! `{p}/v1/uploads/{id}`, with the extensions creation, creation-with-upload,
//! creation-defer-length, termination, expiration and checksum (README, "Resumable
//! uploads"). A thin translation: headers into pipeline calls (`pipeline/resumable.rs`),
//! their results and errors into tus answers. Browsers: CORS on every answer, preflight
//! on OPTIONS, and `X-HTTP-Method-Override` on a POST.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::digest::BASE64;
use crate::app::AppState;
use crate::domain::BodyStream;
use crate::error::{Error, Result};
use crate::pipeline::{Append, ChecksumAlgorithm, ChunkChecksum, UploadHeader, UploadInfo};
use base64::Engine;

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum";
const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// What a browser script may read of a tus answer.
const EXPOSE: &str = "Upload-Offset, Location, Upload-Length, Tus-Version, Tus-Resumable, Tus-Max-Size, \
     Tus-Extension, Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Expires, x-rh-insights-request-id";
/// What a browser script may send (CORS preflight).
const ALLOW_HEADERS: &str = "Tus-Resumable, Upload-Length, Upload-Defer-Length, Upload-Metadata, Upload-Offset, \
     Upload-Checksum, Upload-Concat, Repr-Digest, Content-Type, X-HTTP-Method-Override, x-rh-identity, \
     x-rh-insights-request-id";
const ALLOW_METHODS: &str = "POST, HEAD, PATCH, DELETE, OPTIONS";
const REQUEST_ID: &str = "x-rh-insights-request-id";

/// `{p}/v1/uploads/`: POST creates an upload, OPTIONS says what the server offers.
pub async fn collection(State(app): State<AppState>, prefix: &'static str, req: Request) -> Response {
    handle(&app, prefix, None, req).await
}

/// `{p}/v1/uploads/{id}`: HEAD, PATCH, DELETE, OPTIONS.
pub async fn resource(
    State(app): State<AppState>,
    prefix: &'static str,
    id: std::result::Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> Response {
    // An id that is not even UTF-8 names no upload; the pipeline says so.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    handle(&app, prefix, Some(id), req).await
}

async fn handle(app: &AppState, prefix: &'static str, id: Option<String>, req: Request) -> Response {
    let method = match method(&req) {
        Ok(m) => m,
        Err(e) => return tus(e.into_response()),
    };
    if method == Method::OPTIONS {
        return tus(options(app, req.headers()));
    }
    let allowed: &[Method] = if id.is_some() { &[Method::HEAD, Method::PATCH, Method::DELETE] } else { &[Method::POST] };
    if !allowed.contains(&method) {
        let allow = if id.is_some() { "HEAD, PATCH, DELETE, OPTIONS" } else { "POST, OPTIONS" };
        let text = format!("{method} is not a tus request here; this path answers {allow}");
        return tus((StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)], text).into_response());
    }
    if single(req.headers(), "Tus-Resumable").ok().flatten() != Some(VERSION) {
        let e = Error::PreconditionFailed(format!("send Tus-Resumable: {VERSION}, the tus version this server speaks"));
        let mut resp = e.into_response();
        resp.headers_mut().insert("tus-version", HeaderValue::from_static(VERSION));
        return tus(resp);
    }
    let result = match (id, method) {
        (None, _) => create(app, prefix, req).await,
        (Some(id), Method::HEAD) => head(app, &id, req.headers()).await,
        (Some(id), Method::PATCH) => patch(app, &id, req).await,
        (Some(id), _) => delete(app, &id, req.headers()).await,
    };
    tus(result.unwrap_or_else(IntoResponse::into_response))
}

/// The request's method; a POST with `X-HTTP-Method-Override` is that method.
fn method(req: &Request) -> Result<Method> {
    if req.method() != Method::POST {
        return Ok(req.method().clone());
    }
    match single(req.headers(), "X-HTTP-Method-Override")? {
        None => Ok(Method::POST),
        Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::bad_request(format!("X-HTTP-Method-Override: {m:?} is not a method"))),
    }
}

/// What every tus answer carries: the protocol version and CORS.
fn tus(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(VERSION));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
    resp
}

/// OPTIONS: what the server offers; a CORS preflight is answered too.
fn options(app: &AppState, headers: &HeaderMap) -> Response {
    let s = app.pipeline.settings();
    let max = s.valid_services.iter().map(|svc| s.limit_for(svc)).max().unwrap_or(s.default_limit);
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(VERSION));
    h.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
    h.insert("tus-max-size", HeaderValue::from(max));
    h.insert("tus-checksum-algorithm", HeaderValue::from_static(ChecksumAlgorithm::NAMES));
    if headers.contains_key(header::ORIGIN) && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    }
    resp
}

/// POST: creation (and creation-with-upload, creation-defer-length).
async fn create(app: &AppState, prefix: &str, req: Request) -> Result<Response> {
    let headers = req.headers();
    if headers.contains_key("upload-concat") {
        // A partial upload taken for a whole one would be announced as a payload.
        return Err(Error::bad_request("concatenation (Upload-Concat) is not offered: see Tus-Extension"));
    }
    let length = number(headers, "Upload-Length")?;
    let deferred = match single(headers, "Upload-Defer-Length")? {
        None => false,
        Some("1") => true,
        Some(v) => return Err(Error::bad_request(format!("Upload-Defer-Length: {v:?}; its only value is 1"))),
    };
    match (length, deferred) {
        (Some(_), true) => return Err(Error::bad_request("send Upload-Length or Upload-Defer-Length: 1, not both")),
        (None, false) => {
            return Err(Error::bad_request(
                "send Upload-Length, or Upload-Defer-Length: 1 when the length is not known yet",
            ))
        }
        _ => {}
    }
    let meta = Metadata::parse(single(headers, "Upload-Metadata")?.unwrap_or_default())?;
    let expected_sha256 = match (meta.sha256, super::digest::repr_digest_sha256(headers)?) {
        (Some(m), Some(d)) if !m.eq_ignore_ascii_case(&d) => {
            return Err(Error::bad_request("the sha256 in Upload-Metadata and the one in Repr-Digest differ"))
        }
        (m, d) => m.or(d),
    };
    let with_body = is_offset_stream(headers)?;
    let checksum = if with_body { upload_checksum(headers)? } else { None };
    let identity = super::header_once(headers, "x-rh-identity")?.map(str::to_string);
    let header = UploadHeader {
        content_type: meta.filetype.unwrap_or_default(),
        file_name: meta.filename,
        identity: identity.clone(),
        request_id: super::header_once(headers, REQUEST_ID)?.map(str::to_string),
        metadata: meta.metadata,
        expected_size: length,
        expected_sha256,
    };
    let created = app.pipeline.create_upload(header).await?;
    let location = HeaderValue::try_from(format!("{prefix}/v1/uploads/{}", created.id))
        .map_err(|e| Error::Internal(format!("the upload's location: {e}")))?;
    // creation-with-upload; and an empty upload is whole at once (a client has no bytes
    // to PATCH): it is finished here, as the request that completes it.
    let mut appended = None;
    if with_body || length == Some(0) {
        let bytes: BodyStream = if with_body { body(req) } else { Box::pin(futures_util::stream::empty()) };
        let append = Append { offset: 0, body: bytes, length: None, ends: None, checksum };
        match app.pipeline.append_upload(&created.id, identity.as_deref(), append).await {
            Ok(a) => appended = Some(a),
            Err(e) => {
                // The upload exists: the client can ask where it stands and go on.
                let mut resp = e.into_response();
                resp.headers_mut().insert(header::LOCATION, location);
                return Ok(resp);
            }
        }
    }
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    set(h, REQUEST_ID, &created.id);
    match &appended {
        Some(a) => progress(h, &a.upload),
        None => expires(h, &created),
    }
    Ok(resp)
}

/// HEAD: where the upload stands.
async fn head(app: &AppState, id: &str, headers: &HeaderMap) -> Result<Response> {
    let identity = super::header_once(headers, "x-rh-identity")?;
    let info = app.pipeline.upload_info(id, identity).await?;
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert("upload-offset", HeaderValue::from(info.offset));
    match info.length {
        Some(l) => {
            h.insert("upload-length", HeaderValue::from(l));
        }
        None => {
            h.insert("upload-defer-length", HeaderValue::from_static("1"));
        }
    }
    set(h, "upload-metadata", &Metadata::encode(&info));
    expires(h, &info);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// PATCH: the request's bytes at `Upload-Offset`.
async fn patch(app: &AppState, id: &str, req: Request) -> Result<Response> {
    let headers = req.headers();
    if !is_offset_stream(headers)? {
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("a tus PATCH carries Content-Type: {OFFSET_STREAM}"),
        )
            .into_response());
    }
    let offset = number(headers, "Upload-Offset")?
        .ok_or_else(|| Error::bad_request("send Upload-Offset: the offset the request's bytes go to"))?;
    let length = number(headers, "Upload-Length")?;
    let checksum = upload_checksum(headers)?;
    let identity = super::header_once(headers, "x-rh-identity")?.map(str::to_string);
    let append = Append { offset, body: body(req), length, ends: None, checksum };
    let appended = app.pipeline.append_upload(id, identity.as_deref(), append).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    progress(resp.headers_mut(), &appended.upload);
    Ok(resp)
}

/// DELETE: termination.
async fn delete(app: &AppState, id: &str, headers: &HeaderMap) -> Result<Response> {
    let identity = super::header_once(headers, "x-rh-identity")?;
    app.pipeline.cancel_upload(id, identity).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The request's body as it arrives (never collected; the pipeline applies the idle
/// timeout).
fn body(req: Request) -> BodyStream {
    Box::pin(req.into_body().into_data_stream().map_err(|e| Error::ClientGone(e.to_string())))
}

/// After an append: the offset reached, and the expiry or (finished) the request id.
fn progress(h: &mut HeaderMap, info: &UploadInfo) {
    h.insert("upload-offset", HeaderValue::from(info.offset));
    if info.finished {
        set(h, REQUEST_ID, &info.id);
    }
    expires(h, info);
}

/// `Upload-Expires` (an HTTP date) while the upload is unfinished.
fn expires(h: &mut HeaderMap, info: &UploadInfo) {
    if info.finished {
        return;
    }
    let when = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(info.expires_at_ms as i64);
    if let Some(when) = when {
        set(h, "upload-expires", &when.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// A tus header as text: sent twice, both values must agree.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let text = |v: &'a HeaderValue| v.to_str().map_err(|_| Error::bad_request(format!("{name} is not visible ASCII")));
    let Some(first) = values.next().map(text).transpose()? else { return Ok(None) };
    for v in values {
        if text(v)? != first {
            return Err(Error::bad_request(format!("{name} is sent twice with different values")));
        }
    }
    Ok(Some(first))
}

/// A non-negative integer header (`Upload-Length`, `Upload-Offset`).
fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>> {
    let Some(v) = single(headers, name)? else { return Ok(None) };
    let v = v.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::bad_request(format!("{name}: {v:.40?} is not a non-negative integer")));
    }
    v.parse().map(Some).map_err(|_| Error::bad_request(format!("{name}: {v} is too large")))
}

/// Whether the body is tus bytes (`Content-Type: application/offset+octet-stream`).
fn is_offset_stream(headers: &HeaderMap) -> Result<bool> {
    let ct = single(headers, "Content-Type")?.unwrap_or_default();
    let media = ct.split(';').next().unwrap_or_default().trim();
    Ok(media.eq_ignore_ascii_case(OFFSET_STREAM))
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn upload_checksum(headers: &HeaderMap) -> Result<Option<ChunkChecksum>> {
    let Some(v) = single(headers, "Upload-Checksum")? else { return Ok(None) };
    let (name, digest) = v
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::bad_request("Upload-Checksum: send <algorithm> <base64 digest>"))?;
    let algorithm = ChecksumAlgorithm::parse(name).ok_or_else(|| {
        Error::bad_request(format!(
            "Upload-Checksum: the algorithm {name:.20?} is not supported; use one of {}",
            ChecksumAlgorithm::NAMES
        ))
    })?;
    let digest = BASE64
        .decode(digest.trim())
        .map_err(|_| Error::bad_request("Upload-Checksum: the digest is not valid base64"))?;
    let want = match algorithm {
        ChecksumAlgorithm::Sha1 => 20,
        ChecksumAlgorithm::Sha256 => 32,
    };
    if digest.len() != want {
        return Err(Error::bad_request(format!("Upload-Checksum: a {name} digest is {want} bytes, not {}", digest.len())));
    }
    Ok(Some(ChunkChecksum { algorithm, digest }))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs. The gateway reads
/// `filetype`, `filename`, `metadata` (a JSON object) and `sha256` (hex); other keys
/// are ignored.
#[derive(Debug, Default, PartialEq)]
struct Metadata {
    filetype: Option<String>,
    filename: Option<String>,
    metadata: Option<Vec<u8>>,
    sha256: Option<String>,
}

impl Metadata {
    fn parse(raw: &str) -> Result<Metadata> {
        let mut m = Metadata::default();
        let mut seen = std::collections::BTreeSet::new();
        for pair in raw.split(',') {
            let pair = pair.trim_matches([' ', '\t']);
            if pair.is_empty() {
                continue;
            }
            let (key, value) = match pair.split_once(' ') {
                Some((k, v)) => (k, v.trim_matches([' ', '\t'])),
                None => (pair, ""),
            };
            if !seen.insert(key) {
                return Err(Error::bad_request(format!("Upload-Metadata: the key {key:.40?} is sent twice")));
            }
            let value = BASE64.decode(value).map_err(|_| {
                Error::bad_request(format!("Upload-Metadata: the value of {key:.40?} is not valid base64"))
            })?;
            let text = || {
                String::from_utf8(value.clone())
                    .map_err(|_| Error::bad_request(format!("Upload-Metadata: the value of {key:?} is not UTF-8")))
            };
            match key {
                "filetype" => m.filetype = Some(text()?),
                "filename" => m.filename = Some(text()?),
                "sha256" => m.sha256 = Some(text()?),
                "metadata" => m.metadata = Some(value),
                _ => {}
            }
        }
        Ok(m)
    }

    /// As the client sent it (the keys the gateway keeps).
    fn encode(info: &UploadInfo) -> String {
        let mut pairs = vec![format!("filetype {}", BASE64.encode(&info.content_type))];
        if let Some(n) = &info.file_name {
            pairs.push(format!("filename {}", BASE64.encode(n)));
        }
        if let Some(m) = &info.metadata {
            pairs.push(format!("metadata {}", BASE64.encode(m.to_string())));
        }
        if let Some(s) = &info.expected_sha256 {
            pairs.push(format!("sha256 {}", BASE64.encode(s)));
        }
        pairs.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn metadata_pairs_are_decoded_and_unknown_keys_ignored() {
        let raw = format!(
            "filetype {},filename {}, metadata {},sha256 {}, name {},empty",
            BASE64.encode("application/vnd.redhat.advisor.x+tgz"),
            BASE64.encode("a.tgz"),
            BASE64.encode(r#"{"a":1}"#),
            BASE64.encode("ab"),
            BASE64.encode("ignored")
        );
        let m = Metadata::parse(&raw).unwrap();
        assert_eq!(m.filetype.as_deref(), Some("application/vnd.redhat.advisor.x+tgz"));
        assert_eq!(m.filename.as_deref(), Some("a.tgz"));
        assert_eq!(m.metadata.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(m.sha256.as_deref(), Some("ab"));
        assert_eq!(Metadata::parse("").unwrap(), Metadata::default());
    }

    #[test]
    fn bad_metadata_is_refused() {
        for bad in ["filetype !!!", "filetype YQ==,filetype YQ==", "filename /w=="] {
            let e = Metadata::parse(bad).unwrap_err();
            assert_eq!(e.http_status(), 400, "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_are_non_negative_integers() {
        assert_eq!(number(&headers(&[("upload-offset", "0")]), "upload-offset").unwrap(), Some(0));
        assert_eq!(number(&headers(&[("upload-offset", "18446744073709551615")]), "upload-offset").unwrap(), Some(u64::MAX));
        assert_eq!(number(&headers(&[]), "upload-offset").unwrap(), None);
        for bad in ["-1", "1.5", "", "abc", "18446744073709551616", "99999999999999999999999", "+1", "0x10"] {
            assert!(number(&headers(&[("upload-offset", bad)]), "upload-offset").is_err(), "{bad}");
        }
        assert!(number(&headers(&[("upload-offset", "1"), ("upload-offset", "2")]), "upload-offset").is_err());
    }

    #[test]
    fn upload_checksum_names_a_supported_algorithm() {
        let sha1 = BASE64.encode([0u8; 20]);
        let c = upload_checksum(&headers(&[("upload-checksum", &format!("sha1 {sha1}"))])).unwrap().unwrap();
        assert_eq!((c.algorithm, c.digest.len()), (ChecksumAlgorithm::Sha1, 20));
        for bad in [format!("md5 {sha1}"), "sha1".into(), "sha1 !!".into(), format!("sha256 {sha1}")] {
            let e = upload_checksum(&headers(&[("upload-checksum", &bad)])).unwrap_err();
            assert_eq!(e.http_status(), 400, "{bad}");
        }
    }

    #[test]
    fn the_offset_stream_content_type() {
        assert!(is_offset_stream(&headers(&[("content-type", "application/offset+octet-stream")])).unwrap());
        assert!(is_offset_stream(&headers(&[("content-type", "Application/Offset+Octet-Stream; x=1")])).unwrap());
        assert!(!is_offset_stream(&headers(&[("content-type", "application/octet-stream")])).unwrap());
        assert!(!is_offset_stream(&headers(&[])).unwrap());
    }
}
