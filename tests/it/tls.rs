//! TLS on the one port (contract §1): ALPN h2 for gRPC, http/1.1 for REST.


use std::process::Command;

use crate::common::*;

fn self_signed(dir: &std::path::Path) -> (String, String) {
    let (cert, key, _) = self_signed_der(dir);
    (cert, key)
}

/// A certificate for "localhost": its PEM files, and the certificate itself (DER) for
/// a client that trusts it.
fn self_signed_der(dir: &std::path::Path) -> (String, String, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c.display().to_string(), k.display().to_string(), cert.cert.der().to_vec())
}

/// A tonic channel over TLS (rustls, ALPN h2) that trusts only `cert`: the way an
/// internal service's gRPC client reaches a gateway serving TLS.
async fn tls_channel(port: u16, cert: Vec<u8>) -> tonic::transport::Channel {
    use tokio_rustls::rustls::{self, pki_types::{CertificateDer, ServerName}};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(cert)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the gateway picks h2 for gRPC");
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}"))
        .unwrap()
        .connect_with_connector(connect)
        .await
        .expect("gRPC over TLS connects")
}

/// An upload and its verdict, both over gRPC on the TLS port, with a tonic client.
#[tokio::test]
async fn a_grpc_upload_and_its_verdict_over_tls() {
    use futures_util::StreamExt;
    use pb::upload_request::Part;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed_der(certs.path());
    let t = spawn_app(&["--tls-cert", &cert, "--tls-key", &key]).await;
    // A validator's client (its token on every call), which uploads too.
    let channel = tls_channel(t.app.addr().port(), der).await;
    let mut client = upload_gateway::validator::connect::client(channel, &validator_token(t.data.path())).unwrap();
    let body = b"over TLS with tonic".to_vec();
    let msgs = [
        pb::UploadRequest {
            part: Some(Part::Header(pb::UploadHeader {
                content_type: "application/vnd.redhat.testareno.tls+tgz".into(),
                expected_sha256: sha256_hex(&body),
                ..Default::default()
            })),
        },
        pb::UploadRequest { part: Some(Part::Chunk(body.clone().into())) },
    ];
    let mut req = tonic::Request::new(futures_util::stream::iter(msgs));
    req.metadata_mut().insert("x-rh-insights-request-id", "tls-grpc-1".parse().unwrap());
    let receipt = client.upload(req).await.unwrap().into_inner();
    assert_eq!((receipt.request_id.as_str(), receipt.size), ("tls-grpc-1", body.len() as u64));
    assert_eq!(receipt.sha256, sha256_hex(&body));

    let verdict = pb::Verdict { request_id: "tls-grpc-1".into(), validation: "success".into(), reason: "checked over TLS".into(), ..Default::default() };
    let mut acks = client.validation_result(futures_util::stream::iter([verdict])).await.unwrap().into_inner();
    let ack = acks.next().await.expect("an ack").unwrap();
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);
    assert_eq!(t.bucket_files("perm"), ["tls-grpc-1"]);
    assert_eq!(crate::common::local_bytes(t.data.path(), "perm", "tls-grpc-1").unwrap(), body);
    let av = t.next_message("platform.upload.available", "tls").await;
    assert_eq!(av.key, "tls-grpc-1");
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
