//! The built-in validator (`upload-gateway validate`), the original service's test
//! consumer made real: it subscribes to one service's announcements over gRPC,
//! fetches each payload, decides, reports the verdict over gRPC `ValidationResult`,
//! and prints one line per payload. It needs nothing but the gateway's address.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::Streaming;

use crate::grpc::pb::{self, verdict_ack::Outcome};

pub mod check;
pub mod connect;
mod fetch;
mod kafka;

pub use check::{Decision, Mode};
pub use connect::ConnectArgs;
pub use fetch::Source;

#[derive(Debug, Clone, clap::Args)]
pub struct ValidateArgs {
    /// The gateway, e.g. http://gateway:8080 or https://gateway:8443 (gRPC is on its
    /// one port). Needed with `--via grpc`; with `--via kafka` only for `--download grpc`.
    #[arg(long, env = "UPLOAD_GATEWAY")]
    pub gateway: Option<String>,
    /// The service whose payloads to validate, e.g. testareno.
    #[arg(long)]
    pub service: String,
    /// The verdict: always failure, always success, or check (success for a valid
    /// tar.gz matching its announcement, failure with the reason otherwise).
    #[arg(long, value_enum)]
    pub verdict: Mode,
    /// Stop after this many verdicts were acknowledged (default: run until stopped).
    #[arg(long)]
    pub count: Option<u64>,
    /// How announcements arrive and verdicts leave.
    #[arg(long, value_enum, default_value_t = Via::Grpc)]
    pub via: Via,
    /// Where the payload bytes come from.
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    pub download: Source,
    /// The validator's credential and the gateway's TLS.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// With `--via kafka`: where Kafka is, and its topics.
    #[command(flatten)]
    pub kafka: kafka::KafkaArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// gRPC `Subscribe` and `ValidationResult` on the gateway's port.
    Grpc,
    /// The announce and validation topics on Kafka, with rdkafka directly.
    Kafka,
}

enum Stop {
    /// Give up: the gateway refused what was asked (e.g. an unknown service).
    Fatal(anyhow::Error),
    /// Connect again (the gateway restarted, the network failed).
    Again(anyhow::Error),
}

fn grpc_error(what: &str, s: tonic::Status) -> Stop {
    use tonic::Code::*;
    let e = anyhow::anyhow!("{what}: {:?}: {}", s.code(), s.message());
    match s.code() {
        InvalidArgument | NotFound | PermissionDenied | Unauthenticated | Unimplemented
        | FailedPrecondition => Stop::Fatal(e),
        _ => Stop::Again(e),
    }
}

/// Runs until `--count` verdicts were acknowledged (forever without it),
/// reconnecting when the gateway goes away.
pub async fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    if args.via == Via::Kafka {
        return kafka::run(&args, http).await;
    }
    let gateway = args
        .gateway
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--gateway is required with --via grpc"))?;
    let endpoint = args.connect.endpoint(gateway)?;
    args.connect.token()?; // a missing token is said now, not at the first call
    let mut done = 0u64;
    let mut backoff = Duration::from_millis(500);
    loop {
        if args.count.is_some_and(|c| done >= c) {
            return Ok(());
        }
        let before = done;
        match session(&args, &endpoint, &http, &mut done).await {
            Ok(()) => return Ok(()),
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Again(e)) => {
                if done > before {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "lost the gateway; connecting again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One connection: subscribe, and answer each announcement in turn.
async fn session(
    args: &ValidateArgs,
    endpoint: &Endpoint,
    http: &reqwest::Client,
    done: &mut u64,
) -> Result<(), Stop> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Stop::Again(anyhow::anyhow!("cannot connect to {:?}: {e}", args.gateway)))?;
    let mut client = args.connect.client(channel).map_err(Stop::Fatal)?;
    let fetcher = fetch::Fetcher {
        source: args.download,
        http: http.clone(),
        grpc: Some(client.clone()),
    };
    let (verdicts, rx) = mpsc::channel(16);
    let mut acks = client
        .validation_result(ReceiverStream::new(rx))
        .await
        .map_err(|s| grpc_error("ValidationResult", s))?
        .into_inner();
    let mut work = client
        .subscribe(pb::SubscribeRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| grpc_error("Subscribe", s))?
        .into_inner();
    tracing::info!(gateway = ?args.gateway, service = %args.service, verdict = ?args.verdict, "validating");
    while let Some(a) = work
        .message()
        .await
        .map_err(|s| grpc_error("Subscribe", s))?
    {
        let decision = match fetcher.open(&a).await {
            Ok((bytes, _from)) => check::decide(args.verdict, bytes, a.size, &a.sha256).await,
            Err(e) => Err(e),
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => {
                // No verdict: the gateway gives the payload out again.
                println!("request_id={} error={:?}", a.request_id, format!("{e:#}"));
                continue;
            }
        };
        let ack = report(&verdicts, &mut acks, &a.request_id, &decision).await?;
        let outcome = Outcome::try_from(ack.outcome).unwrap_or(Outcome::Unspecified);
        println!(
            "request_id={} service={} size={} verdict={} outcome={} reason={:?} message={:?}",
            a.request_id,
            a.service,
            a.size,
            decision.validation,
            outcome.as_str_name().to_ascii_lowercase(),
            decision.reason,
            ack.message
        );
        *done += 1;
        if args.count.is_some_and(|c| *done >= c) {
            return Ok(());
        }
    }
    Err(Stop::Again(anyhow::anyhow!(
        "the gateway ended the subscription"
    )))
}

/// Sends one verdict and waits for its ack; sends it again (a few times, backing
/// off) while the gateway answers RETRY.
async fn report(
    verdicts: &mpsc::Sender<pb::Verdict>,
    acks: &mut Streaming<pb::VerdictAck>,
    request_id: &str,
    d: &Decision,
) -> Result<pb::VerdictAck, Stop> {
    let mut backoff = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let verdict = pb::Verdict {
            request_id: request_id.to_string(),
            validation: d.validation.to_string(),
            reason: d.reason.clone(),
            ..Default::default()
        };
        verdicts
            .send(verdict)
            .await
            .map_err(|_| Stop::Again(anyhow::anyhow!("the verdict stream closed")))?;
        let ack = acks
            .message()
            .await
            .map_err(|s| grpc_error("ValidationResult", s))?
            .ok_or_else(|| Stop::Again(anyhow::anyhow!("the gateway closed the verdict stream")))?;
        if ack.outcome != Outcome::Retry as i32 || attempt == 8 {
            return Ok(ack);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}
