//! The REST upload as existing clients use it (contract §2).


use crate::common::*;
use serde_json::Value;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";

#[tokio::test]
async fn the_original_readme_curl_form_is_accepted_and_announced() {
    let t = spawn_app(&[]).await;
    let body = b"not really a tarball".to_vec();
    let resp = Upload::new(TESTARENO, body.clone()).field("upload").path("/api/v1/upload").send(&t.http, &t.base).await;
    assert_eq!(resp.status(), 202);
    let header_id = resp.headers()["x-rh-insights-request-id"].to_str().unwrap().to_string();
    let json: Value = resp.json().await.unwrap();
    let id = json["request_id"].as_str().unwrap();
    assert_eq!(id, header_id);
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let msg = t.next_message("platform.upload.testareno", "test").await;
    assert_eq!(msg.key, id);
    let a: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(a["request_id"], id);
    assert_eq!(a["payload_id"], id);
    assert_eq!(a["service"], "testareno");
    assert_eq!(a["category"], "something");
    assert_eq!(a["content_type"], TESTARENO);
    assert_eq!(a["size"], body.len() as u64);
    assert_eq!(a["sha256"], sha256_hex(&body));
    let stored = crate::common::local_bytes(t.data.path(), "quarantine", id).unwrap();
    assert_eq!(stored, body);

    // The announced URL downloads the same bytes.
    let got = reqwest::get(a["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);
}

#[tokio::test]
async fn the_real_client_form_with_metadata_and_identity() {
    let t = spawn_app(&[]).await;
    let payload = vec![7u8; 4096];
    let metadata = r#"{"branch_info":{"remote_leaf":-1},"display_name":"host1"}"#;
    let resp = Upload::new("application/vnd.redhat.advisor.collection+tgz", payload.clone())
        .path("/r/insights/platform/ingress/v1/upload")
        .file_name("insights-archive.tar.gz")
        .metadata(metadata)
        .identity("12345", "67890")
        .request_id("client-chosen-id-1")
        .send(&t.http, &t.base)
        .await;
    assert_eq!(resp.status(), 202);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["request_id"], "client-chosen-id-1");
    assert_eq!(json["upload"]["account_number"], "12345");
    assert_eq!(json["upload"]["org_id"], "67890");

    let a: Value = serde_json::from_slice(&t.next_message("platform.upload.advisor", "test").await.payload).unwrap();
    for field in [
        "account", "rh_account", "org_id", "principal", "request_id", "payload_id", "size", "service",
        "category", "content_type", "b64_identity", "metadata", "url", "timestamp", "sha256",
    ] {
        assert!(a.get(field).is_some(), "announce message lacks {field}: {a}");
    }
    assert_eq!(a["account"], "12345");
    assert_eq!(a["rh_account"], "12345");
    assert_eq!(a["org_id"], "67890");
    assert_eq!(a["principal"], "67890");
    assert_eq!(a["metadata"]["display_name"], "host1");
    assert_eq!(a["b64_identity"], identity("12345", "67890"));
    assert!(chrono::DateTime::parse_from_rfc3339(a["timestamp"].as_str().unwrap()).is_ok());
}

#[tokio::test]
async fn metadata_as_a_plain_form_field_and_legacy_gzip_types() {
    let t = spawn_app(&[]).await;
    for ct in ["application/gzip", "application/x-gzip; charset=binary", "application/gzip; charset=binary"] {
        let form = reqwest::multipart::Form::new()
            .text("metadata", r#"{"k":"v"}"#)
            .part("file", reqwest::multipart::Part::bytes(vec![1, 2, 3]).file_name("a.tgz").mime_str(ct).unwrap());
        let resp = t.http.post(t.url("/api/ingress/v1/upload")).multipart(form).send().await.unwrap();
        assert_eq!(resp.status(), 202, "{ct}");
        let a: Value = serde_json::from_slice(&t.next_message("platform.upload.advisor", "legacy").await.payload).unwrap();
        assert_eq!((a["service"].as_str(), a["category"].as_str()), (Some("advisor"), Some("upload")));
        assert_eq!(a["metadata"]["k"], "v");
    }
}

#[tokio::test]
async fn upload_wins_over_file_when_both_are_sent() {
    let t = spawn_app(&[]).await;
    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(b"from-file".to_vec()).file_name("f").mime_str(TESTARENO).unwrap())
        .part("upload", reqwest::multipart::Part::bytes(b"from-upload".to_vec()).file_name("u").mime_str(TESTARENO).unwrap());
    let resp = t.http.post(t.url("/api/v1/upload")).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    assert_eq!(t.bucket_files("quarantine"), vec![id.clone()]);
    assert_eq!(crate::common::local_bytes(t.data.path(), "quarantine", &id).unwrap(), b"from-upload");
}

#[tokio::test]
async fn an_empty_file_is_accepted() {
    let t = spawn_app(&[]).await;
    let resp = t.upload("file", "application/vnd.redhat.advisor.test+tgz", vec![]).await;
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn a_chunked_body_without_content_length_is_accepted() {
    let t = spawn_app(&[]).await;
    let boundary = "XyZzY";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tgz\"\r\nContent-Type: {TESTARENO}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(head.into_bytes()), Ok(vec![b'a'; 100_000]), Ok(vec![b'b'; 100_000]), Ok(tail.into_bytes())];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = t
        .http
        .post(t.url("/api/ingress/v1/upload"))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let a: Value = serde_json::from_slice(&t.next_message("platform.upload.testareno", "t").await.payload).unwrap();
    assert_eq!(a["size"], 200_000);
}

/// Every row of the contract's status table, over REST.
#[tokio::test]
async fn every_refusal_has_its_status_and_sentence() {
    let t = spawn_app(&["--service-limits", "qpc=10"]).await;
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no file part",
            t.http.post(t.url("/api/ingress/v1/upload")).multipart(reqwest::multipart::Form::new().text("other", "x")),
            415,
            "Upload field not found",
        ),
        (
            "not multipart at all",
            t.http.post(t.url("/api/ingress/v1/upload")).body("plain"),
            415,
            "Upload field not found",
        ),
        ("content type matches no rule", form(&t, "file", "text/plain", b"x"), 415, "Unsupported Media Type"),
        (
            "service not valid",
            form(&t, "file", "application/vnd.redhat.nosuch.thing+tgz", b"x"),
            415,
            "Unsupported MIME type",
        ),
        (
            "too large",
            form(&t, "file", "application/vnd.redhat.qpc.thing+tgz", b"eleven bytes"),
            413,
            "Should not exceed 10 bytes",
        ),
        (
            "malformed multipart",
            t.http
                .post(t.url("/api/ingress/v1/upload"))
                .header("content-type", "multipart/form-data; boundary=abc")
                .body(format!("--abc\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: {TESTARENO}\r\n\r\nno end")),
            400,
            "multipart",
        ),
        (
            "bad identity",
            form(&t, "file", TESTARENO, b"x").header("x-rh-identity", "%%%"),
            400,
            "x-rh-identity",
        ),
        (
            "bad request id",
            form(&t, "file", TESTARENO, b"x").header("x-rh-insights-request-id", "../etc/passwd"),
            400,
            "request id",
        ),
    ];
    for (what, req, status, text) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"), "{what}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(text), "{what}: {body:?} should contain {text:?}");
    }
    assert!(t.bucket_files("quarantine").is_empty(), "a refused upload left something behind");
}

fn form(t: &TestApp, field: &str, ct: &str, bytes: &[u8]) -> reqwest::RequestBuilder {
    Upload::new(ct, bytes).file_name("x.tgz").field(field).request(&t.http, &t.base)
}

#[tokio::test]
async fn identity_can_be_required() {
    let t = spawn_app(&["--require-identity"]).await;
    let resp = form(&t, "file", TESTARENO, b"x").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = form(&t, "file", TESTARENO, b"x").header("x-rh-identity", identity("1", "2")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn the_other_routes_answer_under_every_prefix() {
    let t = spawn_app(&[]).await;
    for p in ["/api/ingress", "/r/insights/platform/ingress", "/api"] {
        let v: Value = t.http.get(t.url(&format!("{p}/v1/version"))).send().await.unwrap().json().await.unwrap();
        assert!(v["version"].is_string() && v["commit"].is_string() && v["date"].is_string());
        let resp = t.http.get(t.url(&format!("{p}/v1/openapi.json"))).send().await.unwrap();
        assert_eq!(resp.headers()["content-type"], "application/json");
        let doc: Value = resp.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let accepted: Value = t.http.get(t.url(&format!("{p}/v1/upload"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(accepted["services"]["advisor"]["max_size"], 100 * 1024 * 1024);
        assert_eq!(t.http.get(t.url(p)).send().await.unwrap().status(), 200);
        let head = t.http.head(t.url(&format!("{p}/v1/version"))).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert!(head.bytes().await.unwrap().is_empty());
        let missing = t.http.get(t.url(&format!("{p}/v1/track/nosuchid"))).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }
    assert_eq!(t.http.get(t.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 200);
    let m = t.http.get(t.url("/metrics")).send().await.unwrap();
    assert!(m.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(m.text().await.unwrap().contains("upload_gateway_received_bytes_total"));
}

#[tokio::test]
async fn track_shows_the_history_of_an_upload() {
    let t = spawn_app(&[]).await;
    let resp = t.upload("file", TESTARENO, b"abc".to_vec()).await;
    let id = resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_string();
    let v: Value = t.http.get(t.url(&format!("/api/ingress/v1/track/{id}"))).send().await.unwrap().json().await.unwrap();
    let statuses: Vec<&str> = v["history"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["received", "announced"]);
}

/// What a crash leaves half-written (a temp file, a record without its payload) is
/// removed when the gateway starts on that data folder; whole payloads stay.
#[tokio::test]
async fn half_written_files_a_crash_left_are_removed_at_start_up() {
    let t = spawn_app(&[]).await;
    let kept = accepted_id(t.upload("file", TESTARENO, b"whole".to_vec()).await).await;
    let TestApp { app, data, .. } = t;
    app.stop().await.unwrap();
    let d = data.path();
    std::fs::write(d.join(".tmp/crashed-upload-1"), b"half of a payload").unwrap();
    std::fs::write(d.join(".tmp/crashed-upload-2"), b"").unwrap();
    std::fs::write(d.join("quarantine/.meta/no-payload-1.json"), br#"{"size":1}"#).unwrap();
    // Three left by the "crash" (the kept payload is small: its meta is in the log).
    assert_eq!(list_bucket(d, ".tmp").len() + list_bucket(&d.join("quarantine"), ".meta").len(), 3);

    let t = spawn_app_in(data, &[]).await;
    assert!(list_bucket(t.data.path(), ".tmp").is_empty(), "{:?}", list_bucket(t.data.path(), ".tmp"));
    // The lone meta is gone; the kept payload (small: in the write-ahead log) has none.
    let metas = list_bucket(&t.data.path().join("quarantine"), ".meta");
    assert!(metas.is_empty(), "{metas:?}");
    assert_eq!(t.bucket_files("quarantine"), [kept.clone()]);
    // The whole payload is still served and announced again (the in-process queue
    // does not outlive the process).
    assert_eq!(t.next_message("platform.upload.testareno", "after-restart").await.key, kept);
}
