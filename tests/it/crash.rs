//! The embedded default killed (SIGKILL) while many small uploads are in flight, their
//! records sharing the write-ahead log's flushes (issue 13): after a restart on the
//! same data folder, every upload answered 2xx is there, whole, with its meta, and no
//! payload in quarantine is half-written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

const ADVISOR: &str = "application/vnd.redhat.advisor.crash+tgz";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_during_a_batch_of_small_uploads_loses_no_answered_one() {
    let data = tempfile::tempdir().unwrap();
    let first = GatewayProcess::start(data.path(), &[]);
    let answered: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let clients = (0..32).map(|c| {
        let (base, answered) = (first.base.clone(), answered.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0.. {
                let id = format!("crash-{c:02}-{n:05}-0000000000000000");
                // 1 to 40 KiB, different bytes for every upload.
                let len = 1024 * (1 + (c * 7 + n * 13) % 40);
                let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + c * 17 + n) as u8).collect();
                match Upload::new(ADVISOR, bytes.clone()).request_id(&id).try_send(&http, &base).await {
                    Some(status) if status == 202 => answered.lock().unwrap().push((id, bytes)),
                    Some(_) => {}
                    None => return, // the gateway is gone
                }
            }
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.signal("KILL");
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    drop(first);
    let answered = std::mem::take(&mut *answered.lock().unwrap());
    assert!(answered.len() > 50, "the load ran before the kill ({} answered)", answered.len());
    // What the kill left: the write-ahead log, where the small payloads live.
    let logged: u64 = std::fs::read_dir(data.path().join(".wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(logged > 50 * 1024, "the payloads are in the write-ahead log ({logged} bytes)");

    let second = GatewayProcess::start(data.path(), &[]);
    for (id, bytes) in &answered {
        let stored = local_bytes(data.path(), "quarantine", id).unwrap_or_else(|| panic!("{id} was answered 202 and is gone"));
        assert!(stored == *bytes, "{id}: the stored bytes are the uploaded ones");
    }
    // Whatever is visible is whole: its meta's size and sha256 are its bytes'.
    let whole = |key: &str| {
        let meta: serde_json::Value = serde_json::from_slice(&local_meta(data.path(), "quarantine", key).unwrap())
            .unwrap_or_else(|e| panic!("{key}: its meta is readable: {e}"));
        let bytes = local_bytes(data.path(), "quarantine", key).unwrap();
        assert_eq!((meta["size"].as_u64(), meta["sha256"].as_str()), (Some(bytes.len() as u64), Some(sha256_hex(&bytes).as_str())), "{key}");
    };
    for key in list_bucket(data.path(), "quarantine") {
        whole(&key);
    }
    drop(second);
}
