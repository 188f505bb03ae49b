//! Resumable uploads on local disk (one replica): each upload a folder
//!
//! ```text
//! <data>/.uploads/<id>/record.json   its UploadRecord, replaced whole (temp, fsync, rename)
//! <data>/.uploads/<id>/data          its bytes so far; fdatasynced before each commit
//! ```
//! The record says how many bytes of `data` count: bytes past `offset` (written, never
//! committed, before a crash) are cut off when the next writer opens the file.
//! Finishing renames `data` into quarantine after its meta, as a large `put` does.

use std::io::ErrorKind;
use std::path::PathBuf;

use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{blocking, io, rename_noreplace, start_writeback, write_synced, LocalDisk, WRITE_BUFFER};

/// Bytes written between two writeback hints.
const WRITEBACK_STEP: u64 = 1 << 20;
use crate::error::{Error, Result};
use crate::storage::resumable::{StoredBytes, UploadRecord, UploadWriter};
use crate::storage::{Bucket, ObjectMeta};

/// How many bytes one commit covers at most: what a crash can lose of an upload.
pub const PART: u64 = 8 << 20;

impl LocalDisk {
    fn uploads(&self) -> PathBuf {
        self.root.join(".uploads")
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.uploads().join(id)
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("record.json")
    }

    async fn write_record(&self, rec: &UploadRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.temp();
        let (from, to) = (tmp.0.clone(), self.record_path(&rec.id));
        blocking(move || write_synced(&from, &json, &to)).await?;
        tmp.keep();
        Ok(())
    }

    pub(super) async fn create_upload(&self, rec: &UploadRecord) -> Result<()> {
        tokio::fs::create_dir_all(self.uploads()).await.map_err(io)?;
        match tokio::fs::create_dir(self.upload_dir(&rec.id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::Conflict(format!("request id {} is already used by another upload", rec.id)))
            }
            Err(e) => return Err(io(e)),
        }
        let _guard = self.upload_lock.lock().await;
        self.write_record(rec).await?;
        super::sync_dir(&self.uploads()).await
    }

    pub(super) async fn load_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        match tokio::fs::read(self.record_path(id)).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Internal(format!("the record of upload {id}: {e}"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    pub(super) async fn save_upload(&self, rec: &UploadRecord) -> Result<bool> {
        // One replica on local disk: a lock in the process makes read-compare-write one step.
        let _guard = self.upload_lock.lock().await;
        match self.load_upload(&rec.id).await? {
            Some(stored) if stored.version + 1 == rec.version => {}
            _ => return Ok(false),
        }
        self.write_record(rec).await?;
        Ok(true)
    }

    pub(super) async fn upload_writer(&self, rec: &UploadRecord) -> Result<Box<dyn UploadWriter>> {
        // The caller holds the upload's claim. A writer of this process (the only one
        // on this folder) whose claim lapsed may still have the file open: it is cut
        // off first, so its late bytes never land under this writer's.
        let open = Open::take(&self.open_writers, &rec.id).await;
        let path = self.upload_dir(&rec.id).join("data");
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .await
            .map_err(io)?;
        // Bytes written after the last commit (a crash, a refused checksum) do not count.
        file.set_len(rec.offset).await.map_err(io)?;
        file.seek(std::io::SeekFrom::Start(rec.offset)).await.map_err(io)?;
        Ok(Box::new(LocalWriter { out: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file), base: rec.offset, pending: 0, queued: 0, open }))
    }

    pub(super) async fn finish_upload(&self, rec: &UploadRecord, meta: ObjectMeta) -> Result<ObjectMeta> {
        let data = self.upload_dir(&rec.id).join("data");
        if tokio::fs::metadata(&data).await.is_err() {
            // Moved already (a crash after the rename, or a retried finish).
            return match self.read_meta(Bucket::Quarantine, &rec.id).await? {
                Some(meta) if tokio::fs::metadata(self.object(Bucket::Quarantine, &rec.id)).await.is_ok() => Ok(meta),
                _ => Err(Error::NotFound(format!("the bytes of upload {} are gone", rec.id))),
            };
        }
        let taken = self.take(Bucket::Quarantine, &rec.id, false)?;
        let claim = self.claim(Bucket::Quarantine, &rec.id)?;
        let json = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
        let meta_tmp = self.temp();
        let (meta_tmp_path, meta_path) = (meta_tmp.0.clone(), self.meta(Bucket::Quarantine, &rec.id));
        blocking(move || write_synced(&meta_tmp_path, &json, &meta_path)).await?;
        meta_tmp.keep();
        let (to, dir) = (self.object(Bucket::Quarantine, &rec.id), self.root.join(Bucket::Quarantine.as_str()));
        blocking(move || {
            rename_noreplace(&data, &to)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await?;
        claim.place.keep();
        drop(taken);
        Ok(meta)
    }

    pub(super) async fn remove_upload(&self, rec: &UploadRecord) -> Result<()> {
        match tokio::fs::remove_dir_all(self.upload_dir(&rec.id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    pub(super) async fn list_uploads(&self) -> Result<Vec<String>> {
        let mut dir = match tokio::fs::read_dir(self.uploads()).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut ids = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

struct LocalWriter {
    out: tokio::io::BufWriter<tokio::fs::File>,
    /// Where the bytes since the last flush start in the file.
    base: u64,
    pending: u64,
    /// Of those, how many were handed to the disk's writeback already.
    queued: u64,
    open: Open,
}

/// The uploads with a writer open in this process, each with its gate: true once a
/// newer writer took the upload over. A writer touches the file only while it holds
/// its gate and the gate says it is still current.
pub(super) type OpenWriters = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Gate>>>;
type Gate = std::sync::Arc<tokio::sync::Mutex<bool>>;

struct Open {
    set: OpenWriters,
    id: String,
    gate: Gate,
}

impl Open {
    async fn take(set: &OpenWriters, id: &str) -> Open {
        let gate = Gate::default();
        let older = set.lock().unwrap().insert(id.to_string(), gate.clone());
        if let Some(older) = older {
            // Waits for its write in progress, if any; it writes nothing after this.
            *older.lock().await = true;
        }
        Open { set: set.clone(), id: id.to_string(), gate }
    }

    fn taken_over(&self) -> Error {
        Error::Locked(format!("upload {} was taken over by another request (this one stalled past its claim)", self.id))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap();
        if set.get(&self.id).is_some_and(|g| std::sync::Arc::ptr_eq(g, &self.gate)) {
            set.remove(&self.id);
        }
    }
}

#[async_trait::async_trait]
impl UploadWriter for LocalWriter {
    fn pending(&self) -> u64 {
        self.pending
    }

    fn part_size(&self) -> u64 {
        PART
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let gate = self.open.gate.clone();
        let taken_over = gate.lock().await;
        if *taken_over {
            return Err(self.open.taken_over());
        }
        self.out.write_all(&chunk).await.map_err(io)?;
        self.pending += chunk.len() as u64;
        // The disk writes while more bytes arrive, so the commit's fdatasync finds
        // little left to write (as a large put does).
        if self.pending - self.queued >= WRITEBACK_STEP {
            self.out.flush().await.map_err(io)?;
            start_writeback(self.out.get_ref(), self.base + self.queued, self.pending - self.queued).await;
            self.queued = self.pending;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<StoredBytes> {
        let gate = self.open.gate.clone();
        let taken_over = gate.lock().await;
        if *taken_over {
            return Err(self.open.taken_over());
        }
        self.out.flush().await.map_err(io)?;
        self.out.get_ref().sync_data().await.map_err(io)?;
        self.base += self.pending;
        self.pending = 0;
        self.queued = 0;
        Ok(StoredBytes::default())
    }
}
