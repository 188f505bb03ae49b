//! The embedded storage: each bucket a folder under the data folder.
//!
//! ```text
//! <data>/<bucket>/<key>              the payload, visible only once whole
//! <data>/<bucket>/.meta/<key>.json   its ObjectMeta
//! <data>/.tmp/                       files being written (cleared at start-up)
//! <data>/.wal/                       the write-ahead log: small payloads' home (wal.rs)
//! <data>/quarantine/.decided/<key>.json  a payload's verdict, once decided
//! <data>/.uploads/<id>/              a resumable upload: its record and bytes (uploads.rs)
//! <data>/.status/<key>/<name>.json   a payload's history, an event a file (events.rs)
//! ```
//! Where a payload is kept, and what makes it durable before the 2xx, depends on its size:
//! - a small one (up to [`SMALL`], most payloads) is kept in memory until its stream
//!   ends and appended to the write-ahead log, whose one `fdatasync` it shares with
//!   every upload that finished meanwhile. Its record is its home: no file is made for
//!   it, and the index (held.rs) says where it is. Most leave quarantine within
//!   seconds and their log is removed; a log whose payloads stay is compacted (wal.rs).
//! - a larger one is written to `.tmp`, fsynced, as is its meta, then renamed into
//!   place after its meta, so no reader ever sees half a payload.
//!
//! Keys never start with '.', so they cannot clash with the folders. To look at what
//! a bucket holds, logs included, without the gateway: [`peek`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Bucket, ByteStream, Decision, ObjectMeta, Storage, UploadRecord, UploadWriter};
use crate::error::{Error, Result};
use crate::domain::Payload;

/// Buffer between the socket's small chunks and the disk.
const WRITE_BUFFER: usize = 256 * 1024;
/// Once this many bytes are written and not yet on their way to the disk, their
/// writeback starts (without waiting), so the final fsync of a large payload finds
/// little left to write: receiving and writing to disk overlap (P2 in bench/results.md).
const WRITEBACK_STEP: u64 = 8 << 20;
/// Chunk size when reading a payload back.
const READ_CHUNK: usize = 64 * 1024;
/// Payloads up to this size go through the write-ahead log (and wait in memory until
/// their stream ends); larger ones are written to their file as they arrive.
pub const SMALL: usize = 256 * 1024;

mod events;
mod held;
pub mod peek;
mod uploads;
mod wal;

pub struct LocalDisk {
    root: PathBuf,
    wal: wal::Wal,
    /// The small payloads held in the log, and the keys of puts under way.
    held: std::sync::Arc<held::Held>,
    /// Makes a resumable upload's record save a compare-and-set (uploads.rs).
    upload_lock: tokio::sync::Mutex<()>,
    /// The resumable uploads with a writer open (uploads.rs).
    open_writers: uploads::OpenWriters,
}

impl LocalDisk {
    /// Opens (and creates) the folders under `root`, and reads what the write-ahead
    /// log holds from before (its small payloads are held again).
    pub async fn open(root: &Path) -> Result<Self> {
        Self::open_holding(root, wal::HOLD).await
    }

    /// [`LocalDisk::open`], with logs compacted `hold` after they close (wal.rs).
    async fn open_holding(root: &Path, hold: Duration) -> Result<Self> {
        for b in Bucket::ALL {
            create_dir(&root.join(b.as_str()).join(".meta")).await?;
        }
        create_dir(&root.join(".tmp")).await?;
        create_dir(&root.join(Bucket::Quarantine.as_str()).join(".decided")).await?;
        let root = root.to_path_buf();
        let held = std::sync::Arc::new(held::Held::default());
        let (r, h) = (root.clone(), held.clone());
        let wal = tokio::task::spawn_blocking(move || {
            let places = Places { root: r.clone() };
            let index: std::sync::Arc<dyn wal::Index> = h.clone();
            let wal = wal::Wal::open(&r, &r.join(".wal"), |record| places.replay(&h, record), index, hold)?;
            // A held payload's files, if any, are copies made before a crash: the log,
            // read in full, is what counts.
            for (bucket, key) in h.all() {
                places.remove(bucket, &key)?;
            }
            Ok::<_, std::io::Error>(wal)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| Error::StorageUnavailable(format!("write-ahead log in {}: {e}", root.display())))?;
        Ok(LocalDisk { root, wal, held, upload_lock: Default::default(), open_writers: Default::default() })
    }

    /// Takes `key` in `bucket` for one put, or says who has it. `generated`: the key is
    /// a new random id, so no payload has files under it.
    fn take(&self, bucket: Bucket, key: &str, generated: bool) -> Result<held::Taken> {
        let conflict = || {
            Error::Conflict(format!("request id {key} is already used by a stored payload, or by one being stored right now"))
        };
        let taken = self.held.claim(bucket, key).ok_or_else(conflict)?;
        // A payload with files of its own (a large one, or one put in place by other
        // means). µs-long lookups, in the page cache: done on the async worker. Even so
        // they were 5 % of the gateway's CPU under P1 (negative dentries made per new
        // name), hence skipped for a generated key.
        if !generated
            && (std::fs::symlink_metadata(self.object(bucket, key)).is_ok()
                || std::fs::symlink_metadata(self.meta(bucket, key)).is_ok())
        {
            return Err(conflict());
        }
        Ok(taken)
    }

    fn object(&self, bucket: Bucket, key: &str) -> PathBuf {
        object_path(&self.root, bucket, key)
    }

    fn meta(&self, bucket: Bucket, key: &str) -> PathBuf {
        meta_path(&self.root, bucket, key)
    }

    fn decision(&self, key: &str) -> PathBuf {
        self.root.join(Bucket::Quarantine.as_str()).join(".decided").join(format!("{key}.json"))
    }

    fn temp(&self) -> TempFile {
        TempFile(
            self.root
                .join(".tmp")
                .join(uuid::Uuid::new_v4().simple().to_string()),
            false,
        )
    }

    /// Writes a small file whole: temp, fsync, rename, fsync of the folder.
    async fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.temp();
        let (from, to, bytes) = (tmp.0.clone(), dest.to_path_buf(), bytes.to_vec());
        blocking(move || write_synced(&from, &bytes, &to)).await?;
        tmp.keep();
        Ok(())
    }

    /// The object's meta, or what its file says when it has none (a payload put in
    /// place by other means).
    async fn meta_or_derived(&self, bucket: Bucket, key: &str, file: &std::fs::Metadata) -> Result<ObjectMeta> {
        if let Some(meta) = self.read_meta(bucket, key).await? {
            return Ok(meta);
        }
        let modified = file.modified().map(chrono::DateTime::<chrono::Utc>::from).unwrap_or_default();
        let received_at = modified.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        Ok(ObjectMeta::without_sidecar(key, file.len(), received_at))
    }

    /// Takes `key` in `bucket` for one put: creates its (empty) meta file if absent.
    /// A metadata-only operation of a few µs: done on the async worker, where a hand-off
    /// to the blocking pool would cost more than the call (bench/notes.md, P1).
    fn claim(&self, bucket: Bucket, key: &str) -> Result<Claim> {
        let path = self.meta(bucket, key);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(Claim { place: TempFile(path, false) }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::Conflict(format!(
                "request id {key} is already used by a stored payload, or by one being stored right now"
            ))),
            Err(e) => Err(io(e)),
        }
    }

    /// A whole payload in memory: logged (one shared flush), and held there.
    async fn put_small(&self, taken: held::Taken, bucket: Bucket, key: &str, meta: ObjectMeta, bytes: Vec<u8>) -> Result<ObjectMeta> {
        let meta_json = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        let record = wal::Record::Put { bucket, key: key.to_string(), meta: meta_json, bytes };
        // Held by the log's writer the moment its record is durable.
        let hold: wal::Then = Box::new(move |log, spans| {
            taken.hold(held::Entry {
                bytes: held::Part { log: log.clone(), span: spans.bytes },
                meta: held::Part { log: log.clone(), span: spans.meta },
            })
        });
        // Dropped part-way (its client went away), the put must not stay: a delete goes
        // in after it, and takes it out of the index again.
        let undo = Undo { wal: &self.wal, held: &self.held, bucket, key };
        self.wal.append_then(&record, Some(hold)).await.map_err(io)?;
        std::mem::forget(undo);
        Ok(meta)
    }

    /// A payload larger than [`SMALL`]: written to its file as it arrives, fsynced.
    #[allow(clippy::too_many_arguments)]
    async fn put_large(
        &self,
        claim: Claim,
        bucket: Bucket,
        key: &str,
        mut meta: ObjectMeta,
        mut payload: Payload,
        head: Vec<u8>,
        chunk: bytes::Bytes,
    ) -> Result<ObjectMeta> {
        let tmp = self.temp();
        let file = tokio::fs::File::create(&tmp.0).await.map_err(io)?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        out.write_all(&head).await.map_err(io)?;
        out.write_all(&chunk).await.map_err(io)?;
        let (mut written, mut queued) = ((head.len() + chunk.len()) as u64, 0u64);
        drop(head);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
            if written - queued >= WRITEBACK_STEP {
                out.flush().await.map_err(io)?;
                start_writeback(out.get_ref(), queued, written - queued).await;
                queued = written;
            }
        }
        out.flush().await.map_err(io)?;
        let file = out.into_inner().into_std().await;
        let (size, sha256) = payload.finish()?;
        meta.size = size;
        meta.sha256 = sha256;
        let meta_json = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        // The payload's fsync and the meta's write + fsync overlap, and each step is one
        // blocking call rather than one per file operation: one wait on the disk instead
        // of two, and fewer thread hand-offs. As before, the meta is in place before the
        // object: a meta without its object is never visible (head/get look at the
        // object first) and is removed at start-up.
        let meta_tmp = self.temp();
        let (meta_tmp_path, meta_path) = (meta_tmp.0.clone(), self.meta(bucket, key));
        let (synced, wrote) = tokio::join!(
            blocking(move || file.sync_all()),
            blocking(move || write_synced(&meta_tmp_path, &meta_json, &meta_path)),
        );
        synced?;
        wrote?;
        meta_tmp.keep();
        let (from, to, dir) = (tmp.0.clone(), self.object(bucket, key), self.root.join(bucket.as_str()));
        blocking(move || {
            rename_noreplace(&from, &to)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await?;
        tmp.keep();
        claim.place.keep();
        Ok(meta)
    }

    async fn read_meta(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>> {
        match tokio::fs::read(self.meta(bucket, key)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Internal(format!("meta of {key} in {}: {e}", bucket.as_str()))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

#[async_trait::async_trait]
impl Storage for LocalDisk {
    async fn create_upload(&self, rec: &UploadRecord) -> Result<()> {
        LocalDisk::create_upload(self, rec).await
    }

    async fn load_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        LocalDisk::load_upload(self, id).await
    }

    async fn save_upload(&self, rec: &UploadRecord) -> Result<bool> {
        LocalDisk::save_upload(self, rec).await
    }

    async fn upload_writer(&self, rec: &UploadRecord) -> Result<Box<dyn UploadWriter>> {
        LocalDisk::upload_writer(self, rec).await
    }

    async fn finish_upload(&self, rec: &UploadRecord, meta: ObjectMeta) -> Result<ObjectMeta> {
        LocalDisk::finish_upload(self, rec, meta).await
    }

    async fn remove_upload(&self, rec: &UploadRecord) -> Result<()> {
        LocalDisk::remove_upload(self, rec).await
    }

    async fn list_uploads(&self) -> Result<Vec<String>> {
        LocalDisk::list_uploads(self).await
    }

    async fn put(
        &self,
        bucket: Bucket,
        key: &str,
        mut meta: ObjectMeta,
        mut payload: Payload,
    ) -> Result<ObjectMeta> {
        // The key is taken first, so a second put of it (at the same time, or after)
        // is refused before it writes anything. A failed put gives it back as it drops.
        let taken = self.take(bucket, key, payload.key_generated())?;
        let mut head = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk?;
            if head.len() + chunk.len() > SMALL {
                // Its files' places: the meta's, created only if absent.
                let claim = self.claim(bucket, key)?;
                let stored = self.put_large(claim, bucket, key, meta, payload, head, chunk).await;
                drop(taken);
                return stored;
            }
            head.extend_from_slice(&chunk);
        }
        let (size, sha256) = payload.finish()?;
        meta.size = size;
        meta.sha256 = sha256;
        self.put_small(taken, bucket, key, meta, head).await
    }

    async fn decide(&self, key: &str, decision: &Decision) -> Result<Option<Decision>> {
        // Written whole to a temp file, then linked into place: link(2) creates only if
        // absent, so a reader never sees a half-written decision.
        let path = self.decision(key);
        let json = serde_json::to_vec(decision).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.temp();
        let (from, to) = (tmp.0.clone(), path.clone());
        let linked = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&from)?;
                f.write_all(&json)?;
                f.sync_all()?;
            }
            match std::fs::hard_link(&from, &to) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(io)?;
        drop(tmp);
        if linked {
            return Ok(None);
        }
        let bytes = tokio::fs::read(&path).await.map_err(io)?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("the decision of {key}: {e}")))
    }

    async fn update_decision(&self, key: &str, decision: &Decision) -> Result<()> {
        let json = serde_json::to_vec(decision).map_err(|e| Error::Internal(e.to_string()))?;
        self.write_atomic(&self.decision(key), &json).await
    }

    async fn add_event(&self, key: &str, name: &str, event: &[u8]) -> Result<bool> {
        self.add_event_now(key, name, event)
    }

    async fn events(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.read_events(key).await
    }

    async fn event_names(&self, key: &str) -> Result<Vec<String>> {
        self.list_events(key).await
    }

    async fn forget_decision(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.decision(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn set_meta(&self, bucket: Bucket, key: &str, meta: &ObjectMeta) -> Result<bool> {
        if self.head(bucket, key).await?.is_none() {
            return Ok(false);
        }
        let json = serde_json::to_vec(meta).map_err(|e| Error::Internal(e.to_string()))?;
        if self.held.get(bucket, key).is_some() {
            // Held in the log: so is its new meta. (Deleted meanwhile, the record is
            // read back as a meta for nothing, and does nothing.)
            let record = wal::Record::Meta { bucket, key: key.to_string(), meta: json };
            let (log, spans) = self.wal.append(&record).await.map_err(io)?;
            self.held.set_meta(bucket, key, held::Part { log, span: spans.meta });
            return Ok(true);
        }
        self.write_atomic(&self.meta(bucket, key), &json).await?;
        Ok(true)
    }

    async fn head(&self, bucket: Bucket, key: &str) -> Result<Option<ObjectMeta>> {
        if let Some(entry) = self.held.get(bucket, key) {
            return held_meta(key, &entry).map(Some);
        }
        match tokio::fs::metadata(self.object(bucket, key)).await {
            Ok(file) => self.meta_or_derived(bucket, key, &file).await.map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn copy(&self, from: Bucket, to: Bucket, key: &str) -> Result<()> {
        if let Some(entry) = self.held.get(from, key) {
            // Held in the log: the copy gets files of its own, durable before it counts.
            let (meta, bytes) = (entry.meta.read().map_err(io)?, entry.bytes.read().map_err(io)?);
            self.write_atomic(&self.meta(to, key), &meta).await?;
            return self.write_atomic(&self.object(to, key), &bytes).await;
        }
        match tokio::fs::read(self.meta(from, key)).await {
            Ok(meta) => self.write_atomic(&self.meta(to, key), &meta).await?,
            Err(e) if e.kind() == ErrorKind::NotFound => {} // an object without meta
            Err(e) => return Err(io(e)),
        }
        // A hard link shares the bytes: the copy costs nothing and is whole at once.
        let tmp = self.temp();
        if let Err(e) = tokio::fs::hard_link(self.object(from, key), &tmp.0).await {
            if e.kind() == ErrorKind::NotFound {
                return Err(io(e));
            }
            tokio::fs::copy(self.object(from, key), &tmp.0)
                .await
                .map_err(io)?;
        }
        // The bytes may not be on the disk yet (a small payload's file is flushed by a
        // later checkpoint): the copy is, before it is in place.
        let t = tmp.0.clone();
        blocking(move || std::fs::File::open(&t)?.sync_data()).await?;
        tokio::fs::rename(&tmp.0, self.object(to, key))
            .await
            .map_err(io)?;
        // Not kept: when `to` already was a link to the same file (a verdict applied
        // twice), rename(2) does nothing and the temporary link stays; dropping removes it.
        drop(tmp);
        sync_dir(&self.root.join(to.as_str())).await
    }

    async fn delete(&self, bucket: Bucket, key: &str) -> Result<()> {
        // Logged first (a share of one flush): the removal is made durable by the next
        // checkpoint, and until then a crash replays it, so a deleted payload (promoted
        // out of quarantine) never comes back.
        let durable = self.wal.append(&wal::Record::Delete { bucket, key: key.to_string() }).await.map_err(io)?;
        // A held payload has no files (start-up removed any a crash left): nothing more
        // to do, and no hand-off to the blocking pool on every verdict's path.
        if !self.held.remove(bucket, key) {
            let places = Places { root: self.root.clone() };
            let key = key.to_string();
            blocking(move || places.remove(bucket, &key)).await?;
        }
        drop(durable);
        Ok(())
    }

    async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>> {
        if let Some(entry) = self.held.get(bucket, key) {
            // At most SMALL bytes: read whole, handed out in chunks as a file's are.
            let meta = held_meta(key, &entry)?;
            let bytes = bytes::Bytes::from(entry.bytes.read().map_err(io)?);
            let chunks: Vec<Result<bytes::Bytes>> =
                (0..bytes.len()).step_by(READ_CHUNK).map(|at| Ok(bytes.slice(at..bytes.len().min(at + READ_CHUNK)))).collect();
            return Ok(Some((meta, Box::pin(futures_util::stream::iter(chunks)))));
        }
        let file = match tokio::fs::File::open(self.object(bucket, key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let meta = self.meta_or_derived(bucket, key, &file.metadata().await.map_err(io)?).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
            .map(|r| r.map_err(io));
        Ok(Some((meta, Box::pin(stream))))
    }

    async fn presign(&self, _: Bucket, _: &str, _: Duration) -> Result<Option<String>> {
        Ok(None)
    }

    async fn list(&self, bucket: Bucket) -> Result<Vec<String>> {
        let mut dir = tokio::fs::read_dir(self.root.join(bucket.as_str()))
            .await
            .map_err(io)?;
        let mut keys = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            let name = entry.file_name();
            if let Some(name) = name.to_str() {
                if !name.starts_with('.') {
                    keys.push(name.to_string());
                }
            }
        }
        keys.extend(self.held.keys(bucket));
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn check(&self) -> Result<()> {
        for b in Bucket::ALL {
            tokio::fs::metadata(self.root.join(b.as_str()))
                .await
                .map_err(io)?;
        }
        Ok(())
    }

    async fn recover(&self, _shutdown: tokio_util::sync::CancellationToken) -> Result<()> {
        let tmp = self.root.join(".tmp");
        let mut dir = tokio::fs::read_dir(&tmp).await.map_err(io)?;
        let mut removed = 0;
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            tokio::fs::remove_file(entry.path()).await.map_err(io)?;
            removed += 1;
        }
        // A meta without its object is what a crash between the two renames leaves.
        for b in Bucket::ALL {
            let mut dir = tokio::fs::read_dir(self.root.join(b.as_str()).join(".meta"))
                .await
                .map_err(io)?;
            while let Some(entry) = dir.next_entry().await.map_err(io)? {
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(key) = name.strip_suffix(".json") {
                    if tokio::fs::metadata(self.object(b, key)).await.is_err() {
                        tokio::fs::remove_file(entry.path()).await.map_err(io)?;
                        removed += 1;
                    }
                }
            }
        }
        // A decision whose payload has left quarantine: a crash before it was forgotten.
        let mut dir = tokio::fs::read_dir(self.root.join(Bucket::Quarantine.as_str()).join(".decided")).await.map_err(io)?;
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(key) = name.strip_suffix(".json") {
                if self.held.get(Bucket::Quarantine, key).is_none() && tokio::fs::metadata(self.object(Bucket::Quarantine, key)).await.is_err() {
                    tokio::fs::remove_file(entry.path()).await.map_err(io)?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed files a crash left half-written");
        }
        Ok(())
    }
}

/// Where a payload is: `<root>/<bucket>/<key>`.
fn object_path(root: &Path, bucket: Bucket, key: &str) -> PathBuf {
    root.join(bucket.as_str()).join(key)
}

/// Where its meta is: `<root>/<bucket>/.meta/<key>.json`.
fn meta_path(root: &Path, bucket: Bucket, key: &str) -> PathBuf {
    root.join(bucket.as_str()).join(".meta").join(format!("{key}.json"))
}

/// Where a bucket's files are, for the blocking work of replay and delete.
struct Places {
    root: PathBuf,
}

impl Places {
    fn object(&self, bucket: Bucket, key: &str) -> PathBuf {
        object_path(&self.root, bucket, key)
    }

    fn meta(&self, bucket: Bucket, key: &str) -> PathBuf {
        meta_path(&self.root, bucket, key)
    }

    /// Removes a payload: the object first, so it is never visible without its meta.
    fn remove(&self, bucket: Bucket, key: &str) -> std::io::Result<()> {
        for path in [self.object(bucket, key), self.meta(bucket, key)] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What a record read at start-up says: a put of this format is held again (its
    /// meta too); a meta replaces a held payload's; a delete is done again. A record of
    /// the format before is done the old way.
    fn replay(&self, held: &held::Held, r: wal::Replayed) -> std::io::Result<()> {
        if r.v1 {
            return self.replay_v1(r.record);
        }
        match r.record {
            wal::Record::Put { bucket, key, .. } => {
                let part = |span| held::Part { log: r.durable.clone(), span };
                held.insert(bucket, key, held::Entry { bytes: part(r.spans.bytes), meta: part(r.spans.meta) });
                Ok(())
            }
            wal::Record::Meta { bucket, key, .. } => {
                held.set_meta(bucket, &key, held::Part { log: r.durable.clone(), span: r.spans.meta });
                Ok(())
            }
            wal::Record::Delete { bucket, key } => {
                held.remove(bucket, &key);
                self.remove(bucket, &key)
            }
        }
    }

    /// A record of the format before, whose put placed files beside it: a put's file
    /// that is missing or not whole is written again (so is its meta when missing or
    /// unreadable: a meta rewritten since, by set_meta, stays); a delete is done again.
    fn replay_v1(&self, record: wal::Record) -> std::io::Result<()> {
        match record {
            wal::Record::Put { bucket, key, meta, bytes } => {
                let meta_path = self.meta(bucket, &key);
                let readable = std::fs::read(&meta_path).ok().is_some_and(|m| serde_json::from_slice::<ObjectMeta>(&m).is_ok());
                if !readable {
                    self.replace(&meta_path, &meta)?;
                }
                let object = self.object(bucket, &key);
                let whole = match std::fs::read(&object) {
                    Ok(found) => found == bytes,
                    Err(e) if e.kind() == ErrorKind::NotFound => false,
                    Err(e) => return Err(e),
                };
                if !whole {
                    self.replace(&object, &bytes)?;
                }
                Ok(())
            }
            wal::Record::Meta { .. } => Ok(()),
            wal::Record::Delete { bucket, key } => self.remove(bucket, &key),
        }
    }

    /// Writes `dest` whole (through a temporary file and a rename); the replay's
    /// `syncfs` makes it durable.
    fn replace(&self, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.root.join(".tmp").join(format!("replay-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dest)
    }
}

/// The meta of a held payload.
fn held_meta(key: &str, entry: &held::Entry) -> Result<ObjectMeta> {
    let bytes = entry.meta.read().map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("meta of {key} in the write-ahead log: {e}")))
}

/// Logs a delete of a small put's key unless forgotten: a put dropped while its record
/// was being written must not stay, in the index or in the log.
struct Undo<'a> {
    wal: &'a wal::Wal,
    held: &'a std::sync::Arc<held::Held>,
    bucket: Bucket,
    key: &'a str,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let (held, bucket, key) = (self.held.clone(), self.bucket, self.key.to_string());
        let forget: wal::Then = Box::new(move |_, _| {
            held.remove(bucket, &key);
        });
        self.wal.append_detached(&wal::Record::Delete { bucket: self.bucket, key: self.key.to_string() }, Some(forget));
    }
}

/// A large put's files' place: its meta's, created empty (removed when dropped,
/// unless kept).
struct Claim {
    place: TempFile,
}

/// A file in `.tmp` that is removed when dropped, unless kept (renamed into place).
/// This is what cleans up when an upload fails or its future is dropped part-way.
struct TempFile(PathBuf, bool);

impl TempFile {
    fn keep(mut self) {
        self.1 = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn create_dir(path: &Path) -> Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| Error::StorageUnavailable(format!("cannot create {}: {e}", path.display())))
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(io)
}

/// Starts writing `len` bytes at `offset` of `file` back to the disk and returns
/// without waiting for them (Linux `sync_file_range`; elsewhere the final fsync does it
/// all). A hint only: durability comes from that fsync, so a failure is ignored.
async fn start_writeback(file: &tokio::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::{AsFd, AsRawFd};
        // Its own descriptor, so the call stays valid even if this upload is dropped.
        let Ok(fd) = file.as_fd().try_clone_to_owned() else { return };
        let r = blocking(move || {
            // SAFETY: `fd` is an open descriptor owned by this closure; the call only
            // reads its arguments.
            let rc = unsafe {
                libc::sync_file_range(fd.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
        .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "sync_file_range failed; the final fsync writes everything");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Renames `from` to `to` unless `to` exists (Linux `renameat2(RENAME_NOREPLACE)`; a
/// hard link and unlink where that is not supported): a stored payload is never
/// replaced.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let (f, t) = (CString::new(from.as_os_str().as_bytes())?, CString::new(to.as_os_str().as_bytes())?);
        // SAFETY: both paths are NUL-terminated C strings that live across the call.
        let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it to `dest` and fsyncs `dest`'s folder,
/// so the rename itself survives a power loss (a meta must be durable before its object).
fn write_synced(tmp: &Path, bytes: &[u8], dest: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, dest)?;
    match dest.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

async fn sync_dir(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&path).and_then(|d| d.sync_all()))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(io)
}

fn io(e: std::io::Error) -> Error {
    Error::StorageUnavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_storage_contract() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::open(dir.path()).await.unwrap();
        crate::storage::conformance::run(&disk, "local").await;
        // Nothing left half-written behind the suite's failed put.
        let tmp: Vec<_> = std::fs::read_dir(dir.path().join(".tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    }

    async fn put(disk: &LocalDisk, key: &str, bytes: &[u8]) {
        use crate::storage::conformance::{meta, payload};
        disk.put(Bucket::Quarantine, key, meta(key), payload(bytes.to_vec(), 1 << 20)).await.unwrap();
    }

    async fn read(disk: &LocalDisk, key: &str) -> Option<(ObjectMeta, Vec<u8>)> {
        let (m, mut stream) = disk.get(Bucket::Quarantine, key).await.unwrap()?;
        let mut back = Vec::new();
        while let Some(c) = stream.next().await {
            back.extend_from_slice(&c.unwrap());
        }
        Some((m, back))
    }

    /// A small payload is kept in the log, with no file of its own: what a process
    /// killed (or a power loss) leaves is the log, and opening the folder again holds
    /// every payload again, with its newest meta; a delete stays done; a payload given
    /// files before the crash, whose log survived, is read from the log (its files may
    /// be torn) and its stale files go.
    #[tokio::test]
    async fn the_log_is_where_small_payloads_are_kept_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::open(dir.path()).await.unwrap();
        put(&disk, "kept", b"bytes of the first").await;
        put(&disk, "marked", b"bytes of the second").await;
        put(&disk, "moved", b"bytes of the third").await;
        let mut m = disk.head(Bucket::Quarantine, "marked").await.unwrap().unwrap();
        m.unconfirmed = Some("the broker did not answer".into());
        assert!(disk.set_meta(Bucket::Quarantine, "marked", &m).await.unwrap());
        disk.copy(Bucket::Quarantine, Bucket::Perm, "moved").await.unwrap();
        disk.delete(Bucket::Quarantine, "moved").await.unwrap();
        assert!(!dir.path().join("quarantine/kept").exists(), "a small payload has no file of its own");
        assert_eq!(disk.list(Bucket::Quarantine).await.unwrap(), ["kept", "marked"]);
        // Files of a held key (placed by the version before, torn by a power loss):
        // the log wins.
        std::fs::write(dir.path().join("quarantine/kept"), b"bytes of").unwrap();
        std::fs::write(dir.path().join("quarantine/.meta/kept.json"), b"").unwrap();

        // The process dies (nothing is shut down: the log's threads live on, as a
        // dead process's would not matter); a new one opens the folder.
        let again = LocalDisk::open(dir.path()).await.unwrap();
        let (meta, bytes) = read(&again, "kept").await.expect("kept is back");
        assert_eq!((bytes.as_slice(), meta.size), (&b"bytes of the first"[..], 18));
        assert!(!dir.path().join("quarantine/kept").exists(), "its stale, torn files are gone");
        let (meta, _) = read(&again, "marked").await.expect("marked is back");
        assert_eq!(meta.unconfirmed.as_deref(), Some("the broker did not answer"), "with its newest meta");
        assert!(read(&again, "moved").await.is_none(), "a logged delete is not undone");
        assert_eq!(read_bytes(&again, Bucket::Perm, "moved").await, b"bytes of the third", "its copy has files of its own");
        assert_eq!(again.list(Bucket::Quarantine).await.unwrap(), ["kept", "marked"]);
        // The key of a held payload is taken.
        let taken = again
            .put(Bucket::Quarantine, "kept", crate::storage::conformance::meta("kept"), crate::storage::conformance::payload(b"x".to_vec(), 10))
            .await;
        assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    }

    async fn read_bytes(disk: &LocalDisk, bucket: Bucket, key: &str) -> Vec<u8> {
        let (_, mut stream) = disk.get(bucket, key).await.unwrap().unwrap();
        let mut back = Vec::new();
        while let Some(c) = stream.next().await {
            back.extend_from_slice(&c.unwrap());
        }
        back
    }

    /// A log whose payloads mostly left quarantine is compacted `hold` after it closed:
    /// written again with only what is still held (and every delete and meta), so the
    /// payloads left in quarantine still get no file; reading, and reading again after a
    /// restart, give the same payloads, with their newest metas.
    #[tokio::test]
    async fn a_mostly_decided_log_is_compacted_and_what_stays_is_still_there() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::open_holding(dir.path(), Duration::from_millis(300)).await.unwrap();
        let body = |i: usize| vec![i as u8; 2000];
        for i in 0..20 {
            put(&disk, &format!("k{i:02}"), &body(i)).await;
        }
        for i in 5..20 {
            disk.delete(Bucket::Quarantine, &format!("k{i:02}")).await.unwrap();
        }
        let mut m = disk.head(Bucket::Quarantine, "k01").await.unwrap().unwrap();
        m.unconfirmed = Some("newest".into());
        disk.set_meta(Bucket::Quarantine, "k01", &m).await.unwrap();
        let first = dir.path().join(".wal").join(format!("{:020}.log", 0));
        let before = std::fs::metadata(&first).unwrap().len();
        assert!(before > 20 * 2000, "the first log holds all twenty ({before} bytes)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&first).unwrap().len() >= before / 2 {
            assert!(std::time::Instant::now() < deadline, "the first log was not compacted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = std::fs::metadata(&first).unwrap().len();
        assert!(after < 5 * 2000 + 4000, "only the five held payloads' bytes stay ({after} bytes)");
        let keys: Vec<String> = (0..5).map(|i| format!("k{i:02}")).collect();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(read(&disk, key).await.unwrap().1, body(i), "{key} read from the compacted log");
        }
        assert_eq!(read(&disk, "k01").await.unwrap().0.unconfirmed.as_deref(), Some("newest"));
        assert_eq!(disk.list(Bucket::Quarantine).await.unwrap(), keys);
        // A restart reads the compacted log: the same five, the same newest meta.
        let again = LocalDisk::open(dir.path()).await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(read(&again, key).await.unwrap().1, body(i), "{key} after a restart");
        }
        assert_eq!(read(&again, "k01").await.unwrap().0.unconfirmed.as_deref(), Some("newest"));
        assert_eq!(again.list(Bucket::Quarantine).await.unwrap(), keys);
        assert!(list_files(&dir.path().join("quarantine")).is_empty(), "no payload got a file");
    }

    fn list_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).filter(|n| !n.starts_with('.')).collect()
    }
}
