//! S3 storage through a real S3 server (Garage, started by scripts/test): what is
//! stored and where, verdicts moving payloads, presigned URLs, bounded memory on 1 GiB,
//! nothing left behind by a client that goes away, and an S3 outage (contract §3).
// The deprecated UploadHeader fields are still accepted; these tests send them.
#![allow(deprecated)]


use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crate::common::s3::*;
use crate::common::*;
use futures_util::StreamExt;
use serde_json::Value;
use sha2::Digest;
use upload_gateway::storage::Bucket;

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";
const MIB: usize = 1 << 20;

async fn upload_with(t: &TestApp, id: &str, body: Vec<u8>) -> reqwest::Response {
    Upload::new(TESTARENO, body)
        .file_name("a.tgz")
        .metadata(r#"{"display_name":"host-s3"}"#)
        .identity("acct-1", "org-1")
        .request_id(id)
        .send(&t.http, &t.base)
        .await
}

/// Sends one verdict over the gRPC ValidationResult stream; returns the ack.
async fn verdict(t: &TestApp, id: &str, validation: &str) -> pb::VerdictAck {
    let v = pb::Verdict { request_id: id.into(), validation: validation.into(), reason: String::new(), ..Default::default() };
    let mut acks = t.grpc().await.validation_result(futures_util::stream::iter([v])).await.unwrap().into_inner();
    acks.next().await.expect("one ack").expect("ack")
}

/// Downloads a URL; returns its status, sha256 and length.
async fn fetch(url: &str) -> (u16, String, usize) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    let mut h = sha2::Sha256::new();
    let mut n = 0;
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len();
        h.update(&c);
    }
    (status, hex::encode(h.finalize()), n)
}

async fn message_json(t: &TestApp, topic: &str, group: &str) -> Value {
    serde_json::from_slice(&t.next_message(topic, group).await.payload).unwrap()
}

#[tokio::test]
async fn an_upload_lands_in_quarantine_with_its_meta_and_verdicts_move_it() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("flow");
    let t = spawn_app(&as_strs(&s3_flags(&env, &b, &["--s3-part-size", "5MiB"]))).await;
    let c = env.client();

    // 12 MiB with 5 MiB parts: a multipart upload.
    let body = pseudo_random(12 * MIB, 1);
    let sha = sha256_hex(&body);
    let resp = upload_with(&t, "flow-big", body.clone()).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);

    let head = c.head_object().bucket(&b.quarantine).key("flow-big").send().await.unwrap();
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.content_type(), Some(TESTARENO));
    let user = head.metadata().unwrap();
    assert_eq!(user["service"], "testareno");
    assert_eq!(user["category"], "something");
    assert_eq!(user["org-id"], "org-1");
    let meta = stored_meta(&c, &b.quarantine, "flow-big").await.expect("meta stored beside the payload");
    assert_eq!(meta["size"], body.len() as u64);
    assert_eq!(meta["sha256"], sha);
    assert_eq!(meta["service"], "testareno");
    assert_eq!(meta["category"], "something");
    assert_eq!(meta["account"], "acct-1");
    assert_eq!(meta["org_id"], "org-1");
    assert_eq!(meta["b64_identity"], identity("acct-1", "org-1"));
    assert_eq!(meta["content_type"], TESTARENO);
    assert!(chrono::DateTime::parse_from_rfc3339(meta["received_at"].as_str().unwrap()).is_ok());
    // The gateway lists payloads only, not their sidecars.
    assert_eq!(t.app.storage().list(Bucket::Quarantine).await.unwrap(), vec!["flow-big".to_string()]);
    assert_eq!(keys_but_history(&c, &b.quarantine).await, vec![".meta/flow-big.json", "flow-big"]);

    // The announced URL is a presigned GET that downloads the same bytes.
    let a = message_json(&t, "platform.upload.testareno", "v").await;
    let url = a["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/{}/flow-big?", env.endpoint, b.quarantine)), "{url}");
    assert!(url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=86400"), "{url}");
    assert_eq!(fetch(url).await, (200, sha.clone(), body.len()));
    assert_eq!(a["sha256"], sha);

    // success: copied to perm, gone from quarantine, advertised with a perm URL.
    let ack = verdict(&t, "flow-big", "success").await;
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);
    assert!(exists(&c, &b.perm, "flow-big").await);
    assert_eq!(stored_meta(&c, &b.perm, "flow-big").await.unwrap()["sha256"], sha);
    assert!(keys_but_history(&c, &b.quarantine).await.is_empty(), "quarantine should be empty");
    // Its history stays, in quarantine: the verdict's milestones, an object each
    // (`received` its meta tells; an `announced` event is stored only on a durable
    // queue, for the quarantine sweep, and this gateway runs on the in-process one).
    assert_eq!(history_names(&c, &b.quarantine, "flow-big").await, ["advertised", "success"]);
    let av = message_json(&t, "platform.upload.available", "consumer").await;
    let perm_url = av["url"].as_str().unwrap();
    assert!(perm_url.starts_with(&format!("{}/{}/flow-big?", env.endpoint, b.perm)), "{perm_url}");
    assert_eq!(fetch(perm_url).await, (200, sha.clone(), body.len()));
    assert_eq!((av["size"].as_u64(), av["sha256"].as_str()), (Some(body.len() as u64), Some(sha.as_str())));
    assert_eq!(verdict(&t, "flow-big", "success").await.outcome, pb::verdict_ack::Outcome::AlreadyDecided as i32);

    // failure: a small (single PutObject) payload moves to reject.
    let small = pseudo_random(1000, 2);
    assert_eq!(upload_with(&t, "flow-small", small.clone()).await.status(), 202);
    assert_eq!(stored_meta(&c, &b.quarantine, "flow-small").await.unwrap()["sha256"], sha256_hex(&small));
    let ack = verdict(&t, "flow-small", "failure").await;
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Rejected as i32, "{}", ack.message);
    assert_eq!(keys_but_history(&c, &b.reject).await, vec![".meta/flow-small.json", "flow-small"]);
    assert!(keys_but_history(&c, &b.quarantine).await.is_empty());
    assert!(unfinished_uploads(&c, &b.quarantine).await.is_empty());
}

/// The same store / verdict flow, through the Storage trait, on both storages.
async fn the_same_flow(t: &TestApp, tag: &str) {
    let storage = t.app.storage();
    let body = pseudo_random(300_000, 3);
    let sha = sha256_hex(&body);
    let id = format!("same-{tag}");
    assert_eq!(upload_with(t, &id, body.clone()).await.status(), 202, "{tag}");

    let meta = storage.head(Bucket::Quarantine, &id).await.unwrap().expect("in quarantine");
    assert_eq!((meta.size, meta.sha256.as_str(), meta.service.as_str()), (300_000, sha.as_str(), "testareno"), "{tag}");
    assert_eq!(meta.org_id.as_deref(), Some("org-1"), "{tag}");
    assert_eq!(storage.list(Bucket::Quarantine).await.unwrap(), vec![id.clone()], "{tag}");
    assert!(storage.head(Bucket::Perm, &id).await.unwrap().is_none(), "{tag}");
    assert!(storage.head(Bucket::Quarantine, "no-such-id").await.unwrap().is_none(), "{tag}");
    assert!(storage.get(Bucket::Quarantine, "no-such-id").await.unwrap().is_none(), "{tag}");
    let (got_meta, mut bytes) = storage.get(Bucket::Quarantine, &id).await.unwrap().expect("readable");
    assert_eq!(got_meta, meta, "{tag}");
    let mut read = Vec::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= 1 << 20, "{tag}: chunks are bounded");
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, body, "{tag}");

    let a = message_json(t, "platform.upload.testareno", "v").await;
    assert_eq!(fetch(a["url"].as_str().unwrap()).await, (200, sha.clone(), body.len()), "{tag}");
    assert_eq!(verdict(t, &id, "success").await.outcome, pb::verdict_ack::Outcome::Promoted as i32, "{tag}");
    assert_eq!(storage.head(Bucket::Perm, &id).await.unwrap(), Some(meta.clone()), "{tag}");
    assert!(storage.head(Bucket::Quarantine, &id).await.unwrap().is_none(), "{tag}");
    assert!(storage.list(Bucket::Quarantine).await.unwrap().is_empty(), "{tag}");
    assert_eq!(storage.list(Bucket::Perm).await.unwrap(), vec![id.clone()], "{tag}");
    let av = message_json(t, "platform.upload.available", "c").await;
    assert_eq!(fetch(av["url"].as_str().unwrap()).await, (200, sha.clone(), body.len()), "{tag}");

    // copy and delete directly: meta travels with the bytes; deleting twice is fine.
    storage.copy(Bucket::Perm, Bucket::Reject, &id).await.unwrap();
    assert_eq!(storage.head(Bucket::Reject, &id).await.unwrap(), Some(meta), "{tag}");
    storage.delete(Bucket::Reject, &id).await.unwrap();
    storage.delete(Bucket::Reject, &id).await.unwrap();
    assert!(storage.head(Bucket::Reject, &id).await.unwrap().is_none(), "{tag}");
    assert!(storage.list(Bucket::Reject).await.unwrap().is_empty(), "{tag}");
}

#[tokio::test]
async fn the_pipeline_behaves_the_same_on_local_disk_and_on_s3() {
    let local = spawn_app(&[]).await;
    the_same_flow(&local, "local").await;
    assert!(local.app.storage().presign(Bucket::Perm, "same-local", Duration::from_secs(60)).await.unwrap().is_none());

    let env = S3Env::from_test_env();
    let b = Buckets::unique("same");
    let s3 = spawn_app(&as_strs(&s3_flags(&env, &b, &[]))).await;
    the_same_flow(&s3, "s3").await;
    let url = s3.app.storage().presign(Bucket::Perm, "same-s3", Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(url.contains("X-Amz-Expires=60"), "{url}");
    assert_eq!(fetch(&url).await.0, 200);
}

#[tokio::test]
async fn objects_past_the_copy_threshold_move_with_upload_part_copy() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("pcopy");
    let flags = s3_flags(&env, &b, &["--s3-part-size", "5MiB", "--s3-multipart-copy-threshold", "5MiB"]);
    let t = spawn_app(&as_strs(&flags)).await;
    let c = env.client();
    let body = pseudo_random(11 * MIB + 123, 4);
    assert_eq!(upload_with(&t, "pcopy-1", body.clone()).await.status(), 202);
    assert_eq!(verdict(&t, "pcopy-1", "success").await.outcome, pb::verdict_ack::Outcome::Promoted as i32);
    let head = c.head_object().bucket(&b.perm).key("pcopy-1").send().await.unwrap();
    assert_eq!(head.content_length(), Some(body.len() as i64));
    assert_eq!(head.content_type(), Some(TESTARENO));
    assert_eq!(head.metadata().unwrap()["service"], "testareno");
    let av = message_json(&t, "platform.upload.available", "c").await;
    assert_eq!(fetch(av["url"].as_str().unwrap()).await, (200, sha256_hex(&body), body.len()));
    assert!(unfinished_uploads(&c, &b.perm).await.is_empty());
    assert!(keys_but_history(&c, &b.quarantine).await.is_empty());
}

#[tokio::test]
async fn a_verdict_is_applied_from_storage_alone_after_a_restart() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("restart");
    let flags = s3_flags(&env, &b, &[]);
    let t = spawn_app(&as_strs(&flags)).await;
    let body = pseudo_random(5000, 5);
    assert_eq!(upload_with(&t, "restart-1", body.clone()).await.status(), 202);
    t.app.stop().await.unwrap();

    // A new gateway (new data folder, empty status book) on the same buckets.
    let t = spawn_app(&as_strs(&flags)).await;
    let ack = verdict(&t, "restart-1", "success").await;
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);
    let av = message_json(&t, "platform.upload.available", "c").await;
    assert_eq!(av["org_id"], "org-1");
    assert_eq!(av["b64_identity"], identity("acct-1", "org-1"));
    assert_eq!(fetch(av["url"].as_str().unwrap()).await, (200, sha256_hex(&body), body.len()));
}

#[tokio::test]
async fn what_a_crash_left_in_quarantine_is_swept_at_start_up() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("sweep");
    let c = env.client();
    spawn_app(&as_strs(&s3_flags(&env, &b, &[]))).await.app.stop().await.unwrap(); // makes the buckets

    // A crashed gateway's unfinished upload with a part, and a sidecar whose payload
    // never became visible; also an upload that is not the gateway's (not a request id).
    let q = b.quarantine.as_str();
    let crashed = c.create_multipart_upload().bucket(q).key("crashed-1").send().await.unwrap();
    c.upload_part()
        .bucket(q)
        .key("crashed-1")
        .upload_id(crashed.upload_id().unwrap())
        .part_number(1)
        .body(pseudo_random(1000, 9).into())
        .send()
        .await
        .unwrap();
    c.put_object().bucket(q).key(".meta/crashed-2.json").body(b"{}".to_vec().into()).send().await.unwrap();
    let foreign = c.create_multipart_upload().bucket(q).key("not/ours").send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Just begun, as if by another replica that is still running.
    let fresh = c.create_multipart_upload().bucket(q).key("fresh-1").send().await.unwrap();

    let _t = spawn_app(&as_strs(&s3_flags(&env, &b, &["--s3-stale-upload-secs", "4"]))).await;
    let mut left = unfinished_uploads(&c, q).await;
    left.sort();
    assert_eq!(left, vec!["fresh-1", "not/ours"]);
    assert!(keys_but_history(&c, q).await.is_empty());
    for (key, up) in [("not/ours", foreign), ("fresh-1", fresh)] {
        c.abort_multipart_upload().bucket(q).key(key).upload_id(up.upload_id().unwrap()).send().await.unwrap();
    }
}

/// Killed (SIGKILL) in the middle of a multipart upload: the restarted gateway aborts
/// its own unfinished upload at once, long before the stale age (1 h here) would.
#[tokio::test]
async fn a_gateway_killed_mid_upload_aborts_its_own_unfinished_upload_when_it_starts_again() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("killed");
    let c = env.client();
    let data = tempfile::tempdir().unwrap();
    let flags = s3_flags(&env, &b, &["--s3-part-size", "5MiB", "--max-length", "64MiB", "--s3-stale-upload-secs", "3600"]);
    let gw = GatewayProcess::start(data.path(), &as_strs(&flags));

    let sock = unfinished_form(gw.base.trim_start_matches("http://"), "killed-1", 300).await;
    wait_for_multipart_upload(&c, &b.quarantine, "killed-1").await;
    let mut gw = gw;
    gw.signal("KILL");
    let _ = gw.child.wait();
    drop(sock);
    drop(gw);
    assert_eq!(unfinished_uploads(&c, &b.quarantine).await, ["killed-1"], "the kill left it unfinished");

    let _again = GatewayProcess::start(data.path(), &as_strs(&flags));
    assert!(unfinished_uploads(&c, &b.quarantine).await.is_empty(), "aborted at start-up");
    assert!(keys_but_history(&c, &b.quarantine).await.is_empty(), "no object, no sidecar");
    let journal: Vec<_> = std::fs::read_dir(data.path().join("s3-uploads")).unwrap().collect();
    assert!(journal.is_empty(), "the journal is empty again");
}

/// A slow client on one replica: its multipart upload began longer ago than another
/// replica's stale age, but parts keep arriving, so that replica's sweep (at its
/// start-up) leaves it alone, and the upload completes (issue 17, item 6).
#[tokio::test]
async fn a_slow_upload_older_than_the_stale_age_is_not_swept_while_parts_arrive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = S3Env::from_test_env();
    let b = Buckets::unique("slow");
    let c = env.client();
    let flags = s3_flags(&env, &b, &["--s3-part-size", "5MiB", "--max-length", "64MiB"]);
    let t = spawn_app(&as_strs(&flags)).await;
    let id = "slow-1";
    // 16 MiB (three 5 MiB parts) now, then 5 MiB more (a fourth part) 6 s later.
    let mut sock = unfinished_form(&t.app.addr().to_string(), id, 500).await;
    wait_for_multipart_upload(&c, &b.quarantine, id).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for i in 0..5 {
        send_chunk(&mut sock, &pseudo_random(MIB, 600 + i)).await;
    }
    eventually(Duration::from_secs(30), "the fourth part should be stored", || async {
        let ups = c.list_multipart_uploads().bucket(&b.quarantine).send().await.unwrap();
        let Some(up) = ups.uploads().iter().find(|u| u.key() == Some(id)) else { return false };
        let parts = c.list_parts().bucket(&b.quarantine).key(id).upload_id(up.upload_id().unwrap()).send().await.unwrap();
        parts.parts().len() >= 4
    })
    .await;

    // Another replica starts with a 4 s stale age: the upload began over 6 s ago.
    let other = spawn_app(&as_strs(&s3_flags(&env, &b, &["--s3-stale-upload-secs", "4"]))).await;
    assert_eq!(unfinished_uploads(&c, &b.quarantine).await, [id], "a live upload is not swept");

    send_chunk(&mut sock, b"\r\n--BnD--\r\n").await;
    sock.write_all(b"0\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(30), sock.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head[9..12], b"202", "{}", String::from_utf8_lossy(&head));
    let stored = c.head_object().bucket(&b.quarantine).key(id).send().await.unwrap();
    assert_eq!(stored.content_length(), Some(21 * MIB as i64));
    drop(other);
}

async fn send_chunk(sock: &mut tokio::net::TcpStream, chunk: &[u8]) {
    use tokio::io::AsyncWriteExt;
    sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
    sock.write_all(chunk).await.unwrap();
    sock.write_all(b"\r\n").await.unwrap();
}

/// Opens a REST upload with request id `id` and sends 16 MiB of its file part (a
/// chunked form that never ends), leaving the connection open.
async fn unfinished_form(addr: &str, id: &str, seed: u64) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/ingress/v1/upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\
         Content-Type: multipart/form-data; boundary=BnD\r\nx-rh-insights-request-id: {id}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut chunks = vec![format!(
        "--BnD\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.tgz\"\r\nContent-Type: {TESTARENO}\r\n\r\n"
    )
    .into_bytes()];
    chunks.extend((0..16).map(|i| pseudo_random(MIB, seed + i)));
    for chunk in chunks {
        sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        sock.write_all(&chunk).await.unwrap();
        sock.write_all(b"\r\n").await.unwrap();
    }
    sock
}

/// Nothing was announced to this group so far: a marker uploaded now must be the next
/// announcement it gets (the topic keeps its order), not something before it.
async fn nothing_announced(t: &TestApp, group: &str) {
    let mut sub = t.app.queue().subscribe("platform.upload.testareno", group).await.unwrap();
    let marker = format!("marker-{group}");
    assert_eq!(upload_with(t, &marker, b"marker".to_vec()).await.status(), 202);
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("the marker is announced").unwrap().unwrap();
    assert_eq!(d.message.key, marker, "unexpected announcement: {:?}", d.message);
    d.ack();
}

async fn wait_for_multipart_upload(c: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    eventually(Duration::from_secs(30), "the multipart upload should have started", || async {
        unfinished_uploads(c, bucket).await.iter().any(|k| k == key)
    })
    .await;
}

/// Waits until the bucket holds nothing, unfinished uploads included. The clean-up of a
/// dropped upload aborts at once and again 2 s later (a part in flight may outlive the
/// first abort); on a loaded machine that takes longer than 10 s now and then.
async fn wait_until_empty(c: &aws_sdk_s3::Client, bucket: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (uploads, keys) = (unfinished_uploads(c, bucket).await, keys_but_history(c, bucket).await);
        if uploads.is_empty() && keys.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "nothing should be left in quarantine (waited 30 s): unfinished uploads {uploads:?}, objects {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_mid_upload_leaves_nothing_behind() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("gone");
    let t = spawn_app(&as_strs(&s3_flags(&env, &b, &["--s3-part-size", "5MiB", "--max-length", "64MiB"]))).await;
    let c = env.client();

    // REST: a chunked multipart body, cut off after 16 MiB of its file part.
    let sock = unfinished_form(&t.app.addr().to_string(), "gone-rest", 100).await;
    wait_for_multipart_upload(&c, &b.quarantine, "gone-rest").await;
    drop(sock);
    wait_until_empty(&c, &b.quarantine).await;

    // gRPC: the client goes away after 16 MiB, its connection cut. (Cancelling the call
    // alone does not always reach the server: while the request stream is open, the
    // client's HTTP/2 stream can stay open too, and that is a slow upload, not a gone one.)
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadRequest>(2);
    let socket: Arc<Mutex<Option<std::net::TcpStream>>> = Arc::default();
    let channel = {
        let (socket, addr) = (socket.clone(), t.app.addr());
        let connect = tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?.into_std()?;
                *socket.lock().unwrap() = Some(tcp.try_clone()?);
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::TcpStream::from_std(tcp)?))
            }
        });
        tonic::transport::Endpoint::from_shared(t.base.clone()).unwrap().connect_with_connector(connect).await.unwrap()
    };
    let mut client = upload_gateway::validator::connect::client(channel, &validator_token(t.data.path())).unwrap();
    let call = tokio::spawn(async move { client.upload(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    let header = pb::UploadHeader { content_type: TESTARENO.into(), request_id: "gone-grpc".into(), ..Default::default() };
    tx.send(pb::UploadRequest { part: Some(pb::upload_request::Part::Header(header)) }).await.unwrap();
    for i in 0..16 {
        let chunk = pseudo_random(MIB, 200 + i);
        tx.send(pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(chunk.into())) }).await.unwrap();
    }
    wait_for_multipart_upload(&c, &b.quarantine, "gone-grpc").await;
    // Cut with its request stream still open: ending that stream (dropping `tx`) first
    // would be a clean end of an upload of 16 MiB, which the gateway keeps.
    socket.lock().unwrap().take().expect("connected").shutdown(std::net::Shutdown::Both).unwrap();
    call.abort();
    wait_until_empty(&c, &b.quarantine).await;
    drop(tx);

    // Too large, found out in the middle of a multipart upload: 413, nothing kept.
    let resp = upload_with(&t, "gone-big", pseudo_random(70 * MIB, 6)).await;
    assert_eq!(resp.status(), 413);
    wait_until_empty(&c, &b.quarantine).await;
    nothing_announced(&t, "gone").await;
}

#[tokio::test]
async fn while_s3_is_down_uploads_get_503_and_succeed_again_once_it_is_back() {
    // A server of this test's own: stopping the shared one would fail the others.
    let garage = PrivateGarage::start();
    let b = Buckets::unique("outage");
    let t = spawn_app(&as_strs(&s3_flags(&garage.env, &b, &[]))).await;
    let group = "outage";
    assert_eq!(upload_with(&t, "outage-before", b"before".to_vec()).await.status(), 202);
    assert_eq!(message_json(&t, "platform.upload.testareno", group).await["request_id"], "outage-before");

    garage.down();
    let resp = upload_with(&t, "outage-during", b"during".to_vec()).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let mut grpc = t.grpc().await;
    let header = pb::UploadHeader { content_type: TESTARENO.into(), ..Default::default() };
    let msgs = [
        pb::UploadRequest { part: Some(pb::upload_request::Part::Header(header)) },
        pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(Bytes::from_static(b"during"))) },
    ];
    let status = grpc.upload(futures_util::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 503);
    eventually(Duration::from_secs(30), "gRPC health should be NOT_SERVING while S3 is down", || async {
        grpc_health(&t).await == tonic_health::ServingStatus::NotServing as i32
    })
    .await;

    garage.up();
    let resp = upload_with(&t, "outage-after", b"after".to_vec()).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    // The next announcement after "outage-before" is this one: nothing refused during
    // the outage was announced in between.
    assert_eq!(message_json(&t, "platform.upload.testareno", group).await["request_id"], "outage-after");
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 200);
    // gRPC health follows on its own schedule (a periodic check): wait for it.
    eventually(Duration::from_secs(30), "gRPC health should be SERVING once S3 is back", || async {
        grpc_health(&t).await == tonic_health::ServingStatus::Serving as i32
    })
    .await;
    let keys = keys_but_history(&garage.env.client(), &b.quarantine).await;
    assert_eq!(keys, vec![".meta/outage-after.json", ".meta/outage-before.json", "outage-after", "outage-before"]);
}

/// The gateway's gRPC health (the whole server's status).
async fn grpc_health(t: &TestApp) -> i32 {
    let channel = tonic::transport::Channel::from_shared(t.base.clone()).unwrap().connect().await.unwrap();
    let mut c = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = tonic_health::pb::HealthCheckRequest { service: String::new() };
    c.check(req).await.expect("the health service answers").into_inner().status
}

/// 1 GiB made on the fly (never held whole), hashed as it goes out.
struct Generated {
    sha: Arc<Mutex<sha2::Sha256>>,
    sent: Arc<AtomicU64>,
}

const GIB: u64 = 1 << 30;
const CHUNK: usize = MIB;

impl Generated {
    fn new() -> Self {
        Generated { sha: Arc::new(Mutex::new(sha2::Sha256::new())), sent: Arc::new(AtomicU64::new(0)) }
    }

    /// The chunks: one random MiB, its first 8 bytes replaced by the chunk's number.
    fn chunks(&self) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
        let block = pseudo_random(CHUNK, 42);
        let (sha, sent) = (self.sha.clone(), self.sent.clone());
        futures_util::stream::iter(0..(GIB as usize / CHUNK)).map(move |i| {
            let mut b = block.clone();
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            sha.lock().unwrap().update(&b);
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            Bytes::from(b)
        })
    }

    fn sha256(&self) -> String {
        hex::encode(self.sha.lock().unwrap().clone().finalize())
    }
}

#[tokio::test]
async fn one_gib_through_rest_and_grpc_into_s3_in_bounded_memory() {
    let env = S3Env::from_test_env();
    let b = Buckets::unique("gib");
    let data = tempfile::tempdir().unwrap();
    let flags = s3_flags(&env, &b, &["--max-length", "2GiB"]);
    let gw = GatewayProcess::start(data.path(), &as_strs(&flags));
    let c = env.client();
    // One small upload first, so buffers that stay allocated count as idle.
    Upload::new(TESTARENO, vec![0u8; 100_000]).accepted(&reqwest::Client::new(), &gw.base).await;
    let idle = gw.rss_kib();

    // REST: a multipart form whose file part streams.
    let g = Generated::new();
    let started = Instant::now();
    let rss = RssPeak::start(gw.pid());
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(g.chunks().map(Ok::<_, std::io::Error>)), GIB)
        .file_name("big.tgz")
        .mime_str(TESTARENO)
        .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/ingress/v1/upload", gw.base))
        .header("x-rh-insights-request-id", "gib-rest")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let rest_peak = rss.peak();
    let rest_secs = started.elapsed().as_secs_f64();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let meta = stored_meta(&c, &b.quarantine, "gib-rest").await.unwrap();
    assert_eq!((meta["size"].as_u64(), meta["sha256"].as_str()), (Some(GIB), Some(g.sha256().as_str())));

    // gRPC: a header, then 1 MiB chunks.
    let g = Generated::new();
    let started = Instant::now();
    let rss = RssPeak::start(gw.pid());
    let header = pb::UploadHeader {
        content_type: TESTARENO.into(),
        request_id: "gib-grpc".into(),
        expected_size: GIB,
        ..Default::default()
    };
    let first = futures_util::stream::iter([pb::UploadRequest { part: Some(pb::upload_request::Part::Header(header)) }]);
    let rest = g.chunks().map(|c| pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(c)) });
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(gw.base.clone()).await.unwrap();
    let receipt = client.upload(first.chain(rest)).await.unwrap().into_inner();
    let grpc_peak = rss.peak();
    let grpc_secs = started.elapsed().as_secs_f64();
    assert_eq!((receipt.size, receipt.sha256.as_str()), (GIB, g.sha256().as_str()));
    let head = c.head_object().bucket(&b.quarantine).key("gib-grpc").send().await.unwrap();
    assert_eq!(head.content_length(), Some(GIB as i64));

    eprintln!(
        "1 GiB into S3: idle {} MiB; REST {rest_secs:.1} s, peak {} MiB; gRPC {grpc_secs:.1} s, peak {} MiB",
        idle / 1024,
        rest_peak / 1024,
        grpc_peak / 1024
    );
    for (what, peak) in [("REST", rest_peak), ("gRPC", grpc_peak)] {
        assert!(
            peak.saturating_sub(idle) < 64 * 1024,
            "{what}: resident memory grew from {idle} KiB to {peak} KiB (more than 64 MiB)"
        );
    }
    for key in ["gib-rest", "gib-grpc"] {
        let _ = t_delete(&c, &b.quarantine, key).await;
    }
}

async fn t_delete(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    c.delete_object().bucket(bucket).key(key).send().await.map(drop).map_err(|e| e.to_string())
}

/// The storage contract (`storage::conformance`), the same suite the unit tests run on
/// local disk, on a real S3 server with conditional writes: MinIO (Garage 2.5.0 ignores
/// `If-None-Match: *`, so a second put of a key would replace the first there; see the
/// README, "Trust").
#[tokio::test]
async fn s3_keeps_the_storage_contract() {
    use upload_gateway::config::Config;
    use upload_gateway::storage::{conformance, s3::S3Storage};
    let env = S3Env::minio_from_test_env();
    let b = Buckets::unique("conf");
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["gw".to_string(), "--data-dir".into(), data.path().display().to_string()];
    args.extend(s3_flags(&env, &b, &["--s3-part-size", "5MiB"]));
    let settings = Config::from_args(args).unwrap().settings().unwrap();
    let upload_gateway::config::StorageChoice::S3(options) = settings.storage else { panic!("S3 settings") };
    let s3 = S3Storage::open(options).await.expect("S3 storage opens");
    conformance::run(&s3, "s3").await;
    // The failed put left no unfinished multipart upload behind either, nor did the
    // resumable uploads (finished, or removed: aborted), nor their records and tails.
    let unfinished = env.client().list_multipart_uploads().bucket(&b.quarantine).send().await.unwrap();
    assert!(unfinished.uploads().is_empty(), "{:?}", unfinished.uploads());
    let left: Vec<String> = all_keys(&env.client(), &b.quarantine).await.into_iter().filter(|k| k.starts_with(".uploads/")).collect();
    assert!(left.is_empty(), "removed uploads leave nothing under .uploads/: {left:?}");
    // A small payload is one object: its meta rides in its own user metadata, no
    // sidecar (one PutObject before the 2xx).
    use upload_gateway::storage::{Bucket, Storage};
    let stored = s3.put(Bucket::Quarantine, "s3-one-write", conformance::meta("s3-one-write"), conformance::payload(b"ten KiB or so".to_vec(), u64::MAX)).await.unwrap();
    let sidecar = env.client().head_object().bucket(&b.quarantine).key(".meta/s3-one-write.json").send().await;
    assert!(sidecar.is_err(), "no sidecar for a small payload");
    assert_eq!(s3.head(Bucket::Quarantine, "s3-one-write").await.unwrap(), Some(stored), "its meta is read from the object");
}

/// Resumable uploads (`storage::conformance::resumable`) on Garage too, the suite's main
/// S3 server: its conditional writes are ignored, but one writer after another (what
/// this section does) keeps the contract, and its part-size minimum and UploadPartCopy
/// are the ones in use. Then what the section leaves is checked: no multipart upload,
/// nothing under `.uploads/`; and the stale-upload sweep leaves a resumable upload's
/// multipart upload alone while it has a record.
#[tokio::test]
async fn resumable_uploads_keep_the_storage_contract_on_garage() {
    use upload_gateway::config::Config;
    use upload_gateway::storage::{conformance, s3::S3Storage, Storage};
    let env = S3Env::from_test_env();
    let b = Buckets::unique("res");
    let data = tempfile::tempdir().unwrap();
    let mut args = vec!["gw".to_string(), "--data-dir".into(), data.path().display().to_string()];
    args.extend(s3_flags(&env, &b, &["--s3-part-size", "5MiB", "--s3-stale-upload-secs", "1"]));
    let settings = Config::from_args(args).unwrap().settings().unwrap();
    let upload_gateway::config::StorageChoice::S3(options) = settings.storage else { panic!("S3 settings") };
    let s3 = S3Storage::open(options).await.expect("S3 storage opens");
    conformance::resumable(&s3, "garage").await;
    let c = env.client();
    assert!(unfinished_uploads(&c, &b.quarantine).await.is_empty(), "no multipart upload is left");
    let left: Vec<String> = all_keys(&c, &b.quarantine).await.into_iter().filter(|k| k.starts_with(".uploads/")).collect();
    assert!(left.is_empty(), "nothing is left under .uploads/: {left:?}");

    // An upload with a part and a tail, idle for longer than the stale age: the start-up
    // sweep (stale age 1 s) keeps its multipart upload, and it finishes whole.
    let rec = conformance::upload_record("garage-idle");
    s3.create_upload(&rec).await.unwrap();
    let bytes = pseudo_random(5 * MIB + 1000, 7);
    let r2 = conformance::append(&s3, &rec, &bytes, &[MIB]).await;
    assert!(s3.save_upload(&r2).await.unwrap());
    assert_eq!(unfinished_uploads(&c, &b.quarantine).await, ["garage-idle"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s3.recover(tokio_util::sync::CancellationToken::new()).await.expect("the start-up sweep runs");
    assert_eq!(unfinished_uploads(&c, &b.quarantine).await, ["garage-idle"], "the sweep leaves a resumable upload's bytes alone");
    // A tail a writer left after its upload was removed (no record): the sweep takes it.
    let orphan = conformance::upload_record("garage-orphan");
    s3.create_upload(&orphan).await.unwrap();
    let o2 = conformance::append(&s3, &orphan, b"tail", &[4]).await;
    let keys_before = all_keys(&c, &b.quarantine).await;
    s3.remove_upload(&orphan).await.unwrap();
    let tail = o2.bytes.tail.as_ref().expect("a tail").key.clone();
    assert!(!keys_before.is_empty() && !exists(&c, &b.quarantine, &tail).await, "remove_upload took the unsaved tail too");
    c.put_object().bucket(&b.quarantine).key(&tail).body(b"tail".to_vec().into()).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s3.recover(tokio_util::sync::CancellationToken::new()).await.unwrap();
    assert!(!exists(&c, &b.quarantine, &tail).await, "a lone tail older than the stale age is swept");
    assert!(exists(&c, &b.quarantine, ".uploads/garage-idle/record.00000000000000000002").await, "a live upload's record stays");

    // A writer that stalled while another continued from the same record: its next
    // part is refused, and the payload is the other's bytes.
    let stale = conformance::upload_record("garage-stale");
    s3.create_upload(&stale).await.unwrap();
    let winner = pseudo_random(10 * MIB + 10, 9);
    let s2 = conformance::append(&s3, &stale, &winner[..5 * MIB], &[MIB]).await;
    assert!(s3.save_upload(&s2).await.unwrap());
    let mut slow = s3.upload_writer(&s2).await.unwrap();
    slow.write(Bytes::from(vec![0xAB; MIB])).await.unwrap();
    let w2 = conformance::append(&s3, &s2, &winner[5 * MIB..], &[MIB]).await;
    assert!(s3.save_upload(&w2).await.unwrap());
    slow.write(Bytes::from(vec![0xAB; 4 * MIB])).await.unwrap();
    let e = slow.flush().await.expect_err("a part the newest record already counts is not sent again");
    assert!(matches!(e, upload_gateway::error::Error::Conflict(_)), "{e}");
    let fin = upload_gateway::storage::ObjectMeta { size: w2.offset, sha256: w2.hash.hex(), ..conformance::meta("garage-stale") };
    s3.finish_upload(&w2, fin).await.unwrap();
    let out = c.get_object().bucket(&b.quarantine).key("garage-stale").send().await.unwrap();
    assert!(out.body.collect().await.unwrap().into_bytes() == winner, "the payload is the winner's bytes");
    s3.remove_upload(&w2).await.unwrap();

    let m = upload_gateway::storage::ObjectMeta { size: r2.offset, sha256: r2.hash.hex(), ..conformance::meta("garage-idle") };
    let done = s3.finish_upload(&r2, m).await.unwrap();
    let out = c.get_object().bucket(&b.quarantine).key("garage-idle").send().await.unwrap();
    let back = out.body.collect().await.unwrap().into_bytes();
    assert!(back == bytes, "the payload is whole");
    assert_eq!(done.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    s3.remove_upload(&r2).await.unwrap();
    assert!(unfinished_uploads(&c, &b.quarantine).await.is_empty());
}
