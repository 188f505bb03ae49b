//! The original service's flow with the built-in validator, run as the real binary
//! against a gateway: failure → reject, success → perm + available, check.

use super::support::*;

#[tokio::test]
async fn the_built_in_validator_with_failure_moves_the_payload_to_reject() {
    let t = spawn_app(&[]).await;
    let body = b"not really a tarball".to_vec();
    let id = upload(&t, body.clone()).await;

    let lines = validate(&t.base, t.data.path(), &["--verdict", "failure", "--count", "1"]).await;
    let line = line_for(&lines, &id);
    assert!(line.contains("verdict=failure outcome=rejected"), "{line}");

    assert_eq!(t.bucket_files("reject"), [id.clone()]);
    assert!(t.bucket_files("quarantine").is_empty());
    assert!(t.bucket_files("perm").is_empty());
    assert_eq!(
        crate::common::local_bytes(t.data.path(), "reject", &id).unwrap(),
        body
    );
    let history = track(&t, &id).await;
    assert_eq!(statuses(&history), ["received", "announced", "rejected"]);
    assert_eq!(history["status"], "rejected");
}

#[tokio::test]
async fn the_built_in_validator_with_success_promotes_and_the_available_url_downloads_the_bytes() {
    let t = spawn_app(&[]).await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = upload(&t, body.clone()).await;

    let lines = validate(&t.base, t.data.path(), &["--verdict", "success", "--count", "1"]).await;
    assert!(line_for(&lines, &id).contains("verdict=success outcome=promoted"));

    assert_eq!(t.bucket_files("perm"), [id.clone()]);
    assert!(t.bucket_files("quarantine").is_empty());
    let msg = t.next_message("platform.upload.available", "test").await;
    assert_eq!(msg.key, id);
    let a: Value = serde_json::from_slice(&msg.payload).unwrap();
    for field in ["id", "request_id", "payload_id"] {
        assert_eq!(a[field], id, "{field}");
    }
    assert_eq!(a["service"], "testareno");
    assert_eq!(a["category"], "something");
    assert_eq!(
        (a["account"].clone(), a["rh_account"].clone()),
        ("acct-1".into(), "acct-1".into())
    );
    assert_eq!(
        (a["org_id"].clone(), a["principal"].clone()),
        ("org-1".into(), "org-1".into())
    );
    assert_eq!(a["b64_identity"], identity("acct-1", "org-1"));
    assert_eq!(a["size"], body.len() as u64);
    assert_eq!(a["sha256"], sha256_hex(&body));

    let url = a["url"].as_str().unwrap();
    assert!(url.contains("/download/perm/"), "{url}");
    let got = reqwest::get(url).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(sha256_hex(&got.bytes().await.unwrap()), sha256_hex(&body));
    assert_eq!(
        statuses(&track(&t, &id).await),
        ["received", "announced", "success", "advertised"]
    );
}

#[tokio::test]
async fn check_passes_a_real_tar_gz_and_fails_what_is_not_one() {
    let t = spawn_app(&[]).await;
    let good = tar_gz(&[
        ("insights/data.json", br#"{"a":1}"#),
        ("insights/big", &[9u8; 200_000]),
    ]);
    let good_id = upload(&t, good).await;
    let garbage_id = upload(&t, b"definitely not gzip".to_vec()).await;
    let mut truncated = tar_gz(&[("x", &[1u8; 100_000])]);
    truncated.truncate(truncated.len() / 2);
    let truncated_id = upload(&t, truncated).await;

    // The bytes come over gRPC Download here (the other tests use the URLs).
    let lines = validate(
        &t.base,
        t.data.path(),
        &["--verdict", "check", "--count", "3", "--download", "grpc"],
    )
    .await;
    assert!(line_for(&lines, &good_id).contains("verdict=success outcome=promoted"));
    assert!(line_for(&lines, &garbage_id).contains("verdict=failure outcome=rejected"));
    assert!(line_for(&lines, &truncated_id).contains("verdict=failure outcome=rejected"));

    assert_eq!(t.bucket_files("perm"), [good_id.clone()]);
    let mut rejected = vec![garbage_id.clone(), truncated_id.clone()];
    rejected.sort();
    assert_eq!(t.bucket_files("reject"), rejected);
    // The reason reaches the payload's history.
    let why = |h: Value| {
        h["history"].as_array().unwrap().last().unwrap()["status_msg"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(why(track(&t, &garbage_id).await).contains("not gzip"));
    assert!(why(track(&t, &truncated_id).await).contains("not a valid tar.gz"));
}

#[tokio::test]
async fn a_killed_gateway_restarted_on_its_data_gives_the_payload_to_the_built_in_validator() {
    let data = tempfile::tempdir().unwrap();
    let first = GatewayProcess::start(data.path(), &[]);
    let id = Upload::new(TESTARENO, b"survives kill -9".to_vec())
        .file_name("a.tar.gz")
        .accepted(&reqwest::Client::new(), &first.base)
        .await;
    drop(first); // SIGKILL: no verdict was given

    let second = GatewayProcess::start(data.path(), &[]);
    let lines = validate(&second.base, data.path(), &["--verdict", "success", "--count", "1"]).await;
    assert!(line_for(&lines, &id).contains("outcome=promoted"));
    assert_eq!(list_bucket(data.path(), "perm"), [id]);
    assert!(list_bucket(data.path(), "quarantine").is_empty());
}

#[tokio::test]
async fn the_built_in_validator_carries_on_across_a_gateway_restart() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    // The second gateway listens where the first did: the validator knows one address.
    let post = |base: String| async move {
        Upload::new(TESTARENO, b"abc".to_vec()).file_name("a").accepted(&reqwest::Client::new(), &base).await
    };
    let mut first = GatewayProcess::start(data.path(), &[]);
    let mut validator = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args([
            "validate",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--gateway",
            &first.base,
            "--service",
            "testareno",
            "--verdict",
            "success",
            "--count",
            "2",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(validator.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };

    let one = post(first.base.clone()).await;
    assert!(next_line().await.starts_with(&format!("request_id={one} ")));
    first.signal("TERM");
    let stopped = Instant::now();
    while first.child.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the gateway drains within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = GatewayProcess::start_on(&first.addr.to_string(), data.path(), &[]);
    let two = post(second.base.clone()).await;
    let line = next_line().await;
    assert!(
        line.starts_with(&format!("request_id={two} ")) && line.contains("outcome=promoted"),
        "{line}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), validator.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut perm = vec![one, two];
    perm.sort();
    assert_eq!(list_bucket(data.path(), "perm"), perm);
}

#[tokio::test]
async fn the_built_in_validator_says_what_it_cannot_do() {
    let t = spawn_app(&[]).await;
    let run = |args: &'static [&'static str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
            .args(["validate", "--gateway", &t.base, "--verdict", "success"])
            .arg("--data-dir")
            .arg(t.data.path())
            .args(args)
            .kill_on_drop(true)
            .output()
    };
    let out = tokio::time::timeout(SECS, run(&["--service", "nosuch"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("nosuch"),
        "{err}"
    );
    let out = tokio::time::timeout(SECS, run(&["--service", "testareno", "--via", "kafka"]))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kafka-brokers"));
}
