//! A Kafka broker of the chaos run's own (stopped and started under the gateway
//! without disturbing tests that share the suite's broker), and a seeded RNG.

use std::path::PathBuf;
use std::process::Command;

/// A private broker under its own UPLOAD_GATEWAY_STATE folder; stopped when dropped.
pub struct PrivateKafka {
    state: PathBuf,
    pub brokers: String,
}

impl PrivateKafka {
    pub fn start() -> PrivateKafka {
        let root = std::env::var("UPLOAD_GATEWAY_STATE").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
        let state = PathBuf::from(root).join(format!("chaos-kafka-{}", uuid::Uuid::new_v4().simple()));
        let out = kafka(&state, &["start"]);
        let brokers = out
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BROKERS="))
            .expect("scripts/kafka.sh start prints KAFKA_BROKERS=")
            .to_string();
        PrivateKafka { state, brokers }
    }

    /// Stops the broker process, keeping its data and port (an outage).
    pub fn down(&self) {
        kafka(&self.state, &["down"]);
    }

    /// Starts it again and waits until it answers.
    pub fn up(&self) {
        kafka(&self.state, &["up"]);
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").env("UPLOAD_GATEWAY_STATE", &self.state).status();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

fn kafka(state: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("UPLOAD_GATEWAY_STATE", state)
        .output()
        .expect("bash runs scripts/kafka.sh");
    assert!(
        out.status.success(),
        "scripts/kafka.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// splitmix64: a small seeded generator, so a run can be repeated from its seed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}
