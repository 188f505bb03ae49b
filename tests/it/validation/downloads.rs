//! Signed URLs on the embedded storage and gRPC `Download`.

use super::support::*;

#[tokio::test]
async fn signed_urls_serve_the_bytes_and_refuse_tampering() {
    let t = spawn_app(&[]).await;
    let body = b"signed bytes".to_vec();
    let id = upload(&t, body.clone()).await;
    let a: Value = serde_json::from_slice(
        &t.next_message("platform.upload.testareno", "test")
            .await
            .payload,
    )
    .unwrap();
    let url = a["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/download/quarantine/{id}?expires=", t.base)),
        "{url}"
    );

    let good = reqwest::get(&url).await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.bytes().await.unwrap().to_vec(), body);

    let (path, query) = url.split_once('?').unwrap();
    let sig = query.split("signature=").nth(1).unwrap();
    let flipped: String = sig.chars().rev().collect();
    let expires: u64 = query.split('&').next().unwrap()["expires=".len()..]
        .parse()
        .unwrap();
    let tampered = [
        url.replace(sig, &flipped),
        url.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600),
        ),
        url.replace("/download/quarantine/", "/download/perm/"),
        format!("{path}?expires={expires}"),
        path.to_string(),
    ];
    for bad in tampered {
        let resp = reqwest::get(&bad).await.unwrap();
        assert_eq!(resp.status(), 403, "{bad}");
    }
    // Another payload's key with this signature.
    let other = upload(&t, b"other".to_vec()).await;
    let resp = reqwest::get(url.replace(&id, &other)).await.unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn an_expired_signed_url_is_refused() {
    let t = spawn_app(&["--url-expiry-secs", "1"]).await;
    upload(&t, b"short-lived".to_vec()).await;
    let a: Value = serde_json::from_slice(
        &t.next_message("platform.upload.testareno", "test")
            .await
            .payload,
    )
    .unwrap();
    let url = a["url"].as_str().unwrap();
    let expires: u64 = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while now() <= expires {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn grpc_download_streams_the_same_bytes() {
    let t = spawn_app(&[]).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let id = upload(&t, body.clone()).await;
    let empty = upload(&t, Vec::new()).await;
    let mut client = t.grpc().await;
    let download = |id: String| {
        let mut client = client.clone();
        async move {
            let stream = client
                .download(pb::DownloadRequest { request_id: id })
                .await?
                .into_inner();
            stream
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        }
    };

    let chunks = download(id.clone()).await.unwrap();
    assert_eq!(
        (chunks[0].size, chunks[0].bucket.as_str()),
        (body.len() as u64, "quarantine")
    );
    assert!(chunks.len() > 2, "streamed in chunks");
    assert_eq!(
        chunks
            .iter()
            .flat_map(|c| c.data.to_vec())
            .collect::<Vec<u8>>(),
        body
    );

    let chunks = download(empty).await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        (
            chunks[0].size,
            chunks[0].bucket.as_str(),
            chunks[0].data.len()
        ),
        (0, "quarantine", 0)
    );

    let mut v = Verdicts::open(&t).await;
    assert_eq!(outcome(&v.verdict(&id, "failure").await), Outcome::Rejected);
    assert_eq!(download(id).await.unwrap()[0].bucket, "reject");
    let missing = client
        .download(pb::DownloadRequest {
            request_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// PUBLIC_URL is where announced links point; URL_SIGNING_KEY signs them, so a link
/// holds across restarts and replicas that share the key, and no longer once the key
/// changes.
#[tokio::test]
async fn links_use_the_public_url_and_the_configured_signing_key() {
    let public = "https://uploads.example.com:8443";
    let t = spawn_app(&["--public-url", public, "--url-signing-key", "the-first-key-0123456789"]).await;
    let body = b"linked bytes".to_vec();
    let id = upload(&t, body.clone()).await;
    let a: Value = serde_json::from_slice(&t.next_message("platform.upload.testareno", "test").await.payload).unwrap();
    let url = a["url"].as_str().unwrap().to_string();
    let path_and_query = url
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("the link does not start with PUBLIC_URL: {url}"))
        .to_string();
    assert!(path_and_query.starts_with(&format!("/download/quarantine/{id}?expires=")), "{url}");
    let local = |t: &TestApp| t.url(&path_and_query);
    let got = reqwest::get(local(&t)).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);

    // The same data folder under another key: the link is refused ...
    let TestApp { app, data, .. } = t;
    app.stop().await.unwrap();
    let other = spawn_app_in(data, &["--url-signing-key", "the-second-key-0123456789"]).await;
    assert_eq!(reqwest::get(local(&other)).await.unwrap().status(), 403);
    // ... and under the first key again, it works (the key is the configured one, not
    // the one the gateway would make and keep in its data folder).
    let TestApp { app, data, .. } = other;
    app.stop().await.unwrap();
    let again = spawn_app_in(data, &["--url-signing-key", "the-first-key-0123456789"]).await;
    let got = reqwest::get(local(&again)).await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), body);
}
