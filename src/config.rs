//! All configuration in one place: flags and environment variables (the original
//! service's names included), validated at start-up into [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// How the gateway is configured. Every flag has an environment variable; where the
/// original upload service had one (`LISTEN_PORT`, `STORAGE_DRIVER`, `WORKDIR`,
/// `S3_QUARANTINE`, `S3_PERM`, `S3_REJECT`, `MAX_LENGTH`, `KAFKAMQ`), it is accepted.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (REST and gRPC share it).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Port only (the original service's variable); overrides the port of --listen.
    #[arg(long, env = "LISTEN_PORT")]
    pub listen_port: Option<u16>,
    /// Where the embedded default keeps its buckets (folders) and its URL signing key.
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The original service's work folder; used as --data-dir when that is not set.
    #[arg(long, env = "WORKDIR", hide = true)]
    pub workdir: Option<PathBuf>,
    /// Storage: `localdisk` (the embedded default) or `s3`.
    #[arg(long, env = "STORAGE_DRIVER", value_enum, default_value_t = StorageDriver::Localdisk)]
    pub storage_driver: StorageDriver,
    #[arg(long, env = "S3_QUARANTINE", default_value = "insights-upload-quarantine")]
    pub s3_quarantine: String,
    #[arg(long, env = "S3_PERM", default_value = "insights-upload-perm-test")]
    pub s3_perm: String,
    #[arg(long, env = "S3_REJECT", default_value = "insights-upload-rejected")]
    pub s3_reject: String,
    /// S3: endpoint of an S3-compatible store (path-style addressing is used with it).
    /// Unset: AWS S3 itself.
    #[arg(long, env = "S3_ENDPOINT_URL")]
    pub s3_endpoint_url: Option<String>,
    /// S3: region to sign for.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3: access key. Unset: the standard AWS credential chain (AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, profile, web identity, container, instance).
    #[arg(long, env = "S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// S3: secret key, with --s3-access-key-id.
    #[arg(long, env = "S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// S3: part size of multipart uploads (5MiB to 5GiB); payloads up to this size go
    /// up in one PutObject. Memory per upload is at most part size x (parts in flight + 1).
    #[arg(long, env = "S3_PART_SIZE", default_value = "8MiB")]
    pub s3_part_size: String,
    /// S3: parts of one upload sent at once.
    #[arg(long, env = "S3_MAX_INFLIGHT_PARTS", default_value_t = 4)]
    pub s3_max_inflight_parts: usize,
    /// S3: create the three buckets at start-up when missing.
    #[arg(long, env = "S3_CREATE_BUCKETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_create_buckets: bool,
    /// S3: an unfinished multipart upload in quarantine older than this many seconds is
    /// abandoned (a crash left it) and is aborted.
    #[arg(long, env = "S3_STALE_UPLOAD_SECS", default_value_t = 3600)]
    pub s3_stale_upload_secs: u64,
    /// S3: objects larger than this are copied between buckets with UploadPartCopy
    /// (S3 cannot CopyObject more than 5 GiB).
    #[arg(long, env = "S3_MULTIPART_COPY_THRESHOLD", default_value = "5GiB", hide = true)]
    pub s3_multipart_copy_threshold: String,
    /// Kafka bootstrap servers (`host:port,...`). Unset: the in-process queue.
    #[arg(long = "kafka-brokers", env = "KAFKAMQ")]
    pub kafka_brokers: Option<String>,
    /// The services whose uploads are accepted, comma separated.
    #[arg(
        long,
        env = "VALID_SERVICES",
        value_delimiter = ',',
        default_value = "advisor,compliance,hccm,qpc,testareno"
    )]
    pub valid_services: Vec<String>,
    /// The default size limit of a payload, in bytes (or with a unit: 100MiB, 1GiB).
    #[arg(long, env = "MAX_LENGTH", default_value = "104857600")]
    pub max_length: String,
    /// Per-service size limits, comma separated: `advisor=200MiB,qpc=1GiB`.
    #[arg(long, env = "SERVICE_LIMITS", value_delimiter = ',')]
    pub service_limits: Vec<String>,
    /// Refuse uploads without `x-rh-identity` (401).
    #[arg(long, env = "REQUIRE_IDENTITY", default_value_t = false)]
    pub require_identity: bool,
    /// Announce topic for a service is this prefix plus the service name.
    #[arg(long, env = "ANNOUNCE_TOPIC_PREFIX", default_value = "platform.upload.")]
    pub announce_topic_prefix: String,
    /// Announce every service on this one topic (with a `service` header) instead.
    #[arg(long, env = "ANNOUNCE_TOPIC")]
    pub announce_topic: Option<String>,
    #[arg(long, env = "VALIDATION_TOPIC", default_value = "platform.upload.validation")]
    pub validation_topic: String,
    #[arg(long, env = "AVAILABLE_TOPIC", default_value = "platform.upload.available")]
    pub available_topic: String,
    #[arg(long, env = "STATUS_TOPIC", default_value = "platform.payload-status")]
    pub status_topic: String,
    /// Base URL of this gateway for signed download URLs (embedded storage).
    /// Default: http://<listen address>.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Key for signing download URLs (embedded storage). Default: made once and kept
    /// in the data folder.
    #[arg(long, env = "URL_SIGNING_KEY", hide_env_values = true)]
    pub url_signing_key: Option<String>,
    /// How long download URLs stay valid, in seconds.
    #[arg(long, env = "URL_EXPIRY_SECS", default_value_t = 86_400)]
    pub url_expiry_secs: u64,
    /// How long a gRPC subscriber may hold an announcement without a verdict before
    /// it goes to another subscriber, in seconds.
    #[arg(long, env = "VISIBILITY_TIMEOUT_SECS", default_value_t = 300)]
    pub visibility_timeout_secs: u64,
    /// Largest `metadata` JSON accepted, in bytes.
    #[arg(long, env = "METADATA_LIMIT", default_value_t = 64 * 1024)]
    pub metadata_limit: usize,
    /// Seconds a client may take to send its request headers.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds an upload body may stall before the upload is refused (408).
    #[arg(long, env = "BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// Requests served at once; past it the gateway answers 503 at once.
    #[arg(long, env = "CONCURRENCY_LIMIT", default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageDriver {
    Localdisk,
    S3,
}

/// What the pipeline needs to know, checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub valid_services: Vec<String>,
    pub default_limit: u64,
    pub service_limits: BTreeMap<String, u64>,
    pub require_identity: bool,
    pub topics: Topics,
    pub url_expiry: Duration,
    pub visibility_timeout: Duration,
    pub metadata_limit: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub concurrency_limit: usize,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub announce_prefix: String,
    pub announce_single: Option<String>,
    pub validation: String,
    pub available: String,
    pub status: String,
}

impl Topics {
    /// The topic a service's announcements go to.
    pub fn announce(&self, service: &str) -> String {
        match &self.announce_single {
            Some(t) => t.clone(),
            None => format!("{}{}", self.announce_prefix, service),
        }
    }
}

impl Config {
    /// Parses a config from an argument list (the first item is the program name).
    /// Handy in tests: `Config::from_args(["gw", "--listen", "127.0.0.1:0"])`.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{FromArgMatches, Parser};
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            config: Config,
        }
        let m = <Wrap as clap::CommandFactory>::command().try_get_matches_from(args)?;
        Ok(Wrap::from_arg_matches(&m)?.config)
    }

    /// Checks everything and returns the typed settings, or a sentence saying what to fix.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut listen = self.listen;
        if let Some(port) = self.listen_port {
            listen.set_port(port);
        }
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| self.workdir.clone())
            .unwrap_or_else(|| PathBuf::from("./data"));

        let mut valid_services = Vec::new();
        for s in &self.valid_services {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            if !is_service_name(s) {
                return Err(format!(
                    "VALID_SERVICES: {s:?} is not a service name (lower-case letters, digits and '-')"
                ));
            }
            valid_services.push(s.to_string());
        }
        if valid_services.is_empty() {
            return Err("VALID_SERVICES: name at least one service".into());
        }
        let default_limit = parse_size(&self.max_length)
            .map_err(|e| format!("MAX_LENGTH / --max-length: {e}"))?;
        let mut service_limits = BTreeMap::new();
        for item in &self.service_limits {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (svc, size) = item.split_once('=').ok_or_else(|| {
                format!("SERVICE_LIMITS: {item:?} should look like service=size, e.g. advisor=200MiB")
            })?;
            let svc = svc.trim();
            if !valid_services.iter().any(|v| v == svc) {
                return Err(format!(
                    "SERVICE_LIMITS: {svc:?} is not one of the valid services ({})",
                    valid_services.join(",")
                ));
            }
            let size = parse_size(size).map_err(|e| format!("SERVICE_LIMITS {svc}: {e}"))?;
            service_limits.insert(svc.to_string(), size);
        }
        for (name, topic) in [
            ("VALIDATION_TOPIC", &self.validation_topic),
            ("AVAILABLE_TOPIC", &self.available_topic),
            ("STATUS_TOPIC", &self.status_topic),
        ] {
            check_topic(name, topic)?;
        }
        if let Some(t) = &self.announce_topic {
            check_topic("ANNOUNCE_TOPIC", t)?;
        }
        check_topic("ANNOUNCE_TOPIC_PREFIX", &format!("{}x", self.announce_topic_prefix))?;
        if self.url_expiry_secs == 0 || self.url_expiry_secs > 7 * 24 * 3600 {
            return Err("URL_EXPIRY_SECS: between 1 and 604800 (7 days, the S3 maximum)".into());
        }
        if self.visibility_timeout_secs == 0 {
            return Err("VISIBILITY_TIMEOUT_SECS: must be at least 1".into());
        }
        if self.concurrency_limit == 0 {
            return Err("CONCURRENCY_LIMIT: must be at least 1".into());
        }
        if self.header_timeout_secs == 0 || self.body_idle_timeout_secs == 0 {
            return Err("HEADER_TIMEOUT_SECS and BODY_IDLE_TIMEOUT_SECS: must be at least 1".into());
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("PUBLIC_URL: {url:?} should start with http:// or https://"));
            }
        }
        Ok(Settings {
            listen,
            data_dir,
            valid_services,
            default_limit,
            service_limits,
            require_identity: self.require_identity,
            topics: Topics {
                announce_prefix: self.announce_topic_prefix.clone(),
                announce_single: self.announce_topic.clone(),
                validation: self.validation_topic.clone(),
                available: self.available_topic.clone(),
                status: self.status_topic.clone(),
            },
            url_expiry: Duration::from_secs(self.url_expiry_secs),
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            metadata_limit: self.metadata_limit,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            concurrency_limit: self.concurrency_limit,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
        })
    }
}

impl Settings {
    /// The size limit that applies to a service.
    pub fn limit_for(&self, service: &str) -> u64 {
        self.service_limits
            .get(service)
            .copied()
            .unwrap_or(self.default_limit)
    }
}

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_topic(name: &str, topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name}: {topic:?} is not a Kafka topic name (1-249 of [A-Za-z0-9._-])"
        ))
    }
}

/// Parses `1048576`, `100MiB`, `1GiB`, `512KiB`, `10MB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (a number of bytes, or e.g. 100MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?}: must be between 1 byte and 2^64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("100MiB").unwrap(), 100 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn original_names_and_overrides() {
        let c = Config::from_args([
            "gw",
            "--listen-port",
            "9000",
            "--service-limits",
            "advisor=1MiB",
            "--workdir",
            "/tmp/w",
        ])
        .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.limit_for("advisor"), 1 << 20);
        assert_eq!(s.limit_for("qpc"), 100 << 20);
        assert_eq!(s.data_dir, PathBuf::from("/tmp/w"));
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        let c = Config::from_args(["gw", "--service-limits", "nosuch=1MiB"]).unwrap();
        assert!(c.settings().unwrap_err().contains("not one of the valid services"));
        let c = Config::from_args(["gw", "--valid-services", "Bad_Name"]).unwrap();
        assert!(c.settings().unwrap_err().contains("VALID_SERVICES"));
        let c = Config::from_args(["gw", "--validation-topic", "a b"]).unwrap();
        assert!(c.settings().unwrap_err().contains("VALIDATION_TOPIC"));
    }
}
