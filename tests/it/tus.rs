//! tus 1.0.0 (issue 14; README, "Resumable uploads"): the protocol and its extensions
//! over HTTP/1.1 and h2c, its error answers, uploads cut off by the client or by a
//! SIGKILL and resumed, two writers at once, expiry, a real tus client (tus-js-client
//! from npm, run by Node), and RFC 9530 `Repr-Digest` on the multipart upload.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const ADVISOR: &str = "application/vnd.redhat.advisor.tus+tgz";
const PREFIXES: [&str; 3] = ["/api/ingress", "/r/insights/platform/ingress", "/api"];
const MIB: usize = 1024 * 1024;
/// What the pipeline commits at most at once: what a broken-off request may lose.
const PART: u64 = 8 << 20;

fn b64(s: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn metadata(content_type: &str, name: &str) -> String {
    format!("filetype {},filename {}", b64(content_type), b64(name))
}

fn sha1_b64(bytes: &[u8]) -> String {
    use sha1::Digest;
    b64(sha1::Sha1::digest(bytes))
}

fn sha256_b64(bytes: &[u8]) -> String {
    use sha2::Digest;
    b64(sha2::Sha256::digest(bytes))
}

/// The sha256 and size of a payload stored on local disk, read in pieces.
fn stored_sha256(data: &std::path::Path, id: &str) -> Option<(String, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(data.join("quarantine").join(id)).ok()?;
    let (mut h, mut len, mut buf) = (sha2::Sha256::new(), 0u64, vec![0u8; 4 * MIB]);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return Some((hex::encode(h.finalize()), len));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// A tus client of one gateway, as one identity.
#[derive(Clone)]
struct Tus {
    http: reqwest::Client,
    base: String,
    identity: String,
}

impl Tus {
    fn new(http: &reqwest::Client, base: &str) -> Tus {
        Tus { http: http.clone(), base: base.to_string(), identity: identity("1001", "org-tus") }
    }

    fn as_identity(&self, account: &str, org: &str) -> Tus {
        Tus { identity: identity(account, org), ..self.clone() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("tus-resumable", "1.0.0")
            .header("x-rh-identity", &self.identity)
    }

    /// A creation request with no tus header but Tus-Resumable.
    fn post(&self, prefix: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, &format!("{prefix}/v1/uploads/"))
    }

    /// A creation request of `length` bytes with this `Upload-Metadata`.
    fn creation_with(&self, prefix: &str, length: u64, metadata: &str) -> reqwest::RequestBuilder {
        self.post(prefix).header("upload-length", length).header("upload-metadata", metadata)
    }

    /// A creation request for an advisor payload of `length` bytes.
    fn creation(&self, prefix: &str, length: u64) -> reqwest::RequestBuilder {
        self.creation_with(prefix, length, &metadata(ADVISOR, "archive.tgz"))
    }

    /// Creates an upload; its location (a path) and id.
    async fn create(&self, prefix: &str, length: u64) -> (String, String) {
        created(self.creation(prefix, length).send().await.unwrap(), prefix).await
    }

    fn patch(&self, location: &str, offset: u64, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::PATCH, location)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset)
            .body(body)
    }

    async fn head(&self, location: &str) -> reqwest::Response {
        self.request(reqwest::Method::HEAD, location).send().await.unwrap()
    }

    /// The upload's offset (HEAD must answer 200).
    async fn offset(&self, location: &str) -> u64 {
        let resp = self.head(location).await;
        assert_eq!(resp.status(), 200, "HEAD {location}");
        header(&resp, "upload-offset").unwrap().parse().unwrap()
    }

    /// The offset, once `ready` holds for it (asked every 50 ms, up to `within`).
    async fn offset_when(&self, location: &str, within: Duration, ready: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let offset = self.offset(location).await;
            if ready(offset) || Instant::now() > deadline {
                return offset;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The offset once no request writes the upload any more (a broken-off one commits
    /// what it got, then lets go; its claim lapses if its gateway died): an empty PATCH
    /// at the offset is answered 204 then, 423 while the upload is claimed, 409 when
    /// the offset moved meanwhile.
    async fn settled_offset(&self, location: &str, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let offset = self.offset(location).await;
            let status = self.patch(location, offset, Vec::new()).send().await.unwrap().status();
            if status == 204 {
                return offset;
            }
            assert!(matches!(status.as_u16(), 409 | 423), "an empty PATCH: {status}");
            assert!(Instant::now() < deadline, "the upload is still being written after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A 201's location, checked, and the id it names.
async fn created(resp: reqwest::Response, prefix: &str) -> (String, String) {
    let status = resp.status();
    let location = header(&resp, "location");
    let request_id = header(&resp, "x-rh-insights-request-id");
    let text = resp.text().await.unwrap();
    assert_eq!(status, 201, "creation refused: {text}");
    let location = location.expect("a 201 has a Location");
    let id = location.strip_prefix(&format!("{prefix}/v1/uploads/")).expect("the location is under the request's prefix");
    assert_eq!(request_id.as_deref(), Some(id), "the request id is the upload's id");
    (location.clone(), id.to_string())
}

/// The statuses `track` lists for a payload (an operator's client sees every one).
async fn statuses(http: &reqwest::Client, base: &str, id: &str) -> Vec<String> {
    let resp = http.get(format!("{base}/api/ingress/v1/track/{id}")).send().await.unwrap();
    if resp.status() == 404 {
        return Vec::new();
    }
    let v: Value = resp.json().await.unwrap();
    v["history"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_string()).collect()
}

/// Checks the payload was announced exactly once: its key on its service's topic once
/// (read by a fresh consumer group of the in-process queue until nothing more comes for
/// a second), and `track` shows it received and announced.
async fn announced_once(t: &TestApp, id: &str) {
    let mut sub = t.app.queue().subscribe("platform.upload.advisor", &format!("count-{id}")).await.unwrap();
    let mut times = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), futures_util::StreamExt::next(&mut sub)).await {
        times += usize::from(d.message.key == *id);
        d.ack();
    }
    assert_eq!(times, 1, "{id} announced {times} times on its topic");
    let seen = statuses(&t.http, &t.base, id).await;
    assert!(seen.iter().any(|s| s == "received") && seen.iter().any(|s| s == "announced"), "{id}: {seen:?}");
}

/// Checks that a gateway process took one upload of its own and announced one payload
/// (its counters: uploads stored and announced, payloads found unannounced and
/// announced), and that `track` shows it received and announced.
async fn process_announced_once(http: &reqwest::Client, base: &str, id: &str) {
    assert_eq!(metric_at(base, "upload_gateway_uploads_accepted_total{service=\"advisor\"}").await, 1.0, "uploads announced by this process");
    assert_eq!(metric_at(base, "upload_gateway_reannounced_total").await, 0.0, "payloads announced again by this process");
    let seen = statuses(http, base, id).await;
    assert!(seen.iter().any(|s| s == "received") && seen.iter().any(|s| s == "announced"), "{id}: {seen:?}");
}

fn stored(data: &std::path::Path, id: &str) -> Option<Vec<u8>> {
    crate::common::local_bytes(data, "quarantine", id)
}

/// The resumable uploads' folders left in the data folder.
fn upload_folders(data: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data.join(".uploads"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

fn clients() -> Vec<(&'static str, reqwest::Client)> {
    vec![
        ("HTTP/1.1", reqwest::Client::builder().http1_only().build().unwrap()),
        ("h2c", reqwest::Client::builder().http2_prior_knowledge().build().unwrap()),
    ]
}

// ---- the protocol ------------------------------------------------------------------

#[tokio::test]
async fn options_creation_head_and_patches_make_an_ordinary_payload() {
    let t = spawn_app(&[]).await;
    let accepted: Value = t.http.get(t.url("/api/v1/upload")).send().await.unwrap().json().await.unwrap();
    let largest = accepted["services"].as_object().unwrap().values().map(|s| s["max_size"].as_u64().unwrap()).max().unwrap();
    for (n, (version, http)) in clients().into_iter().enumerate() {
        let tus = Tus::new(&http, &t.base);
        for (k, prefix) in PREFIXES.into_iter().enumerate() {
            let what = format!("{version} {prefix}");
            // OPTIONS: what the server offers.
            let resp = http.request(reqwest::Method::OPTIONS, t.url(&format!("{prefix}/v1/uploads/"))).send().await.unwrap();
            assert_eq!(resp.status(), 204, "{what}");
            let want = if version == "h2c" { reqwest::Version::HTTP_2 } else { reqwest::Version::HTTP_11 };
            assert_eq!(resp.version(), want, "{what}");
            assert_eq!(header(&resp, "tus-version").as_deref(), Some("1.0.0"));
            assert_eq!(
                header(&resp, "tus-extension").as_deref(),
                Some("creation,creation-with-upload,creation-defer-length,termination,expiration,checksum")
            );
            assert_eq!(header(&resp, "tus-max-size"), Some(largest.to_string()));
            assert_eq!(header(&resp, "tus-checksum-algorithm").as_deref(), Some("sha1,sha256"));

            // Creation, with the JSON metadata and a declared sha256 (Upload-Metadata
            // on one prefix, Repr-Digest on the next, none on the last).
            let body = pseudo_random(300_000 + n * 1000 + k, (n * 3 + k) as u64);
            let mut meta = format!("{},metadata {}", metadata(ADVISOR, "host.tgz"), b64(r#"{"display_name":"tus-host"}"#));
            if k == 0 {
                meta = format!("{meta},sha256 {}", b64(sha256_hex(&body)));
            }
            let mut create = tus.creation_with(prefix, body.len() as u64, &meta);
            if k == 1 {
                create = create.header("repr-digest", format!("sha-256=:{}:", sha256_b64(&body)));
            }
            let resp = create.send().await.unwrap();
            assert_eq!(header(&resp, "tus-resumable").as_deref(), Some("1.0.0"), "{what}");
            let expires = header(&resp, "upload-expires").expect("Upload-Expires on the 201");
            let expires = chrono::DateTime::parse_from_rfc2822(&expires).expect("Upload-Expires is an HTTP date");
            assert!(expires > chrono::Utc::now() + chrono::Duration::hours(23), "{what}: the default expiry is 24 h");
            let (location, id) = created(resp, prefix).await;

            // HEAD: nothing yet, and what was sent at creation.
            let resp = tus.head(&location).await;
            assert_eq!(resp.status(), 200, "{what}");
            assert_eq!(header(&resp, "upload-offset").as_deref(), Some("0"));
            assert_eq!(header(&resp, "upload-length"), Some(body.len().to_string()));
            assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
            assert_eq!(header(&resp, "tus-resumable").as_deref(), Some("1.0.0"));
            assert!(header(&resp, "upload-expires").is_some());
            let meta = header(&resp, "upload-metadata").unwrap();
            assert!(meta.contains(&format!("filetype {}", b64(ADVISOR))), "{meta}");
            assert!(meta.contains(&format!("filename {}", b64("host.tgz"))), "{meta}");
            assert!(meta.contains(&format!("metadata {}", b64(r#"{"display_name":"tus-host"}"#))), "{meta}");
            if k < 2 {
                assert!(meta.contains(&format!("sha256 {}", b64(sha256_hex(&body)))), "{meta}");
            }

            // Three PATCHes (the second with a sha1 checksum, the last with a sha256 one).
            let (a, b) = (100_000, 250_000);
            let resp = tus.patch(&location, 0, body[..a].to_vec()).send().await.unwrap();
            assert_eq!(resp.status(), 204, "{what}");
            assert_eq!(header(&resp, "upload-offset"), Some(a.to_string()));
            assert!(header(&resp, "upload-expires").is_some());
            assert_eq!(header(&resp, "x-rh-insights-request-id"), None, "only the last PATCH carries the request id");
            let resp = tus
                .patch(&location, a as u64, body[a..b].to_vec())
                .header("upload-checksum", format!("sha1 {}", sha1_b64(&body[a..b])))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204, "{what}");
            assert_eq!(header(&resp, "upload-offset"), Some(b.to_string()));
            assert_eq!(tus.offset(&location).await, b as u64);
            let resp = tus
                .patch(&location, b as u64, body[b..].to_vec())
                .header("upload-checksum", format!("sha256 {}", sha256_b64(&body[b..])))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 204, "{what}");
            assert_eq!(header(&resp, "upload-offset"), Some(body.len().to_string()));
            assert_eq!(header(&resp, "x-rh-insights-request-id"), Some(id.clone()), "{what}: the final 204");
            assert_eq!(header(&resp, "upload-expires"), None, "a finished upload does not expire");
            assert_eq!(tus.offset(&location).await, body.len() as u64);

            // From here an ordinary payload: stored, announced once, tracked.
            let stored = stored(t.data.path(), &id).expect("the payload is in quarantine");
            assert_eq!(sha256_hex(&stored), sha256_hex(&body), "{what}");
            let msg = t.next_message("platform.upload.advisor", "tus").await;
            let a: Value = serde_json::from_slice(&msg.payload).unwrap();
            assert_eq!(a["request_id"], id.as_str());
            assert_eq!(a["size"], body.len() as u64);
            assert_eq!(a["sha256"], sha256_hex(&body));
            assert_eq!(a["org_id"], "org-tus");
            assert_eq!(a["metadata"]["display_name"], "tus-host");
            announced_once(&t, &id).await;
        }
    }
}

#[tokio::test]
async fn error_answers() {
    let t = spawn_app(&["--max-length", "1MiB"]).await;
    let limit = 1u64 << 20;
    for (version, http) in clients() {
        let tus = Tus::new(&http, &t.base);
        let p = "/api/ingress";
        let (location, _) = tus.create(p, 1000).await;

        // 412: no Tus-Resumable, or another version; the answer names ours.
        let no_version = http
            .post(t.url(&format!("{p}/v1/uploads/")))
            .header("upload-length", "10")
            .header("upload-metadata", metadata(ADVISOR, "a"))
            .send()
            .await
            .unwrap();
        assert_eq!(no_version.status(), 412, "{version}");
        assert_eq!(header(&no_version, "tus-version").as_deref(), Some("1.0.0"));
        assert_eq!(header(&no_version, "tus-resumable").as_deref(), Some("1.0.0"));
        let old = tus.request(reqwest::Method::HEAD, &location).header("tus-resumable", "0.2.2").send().await.unwrap();
        assert_eq!(old.status(), 412, "{version}");
        let resp = http.patch(t.url(&location)).header("content-type", "application/offset+octet-stream").header("upload-offset", "0").body("x").send().await.unwrap();
        assert_eq!(resp.status(), 412, "{version}");

        // 415: a PATCH of another content type.
        let resp = tus
            .request(reqwest::Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("upload-offset", "0")
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415, "{version}");
        assert!(resp.text().await.unwrap().contains("application/offset+octet-stream"));

        // 400: Upload-Offset missing or negative.
        let resp = tus.request(reqwest::Method::PATCH, &location).header("content-type", "application/offset+octet-stream").body("abc").send().await.unwrap();
        assert_eq!(resp.status(), 400, "{version}");
        let resp = tus
            .request(reqwest::Method::PATCH, &location)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "-3")
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{version}");

        // 409: the wrong offset.
        tus.patch(&location, 0, vec![1u8; 10]).send().await.unwrap().error_for_status().unwrap();
        let resp = tus.patch(&location, 5, vec![2u8; 10]).send().await.unwrap();
        assert_eq!(resp.status(), 409, "{version}");
        assert_eq!(tus.offset(&location).await, 10);

        // 460: a checksum that does not match keeps none of the bytes; 400 for an
        // algorithm not offered.
        let resp = tus
            .patch(&location, 10, vec![3u8; 100])
            .header("upload-checksum", format!("sha256 {}", sha256_b64(&[4u8; 100])))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 460, "{version}");
        assert_eq!(tus.offset(&location).await, 10, "{version}: nothing of a refused request is kept");
        let resp = tus.patch(&location, 10, vec![3u8; 100]).header("upload-checksum", format!("md5 {}", b64([0u8; 16]))).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{version}");
        assert!(resp.text().await.unwrap().contains("sha1,sha256"));

        // 413: a length over the limit, before any byte; a deferred length that goes
        // past it while the bytes arrive.
        let resp = tus.creation(p, limit + 1).send().await.unwrap();
        assert_eq!(resp.status(), 413, "{version}");
        assert_eq!(header(&resp, "location"), None);
        let resp = tus.post(p).header("upload-defer-length", "1").header("upload-metadata", metadata(ADVISOR, "a")).send().await.unwrap();
        let (deferred, _) = created(resp, p).await;
        let resp = tus.patch(&deferred, 0, vec![0u8; limit as usize + 1]).send().await.unwrap();
        assert_eq!(resp.status(), 413, "{version}");
        let offset = tus.offset(&deferred).await;
        assert!(offset <= limit);
        let resp = tus.patch(&deferred, offset, vec![0u8; 10]).header("upload-length", (limit + 1).to_string()).send().await.unwrap();
        assert_eq!(resp.status(), 413, "{version}: a deferred length over the limit");

        // 404: an unknown upload; another identity's (HEAD, PATCH, DELETE).
        assert_eq!(tus.head(&format!("{p}/v1/uploads/nosuchupload")).await.status(), 404);
        let other = tus.as_identity("2002", "org-other");
        assert_eq!(other.head(&location).await.status(), 404, "{version}");
        assert_eq!(other.patch(&location, 10, "x").send().await.unwrap().status(), 404, "{version}");
        assert_eq!(other.request(reqwest::Method::DELETE, &location).send().await.unwrap().status(), 404);
        let anonymous = http.head(t.url(&location)).header("tus-resumable", "1.0.0").send().await.unwrap();
        assert_eq!(anonymous.status(), 404, "{version}");
        assert_eq!(tus.offset(&location).await, 10, "the owner's upload is untouched");

        // 400: creation with both lengths, or neither; 415: a filetype no service takes.
        let both = tus.creation(p, 10).header("upload-defer-length", "1").send().await.unwrap();
        assert_eq!(both.status(), 400);
        let neither = tus.post(p).header("upload-metadata", metadata(ADVISOR, "a")).send().await.unwrap();
        assert_eq!(neither.status(), 400);
        let partial = tus.creation(p, 10).header("upload-concat", "partial").send().await.unwrap();
        assert_eq!(partial.status(), 400, "concatenation is not offered");
        assert!(partial.text().await.unwrap().contains("Upload-Concat"));
        let resp = tus.creation_with(p, 10, &metadata("text/plain", "a")).send().await.unwrap();
        assert_eq!(resp.status(), 415);
        let resp = tus.creation_with(p, 10, &format!("filename {}", b64("a"))).send().await.unwrap();
        assert_eq!(resp.status(), 415, "filetype is required");

        // A GET is no tus request.
        let resp = tus.request(reqwest::Method::GET, &location).send().await.unwrap();
        assert_eq!(resp.status(), 405);
    }
}

#[tokio::test]
async fn creation_with_upload_defer_length_and_termination() {
    let t = spawn_app(&[]).await;
    for (version, http) in clients() {
        let tus = Tus::new(&http, &t.base);
        let p = "/r/insights/platform/ingress";

        // creation-with-upload, all of it: the 201 comes once stored and announced.
        let body = pseudo_random(70_000, 11);
        let resp = tus
            .creation(p, body.len() as u64)
            .header("content-type", "application/offset+octet-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "upload-offset"), Some(body.len().to_string()), "{version}");
        let (_, id) = created(resp, p).await;
        assert_eq!(stored(t.data.path(), &id), Some(body.clone()), "{version}");
        announced_once(&t, &id).await;

        // creation-with-upload, a first piece; a PATCH the rest.
        let resp = tus
            .creation(p, body.len() as u64)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", format!("sha1 {}", sha1_b64(&body[..1000])))
            .body(body[..1000].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "upload-offset").as_deref(), Some("1000"), "{version}");
        assert!(header(&resp, "upload-expires").is_some());
        let (location, id) = created(resp, p).await;
        let resp = tus.patch(&location, 1000, body[1000..].to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(stored(t.data.path(), &id), Some(body.clone()), "{version}");

        // An empty upload is whole at creation.
        let (_, id) = tus.create(p, 0).await;
        assert_eq!(stored(t.data.path(), &id), Some(Vec::new()), "{version}");
        announced_once(&t, &id).await;

        // creation-defer-length: the length comes with a later PATCH.
        let resp = tus.post(p).header("upload-defer-length", "1").header("upload-metadata", metadata(ADVISOR, "deferred.tgz")).send().await.unwrap();
        let (location, id) = created(resp, p).await;
        let resp = tus.head(&location).await;
        assert_eq!(header(&resp, "upload-defer-length").as_deref(), Some("1"), "{version}");
        assert_eq!(header(&resp, "upload-length"), None);
        let resp = tus.patch(&location, 0, body[..30_000].to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "x-rh-insights-request-id"), None);
        let resp = tus
            .patch(&location, 30_000, body[30_000..].to_vec())
            .header("upload-length", body.len().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{version}");
        assert_eq!(header(&resp, "x-rh-insights-request-id"), Some(id.clone()));
        assert_eq!(stored(t.data.path(), &id), Some(body.clone()), "{version}");

        // termination: DELETE, then the upload is gone, bytes and all.
        let (location, id) = tus.create(p, 1000).await;
        tus.patch(&location, 0, vec![9u8; 300]).send().await.unwrap().error_for_status().unwrap();
        assert!(upload_folders(t.data.path()).contains(&id));
        let resp = tus.request(reqwest::Method::DELETE, &location).send().await.unwrap();
        assert_eq!(resp.status(), 204, "{version}");
        assert_eq!(header(&resp, "tus-resumable").as_deref(), Some("1.0.0"));
        assert_eq!(tus.head(&location).await.status(), 404, "{version}");
        assert_eq!(tus.patch(&location, 300, vec![9u8; 700]).send().await.unwrap().status(), 404);
        assert!(!upload_folders(t.data.path()).contains(&id), "its folder is removed");
        assert_eq!(stored(t.data.path(), &id), None);
    }
}

#[tokio::test]
async fn a_declared_sha256_that_differs_keeps_and_announces_nothing() {
    let t = spawn_app(&[]).await;
    let tus = Tus::new(&t.http, &t.base);
    let p = "/api";
    let body = pseudo_random(50_000, 5);
    let wrong = sha256_hex(b"something else");
    for declare in [
        format!("{},sha256 {}", metadata(ADVISOR, "a"), b64(&wrong)),
        format!("repr-digest:sha-256=:{}:", sha256_b64(b"something else")),
    ] {
        let create = match declare.strip_prefix("repr-digest:") {
            Some(d) => tus.creation(p, body.len() as u64).header("repr-digest", d),
            None => tus.creation_with(p, body.len() as u64, &declare),
        };
        let (location, id) = created(create.send().await.unwrap(), p).await;
        tus.patch(&location, 0, body[..20_000].to_vec()).send().await.unwrap().error_for_status().unwrap();
        let resp = tus.patch(&location, 20_000, body[20_000..].to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 460, "{declare}");
        assert!(resp.text().await.unwrap().contains("sha256"));
        assert_eq!(stored(t.data.path(), &id), None, "nothing stored");
        assert!(!upload_folders(t.data.path()).contains(&id), "nothing kept");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(statuses(&t.http, &t.base, &id).await, Vec::<String>::new(), "nothing announced");
        assert_eq!(tus.head(&location).await.status(), 404);
    }
    // The two declarations must agree.
    let resp = tus
        .creation_with(p, 10, &format!("{},sha256 {}", metadata(ADVISOR, "a"), b64(&wrong)))
        .header("repr-digest", format!("sha-256=:{}:", sha256_b64(b"0123456789")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn method_override_and_cors() {
    let t = spawn_app(&[]).await;
    let http = reqwest::Client::new();
    let tus = Tus::new(&http, &t.base);
    let p = "/api/ingress";
    let origin = "https://console.example.com";

    // The preflight.
    for path in [format!("{p}/v1/uploads/"), format!("{p}/v1/uploads/someid")] {
        let resp = http
            .request(reqwest::Method::OPTIONS, t.url(&path))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "tus-resumable, upload-offset, content-type, x-rh-identity")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
        let methods = header(&resp, "access-control-allow-methods").unwrap();
        for m in ["POST", "HEAD", "PATCH", "DELETE", "OPTIONS"] {
            assert!(methods.contains(m), "{methods}");
        }
        let allowed = header(&resp, "access-control-allow-headers").unwrap().to_ascii_lowercase();
        for h in [
            "tus-resumable", "upload-length", "upload-defer-length", "upload-metadata", "upload-offset", "upload-checksum",
            "repr-digest", "content-type", "x-http-method-override", "x-rh-identity", "x-rh-insights-request-id",
        ] {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert!(header(&resp, "access-control-max-age").is_some());
    }

    // Every tus answer lets a browser script read the tus headers.
    let resp = tus.creation(p, 6).header("origin", origin).send().await.unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin").as_deref(), Some("*"));
    let exposed = header(&resp, "access-control-expose-headers").unwrap();
    for h in ["Upload-Offset", "Location", "Upload-Length", "Tus-Resumable", "Upload-Expires", "x-rh-insights-request-id"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    let (location, id) = created(resp, p).await;

    // X-HTTP-Method-Override: a POST that is a PATCH, a HEAD, a DELETE.
    let post = |m: &str| tus.request(reqwest::Method::POST, &location).header("x-http-method-override", m);
    let resp = post("PATCH")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "upload-offset").as_deref(), Some("3"));
    let resp = post("HEAD").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "upload-offset").as_deref(), Some("3"));
    assert_eq!(post("DELETE").send().await.unwrap().status(), 204);
    assert_eq!(tus.head(&location).await.status(), 404);
    assert_eq!(stored(t.data.path(), &id), None);
    // A POST to an upload without an override is not a tus request.
    assert_eq!(tus.request(reqwest::Method::POST, &location).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn unfinished_uploads_expire_and_their_bytes_are_swept() {
    let t = spawn_app(&["--upload-expiry-secs", "2"]).await;
    let tus = Tus::new(&t.http, &t.base);
    let p = "/api/ingress";
    let (location, id) = tus.create(p, 1000).await;
    let resp = tus.patch(&location, 0, vec![1u8; 100]).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let expires = chrono::DateTime::parse_from_rfc2822(&header(&resp, "upload-expires").unwrap()).unwrap();
    assert!(expires < chrono::Utc::now() + chrono::Duration::seconds(3), "{expires}");
    assert!(upload_folders(t.data.path()).contains(&id));
    eventually(Duration::from_secs(15), "the sweep removes the expired upload's folder", || async {
        upload_folders(t.data.path()).is_empty()
    })
    .await;
    for (version, http) in clients() {
        let tus = Tus::new(&http, &t.base);
        for resp in [tus.head(&location).await, tus.patch(&location, 100, vec![1u8; 900]).send().await.unwrap()] {
            assert!(matches!(resp.status().as_u16(), 404 | 410), "{version}: {}", resp.status());
        }
    }
    assert_eq!(stored(t.data.path(), &id), None);
}

// ---- interruptions and writers ------------------------------------------------------

/// A PATCH written by hand, so that it can be cut off or held open.
struct RawPatch {
    stream: tokio::net::TcpStream,
    server: SocketAddr,
}

impl RawPatch {
    async fn start(server: SocketAddr, location: &str, offset: u64, len: u64, identity: &str) -> RawPatch {
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: gw\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
             Upload-Offset: {offset}\r\nContent-Length: {len}\r\nx-rh-identity: {identity}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        RawPatch { stream, server }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Waits until the gateway has read everything written so far.
    async fn wait_read(&self) {
        use std::os::fd::AsRawFd;
        let local = self.stream.local_addr().unwrap();
        tcp::wait_read(self.stream.as_raw_fd(), local, self.server).await;
    }

    /// The status of the answer, if one comes within `within`.
    async fn answer(&mut self, within: Duration) -> Option<(u16, String)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(within, read).await.ok()?;
        let text = String::from_utf8_lossy(&got).to_string();
        let status = text.get(9..12)?.parse().ok()?;
        Some((status, text))
    }
}

/// A limit that lets the 1 GiB payloads in (qpc-sized).
const LARGE: [&str; 2] = ["--service-limits", "advisor=2147483648"];
const GIB: u64 = 1 << 30;

/// A 1 GiB PATCH whose connection breaks off at about half: the gateway keeps what it
/// committed (at most one part short of what it read), the client resumes from the
/// offset HEAD reports, and the payload is whole, stored and announced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_cut_off_by_the_client_resumes_where_it_was_committed() {
    let t = spawn_app(&LARGE).await;
    let tus = Tus::new(&t.http, &t.base);
    let big = Big::new(GIB, 64);
    let half = GIB / 2 + 3 * MIB as u64 / 2; // not on a part boundary
    let (location, id) = tus.create("/api/ingress", GIB).await;

    let mut raw = RawPatch::start(t.app.addr(), &location, 0, GIB, &tus.identity).await;
    for piece in big.pieces(0, half, MIB as u64) {
        raw.send(&piece).await;
    }
    raw.wait_read().await;
    drop(raw); // the connection breaks off at half

    // What the gateway committed of it: at most one part short of what was sent.
    let offset = tus.settled_offset(&location, Duration::from_secs(40)).await;
    assert!(offset >= half - PART, "offset {offset}: more than one part of the {half} bytes sent was lost");
    assert!(offset <= half, "offset {offset} is past the {half} bytes sent");
    let resp = tus.patch(&location, offset, big.body_from(offset)).send().await.unwrap();
    assert_eq!(resp.status(), 204, "the resumed PATCH completes: {:?}", resp.text().await);

    assert_eq!(stored_sha256(t.data.path(), &id), Some((big.sha256_hex(), GIB)), "the stored payload is the bytes sent");
    announced_once(&t, &id).await;
    eprintln!("resumed at {offset} after {half} sent: {} bytes sent again", half - offset);
}

/// A 1 GiB PATCH cut off at about half by a SIGKILL of its gateway: the restarted
/// gateway reports what was committed (at most one part short of what was read), the
/// client resumes there, and the payload is whole, stored and announced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_cut_off_by_a_sigkill_resumes_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    // A short claim: the killed gateway's claim must lapse for the resumed PATCH.
    let flags = ["--upload-claim-secs", "2", LARGE[0], LARGE[1]];
    let first = GatewayProcess::start(data.path(), &flags);
    let http = reqwest::Client::new();
    let tus = Tus::new(&http, &first.base);
    let big = Big::new(GIB, 65);
    let half = GIB / 2 + 3 * MIB as u64 / 2;
    let (location, id) = tus.create("/api/ingress", GIB).await;

    let mut raw = RawPatch::start(first.addr, &location, 0, GIB, &tus.identity).await;
    for piece in big.pieces(0, half, MIB as u64) {
        raw.send(&piece).await;
    }
    raw.wait_read().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.signal("KILL");
    drop(raw);
    drop(first);

    let second = GatewayProcess::start(data.path(), &flags);
    let tus = Tus::new(&http, &second.base);
    let offset = tus.offset(&location).await;
    assert!(offset >= half - PART && offset <= half, "committed {offset} of the {half} bytes sent");
    assert_eq!(tus.settled_offset(&location, Duration::from_secs(20)).await, offset, "nothing moves it after the kill");
    let resp = tus.patch(&location, offset, big.body_from(offset)).send().await.unwrap();
    assert_eq!(resp.status(), 204, "the resumed PATCH completes: {:?}", resp.text().await);
    assert_eq!(header(&resp, "x-rh-insights-request-id"), Some(id.clone()));

    assert_eq!(stored_sha256(data.path(), &id), Some((big.sha256_hex(), GIB)), "the stored payload is the bytes sent");
    process_announced_once(&operator_http(data.path()), &second.base, &id).await;
    eprintln!("resumed at {offset} after {half} sent: {} bytes sent again", half - offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_at_once_one_wins_and_the_payload_is_its_bytes() {
    let t = spawn_app(&[]).await;
    let tus = Tus::new(&t.http, &t.base);
    let len = 2 * MIB;
    let (a, b) = (pseudo_random(len, 1), pseudo_random(len, 2));
    let (location, id) = tus.create("/api/ingress", len as u64).await;

    // Both begin at offset 0 and send a little; neither finishes.
    let (mut one, mut two) = tokio::join!(
        RawPatch::start(t.app.addr(), &location, 0, len as u64, &tus.identity),
        RawPatch::start(t.app.addr(), &location, 0, len as u64, &tus.identity),
    );
    tokio::join!(one.send(&a[..64 * 1024]), two.send(&b[..64 * 1024]));
    // One of them is refused at once while the other holds the upload.
    let (loser_status, winner, winner_bytes) = tokio::select! {
        got = one.answer(Duration::from_secs(10)) => (got, two, &b),
        got = two.answer(Duration::from_secs(10)) => (got, one, &a),
    };
    let (status, head) = loser_status.expect("the second writer is answered while the first holds the upload");
    assert!(status == 423 || status == 409, "{head}");
    // Termination waits for the writer too.
    assert_eq!(tus.request(reqwest::Method::DELETE, &location).send().await.unwrap().status(), 423);
    let mut winner = winner;
    winner.send(&winner_bytes[64 * 1024..]).await;
    let (status, head) = winner.answer(Duration::from_secs(20)).await.expect("the winner is answered");
    assert_eq!(status, 204, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("x-rh-insights-request-id: {id}")), "{head}");
    let stored = stored(t.data.path(), &id).expect("stored");
    assert!(stored == *winner_bytes, "the stored payload is exactly the winner's bytes");
    announced_once(&t, &id).await;
}

// ---- a real tus client --------------------------------------------------------------

/// Runs tests/support/tus-js/upload.js with Node; its JSON line.
async fn tus_js(endpoint: &str, file: &std::path::Path, store: &std::path::Path, abort_after: u64) -> Value {
    let modules = std::env::var("TEST_TUS_JS").unwrap_or_else(|_| {
        panic!("TEST_TUS_JS is not set: run the suite with scripts/test (scripts/tools.sh tus-js installs tus-js-client)")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tus-js/upload.js");
    let out = tokio::process::Command::new("node")
        .arg(script)
        .arg(endpoint)
        .arg(file)
        .arg(store)
        .arg(abort_after.to_string())
        .arg(identity("1001", "org-tus"))
        .env("NODE_PATH", std::path::Path::new(&modules).join("node_modules"))
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tus-js-client failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_uploads_and_resumes_from_its_stored_url() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("archive.tgz");
    let body = pseudo_random(6 * MIB + 12_345, 99);
    std::fs::write(&file, &body).unwrap();
    let store = dir.path().join("tus-urls.json");
    let endpoint = t.url("/api/ingress/v1/uploads/");

    // First run: aborted after about 40 %.
    let first = tus_js(&endpoint, &file, &store, (body.len() * 2 / 5) as u64).await;
    assert_eq!(first["aborted"], true, "{first}");
    assert_eq!(first["done"], false, "{first}");
    let url = first["url"].as_str().expect("an upload URL").to_string();
    let location = url.strip_prefix(&t.base).expect("the URL is on the gateway").to_string();
    let id = location.rsplit('/').next().unwrap().to_string();
    let tus = Tus::new(&t.http, &t.base);
    let offset = tus.offset_when(&location, Duration::from_secs(10), |o| o > 0).await;
    assert!(offset > 0, "the aborted upload has bytes stored");
    assert!(offset < body.len() as u64, "the first run did not finish");
    assert_eq!(stored(t.data.path(), &id), None);

    // Second run: finds its URL in the storage and goes on from the stored offset (the
    // aborted request's claim may hold a moment: tus-js-client retries).
    let second = tus_js(&endpoint, &file, &store, 0).await;
    assert_eq!(second["done"], true, "{second}");
    assert_eq!(second["resumedFrom"].as_str(), Some(url.as_str()), "{second}");
    assert_eq!(second["url"].as_str(), Some(url.as_str()));
    let first_offset = second["firstOffset"].as_u64().unwrap();
    assert!(first_offset >= offset && first_offset > 0, "resumed at {first_offset}, not from the start ({second})");

    let stored = stored(t.data.path(), &id).expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&body));
    announced_once(&t, &id).await;
    let a: Value = serde_json::from_slice(&t.next_message("platform.upload.advisor", "tus-js").await.payload).unwrap();
    assert_eq!(a["request_id"], id.as_str());
    assert_eq!(a["size"], body.len() as u64);
}

// ---- Repr-Digest on the multipart upload ---------------------------------------------

#[tokio::test]
async fn repr_digest_on_the_multipart_upload() {
    let t = spawn_app(&[]).await;
    let body = pseudo_random(10_000, 3);
    let upload = Upload::new(ADVISOR, body.clone());
    let resp = upload.request(&t.http, &t.base).header("repr-digest", format!("sha-256=:{}:", sha256_b64(&body))).send().await.unwrap();
    let id = accepted_id(resp).await;
    assert_eq!(stored(t.data.path(), &id), Some(body.clone()));

    let resp = upload
        .clone()
        .request_id("repr-digest-mismatch")
        .request(&t.http, &t.base)
        .header("repr-digest", format!("sha-256=:{}:", sha256_b64(b"other bytes")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("sha256") && text.contains(&sha256_hex(&body)), "{text}");
    eventually(Duration::from_secs(3), "nothing of the refused upload is kept", || async {
        stored(t.data.path(), "repr-digest-mismatch").is_none()
    })
    .await;

    for bad in ["sha-256=abc", "sha-256=:!!:", "md5=:AAAA:"] {
        let resp = upload.request(&t.http, &t.base).header("repr-digest", bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        assert!(resp.text().await.unwrap().contains("Repr-Digest"), "{bad}");
    }
}

// ---- the documents --------------------------------------------------------------------

/// The OpenAPI document lists the tus routes, with their methods, under every prefix.
#[tokio::test]
async fn the_openapi_document_lists_the_tus_routes() {
    let t = spawn_app(&[]).await;
    let doc: Value = t.http.get(t.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    for p in PREFIXES {
        let collection = &doc["paths"][format!("{p}/v1/uploads/")];
        let upload = &doc["paths"][format!("{p}/v1/uploads/{{id}}")];
        for (path, methods) in [(collection, &["options", "post"][..]), (upload, &["options", "head", "patch", "delete"][..])] {
            for m in methods {
                assert!(path[*m]["responses"].is_object(), "{p}: {m} is documented");
            }
        }
        assert!(collection["post"]["responses"]["201"].is_object());
        for status in ["204", "409", "412", "415", "423", "460"] {
            assert!(upload["patch"]["responses"][status].is_object(), "{p}: PATCH {status}");
        }
        let multipart = doc["paths"][format!("{p}/v1/upload")]["post"]["parameters"].as_array().unwrap();
        assert!(multipart.iter().any(|h| h["name"] == "Repr-Digest"), "{p}: the multipart upload's Repr-Digest");
    }
}

// ---- the README's example -------------------------------------------------------------

/// The README's "Resumable uploads" curl example, run as written (on the test's port).
#[tokio::test]
async fn the_readme_curl_example_works_as_written() {
    let readme = include_str!("../../README.md");
    let section = readme.split("## Resumable uploads").nth(1).expect("README has a Resumable uploads section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("an sh block");
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let script = block.replace("localhost:8080", &format!("localhost:{}", t.app.addr().port()));
    let out = tokio::process::Command::new("sh").arg("-ec").arg(&script).current_dir(dir.path()).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<&str> = stdout.split("http/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{stdout}");
    assert!(answers[0].starts_with("204") && answers[0].contains("upload-offset: 10"), "{stdout}");
    assert!(answers[1].starts_with("200") && answers[1].contains("upload-offset: 10") && answers[1].contains("upload-length: 22"));
    assert!(answers[2].starts_with("204") && answers[2].contains("upload-offset: 22"), "{stdout}");
    let id = answers[2].split("x-rh-insights-request-id: ").nth(1).expect("the request id").split_whitespace().next().unwrap();
    assert_eq!(stored(t.data.path(), id).as_deref(), Some(&b"hello, resumable world"[..]));
}
