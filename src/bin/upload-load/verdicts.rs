//! P6: verdicts applied per second by a fleet. Uploads `--count` small payloads over
//! REST, spread over the gateways in `--targets`, then writes a `success` verdict for
//! each onto the validation topic at once and times until every payload's `available`
//! message is on the available topic. The gateways apply the verdicts (each the
//! partitions its share of the consumer group got): with one target, one replica's
//! rate; with three, the fleet's.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::payload::Multipart;
use crate::Output;

#[derive(clap::Args, Clone, Debug)]
pub struct VerdictArgs {
    /// The gateways' base URLs, comma-separated: uploads go round-robin over them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<String>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub brokers: String,
    #[arg(long, default_value = "platform.upload.validation")]
    pub validation_topic: String,
    #[arg(long, default_value = "platform.upload.available")]
    pub available_topic: String,
    /// Payloads (and verdicts).
    #[arg(long, default_value_t = 2000)]
    pub count: usize,
    /// Uploads in flight at once (before the timing starts).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, default_value = "advisor")]
    pub service: String,
    /// Gateway process ids whose CPU time over the verdicts is reported (Linux, from
    /// /proc), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub cpu_pids: Vec<u32>,
    /// Give up after this long without every `available`.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long, value_enum, default_value_t = Output::Md)]
    pub output: Output,
}

pub async fn run(args: VerdictArgs) -> anyhow::Result<()> {
    let ids = upload_all(&args).await?;
    let consumer = available_from_now(&args)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "5")
        .create()
        .context("Kafka producer")?;

    let cpu0 = cpu_seconds(&args.cpu_pids)?;
    let started = Instant::now();
    let sends = ids.iter().map(|id| {
        let body = serde_json::json!({ "request_id": id, "validation": "success" }).to_string();
        let producer = producer.clone();
        let (topic, id) = (args.validation_topic.clone(), id.clone());
        async move {
            producer
                .send(FutureRecord::to(&topic).key(&id).payload(&body), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("sending the verdict of {id}: {e}"))
        }
    });
    futures_util::future::try_join_all(sends).await?;
    let sent = started.elapsed();

    let mut waiting: HashSet<String> = ids.iter().cloned().collect();
    let deadline = started + args.timeout;
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, consumer.recv()).await;
        let Ok(m) = next else { bail!("{} of {} payloads never advertised within {:?}", waiting.len(), ids.len(), args.timeout) };
        let m = m.context("reading the available topic")?;
        if let Some(key) = m.key() {
            waiting.remove(String::from_utf8_lossy(key).as_ref());
        }
    }
    let took = started.elapsed();
    let rate = ids.len() as f64 / took.as_secs_f64();
    let cpu: Vec<f64> = cpu_seconds(&args.cpu_pids)?.iter().zip(&cpu0).map(|(b, a)| b - a).collect();
    let cpu_ms_per_verdict = cpu.iter().sum::<f64>() * 1000.0 / ids.len() as f64;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "label": args.label, "replicas": args.targets.len(), "verdicts": ids.len(),
                "seconds": took.as_secs_f64(), "verdicts_per_s": rate, "sent_in_s": sent.as_secs_f64(),
                "gateway_cpu_s": cpu, "gateway_cpu_ms_per_verdict": cpu_ms_per_verdict,
            })
        ),
        Output::Md => println!(
            "| {} | {} replica(s) | {} verdicts | {:.2} s | {:.0} verdicts/s | {:.3} ms gateway CPU per verdict |",
            args.label,
            args.targets.len(),
            ids.len(),
            took.as_secs_f64(),
            rate,
            cpu_ms_per_verdict
        ),
    }
    Ok(())
}

/// Uploads `count` payloads of 1 KiB, round-robin over the targets; their request ids.
async fn upload_all(args: &VerdictArgs) -> anyhow::Result<Vec<String>> {
    use futures_util::StreamExt;
    let http = reqwest::Client::new();
    let form = Multipart::new(&args.service);
    let body: bytes::Bytes = [form.prefix.as_ref(), &[b'v'; 1024], form.suffix.as_ref()].concat().into();
    let uploads = futures_util::stream::iter(0..args.count)
        .map(|i| {
            let (http, body, form_type) = (http.clone(), body.clone(), form.content_type.clone());
            let url = format!("{}/api/ingress/v1/upload", args.targets[i % args.targets.len()].trim_end_matches('/'));
            async move {
                let resp = http
                    .post(&url)
                    .header("content-type", form_type)
                    .body(body)
                    .send()
                    .await?;
                if resp.status().as_u16() != 202 {
                    bail!("upload {i} to {url}: {} {}", resp.status(), resp.text().await.unwrap_or_default());
                }
                let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
                body["request_id"].as_str().map(str::to_string).context("the receipt names no request_id")
            }
        })
        .buffer_unordered(args.concurrency);
    uploads.collect::<Vec<_>>().await.into_iter().collect()
}

/// A reader of the available topic from its current end, in no group.
fn available_from_now(args: &VerdictArgs) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", format!("upload-load.{}", uuid::Uuid::new_v4().simple()))
        .set("enable.auto.commit", "false")
        .create()
        .context("Kafka consumer")?;
    let topic = &args.available_topic;
    let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).context("available topic metadata")?;
    let partitions = meta.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    if partitions == 0 {
        bail!("topic {topic} has no partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).context("watermarks")?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl).context("assigning the available topic")?;
    Ok(consumer)
}

/// CPU time (user + system) each process has used so far, in seconds.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<Vec<f64>> {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
            // Fields after the command name (which may hold spaces), in parentheses.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc stat format")?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).zip(fields.get(12).and_then(|s| s.parse::<f64>().ok())).map(|(u, s)| u + s).context("utime/stime")?;
            Ok(ticks / hz)
        })
        .collect()
}
