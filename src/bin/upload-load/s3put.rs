//! The S3 baseline of P2: the same bytes uploaded straight to the S3 server with
//! aws-sdk-s3, no gateway in between. It uses the gateway's own client (path-style,
//! payloads signed over plain HTTP as the SDK does by default) with the same part size
//! and parts in flight, so the ratio measures what the gateway adds: HTTP in, limits,
//! sha256.

use std::time::Instant;

use anyhow::Context;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use upload_gateway::storage::s3::S3Options;
use tokio::task::JoinSet;

use crate::payload::PayloadSource;
use crate::stats::Report;
use crate::{parse_size, Output};

#[derive(clap::Args, Clone, Debug)]
pub struct S3PutArgs {
    /// The S3 server, e.g. http://127.0.0.1:3900.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    #[arg(long)]
    pub access_key: String,
    #[arg(long)]
    pub secret_key: String,
    /// Bucket to upload into (created when missing; the object is deleted afterwards).
    #[arg(long)]
    pub bucket: String,
    /// Payload size: bytes, or with a unit (1GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Multipart part size (the gateway's default).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Parts sent at once (the gateway's default).
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    #[arg(long, default_value = "P2-S3-direct")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = Output::Md)]
    pub output: Output,
}

pub async fn run(a: S3PutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.part_size >= 5 << 20, "--part-size: at least 5MiB (S3's minimum part size)");
    anyhow::ensure!(a.inflight >= 1, "--inflight: at least 1");
    let client = client(&a).await?;
    match client.create_bucket().bucket(&a.bucket).send().await {
        Ok(_) => {}
        Err(e) => {
            // Already there (ours from an earlier run) is fine; anything else is not.
            let owned = e
                .as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
            anyhow::ensure!(owned, "creating bucket {}: {}", a.bucket, aws_sdk_s3::error::DisplayErrorContext(&e));
        }
    }
    // The part is one buffer of random bytes sent again and again, so the client's own
    // memory and CPU stay out of the figure (as in upload-load run).
    let part = PayloadSource::new(a.part_size, a.part_size).contiguous();
    let key = format!("s3-put-{}", uuid::Uuid::new_v4().simple());
    let started = Instant::now();
    let upload = put(&client, &a, &key, part).await;
    let elapsed = started.elapsed();
    let _ = client.delete_object().bucket(&a.bucket).key(&key).send().await;
    let errors = u64::from(upload.is_err());
    if let Err(e) = &upload {
        eprintln!("upload-load s3-put: {e:#}");
    }
    let ms = elapsed.as_secs_f64() * 1000.0;
    let secs = elapsed.as_secs_f64();
    let report = Report {
        label: a.label.clone(),
        protocol: "s3".into(),
        target: a.endpoint.clone(),
        size: a.size,
        concurrency: 1,
        connections: a.inflight,
        uploads: 1 - errors,
        errors,
        error_kinds: upload.as_ref().err().map(|e| [(format!("{e}"), 1)].into()).unwrap_or_default(),
        elapsed_s: secs,
        uploads_per_s: (1 - errors) as f64 / secs,
        mb_per_s: if errors == 0 { a.size as f64 / secs / 1e6 } else { 0.0 },
        p50_ms: ms,
        p90_ms: ms,
        p99_ms: ms,
        max_ms: ms,
        warmup_uploads: 0,
    };
    match a.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Md => println!("{}\n{}", Report::markdown_header(), report.markdown_row()),
    }
    upload.map(|_| ())
}

/// One multipart upload of `a.size` bytes, at most `a.inflight` parts in flight.
async fn put(client: &Client, a: &S3PutArgs, key: &str, part: bytes::Bytes) -> anyhow::Result<()> {
    let created = client
        .create_multipart_upload()
        .bucket(&a.bucket)
        .key(key)
        .send()
        .await
        .context("CreateMultipartUpload")?;
    let upload_id = created.upload_id().context("no upload id")?.to_string();
    let parts = a.size.div_ceil(a.part_size);
    let mut in_flight = JoinSet::new();
    let mut done = Vec::with_capacity(parts as usize);
    for n in 0..parts {
        while in_flight.len() >= a.inflight {
            done.push(in_flight.join_next().await.context("no part")???);
        }
        let len = (a.size - n * a.part_size).min(a.part_size) as usize;
        let body = part.slice(..len);
        let (client, bucket, key, id) = (client.clone(), a.bucket.clone(), key.to_string(), upload_id.clone());
        let number = n as i32 + 1;
        in_flight.spawn(async move {
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(body))
                .send()
                .await
                .with_context(|| format!("UploadPart {number}"))?;
            anyhow::Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build())
        });
    }
    while let Some(r) = in_flight.join_next().await {
        done.push(r??);
    }
    done.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(&a.bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        .send()
        .await
        .context("CompleteMultipartUpload")?;
    Ok(())
}

/// The gateway's own S3 client, from the same settings the gateway would be given.
async fn client(a: &S3PutArgs) -> anyhow::Result<Client> {
    gateway_client(&a.endpoint, &a.region, &a.access_key, &a.secret_key, a.size).await
}

async fn gateway_client(endpoint: &str, region: &str, key: &str, secret: &str, size: u64) -> anyhow::Result<Client> {
    let config = upload_gateway::Config::from_args([
        "upload-load",
        "--storage-driver=s3",
        &format!("--s3-endpoint-url={endpoint}"),
        &format!("--s3-region={region}"),
        &format!("--s3-access-key-id={key}"),
        &format!("--s3-secret-access-key={secret}"),
    ])?;
    let options = S3Options::from_config(&config, size, std::path::Path::new(".")).map_err(anyhow::Error::msg)?;
    Ok(upload_gateway::storage::s3::client(&options).await)
}

/// P1-S3's baseline (`run --protocol s3`): what the S3 server takes with nothing in
/// between, one PutObject per payload under a fresh key, on the gateway's own client.
pub struct PutUploader {
    client: Client,
    bucket: String,
    body: bytes::Bytes,
    prefix: String,
    n: u64,
}

impl PutUploader {
    pub async fn many(args: &crate::RunArgs, body: bytes::Bytes) -> anyhow::Result<Vec<PutUploader>> {
        let env = |name: &str| std::env::var(name).with_context(|| format!("--protocol s3 needs {name}"));
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let client = gateway_client(&args.target, &region, &env("AWS_ACCESS_KEY_ID")?, &env("AWS_SECRET_ACCESS_KEY")?, args.size).await?;
        if let Err(e) = client.create_bucket().bucket(&args.bucket).send().await {
            let owned = e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists());
            anyhow::ensure!(owned, "creating bucket {}: {}", args.bucket, aws_sdk_s3::error::DisplayErrorContext(&e));
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        Ok((0..args.concurrency)
            .map(|i| PutUploader { client: client.clone(), bucket: args.bucket.clone(), body: body.clone(), prefix: format!("{run}-{i}"), n: 0 })
            .collect())
    }
}

impl crate::driver::Uploader for PutUploader {
    async fn upload(&mut self) -> Result<(), String> {
        self.n += 1;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}-{}", self.prefix, self.n))
            .body(ByteStream::from(self.body.clone()))
            .send()
            .await
            .map(drop)
            .map_err(|e| format!("PutObject: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
    }
}
