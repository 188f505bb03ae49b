//! The write-ahead log of small payloads on local disk: group commit, and their home.
//!
//! ```text
//! <data>/.wal/<seq>.log    records: small payloads (bucket, key, meta, bytes), metas, deletes
//! ```
//! One writer thread appends records. It takes every record waiting, writes them with
//! one write and makes them durable with one `fdatasync`: uploads that finish while a
//! flush runs share the next one, so the disk's flush rate stops bounding uploads/s
//! (bench/results.md, P1). A small payload's record is where it is kept: it gets no
//! file of its own (no file creation, rename or writeback per upload); the storage's
//! index (held.rs) says which record holds it.
//!
//! Every second (or 64 MiB) the writer starts a new log and hands the old one to the
//! checkpoint, which removes logs oldest first (so a delete's record never goes before
//! the put it undoes) once nothing refers to them: their payloads left quarantine.
//! One `syncfs(2)` first makes every file removal so far durable. A log whose
//! payloads are mostly gone after [`HOLD`] (and every [`HOLD`] after that) is compacted
//! in place: written again without the puts of payloads no longer held, every other
//! record kept in order, then renamed over the old one. So a payload that stays in
//! quarantine is never given a file of its own, and is copied at most once per
//! halving of its log.
//!
//! At start-up every log left is read in order and handed to `apply` (which rebuilds
//! the index), then kept: its payloads are still held. A record cut short by a crash
//! ends its log's reading: it was never acknowledged. Logs written before this format
//! (magic "UGL1", whose puts also placed files) are replayed the old way by `apply`.
//!
//! A record: `magic u32 | body length u32 | crc32 of body u32 | body`, all little-endian;
//! the body: `kind u8 | bucket u8 | key length u16 | key | meta length u32 | meta JSON |
//! payload bytes`.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::storage::Bucket;

/// Records of this format: a put's record is its payload's home.
const MAGIC: u32 = 0x5547_4c32; // "UGL2"
/// Records of the format before: a put's files were placed beside its record.
const MAGIC_V1: u32 = 0x5547_4c31; // "UGL1"
const HEADER: usize = 12;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_META: u8 = 3;
/// A log is closed (and handed to the checkpoint) when it reaches this size...
const ROLL_SIZE: u64 = 64 << 20;
/// ...or this age, with records in it.
const ROLL_AGE: Duration = Duration::from_secs(1);
/// At most this many records share one flush.
const MAX_BATCH: usize = 4096;
/// How old a log is before it may be compacted, and how long between two compactions
/// of one log. Most payloads are decided (and leave quarantine) well within it, so most
/// logs are simply removed.
pub const HOLD: Duration = Duration::from_secs(10);

/// One log file, open for reading the payloads it holds. Whatever refers to one of its
/// records (an index entry, a read, a put or delete under way) holds an `Arc` of it; the
/// checkpoint removes it once nothing does.
pub struct Segment {
    path: PathBuf,
    file: File,
    opened: Instant,
    /// Bytes of the puts and metas in it that the index holds (kept by held.rs).
    pub(super) live: std::sync::atomic::AtomicU64,
}

impl Segment {
    fn open(path: PathBuf) -> std::io::Result<Segment> {
        let file = File::open(&path)?;
        Ok(Segment { path, file, opened: Instant::now(), live: Default::default() })
    }

    /// `len` bytes at `at` (a span from [`Spans`]).
    pub fn read(&self, (at, len): (u64, usize)) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, at)?;
        Ok(buf)
    }
}

/// Proof that a record is durable, and a hold on its log (see [`Segment`]).
#[derive(Clone)]
pub struct Durable(pub Arc<Segment>);

/// Where a put's (or meta's) parts are in its log: (offset, length) each.
#[derive(Clone, Copy, Debug)]
pub struct Spans {
    pub meta: (u64, usize),
    pub bytes: (u64, usize),
}

impl Spans {
    /// The spans of a record written at `at` with this key, meta and payload.
    fn of(at: u64, key_len: usize, meta_len: usize, bytes_len: usize) -> Spans {
        let meta_at = at + (HEADER + 1 + 1 + 2 + key_len + 4) as u64;
        Spans { meta: (meta_at, meta_len), bytes: (meta_at + meta_len as u64, bytes_len) }
    }
}

/// Run by the writer once a record is durable, before anyone hears so (a put makes its
/// payload held here, so no compaction can find its record durable and not yet held).
pub type Then = Box<dyn FnOnce(&Durable, Spans) + Send>;

struct Job {
    record: Vec<u8>,
    spans: (usize, usize, usize),
    then: Option<Then>,
    done: tokio::sync::oneshot::Sender<std::io::Result<(Durable, Spans)>>,
}

/// The log's writer: records go in, durable, in order.
#[derive(Clone)]
pub struct Wal {
    jobs: mpsc::Sender<Job>,
}

/// What a record says to do.
#[derive(Debug)]
pub enum Record {
    Put { bucket: Bucket, key: String, meta: Vec<u8>, bytes: Vec<u8> },
    /// A held payload's meta, replaced (set_meta).
    Meta { bucket: Bucket, key: String, meta: Vec<u8> },
    Delete { bucket: Bucket, key: String },
}

/// A record read back at start-up, with where it is.
pub struct Replayed {
    pub record: Record,
    /// Written before this format: its put placed files too.
    pub v1: bool,
    pub durable: Durable,
    pub spans: Spans,
}

/// What the checkpoint asks of the index of held payloads (held.rs) to compact a log.
pub trait Index: Send + Sync {
    /// Where (the offset of the bytes) each put still held in `log` is.
    fn live_puts(&self, log: &Arc<Segment>) -> HashSet<u64>;
    /// Points every part held in `old` at `new`, at the offset `moved` gives.
    fn repoint(&self, old: &Arc<Segment>, new: &Arc<Segment>, moved: &dyn Fn(u64) -> Option<u64>);
}

impl Wal {
    /// Reads what `dir` holds (handing each record to `apply`, in order), keeps those
    /// logs for the checkpoint, and starts the writer and checkpoint threads.
    pub fn open(
        root: &Path,
        dir: &Path,
        mut apply: impl FnMut(Replayed) -> std::io::Result<()>,
        index: Arc<dyn Index>,
        hold: Duration,
    ) -> std::io::Result<Wal> {
        std::fs::create_dir_all(dir)?;
        // A compaction cut short by a crash: the log it was made from is still whole.
        for entry in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            if entry.path().extension().is_some_and(|x| x == "compact") {
                std::fs::remove_file(entry.path())?;
            }
        }
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
        let (done_tx, done_rx) = mpsc::channel();
        let mut replayed = 0usize;
        for (_, path) in logs.iter() {
            let segment = Arc::new(Segment::open(path.clone())?);
            replayed += replay(&segment, &mut apply)?;
            let _ = done_tx.send(segment);
        }
        if !logs.is_empty() {
            tracing::info!(logs = logs.len(), records = replayed, "read the write-ahead log");
        }
        let (jobs, rx) = mpsc::channel();
        let writer = Writer { dir: dir.to_path_buf(), seq: next, checkpoints: done_tx };
        let first = writer.create()?;
        std::thread::Builder::new().name("wal-writer".into()).spawn(move || writer.run(rx, first))?;
        let root = root.to_path_buf();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || checkpoint(&root, &dir, done_rx, index, hold))?;
        Ok(Wal { jobs })
    }

    /// Appends `record`; answers once it is durable, with where its parts are.
    pub async fn append(&self, record: &Record) -> std::io::Result<(Durable, Spans)> {
        self.append_then(record, None).await
    }

    /// Appends `record`; once it is durable the writer runs `then`, and then answers.
    pub async fn append_then(&self, record: &Record, then: Option<Then>) -> std::io::Result<(Durable, Spans)> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let (record, spans) = encode(record, MAGIC);
        let job = Job { record, spans, then, done };
        self.jobs.send(job).map_err(|_| std::io::Error::other("the log's writer has stopped"))?;
        answer.await.map_err(|_| std::io::Error::other("the log's writer has stopped"))?
    }

    /// Appends `record` after every record appended before, without waiting (from a
    /// `Drop`: the undo of a put whose future was dropped while its record was written).
    pub fn append_detached(&self, record: &Record, then: Option<Then>) {
        let (done, _) = tokio::sync::oneshot::channel();
        let (record, spans) = encode(record, MAGIC);
        let _ = self.jobs.send(Job { record, spans, then, done });
    }
}

struct Writer {
    dir: PathBuf,
    seq: u64,
    checkpoints: mpsc::Sender<Arc<Segment>>,
}

struct Open {
    file: File,
    segment: Arc<Segment>,
    size: u64,
}

impl Writer {
    /// A new, empty log, its name durable in the folder before any record counts on it.
    fn create(&self) -> std::io::Result<Open> {
        let path = self.dir.join(format!("{:020}.log", self.seq));
        let file = std::fs::OpenOptions::new().append(true).create_new(true).open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(Open { file, segment: Arc::new(Segment::open(path)?), size: 0 })
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
            let mut at = log.size;
            log.size += buf.len() as u64;
            let failed = written.is_err();
            for mut job in batch {
                let (key_len, meta_len, bytes_len) = job.spans;
                let answer = match &written {
                    Ok(()) => {
                        let (durable, spans) = (Durable(log.segment.clone()), Spans::of(at, key_len, meta_len, bytes_len));
                        if let Some(then) = job.then.take() {
                            then(&durable, spans);
                        }
                        Ok((durable, spans))
                    }
                    Err(e) => Err(std::io::Error::new(e.kind(), format!("write-ahead log: {e}"))),
                };
                at += job.record.len() as u64;
                let _ = job.done.send(answer);
            }
            // After a failed write the log may end in half a record: later records go
            // to a new log (reading stops at a log's first broken record).
            if failed || log.size >= ROLL_SIZE || log.segment.opened.elapsed() >= ROLL_AGE {
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
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot start a new write-ahead log; appending to the old one");
                old
            }
        }
    }
}

/// Removes closed logs, oldest first, once nothing refers to one (one `syncfs` before,
/// for the file removals its deletes describe), and compacts those whose held payloads
/// fill less than half of them, `hold` after they were closed or last compacted. A
/// failed `syncfs` keeps every log from then on (all are read again at the next start)
/// and says so; a failed compaction leaves the log as it was.
fn checkpoint(root: &Path, dir: &Path, closed: mpsc::Receiver<Arc<Segment>>, index: Arc<dyn Index>, hold: Duration) {
    let mut logs: VecDeque<(Arc<Segment>, Instant)> = VecDeque::new();
    let mut broken = false;
    loop {
        match closed.recv_timeout(Duration::from_millis(20)) {
            Ok(log) => {
                let due = log.opened + hold;
                logs.push_back((log, due));
                while let Ok(log) = closed.try_recv() {
                    let due = log.opened + hold;
                    logs.push_back((log, due));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let dead = logs.iter().take_while(|(log, _)| Arc::strong_count(log) == 1).count();
        if dead > 0 && !broken {
            let removed = syncfs(root).and_then(|()| {
                for (log, _) in logs.drain(..dead) {
                    std::fs::remove_file(&log.path)?;
                }
                File::open(dir)?.sync_all()
            });
            if let Err(e) = removed {
                tracing::error!(error = %e, dir = %dir.display(),
                    "cannot make the data folder durable; keeping the write-ahead logs, read again at the next start");
                broken = true;
            }
        }
        let now = Instant::now();
        for (log, next) in logs.iter_mut().filter(|(_, next)| *next <= now) {
            *next = now + hold;
            let size = log.file.metadata().map(|m| m.len()).unwrap_or(0);
            if log.live.load(std::sync::atomic::Ordering::Relaxed) * 2 >= size {
                continue;
            }
            match compact(log, &*index) {
                Ok(new) => *log = new,
                Err(e) => tracing::error!(error = %e, log = %log.path.display(), "cannot compact a write-ahead log; keeping it as it is"),
            }
        }
    }
}

/// Writes `old` again without the puts of payloads no longer held (every other record
/// kept, in order), renames it over `old` and points the index at it.
fn compact(old: &Arc<Segment>, index: &dyn Index) -> std::io::Result<Arc<Segment>> {
    let live = index.live_puts(old);
    let data = std::fs::read(&old.path)?;
    let mut out = Vec::new();
    // (where a kept record was, its length, where it is now)
    let mut moves: Vec<(u64, u64, u64)> = Vec::new();
    let frames = frames(&data);
    let whole = frames.last().map_or(0, |f| f.at + f.len);
    for f in frames {
        let keep = !matches!(f.record, Record::Put { .. }) || f.v1 || live.contains(&f.spans.bytes.0);
        if keep {
            moves.push((f.at as u64, f.len as u64, out.len() as u64));
            out.extend_from_slice(&data[f.at..f.at + f.len]);
        }
    }
    if out.len() == whole {
        return Ok(old.clone()); // nothing to drop (a log compacted before, of deletes only)
    }
    let tmp = old.path.with_extension("compact");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &old.path)?;
    if let Some(dir) = old.path.parent() {
        File::open(dir)?.sync_all()?;
    }
    let new = Arc::new(Segment { path: old.path.clone(), file: File::open(&old.path)?, opened: old.opened, live: Default::default() });
    index.repoint(old, &new, &|offset| {
        let i = moves.partition_point(|&(from, _, _)| from <= offset).checked_sub(1)?;
        let (from, len, to) = moves[i];
        (offset < from + len).then(|| to + (offset - from))
    });
    tracing::debug!(log = %old.path.display(), before = data.len(), after = out.len(), "compacted a write-ahead log");
    Ok(new)
}

/// The records of the log at `path`, in order, up to its end or its first broken
/// record (a read-only look: `peek.rs`).
pub fn records(path: &Path) -> std::io::Result<Vec<(Record, bool, Spans)>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let frames = frames(&data);
    let whole = frames.last().map_or(0, |f| f.at + f.len);
    if whole < data.len() {
        tracing::info!(log = %path.display(), offset = whole, "the write-ahead log ends in a record cut short by a crash (never acknowledged)");
    }
    Ok(frames.into_iter().map(|f| (f.record, f.v1, f.spans)).collect())
}

/// A record as found in a log: where it starts, its length, it, whether it is of the
/// old format, and where its parts are.
struct Frame {
    at: usize,
    len: usize,
    record: Record,
    v1: bool,
    spans: Spans,
}

/// The records of a log's bytes, in order, up to the end or the first broken one.
fn frames(data: &[u8]) -> Vec<Frame> {
    let mut at = 0;
    let mut out = Vec::new();
    while let Some((record, v1, len)) = decode(&data[at..]) {
        let spans = match &record {
            Record::Put { key, meta, bytes, .. } => Spans::of(at as u64, key.len(), meta.len(), bytes.len()),
            Record::Meta { key, meta, .. } => Spans::of(at as u64, key.len(), meta.len(), 0),
            Record::Delete { key, .. } => Spans::of(at as u64, key.len(), 0, 0),
        };
        out.push(Frame { at, len, record, v1, spans });
        at += len;
    }
    out
}

/// Hands the records of `segment` to `apply`; how many there were.
fn replay(segment: &Arc<Segment>, apply: &mut impl FnMut(Replayed) -> std::io::Result<()>) -> std::io::Result<usize> {
    let records = records(&segment.path)?;
    let n = records.len();
    for (record, v1, spans) in records {
        apply(Replayed { record, v1, durable: Durable(segment.clone()), spans })?;
    }
    Ok(n)
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

/// A record's bytes, and its key, meta and payload lengths (for its [`Spans`]).
fn encode(record: &Record, magic: u32) -> (Vec<u8>, (usize, usize, usize)) {
    let (kind, bucket, key, meta, bytes): (u8, Bucket, &str, &[u8], &[u8]) = match record {
        Record::Put { bucket, key, meta, bytes } => (KIND_PUT, *bucket, key, meta, bytes),
        Record::Meta { bucket, key, meta } => (KIND_META, *bucket, key, meta, &[]),
        Record::Delete { bucket, key } => (KIND_DELETE, *bucket, key, &[], &[]),
    };
    let body_len = 1 + 1 + 2 + key.len() + 4 + meta.len() + bytes.len();
    let mut out = Vec::with_capacity(HEADER + body_len);
    out.extend_from_slice(&magic.to_le_bytes());
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
    (out, (key.len(), meta.len(), bytes.len()))
}

/// The record at the start of `data`: it, whether it is of the old format, and its length.
fn decode(data: &[u8]) -> Option<(Record, bool, usize)> {
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()));
    let v1 = match u32_at(data, 0)? {
        MAGIC => false,
        MAGIC_V1 => true,
        _ => return None,
    };
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
        KIND_META => Record::Meta { bucket, key, meta },
        KIND_DELETE => Record::Delete { bucket, key },
        _ => return None,
    };
    Some((record, v1, HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written_and_a_torn_tail_ends_the_reading() {
        let put = Record::Put { bucket: Bucket::Quarantine, key: "k1".into(), meta: b"{}".to_vec(), bytes: b"payload".to_vec() };
        let del = Record::Delete { bucket: Bucket::Perm, key: "k2".into() };
        let mut log = encode(&put, MAGIC).0;
        log.extend(encode(&del, MAGIC_V1).0);
        let whole = log.len();
        log.extend(&encode(&put, MAGIC).0[..10]); // a crash in the middle of the next record
        let (first, v1, n) = decode(&log).unwrap();
        assert!(matches!(first, Record::Put { bucket: Bucket::Quarantine, ref key, ref bytes, .. } if key == "k1" && bytes == b"payload"));
        assert!(!v1);
        let (second, v1, m) = decode(&log[n..]).unwrap();
        assert!(matches!(second, Record::Delete { bucket: Bucket::Perm, ref key } if key == "k2"));
        assert!(v1, "a record of the old format says so");
        assert_eq!(n + m, whole);
        assert!(decode(&log[whole..]).is_none(), "half a record is not a record");
        let mut flipped = encode(&put, MAGIC).0;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped).is_none(), "a record whose crc does not match is not one");
    }

    /// An index that holds nothing (the test holds the answers' logs itself).
    struct Keep;

    impl Index for Keep {
        fn live_puts(&self, _: &Arc<Segment>) -> HashSet<u64> {
            HashSet::new()
        }
        fn repoint(&self, _: &Arc<Segment>, _: &Arc<Segment>, _: &dyn Fn(u64) -> Option<u64>) {}
    }

    #[tokio::test]
    async fn what_was_acknowledged_is_read_back_after_the_process_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".wal");
        let keep = || -> Arc<dyn Index> { Arc::new(Keep) };
        let wal = Wal::open(root.path(), &dir, |_| Ok(()), keep(), HOLD).unwrap();
        let appends = (0..50).map(|i| {
            let wal = &wal;
            async move {
                let r = Record::Put { bucket: Bucket::Quarantine, key: format!("k{i}"), meta: b"{}".to_vec(), bytes: vec![i as u8; 100] };
                wal.append(&r).await
            }
        });
        // Held, as the index holds what it refers to, so no checkpoint may remove the log.
        let held: Vec<(Durable, Spans)> = futures_util::future::join_all(appends).await.into_iter().map(Result::unwrap).collect();
        // Each answer says where its payload is: read back through it.
        for (i, (durable, spans)) in held.iter().enumerate() {
            assert_eq!(durable.0.read(spans.bytes).unwrap(), vec![i as u8; 100]);
            assert_eq!(durable.0.read(spans.meta).unwrap(), b"{}");
        }
        std::thread::sleep(ROLL_AGE * 2);
        // Open again as a restarted process would: every acknowledged record comes back,
        // with the same spans.
        let mut seen = Vec::new();
        let _again = Wal::open(
            root.path(),
            &dir,
            |r| {
                if let Record::Put { key, bytes, .. } = r.record {
                    assert_eq!(r.durable.0.read(r.spans.bytes).unwrap(), bytes);
                    seen.push((key, bytes.len()));
                }
                Ok(())
            },
            keep(),
            HOLD,
        )
        .unwrap();
        seen.sort();
        let mut expected: Vec<_> = (0..50).map(|i| (format!("k{i}"), 100)).collect();
        expected.sort();
        assert_eq!(seen, expected);
        drop(held);
    }
}
