//! The uploader: `upload-gateway upload FILE...` sends files to a gateway as resumable
//! uploads (tus, or gRPC with `--grpc`), with progress, resume across runs, retries,
//! a sha256 check and, with `--wait`, the validator's verdict. README, "The uploader".
//!
//! `args` (the flags), `job` (one file, start to end), `tus` and `grpc` (the two
//! protocols), `file` (reading and hashing the file in bounded pieces), `state` (the
//! resume state under the user's cache folder), `retry` (backoff, `Retry-After`, which
//! failures are transient), `progress` (bars, plain lines).

use std::sync::Arc;

use futures_util::StreamExt;

mod args;
mod file;
mod grpc;
mod job;
pub mod progress;
pub mod retry;
pub mod state;
mod tus;

pub use args::UploadArgs;
use job::{Ctx, Report, Via};

/// Every file uploaded (with `--wait`: every payload advertised or handed off).
pub const EXIT_OK: u8 = 0;
/// An upload failed (the gateway refused it, retries ran out, the sha256 differed),
/// or with `--wait` the status was `error` or no verdict came in time.
pub const EXIT_ERROR: u8 = 1;
/// The command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// With `--wait`: a validator rejected a payload (and nothing failed).
pub const EXIT_REJECTED: u8 = 3;
/// Ctrl-C (SIGINT): stopped; the resume state is kept.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Uploads every file; the process's exit code.
pub async fn run(args: UploadArgs) -> u8 {
    let ctx = match ctx(&args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("upload-gateway upload: {e:#}");
            return EXIT_USAGE;
        }
    };
    let mut results = futures_util::stream::iter(args.files.clone())
        .map(|path| {
            let ctx = ctx.clone();
            async move { job::upload(&ctx, &path).await }
        })
        .buffered(args.parallel as usize);
    // Each file's result as soon as it and every file before it are done: in the
    // order the files were given.
    let mut reports = Vec::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            r = results.next() => match r {
                Some(r) => {
                    say(&ctx, &r, args.json, args.quiet);
                    reports.push(r);
                }
                None => break,
            },
            _ = &mut interrupted => {
                ctx.progress.error("upload-gateway upload: interrupted; the same command again continues where the gateway stands");
                return EXIT_INTERRUPTED;
            }
        }
    }
    exit_code(&reports)
}

/// The settings every file shares, checked before anything is sent.
fn ctx(args: &UploadArgs) -> anyhow::Result<Ctx> {
    let content_type = match (&args.content_type, &args.service, &args.category) {
        (Some(ct), _, _) => ct.clone(),
        (None, Some(s), Some(c)) => format!("application/vnd.redhat.{s}.{c}+tgz"),
        _ => anyhow::bail!("say what the files are: --content-type TYPE, or --service S --category C"),
    };
    anyhow::ensure!(
        args.request_id.is_none() || args.files.len() == 1,
        "--request-id names one payload: give one file with it ({} given)",
        args.files.len()
    );
    if let Some(m) = &args.metadata {
        let v: serde_json::Value = serde_json::from_str(m).map_err(|e| anyhow::anyhow!("--metadata is not JSON: {e}"))?;
        anyhow::ensure!(v.is_object(), "--metadata must be a JSON object");
    }
    let gateway = args.gateway.trim_end_matches('/').to_string();
    anyhow::ensure!(
        gateway.starts_with("http://") || gateway.starts_with("https://"),
        "--gateway {gateway:?}: give an http:// or https:// URL, e.g. http://localhost:8080"
    );
    let identity = args.identity.as_deref().map(job::identity).transpose()?;
    let store = match state::Store::default_dir() {
        Ok(dir) => Some(state::Store::new(dir)),
        Err(e) if args.no_resume => {
            let _ = e;
            None
        }
        Err(e) => {
            eprintln!("upload-gateway upload: {e:#}; uploads will not be resumable");
            None
        }
    };
    let tus = tus::Tus::new(&gateway, args.ca_file.as_deref(), identity.clone())?;
    let via = if args.grpc {
        Via::Grpc(Box::new(grpc::client(&gateway, args.ca_file.as_deref(), identity.as_deref(), args.request_id.as_deref())?))
    } else {
        Via::Tus
    };
    Ok(Ctx {
        gateway,
        content_type,
        metadata: args.metadata.clone(),
        request_id: args.request_id.clone(),
        resume: !args.no_resume,
        store,
        policy: retry::Policy::new(args.retries),
        chunk: args.chunk_size,
        wait: args.wait.then_some(args.wait_timeout),
        tus,
        via,
        progress: progress::Progress::new(progress::Mode::detect(args.quiet)),
    })
}

/// One file's result: a JSON object (--json) or a line on standard output, and any
/// error on standard error (even when quiet).
fn say(ctx: &Ctx, r: &Report, json: bool, quiet: bool) {
    if json {
        ctx.progress.println(&serde_json::to_string(r).expect("a report is JSON"));
    }
    if let Some(e) = &r.error {
        let id = r.request_id.as_deref().map(|id| format!(" (request id {id})")).unwrap_or_default();
        ctx.progress.error(&format!("{}: failed{id}: {e}", r.file));
        return;
    }
    if !json && !quiet {
        let msg = r.status_msg.as_deref().map(|m| format!(" status_msg={m:?}")).unwrap_or_default();
        ctx.progress.println(&format!(
            "{}: request_id={} size={} sha256={} status={}{msg}",
            r.file,
            r.request_id.as_deref().unwrap_or(""),
            r.size,
            r.sha256.as_deref().unwrap_or(""),
            r.status
        ));
    }
}

/// The run's exit code: an error anywhere wins over a rejection.
fn exit_code(reports: &[Report]) -> u8 {
    if reports.iter().any(|r| r.error.is_some() || r.status == "error") {
        EXIT_ERROR
    } else if reports.iter().any(|r| r.status == "rejected") {
        EXIT_REJECTED
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: &str, error: Option<&str>) -> Report {
        Report {
            file: "f".into(),
            request_id: Some("id".into()),
            size: 1,
            sha256: None,
            status: status.into(),
            status_msg: None,
            error: error.map(Into::into),
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&[report("uploaded", None), report("advertised", None), report("handoff", None)]), EXIT_OK);
        assert_eq!(exit_code(&[report("advertised", None), report("rejected", None)]), EXIT_REJECTED);
        assert_eq!(exit_code(&[report("rejected", None), report("error", None)]), EXIT_ERROR);
        assert_eq!(exit_code(&[report("rejected", None), report("failed", Some("refused"))]), EXIT_ERROR);
    }

    #[test]
    fn a_report_as_json() {
        let v: serde_json::Value = serde_json::to_value(report("advertised", None)).unwrap();
        assert_eq!(v["request_id"], "id");
        assert_eq!(v["status"], "advertised");
        assert!(v.get("error").is_none());
    }
}
