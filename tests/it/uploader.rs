//! The uploader (`upload-gateway upload FILE...`) as a person runs it: the binary as
//! its own process against a gateway on the embedded default, over tus and over gRPC.
//! What is asserted is what the person sees (exit code, the lines printed, the progress
//! bar) and what the gateway ends up holding; nothing of the gateway is mocked.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

const MIB: u64 = 1 << 20;

/// The uploader binary with a cache folder of the test's own (its resume state) and
/// none of the caller's uploader or log settings.
fn uploader(cache: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"));
    c.arg("upload").env("XDG_CACHE_HOME", cache).env("NO_COLOR", "1").env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("UPLOAD_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

/// A file of `size` bytes that differ from one position to the next (no two parts alike).
fn make_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    let mut left = size;
    let mut buf = vec![0u8; MIB as usize];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    path
}

fn file_sha256(path: &Path) -> String {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
            .collect()
    }

    fn show(&self) -> String {
        format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

async fn run(mut cmd: tokio::process::Command) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("the uploader ends within 180 s")
        .expect("the uploader runs");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// The resume state files left in a cache folder.
fn state_files(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("upload-gateway/uploads"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
        .unwrap_or_default()
}

async fn uploads_a_file(grpc: bool) {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 3 * MIB + 12_345);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file)
        .args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--chunk-size", "1MiB", "--json"])
        .args(["--metadata", r#"{"display_name":"host1"}"#]);
    if grpc {
        cmd.arg("--grpc");
    }
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let reports = ran.json();
    assert_eq!(reports.len(), 1, "{}", ran.show());
    let r = &reports[0];
    assert_eq!(r["status"], "uploaded", "{}", ran.show());
    assert_eq!(r["size"], 3 * MIB + 12_345);
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    let id = r["request_id"].as_str().unwrap();
    // The payload is stored whole, under its request id, and its status says so.
    assert_eq!(t.bucket_files("quarantine"), vec![id.to_string()]);
    assert_eq!(sha256_hex(&crate::common::local_bytes(t.data.path(), "quarantine", id).unwrap()), file_sha256(&file));
    let track: serde_json::Value = t.http.get(t.url(&format!("/api/ingress/v1/track/{id}"))).send().await.unwrap().json().await.unwrap();
    assert!(track["history"].as_array().unwrap().iter().any(|e| e["status"] == "announced"), "{track}");
    // Done: no resume state is left behind.
    assert!(state_files(&dir.path().join("cache")).is_empty());
}

#[tokio::test]
async fn uploads_over_tus_with_the_files_sha256() {
    uploads_a_file(false).await;
}

#[tokio::test]
async fn uploads_over_grpc_with_the_files_sha256() {
    uploads_a_file(true).await;
}

/// A 200 MiB upload whose client is SIGKILLed at about half: the same command again
/// continues from what the gateway holds, sends the rest only, and ends with one payload.
async fn a_killed_upload_continues(grpc: bool) {
    let t = spawn_app(&["--service-limits", "advisor=1073741824"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let size = 200 * MIB;
    let file = make_file(dir.path(), "big.tar.gz", size);
    let command = || {
        let mut cmd = uploader(&cache);
        cmd.arg(&file).args(["--gateway", &t.base, "--content-type", "application/vnd.redhat.advisor.collection+tgz", "--json"]);
        if grpc {
            cmd.arg("--grpc");
        }
        cmd
    };
    let mut first = command().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = t.metric("upload_gateway_received_bytes_total").await as u64;
        if got >= size / 2 {
            break;
        }
        assert!(first.try_wait().unwrap().is_none(), "the uploader ended before half of the file arrived");
        assert!(Instant::now() < deadline, "half the file did not arrive within 120 s ({got} bytes)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let at_kill = t.metric("upload_gateway_received_bytes_total").await as u64;
    assert!(at_kill < size, "the upload finished before the kill ({at_kill} bytes)");
    assert_eq!(state_files(&cache).len(), 1, "the killed run left its resume state");
    assert!(t.bucket_files("quarantine").is_empty());

    let ran = run(command()).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(ran.stderr.contains("continuing upload"), "the second run says it continues:\n{}", ran.show());
    let r = &ran.json()[0];
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    let received = t.metric("upload_gateway_received_bytes_total").await as u64;
    eprintln!("resume over {}: killed at {at_kill} bytes received; {received} received in all for {size} ({} sent twice)", if grpc { "gRPC" } else { "tus" }, received.saturating_sub(size));
    // At most one part (8 MiB, the chunk size and the gateway's commit interval) sent twice.
    assert!(received <= size + 8 * MIB, "the gateway received {received} bytes for a {size}-byte file (killed at {at_kill})");
    assert_eq!(t.bucket_files("quarantine"), vec![r["request_id"].as_str().unwrap().to_string()]);
    assert!(state_files(&cache).is_empty());
}

#[tokio::test]
async fn a_killed_tus_upload_continues_where_the_gateway_stands() {
    a_killed_upload_continues(false).await;
}

#[tokio::test]
async fn a_killed_grpc_upload_continues_where_the_gateway_stands() {
    a_killed_upload_continues(true).await;
}

/// The gateway is not listening for the first 3 s: the uploader retries (and says so)
/// and succeeds once it is up.
async fn retries_until_the_gateway_is_up(grpc: bool) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 2 * MIB);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &format!("http://{listen}"), "--service", "advisor", "--category", "collection", "--json"]);
    if grpc {
        cmd.arg("--grpc");
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let data_path = data.path().to_path_buf();
    let gateway = tokio::task::spawn_blocking(move || GatewayProcess::start_on(&listen, &data_path, &[])).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.unwrap().unwrap();
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(ran.stderr.contains("trying again"), "the retries are shown:\n{}", ran.show());
    let r = &ran.json()[0];
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    assert_eq!(list_bucket(data.path(), "quarantine"), vec![r["request_id"].as_str().unwrap().to_string()]);
    drop(gateway);
}

#[tokio::test]
async fn tus_retries_until_the_gateway_is_up() {
    retries_until_the_gateway_is_up(false).await;
}

#[tokio::test]
async fn grpc_retries_until_the_gateway_is_up() {
    retries_until_the_gateway_is_up(true).await;
}

/// `--wait` with the built-in validator deciding: the verdict is printed and is the
/// exit code (3 for rejected, 0 for advertised).
async fn wait_for_the_verdict(grpc: bool, verdict: &str, want_status: &str, want_code: i32) {
    let t = spawn_app(&[]).await;
    let mut validator = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args(["validate", "--gateway", &t.base, "--service", "testareno", "--verdict", verdict, "--count", "1"])
        .arg("--data-dir")
        .arg(t.data.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the validator subscribes", || async {
        t.metric("upload_gateway_subscribers{service=\"testareno\"}").await >= 1.0
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 100_000);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &t.base, "--service", "testareno", "--category", "something", "--wait", "--wait-timeout", "60s"]);
    if grpc {
        cmd.arg("--grpc");
    }
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(want_code), "{}", ran.show());
    let last = ran.stdout.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("status={want_status}")) && last.contains("request_id="), "{}", ran.show());
    let _ = tokio::time::timeout(Duration::from_secs(10), validator.wait()).await;
}

#[tokio::test]
async fn wait_over_tus_exits_with_the_rejected_code_when_the_validator_says_failure() {
    wait_for_the_verdict(false, "failure", "rejected", 3).await;
}

#[tokio::test]
async fn wait_over_grpc_exits_with_the_rejected_code_when_the_validator_says_failure() {
    wait_for_the_verdict(true, "failure", "rejected", 3).await;
}

#[tokio::test]
async fn wait_over_grpc_exits_0_when_the_payload_is_advertised() {
    wait_for_the_verdict(true, "success", "advertised", 0).await;
}

/// `--wait` with no validator to answer: once `--wait-timeout` passes, the uploader
/// says so and exits 1 (error or time-out), over tus and over gRPC; the upload itself
/// was stored.
#[tokio::test]
async fn wait_without_a_verdict_exits_1_after_its_timeout() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 10_000);
    for grpc in [false, true] {
        let mut cmd = uploader(&dir.path().join("cache"));
        cmd.arg(&file).args(["--gateway", &t.base, "--service", "testareno", "--category", "something", "--wait", "--wait-timeout", "2s"]);
        if grpc {
            cmd.arg("--grpc");
        }
        let started = std::time::Instant::now();
        let ran = run(cmd).await;
        assert_eq!(ran.code, Some(1), "grpc={grpc}: {}", ran.show());
        assert!(started.elapsed() >= Duration::from_secs(2), "grpc={grpc}: it waited the 2 s: {}", ran.show());
        assert!(format!("{}{}", ran.stdout, ran.stderr).contains("no verdict for"), "grpc={grpc}: {}", ran.show());
    }
    assert_eq!(t.metric("upload_gateway_uploads_accepted_total{service=\"testareno\"}").await, 2.0, "both uploads were stored");
}

/// Under a pseudo-terminal (util-linux `script`): a progress bar is drawn, and the last
/// line names the request id.
#[tokio::test]
async fn on_a_terminal_a_bar_is_drawn_and_the_last_line_names_the_request_id() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 16 * MIB);
    let id = format!("pty{}", uuid::Uuid::new_v4().simple());
    let line = format!(
        "{} upload {} --gateway {} --service advisor --category collection --chunk-size 256KiB --grpc --request-id {id}",
        env!("CARGO_BIN_EXE_upload-gateway"),
        file.display(),
        t.base
    );
    let mut cmd = tokio::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env("TERM", "xterm-256color")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let raw = &ran.stdout;
    assert!(raw.contains("\x1b[") && raw.contains('\r'), "the bar redraws itself in place:\n{raw:?}");
    let out = &strip_ansi(raw);
    assert!(out.contains("[=========="), "a bar is drawn:\n{out:?}");
    assert!(out.contains("16.00 MiB") || out.contains("16 MiB"), "the bar shows the size:\n{out:?}");
    let last = out
        .split('\n')
        .map(|l| l.rsplit('\r').find(|s| !s.trim().is_empty()).unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
        .last()
        .unwrap_or_default();
    assert!(last.contains(&format!("request_id={id}")), "the last line names the request id: {last:?}\n{out:?}");
    assert_eq!(t.bucket_files("quarantine"), vec![id]);
}

/// Text without its ANSI escape sequences (colours, cursor moves).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Standard output and error to pipes: plain progress lines, no control characters.
#[tokio::test]
async fn without_a_terminal_there_are_plain_lines_and_no_control_characters() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 8 * MIB);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--chunk-size", "512KiB"]);
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    for (name, text) in [("stdout", &ran.stdout), ("stderr", &ran.stderr)] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{name} has control characters:\n{text:?}"
        );
    }
    assert!(ran.stderr.contains("payload.tar.gz: sending"), "progress lines on stderr:\n{}", ran.show());
    assert!(ran.stderr.contains("8.00 MiB"), "{}", ran.show());
    let last = ran.stdout.lines().last().unwrap_or_default();
    assert!(last.contains("request_id=") && last.contains("status=uploaded"), "{}", ran.show());
}

/// Several files at once: each becomes its own payload, reported in the order given.
#[tokio::test]
async fn several_files_in_parallel() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..3).map(|i| make_file(dir.path(), &format!("p{i}.tar.gz"), (i + 1) * MIB + i)).collect();
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.args(&files).args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--parallel", "3", "--json"]);
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let reports = ran.json();
    assert_eq!(reports.len(), 3, "{}", ran.show());
    for (r, f) in reports.iter().zip(&files) {
        assert_eq!(r["file"].as_str().unwrap(), f.display().to_string());
        assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(f));
    }
    assert_eq!(t.bucket_files("quarantine").len(), 3);
}

/// A refusal is final: no retries, the gateway's sentence, exit code 1; a wrong
/// command line is exit code 2.
#[tokio::test]
async fn a_refused_upload_stops_at_once_with_the_gateways_sentence() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 1000);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &t.base, "--service", "nosuchservice", "--category", "x", "--grpc"]);
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(1), "{}", ran.show());
    assert!(ran.stderr.contains("payload.tar.gz: failed"), "{}", ran.show());
    assert!(ran.stderr.contains("InvalidArgument"), "{}", ran.show());
    assert!(!ran.stderr.contains("trying again"), "{}", ran.show());
    assert!(t.bucket_files("quarantine").is_empty());

    let mut usage = uploader(&dir.path().join("cache"));
    usage.arg(&file).args(["--gateway", &t.base]);
    let ran = run(usage).await;
    assert_eq!(ran.code, Some(2), "no content type is a usage error:\n{}", ran.show());
    assert!(ran.stderr.contains("--content-type"), "{}", ran.show());
}

/// The README's uploader examples, run as written (on the test's port, with the binary
/// this suite built).
#[tokio::test]
async fn the_readme_examples_work_as_written() {
    let readme = include_str!("../../README.md");
    let section = readme.split("## The uploader").nth(1).expect("README has a section on the uploader");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("an sh block");
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let script = block
        .replace("localhost:8080", &format!("localhost:{}", t.app.addr().port()))
        .replace("upload-gateway upload", &format!("{} upload", env!("CARGO_BIN_EXE_upload-gateway")));
    let out = tokio::process::Command::new("sh")
        .arg("-ec")
        .arg(&script)
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{script}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("archive.tar.gz: request_id=") && lines[0].ends_with("status=uploaded"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[1]).expect("the second prints JSON");
    assert_eq!(v["sha256"], sha256_hex(b"hello\n"));
    assert_eq!(t.bucket_files("quarantine").len(), 2);
}

/// An upload begun over tus by an identity (`--identity @FILE`), interrupted (Ctrl-C),
/// and finished with `--grpc`: the same upload, continued, as its owner.
#[tokio::test]
async fn an_upload_begun_over_tus_is_finished_over_grpc_by_its_owner() {
    let t = spawn_app(&["--service-limits", "advisor=1073741824"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // Large enough that it is still being sent when the signal arrives (a tenth of it).
    let size = 160 * MIB;
    let file = make_file(dir.path(), "p.tar.gz", size);
    let id_file = dir.path().join("identity");
    std::fs::write(&id_file, format!("{}\n", identity("acct1", "org1"))).unwrap();
    let command = |grpc: bool| {
        let mut cmd = uploader(&cache);
        cmd.arg(&file)
            .args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--chunk-size", "1MiB", "--json"])
            .arg("--identity")
            .arg(format!("@{}", id_file.display()));
        if grpc {
            cmd.arg("--grpc");
        }
        cmd
    };
    let first = command(false).spawn().unwrap();
    eventually(Duration::from_secs(60), "a tenth of the file arrives", || async {
        t.metric("upload_gateway_received_bytes_total").await as u64 >= size / 10
    })
    .await;
    // Ctrl-C: the uploader stops, says how to go on, and keeps its resume state.
    let pid = first.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), first.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted; the same command again continues"), "{stderr}");
    assert_eq!(state_files(&cache).len(), 1);

    let ran = run(command(true)).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(ran.stderr.contains("continuing upload"), "{}", ran.show());
    let r = &ran.json()[0];
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    let id = r["request_id"].as_str().unwrap();
    assert_eq!(t.bucket_files("quarantine"), vec![id.to_string()]);
    let received = t.metric("upload_gateway_received_bytes_total").await as u64;
    assert!(received <= size + 8 * MIB, "{received} bytes received for {size}");
    // The payload is the identity's: its org reads its status, another org does not.
    let track = |org: &'static str| {
        let url = t.url(&format!("/api/ingress/v1/track/{id}"));
        async move { reqwest::Client::new().get(url).header("x-rh-identity", identity("a", org)).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(track("org1").await, 200);
    assert_eq!(track("org2").await, 404);
}

/// An https:// gateway whose certificate only `--ca-file` vouches for, over tus and gRPC.
#[tokio::test]
async fn over_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let t = spawn_app(&["--tls-cert", cert_pem.to_str().unwrap(), "--tls-key", key_pem.to_str().unwrap()]).await;
    let gateway = format!("https://localhost:{}", t.app.addr().port());
    let file = make_file(dir.path(), "payload.tar.gz", 2 * MIB + 1);
    for grpc in [false, true] {
        let mut cmd = uploader(&dir.path().join("cache"));
        cmd.arg(&file).args(["--gateway", &gateway, "--service", "advisor", "--category", "collection", "--json"]).arg("--ca-file").arg(&cert_pem);
        if grpc {
            cmd.arg("--grpc");
        }
        let ran = run(cmd).await;
        assert_eq!(ran.code, Some(0), "grpc={grpc}: {}", ran.show());
        assert_eq!(ran.json()[0]["sha256"].as_str().unwrap(), file_sha256(&file));
    }
    // Without the CA the certificate is refused, and that is said at once (no retry
    // would change it).
    for grpc in [false, true] {
        let mut cmd = uploader(&dir.path().join("cache2"));
        cmd.arg(&file).args(["--gateway", &gateway, "--service", "advisor", "--category", "collection"]);
        if grpc {
            cmd.arg("--grpc");
        }
        let ran = run(cmd).await;
        assert_eq!(ran.code, Some(1), "grpc={grpc}: {}", ran.show());
        assert!(ran.stderr.to_lowercase().contains("certificate"), "grpc={grpc}: {}", ran.show());
        assert!(!ran.stderr.contains("trying again"), "grpc={grpc}: {}", ran.show());
    }
    assert_eq!(t.bucket_files("quarantine").len(), 2);
}

/// A counter from a gateway process's `/metrics` (0 when absent or unreachable).
async fn metric_at(base: &str, name: &str) -> u64 {
    let Ok(resp) = reqwest::get(format!("{base}/metrics")).await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// The link drops in the middle: the gateway is SIGKILLed at about half of a 200 MiB
/// upload and started again on the same port. The same run retries, asks where the
/// upload stands, and sends only what the gateway had not committed.
#[tokio::test]
async fn a_gateway_killed_mid_upload_is_waited_for_and_the_upload_goes_on() {
    const LIMIT: [&str; 2] = ["--service-limits", "advisor=1073741824"];
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_path_buf();
    let first = tokio::task::spawn_blocking(move || GatewayProcess::start(&data_path, &LIMIT)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let size = 200 * MIB;
    let file = make_file(dir.path(), "big.tar.gz", size);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &first.base, "--service", "advisor", "--category", "collection", "--json"]);
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut at_kill;
    loop {
        at_kill = metric_at(&first.base, "upload_gateway_received_bytes_total").await;
        if at_kill >= size / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "half the file did not arrive within 120 s ({at_kill} bytes)");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = first.addr.to_string();
    first.signal("KILL");
    drop(first);
    let data_path = data.path().to_path_buf();
    let second = tokio::task::spawn_blocking(move || GatewayProcess::start_on(&addr, &data_path, &LIMIT)).await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output()).await.unwrap().unwrap();
    let ran = Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(ran.stderr.contains("trying again"), "the dropped link and the retries are shown:\n{}", ran.show());
    let r = &ran.json()[0];
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    assert_eq!(list_bucket(data.path(), "quarantine"), vec![r["request_id"].as_str().unwrap().to_string()]);
    // The second gateway got the rest, and at most what the first one had read but not
    // committed (a part, 8 MiB) and the chunk in flight at the kill (8 MiB) again.
    let again = metric_at(&second.base, "upload_gateway_received_bytes_total").await;
    eprintln!("gateway killed at {at_kill} bytes received; the second gateway received {again} (rest {})", size - at_kill);
    assert!(again <= size - at_kill + 16 * MIB, "the second gateway received {again} bytes; the first had {at_kill} of {size}");
}

/// The gateway's received-bytes counter once it has stopped moving (what a killed
/// client had in flight is counted as the gateway drains its socket).
async fn settled_received(base: &str) -> u64 {
    let mut last = metric_at(base, "upload_gateway_received_bytes_total").await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = metric_at(base, "upload_gateway_received_bytes_total").await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// An upload whose client is SIGKILLed part-way, run again with `--no-resume`: it does
/// not continue but sends the whole file again as a new upload (the old one is
/// cancelled on the gateway), and ends with one stored payload, the file's bytes.
async fn no_resume_starts_over_after_a_kill(grpc: bool) {
    let t = spawn_app(&["--service-limits", "advisor=1073741824"]).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let size = 96 * MIB;
    let file = make_file(dir.path(), "big.tar.gz", size);
    let command = |no_resume: bool| {
        let mut cmd = uploader(&cache);
        cmd.arg(&file).args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--chunk-size", "1MiB", "--json"]);
        if grpc {
            cmd.arg("--grpc");
        }
        if no_resume {
            cmd.arg("--no-resume");
        }
        cmd
    };
    let mut first = command(false).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = metric_at(&t.base, "upload_gateway_received_bytes_total").await;
        if got >= size / 4 {
            break;
        }
        assert!(first.try_wait().unwrap().is_none(), "the uploader ended before a quarter of the file arrived");
        assert!(Instant::now() < deadline, "a quarter of the file did not arrive within 60 s ({got} bytes)");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let at_kill = settled_received(&t.base).await;
    assert!(at_kill < size, "the upload finished before the kill ({at_kill} bytes)");
    let states = state_files(&cache);
    assert_eq!(states.len(), 1, "the killed run left its resume state");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&states[0]).unwrap()).unwrap();
    let (old_id, old_url) = (saved["upload_id"].as_str().unwrap().to_string(), saved["upload_url"].as_str().unwrap().to_string());
    assert_eq!(
        t.http.head(&old_url).header("Tus-Resumable", "1.0.0").send().await.unwrap().status().as_u16(),
        200,
        "the killed run's upload is on the gateway"
    );

    let ran = run(command(true)).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    assert!(!ran.stderr.contains("continuing upload"), "--no-resume does not continue:\n{}", ran.show());
    let r = &ran.json()[0];
    let id = r["request_id"].as_str().unwrap();
    assert_ne!(id, old_id, "a new upload, not the killed one:\n{}", ran.show());
    assert_eq!(r["sha256"].as_str().unwrap(), file_sha256(&file));
    let received = metric_at(&t.base, "upload_gateway_received_bytes_total").await;
    eprintln!("--no-resume over {}: killed at {at_kill} bytes; the second run sent {} for {size}", if grpc { "gRPC" } else { "tus" }, received - at_kill);
    assert!(received - at_kill >= size, "the second run sent {} bytes, not the whole {size}-byte file again", received - at_kill);
    // One payload, the file's bytes; the killed run's upload was cancelled.
    assert_eq!(t.bucket_files("quarantine"), vec![id.to_string()]);
    assert_eq!(sha256_hex(&crate::common::local_bytes(t.data.path(), "quarantine", id).unwrap()), file_sha256(&file));
    let old = t.http.head(&old_url).header("Tus-Resumable", "1.0.0").send().await.unwrap().status().as_u16();
    assert!(old == 404 || old == 410, "the killed run's upload is cancelled, its HEAD answers {old}");
    assert!(state_files(&cache).is_empty());
}

#[tokio::test]
async fn no_resume_over_tus_sends_the_whole_file_again_after_a_kill() {
    no_resume_starts_over_after_a_kill(false).await;
}

#[tokio::test]
async fn no_resume_over_grpc_sends_the_whole_file_again_after_a_kill() {
    no_resume_starts_over_after_a_kill(true).await;
}

/// Every setting from the environment variables the flags declare, none on the command
/// line but the file: the upload succeeds as the identity given, with the request id
/// given, and reported as JSON.
async fn settings_from_the_environment(grpc: bool) {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", MIB + 7);
    let id = format!("env{}", uuid::Uuid::new_v4().simple());
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file)
        .env("UPLOAD_GATEWAY_URL", &t.base)
        .env("UPLOAD_IDENTITY", identity("acct1", "org1"))
        .env("UPLOAD_REQUEST_ID", &id)
        .env("UPLOAD_JSON", "true");
    if grpc {
        cmd.env("UPLOAD_SERVICE", "advisor").env("UPLOAD_CATEGORY", "collection").env("UPLOAD_GRPC", "true");
    } else {
        cmd.env("UPLOAD_CONTENT_TYPE", "application/vnd.redhat.advisor.collection+tgz");
    }
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let reports = ran.json();
    assert_eq!(reports.len(), 1, "UPLOAD_JSON gives JSON:\n{}", ran.show());
    assert_eq!(reports[0]["request_id"], id.as_str());
    assert_eq!(reports[0]["sha256"].as_str().unwrap(), file_sha256(&file));
    assert_eq!(t.bucket_files("quarantine"), vec![id.clone()]);
    // The payload is the identity's: its org reads its status, another org does not.
    let track = |org: &'static str| {
        let url = t.url(&format!("/api/ingress/v1/track/{id}"));
        async move { reqwest::Client::new().get(url).header("x-rh-identity", identity("a", org)).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(track("org1").await, 200);
    assert_eq!(track("org2").await, 404);
    // The content type from the environment picked the service.
    assert_eq!(t.metric("upload_gateway_uploads_accepted_total{service=\"advisor\"}").await, 1.0);
    // UPLOAD_GRPC picked the protocol: gRPC `Write` calls, or none.
    let metrics = reqwest::get(t.url("/metrics")).await.unwrap().text().await.unwrap();
    let grpc_writes = metrics
        .lines()
        .any(|l| l.starts_with("upload_gateway_request_duration_seconds_count{protocol=\"grpc\"") && l.contains("Write"));
    assert_eq!(grpc_writes, grpc, "gRPC Write calls in the gateway's metrics: {grpc_writes}, want {grpc}");
}

#[tokio::test]
async fn tus_settings_from_environment_variables() {
    settings_from_the_environment(false).await;
}

#[tokio::test]
async fn grpc_settings_from_environment_variables() {
    settings_from_the_environment(true).await;
}

/// `--quiet`: a successful upload prints nothing at all and exits 0; a failed one prints
/// its error only (README: "errors only").
#[tokio::test]
async fn quiet_prints_nothing_on_success_and_the_error_on_failure() {
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 2 * MIB);
    for grpc in [false, true] {
        let mut cmd = uploader(&dir.path().join("cache"));
        cmd.arg(&file).args(["--gateway", &t.base, "--service", "advisor", "--category", "collection", "--chunk-size", "256KiB", "--quiet"]);
        if grpc {
            cmd.arg("--grpc");
        }
        let ran = run(cmd).await;
        assert_eq!(ran.code, Some(0), "grpc={grpc}: {}", ran.show());
        assert_eq!((ran.stdout.as_str(), ran.stderr.as_str()), ("", ""), "grpc={grpc}: --quiet prints nothing on success");
    }
    assert_eq!(t.bucket_files("quarantine").len(), 2);

    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &t.base, "--service", "nosuchservice", "--category", "x", "-q"]);
    let ran = run(cmd).await;
    assert_eq!(ran.code, Some(1), "{}", ran.show());
    assert_eq!(ran.stdout, "", "{}", ran.show());
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "only the error:\n{}", ran.show());
    assert!(lines[0].contains("payload.tar.gz: failed") && lines[0].contains("the gateway answered 4"), "{}", ran.show());
}

/// A stand-in HTTP/1.1 server that answers every request `503` with `Retry-After: 2`
/// and a sentence, and records when each request came (method and path).
async fn always_busy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push((Instant::now(), line));
                let body = "the gateway is busy; try again later\n";
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(answer.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, seen)
}

/// `503` with `Retry-After: 2`, and `--retries 1`: the one retry comes no sooner than
/// 2 s after the first try (the backoff alone would be at most 0.5 s), and when the
/// retries are used up the command fails with the gateway's sentence.
#[tokio::test]
async fn retry_after_is_honoured_and_the_gateways_sentence_ends_it() {
    let (base, seen) = always_busy().await;
    let dir = tempfile::tempdir().unwrap();
    let file = make_file(dir.path(), "payload.tar.gz", 1000);
    let mut cmd = uploader(&dir.path().join("cache"));
    cmd.arg(&file).args(["--gateway", &base, "--service", "advisor", "--category", "collection", "--retries", "1"]);
    let ran = run(cmd).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(ran.code, Some(1), "{}", ran.show());
    assert_eq!(seen.len(), 2, "one try and one retry: {:?}\n{}", seen.iter().map(|s| &s.1).collect::<Vec<_>>(), ran.show());
    assert!(seen.iter().all(|(_, l)| l.starts_with("POST /api/ingress/v1/uploads/ ")), "{seen:?}");
    let gap = seen[1].0 - seen[0].0;
    assert!(gap >= Duration::from_millis(1950), "the retry came {gap:?} after the first try, before Retry-After's 2 s");
    assert!(gap < Duration::from_secs(5), "the retry came {gap:?} after the first try");
    assert!(ran.stderr.contains("trying again in 2 s (retry 1 of 1)"), "{}", ran.show());
    assert!(ran.stderr.contains("payload.tar.gz: failed"), "{}", ran.show());
    assert!(ran.stderr.contains("503 Service Unavailable: the gateway is busy; try again later"), "the gateway's sentence:\n{}", ran.show());
    assert!(ran.stderr.contains("gave up after 2 tries in a row"), "{}", ran.show());
}

/// A stand-in gRPC gateway whose receipts name other bytes than it was sent: it takes
/// `CreateUpload` and `Write` as the gateway does, but its receipt's sha256 is not that
/// of the bytes. It says where an upload stands (complete once written) and knows the
/// payloads it has finished, as the real one does.
#[derive(Default, Clone)]
struct LyingGateway {
    /// Upload id → (bytes written, finished).
    uploads: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, bool)>>>,
}

mod lying {
    use std::pin::Pin;

    use futures_util::{Stream, StreamExt};
    use tonic::{Request, Response, Status, Streaming};
    use upload_gateway::grpc::pb;

    pub const WRONG_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    #[tonic::async_trait]
    impl pb::upload_gateway_server::UploadGateway for super::LyingGateway {
        async fn create_upload(&self, req: Request<pb::CreateUploadRequest>) -> Result<Response<pb::UploadState>, Status> {
            let length = req.into_inner().header.map(|h| h.expected_size).unwrap_or_default();
            let mut uploads = self.uploads.lock().unwrap();
            let id = format!("lie{}", uploads.len() + 1);
            uploads.insert(id.clone(), (0, false));
            Ok(Response::new(pb::UploadState { upload_id: id, length, length_known: true, ..Default::default() }))
        }

        async fn query_write_status(&self, req: Request<pb::QueryWriteStatusRequest>) -> Result<Response<pb::UploadState>, Status> {
            let id = req.into_inner().upload_id;
            let Some(&(committed_size, complete)) = self.uploads.lock().unwrap().get(&id) else {
                return Err(Status::not_found("no such upload"));
            };
            Ok(Response::new(pb::UploadState { upload_id: id, committed_size, complete, ..Default::default() }))
        }

        async fn write(&self, req: Request<Streaming<pb::WriteRequest>>) -> Result<Response<pb::WriteResponse>, Status> {
            let mut stream = req.into_inner();
            let (mut id, mut size, mut finished) = (String::new(), 0u64, false);
            while let Some(m) = stream.next().await {
                let m = m?;
                if id.is_empty() {
                    id = m.upload_id.clone();
                    size = m.write_offset;
                }
                size += m.data.len() as u64;
                finished |= m.finish_write;
            }
            self.uploads.lock().unwrap().insert(id.clone(), (size, finished));
            let receipt = finished.then(|| pb::UploadReceipt { request_id: id, size, sha256: WRONG_SHA256.into(), ..Default::default() });
            Ok(Response::new(pb::WriteResponse { committed_size: size, receipt }))
        }

        async fn get_status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusHistory>, Status> {
            let id = req.into_inner().request_id;
            match self.uploads.lock().unwrap().get(&id) {
                Some((_, true)) => Ok(Response::new(pb::StatusHistory { request_id: id, ..Default::default() })),
                _ => Err(Status::not_found("no such payload")),
            }
        }

        async fn cancel_upload(&self, req: Request<pb::CancelUploadRequest>) -> Result<Response<pb::UploadState>, Status> {
            let id = req.into_inner().upload_id;
            self.uploads.lock().unwrap().remove(&id);
            Ok(Response::new(pb::UploadState { upload_id: id, ..Default::default() }))
        }

        async fn upload(&self, _: Request<Streaming<pb::UploadRequest>>) -> Result<Response<pb::UploadReceipt>, Status> {
            Err(Status::unimplemented("not here"))
        }

        type SubscribeStream = BoxStream<pb::Announcement>;
        async fn subscribe(&self, _: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
            Err(Status::unimplemented("not here"))
        }

        type ValidationResultStream = BoxStream<pb::VerdictAck>;
        async fn validation_result(&self, _: Request<Streaming<pb::Verdict>>) -> Result<Response<Self::ValidationResultStream>, Status> {
            Err(Status::unimplemented("not here"))
        }

        type WatchStatusStream = BoxStream<pb::StatusEvent>;
        async fn watch_status(&self, _: Request<pb::StatusRequest>) -> Result<Response<Self::WatchStatusStream>, Status> {
            Err(Status::unimplemented("not here"))
        }

        type DownloadStream = BoxStream<pb::DownloadChunk>;
        async fn download(&self, _: Request<pb::DownloadRequest>) -> Result<Response<Self::DownloadStream>, Status> {
            Err(Status::unimplemented("not here"))
        }
    }
}

/// A receipt whose sha256 is not the file's is an error (exit 1, a sentence naming both
/// sums), and stays one: the same command again does not take the finished upload for
/// a good one.
#[tokio::test]
async fn a_receipt_with_another_sha256_is_an_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = LyingGateway::default();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(upload_gateway::grpc::pb::upload_gateway_server::UploadGatewayServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let file = make_file(dir.path(), "payload.tar.gz", MIB + 3);
    let sha = file_sha256(&file);
    for round in 1..=2 {
        let mut cmd = uploader(&cache);
        cmd.arg(&file).args(["--gateway", &base, "--service", "advisor", "--category", "collection", "--grpc", "--json", "--retries", "1"]);
        let ran = run(cmd).await;
        assert_eq!(ran.code, Some(1), "round {round}: {}", ran.show());
        let r = &ran.json()[0];
        assert_eq!(r["status"], "failed", "round {round}: {}", ran.show());
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("sha256 {}", lying::WRONG_SHA256)) && error.contains(&format!("sha256 {sha}")),
            "round {round}: the error names both sums:\n{}",
            ran.show()
        );
        assert!(ran.stderr.contains("payload.tar.gz: failed (request id lie"), "round {round}: {}", ran.show());
        // The upload ended (the gateway finished it): nothing is left to continue.
        assert!(state_files(&cache).is_empty(), "round {round}: a resume state is left:\n{}", ran.show());
    }
    assert_eq!(fake.uploads.lock().unwrap().len(), 2, "the second run sent the file again as a new upload");
    server.abort();
}
