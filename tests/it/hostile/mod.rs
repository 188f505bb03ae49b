//! Hostile clients (issue #7, item 3): one table of malformed, slow, oversized and
//! tricky requests against one gateway. Each gets a precise 4xx (or a closed
//! connection where HTTP allows nothing better), never a panic, never a read of
//! everything it throws; after each, a good upload still gets its 202 and nothing
//! half-written is left in the data folder. `HOSTILE_PROBE=1` prints what each case
//! saw (with `--nocapture`), to write a new case's expectation from.
// The deprecated UploadHeader fields are still accepted; these tests send them.
#![allow(deprecated)]

mod grpc;
mod raw;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use crate::common::pb::UploadHeader;
use crate::common::*;
use grpc::{advisor, chunk, header, Metadata, Tail};
use raw::{Answer, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const UPLOAD: &str = "/api/ingress/v1/upload";
const B: &str = "hostile-b0undary";
const ADVISOR: &str = "application/vnd.redhat.advisor.hostile+tgz";
const MIB: u64 = 1024 * 1024;
/// What the flood cases would send in all; the gateway must answer long before.
const FLOOD: u64 = 64 * MIB;
/// The gateway's flags: small timeouts and limits so the table runs fast.
const FLAGS: &[&str] = &[
    "--header-timeout-secs",
    "1",
    "--body-idle-timeout-secs",
    "1",
    "--concurrency-limit",
    "4",
    "--max-length",
    "1MiB",
];
const CONCURRENCY_LIMIT: usize = 4;
/// What the multipart parser may hold that is not part data (the README's figure).
const UNPARSED: u64 = 4 * MIB;
/// What the request head and the HTTP layer's and multipart parser's read-ahead may
/// add to the limit they enforce.
const SOCKET_SLACK: u64 = 512 * 1024;
/// The table's size (the README says how many cases it runs).
const CASES: usize = 123;
/// Validator tokens the table's gateway accepts (its credentials file lists their
/// hashes): one for `advisor`, to be refused where it asks for another service.
const ADVISOR_TOKEN: &str = "ugw_hostile-table-token-for-advisor";
/// A track path for the `authorization` cases (the one REST route that reads it).
const TRACK: &str = "/api/ingress/v1/track/hostile-track-id";
/// A tus upload of 100 bytes the table makes before its cases (anonymous, like them);
/// no case writes to it, so it stays at offset 0.
const TUS_ID: &str = "hostile-tus-upload";
const TUS_LENGTH: u64 = 100;

// ---- what is sent ---------------------------------------------------------------

enum Send {
    /// Raw HTTP/1.x bytes, scripted.
    Raw(Vec<Step>),
    /// A gRPC upload with the generated client.
    Grpc(Vec<crate::common::pb::UploadRequest>, Tail),
    /// The same, every message gzip-compressed.
    GrpcGzip(Vec<crate::common::pb::UploadRequest>),
    /// Upload call messages as raw bytes, protobuf or not.
    GrpcRaw(Vec<Vec<u8>>),
    /// A gRPC upload with request metadata.
    GrpcWith(Vec<crate::common::pb::UploadRequest>, Metadata),
    /// A Subscribe to this service with request metadata (no upload: nothing to store).
    Subscribe(&'static str, Metadata),
    /// More uploads in flight than the concurrency limit, then one more request.
    OverConcurrencyLimit,
}

/// What the client saw.
enum Seen {
    Http { status: u16, head: String, body: String, after: Duration, sent: u64, meant: u64 },
    Closed { after: Duration, sent: u64, meant: u64 },
    Grpc { result: Result<String, tonic::Status>, after: Duration },
    Hung(String),
}

// ---- what the user must see -----------------------------------------------------

enum Expect {
    /// This status, and this text in the body.
    Status(u16, &'static str),
    /// This status with an empty body. The request never reached the gateway's code:
    /// hyper's HTTP/1 parser refused it (a malformed head or framing) or the router
    /// refused the method (405, with an Allow header), and neither writes a sentence.
    /// The status is the whole answer; an empty body is asserted, so a sentence added
    /// later turns the case into a `Status` one.
    Bare(u16),
    /// This status and text, answered before the client had sent a quarter of what it
    /// meant to, and before the gateway had read this many bytes from the socket (a
    /// flood is written only as fast as the gateway reads it, so what was written when
    /// the answer came is what it read: see `raw::Step::Flood`).
    Early(u16, &'static str, u64),
    /// The connection is closed (or answered with this status) within this time,
    /// before the client finished: HTTP allows nothing better for a client that
    /// never completes its request head. No text to check: a closed connection has
    /// none, and the header timeout's 408 comes from hyper with an empty body.
    Dropped(Duration, Option<u16>),
    /// This status, or a closed connection (oversized request heads). No text to
    /// check: hyper's parser answers these with an empty body, or closes.
    StatusOrClosed(u16),
    /// 202: the request was fine after all; it is stored under its request id.
    Accepted,
    /// 202, and the connection is closed after it (RFC 9112 §6.3: Transfer-Encoding
    /// overrides Content-Length, and the server must close: no request smuggling).
    AcceptedThenClosed,
    /// A gRPC status code, and this text in its message.
    Grpc(Code, &'static str),
    /// The gRPC upload is accepted.
    GrpcAccepted,
}

struct Case {
    name: &'static str,
    send: Send,
    expect: Expect,
    /// Uploads that the sender itself had accepted (the concurrency case).
    also: Vec<String>,
}

fn case(name: &'static str, send: Send, expect: Expect) -> Case {
    Case { name, send, expect, also: Vec::new() }
}

// ---- request builders -------------------------------------------------------------

/// A POST to the upload path: `head` holds the header lines after the request line
/// (each ending in CRLF), then the blank line, then `body`.
fn request(version: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {UPLOAD} {version}\r\nHost: gw\r\n{head}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

/// A multipart POST with a correct Content-Length and `extra` header lines.
fn post(extra: &str, body: &[u8]) -> Vec<u8> {
    request(
        "HTTP/1.1",
        &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {}\r\n{extra}", body.len()),
        body,
    )
}

/// The head of a multipart POST whose body is `len` bytes (sent separately).
fn post_head(len: u64) -> Vec<u8> {
    request("HTTP/1.1", &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {len}\r\n"), b"")
}

fn part(headers: &str, data: &[u8]) -> Vec<u8> {
    let mut p = format!("--{B}\r\n{headers}\r\n\r\n").into_bytes();
    p.extend_from_slice(data);
    p.extend_from_slice(b"\r\n");
    p
}

fn file_part_named(name: &str, filename: &str, ct: &str, data: &[u8]) -> Vec<u8> {
    part(
        &format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {ct}"),
        data,
    )
}

fn file_part(ct: &str, data: &[u8]) -> Vec<u8> {
    file_part_named("file", "archive.tgz", ct, data)
}

fn good_file() -> Vec<u8> {
    file_part(ADVISOR, b"a small good payload")
}

fn metadata_part(json: &[u8]) -> Vec<u8> {
    part("Content-Disposition: form-data; name=\"metadata\"; filename=\"metadata\"", json)
}

fn form(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = parts.concat();
    body.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    body
}

/// A good form with extra request header lines.
fn good_post(extra: &str) -> Vec<u8> {
    post(extra, &form(&[good_file()]))
}

fn once(bytes: Vec<u8>) -> Send {
    Send::Raw(vec![Step::Write(bytes)])
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = "{\"a\":".repeat(depth).into_bytes();
    v.extend_from_slice(b"1");
    v.extend(std::iter::repeat_n(b'}', depth));
    v
}

/// A GET of `TRACK` with extra request header lines.
fn track(extra: &str) -> Vec<u8> {
    format!("GET {TRACK} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n").into_bytes()
}

/// A tus request (`Tus-Resumable: 1.0.0` unless `head` is for a case without it).
fn tus_request(method: &str, path: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n{head}\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// A PATCH of ten bytes to the table's tus upload with these header lines.
fn tus_patch(head: &str) -> Vec<u8> {
    tus_request("PATCH", &format!("/api/ingress/v1/uploads/{TUS_ID}"), &format!("Tus-Resumable: 1.0.0\r\n{head}"), b"0123456789")
}

/// A tus creation with these header lines (and no body).
fn tus_create(head: &str) -> Vec<u8> {
    tus_request("POST", "/api/ingress/v1/uploads/", &format!("Tus-Resumable: 1.0.0\r\n{head}"), b"")
}

const OFFSET_STREAM: &str = "Content-Type: application/offset+octet-stream\r\n";

/// The advisor validator's token as `authorization` metadata.
fn bearer(token: &str) -> Metadata {
    vec![("authorization", format!("Bearer {token}"))]
}

fn encoded(m: &crate::common::pb::UploadRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}

// ---- the table --------------------------------------------------------------------

fn cases() -> Vec<Case> {
    use Expect::*;
    let trickle_gap = Duration::from_millis(100);
    let mut v = vec![
        // Slow clients.
        case(
            "slowloris: request head trickled byte by byte",
            Send::Raw(vec![Step::Trickle(good_post(""), trickle_gap)]),
            Dropped(Duration::from_secs(4), Some(408)),
        ),
        case("connects and sends nothing", Send::Raw(vec![]), Dropped(Duration::from_secs(4), Some(408))),
        case(
            "half a request line, then silence",
            Send::Raw(vec![Step::Write(b"POST /api/ingr".to_vec())]),
            Dropped(Duration::from_secs(4), Some(408)),
        ),
        case(
            "one byte, then silence",
            Send::Raw(vec![Step::Write(b"P".to_vec())]),
            Dropped(Duration::from_secs(4), Some(408)),
        ),
        case(
            "part of the HTTP/2 preface, then silence",
            Send::Raw(vec![Step::Write(b"PRI * HTTP/2.0\r\n".to_vec())]),
            Dropped(Duration::from_secs(4), None),
        ),
        case(
            "the whole HTTP/2 preface, then silence",
            Send::Raw(vec![Step::Write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec())]),
            Dropped(Duration::from_secs(6), None),
        ),
        case(
            "body stalls before the first part",
            Send::Raw(vec![Step::Write(post_head(10_000))]),
            Status(408, "stalled"),
        ),
        case(
            "body stalls inside the file part",
            Send::Raw(vec![Step::Write(post_head(10_000)), Step::Write(file_part(ADVISOR, &[b'x'; 100])[..200].to_vec())]),
            Status(408, "stalled"),
        ),
        case(
            "body stalls inside a part header",
            Send::Raw(vec![
                Step::Write(post_head(10_000)),
                Step::Write(format!("--{B}\r\nContent-Disposition: form-da").into_bytes()),
            ]),
            Status(408, "stalled"),
        ),
        case(
            "body stalls inside the metadata part",
            Send::Raw(vec![Step::Write(post_head(10_000)), Step::Write(metadata_part(b"{\"a\":1}")[..100].to_vec())]),
            Status(408, "stalled"),
        ),
        case(
            "chunked body stalls after its first chunk",
            Send::Raw(vec![Step::Write({
                let p = good_file();
                let mut r = request(
                    "HTTP/1.1",
                    &format!("Content-Type: multipart/form-data; boundary={B}\r\nTransfer-Encoding: chunked\r\n"),
                    b"",
                );
                r.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                r.extend_from_slice(&p);
                r.extend_from_slice(b"\r\n");
                r
            })]),
            Status(408, "stalled"),
        ),
        // Oversized and malformed request heads.
        case(
            "enormous header block (100 KiB of headers)",
            once(good_post(&format!("x-junk: {}\r\n", "j".repeat(100 * 1024)))),
            StatusOrClosed(431),
        ),
        case(
            "an identity header of 1 MiB",
            once(good_post(&format!("x-rh-identity: {}\r\n", "A".repeat(MIB as usize)))),
            StatusOrClosed(431),
        ),
        case(
            "too many headers (500 small ones)",
            once(good_post(&(0..500).map(|i| format!("x-h{i}: v\r\n")).collect::<String>())),
            StatusOrClosed(431),
        ),
        case(
            "a request line of 100 KiB",
            once(format!("GET /api/ingress/v1/track/{} HTTP/1.1\r\nHost: gw\r\n\r\n", "a".repeat(100 * 1024)).into_bytes()),
            StatusOrClosed(431),
        ),
        case("a header line without a colon", once(good_post("this is not a header\r\n")), Bare(400)),
        case("a header value with a NUL byte", once(good_post("x-rh-insights-request-id: a\0b\r\n")), Bare(400)),
        case("binary garbage instead of HTTP", once((0u8..=255).rev().cycle().take(4096).collect()), Bare(400)),
        case(
            "an HTTP/0.9 style request",
            once(b"GET /api/ingress/v1/upload\r\n\r\n".to_vec()),
            StatusOrClosed(400),
        ),
        // Framing.
        case(
            "Content-Length is not a number",
            once(request("HTTP/1.1", &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: lots\r\n"), &form(&[good_file()]))),
            Bare(400),
        ),
        case(
            "Content-Length is negative",
            once(request("HTTP/1.1", &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: -5\r\n"), &form(&[good_file()]))),
            Bare(400),
        ),
        case(
            "two different Content-Lengths",
            once({
                let body = form(&[good_file()]);
                request(
                    "HTTP/1.1",
                    &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {}\r\nContent-Length: 7\r\n", body.len()),
                    &body,
                )
            }),
            Bare(400),
        ),
        case(
            "Content-Length together with chunked Transfer-Encoding",
            once({
                let body = form(&[good_file()]);
                let mut chunked = format!("{:x}\r\n", body.len()).into_bytes();
                chunked.extend_from_slice(&body);
                chunked.extend_from_slice(b"\r\n0\r\n\r\n");
                request(
                    "HTTP/1.1",
                    &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
                    &chunked,
                )
            }),
            AcceptedThenClosed,
        ),
        case(
            "a chunk size that is not hex",
            once(request(
                "HTTP/1.1",
                &format!("Content-Type: multipart/form-data; boundary={B}\r\nTransfer-Encoding: chunked\r\n"),
                b"zz\r\nhello\r\n0\r\n\r\n",
            )),
            Status(400, "error reading a body"),
        ),
        case(
            "a chunk size of 2^64-1",
            once(request(
                "HTTP/1.1",
                &format!("Content-Type: multipart/form-data; boundary={B}\r\nTransfer-Encoding: chunked\r\n"),
                b"FFFFFFFFFFFFFFFF\r\nhello",
            )),
            Status(408, "stalled"),
        ),
        case(
            "Content-Length shorter than the form",
            once(request("HTTP/1.1", &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: 10\r\n"), &form(&[good_file()]))),
            Status(400, "multipart"),
        ),
        case("an unknown path", once(b"GET /etc/passwd HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()), Status(404, "no such path")),
        case("an unknown method", once(b"BREW /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n".to_vec()), Bare(405)),
        case("PUT on the upload path", once(b"PUT /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n".to_vec()), Bare(405)),
        case("a method with invalid characters", once(b"PO(ST /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()), Bare(400)),
        case(
            "an upload over HTTP/1.0",
            once({
                let body = form(&[good_file()]);
                request("HTTP/1.0", &format!("Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {}\r\n", body.len()), &body)
            }),
            Accepted,
        ),
        case(
            "HTTP/1.0 with chunked Transfer-Encoding",
            once(request(
                "HTTP/1.0",
                &format!("Content-Type: multipart/form-data; boundary={B}\r\nTransfer-Encoding: chunked\r\n"),
                b"0\r\n\r\n",
            )),
            Bare(400),
        ),
        case("an unknown HTTP version", once(request("HTTP/3.7", "Content-Length: 0\r\n", b"")), Bare(400)),
        case(
            "dot segments in the URL path",
            once(b"POST /api/ingress/v1/../../v1/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n".to_vec()),
            Status(404, "no such path"),
        ),
        case(
            "a track id with encoded path tricks",
            once(b"GET /api/ingress/v1/track/..%2F..%2F.signing-key HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()),
            Status(404, "no payload"),
        ),
        case(
            "a track id that is not UTF-8",
            once(b"GET /api/ingress/v1/track/%FF%FE HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()),
            Status(404, "no payload"),
        ),
        case(
            "a download of the signing key by path tricks",
            once(b"GET /download/quarantine/..%2F.signing-key?expires=99999999999&signature=00 HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()),
            Status(404, "no stored payload is named"),
        ),
        case(
            "a download from a bucket outside the data folder",
            once(b"GET /download/..%2F..%2Fetc/passwd?expires=99999999999&signature=00 HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec()),
            Status(404, "bucket"),
        ),
        // The multipart form.
        case(
            "multipart content type without a boundary",
            once(request("HTTP/1.1", "Content-Type: multipart/form-data\r\nContent-Length: 4\r\n", b"abcd")),
            Status(400, "boundary"),
        ),
        case(
            "a boundary longer than 70 characters",
            once({
                let long = "b".repeat(200);
                let body = format!("--{long}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nContent-Type: {ADVISOR}\r\n\r\nx\r\n--{long}--\r\n");
                request("HTTP/1.1", &format!("Content-Type: multipart/form-data; boundary={long}\r\nContent-Length: {}\r\n", body.len()), body.as_bytes())
            }),
            Status(400, "boundary"),
        ),
        case(
            "unicode in the request's content type",
            once(request("HTTP/1.1", "Content-Type: multipart/form-data; boundary=ünïcødé\r\nContent-Length: 0\r\n", b"")),
            Status(400, "content-type"),
        ),
        case(
            "upper-case MULTIPART/FORM-DATA",
            once({
                let body = form(&[good_file()]);
                request("HTTP/1.1", &format!("Content-Type: MULTIPART/FORM-DATA; boundary={B}\r\nContent-Length: {}\r\n", body.len()), &body)
            }),
            Accepted,
        ),
        case(
            "not a form at all (JSON)",
            once(request("HTTP/1.1", "Content-Type: application/json\r\nContent-Length: 2\r\n", b"{}")),
            Status(415, "Upload field not found"),
        ),
        case("no content type", once(request("HTTP/1.1", "Content-Length: 0\r\n", b"")), Status(415, "Upload field not found")),
        case("an empty body", once(post("", b"")), Status(400, "multipart")),
        case(
            "a form without a file part",
            once(post("", &form(&[metadata_part(b"{}")]))),
            Status(415, "Upload field not found"),
        ),
        case(
            "a boundary never closed",
            once(post("", &good_file())),
            Status(400, "multipart"),
        ),
        case(
            "a boundary never closed, inside the file's bytes",
            once(post("", &file_part(ADVISOR, &[b'q'; 5000])[..3000])),
            Status(400, "multipart"),
        ),
        case(
            "a part header without an end",
            Send::Raw(vec![
                Step::Write(post_head(FLOOD)),
                Step::Write(format!("--{B}\r\nContent-Disposition: form-data; name=\"file\"; x=\"").into_bytes()),
                Step::Flood(b'h', FLOOD - 64),
            ]),
            Early(400, "more than 4194304 bytes without part data", UNPARSED + SOCKET_SLACK),
        ),
        case(
            "a preamble of 64 MiB",
            Send::Raw(vec![Step::Write(post_head(FLOOD)), Step::Flood(b'p', FLOOD)]),
            Early(400, "more than 4194304 bytes without part data", UNPARSED + SOCKET_SLACK),
        ),
        case(
            "thousands of multipart parts",
            once(post("", &form(&std::iter::repeat_n(part("Content-Disposition: form-data; name=\"p\"", b"x"), 5000).collect::<Vec<_>>()))),
            Status(400, "parts"),
        ),
        case(
            "thousands of parts after a good file",
            once(post("", &form(&std::iter::once(good_file()).chain(std::iter::repeat_n(part("Content-Disposition: form-data; name=\"p\"", b""), 5000)).collect::<Vec<_>>()))),
            Status(400, "parts"),
        ),
        case(
            "a part with 100 headers",
            once(post("", &form(&[part(
                &format!("Content-Disposition: form-data; name=\"file\"\r\nContent-Type: {ADVISOR}{}", (0..100).map(|i| format!("\r\nx-{i}: v")).collect::<String>()),
                b"x",
            )]))),
            Status(400, "multipart"),
        ),
        case(
            // Contract §2: other parts are ignored whatever their size (read through,
            // not kept): past the size limit and the parser's 4 MiB of non-part data.
            "an unused part of 8 MiB before the file",
            once(post("", &form(&[part("Content-Disposition: form-data; name=\"junk\"", &[b'j'; 8 * MIB as usize]), good_file()]))),
            Accepted,
        ),
        case(
            "a file over the size limit",
            Send::Raw(vec![
                Step::Write(post_head(FLOOD)),
                Step::Write(file_part(ADVISOR, b"")[..file_part(ADVISOR, b"").len() - 2].to_vec()),
                Step::Flood(b'f', FLOOD - 300),
            ]),
            Early(413, "Should not exceed 1048576 bytes", MIB + SOCKET_SLACK),
        ),
        case(
            "a part name that is not UTF-8",
            once(post("", &form(&[part(&format!("Content-Disposition: form-data; name=\"fi\u{0}le\"\r\nContent-Type: {ADVISOR}"), b"x")]).iter().map(|&b| if b == 0 { 0xff } else { b }).collect::<Vec<_>>())),
            Status(415, "Upload field not found"),
        ),
        case(
            "a file name that is not UTF-8",
            once(post("", &form(&[file_part_named("file", "a\u{0}.tgz", ADVISOR, b"x")]).iter().map(|&b| if b == 0 { 0xfe } else { b }).collect::<Vec<_>>())),
            Accepted,
        ),
        case(
            "a part content type that is not UTF-8",
            once(post("", &form(&[file_part("application/vnd.redhat.advisor.\u{0}+tgz", b"x")]).iter().map(|&b| if b == 0 { 0xff } else { b }).collect::<Vec<_>>())),
            Status(415, "Unsupported Media Type"),
        ),
        case(
            "unicode in the part's content type",
            once(post("", &form(&[file_part("application/vnd.redhat.advisör.x+tgz", b"x")]))),
            Status(415, "Unsupported Media Type"),
        ),
        case(
            "an upper-case part content type",
            once(post("", &form(&[file_part("APPLICATION/VND.REDHAT.ADVISOR.X+TGZ", b"x")]))),
            Status(415, "Unsupported Media Type"),
        ),
        case(
            "a service that is not valid",
            once(post("", &form(&[file_part("application/vnd.redhat.evil.x+tgz", b"x")]))),
            Status(415, "Unsupported MIME type"),
        ),
        case(
            "a file name with ../",
            once(post("", &form(&[file_part_named("file", "../../../escaped-by-name", ADVISOR, b"x")]))),
            Accepted,
        ),
        case(
            "a file name with %2e%2e",
            once(post("", &form(&[file_part_named("file", "%2e%2e%2f%2e%2e%2fescaped-by-name", ADVISOR, b"x")]))),
            Accepted,
        ),
        case(
            "a file name with a NUL byte",
            once(post("", &form(&[file_part_named("file", "a\0/escaped-by-name", ADVISOR, b"x")]))),
            Status(400, "multipart"),
        ),
        // Identity and request id headers.
        case("a request id with ../", once(good_post("x-rh-insights-request-id: ../../escaped-by-id\r\n")), Status(400, "request id")),
        case("a request id with %2e%2e", once(good_post("x-rh-insights-request-id: %2e%2e%2fescaped-by-id\r\n")), Status(400, "request id")),
        case("a request id of 65 characters", once(good_post(&format!("x-rh-insights-request-id: {}\r\n", "a".repeat(65)))), Status(400, "request id")),
        case("a request id starting with a dot", once(good_post("x-rh-insights-request-id: .meta\r\n")), Status(400, "request id")),
        case("a request id that is not UTF-8", once(good_post("x-rh-insights-request-id: caf\u{e9}\r\n")), Status(400, "x-rh-insights-request-id")),
        case("an identity that is not base64", once(good_post("x-rh-identity: not*base64!\r\n")), Status(400, "base64")),
        case(
            "an identity whose JSON is not an object",
            once(good_post(&format!("x-rh-identity: {}\r\n", b64("[1,2,3]")))),
            Status(400, "identity"),
        ),
        case(
            "an identity that is not JSON",
            once(good_post(&format!("x-rh-identity: {}\r\n", b64("\u{1}\u{2}binary")))),
            Status(400, "identity"),
        ),
        case(
            "an identity with org_id an array",
            once(good_post(&format!("x-rh-identity: {}\r\n", b64(r#"{"identity":{"org_id":["1"]}}"#)))),
            Status(400, "org_id"),
        ),
        case(
            "an identity nested 1,500 deep (as deep as fits its 16 KiB)",
            once(good_post(&format!("x-rh-identity: {}\r\n", base64::engine::general_purpose::STANDARD.encode(nested(1_500))))),
            Status(400, "identity"),
        ),
        case(
            "an identity just over its 16 KiB limit",
            once(good_post(&format!("x-rh-identity: {}\r\n", "A".repeat(16 * 1024 + 4)))),
            Status(400, "at most"),
        ),
        case(
            "an identity whose JSON holds invalid UTF-8 in a field it ignores",
            once(good_post(&format!(
                "x-rh-identity: {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(b"{\"identity\":{\"org_id\":\"1\",\"x\":{\"\xff\xff\":1}}}")
            ))),
            Status(400, "UTF-8"),
        ),
        case(
            "an identity that is an array holding the identity",
            once(good_post(&format!("x-rh-identity: {}\r\n", b64(r#"[{"org_id":"5"}]"#)))),
            Status(400, "identity"),
        ),
        case("an identity that is not UTF-8", once(good_post("x-rh-identity: \u{ff}\u{fe}\r\n")), Status(400, "x-rh-identity")),
        // Metadata.
        case("metadata nested 10,000 deep", once(post("", &form(&[good_file(), metadata_part(&nested(10_000))]))), Status(400, "metadata")),
        case(
            "metadata larger than its limit",
            once(post("", &form(&[good_file(), metadata_part(format!("{{\"a\":\"{}\"}}", "m".repeat(70 * 1024)).as_bytes())]))),
            Status(400, "larger than"),
        ),
        case("metadata that is not an object", once(post("", &form(&[good_file(), metadata_part(b"[1,2]")]))), Status(400, "metadata")),
        case("metadata that is not JSON", once(post("", &form(&[good_file(), metadata_part(b"{nope")]))), Status(400, "metadata")),
        case(
            "metadata that is not UTF-8",
            once(post("", &form(&[good_file(), metadata_part(b"{\"a\":\"\xff\xfe\"}")]))),
            Status(400, "metadata"),
        ),
        // gRPC.
        case(
            "gRPC: a chunk over the 4 MiB message limit",
            Send::Grpc(vec![header(advisor()), chunk(vec![b'c'; 5 * MIB as usize])], Tail::End),
            Grpc(Code::ResourceExhausted, "message"),
        ),
        case(
            "gRPC: a header message over the 4 MiB message limit",
            Send::Grpc(vec![header(UploadHeader { metadata_json: "m".repeat(5 * MIB as usize), ..advisor() })], Tail::End),
            Grpc(Code::ResourceExhausted, "message"),
        ),
        case(
            "gRPC: a gzip bomb (64 MiB of zeros in one message)",
            Send::GrpcGzip(vec![header(advisor()), chunk(vec![0; 64 * MIB as usize])]),
            Grpc(Code::ResourceExhausted, "exceeded while decompressing"),
        ),
        case(
            "gRPC: a stream that stalls after its header",
            Send::Grpc(vec![header(advisor()), chunk(b"some".to_vec())], Tail::Stall),
            Grpc(Code::DeadlineExceeded, "stalled"),
        ),
        case(
            "gRPC: a stream that never sends its header",
            Send::Grpc(vec![], Tail::Stall),
            Grpc(Code::DeadlineExceeded, "stalled"),
        ),
        case(
            "gRPC: a stream that never ends",
            Send::Grpc(vec![header(advisor())], Tail::Endless),
            Grpc(Code::ResourceExhausted, "Should not exceed 1048576 bytes"),
        ),
        case(
            "gRPC: a header message that is not protobuf",
            Send::GrpcRaw(vec![vec![0xff; 16]]),
            Grpc(Code::InvalidArgument, "failed to decode Protobuf message"),
        ),
        case(
            "gRPC: a chunk message that is not protobuf",
            Send::GrpcRaw(vec![encoded(&header(advisor())), vec![0xff; 16]]),
            Grpc(Code::InvalidArgument, "failed to decode Protobuf message"),
        ),
        case(
            "gRPC: a request id with ../",
            Send::Grpc(vec![header(UploadHeader { request_id: "../../escaped".into(), ..advisor() }), chunk(b"x".to_vec())], Tail::End),
            Grpc(Code::InvalidArgument, "request id"),
        ),
        case(
            "gRPC: a request id with a NUL byte",
            Send::Grpc(vec![header(UploadHeader { request_id: "a\0b".into(), ..advisor() }), chunk(b"x".to_vec())], Tail::End),
            Grpc(Code::InvalidArgument, "request id"),
        ),
        case(
            "gRPC: metadata nested 10,000 deep",
            Send::Grpc(
                vec![header(UploadHeader { metadata_json: String::from_utf8(nested(10_000)).unwrap(), ..advisor() }), chunk(b"x".to_vec())],
                Tail::End,
            ),
            Grpc(Code::InvalidArgument, "metadata"),
        ),
        case(
            "gRPC: an identity of 1 MiB",
            Send::Grpc(vec![header(UploadHeader { identity: "A".repeat(MIB as usize), ..advisor() }), chunk(b"x".to_vec())], Tail::End),
            Grpc(Code::InvalidArgument, "at most"),
        ),
        case(
            "gRPC: an expected size of 2^64-1",
            Send::Grpc(vec![header(UploadHeader { expected_size: u64::MAX, ..advisor() }), chunk(b"x".to_vec())], Tail::End),
            Grpc(Code::ResourceExhausted, "Should not exceed"),
        ),
        case(
            "gRPC: a file name with ../ and NUL",
            Send::Grpc(vec![header(UploadHeader { file_name: "../\0/escaped-by-name".into(), ..advisor() }), chunk(b"x".to_vec())], Tail::End),
            GrpcAccepted,
        ),
        // Trust: identity only from the request's metadata, credentials only from
        // `authorization`, each for its own services, and of a sane size.
        case(
            "gRPC: an UploadHeader.identity that differs from the x-rh-identity metadata",
            Send::GrpcWith(
                vec![header(UploadHeader { identity: identity("0002", "orgB"), ..advisor() }), chunk(b"x".to_vec())],
                vec![("x-rh-identity", identity("0001", "orgA"))],
            ),
            Grpc(Code::PermissionDenied, "x-rh-identity"),
        ),
        case(
            "gRPC: two x-rh-identity metadata values naming different orgs",
            Send::GrpcWith(
                vec![header(advisor()), chunk(b"x".to_vec())],
                vec![("x-rh-identity", identity("0001", "orgA")), ("x-rh-identity", identity("0002", "orgB"))],
            ),
            Grpc(Code::PermissionDenied, "x-rh-identity metadata is sent twice with different values"),
        ),
        case(
            "two x-rh-identity headers naming different orgs",
            once(good_post(&format!("x-rh-identity: {}\r\nx-rh-identity: {}\r\n", identity("0001", "orgA"), identity("0002", "orgB")))),
            Status(403, "x-rh-identity header is sent twice with different values"),
        ),
        case(
            // A proxy that repeats the identity it was given changes nothing.
            "the same x-rh-identity header twice",
            once(good_post(&format!("x-rh-identity: {0}\r\nx-rh-identity: {0}\r\n", identity("0001", "orgA")))),
            Accepted,
        ),
        case(
            "two x-rh-insights-request-id headers that differ",
            once(good_post("x-rh-insights-request-id: first-id-0001\r\nx-rh-insights-request-id: second-id-0002\r\n")),
            Status(403, "x-rh-insights-request-id header is sent twice with different values"),
        ),
        case(
            "gRPC: Subscribe with the validator token in a `token` header",
            Send::Subscribe("advisor", vec![("token", ADVISOR_TOKEN.into())]),
            Grpc(Code::Unauthenticated, "authorization: Bearer"),
        ),
        case(
            // Refused as the malformed identity it is, before any verb is looked at.
            "gRPC: Subscribe with the validator token as x-rh-identity",
            Send::Subscribe("advisor", vec![("x-rh-identity", format!("Bearer {ADVISOR_TOKEN}"))]),
            Grpc(Code::InvalidArgument, "x-rh-identity is not valid base64"),
        ),
        case(
            "gRPC: Subscribe with the token but no Bearer scheme",
            Send::Subscribe("advisor", vec![("authorization", ADVISOR_TOKEN.into())]),
            Grpc(Code::Unauthenticated, "Bearer <token>"),
        ),
        case(
            "gRPC: Subscribe to compliance with an advisor token",
            Send::Subscribe("compliance", bearer(ADVISOR_TOKEN)),
            Grpc(Code::PermissionDenied, "not for \"compliance\""),
        ),
        case(
            "gRPC: Subscribe with an authorization of 8 KiB",
            Send::Subscribe("advisor", bearer(&"x".repeat(8 * 1024))),
            Grpc(Code::Unauthenticated, "a bearer token is far shorter"),
        ),
        case(
            "gRPC: Subscribe with an authorization of 64 KiB",
            // Over the 64 KiB of headers HTTP/2 takes: h2 answers 431 before the
            // gateway's code runs, and tonic says so (no grpc-status of its own).
            Send::Subscribe("advisor", bearer(&"x".repeat(64 * 1024))),
            Grpc(Code::Unknown, "HTTP status code 431"),
        ),
        case(
            "track with an authorization of 8 KiB",
            once(track(&format!("authorization: Bearer {}\r\n", "x".repeat(8 * 1024)))),
            Status(401, "a bearer token is far shorter"),
        ),
        case(
            "track with an authorization of 64 KiB",
            once(track(&format!("authorization: Bearer {}\r\n", "x".repeat(64 * 1024)))),
            StatusOrClosed(431),
        ),
        case(
            "an upload with an authorization of 64 KiB",
            once(good_post(&format!("authorization: Bearer {}\r\n", "x".repeat(64 * 1024)))),
            StatusOrClosed(431),
        ),
        // tus (`rest/tus.rs`): malformed offsets, lengths, metadata and content types.
        case(
            "tus: PATCH with a negative Upload-Offset",
            once(tus_patch(&format!("{OFFSET_STREAM}Upload-Offset: -1\r\n"))),
            Status(400, "Upload-Offset: \"-1\" is not a non-negative integer"),
        ),
        case(
            "tus: PATCH with an Upload-Offset past 64 bits",
            once(tus_patch(&format!("{OFFSET_STREAM}Upload-Offset: 99999999999999999999999\r\n"))),
            Status(400, "Upload-Offset"),
        ),
        case(
            "tus: PATCH at the largest 64-bit offset",
            once(tus_patch(&format!("{OFFSET_STREAM}Upload-Offset: 18446744073709551615\r\n"))),
            Status(409, "the upload stands at offset 0"),
        ),
        case(
            "tus: PATCH without Content-Type application/offset+octet-stream",
            once(tus_patch("Content-Type: application/octet-stream\r\nUpload-Offset: 0\r\n")),
            Status(415, "application/offset+octet-stream"),
        ),
        case(
            "tus: PATCH whose Upload-Length disagrees with the creation's",
            once(tus_patch(&format!("{OFFSET_STREAM}Upload-Offset: 0\r\nUpload-Length: 50\r\n"))),
            Status(400, "the upload's length is 100; this request says 50"),
        ),
        case(
            "tus: PATCH with an Upload-Checksum algorithm not offered",
            once(tus_patch(&format!("{OFFSET_STREAM}Upload-Offset: 0\r\nUpload-Checksum: md5 {}\r\n", b64("0123456789abcdef")))),
            Status(400, "is not supported; use one of sha1,sha256"),
        ),
        case(
            "tus: creation with bad base64 in Upload-Metadata",
            once(tus_create("Upload-Length: 10\r\nUpload-Metadata: filetype !!not-base64!!\r\n")),
            Status(400, "the value of \"filetype\" is not valid base64"),
        ),
        case(
            "tus: creation with a non-numeric Upload-Length",
            once(tus_create(&format!("Upload-Length: ten\r\nUpload-Metadata: filetype {}\r\n", b64(ADVISOR)))),
            Status(400, "Upload-Length: \"ten\" is not a non-negative integer"),
        ),
        case(
            "tus: creation with both Upload-Length and Upload-Defer-Length",
            once(tus_create(&format!("Upload-Length: 10\r\nUpload-Defer-Length: 1\r\nUpload-Metadata: filetype {}\r\n", b64(ADVISOR)))),
            Status(400, "not both"),
        ),
        case(
            "tus: creation without Tus-Resumable",
            once(tus_request("POST", "/api/ingress/v1/uploads/", &format!("Upload-Length: 10\r\nUpload-Metadata: filetype {}\r\n", b64(ADVISOR)), b"")),
            Status(412, "Tus-Resumable: 1.0.0"),
        ),
        // Load.
        case(
            "more uploads at once than the concurrency limit",
            Send::OverConcurrencyLimit,
            Status(503, "concurrency"),
        ),
    ];
    // A request id with a NUL would be caught by HTTP itself; make sure a clean but
    // reserved-looking id is not taken as a path either.
    v.push(case(
        "a request id naming the meta folder's file",
        once(good_post("x-rh-insights-request-id: x.json\r\n")),
        Accepted,
    ));
    v
}

// ---- running a case ----------------------------------------------------------------

const PATIENCE: Duration = Duration::from_secs(15);

async fn send(t: &TestApp, send: &Send, also: &mut Vec<String>) -> Seen {
    let started = Instant::now();
    match send {
        Send::Raw(script) => {
            let x = tokio::spawn(raw::exchange(t.app.addr(), script.clone(), PATIENCE)).await;
            match x {
                Ok(x) => match x.answer {
                    Answer::Http { status, head, body } => Seen::Http {
                        status,
                        head,
                        body,
                        after: x.after,
                        sent: x.sent_when_answered,
                        meant: x.script_len,
                    },
                    Answer::Closed => Seen::Closed { after: x.after, sent: x.sent_when_answered, meant: x.script_len },
                    Answer::Hung => Seen::Hung(format!(
                        "no answer and no close within {PATIENCE:?} ({} of {} bytes sent)",
                        x.sent_when_answered, x.script_len
                    )),
                },
                Err(e) => Seen::Hung(format!("{e}")),
            }
        }
        Send::Grpc(msgs, tail) => grpc_seen(grpc::upload(&t.base, msgs.clone(), *tail, false), started).await,
        Send::GrpcGzip(msgs) => grpc_seen(grpc::upload(&t.base, msgs.clone(), Tail::End, true), started).await,
        Send::GrpcRaw(msgs) => grpc_seen(grpc::upload_raw(&t.base, msgs.clone()), started).await,
        Send::GrpcWith(msgs, metadata) => grpc_seen(grpc::upload_with(&t.base, msgs.clone(), metadata), started).await,
        Send::Subscribe(service, metadata) => grpc_seen(grpc::subscribe(&t.base, service, metadata), started).await,
        Send::OverConcurrencyLimit => over_concurrency_limit(t, also).await,
    }
}

async fn grpc_seen(call: impl std::future::Future<Output = Result<String, tonic::Status>>, started: Instant) -> Seen {
    match tokio::time::timeout(PATIENCE, call).await {
        Ok(result) => Seen::Grpc { result, after: started.elapsed() },
        Err(_) => Seen::Hung(format!("no gRPC answer within {PATIENCE:?}")),
    }
}

/// Holds `CONCURRENCY_LIMIT` uploads in flight (a byte every 200 ms, so none stalls),
/// sends one more request, then lets the held uploads finish: they must all be
/// accepted.
async fn over_concurrency_limit(t: &TestApp, also: &mut Vec<String>) -> Seen {
    let (finish, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut holders = Vec::new();
    for _ in 0..CONCURRENCY_LIMIT {
        let mut finish = finish.subscribe();
        let addr = t.app.addr();
        holders.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = request(
                "HTTP/1.1",
                &format!("Content-Type: multipart/form-data; boundary={B}\r\nTransfer-Encoding: chunked\r\n"),
                b"",
            );
            s.write_all(&head).await.unwrap();
            let open = file_part(ADVISOR, b"");
            let open = &open[..open.len() - 2];
            s.write_all(format!("{:x}\r\n", open.len()).as_bytes()).await.unwrap();
            s.write_all(open).await.unwrap();
            s.write_all(b"\r\n").await.unwrap();
            loop {
                tokio::select! {
                    _ = finish.recv() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => s.write_all(b"1\r\nz\r\n").await.unwrap(),
                }
            }
            let close = format!("\r\n--{B}--\r\n");
            s.write_all(format!("{:x}\r\n{close}\r\n0\r\n\r\n", close.len()).as_bytes()).await.unwrap();
            let mut resp = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&resp).contains("\"request_id\"") {
                let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
                assert!(n > 0, "held upload: connection closed after {:?}", String::from_utf8_lossy(&resp));
                resp.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&resp).to_string()
        }));
    }
    // Every route counts against the limit: once /healthz is refused, the held
    // uploads have all the permits.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while client.get(t.url("/healthz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 503 {
        if Instant::now() > deadline {
            return Seen::Hung("the held uploads never filled the concurrency limit".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = match raw::exchange(t.app.addr(), vec![Step::Write(good_post(""))], PATIENCE).await {
        raw::Exchange { answer: Answer::Http { status, head, body }, after, sent_when_answered, script_len } => {
            Seen::Http { status, head, body, after, sent: sent_when_answered, meant: script_len }
        }
        raw::Exchange { after, sent_when_answered, script_len, .. } => {
            Seen::Closed { after, sent: sent_when_answered, meant: script_len }
        }
    };
    let _ = finish.send(());
    for h in holders {
        match h.await {
            Ok(resp) if resp.starts_with("HTTP/1.1 202") => also.push(request_id_of(&resp)),
            Ok(resp) => return Seen::Hung(format!("a held upload was not accepted: {resp}")),
            Err(e) => return Seen::Hung(format!("a held upload failed: {e}")),
        }
    }
    seen
}

fn request_id_of(text: &str) -> String {
    let json = &text[text.find('{').expect("a JSON body")..];
    let v: serde_json::Value = serde_json::from_str(json.trim_end_matches(|c| c != '}')).expect("JSON");
    v["request_id"].as_str().expect("request_id").to_string()
}

/// The request id of an upload the gateway accepted, whether or not it should have.
fn accepted_id(send: &Send, seen: &Seen) -> Option<String> {
    if matches!(send, Send::Subscribe(..)) {
        return None; // no upload, whatever its answer
    }
    match seen {
        Seen::Http { status: 202, body, .. } => Some(request_id_of(body)),
        Seen::Grpc { result: Ok(id), .. } => Some(id.clone()),
        _ => None,
    }
}

/// Checks what was seen against what was expected.
fn check(expect: &Expect, seen: &Seen) -> Result<(), String> {
    let describe = || match seen {
        Seen::Http { status, body, after, sent, meant, .. } => {
            format!("HTTP {status} after {after:?} ({sent}/{meant} bytes sent): {:.200}", body)
        }
        Seen::Closed { after, sent, meant } => format!("connection closed after {after:?} ({sent}/{meant} bytes sent)"),
        Seen::Grpc { result: Ok(id), after } => format!("gRPC accepted as {id} after {after:?}"),
        Seen::Grpc { result: Err(s), after } => format!("gRPC {:?} after {after:?}: {:.200}", s.code(), s.message()),
        Seen::Hung(why) => format!("hung: {why}"),
    };
    let fail = || Err(format!("saw {}", describe()));
    if std::env::var("HOSTILE_PROBE").is_ok() {
        eprintln!("PROBE {}", describe());
    }
    match (expect, seen) {
        (Expect::Status(_, ""), _) => Err("a Status case names the text it expects; see Bare".into()),
        (Expect::Status(want, text), Seen::Http { status, head, body, .. }) if status == want => {
            if !body.contains(text) {
                return Err(format!("the body lacks {text:?}: {}", describe()));
            }
            if *status == 503 && !head.to_ascii_lowercase().contains("retry-after") {
                return Err(format!("503 without Retry-After: {head}"));
            }
            Ok(())
        }
        (Expect::Bare(want), Seen::Http { status, body, .. }) if status == want => {
            if !body.is_empty() {
                return Err(format!("a body where none was expected (make the case a Status one): {}", describe()));
            }
            Ok(())
        }
        (Expect::Early(want, text, bound), Seen::Http { status, body, sent, meant, .. }) if status == want => {
            if !body.contains(text) {
                return Err(format!("the body lacks {text:?}: {}", describe()));
            }
            if *sent >= meant / 4 {
                return Err(format!("answered only after the client had sent {sent} of {meant} bytes"));
            }
            if sent >= bound {
                return Err(format!("the gateway had read {sent} bytes (>= {bound}) from the socket when it answered"));
            }
            Ok(())
        }
        (Expect::Dropped(within, status), seen) => {
            let after = match seen {
                Seen::Closed { after, .. } => after,
                Seen::Http { status: s, after, .. } if Some(*s) == *status => after,
                _ => return fail(),
            };
            if after > within {
                return Err(format!("not dropped in time: {}", describe()));
            }
            Ok(())
        }
        (Expect::StatusOrClosed(_), Seen::Closed { .. }) => Ok(()),
        (Expect::StatusOrClosed(want), Seen::Http { status, .. }) if status == want => Ok(()),
        (Expect::Accepted, Seen::Http { status: 202, .. }) => Ok(()),
        (Expect::AcceptedThenClosed, Seen::Http { status: 202, head, .. }) => {
            if !head.to_ascii_lowercase().contains("connection: close") {
                return Err(format!("accepted without closing the connection: {head}"));
            }
            Ok(())
        }
        (Expect::Grpc(code, text), Seen::Grpc { result: Err(s), .. }) if s.code() == *code => {
            if !s.message().contains(text) {
                return Err(format!("the message lacks {text:?}: {}", describe()));
            }
            Ok(())
        }
        (Expect::GrpcAccepted, Seen::Grpc { result: Ok(_), .. }) => Ok(()),
        _ => fail(),
    }
}

// ---- after each case ---------------------------------------------------------------

/// A good upload, the way the real client sends one, on a new connection (the
/// gateway closes idle keep-alive connections after the 1 s header timeout, and a
/// pooled one could race that).
async fn good_upload(t: &TestApp) -> Result<String, String> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let send = Upload::new(ADVISOR, b"good payload".to_vec())
        .file_name("insights-archive.tar.gz")
        .request(&client, &t.base)
        .send();
    let resp = tokio::time::timeout(PATIENCE, send)
        .await
        .map_err(|_| "the good upload got no answer".to_string())?
        .map_err(|e| format!("the good upload failed: {e:?}"))?;
    if resp.status() != 202 {
        return Err(format!("the good upload got {}", resp.status()));
    }
    let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok(v["request_id"].as_str().unwrap_or_default().to_string())
}

/// Quarantine holds exactly the accepted uploads (object and meta), and `.tmp` is
/// empty; refused uploads are removed in the background, so allow a moment.
async fn nothing_half_written(t: &TestApp, accepted: &BTreeSet<String>) -> Result<(), String> {
    let data = t.data.path();
    let listing = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    let metas: BTreeSet<String> = accepted.iter().map(|id| format!("{id}.json")).collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let objects: BTreeSet<String> = crate::common::list_bucket(data, "quarantine").into_iter().collect();
        // A small payload is kept in the write-ahead log, without a meta file.
        let meta = listing(&data.join("quarantine/.meta"));
        let tmp = listing(&data.join(".tmp"));
        if objects == *accepted && meta.is_subset(&metas) && tmp.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "left behind: quarantine {:?}, meta {:?}, .tmp {:?}",
                objects.difference(accepted).collect::<Vec<_>>(),
                meta.difference(&metas).collect::<Vec<_>>(),
                tmp
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// The name of this test's runtime threads: the gateway under test runs on them, so a
/// panic on one of them is the gateway's (other tests share the process).
const THREADS: &str = "hostile-gateway";

#[test]
fn hostile_clients_get_precise_answers_and_the_gateway_keeps_serving() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(THREADS) {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREADS)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run_the_table());
}

async fn run_the_table() {
    // The validator credentials the auth cases need, in a file the gateway reads.
    let creds = tempfile::NamedTempFile::new().unwrap();
    let line = format!("advisor-v sha256:{} advisor\n", upload_gateway::auth::token_hash(ADVISOR_TOKEN));
    std::fs::write(creds.path(), line).unwrap();
    let creds_path = creds.path().display().to_string();
    let flags: Vec<&str> = FLAGS.iter().copied().chain(["--validator-credentials", creds_path.as_str()]).collect();
    let t = spawn_app(&flags).await;
    let created = reqwest::Client::new()
        .post(t.url("/api/ingress/v1/uploads/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", TUS_LENGTH)
        .header("upload-metadata", format!("filetype {}", b64(ADVISOR)))
        .header("x-rh-insights-request-id", TUS_ID)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "the table's tus upload");
    let cases = cases();
    assert_eq!(cases.len(), CASES, "the table's size (and the README's count)");
    let mut accepted = BTreeSet::new();
    let mut failures = Vec::new();
    let mut failed_cases = 0;
    let total = cases.len();
    for mut c in cases {
        let started = Instant::now();
        let seen = send(&t, &c.send, &mut c.also).await;
        accepted.extend(c.also.drain(..));
        accepted.extend(accepted_id(&c.send, &seen));
        let mut failed = 0;
        if let Err(why) = check(&c.expect, &seen) {
            failures.push(format!("{}: {why}", c.name));
            failed = 1;
        }
        match good_upload(&t).await {
            Ok(id) => {
                accepted.insert(id);
            }
            Err(why) => {
                failures.push(format!("{}: afterwards, {why}", c.name));
                failed = 1;
            }
        }
        if let Err(why) = nothing_half_written(&t, &accepted).await {
            failures.push(format!("{}: {why}", c.name));
            failed = 1;
        }
        failed_cases += failed;
        eprintln!("case {:<60} {:>6} ms", c.name, started.elapsed().as_millis());
    }
    // Nothing escaped the buckets by name or id.
    let top: BTreeSet<String> = std::fs::read_dir(t.data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let allowed: BTreeSet<String> = ["quarantine", "perm", "reject", ".tmp", ".wal", ".signing-key", "validator-token", ".uploads", ".status"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(top.is_subset(&allowed), "unexpected entries in the data folder: {top:?}");
    // No tus case wrote to the table's upload, and none made another.
    let uploads: Vec<String> =
        std::fs::read_dir(t.data.path().join(".uploads")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(uploads, vec![TUS_ID.to_string()], "the resumable uploads left");
    let head = reqwest::Client::new()
        .head(t.url(&format!("/api/ingress/v1/uploads/{TUS_ID}")))
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers().get("upload-offset").map(|v| v.to_str().unwrap()), Some("0"), "the table's tus upload is untouched");
    assert!(failures.is_empty(), "{failed_cases} of {total} cases failed:\n{}", failures.join("\n"));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the gateway panicked");
}
