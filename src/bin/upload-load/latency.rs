//! P4: the time from an upload's start until the gateway reports it `advertised`
//! (stored, announced, validated, copied to perm, `available` published), with a
//! validator that answers `success` the moment an announcement reaches it.
//!
//! The validator is a gRPC subscriber (`Subscribe` + `ValidationResult`), so the same
//! run measures the embedded queue or, with a gateway started on Kafka, the broker.
//! Uploads go one after another (`--concurrency` for more); each is followed by
//! `WatchStatus` until `advertised`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use upload_gateway::grpc::pb::{
    upload_gateway_client::UploadGatewayClient, verdict_ack::Outcome, StatusRequest, SubscribeRequest,
    UploadHeader, Verdict,
};

use crate::payload::{content_type, PayloadSource};
use crate::stats::Recorder;
use crate::Output;

#[derive(clap::Args, Clone, Debug)]
pub struct LatencyArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Measured payloads.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Unmeasured payloads first.
    #[arg(long, default_value_t = 20)]
    pub warmup_count: u64,
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    #[arg(long, default_value = "1KiB", value_parser = crate::parse_size)]
    pub size: u64,
    /// Use a service no other load goes to: the validator takes every announcement of it.
    #[arg(long, default_value = "testareno")]
    pub service: String,
    /// Give up on one payload after this long.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    /// The validator token (the embedded default writes one to <data>/validator-token):
    /// Subscribe and ValidationResult need it.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = Output::Md)]
    pub output: Output,
}

pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let channel = crate::grpc::connect(&args.target, 1)
        .await
        .with_context(|| format!("cannot connect to {}", args.target))?
        .remove(0);
    let token = match &args.token_file {
        Some(f) => Some(std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?.trim().to_string()),
        None => None,
    };
    let refused = start_validator(channel.clone(), &args.service, token.as_deref()).await?;
    let payload = PayloadSource::new(args.size, 256 << 10);
    let total = args.warmup_count + args.count;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, payload, next, args, run_id) =
            (UploadGatewayClient::new(channel.clone()), payload.clone(), next.clone(), args.clone(), run_id.clone());
        tasks.push(tokio::spawn(async move {
            let (mut total_rec, mut receipt_rec) = (Recorder::default(), Recorder::default());
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let id = format!("p4-{}-{i}", &run_id[..12]);
                let r = tokio::time::timeout(args.timeout, one(client.clone(), &payload, &args.service, &id)).await;
                if i < args.warmup_count {
                    continue;
                }
                match r {
                    Ok(Ok((receipt, advertised))) => {
                        receipt_rec.ok(receipt);
                        total_rec.ok(advertised);
                    }
                    Ok(Err(e)) => total_rec.error(e),
                    Err(_) => total_rec.error("timeout".into()),
                }
            }
            (total_rec, receipt_rec)
        }));
    }
    let (mut total_rec, mut receipt_rec) = (Recorder::default(), Recorder::default());
    for t in tasks {
        let (a, b) = t.await?;
        total_rec.merge(a);
        receipt_rec.merge(b);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let uploads = total_rec.successes();
    let [p50, p90, p99, max] = total_rec.percentiles();
    let [r50, _, r99, _] = receipt_rec.percentiles();
    let errors = total_rec.into_errors();
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    let report = serde_json::json!({
        "label": args.label, "target": args.target, "size": args.size,
        "concurrency": args.concurrency, "uploads": uploads,
        "errors": errors.values().sum::<u64>(), "error_kinds": errors,
        "verdicts_not_promoted": refused, "elapsed_s": elapsed,
        "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
        "receipt_p50_ms": r50, "receipt_p99_ms": r99,
    });
    match args.output {
        Output::Json => println!("{report}"),
        Output::Md => println!(
            "| {} | {uploads} | {} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} | receipt p50 {r50:.2} / p99 {r99:.2} |",
            args.label,
            report["errors"]
        ),
    }
    Ok(())
}

/// One payload: upload (timed to the receipt), then watch until `advertised`.
async fn one(
    mut client: UploadGatewayClient<Channel>,
    payload: &PayloadSource,
    service: &str,
    id: &str,
) -> Result<(Duration, Duration), String> {
    let t0 = Instant::now();
    let header = UploadHeader {
        content_type: content_type(service),
        expected_size: payload.size(),
        ..Default::default()
    };
    let mut req = tonic::Request::new(crate::grpc::messages(payload, header));
    let id_value = id.parse().map_err(|_| format!("request id {id:?} cannot be metadata"))?;
    req.metadata_mut().insert("x-rh-insights-request-id", id_value);
    client
        .upload(req)
        .await
        .map_err(|s| format!("upload: gRPC {:?}", s.code()))?;
    let receipt = t0.elapsed();
    let mut events = client
        .watch_status(StatusRequest { request_id: id.to_string() })
        .await
        .map_err(|s| format!("watch: gRPC {:?}", s.code()))?
        .into_inner();
    while let Some(e) = events.message().await.map_err(|s| format!("watch: gRPC {:?}", s.code()))? {
        match e.status.as_str() {
            "advertised" => return Ok((receipt, t0.elapsed())),
            "rejected" | "handoff" | "error" => return Err(format!("status {}", e.status)),
            _ => {}
        }
    }
    Err("status stream ended before advertised".into())
}

/// Subscribes to the service's announcements and answers each with `success` at once.
/// Returns a counter of verdicts the gateway did not promote.
async fn start_validator(channel: Channel, service: &str, token: Option<&str>) -> anyhow::Result<Arc<std::sync::atomic::AtomicU64>> {
    let mut client = UploadGatewayClient::new(channel);
    fn with_token<T>(token: Option<&str>, mut req: tonic::Request<T>) -> anyhow::Result<tonic::Request<T>> {
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().context("the token cannot be metadata")?);
        }
        Ok(req)
    }
    let mut announcements = client
        .subscribe(with_token(token, tonic::Request::new(SubscribeRequest { service: service.to_string() }))?)
        .await
        .context("Subscribe")?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Verdict>(1024);
    let mut acks = client
        .validation_result(with_token(token, tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)))?)
        .await
        .context("ValidationResult")?
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(a)) = announcements.message().await {
            let v = Verdict { request_id: a.request_id, validation: "success".into(), reason: String::new(), ..Default::default() };
            if tx.send(v).await.is_err() {
                break;
            }
        }
    });
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok(Some(ack)) = acks.message().await {
            if ack.outcome != Outcome::Promoted as i32 {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                eprintln!("verdict for {} not promoted: {}", ack.request_id, ack.message);
            }
        }
    });
    Ok(refused)
}
