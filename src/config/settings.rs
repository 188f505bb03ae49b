//! [`Settings`]: the configuration checked and typed, what the rest of the gateway reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{check_topic, is_service_name, parse_size, split_options};
use super::{Config, S3Options, StorageDriver};

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
    /// How long an unfinished resumable upload is kept.
    pub upload_expiry: Duration,
    /// How long a resumable upload's writer holds it without progress.
    pub upload_claim: Duration,
    pub concurrency_limit: usize,
    pub drain_timeout: Duration,
    /// Certificate chain and key files, when the port serves TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The CA that client certificates must chain to (with TLS only).
    pub tls_client_ca: Option<PathBuf>,
    /// The validator credentials file; `None`: the embedded default's token.
    pub validator_credentials: Option<PathBuf>,
    /// The consumer group of the gateway's consumers (see [`Config::consumer_group`]).
    pub consumer_group: String,
    /// Kafka, when configured.
    pub kafka: Option<KafkaSettings>,
    /// Where payloads are kept.
    pub storage: StorageChoice,
    /// Base URL of this gateway in the download URLs it signs; `None`: the address
    /// it listens on (known once the port is bound).
    pub public_url: Option<String>,
    /// The key download URLs are signed with; `None`: made once and kept in the
    /// data folder.
    pub signing_key: Option<Vec<u8>>,
}

/// The storage the gateway runs on.
#[derive(Debug, Clone)]
pub enum StorageChoice {
    /// The embedded default: folders under the data folder.
    Local,
    /// S3 (or a store that speaks it).
    S3(S3Options),
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
    /// Where a message the broker refuses for good goes (the outbox's messages).
    pub dead_letter: String,
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
            ("DEAD_LETTER_TOPIC", &self.dead_letter_topic),
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
        if self.upload_expiry_secs == 0 || self.upload_claim_secs == 0 {
            return Err("UPLOAD_EXPIRY_SECS and UPLOAD_CLAIM_SECS: must be at least 1".into());
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
        if self.tls_client_ca.is_some() && tls.is_none() {
            return Err("TLS_CLIENT_CA_FILE: client certificates need TLS: set TLS_CERT_FILE and TLS_KEY_FILE too".into());
        }
        let consumer_group = self.consumer_group.trim().to_string();
        if consumer_group.is_empty() || consumer_group.len() > 200 {
            return Err("CONSUMER_GROUP: between 1 and 200 characters".into());
        }
        let kafka = self.kafka_settings()?;
        let largest = service_limits.values().copied().fold(default_limit, u64::max);
        let storage = match self.storage_driver {
            StorageDriver::Localdisk => StorageChoice::Local,
            StorageDriver::S3 => StorageChoice::S3(S3Options::from_config(self, largest, &data_dir)?),
        };
        let signing_key = match &self.url_signing_key {
            Some(k) if k.len() < 16 => return Err("URL_SIGNING_KEY: use at least 16 characters".into()),
            Some(k) => Some(k.as_bytes().to_vec()),
            None => None,
        };
        Ok(Settings {
            tls_client_ca: self.tls_client_ca.clone(),
            validator_credentials: self.validator_credentials.clone(),
            storage,
            public_url: self.public_url.clone(),
            signing_key,
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
                dead_letter: self.dead_letter_topic.clone(),
            },
            url_expiry: Duration::from_secs(self.url_expiry_secs),
            visibility_timeout: Duration::from_secs(self.visibility_timeout_secs),
            metadata_limit: self.metadata_limit,
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            upload_expiry: Duration::from_secs(self.upload_expiry_secs),
            upload_claim: Duration::from_secs(self.upload_claim_secs),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
