//! All configuration in one place: flags and environment variables (the original
//! service's names included), validated at start-up into [`Settings`]. Nothing binds
//! a port or opens a connection before [`Config::settings`] has said yes.
//!
//! - `mod.rs`: the flags ([`Config`]);
//! - `settings.rs`: what the gateway runs on ([`Settings`]) and the checks that make it;
//! - `s3.rs`: the S3 part ([`S3Options`]), checked against S3's own limits;
//! - `parse.rs`: sizes, names and option lists.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

mod parse;
mod s3;
mod settings;

pub use parse::parse_size;
pub use s3::S3Options;
pub use settings::{KafkaSettings, Settings, StorageChoice, Topics};

/// S3's own limits, shared by the checks here and the S3 storage.
pub mod s3_limits {
    pub use super::s3::MAX_PARTS;
}

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
    /// Partitions of the topics the gateway creates at start-up (-1: the broker's default);
    /// enough for a fleet: each partition's verdicts are applied by one replica.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 12, allow_negative_numbers = true)]
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
    /// Messages the broker refuses for good (too large, invalid) go here instead of
    /// being retried forever (JSON: their topic, key, the reason, the start of the payload).
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "platform.upload.dead-letter")]
    pub dead_letter_topic: String,
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
    /// Seconds an unfinished resumable upload is kept (tus `Upload-Expires`); the
    /// expiry sweep removes its bytes after that. Default 24 h.
    #[arg(long, env = "UPLOAD_EXPIRY_SECS", default_value_t = 24 * 3600)]
    pub upload_expiry_secs: u64,
    /// Seconds a request writing a resumable upload holds it without progress before
    /// another request may take it over (a stalled writer's claim, or a killed
    /// replica's on S3; on local disk a killed process's claim is void at restart).
    #[arg(long, env = "UPLOAD_CLAIM_SECS", default_value_t = 10)]
    pub upload_claim_secs: u64,
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
    /// PEM CA certificate(s): clients may present a certificate signed by it, and the
    /// DNS names it carries map to validator credentials (`cert:` lines of the
    /// credentials file). Needs --tls-cert. Clients without a certificate still connect.
    #[arg(long, env = "TLS_CLIENT_CA_FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// The validator credentials: one per line, `name sha256:<token hash> services` or
    /// `name cert:<DNS name> services` (README, "Trust"); re-read when it changes or on
    /// SIGHUP. Unset: the embedded default makes one token, kept in
    /// `<data>/validator-token`.
    #[arg(long, env = "VALIDATOR_CREDENTIALS_FILE")]
    pub validator_credentials: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageDriver {
    Localdisk,
    S3,
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

}
