//! Log output as an operator sees it (item 8): no terminal colour codes in a file or a pipe,
//! colour when asked for, JSON lines on request.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the gateway binary with stderr to a pipe until it logs that it listens; returns
/// what it wrote to stderr by then.
fn stderr_until_listening(extra: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_upload-gateway"));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(extra)
        .env_remove("NO_COLOR")
        .env_remove("LOG_COLOR")
        .env_remove("LOG_JSON")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the gateway binary starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut out = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let listening = line.contains("listening");
            out.push_str(&line);
            out.push('\n');
            if listening {
                break;
            }
        }
        let _ = tx.send(out);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = rx.recv_timeout(deadline - Instant::now()).expect("the gateway logs that it listens within 30 s");
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.contains("upload-gateway listening"), "{out}");
    out
}

#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let out = stderr_until_listening(&[], &[]);
    assert!(!out.contains('\x1b'), "escape characters in piped logs:\n{out:?}");
}

#[test]
fn colour_only_when_asked_for_and_no_color_is_respected() {
    let out = stderr_until_listening(&["--log-color", "always"], &[]);
    assert!(out.contains("\x1b["), "--log-color always gives colour:\n{out:?}");
    let out = stderr_until_listening(&[], &[("LOG_COLOR", "always")]);
    assert!(out.contains("\x1b["), "LOG_COLOR=always gives colour:\n{out:?}");
    // NO_COLOR turns colour off in auto mode; an explicit flag overrides it.
    let out = stderr_until_listening(&["--log-color", "auto"], &[("NO_COLOR", "1")]);
    assert!(!out.contains('\x1b'), "{out:?}");
    let out = stderr_until_listening(&["--log-color", "never"], &[]);
    assert!(!out.contains('\x1b'), "{out:?}");
}

#[test]
fn json_logs_are_json_lines_without_colour() {
    let out = stderr_until_listening(&["--log-json", "--log-color", "always"], &[]);
    assert!(!out.contains('\x1b'), "{out:?}");
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["level"].is_string(), "{line}");
    }
}
