//! `validate --via kafka`: a platform validator on rdkafka directly. It reads one
//! service's announce topic in a consumer group, fetches each payload from its URL,
//! decides, and writes the verdict on the validation topic.

use std::time::Duration;

use super::check::{self, Decision};
use super::fetch::{Fetcher, Source};
use super::ValidateArgs;
use crate::grpc::pb;
use crate::queue::kafka::validator::{Announcement, LinkConfig, ValidatorLink};

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long = "kafka-brokers", env = "KAFKAMQ")]
    pub brokers: Option<String>,
    /// The announce topic is this prefix plus the service name...
    #[arg(long, default_value = "platform.upload.")]
    pub announce_topic_prefix: String,
    /// ...unless every service shares this one topic.
    #[arg(long)]
    pub announce_topic: Option<String>,
    #[arg(long, default_value = "platform.upload.validation")]
    pub validation_topic: String,
    /// The consumer group (validators of one service share the work).
    #[arg(long)]
    pub group: Option<String>,
}

pub async fn run(args: &ValidateArgs, http: reqwest::Client) -> anyhow::Result<()> {
    let k = &args.kafka;
    let brokers = k
        .brokers
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--via kafka needs --kafka-brokers (or KAFKAMQ)"))?;
    let link = ValidatorLink::connect(LinkConfig {
        brokers,
        options: Vec::new(),
        service: args.service.clone(),
        announce_topic: k
            .announce_topic
            .clone()
            .unwrap_or_else(|| format!("{}{}", k.announce_topic_prefix, args.service)),
        validation_topic: k.validation_topic.clone(),
        group: k
            .group
            .clone()
            .unwrap_or_else(|| format!("upload-gateway-validator.{}", args.service)),
    })?;
    let grpc = match &args.gateway {
        Some(g) => match args.connect.client(args.connect.endpoint(g)?.connect_lazy()) {
            Ok(client) => Some(client),
            // gRPC Download needs the token; the announced URLs do not.
            Err(e) if args.download != Source::Grpc => {
                tracing::warn!(error = %format!("{e:#}"), "no validator token: fetching payloads from their URLs only");
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let fetcher = Fetcher {
        source: if grpc.is_some() { args.download } else { Source::Url },
        http,
        grpc,
    };
    tracing::info!(service = %args.service, verdict = ?args.verdict, "validating from Kafka");
    let mut done = 0u64;
    while args.count.is_none_or(|c| done < c) {
        let a = match link.next().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka unreadable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let decision = match decide(args, &fetcher, &a).await {
            Ok(d) => d,
            Err(e) => {
                // No verdict: a restarted validator reads it again.
                println!("request_id={} error={:?}", a.announce.request_id, format!("{e:#}"));
                continue;
            }
        };
        let mut backoff = Duration::from_millis(500);
        while let Err(e) = link.answer(&a, decision.validation, Some(&decision.reason)).await {
            tracing::warn!(error = %e, "cannot send the verdict; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        println!(
            "request_id={} service={} size={} verdict={} reason={:?} via=kafka",
            a.announce.request_id, a.announce.service, a.announce.size, decision.validation, decision.reason
        );
        done += 1;
    }
    Ok(())
}

async fn decide(args: &ValidateArgs, fetcher: &Fetcher, a: &Announcement) -> anyhow::Result<Decision> {
    let n = &a.announce;
    let wanted = pb::Announcement {
        request_id: n.request_id.clone(),
        service: n.service.clone(),
        url: n.url.clone(),
        size: n.size,
        sha256: n.sha256.clone(),
        ..Default::default()
    };
    let (bytes, _) = fetcher.open(&wanted).await?;
    check::decide(args.verdict, bytes, n.size, &n.sha256).await
}
