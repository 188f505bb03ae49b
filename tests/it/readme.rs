//! The README's examples, run as written (only the port differs: the test gateway
//! listens on a free one), with the real curl and grpcurl.


use std::process::Command;

use crate::common::*;

/// The shell lines of the README's "Try it" section that a user would paste.
fn readme_commands() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = readme.split("## Try it").nth(1).expect("README has a Try it section");
    let section = section.split("\n## ").next().unwrap();
    let mut in_sh = false;
    let mut lines = Vec::new();
    for line in section.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && !l.is_empty() => lines.push(l.to_string()),
            _ => {}
        }
    }
    lines
}

fn grpcurl_on_path() -> bool {
    Command::new("grpcurl").arg("-version").output().is_ok()
}

#[tokio::test]
async fn every_readme_example_works_as_written() {
    assert!(
        grpcurl_on_path(),
        "grpcurl is not on PATH: run the suite with scripts/test, which installs it"
    );
    let t = spawn_app(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // "From the same folder as the gateway": ./data is the gateway's data folder.
    std::os::unix::fs::symlink(t.data.path(), dir.path().join("data")).unwrap();
    let port = t.app.addr().port().to_string();
    let commands = readme_commands();
    assert!(commands.iter().filter(|c| c.starts_with("grpcurl")).count() >= 4);
    assert!(commands.iter().any(|c| c.starts_with("curl -F \"upload=@")));
    for cmd in &commands {
        // `cargo run --release --` is the binary this test suite built.
        let cmd_here = cmd
            .replace("localhost:8080", &format!("localhost:{port}"))
            .replace("cargo run --release --", env!("CARGO_BIN_EXE_upload-gateway"));
        let out = tokio::task::spawn_blocking({
            let dir = dir.path().to_path_buf();
            move || Command::new("sh").arg("-c").arg(&cmd_here).current_dir(dir).output().unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{cmd}\nstdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
        let expect: &[&str] = if cmd.starts_with("curl -F") {
            &["\"request_id\""]
        } else if cmd.ends_with(" list") {
            &["upload.v1.UploadGateway", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
        } else if cmd.contains(" describe ") {
            &["rpc Upload ( stream .upload.v1.UploadRequest ) returns ( .upload.v1.UploadReceipt )"]
        } else if cmd.contains("Health/Check") {
            &["\"SERVING\""]
        } else if cmd.contains("UploadGateway/Upload") {
            &["\"requestId\"", "\"sha256\"", "\"service\": \"advisor\""]
        } else if cmd.contains(" validate ") {
            &["service=testareno", "outcome=promoted"]
        } else {
            &[]
        };
        for e in expect {
            assert!(stdout.contains(e), "{cmd}\nshould print {e:?}, printed:\n{stdout}");
        }
    }
    // Both curl forms and the grpcurl upload each stored a payload; the validator
    // promoted the testareno one.
    assert_eq!(t.bucket_files("quarantine").len(), 2);
    assert_eq!(t.bucket_files("perm").len(), 1);
    assert!(commands.iter().any(|c| c.contains(" validate ")), "the README shows the built-in validator");
}

/// The README's first command, `cargo run --release`, starts the gateway: `cargo run`
/// picks the package's `default-run` binary, and that is `upload-gateway` (cargo's
/// metadata says so without another build: a nested `cargo run` in the test profile
/// would build the dependencies a second time, without the dev-dependencies' features).
#[test]
fn cargo_run_picks_the_gateway() {
    let readme = include_str!("../../README.md");
    assert!(readme.contains("```sh\ncargo run --release\n```"), "the README's first command changed: update this test");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = &meta["packages"][0];
    assert_eq!(package["default_run"], "upload-gateway", "cargo run would not know which binary to run");
    let bins: Vec<&str> = package["targets"].as_array().unwrap().iter()
        .filter(|t| t["kind"][0] == "bin").map(|t| t["name"].as_str().unwrap()).collect();
    assert!(bins.contains(&"upload-gateway"), "{bins:?}");
    // And that binary is the gateway.
    let out = Command::new(env!("CARGO_BIN_EXE_upload-gateway")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("upload-gateway {}", env!("CARGO_PKG_VERSION")));
}
