//! Group commit for small payloads on local disk: a write-ahead log.
//!
//! ```text
//! <data>/.wal/<seq>.log    records: small payloads (bucket, key, meta, bytes), deletes
//! ```
//! One writer thread appends records. It takes every record waiting, writes them with
//! one write and makes them durable with one `fdatasync`: uploads that finish while a
//! flush runs share the next one, so the disk's flush rate stops bounding uploads/s
//! (bench/results.md, P1). Once its record is durable, a put places the payload's
//! file and meta without an fsync of their own: the log is what a crash falls back on.
//!
//! Every second (or 64 MiB) the writer starts a new log. Once every put of the old
//! one has placed its files (each holds a [`Durable`] until then), one `syncfs(2)`
//! makes those files durable and the old log is removed, oldest first.
//!
//! At start-up the logs left are replayed in order: a put's file that is missing or
//! not whole (its size or sha256 differs) is written again, a meta that is missing or
//! unreadable is written again, a delete is done again; then one `syncfs` and the logs
//! go. A record cut short by a crash ends its log's replay: it was never acknowledged.
//!
//! A record: `magic u32 | body length u32 | crc32 of body u32 | body`, all little-endian;
//! the body: `kind u8 | bucket u8 | key length u16 | key | meta length u32 | meta JSON |
//! payload bytes`.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::Bucket;

const MAGIC: u32 = 0x5547_4c31; // "UGL1"
const HEADER: usize = 12;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// A log is closed (and checkpointed) when it reaches this size...
const ROLL_SIZE: u64 = 64 << 20;
/// ...or this age, with records in it.
const ROLL_AGE: Duration = Duration::from_secs(1);
/// At most this many records share one flush.
const MAX_BATCH: usize = 4096;

/// One log file. Puts whose record it holds keep a [`Durable`] of it until their files
/// are in place; it is checkpointed once they all have.
struct Segment {
    path: PathBuf,
}

/// Proof that a record is durable; hold it until what the record describes is in
/// place (its files written), so the checkpoint that drops its log waits for it.
pub struct Durable(#[allow(dead_code)] Arc<Segment>);

struct Job {
    record: Vec<u8>,
    done: tokio::sync::oneshot::Sender<std::io::Result<Durable>>,
}

/// The log's writer: records go in, durable, in order.
pub struct Wal {
    jobs: mpsc::Sender<Job>,
}

/// What a record says to do.
#[derive(Debug)]
pub enum Record {
    Put { bucket: Bucket, key: String, meta: Vec<u8>, bytes: Vec<u8> },
    Delete { bucket: Bucket, key: String },
}

impl Wal {
    /// Replays what `dir` holds (with `apply`, in order), makes that durable, removes
    /// the replayed logs, and starts the writer thread.
    pub fn open(root: &Path, dir: &Path, mut apply: impl FnMut(Record) -> std::io::Result<()>) -> std::io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let seq = name.strip_suffix(".log")?.parse::<u64>().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        logs.sort();
        let next = logs.last().map_or(0, |(seq, _)| seq + 1);
        let mut replayed = 0usize;
        for (_, path) in &logs {
            replayed += replay(path, &mut apply)?;
        }
        if !logs.is_empty() {
            syncfs(root)?;
            for (_, path) in &logs {
                std::fs::remove_file(path)?;
            }
            File::open(dir)?.sync_all()?;
            tracing::info!(logs = logs.len(), records = replayed, "replayed the write-ahead log");
        }
        let (jobs, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let writer = Writer { root: root.to_path_buf(), dir: dir.to_path_buf(), seq: next, checkpoints: done_tx };
        let first = writer.create()?;
        std::thread::Builder::new().name("wal-writer".into()).spawn(move || writer.run(rx, first))?;
        let root = root.to_path_buf();
        let dir = dir.to_path_buf();
        std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || checkpoint(&root, &dir, done_rx))?;
        Ok(Wal { jobs })
    }

    /// Appends `record`; answers once it is durable.
    pub async fn append(&self, record: &Record) -> std::io::Result<Durable> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job { record: encode(record), done };
        self.jobs.send(job).map_err(|_| std::io::Error::other("the log's writer has stopped"))?;
        answer.await.map_err(|_| std::io::Error::other("the log's writer has stopped"))?
    }
}

struct Writer {
    root: PathBuf,
    dir: PathBuf,
    seq: u64,
    checkpoints: mpsc::Sender<Arc<Segment>>,
}

struct Open {
    file: File,
    segment: Arc<Segment>,
    size: u64,
    opened: Instant,
}

impl Writer {
    /// A new, empty log, its name durable in the folder before any record counts on it.
    fn create(&self) -> std::io::Result<Open> {
        let path = self.dir.join(format!("{:020}.log", self.seq));
        let file = std::fs::OpenOptions::new().append(true).create_new(true).open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Open { file, segment: Arc::new(Segment { path }), size: 0, opened: Instant::now() })
    }

    fn run(mut self, jobs: mpsc::Receiver<Job>, mut log: Open) {
        let mut buf = Vec::new();
        loop {
            let first = match jobs.recv_timeout(ROLL_AGE) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if log.size > 0 {
                        log = self.roll(log);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            buf.clear();
            for job in &batch {
                buf.extend_from_slice(&job.record);
            }
            let written = log.file.write_all(&buf).and_then(|()| log.file.sync_data());
            log.size += buf.len() as u64;
            let failed = written.is_err();
            for job in batch {
                let answer = match &written {
                    Ok(()) => Ok(Durable(log.segment.clone())),
                    Err(e) => Err(std::io::Error::new(e.kind(), format!("write-ahead log: {e}"))),
                };
                let _ = job.done.send(answer);
            }
            // After a failed write the log may end in half a record: later records go
            // to a new log (replay reads each log up to its first broken record).
            if failed || log.size >= ROLL_SIZE || log.opened.elapsed() >= ROLL_AGE {
                log = self.roll(log);
            }
        }
    }

    /// Starts a new log and hands the old one to the checkpoint. When no new log can
    /// be made, the old one goes on.
    fn roll(&mut self, old: Open) -> Open {
        self.seq += 1;
        match self.create() {
            Ok(new) => {
                let _ = self.checkpoints.send(old.segment);
                new
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), root = %self.root.display(), "cannot start a new write-ahead log; appending to the old one");
                old
            }
        }
    }
}

/// Removes closed logs, oldest first, once what they describe is durable: waits for
/// their puts to place their files, then one `syncfs`. A failed `syncfs` keeps every
/// log from then on (all are replayed at the next start) and says so.
fn checkpoint(root: &Path, dir: &Path, closed: mpsc::Receiver<Arc<Segment>>) {
    let mut broken = false;
    while let Ok(segment) = closed.recv() {
        while Arc::strong_count(&segment) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        if broken {
            continue;
        }
        let done = syncfs(root)
            .and_then(|()| std::fs::remove_file(&segment.path))
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(e) = done {
            tracing::error!(error = %e, log = %segment.path.display(),
                "cannot make the data folder durable; keeping the write-ahead logs, replayed at the next start");
            broken = true;
        }
    }
}

/// `syncfs(2)` on the filesystem holding `root` (elsewhere: `sync(2)`).
fn syncfs(root: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = File::open(root)?;
        // SAFETY: `dir` is an open descriptor for the call's length.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        // SAFETY: sync(2) takes no arguments.
        unsafe { libc::sync() };
        Ok(())
    }
}

fn bucket_code(b: Bucket) -> u8 {
    match b {
        Bucket::Quarantine => 0,
        Bucket::Perm => 1,
        Bucket::Reject => 2,
    }
}

fn encode(record: &Record) -> Vec<u8> {
    let (kind, bucket, key, meta, bytes): (u8, Bucket, &str, &[u8], &[u8]) = match record {
        Record::Put { bucket, key, meta, bytes } => (KIND_PUT, *bucket, key, meta, bytes),
        Record::Delete { bucket, key } => (KIND_DELETE, *bucket, key, &[], &[]),
    };
    let body_len = 1 + 1 + 2 + key.len() + 4 + meta.len() + bytes.len();
    let mut out = Vec::with_capacity(HEADER + body_len);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the crc, below
    out.push(kind);
    out.push(bucket_code(bucket));
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(bytes);
    let crc = crc32fast::hash(&out[HEADER..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The records of one log, up to its end or its first broken record.
fn replay(path: &Path, apply: &mut impl FnMut(Record) -> std::io::Result<()>) -> std::io::Result<usize> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut at = 0;
    let mut n = 0;
    while let Some((record, len)) = decode(&data[at..]) {
        apply(record)?;
        at += len;
        n += 1;
    }
    if at < data.len() {
        tracing::info!(log = %path.display(), offset = at, "the write-ahead log ends in a record cut short by a crash (never acknowledged)");
    }
    Ok(n)
}

fn decode(data: &[u8]) -> Option<(Record, usize)> {
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()));
    if u32_at(data, 0)? != MAGIC {
        return None;
    }
    let len = u32_at(data, 4)? as usize;
    let body = data.get(HEADER..HEADER + len)?;
    if crc32fast::hash(body) != u32_at(data, 8)? {
        return None;
    }
    let (kind, bucket) = (*body.first()?, *body.get(1)?);
    let bucket = [Bucket::Quarantine, Bucket::Perm, Bucket::Reject].get(bucket as usize).copied()?;
    let key_len = u16::from_le_bytes(body.get(2..4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(body.get(4..4 + key_len)?).ok()?.to_string();
    let rest = &body[4 + key_len..];
    let meta_len = u32_at(rest, 0)? as usize;
    let meta = rest.get(4..4 + meta_len)?.to_vec();
    let bytes = rest.get(4 + meta_len..)?.to_vec();
    let record = match kind {
        KIND_PUT => Record::Put { bucket, key, meta, bytes },
        KIND_DELETE => Record::Delete { bucket, key },
        _ => return None,
    };
    Some((record, HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_a_torn_tail_ends_the_replay() {
        let put = Record::Put { bucket: Bucket::Quarantine, key: "k1".into(), meta: b"{}".to_vec(), bytes: b"payload".to_vec() };
        let del = Record::Delete { bucket: Bucket::Perm, key: "k2".into() };
        let mut log = encode(&put);
        log.extend(encode(&del));
        let whole = log.len();
        log.extend(&encode(&put)[..10]); // a crash in the middle of the next record
        let (first, n) = decode(&log).unwrap();
        assert!(matches!(first, Record::Put { bucket: Bucket::Quarantine, ref key, ref bytes, .. } if key == "k1" && bytes == b"payload"));
        let (second, m) = decode(&log[n..]).unwrap();
        assert!(matches!(second, Record::Delete { bucket: Bucket::Perm, ref key } if key == "k2"));
        assert_eq!(n + m, whole);
        assert!(decode(&log[whole..]).is_none(), "half a record is not a record");
        let mut flipped = encode(&put);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped).is_none(), "a record whose crc does not match is not one");
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_replayed_after_the_process_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".wal");
        let wal = Wal::open(root.path(), &dir, |_| Ok(())).unwrap();
        let appends = (0..50).map(|i| {
            let wal = &wal;
            async move {
                let r = Record::Put { bucket: Bucket::Quarantine, key: format!("k{i}"), meta: vec![], bytes: vec![i as u8; 100] };
                wal.append(&r).await
            }
        });
        // Held: as if the puts had not placed their files yet, so no checkpoint may
        // remove the log.
        let held: Vec<Durable> = futures_util::future::join_all(appends).await.into_iter().map(Result::unwrap).collect();
        std::thread::sleep(ROLL_AGE * 2);
        // Open again as a restarted process would: every acknowledged record comes back.
        let mut seen = Vec::new();
        let _again = Wal::open(root.path(), &dir, |r| {
            if let Record::Put { key, bytes, .. } = r {
                seen.push((key, bytes.len()));
            }
            Ok(())
        })
        .unwrap();
        seen.sort();
        let mut expected: Vec<_> = (0..50).map(|i| (format!("k{i}"), 100)).collect();
        expected.sort();
        assert_eq!(seen, expected);
        drop(held);
    }
}
