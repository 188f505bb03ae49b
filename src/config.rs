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
    /// Partitions of the topics the gateway creates at start-up (-1: the broker's default).
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3, allow_negative_numbers = true)]
    pub kafka_partitions: i32,
    /// Replication factor of the topics the gateway creates (-1: the broker's default).
    #[arg(long, env = "KAFKA_REPLICATION", default_value_t = -1, allow_negative_numbers = true)]
    pub kafka_replication: i32,
    /// Seconds an upload waits for its announcement's delivery report before the
    /// client gets 503 (and the stored payload is removed).
    #[arg(long, env = "KAFKA_PUBLISH_TIMEOUT_SECS", default_value_t = 10)]
    pub kafka_publish_timeout_secs: u64,
    /// Kafka: seconds between two looks at quarantine for payloads stored but never
    /// announced (the gateway was killed between the two); one with no status at two
    /// looks in a row is announced. Longer than KAFKA_PUBLISH_TIMEOUT_SECS.
    #[arg(long, env = "QUARANTINE_SWEEP_SECS", default_value_t = 60)]
    pub quarantine_sweep_secs: u64,
    /// Extra librdkafka settings (SASL, TLS...), `key=value`; repeatable, or several
    /// in one value separated by commas (KAFKA_OPTIONS). A comma not followed by
    /// `key=` stays in the value (`debug=broker,topic`). They apply to every Kafka
    /// client of the gateway.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS")]
    pub kafka_options: Vec<String>,
    /// Consumer group of the gateway's consumers: the validation topic is read in this
    /// group, gRPC subscriptions in `<group>.subscribe.<service>`, the status view in
    /// `<group>.status.<replica>`.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "upload-gateway")]
    pub consumer_group: String,
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
    /// PEM certificate chain: serve TLS (ALPN h2 and http/1.1) on the port. Needs --tls-key.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key: Option<PathBuf>,
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
    /// Certificate chain and key files, when the port serves TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The consumer group of the gateway's consumers (see [`Config::consumer_group`]).
    pub consumer_group: String,
    /// Kafka, when configured.
    pub kafka: Option<KafkaSettings>,
}

/// How the gateway talks to Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: i32,
    pub replication: i32,
    pub publish_timeout: Duration,
    /// Between two looks for stored but unannounced payloads.
    pub quarantine_sweep: Duration,
    /// Extra librdkafka settings, applied last.
    pub options: Vec<(String, String)>,
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
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err("TLS_CERT_FILE and TLS_KEY_FILE: set both, or neither".into()),
        };
        let consumer_group = self.consumer_group.trim().to_string();
        if consumer_group.is_empty() || consumer_group.len() > 200 {
            return Err("CONSUMER_GROUP: between 1 and 200 characters".into());
        }
        let kafka = self.kafka_settings()?;
        Ok(Settings {
            tls,
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
            consumer_group,
            kafka,
        })
    }
}

impl Config {
    fn kafka_settings(&self) -> Result<Option<KafkaSettings>, String> {
        let Some(brokers) = self.kafka_brokers.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if brokers.is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err(format!(
                "KAFKAMQ / --kafka-brokers: {brokers:?} should be host:port[,host:port...]"
            ));
        }
        if self.kafka_partitions == 0 || self.kafka_partitions < -1 {
            return Err("KAFKA_PARTITIONS: at least 1, or -1 for the broker's default".into());
        }
        if self.kafka_replication == 0 || self.kafka_replication < -1 {
            return Err("KAFKA_REPLICATION: at least 1, or -1 for the broker's default".into());
        }
        if self.kafka_publish_timeout_secs == 0 || self.kafka_publish_timeout_secs > 300 {
            return Err("KAFKA_PUBLISH_TIMEOUT_SECS: between 1 and 300".into());
        }
        if self.quarantine_sweep_secs <= self.kafka_publish_timeout_secs || self.quarantine_sweep_secs > 86_400 {
            return Err(format!(
                "QUARANTINE_SWEEP_SECS: longer than KAFKA_PUBLISH_TIMEOUT_SECS ({}) and at most 86400",
                self.kafka_publish_timeout_secs
            ));
        }
        let mut options = Vec::new();
        for item in self.kafka_options.iter().flat_map(|v| split_options(v)) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    options.push((k.trim().to_string(), v.trim().to_string()))
                }
                _ => {
                    return Err(format!(
                        "KAFKA_OPTIONS / --kafka-option: {:?} should look like key=value, e.g. security.protocol=SASL_SSL",
                        item.split('=').next().unwrap_or_default()
                    ))
                }
            }
        }
        Ok(Some(KafkaSettings {
            brokers: brokers.to_string(),
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            publish_timeout: Duration::from_secs(self.kafka_publish_timeout_secs),
            quarantine_sweep: Duration::from_secs(self.quarantine_sweep_secs),
            options,
        }))
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

/// Splits `a=1,b=x,y` into `a=1` and `b=x,y`: a comma starts a new setting only when
/// a `key=` follows it.
fn split_options(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in v.match_indices(',') {
        let rest = v[i + 1..].trim_start();
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(rest.len());
        if key_len > 0 && rest[key_len..].starts_with('=') {
            out.push(&v[start..i]);
            start = i + 1;
        }
    }
    out.push(&v[start..]);
    out
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

    #[test]
    fn kafka_settings_are_checked() {
        let c = Config::from_args(["gw"]).unwrap();
        assert!(c.settings().unwrap().kafka.is_none());
        let c = Config::from_args([
            "gw",
            "--kafka-brokers",
            "127.0.0.1:9092",
            "--kafka-option",
            "security.protocol=SASL_SSL",
            "--kafka-option",
            "sasl.mechanism=SCRAM-SHA-512",
            "--kafka-partitions",
            "-1",
        ])
        .unwrap();
        let k = c.settings().unwrap().kafka.unwrap();
        assert_eq!(k.partitions, -1);
        assert_eq!(k.options[1], ("sasl.mechanism".into(), "SCRAM-SHA-512".into()));
        assert_eq!(k.publish_timeout, Duration::from_secs(10));
        assert_eq!(k.quarantine_sweep, Duration::from_secs(60));
        // The sweep must wait longer than an announcement may take.
        let c = Config::from_args(["gw", "--kafka-brokers", "b:1", "--kafka-publish-timeout-secs", "30", "--quarantine-sweep-secs", "30"]).unwrap();
        assert!(c.settings().unwrap_err().contains("QUARANTINE_SWEEP_SECS: longer than KAFKA_PUBLISH_TIMEOUT_SECS (30)"));
        let c = Config::from_args([
            "gw",
            "--kafka-brokers",
            "b:1",
            "--kafka-option",
            "debug=broker,topic,sasl.mechanism=PLAIN, ssl.cipher.suites=A,B",
        ])
        .unwrap();
        let k = c.settings().unwrap().kafka.unwrap();
        assert_eq!(
            k.options,
            [
                ("debug".to_string(), "broker,topic".to_string()),
                ("sasl.mechanism".into(), "PLAIN".into()),
                ("ssl.cipher.suites".into(), "A,B".into()),
            ]
        );
        let c = Config::from_args(["gw", "--kafka-brokers", "b:1", "--kafka-option", "novalue"]).unwrap();
        assert!(c.settings().unwrap_err().contains("KAFKA_OPTIONS"));
        let c = Config::from_args(["gw", "--kafka-brokers", "b:1", "--kafka-replication", "0"]).unwrap();
        assert!(c.settings().unwrap_err().contains("KAFKA_REPLICATION"));
        let c = Config::from_args(["gw", "--kafka-brokers", " "]).unwrap();
        assert!(c.settings().unwrap_err().contains("KAFKAMQ"));
    }
}
