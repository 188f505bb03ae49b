//! Putting the house together: storage and queue chosen by config, the pipeline,
//! both protocols on one router, the verdict consumer, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings, StorageChoice};
use crate::metrics::Metrics;
use crate::pipeline::{links::Links, Pipeline};
use crate::queue::{kafka::KafkaQueue, memory::MemoryQueue, Queue};
use crate::storage::{local::LocalDisk, s3::S3Storage, Storage};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
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
        Self::start_with(settings).await
    }

    /// Starts a gateway on settings already checked.
    pub async fn start_with(settings: Settings) -> anyhow::Result<App> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .with_context(|| format!("cannot create the data folder {}", settings.data_dir.display()))?;

        let tls = match &settings.tls {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key, settings.tls_client_ca.as_deref())?),
            None => None,
        };
        // The one shutdown signal: every loop below ends on it.
        let shutdown = CancellationToken::new();
        let credentials = crate::auth::source::open(settings.validator_credentials.as_deref(), &settings.data_dir).await?;
        if let Some(file) = &settings.validator_credentials {
            tokio::spawn(crate::auth::source::watch(credentials.clone(), file.clone(), shutdown.clone()));
        }
        let metrics = Arc::new(Metrics::default());
        let storage = open_storage(&settings, &metrics).await?;
        let queue = open_queue(&settings, &shutdown, &metrics).await?;
        storage.recover(shutdown.clone()).await.context("recovering storage")?;

        let public = match &settings.public_url {
            Some(u) => u.clone(),
            None if addr.ip().is_unspecified() => format!("http://127.0.0.1:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let key = signing_key(&settings).await?;
        let links = Links::new(key, &public, settings.url_expiry);
        let pipeline = Pipeline::new(
            settings.clone(),
            storage.clone(),
            queue.clone(),
            links,
            metrics,
            credentials,
            shutdown.clone(),
        );
        pipeline
            .reannounce_quarantine()
            .await
            .context("announcing again what quarantine holds")?;

        tokio::spawn(pipeline.clone().run_verdict_consumer(shutdown.clone()));
        if let (Some(kafka), StorageChoice::Local) = (&settings.kafka, &settings.storage) {
            tracing::warn!(
                data = %settings.data_dir.display(),
                "Kafka with local-disk storage: a single-replica setup (payloads live on this machine's disk, so no other \
                 replica can apply their verdicts); to run several replicas, give them one S3 store (--storage-driver s3)"
            );
            tokio::spawn(warn_on_other_replicas(kafka.clone(), settings.consumer_group.clone(), shutdown.clone()));
        }
        if let Some(kafka) = &settings.kafka {
            // Replicas share one broker: each builds its status view from the topic.
            tokio::spawn(pipeline.clone().run_status_feed(shutdown.clone()));
            // A rebalance moves partitions to other replicas: their payloads are let go here.
            tokio::spawn(pipeline.clone().run_lease_check(shutdown.clone()));
            // What a killed gateway stored but never announced gets announced.
            tokio::spawn(pipeline.clone().run_quarantine_sweep(kafka.quarantine_sweep, shutdown.clone()));
        }
        // Unfinished resumable uploads past their expiry lose their bytes.
        let every = (settings.upload_expiry / 2).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
        tokio::spawn(pipeline.clone().sweep_uploads(every));
        let state = AppState { pipeline: pipeline.clone() };
        let server = tokio::spawn(crate::server::serve(listener, state, settings.clone(), shutdown.clone(), tls));
        let on_s3 = matches!(settings.storage, StorageChoice::S3(_));
        tracing::info!(%addr, storage = if on_s3 { "s3" } else { "localdisk" }, kafka = settings.kafka.is_some(), "upload-gateway listening");
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

async fn open_storage(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Arc<dyn Storage>> {
    match &settings.storage {
        StorageChoice::Local => Ok(Arc::new(
            LocalDisk::open(&settings.data_dir)
                .await
                .map_err(|e| anyhow::anyhow!("local storage in {}: {e}", settings.data_dir.display()))?,
        )),
        StorageChoice::S3(options) => {
            let s3 = S3Storage::open_counted(options.clone(), Some(Arc::clone(metrics)))
                .await
                .map_err(|e| anyhow::anyhow!("S3 storage: {e}"))?;
            if settings.kafka.is_some() {
                warn_unless_conditional_writes(&s3).await;
            }
            Ok(Arc::new(s3))
        }
    }
}

/// With Kafka, replicas may share the store: their decisions (one verdict per payload,
/// one upload per request id, one sweep claim) are conditional writes. A store that
/// ignores them is said at start-up, with what to do.
async fn warn_unless_conditional_writes(s3: &S3Storage) {
    match s3.honours_conditional_writes().await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "this S3 store ignores conditional writes (If-None-Match: *, measured at start-up): run one replica on it; \
             several replicas could each apply a different verdict to one payload or accept one request id twice. \
             AWS S3, MinIO and R2 honour them"
        ),
        Err(e) => tracing::warn!(error = %e, "could not check whether this S3 store honours conditional writes"),
    }
}

/// Local disk and Kafka: another replica in the gateway's consumer group would take
/// verdicts for payloads it does not hold (and answer them "unknown id"). Looked for
/// shortly after start-up and every minute; said in a warning an operator (and a test)
/// can see.
async fn warn_on_other_replicas(kafka: crate::config::KafkaSettings, group: String, shutdown: CancellationToken) {
    let mut every = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        every = Duration::from_secs(60);
        let (k, g) = (kafka.clone(), group.clone());
        match tokio::task::spawn_blocking(move || KafkaQueue::group_members(&k, &g)).await {
            Ok(Ok(n)) if n > 1 => tracing::warn!(
                group = %group,
                members = n,
                "another replica shares this consumer group, but payloads are on local disk: verdicts it takes for \
                 payloads this replica holds are lost to it; run one replica per group, or put every replica on S3"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "could not describe the consumer group"),
            Err(_) => {}
        }
    }
}

async fn open_queue(
    settings: &Settings,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<dyn Queue>> {
    let Some(kafka) = &settings.kafka else {
        return Ok(Arc::new(MemoryQueue::default().counting_into(Arc::clone(metrics))));
    };
    let queue = Arc::new(
        KafkaQueue::new(kafka, &settings.topics.validation)
            .map_err(|e| anyhow::anyhow!("Kafka settings: {e}"))?
            .counting_into(Arc::clone(metrics)),
    );
    // Topics first; a broker that is down now is waited for in the background
    // (readiness says not ready meanwhile).
    let topics = KafkaQueue::topics(settings);
    if let Err(e) = queue.ensure_topics(&topics, Duration::from_secs(10)).await {
        tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying in the background");
        let (q, shutdown) = (queue.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                match q.ensure_topics(&topics, Duration::from_secs(10)).await {
                    Ok(()) => return tracing::info!("Kafka topics are in place"),
                    Err(e) => tracing::warn!(error = %e, "cannot create the Kafka topics yet; retrying"),
                }
            }
        });
    }
    Ok(queue)
}

/// The URL signing key: from the settings, else made once and kept in the data folder
/// (readable by the gateway's user only) so URLs survive a restart.
async fn signing_key(settings: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(k) = &settings.signing_key {
        return Ok(k.clone());
    }
    let path = settings.data_dir.join(".signing-key");
    match tokio::fs::read(&path).await {
        Ok(k) if k.len() >= 32 => Ok(k),
        _ => {
            let key: [u8; 32] = rand::random();
            let hexed = hex::encode(key).into_bytes();
            crate::auth::write_private(&path, &hexed)
                .await
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(hexed)
        }
    }
}
