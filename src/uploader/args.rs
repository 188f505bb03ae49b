//! The uploader's command line: `upload-gateway upload FILE...`. Every flag is also
//! an environment variable.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// The files to send (each becomes one payload).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The gateway: http://host:port or https://host:port (REST and gRPC share its port).
    #[arg(long, env = "UPLOAD_GATEWAY_URL", default_value = "http://localhost:8080")]
    pub gateway: String,
    /// The payload's content type, which picks its service, e.g.
    /// application/vnd.redhat.advisor.collection+tgz.
    #[arg(long, env = "UPLOAD_CONTENT_TYPE", conflicts_with_all = ["service", "category"])]
    pub content_type: Option<String>,
    /// The service (with --category): content type application/vnd.redhat.SERVICE.CATEGORY+tgz.
    #[arg(long, env = "UPLOAD_SERVICE", requires = "category")]
    pub service: Option<String>,
    /// The category (with --service).
    #[arg(long, env = "UPLOAD_CATEGORY", requires = "service")]
    pub category: Option<String>,
    /// Upload over gRPC (CreateUpload, Write) instead of tus.
    #[arg(long, env = "UPLOAD_GRPC")]
    pub grpc: bool,
    /// Start over: do not continue an upload an earlier run began.
    #[arg(long, env = "UPLOAD_NO_RESUME")]
    pub no_resume: bool,
    /// Tries after a transient failure (connection refused or reset, 5xx, 408, 423,
    /// 429, gRPC UNAVAILABLE/ABORTED), counted in a row: bytes the gateway takes start
    /// the count again.
    #[arg(long, env = "UPLOAD_RETRIES", default_value_t = 10)]
    pub retries: u32,
    /// After the upload, follow the payload's status until the validator's verdict
    /// (advertised, rejected, handoff, error) and exit by it.
    #[arg(long, env = "UPLOAD_WAIT")]
    pub wait: bool,
    /// How long --wait waits for the verdict (e.g. 90s, 10m, 1h; a bare number is seconds).
    #[arg(long, env = "UPLOAD_WAIT_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// The x-rh-identity to send: base64 JSON, or @FILE to read it from a file.
    #[arg(long, env = "UPLOAD_IDENTITY", hide_env_values = true)]
    pub identity: Option<String>,
    /// The request id to give the payload (one file only; the gateway makes one otherwise).
    #[arg(long, env = "UPLOAD_REQUEST_ID")]
    pub request_id: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate (https:// gateways).
    /// Default: the system's roots.
    #[arg(long, env = "UPLOAD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// How many files to send at once (a bar each).
    #[arg(long, env = "UPLOAD_PARALLEL", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Bytes per tus PATCH (at most this much is sent again after a broken link); per
    /// gRPC message, at most 1 MiB. E.g. 8MiB, 512KiB, 1048576.
    #[arg(long, env = "UPLOAD_CHUNK_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// A JSON object sent with each payload (the REST form's `metadata` part).
    #[arg(long, env = "UPLOAD_METADATA")]
    pub metadata: Option<String>,
    /// No progress, no result lines: only errors (and --json's output).
    #[arg(long, short, env = "UPLOAD_QUIET")]
    pub quiet: bool,
    /// One JSON object per file on standard output when it is done (request_id, size,
    /// sha256, status), instead of the result line.
    #[arg(long, env = "UPLOAD_JSON")]
    pub json: bool,
}

/// `90`, `90s`, `500ms`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 10m, 1h)"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Ok(d)
}

/// `1048576`, `512KiB`, `8MiB`, `8M`, `1GiB` (binary units; K/M/G mean the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (e.g. 8MiB, 512KiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (KiB, MiB, GiB)")),
    };
    let v = n.checked_mul(factor).ok_or_else(|| format!("{s:?} is too large"))?;
    if v == 0 {
        return Err("the chunk size must be at least 1 byte".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
