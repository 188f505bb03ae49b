//! Putting the house together: storage and queue chosen by config, the pipeline,
//! both protocols on one router, the verdict consumer, and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings, StorageDriver};
use crate::metrics::Metrics;
use crate::pipeline::{links::Links, Pipeline};
use crate::queue::{kafka::KafkaQueue, memory::MemoryQueue, Queue};
use crate::storage::{local::LocalDisk, s3::{S3Options, S3Storage}, Storage};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// True once shutdown has begun: readiness answers 503.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }
}

/// A running gateway.
pub struct App {
    addr: SocketAddr,
    pipeline: Pipeline,
    queue: Arc<dyn Queue>,
    storage: Arc<dyn Storage>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl App {
    /// Validates the config, binds the port, opens storage and queue, recovers what
    /// a crash left, and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<App> {
        let settings = config.settings().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .with_context(|| format!("cannot create the data folder {}", settings.data_dir.display()))?;

        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let storage = open_storage(&config, &settings).await?;
        let queue = open_queue(&config, &settings, &metrics).await?;
        storage.recover().await.context("recovering storage")?;

        let public = match &config.public_url {
            Some(u) => u.clone(),
            None if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let key = signing_key(&config, &settings.data_dir).await?;
        let links = Links::new(key, &public, settings.url_expiry);
        let pipeline = Pipeline::new(settings.clone(), storage.clone(), queue.clone(), links, metrics);
        pipeline
            .reannounce_quarantine()
            .await
            .context("announcing again what quarantine holds")?;

        let shutdown = CancellationToken::new();
        let state = AppState {
            pipeline: pipeline.clone(),
            draining: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(pipeline.clone().run_verdict_consumer(shutdown.child_token()));
        let (closing, ending) = (shutdown.clone(), pipeline.clone());
        tokio::spawn(async move { closing.cancelled().await; ending.end_streams() });
        if let Some(kafka) = &settings.kafka {
            // Replicas share one broker: each builds its status view from the topic.
            tokio::spawn(pipeline.clone().run_status_feed(shutdown.child_token()));
            // What a killed gateway stored but never announced gets announced.
            tokio::spawn(pipeline.clone().run_quarantine_sweep(kafka.quarantine_sweep, shutdown.child_token()));
        }
        let server = tokio::spawn(crate::server::serve(
            listener,
            state,
            settings.clone(),
            shutdown.clone(),
            tls,
        ));
        tracing::info!(%addr, storage = ?config.storage_driver, kafka = config.kafka_brokers.is_some(), "upload-gateway listening");
        Ok(App {
            addr,
            pipeline,
            queue,
            storage,
            shutdown,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The queue behind the pipeline (tests read what was published).
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The storage behind the pipeline (tests look at what is kept).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// A token that starts the graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        let r = self.server.await.context("server task")?;
        let drain = self.pipeline.settings().drain_timeout;
        self.pipeline.flush(drain).await?;
        r
    }

    /// Graceful shutdown, then wait.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

async fn open_storage(config: &Config, settings: &Settings) -> anyhow::Result<Arc<dyn Storage>> {
    match config.storage_driver {
        StorageDriver::Localdisk => Ok(Arc::new(
            LocalDisk::open(&settings.data_dir)
                .await
                .map_err(|e| anyhow::anyhow!("local storage in {}: {e}", settings.data_dir.display()))?,
        )),
        StorageDriver::S3 => {
            let largest = settings.service_limits.values().copied().fold(settings.default_limit, u64::max);
            let mut options = S3Options::from_config(config, largest).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
            options.journal_dir = Some(settings.data_dir.join("s3-uploads"));
            Ok(Arc::new(S3Storage::open(options).await.map_err(|e| anyhow::anyhow!("S3 storage: {e}"))?))
        }
    }
}

async fn open_queue(_config: &Config, settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn Queue>> {
    let Some(kafka) = &settings.kafka else {
        return Ok(Arc::new(MemoryQueue::default().counting_into(Arc::clone(metrics))));
    };
    let queue = Arc::new(
        KafkaQueue::new(kafka, &settings.topics.validation)
            .map_err(|e| anyhow::anyhow!("Kafka settings: {e}"))?,
    );
    // Topics first; a broker that is down now is waited for in the background
    // (readiness says not ready meanwhile).
    let topics = KafkaQueue::topics(settings);
    if let Err(e) = queue.ensure_topics(&topics, Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying in the background");
        let q = queue.clone();
        tokio::spawn(async move {
            while let Err(e) = q.ensure_topics(&topics, Duration::from_secs(10)).await {
                tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    Ok(queue)
}

/// The URL signing key: from config, else made once and kept in the data folder so
/// URLs survive a restart.
async fn signing_key(config: &Config, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(k) = &config.url_signing_key {
        anyhow::ensure!(k.len() >= 16, "URL_SIGNING_KEY: use at least 16 characters");
        return Ok(k.as_bytes().to_vec());
    }
    let path = data_dir.join(".signing-key");
    match tokio::fs::read(&path).await {
        Ok(k) if k.len() >= 32 => Ok(k),
        _ => {
            let key: [u8; 32] = rand::random();
            let hexed = hex::encode(key).into_bytes();
            tokio::fs::write(&path, &hexed)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(hexed)
        }
    }
}
