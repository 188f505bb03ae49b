//! What every integration test needs: a gateway on port 0 (in process, or as its own
//! process), clients, and the real services the test command started.
#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use upload_gateway::queue::{Delivery, Message};
use upload_gateway::{App, Config};

pub use upload_gateway::grpc::pb;

pub mod s3;

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
    TestApp {
        app,
        base,
        data,
        http: reqwest::Client::new(),
    }
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

    /// Posts a multipart upload the way curl -F does.
    pub async fn upload(&self, field: &str, content_type: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name("test-archive.tar.gz")
            .mime_str(content_type)
            .unwrap();
        let form = reqwest::multipart::Form::new().part(field.to_string(), part);
        self.http
            .post(self.url("/api/ingress/v1/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// The files in one bucket folder of the embedded storage.
    pub fn bucket_files(&self, bucket: &str) -> Vec<String> {
        list_bucket(self.data.path(), bucket)
    }

    /// A counter's value from `/metrics` (0 when absent).
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
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

pub fn list_bucket(data: &std::path::Path, bucket: &str) -> Vec<String> {
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

/// The gateway as its own process (for memory, signals and restarts).
pub struct GatewayProcess {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
}

impl GatewayProcess {
    /// Starts the binary on a free port with `--data-dir data` and extra flags, and
    /// waits until `/readyz` answers 200.
    pub fn start(data: &std::path::Path, extra: &[&str]) -> GatewayProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gateway binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let p = GatewayProcess { child, base, data: data.to_path_buf() };
        p.wait_ready(Duration::from_secs(30));
        p
    }

    pub fn wait_ready(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        let url = format!("{}/readyz", self.base);
        while std::time::Instant::now() < deadline {
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

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
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

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
        self.handle.join().unwrap()
    }
}
