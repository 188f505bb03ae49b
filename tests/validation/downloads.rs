//! Signed URLs on the embedded storage and gRPC `Download`.

use crate::support::*;

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
