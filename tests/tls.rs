//! TLS on the one port (contract §1): ALPN h2 for gRPC, http/1.1 for REST.

mod common;

use std::process::Command;

use common::*;

fn self_signed(dir: &std::path::Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string())
}

async fn run(cmd: &mut Command) -> (bool, String) {
    let out = tokio::task::block_in_place(|| cmd.output().unwrap());
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_over_http1_and_h2_and_grpc_share_the_tls_port() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let t = spawn_app(&["--tls-cert", &cert, "--tls-key", &key]).await;
    let https = format!("https://localhost:{}", t.app.addr().port());
    let file = certs.path().join("a.tgz");
    std::fs::write(&file, b"over tls").unwrap();

    for version in ["--http1.1", "--http2"] {
        let (ok, out) = run(Command::new("curl").args([
            "-sk", version, "-w", "\n%{http_version} %{http_code}",
            "-F", &format!("file=@{};type=application/vnd.redhat.advisor.tls+tgz", file.display()),
            &format!("{https}/api/ingress/v1/upload"),
        ]))
        .await;
        assert!(ok, "{out}");
        let want = if version == "--http2" { "2 202" } else { "1.1 202" };
        assert!(out.trim_end().ends_with(want), "{version}: {out}");
    }
    let (ok, out) = run(Command::new("grpcurl").args(["-insecure", &https.replace("https://", ""), "list"])).await;
    assert!(ok && out.contains("upload.v1.UploadGateway"), "{out}");
    // Plain text on a TLS port is not served.
    let (ok, _) = run(Command::new("curl").args(["-s", "--max-time", "5", &format!("http://localhost:{}/healthz", t.app.addr().port())])).await;
    assert!(!ok);
}

#[tokio::test]
async fn a_bad_certificate_is_a_start_up_error_that_names_the_file() {
    let data = tempfile::tempdir().unwrap();
    let bogus = data.path().join("cert.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let config = upload_gateway::Config::from_args([
        "gw", "--listen", "127.0.0.1:0", "--data-dir", &data.path().display().to_string(),
        "--tls-cert", &bogus.display().to_string(), "--tls-key", &bogus.display().to_string(),
    ])
    .unwrap();
    let err = match upload_gateway::App::start(config).await {
        Ok(_) => panic!("started with a bogus certificate"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("TLS_CERT_FILE"), "{err}");
    let half = upload_gateway::Config::from_args(["gw", "--tls-cert", "x.pem"]).unwrap();
    assert!(half.settings().unwrap_err().contains("set both"));
}
