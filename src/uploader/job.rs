//! One file's upload, start to end: hash it, find the upload an earlier run began (or
//! create one), send what the gateway lacks over tus or gRPC, retrying what is worth
//! it, check the sha256, forget the resume state, and with `--wait` follow the status
//! to the verdict.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::file::{self, Sending};
use super::grpc;
use super::progress::{self, FileProgress, Progress};
use super::retry::{Failure, Policy, Retrier};
use super::state::{FileKey, Saved, Store};
use super::tus::{self, Created, Tus};
use crate::pipeline::status::TERMINAL;

/// How the bytes travel.
pub enum Via {
    Tus,
    Grpc(Box<grpc::Client>),
}

/// What every file's upload shares: the run's settings.
pub struct Ctx {
    pub gateway: String,
    pub content_type: String,
    pub metadata: Option<String>,
    pub request_id: Option<String>,
    pub resume: bool,
    pub store: Option<Store>,
    pub policy: Policy,
    pub chunk: u64,
    pub wait: Option<Duration>,
    /// tus, and `track` for --wait over REST.
    pub tus: Tus,
    pub via: Via,
    pub progress: Progress,
}

/// What became of one file (the result line, the --json object, the exit code).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub file: String,
    pub request_id: Option<String>,
    pub size: u64,
    pub sha256: Option<String>,
    /// `uploaded` (no --wait), the terminal status with --wait (`advertised`,
    /// `rejected`, `handoff`, `error`), or `failed` when the upload itself failed.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An upload the gateway finished: its request id and, over gRPC, the receipt's
/// sha256 and size.
struct Done {
    request_id: String,
    receipt: Option<(String, u64)>,
}

pub async fn upload(ctx: &Ctx, path: &Path) -> Report {
    let mut report = Report {
        file: path.display().to_string(),
        request_id: None,
        size: 0,
        sha256: None,
        status: "failed".into(),
        status_msg: None,
        error: None,
    };
    let mut bar = None;
    if let Err(e) = run(ctx, path, &mut report, &mut bar).await {
        report.status = "failed".into();
        report.error = Some(format!("{e:#}"));
        if let Some(b) = &bar {
            b.finish("failed");
        }
    }
    report
}

async fn run(ctx: &Ctx, path: &Path, report: &mut Report, bar: &mut Option<FileProgress>) -> anyhow::Result<()> {
    let key = FileKey::of(path)?;
    report.size = key.size;
    let name = path.display().to_string();
    let fp = ctx.progress.file(&name, key.size);
    *bar = Some(fp.clone());

    let earlier = ctx.store.as_ref().and_then(|s| s.load(&key));
    let saved = match earlier {
        Some(s) if ctx.resume && s.gateway == ctx.gateway && s.content_type == ctx.content_type => Some(s),
        Some(old) => {
            // --no-resume, or another gateway or content type: the old upload is of no
            // use; throw it away where it is (best effort) and start over.
            if old.gateway == ctx.gateway {
                match &ctx.via {
                    Via::Tus => ctx.tus.terminate(&old.upload_url).await,
                    Via::Grpc(c) => grpc::cancel(&mut c.clone(), &old.upload_id).await,
                }
            }
            if let Some(s) = &ctx.store {
                s.remove(&key);
            }
            None
        }
        None => None,
    };
    let sha256 = match &saved {
        Some(s) => s.sha256.clone(),
        None => {
            fp.phase("hashing", 0);
            file::sha256_file(&key.path, &fp).await?
        }
    };
    report.sha256 = Some(sha256.clone());
    let sending = Sending::new(key.path.clone(), key.size, fp.clone());
    let mut job = Job {
        ctx,
        key: &key,
        name: &name,
        file_name: path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| name.clone()),
        sending: &sending,
        sha256: &sha256,
        upload: saved.as_ref().map(|s| Created { url: s.upload_url.clone(), id: s.upload_id.clone() }),
        known: None,
        sums: None,
        retrier: Retrier::new(ctx.policy),
        fresh_starts: 0,
        saved_warned: false,
    };
    if let Some(s) = &saved {
        ctx.progress.note(&format!("{name}: continuing upload {} (the gateway had {} when last heard from)", s.upload_id, progress::bytes(s.offset)));
    }
    let done = job.send().await?;
    report.request_id = Some(done.request_id.clone());
    // The gateway finished the upload: nothing is left to continue, whatever the checks
    // below find. (Kept, the state would let the same command again find the upload
    // complete and report it `uploaded`, its receipt unchecked.)
    if let Some(s) = &ctx.store {
        s.remove(&key);
    }

    // Integrity: the bytes as sent are the bytes declared, and the gateway stored them.
    let sent = sending.finish().await?;
    anyhow::ensure!(
        sent == sha256,
        "the file changed while it was sent: its sha256 was {sha256} before, {sent} as sent (request id {})",
        done.request_id
    );
    if let Some((stored, size)) = &done.receipt {
        anyhow::ensure!(
            stored.eq_ignore_ascii_case(&sha256) && *size == key.size,
            "the gateway stored {size} bytes with sha256 {stored}; the file has {} bytes with sha256 {sha256} (request id {})",
            key.size,
            done.request_id
        );
    }
    report.status = "uploaded".into();
    let Some(within) = ctx.wait else {
        fp.finish("uploaded");
        return Ok(());
    };
    fp.phase("waiting", key.size);
    let (status, msg) = wait(ctx, &done.request_id, within).await?;
    fp.finish(&status);
    report.status = status;
    report.status_msg = Some(msg).filter(|m| !m.is_empty());
    Ok(())
}

struct Job<'a> {
    ctx: &'a Ctx,
    key: &'a FileKey,
    name: &'a str,
    file_name: String,
    sending: &'a Sending,
    sha256: &'a str,
    /// The upload on the gateway, once created or found.
    upload: Option<Created>,
    /// The gateway's offset as last answered; `None`: ask it first.
    known: Option<u64>,
    /// Whether PATCHes carry a sha256 `Upload-Checksum` (asked once).
    sums: Option<bool>,
    retrier: Retrier,
    fresh_starts: u32,
    saved_warned: bool,
}

impl Job<'_> {
    /// Tries until done, a permanent failure, or the retries are used up.
    async fn send(&mut self) -> anyhow::Result<Done> {
        loop {
            let attempt = match &self.ctx.via {
                Via::Tus => self.tus_attempt().await,
                Via::Grpc(c) => self.grpc_attempt(&mut c.clone()).await,
            };
            match attempt {
                Ok(done) => return Ok(done),
                Err(Failure::Permanent(m)) => anyhow::bail!("{m}"),
                Err(Failure::Gone(m)) => {
                    let Some(up) = self.upload.take() else { anyhow::bail!("{m}") };
                    // Finished by an earlier run whose answer was lost?
                    if self.stored(&up.id).await {
                        return Ok(Done { request_id: up.id, receipt: None });
                    }
                    self.fresh_starts += 1;
                    anyhow::ensure!(self.fresh_starts <= 2, "{m} (after starting over twice)");
                    self.ctx.progress.note(&format!("{}: upload {} is unknown or expired on the gateway; starting over", self.name, up.id));
                    if let Some(s) = &self.ctx.store {
                        s.remove(self.key);
                    }
                    self.known = None;
                }
                Err(Failure::Transient { message, retry_after }) => {
                    self.known = None;
                    let Some(delay) = self.retrier.next_delay(retry_after) else {
                        anyhow::bail!("{message} (gave up after {} tries in a row)", self.ctx.policy.retries + 1);
                    };
                    self.ctx.progress.note(&format!(
                        "{}: {message}; trying again in {} (retry {} of {})",
                        self.name,
                        progress::duration(delay),
                        self.retrier.attempt(),
                        self.ctx.policy.retries
                    ));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Whether the gateway knows a payload by this id (its status answers).
    async fn stored(&self, id: &str) -> bool {
        match &self.ctx.via {
            Via::Tus => matches!(self.ctx.tus.track(id).await, Ok(Some(_))),
            Via::Grpc(c) => c.clone().get_status(crate::grpc::pb::StatusRequest { request_id: id.to_string() }).await.is_ok(),
        }
    }

    fn save(&mut self, offset: u64) {
        let (Some(store), Some(up)) = (&self.ctx.store, &self.upload) else { return };
        let saved = Saved {
            file: self.key.clone(),
            gateway: self.ctx.gateway.clone(),
            content_type: self.ctx.content_type.clone(),
            upload_id: up.id.clone(),
            upload_url: up.url.clone(),
            sha256: self.sha256.to_string(),
            offset,
        };
        if let Err(e) = store.save(&saved) {
            if !self.saved_warned {
                self.saved_warned = true;
                self.ctx.progress.note(&format!("{}: cannot keep the resume state ({e:#}); a later run will start over", self.name));
            }
        }
    }

    fn start_sending(&self, offset: u64) {
        self.sending.progress().phase("sending", offset);
    }

    async fn tus_attempt(&mut self) -> Result<Done, Failure> {
        let tus = &self.ctx.tus;
        let size = self.key.size;
        if self.upload.is_none() {
            let created = tus
                .create(&tus::Create {
                    size,
                    content_type: &self.ctx.content_type,
                    file_name: &self.file_name,
                    metadata: self.ctx.metadata.as_deref(),
                    sha256: self.sha256,
                    request_id: self.ctx.request_id.as_deref(),
                })
                .await?;
            self.upload = Some(created);
            self.known = Some(0);
            self.save(0);
        }
        let up = self.upload.clone().expect("created above");
        let mut offset = match self.known {
            Some(o) => o,
            None => tus.offset(&up.url).await?,
        };
        self.known = Some(offset);
        if offset > size {
            return Err(Failure::Permanent(format!(
                "the gateway holds {offset} bytes of upload {}, more than the file's {size}",
                up.id
            )));
        }
        if self.sums.is_none() {
            self.sums = Some(tus.offers_sha256().await);
        }
        self.sending.catch_up(offset).await.map_err(|e| Failure::Permanent(format!("{e:#}")))?;
        self.start_sending(offset);
        if offset == size && size > 0 {
            // Every byte is there: an earlier run's last PATCH reached the gateway but
            // its answer did not come back. The payload is the upload's id.
            return self.confirm_stored(&up.id).await;
        }
        loop {
            let len = (size - offset).min(self.ctx.chunk);
            let sum = match self.sums {
                Some(true) => Some(
                    file::sha256_range(&self.key.path, offset, len)
                        .await
                        .map_err(|e| Failure::Permanent(format!("{e:#}")))?,
                ),
                _ => None,
            };
            let patched = tus.patch(&up.url, self.sending, offset, len, sum).await?;
            if patched.offset > offset {
                self.retrier.reset();
            }
            let before = offset;
            offset = patched.offset;
            self.known = Some(offset);
            if offset >= size {
                return Ok(Done { request_id: patched.request_id.unwrap_or(up.id), receipt: None });
            }
            self.save(offset);
            if offset <= before {
                return Err(Failure::transient(format!("the gateway took none of the chunk at {before}")));
            }
        }
    }

    /// An upload whose every byte the gateway holds: done once its payload has a status.
    async fn confirm_stored(&self, id: &str) -> Result<Done, Failure> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.stored(id).await {
                return Ok(Done { request_id: id.to_string(), receipt: None });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Failure::Permanent(format!("the gateway holds every byte of upload {id} but has no payload by that id")))
    }

    async fn grpc_attempt(&mut self, client: &mut grpc::Client) -> Result<Done, Failure> {
        let size = self.key.size;
        if self.upload.is_none() {
            let state = grpc::create(
                client,
                &grpc::Create {
                    size,
                    content_type: &self.ctx.content_type,
                    file_name: &self.file_name,
                    metadata: self.ctx.metadata.as_deref(),
                    sha256: self.sha256,
                },
            )
            .await?;
            self.upload = Some(Created { url: self.ctx.tus.upload_url(&state.upload_id), id: state.upload_id.clone() });
            self.known = Some(state.committed_size);
            self.save(state.committed_size);
        }
        let up = self.upload.clone().expect("created above");
        let offset = match self.known {
            Some(o) => o,
            None => {
                let state = grpc::query(client, &up.id).await?;
                if state.complete {
                    return self.confirm_stored(&up.id).await;
                }
                state.committed_size
            }
        };
        self.known = None;
        if offset > size {
            return Err(Failure::Permanent(format!(
                "the gateway holds {offset} bytes of upload {}, more than the file's {size}",
                up.id
            )));
        }
        self.save(offset);
        self.sending.catch_up(offset).await.map_err(|e| Failure::Permanent(format!("{e:#}")))?;
        self.start_sending(offset);
        let resp = grpc::write(client, &up.id, self.sending, offset, self.ctx.chunk).await?;
        if resp.committed_size > offset {
            self.retrier.reset();
        }
        match resp.receipt {
            Some(r) => Ok(Done { request_id: r.request_id, receipt: Some((r.sha256, r.size)) }),
            // The stream was cut short by the file, not the network.
            None if self.sending.read_error().is_some() => {
                Err(Failure::Permanent(self.sending.read_error().unwrap_or_default()))
            }
            None => Err(Failure::transient(format!(
                "the Write stream ended at {} of {size} bytes without a receipt",
                resp.committed_size
            ))),
        }
    }
}

/// Follows the payload's status (gRPC `WatchStatus`, or `track`) to a terminal status:
/// the status and its sentence. An error past `within`.
async fn wait(ctx: &Ctx, request_id: &str, within: Duration) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    let mut pause = Duration::from_millis(250);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = match &ctx.via {
            Via::Grpc(c) => {
                let mut c = c.clone();
                match tokio::time::timeout(left, grpc::watch(&mut c, request_id)).await {
                    Err(_) => None,
                    Ok(Ok(Some(ev))) => return Ok((ev.status, ev.status_msg)),
                    Ok(Ok(None)) | Ok(Err(Failure::Gone(_))) => Some(()),
                    Ok(Err(Failure::Transient { message, .. })) => {
                        last = message;
                        Some(())
                    }
                    Ok(Err(Failure::Permanent(m))) => anyhow::bail!("{m}"),
                }
            }
            Via::Tus => match tokio::time::timeout(left, ctx.tus.track(request_id)).await {
                Err(_) => None,
                Ok(Ok(Some(t))) => {
                    if TERMINAL.contains(&t.status.as_str()) {
                        return Ok((t.status, t.status_msg));
                    }
                    last = format!("last status: {}", t.status);
                    Some(())
                }
                Ok(Ok(None)) | Ok(Err(Failure::Gone(_))) => Some(()),
                Ok(Err(Failure::Transient { message, .. })) => {
                    last = message;
                    Some(())
                }
                Ok(Err(Failure::Permanent(m))) => anyhow::bail!("{m}"),
            },
        };
        // Asked once more at the deadline: the whole --wait-timeout is waited.
        if step.is_none() || Instant::now() >= deadline {
            anyhow::bail!(
                "no verdict for {request_id} within {}{}",
                progress::duration(within),
                if last.is_empty() { String::new() } else { format!(" ({last})") }
            );
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Reads `--identity`: the base64 itself, or `@FILE`.
pub fn identity(arg: &str) -> anyhow::Result<String> {
    let value = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("--identity @{path}"))?,
        None => arg.to_string(),
    };
    let value = value.trim().to_string();
    anyhow::ensure!(!value.is_empty(), "--identity is empty");
    Ok(value)
}
