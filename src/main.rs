//! The command line: `serve` (the default), `validate`, `upload` and `token`.

use clap::{Parser, Subcommand};
use upload_gateway::{App, Config};

/// mimalloc instead of glibc's malloc: allocation was about a tenth of the gateway's
/// CPU under small-upload load (bench/notes.md, P1). It is built to commit memory as
/// it is used (`.cargo/config.toml`), so resident memory stays as with glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "upload-gateway", version, about = "Takes uploads in over REST and gRPC, stores them, announces them, applies verdicts.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
    /// Colour in text logs: `auto` (only when stderr is a terminal and NO_COLOR is
    /// unset or empty), `always` or `never`. JSON logs (--log-json) never have colour.
    #[arg(long, env = "LOG_COLOR", value_enum, default_value_t = LogColor::Auto, global = true)]
    log_color: LogColor,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogColor {
    Auto,
    Always,
    Never,
}

impl LogColor {
    fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            LogColor::Always => true,
            LogColor::Never => false,
            LogColor::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Run the built-in validator against a gateway: subscribe to a service's
    /// payloads, decide, report the verdicts.
    Validate(upload_gateway::validator::ValidateArgs),
    /// Send files to a gateway as resumable uploads (tus, or gRPC with --grpc), with
    /// progress, resume, retries, a sha256 check and, with --wait, the verdict. Exit
    /// codes: 0 done (with --wait: advertised or handed off), 1 failed, error or no
    /// verdict in time, 2 usage, 3 rejected by the validator, 130 interrupted (run it
    /// again to continue).
    Upload(upload_gateway::uploader::UploadArgs),
    /// Make a validator token: prints the token (for the validator) and its line for
    /// the gateway's VALIDATOR_CREDENTIALS_FILE (which keeps only the token's hash).
    Token {
        /// The credential's name (in logs and answers).
        #[arg(long)]
        name: String,
        /// The services it may act for, comma separated, or * for all.
        #[arg(long)]
        services: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let telemetry = {
        let _in_runtime = rt.enter();
        match upload_gateway::telemetry::init(cli.config.log_json, cli.log_color.enabled()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("upload-gateway: {e:#}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    let result = rt.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(cli.config).await.map(|()| 0),
            Command::Validate(args) => upload_gateway::validator::run(args).await.map(|()| 0),
            Command::Upload(args) => Ok(upload_gateway::uploader::run(args).await),
            Command::Token { name, services } => token(&name, &services).map(|()| 0),
        }
    });
    telemetry.shutdown();
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("upload-gateway: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::start(config).await?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining (a second signal exits at once)");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    app.wait().await
}

fn token(name: &str, services: &str) -> anyhow::Result<()> {
    use upload_gateway::auth::{make_token, token_hash, Table};
    let token = make_token();
    let line = format!("{name} sha256:{} {services}", token_hash(&token));
    Table::parse(&line).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("token (give it to the validator; it is not kept anywhere): {token}");
    println!("line for VALIDATOR_CREDENTIALS_FILE: {line}");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
