//! `upload-load`: the load client of `scripts/bench`.
//!
//! ```text
//! upload-load run --target http://127.0.0.1:8080 --protocol rest --concurrency 64 --size 10KiB --duration 10s
//! upload-load run --target http://127.0.0.1:8080 --protocol grpc --size 1GiB --count 1
//! upload-load run --target /tmp/d --protocol fsync --size 10KiB       # the disk's ceiling
//! upload-load latency --target http://127.0.0.1:8080 --count 1000      # upload -> advertised
//! upload-load serve-baseline --listen 127.0.0.1:0                      # bare hyper: read body, 202
//! upload-load run --target http://127.0.0.1:8080 --protocol tus --size 1GiB --count 1   # resumable, one PATCH
//! upload-load tus-resume --target http://127.0.0.1:8080 --size 1GiB --cut 0.5      # bytes sent again after a cut
//! upload-load verdicts --targets http://a:8080,http://b:8080 --brokers 127.0.0.1:9092 --count 2000   # verdicts/s
//! upload-load s3-put --endpoint http://127.0.0.1:3900 --access-key .. --secret-key .. --bucket b --size 1GiB
//! ```
//! `run` reports uploads/s, MB/s (10^6 bytes of payload per second), p50/p90/p99
//! latency and errors, as a Markdown row or one JSON line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod baseline;
mod disk;
mod driver;
mod grpc;
mod latency;
mod payload;
mod rest;
mod s3put;
mod stats;
mod tus;
mod verdicts;

#[derive(Parser)]
#[command(name = "upload-load", about = "Load client for upload-gateway (REST multipart and gRPC Upload).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Upload payloads as fast as the gateway takes them and report throughput and latency.
    Run(RunArgs),
    /// Upload payloads one after another with a gRPC validator that answers `success`
    /// at once, and time each from the upload's start until its status is `advertised`.
    Latency(latency::LatencyArgs),
    /// A minimal hyper server (HTTP/1.1 and h2c) that reads each request body and
    /// answers 202: the ceiling for HTTP handling on this machine.
    ServeBaseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Upload one payload straight to an S3 server with aws-sdk-s3 (multipart, the
    /// gateway's part size and parts in flight): the baseline of P2 on S3.
    S3Put(s3put::S3PutArgs),
    /// One tus upload whose PATCH is cut off at --cut (the connection closed), then
    /// resumed from the offset the gateway reports: prints the bytes sent again (JSON).
    TusResume(tus::ResumeArgs),
    /// Upload payloads to a fleet (`--targets`), then write a `success` verdict for each
    /// on the validation topic and time until every `available` is out: verdicts/s.
    Verdicts(verdicts::VerdictArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Rest,
    Grpc,
    /// No network: the disk's durable-write ceiling (temp file, fsync, rename, fsync
    /// folder) in the folder --target.
    Fsync,
    /// Straight to the S3 server at --target, no gateway: one PutObject per payload
    /// into --bucket (P1-S3's baseline). Credentials from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_REGION.
    S3,
    /// tus 1.0.0: create the upload (POST), then send it whole in one PATCH.
    Tus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Md,
    Json,
}

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Base URL of the gateway (or of `serve-baseline`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    #[arg(long, value_enum, default_value_t = Protocol::Rest)]
    pub protocol: Protocol,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// TCP connections (REST: always one per upload in flight; gRPC: the in-flight
    /// uploads share them round-robin). Default: --concurrency.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Payload size: bytes, or with a unit (10KiB, 1GiB, 5MB).
    #[arg(long, default_value = "10KiB", value_parser = parse_size)]
    pub size: u64,
    /// Bytes per body frame / gRPC chunk message.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    pub chunk: u64,
    /// Stop after this many measured uploads.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop starting uploads after this long (e.g. 10s, 500ms, 2m). Default 10s when
    /// --count is not given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Upload for this long first without measuring.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The service: the payload's content type is application/vnd.redhat.<service>.bench+tgz.
    #[arg(long, default_value = "advisor")]
    pub service: String,
    /// REST path of the upload endpoint (with --protocol tus: the creation path,
    /// `/api/ingress/v1/uploads/` when this is left as it is).
    #[arg(long, default_value = "/api/ingress/v1/upload")]
    pub path: String,
    /// With --protocol s3: the bucket (created when missing).
    #[arg(long, default_value = "upload-load-bench")]
    pub bucket: String,
    /// A name for the report row.
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = Output::Md)]
    pub output: Output,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    upload_gateway::config::parse_size(s)
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = cli.threads {
        rt.worker_threads(t);
    }
    let rt = rt.build().expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => driver::run(args).await,
            Command::Latency(args) => latency::run(args).await,
            Command::ServeBaseline { listen } => baseline::serve(listen).await,
            Command::S3Put(args) => s3put::run(args).await,
            Command::TusResume(args) => tus::resume(args).await,
            Command::Verdicts(args) => verdicts::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upload-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
