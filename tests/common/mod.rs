//! What every integration test needs: a gateway on port 0 (in process, or as its own
//! process), clients, and the real services the test command started.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use upload_gateway::queue::{Delivery, Message};
use upload_gateway::{App, Config};

pub use upload_gateway::grpc::pb;

pub mod grpc_web;
pub mod s3;
pub mod tcp;

/// A gateway running in this process, with its data in a temporary folder.
pub struct TestApp {
    pub app: App,
    pub base: String,
    pub data: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Starts a gateway on 127.0.0.1:0 with the embedded default and extra flags.
pub async fn spawn_app(extra: &[&str]) -> TestApp {
    let data = tempfile::tempdir().unwrap();
    spawn_app_in(data, extra).await
}

/// Starts a gateway on an existing data folder (to test restarts).
pub async fn spawn_app_in(data: tempfile::TempDir, extra: &[&str]) -> TestApp {
    let _ = tracing_subscriber_init();
    let mut args = vec![
        "upload-gateway".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.path().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = Config::from_args(args).expect("test config parses");
    let app = App::start(config).await.expect("gateway starts");
    let base = format!("http://{}", app.addr());
    let http = operator_http(data.path());
    TestApp { app, base, data, http }
}

/// An HTTP client with the validator token the gateway made in `data` (an operator's
/// view: `track` answers for every payload); without that file (a credentials file was
/// given), a plain client. Tests of who may see what build their own clients.
pub fn operator_http(data: &std::path::Path) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::fs::read_to_string(data.join("validator-token")) {
        headers.insert("authorization", format!("Bearer {}", token.trim()).parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

fn tracing_subscriber_init() -> Option<()> {
    // Logs only when asked for (RUST_LOG), so test output stays readable.
    std::env::var("RUST_LOG").ok()?;
    tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init()
        .ok()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A tonic client on the same port as REST, with the validator token the gateway
    /// made in its data folder (so the validator verbs work too).
    pub async fn grpc(&self) -> Grpc {
        grpc_client(&self.base, self.data.path()).await
    }

    /// Reads the next message a consumer group gets on a topic (waits up to 10 s).
    pub async fn next_message(&self, topic: &str, group: &str) -> Message {
        let mut sub = self.app.queue().subscribe(topic, group).await.unwrap();
        let d: Delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no message on {topic} within 10 s"))
            .unwrap()
            .unwrap();
        let m = d.message.clone();
        d.ack();
        m
    }

    /// Posts a multipart upload the way curl -F does: one file part named `field`.
    pub async fn upload(&self, field: &str, content_type: &str, bytes: Vec<u8>) -> reqwest::Response {
        Upload::new(content_type, bytes).field(field).send(&self.http, &self.base).await
    }

    /// The files in one bucket folder of the embedded storage.
    pub fn bucket_files(&self, bucket: &str) -> Vec<String> {
        list_bucket(self.data.path(), bucket)
    }

    /// A counter's value from `/metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        metric_at(&self.base, line_prefix).await
    }
}

/// A counter's or gauge's value from the `/metrics` of the gateway at `base` (0 when
/// absent): the first line that starts with `line_prefix`.
pub async fn metric_at(base: &str, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The gRPC client tests use: every call carries a validator token.
pub type Grpc = upload_gateway::validator::connect::Client;

/// A gRPC client of the gateway at `base` with the validator token in `data`.
pub async fn grpc_client(base: &str, data: &std::path::Path) -> Grpc {
    let channel = tonic::transport::Channel::from_shared(base.to_string()).unwrap().connect().await.expect("grpc connects");
    upload_gateway::validator::connect::client(channel, &validator_token(data)).unwrap()
}

/// The validator token the embedded default made in its data folder.
pub fn validator_token(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("validator-token")).expect("the gateway made its validator token").trim().to_string()
}

/// What a folder under the data folder holds. For a bucket (quarantine, perm, reject):
/// the keys of the payloads it holds, those still kept in the write-ahead log included
/// (`storage::local::peek`); for any other folder, its file names. Names starting with
/// '.' are left out.
pub fn list_bucket(data: &std::path::Path, bucket: &str) -> Vec<String> {
    if let Some(b) = upload_gateway::storage::Bucket::parse(bucket) {
        return upload_gateway::storage::local::peek::keys(data, b).unwrap();
    }
    let mut v: Vec<String> = std::fs::read_dir(data.join(bucket))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The bytes of payload `key` in `bucket` ("quarantine", "perm" or "reject") of the
/// data folder `data`, wherever the embedded storage keeps them (its own file or the
/// write-ahead log); None when the bucket does not hold it.
pub fn local_bytes(data: &std::path::Path, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let b = upload_gateway::storage::Bucket::parse(bucket).expect("a bucket name");
    upload_gateway::storage::local::peek::read(data, b, key).unwrap().map(|f| f.bytes)
}

/// The meta JSON the embedded storage keeps for payload `key` in `bucket`.
pub fn local_meta(data: &std::path::Path, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let b = upload_gateway::storage::Bucket::parse(bucket).expect("a bucket name");
    upload_gateway::storage::local::peek::read(data, b, key).unwrap().and_then(|f| f.meta)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// base64 of an identity JSON.
pub fn identity(account: &str, org: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!(
        r#"{{"identity":{{"account_number":"{account}","org_id":"{org}","type":"User","internal":{{"org_id":"{org}"}}}},"entitlements":{{}}}}"#
    ))
}

/// One REST upload as clients send it (curl -F, the insights client): a file part and,
/// when asked, a metadata part, an identity and a request id. The one place the tests
/// build upload forms with reqwest.
#[derive(Clone, Debug)]
pub struct Upload {
    path: String,
    field: String,
    file_name: String,
    content_type: String,
    body: Vec<u8>,
    metadata: Option<String>,
    identity: Option<String>,
    request_id: Option<String>,
}

impl Upload {
    /// A file part named `file` to `/api/ingress/v1/upload`.
    pub fn new(content_type: &str, body: impl Into<Vec<u8>>) -> Upload {
        Upload {
            path: "/api/ingress/v1/upload".into(),
            field: "file".into(),
            file_name: "test-archive.tar.gz".into(),
            content_type: content_type.into(),
            body: body.into(),
            metadata: None,
            identity: None,
            request_id: None,
        }
    }

    pub fn path(mut self, path: &str) -> Upload {
        self.path = path.into();
        self
    }

    pub fn field(mut self, field: &str) -> Upload {
        self.field = field.into();
        self
    }

    pub fn file_name(mut self, name: &str) -> Upload {
        self.file_name = name.into();
        self
    }

    /// A `metadata` part, as the insights client sends it (a part with a file name).
    pub fn metadata(mut self, json: &str) -> Upload {
        self.metadata = Some(json.into());
        self
    }

    /// An `x-rh-identity` header for this account and org.
    pub fn identity(mut self, account: &str, org: &str) -> Upload {
        self.identity = Some(identity(account, org));
        self
    }

    /// An `x-rh-insights-request-id` header.
    pub fn request_id(mut self, id: &str) -> Upload {
        self.request_id = Some(id.into());
        self
    }

    pub fn form(&self) -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::bytes(self.body.clone())
            .file_name(self.file_name.clone())
            .mime_str(&self.content_type)
            .unwrap();
        let mut form = reqwest::multipart::Form::new().part(self.field.clone(), part);
        if let Some(m) = &self.metadata {
            form = form.part("metadata", reqwest::multipart::Part::text(m.clone()).file_name("metadata"));
        }
        form
    }

    /// The request, ready to send (or to change: timeouts, more headers).
    pub fn request(&self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        let mut req = http.post(format!("{base}{}", self.path)).multipart(self.form());
        if let Some(i) = &self.identity {
            req = req.header("x-rh-identity", i);
        }
        if let Some(id) = &self.request_id {
            req = req.header("x-rh-insights-request-id", id);
        }
        req
    }

    /// Sends it; fails the test when no answer comes.
    pub async fn send(&self, http: &reqwest::Client, base: &str) -> reqwest::Response {
        self.request(http, base).send().await.expect("the upload gets an answer")
    }

    /// Sends it; the answer's status, or `None` when no answer came (the gateway is gone).
    pub async fn try_send(&self, http: &reqwest::Client, base: &str) -> Option<u16> {
        self.request(http, base).send().await.ok().map(|r| r.status().as_u16())
    }

    /// Sends it and returns the request id of its 202; fails the test on anything else.
    pub async fn accepted(&self, http: &reqwest::Client, base: &str) -> String {
        accepted_id(self.send(http, base).await).await
    }
}

/// The request id of a 202 answer; fails the test (with the body) on any other status.
pub async fn accepted_id(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(status, 202, "upload refused: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
    v["request_id"].as_str().expect("request_id in the answer").to_string()
}

/// Waits until `check` holds, asking again every 50 ms; fails with `what` past `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway as its own process (for memory, signals and restarts). It listens where
/// it is told (port 0 unless the test says otherwise) and the harness reads the address
/// it got from its start-up line ("upload-gateway listening addr=..."); its log lines go
/// to the test's output. A child that exits while the harness waits fails the test.
pub struct GatewayProcess {
    pub child: Child,
    pub base: String,
    pub addr: SocketAddr,
    pub data: PathBuf,
    /// Every line it wrote to stderr so far (also echoed to the test's output).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The data folder, when the harness made it (removed with the process).
    owned: Option<tempfile::TempDir>,
}

impl GatewayProcess {
    /// Starts the binary on 127.0.0.1:0 with `--data-dir data` and extra flags, and
    /// waits until `/readyz` answers 200.
    pub fn start(data: &Path, extra: &[&str]) -> GatewayProcess {
        Self::start_on("127.0.0.1:0", data, extra)
    }

    /// The same on a given address (a restart on the port a client already knows).
    pub fn start_on(listen: &str, data: &Path, extra: &[&str]) -> GatewayProcess {
        let mut cmd = Self::command();
        cmd.args(["--listen", listen, "--data-dir"]).arg(data).args(extra);
        Self::spawn(cmd, data)
    }

    /// The gateway binary with the test's log settings, for a test that sets its own
    /// flags or environment; start it with `spawn`.
    pub fn command() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_upload-gateway"));
        // The start-up line is logged at info; the rest at warn unless RUST_LOG says more.
        let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        cmd.env("RUST_LOG", format!("{base},upload_gateway=info")).env("NO_COLOR", "1");
        cmd
    }

    /// Spawns `cmd` (from `command`), reads the address it listens on and waits until
    /// it is ready.
    pub fn spawn(mut cmd: Command, data: &Path) -> GatewayProcess {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                eprintln!("[gateway] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(_) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("the gateway exited before it listened: {status}");
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("the gateway logged no 'upload-gateway listening' line within 30 s");
                    }
                }
            }
        };
        let mut p = GatewayProcess { child, base: format!("http://{addr}"), addr, data: data.to_path_buf(), log, owned: None };
        p.wait_ready(Duration::from_secs(30));
        p
    }

    /// Waits until `/readyz` answers 200; fails at once when the process has exited.
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.base);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the gateway at {} exited while starting: {status}", self.base);
            }
            if http_status(&url).is_ok_and(|code| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway at {} not ready within {within:?}", self.base);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it has written to stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Resident memory in KiB, from /proc (fails the test when it cannot be read).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The highest resident memory of the process since it started (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two gateway processes with the same flags (one Kafka, one S3: a fleet), each on a
/// data folder of its own (removed when its process is dropped), started at once.
pub async fn two_gateways(flags: &[String]) -> (GatewayProcess, GatewayProcess) {
    let start = |flags: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let data = tempfile::tempdir().unwrap();
            let mut p = GatewayProcess::start(data.path(), &flags.iter().map(String::as_str).collect::<Vec<_>>());
            p.owned = Some(data);
            p
        })
    };
    let (a, b) = tokio::join!(start(flags.to_vec()), start(flags.to_vec()));
    (a.unwrap(), b.unwrap())
}

/// The address in the gateway's start-up line, if this is that line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("upload-gateway listening") {
        return None;
    }
    let value = line.split("addr=").nth(1)?;
    let value: String = value.chars().take_while(|c| !c.is_whitespace()).collect();
    let addr: SocketAddr = value.trim_matches('"').parse().ok()?;
    // Listening on every interface: reach it on loopback.
    Some(if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr })
}

/// A process's resident memory in KiB. Fails the test when /proc cannot tell (the
/// process is gone, or is a zombie with no memory left): a dead gateway must not
/// pass a memory bound.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {field} (the process has exited)"))
}

/// A tiny blocking HTTP GET that returns the status code (readiness polling, with
/// no runtime needed).
pub fn http_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    Ok(std::str::from_utf8(&buf[9..12]).unwrap_or("0").parse().unwrap_or(0))
}

/// The real services `scripts/test` started; a test that needs one fails with a clear
/// message when it is absent, rather than passing without it.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the test suite with scripts/test, which starts Kafka and the S3 server")
    })
}

/// A private instance of one of the repo's service scripts (`kafka.sh`, `garage.sh`)
/// under a state folder of its own (UPLOAD_GATEWAY_STATE), for tests that stop and start
/// the service without disturbing the instance the rest of the suite shares. Stopped,
/// and its folder removed, when dropped.
pub struct PrivateService {
    script: PathBuf,
    state: PathBuf,
}

impl PrivateService {
    /// Runs `scripts/<script> start` for a fresh instance; returns it and what it printed.
    pub fn start(script: &str) -> (PrivateService, String) {
        let root = std::env::var("UPLOAD_GATEWAY_STATE").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
        let stem = script.trim_end_matches(".sh");
        let service = PrivateService {
            script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script),
            state: PathBuf::from(root).join(format!("private-{stem}-{}", uuid::Uuid::new_v4().simple())),
        };
        let out = service.run("start");
        (service, out)
    }

    /// Runs `scripts/<script> <cmd>` on this instance and returns its standard output;
    /// fails the test when the script fails.
    pub fn run(&self, cmd: &str) -> String {
        let out = Command::new("bash")
            .arg(&self.script)
            .arg(cmd)
            .env("UPLOAD_GATEWAY_STATE", &self.state)
            .output()
            .expect("bash runs the service script");
        assert!(
            out.status.success(),
            "{} {cmd} failed: {}",
            self.script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PrivateService {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).arg("stop").env("UPLOAD_GATEWAY_STATE", &self.state).status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Samples a process's resident memory every 10 ms until asked for the peak (KiB).
pub struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    pub fn start(pid: u32) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        RssPeak { stop, handle }
    }

    /// Stops sampling; the highest resident memory seen, in KiB.
    pub fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_else(|_| panic!("sampling resident memory failed: the process is gone (see above)"))
    }
}

/// Bytes that do not compress or repeat (xorshift), the same for the same seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The period of [`Big`]'s bytes.
const BIG_PERIOD: usize = (16 << 20) + 13;

/// A large payload made on the fly (never held whole): a pseudo-random block of
/// 16 MiB + 13 bytes, repeated. Its period lines up with no 8 MiB part, so a part
/// stored at the wrong offset changes the stored sha256.
#[derive(Clone)]
pub struct Big {
    block: std::sync::Arc<Vec<u8>>,
    len: u64,
}

impl Big {
    pub fn new(len: u64, seed: u64) -> Big {
        Big { block: std::sync::Arc::new(pseudo_random(BIG_PERIOD, seed)), len }
    }

    /// The first `len` bytes of this payload, as a payload.
    pub fn prefix(&self, len: u64) -> Big {
        Big { block: self.block.clone(), len }
    }

    /// Bytes `from..to`, in pieces of at most `piece`.
    pub fn pieces(&self, from: u64, to: u64, piece: u64) -> impl Iterator<Item = Vec<u8>> + Send + 'static {
        let this = self.clone();
        let period = this.block.len() as u64;
        let mut at = from;
        std::iter::from_fn(move || {
            if at >= to {
                return None;
            }
            let end = (at + piece).min(to);
            let mut out = Vec::with_capacity((end - at) as usize);
            while at < end {
                let i = (at % period) as usize;
                let n = ((end - at) as usize).min(this.block.len() - i);
                out.extend_from_slice(&this.block[i..i + n]);
                at += n as u64;
            }
            Some(out)
        })
    }

    /// A request body of bytes `from..` to the end, streamed.
    pub fn body_from(&self, from: u64) -> reqwest::Body {
        let pieces = self.pieces(from, self.len, 1 << 20).map(Ok::<_, std::io::Error>);
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    }

    pub fn sha256_hex(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        self.pieces(0, self.len, 4 * (1 << 20)).for_each(|p| h.update(p));
        hex::encode(h.finalize())
    }
}
