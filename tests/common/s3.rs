//! The real S3 server (Garage) in tests: its address and keys, unique buckets per
//! test, an independent client to look at what the gateway stored, and a private
//! server for tests that stop it.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::Client;

use super::required_env;

/// Where the S3 server is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Env {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl S3Env {
    /// The server `scripts/test` started (TEST_S3_*).
    pub fn from_test_env() -> S3Env {
        S3Env {
            endpoint: required_env("TEST_S3_ENDPOINT"),
            access_key: required_env("TEST_S3_ACCESS_KEY"),
            secret_key: required_env("TEST_S3_SECRET_KEY"),
            region: std::env::var("TEST_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        }
    }

    /// The MinIO server `scripts/test` started (TEST_MINIO_*): the S3 server with
    /// conditional writes, for the write-once checks (Garage ignores `If-None-Match`).
    pub fn minio_from_test_env() -> S3Env {
        S3Env {
            endpoint: required_env("TEST_MINIO_ENDPOINT"),
            access_key: required_env("TEST_MINIO_ACCESS_KEY"),
            secret_key: required_env("TEST_MINIO_SECRET_KEY"),
            region: "us-east-1".into(),
        }
    }

    /// A client of its own, not the gateway's, to check what was stored.
    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(&self.access_key, &self.secret_key, None, None, "tests"))
            .build();
        Client::from_conf(conf)
    }
}

/// Three bucket names no other test uses.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub quarantine: String,
    pub perm: String,
    pub reject: String,
}

impl Buckets {
    pub fn unique(tag: &str) -> Buckets {
        let n = &uuid::Uuid::new_v4().simple().to_string()[..12];
        Buckets {
            quarantine: format!("ugw-{tag}-{n}-q"),
            perm: format!("ugw-{tag}-{n}-p"),
            reject: format!("ugw-{tag}-{n}-r"),
        }
    }
}

/// The gateway flags for S3 storage on these buckets, plus `extra`.
pub fn s3_flags(env: &S3Env, b: &Buckets, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--storage-driver", "s3",
        "--s3-endpoint-url", &env.endpoint,
        "--s3-region", &env.region,
        "--s3-access-key-id", &env.access_key,
        "--s3-secret-access-key", &env.secret_key,
        "--s3-quarantine", &b.quarantine,
        "--s3-perm", &b.perm,
        "--s3-reject", &b.reject,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every key in a bucket (payloads and sidecars).
pub async fn all_keys(c: &Client, bucket: &str) -> Vec<String> {
    let out = c.list_objects_v2().bucket(bucket).send().await.expect("list objects");
    let mut keys: Vec<String> = out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    keys.sort();
    keys
}

/// Every key of a bucket but the payloads' histories (`.status/<id>/...`), which stay
/// in quarantine when their payloads move on.
pub async fn keys_but_history(c: &Client, bucket: &str) -> Vec<String> {
    all_keys(c, bucket).await.into_iter().filter(|k| !k.starts_with(".status/")).collect()
}

/// The names of the events in a payload's durable history (quarantine's `.status/<id>/`).
pub async fn history_names(c: &Client, quarantine: &str, id: &str) -> Vec<String> {
    let prefix = format!(".status/{id}/");
    all_keys(c, quarantine).await.iter().filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json").map(str::to_string)).collect()
}

/// The keys of unfinished multipart uploads in a bucket.
pub async fn unfinished_uploads(c: &Client, bucket: &str) -> Vec<String> {
    let out = c.list_multipart_uploads().bucket(bucket).send().await.expect("list multipart uploads");
    out.uploads().iter().filter_map(|u| u.key().map(str::to_string)).collect()
}

/// Whether a key exists.
pub async fn exists(c: &Client, bucket: &str, key: &str) -> bool {
    match c.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => true,
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => false,
        Err(e) => panic!("head {bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    }
}

/// The gateway's record of a payload, as JSON: its sidecar when it has one, else the
/// meta it carries in its own user metadata (`gateway-meta`, base64 JSON: a small
/// payload is one PutObject).
pub async fn stored_meta(c: &Client, bucket: &str, key: &str) -> Option<serde_json::Value> {
    if let Ok(out) = c.get_object().bucket(bucket).key(format!(".meta/{key}.json")).send().await {
        let bytes = out.body.collect().await.ok()?.into_bytes();
        return Some(serde_json::from_slice(&bytes).expect("the sidecar is JSON"));
    }
    inline_meta(c, bucket, key).await
}

/// The meta an object carries in its user metadata, if it does.
pub async fn inline_meta(c: &Client, bucket: &str, key: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let head = c.head_object().bucket(bucket).key(key).send().await.ok()?;
    let b64 = head.metadata()?.get("gateway-meta")?;
    let json = base64::engine::general_purpose::STANDARD.decode(b64).expect("gateway-meta is base64");
    Some(serde_json::from_slice(&json).expect("gateway-meta is JSON"))
}

/// An S3 server of the test's own (Garage, or MinIO where conditional writes must
/// hold), under its own state folder, for tests that stop and start S3 (the shared one
/// stays up for the other tests). Stopped when dropped.
pub struct PrivateS3 {
    service: super::PrivateService,
    pub env: S3Env,
}

/// The one the suite mostly uses (it ignores conditional writes: see README, "Trust").
pub type PrivateGarage = PrivateS3;

impl PrivateS3 {
    /// A Garage server.
    pub fn start() -> PrivateS3 {
        PrivateS3::launch("garage.sh", ["S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
    }

    /// A MinIO server: it honours `If-None-Match: *`, which replicas deciding one
    /// payload's fate rely on.
    pub fn minio() -> PrivateS3 {
        PrivateS3::launch("minio.sh", ["MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"])
    }

    fn launch(script: &str, [endpoint, key, secret]: [&str; 3]) -> PrivateS3 {
        let (service, out) = super::PrivateService::start(script);
        let vars: std::collections::HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let env = S3Env {
            endpoint: vars[endpoint].to_string(),
            access_key: vars[key].to_string(),
            secret_key: vars[secret].to_string(),
            region: vars.get("AWS_REGION").unwrap_or(&"us-east-1").to_string(),
        };
        PrivateS3 { service, env }
    }

    /// Kills the server, keeping its data and ports (an outage).
    pub fn down(&self) {
        self.service.run("down");
    }

    /// Starts it again and waits until it is healthy.
    pub fn up(&self) {
        self.service.run("up");
    }
}
