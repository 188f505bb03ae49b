//! Runs uploaders side by side until the count or the duration is reached, and
//! turns what they recorded into a report.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::payload::PayloadSource;
use crate::stats::{Recorder, Report};
use crate::{disk, grpc, rest, tus, Output, Protocol, RunArgs};

/// One upload at a time over its own connection (or its share of one).
pub trait Uploader: Send + 'static {
    /// One whole upload; `Err` carries the kind of failure (e.g. "HTTP 503").
    fn upload(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// When to measure and when to stop.
struct Plan {
    measure_from: Instant,
    deadline: Option<Instant>,
    remaining: Option<AtomicU64>,
}

impl Plan {
    /// Whether the next upload may start, and whether it is measured.
    fn next(&self) -> Option<bool> {
        let now = Instant::now();
        if now < self.measure_from {
            return Some(false);
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        if let Some(r) = &self.remaining {
            r.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).ok()?;
        }
        Some(true)
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let payload = PayloadSource::new(args.size, args.chunk);
    let connections = match args.protocol {
        Protocol::Rest | Protocol::Tus | Protocol::Fsync | Protocol::S3 => args.concurrency,
        Protocol::Grpc => args.connections.unwrap_or(args.concurrency).clamp(1, args.concurrency),
    };
    let (rec, elapsed, warmup_uploads) = match args.protocol {
        Protocol::Rest => {
            let target = Arc::new(rest::Target::parse(&args.target, &args.path)?);
            let body = rest::BodyMaker::new(&payload, &args.service);
            let workers = (0..args.concurrency)
                .map(|_| rest::RestUploader::new(target.clone(), body.clone()))
                .collect();
            drive(workers, &args).await
        }
        Protocol::Tus => {
            let path = if args.path == "/api/ingress/v1/upload" { "/api/ingress/v1/uploads/" } else { args.path.as_str() };
            let target = Arc::new(rest::Target::parse(&args.target, path)?);
            let workers = (0..args.concurrency)
                .map(|_| tus::TusUploader::new(target.clone(), payload.clone(), &args.service))
                .collect();
            drive(workers, &args).await
        }
        Protocol::Grpc => {
            let channels = grpc::connect(&args.target, connections)
                .await
                .with_context(|| format!("cannot connect to {}", args.target))?;
            let workers = (0..args.concurrency)
                .map(|i| grpc::GrpcUploader::new(channels[i % connections].clone(), payload.clone(), &args.service))
                .collect();
            drive(workers, &args).await
        }
        Protocol::S3 => {
            let workers = crate::s3put::PutUploader::many(&args, payload.contiguous()).await?;
            drive(workers, &args).await
        }
        Protocol::Fsync => {
            let dir = disk::prepare(&args.target)?;
            let bytes = payload.contiguous();
            let workers = (0..args.concurrency).map(|_| disk::DiskWriter::new(dir.clone(), bytes.clone())).collect();
            drive(workers, &args).await
        }
    };
    let mut report = report(&args, connections, rec, elapsed);
    report.warmup_uploads = warmup_uploads;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&report)?),
        Output::Md => println!("{}\n{}", Report::markdown_header(), report.markdown_row()),
    }
    Ok(())
}

/// What a run recorded: the measured uploads, how long they took, and how many
/// uploads (successful or not) ran during the warm-up.
async fn drive<U: Uploader>(workers: Vec<U>, args: &RunArgs) -> (Recorder, Duration, u64) {
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let duration = match (args.count, args.duration) {
        (None, None) => Some(Duration::from_secs(10)),
        (_, d) => d,
    };
    let plan = Arc::new(Plan {
        measure_from,
        deadline: duration.map(|d| measure_from + d),
        remaining: args.count.map(AtomicU64::new),
    });
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut u| {
            let plan = plan.clone();
            tokio::spawn(async move {
                let (mut rec, mut warm) = (Recorder::default(), 0u64);
                while let Some(measured) = plan.next() {
                    let t = Instant::now();
                    let r = u.upload().await;
                    match (measured, r) {
                        (false, _) => warm += 1,
                        (true, Ok(())) => rec.ok(t.elapsed()),
                        (true, Err(kind)) => rec.error(kind),
                    }
                }
                (rec, warm)
            })
        })
        .collect();
    let (mut all, mut warm) = (Recorder::default(), 0);
    for t in tasks {
        let (rec, w) = t.await.expect("an upload worker panicked");
        all.merge(rec);
        warm += w;
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    (all, elapsed, warm)
}

fn report(args: &RunArgs, connections: usize, mut rec: Recorder, elapsed: Duration) -> Report {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let uploads = rec.successes();
    let [p50, p90, p99, max] = rec.percentiles();
    let error_kinds = rec.into_errors();
    Report {
        label: args.label.clone(),
        protocol: format!("{:?}", args.protocol).to_lowercase(),
        target: args.target.clone(),
        size: args.size,
        concurrency: args.concurrency,
        connections,
        uploads,
        errors: error_kinds.values().sum(),
        error_kinds,
        elapsed_s: secs,
        uploads_per_s: uploads as f64 / secs,
        mb_per_s: uploads as f64 * args.size as f64 / secs / 1e6,
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
        max_ms: max,
        warmup_uploads: 0,
    }
}
