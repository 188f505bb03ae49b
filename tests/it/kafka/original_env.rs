//! The original upload service's environment variable names, set the way its
//! deployments set them, on the gateway binary: LISTEN_PORT, WORKDIR, STORAGE_DRIVER,
//! KAFKAMQ, MAX_LENGTH, and SERVICE_LIMITS (a limit above MAX_LENGTH).

use crate::common::*;
use super::support::*;
use super::WAIT;

#[tokio::test]
async fn the_original_services_environment_variables_configure_the_gateway() {
    let _broker = BROKER.read().await;
    let n = Names::new("envnames");
    let data = tempfile::tempdir().unwrap();
    let mut cmd = GatewayProcess::command();
    cmd.args(as_strs(&n.topic_flags()))
        .env_remove("LISTEN_ADDR")
        .env_remove("DATA_DIR")
        .env("LISTEN_PORT", "0")
        .env("WORKDIR", data.path())
        .env("STORAGE_DRIVER", "localdisk")
        .env("KAFKAMQ", brokers())
        .env("MAX_LENGTH", "1000")
        .env("SERVICE_LIMITS", "qpc=5000");
    let path = data.path().to_path_buf();
    let gw = tokio::task::spawn_blocking(move || GatewayProcess::spawn(cmd, &path)).await.unwrap();
    // LISTEN_PORT=0: the gateway took a free port (on the default address, every
    // interface) and said which.
    assert_ne!(gw.addr.port(), 0);
    let http = reqwest::Client::new();

    // MAX_LENGTH for every service, SERVICE_LIMITS above it for one.
    let info: serde_json::Value = http.get(format!("{}/api/ingress/v1/upload", gw.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["services"]["advisor"]["max_size"], 1000, "{info}");
    assert_eq!(info["services"]["qpc"]["max_size"], 5000, "{info}");
    let over = upload_to(&http, &gw.base, "advisor", None, vec![b'a'; 1001]).await;
    assert_eq!(over.status(), 413);
    assert!(over.text().await.unwrap().contains("Should not exceed 1000 bytes"));
    let over = upload_to(&http, &gw.base, "qpc", None, vec![b'q'; 5001]).await;
    assert_eq!(over.status(), 413);
    assert!(over.text().await.unwrap().contains("Should not exceed 5000 bytes"));
    let id = accepted_id(upload_to(&http, &gw.base, "qpc", Some("env-names-qpc-1"), vec![b'q'; 5000]).await).await;

    // KAFKAMQ: announced on the broker; WORKDIR: stored in that folder.
    let ann = wait_records(&n.announce("qpc"), &id, 1, WAIT).await[0].json();
    assert_eq!(ann["size"], 5000);
    assert_eq!(crate::common::local_bytes(data.path(), "quarantine", &id).unwrap(), vec![b'q'; 5000]);
    drop(gw);
    n.cleanup().await;
}
