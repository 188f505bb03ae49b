//! The file being sent, read from disk in bounded pieces (never whole in memory):
//! its sha256 before the upload (declared to the gateway, which refuses a payload
//! that differs) and again while its bytes are sent (a file changed meanwhile is
//! caught), and streams of its bytes from any offset for tus PATCHes and gRPC `Write`.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::progress::FileProgress;

/// How much is read from disk at a time when hashing.
const READ: usize = 1 << 20;

/// The sha256 of a whole file (hex), read in pieces, with its progress shown.
pub async fn sha256_file(path: &Path, progress: &FileProgress) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    hash_range(path, 0, u64::MAX, &mut h, Some(progress)).await?;
    Ok(hex::encode(h.finalize()))
}

/// The sha256 of `len` bytes at `offset` (a tus PATCH's `Upload-Checksum`).
pub async fn sha256_range(path: &Path, offset: u64, len: u64) -> anyhow::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let n = hash_range(path, offset, len, &mut h, None).await?;
    anyhow::ensure!(n == len, "{}: the file is shorter than it was ({} bytes at {offset})", path.display(), n);
    Ok(h.finalize().into())
}

async fn hash_range(
    path: &Path,
    offset: u64,
    len: u64,
    h: &mut Sha256,
    progress: Option<&FileProgress>,
) -> anyhow::Result<u64> {
    let mut f = tokio::fs::File::open(path).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(offset)).await?;
    let mut buf = vec![0u8; READ];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(READ as u64) as usize;
        let n = f.read(&mut buf[..want]).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        if let Some(p) = progress {
            p.set(offset + done);
        }
    }
    Ok(done)
}

/// The file as it is sent: where its running sha256 stands and whether reading it failed.
#[derive(Clone)]
pub struct Sending {
    pub path: PathBuf,
    pub size: u64,
    progress: FileProgress,
    running: Arc<Mutex<Running>>,
    /// A read error while streaming (the file shrank, a disk error): not the
    /// network's fault, so not worth a retry.
    failed: Arc<Mutex<Option<String>>>,
}

struct Running {
    /// Bytes hashed so far, from the start, in order.
    upto: u64,
    hasher: Sha256,
}

impl Running {
    /// Takes bytes read at `offset`: the part past what was hashed, when it follows on.
    fn feed(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if offset <= self.upto && end > self.upto {
            let skip = (self.upto - offset) as usize;
            self.hasher.update(&bytes[skip..]);
            self.upto = end;
        }
    }
}

impl Sending {
    pub fn new(path: PathBuf, size: u64, progress: FileProgress) -> Sending {
        Sending {
            path,
            size,
            progress,
            running: Arc::new(Mutex::new(Running { upto: 0, hasher: Sha256::new() })),
            failed: Arc::new(Mutex::new(None)),
        }
    }

    pub fn progress(&self) -> &FileProgress {
        &self.progress
    }

    /// Hashes what lies between the running hash and `offset` (bytes the gateway
    /// already holds from an earlier run), from disk, shown as a `hashing` phase.
    pub async fn catch_up(&self, offset: u64) -> anyhow::Result<()> {
        let (upto, mut h) = {
            let r = self.running.lock().unwrap();
            (r.upto, r.hasher.clone())
        };
        if offset <= upto {
            return Ok(());
        }
        self.progress.phase("hashing", upto);
        let n = hash_range(&self.path, upto, offset - upto, &mut h, Some(&self.progress)).await?;
        anyhow::ensure!(n == offset - upto, "{}: the file is shorter than it was", self.path.display());
        let mut r = self.running.lock().unwrap();
        if r.upto == upto {
            r.upto = offset;
            r.hasher = h;
        }
        Ok(())
    }

    /// The sha256 of every byte of the file as read while it was sent (hex).
    pub async fn finish(&self) -> anyhow::Result<String> {
        self.catch_up(self.size).await?;
        Ok(hex::encode(self.running.lock().unwrap().hasher.clone().finalize()))
    }

    /// The read error that cut the last stream short, if one did.
    pub fn read_error(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }

    /// `len` bytes from `offset`, in pieces of at most `piece` bytes, read as they are
    /// taken (one piece in memory at a time), hashed and counted in the progress.
    pub fn stream(&self, offset: u64, len: u64, piece: usize) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        struct St {
            file: Option<tokio::fs::File>,
            pos: u64,
            end: u64,
            me: Sending,
            piece: usize,
        }
        let st = St { file: None, pos: offset, end: offset + len, me: self.clone(), piece: piece.max(1) };
        futures_util::stream::unfold(st, |mut st| async move {
            if st.pos >= st.end {
                return None;
            }
            let result = async {
                if st.file.is_none() {
                    let mut f = tokio::fs::File::open(&st.me.path).await?;
                    f.seek(SeekFrom::Start(st.pos)).await?;
                    st.file = Some(f);
                }
                let want = (st.end - st.pos).min(st.piece as u64) as usize;
                let mut buf = vec![0u8; want];
                st.file.as_mut().unwrap().read_exact(&mut buf).await?;
                Ok::<_, std::io::Error>(Bytes::from(buf))
            }
            .await;
            match result {
                Ok(bytes) => {
                    st.me.running.lock().unwrap().feed(st.pos, &bytes);
                    st.pos += bytes.len() as u64;
                    st.me.progress.set(st.pos);
                    Some((Ok(bytes), st))
                }
                Err(e) => {
                    let msg = format!("{}: reading at byte {}: {e}", st.me.path.display(), st.pos);
                    *st.me.failed.lock().unwrap() = Some(msg);
                    st.pos = st.end;
                    Some((Err(e), st))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn hidden() -> FileProgress {
        super::super::progress::Progress::new(super::super::progress::Mode::Quiet).file("f", 0)
    }

    #[tokio::test]
    async fn the_running_hash_survives_resends_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let want = hex::encode(Sha256::digest(&data));
        assert_eq!(sha256_file(&path, &hidden()).await.unwrap(), want);

        let s = Sending::new(path.clone(), data.len() as u64, hidden());
        // An earlier run sent the first 100,000 bytes: hashed from disk.
        s.catch_up(100_000).await.unwrap();
        // A stream that breaks after 50,000 bytes...
        let got: Vec<Bytes> = s.stream(100_000, 50_000, 7_000).map(|b| b.unwrap()).collect().await;
        assert_eq!(got.iter().map(|b| b.len()).sum::<usize>(), 50_000);
        assert_eq!(got.concat(), data[100_000..150_000]);
        // ... of which the gateway kept 20,000: sent again from there.
        let _: Vec<_> = s.stream(120_000, 180_000, 64 << 10).collect().await;
        assert_eq!(s.finish().await.unwrap(), want);
        assert!(s.read_error().is_none());
    }

    #[tokio::test]
    async fn a_file_that_shrank_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 1000]).unwrap();
        let s = Sending::new(path.clone(), 2000, hidden());
        let items: Vec<_> = s.stream(0, 2000, 512).collect().await;
        assert!(items.last().unwrap().is_err());
        assert!(s.read_error().unwrap().contains("reading at byte"));
        assert!(sha256_range(&path, 500, 1000).await.is_err());
        assert_eq!(sha256_range(&path, 0, 1000).await.unwrap(), <[u8; 32]>::from(Sha256::digest(vec![1u8; 1000])));
    }
}
