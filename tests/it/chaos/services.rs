//! A Kafka broker of the chaos run's own (stopped and started under the gateway
//! without disturbing tests that share the suite's broker), and a seeded RNG.


/// A private broker under its own UPLOAD_GATEWAY_STATE folder; stopped when dropped.
pub struct PrivateKafka {
    service: crate::common::PrivateService,
    pub brokers: String,
}

impl PrivateKafka {
    pub fn start() -> PrivateKafka {
        let (service, out) = crate::common::PrivateService::start("kafka.sh");
        let brokers = out
            .lines()
            .find_map(|l| l.strip_prefix("KAFKA_BROKERS="))
            .expect("scripts/kafka.sh start prints KAFKA_BROKERS=")
            .to_string();
        PrivateKafka { service, brokers }
    }

    /// Stops the broker process, keeping its data and port (an outage).
    pub fn down(&self) {
        self.service.run("down");
    }

    /// Starts it again and waits until it answers.
    pub fn up(&self) {
        self.service.run("up");
    }
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
