//! Deciding on one payload: read its bytes once, as they arrive, checking them
//! against the announcement (size, sha256) and, for `check`, as a gzip-compressed tar
//! archive. Nothing is buffered whole: the archive is read on a blocking thread fed
//! chunk by chunk.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::fetch::Chunks;

/// What the built-in validator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Refuse every payload (the original service's test validator).
    Failure,
    /// Accept every payload.
    Success,
    /// Accept a valid gzip-compressed tar archive whose bytes match the
    /// announcement; refuse anything else, saying why.
    Check,
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub validation: &'static str,
    pub reason: String,
}

impl Decision {
    fn success(reason: impl Into<String>) -> Self {
        Decision {
            validation: "success",
            reason: reason.into(),
        }
    }

    fn failure(reason: impl Into<String>) -> Self {
        Decision {
            validation: "failure",
            reason: reason.into(),
        }
    }
}

/// Reads a payload and decides. An error means the bytes could not be read at all
/// (no verdict should be sent: the gateway gives the payload out again).
pub async fn decide(
    mode: Mode,
    mut bytes: Chunks,
    size: u64,
    sha256: &str,
) -> anyhow::Result<Decision> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut archive = (mode == Mode::Check)
        .then(|| tokio::task::spawn_blocking(move || check_tar_gz(ChannelReader::new(rx))));
    let mut tx = archive.as_ref().map(|_| tx);
    let mut checked = None;
    let (mut hasher, mut got) = (Sha256::new(), 0u64);
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        hasher.update(&chunk);
        if let Some(t) = &tx {
            if t.send(chunk).await.is_err() {
                // The archive check is over before the bytes are: when it failed,
                // that is the verdict and the rest need not be fetched; when it
                // passed, the rest is still hashed against the announcement.
                tx = None;
                match archive.take().expect("a check is running").await? {
                    Err(why) => return Ok(Decision::failure(why)),
                    Ok(files) => checked = Some(files),
                }
            }
        }
    }
    drop(tx);
    let checked = match (checked, archive) {
        (Some(files), _) => Some(Ok(files)),
        (None, Some(running)) => Some(running.await?),
        (None, None) => None,
    };
    let digest = hex::encode(hasher.finalize());
    let mismatch = if got != size {
        Some(format!("{got} bytes arrived, the announcement says {size}"))
    } else if !sha256.is_empty() && !digest.eq_ignore_ascii_case(sha256) {
        Some(format!(
            "the bytes hash to sha256 {digest}, the announcement says {sha256}"
        ))
    } else {
        None
    };
    Ok(match (mode, mismatch) {
        (Mode::Failure, m) => Decision::failure(with(
            m,
            "refused by the built-in validator (--verdict failure)",
        )),
        (Mode::Success, m) => Decision::success(with(
            m,
            "accepted by the built-in validator (--verdict success)",
        )),
        (Mode::Check, Some(m)) => Decision::failure(m),
        (Mode::Check, None) => match checked.expect("check mode reads the archive") {
            Ok(files) => Decision::success(format!("a valid tar.gz with {files} files")),
            Err(why) => Decision::failure(why),
        },
    })
}

fn with(mismatch: Option<String>, reason: &str) -> String {
    match mismatch {
        Some(m) => format!("{reason}; note: {m}"),
        None => reason.to_string(),
    }
}

/// Reads a whole gzip-compressed tar archive; the number of entries, or why it is not
/// one.
pub fn check_tar_gz(mut input: impl Read) -> Result<u64, String> {
    let mut magic = [0u8; 2];
    let n = read_full(&mut input, &mut magic).map_err(|e| format!("unreadable: {e}"))?;
    if n < 2 || magic != [0x1f, 0x8b] {
        return Err("not gzip: the payload does not start with the gzip magic bytes 1f 8b".into());
    }
    let gz = flate2::read::GzDecoder::new(Read::chain(&magic[..], input));
    let mut archive = tar::Archive::new(gz);
    let bad = |e: io::Error| format!("not a valid tar.gz: {e}");
    let mut files = 0;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        io::copy(&mut entry, &mut io::sink()).map_err(bad)?;
        files += 1;
    }
    // Whatever follows the end of the tar (padding, the gzip trailer) is read too, so
    // a truncated or corrupt gzip stream is caught by its checksum.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(bad)?;
    if files == 0 {
        return Err("not a valid tar.gz: the archive holds no files".into());
    }
    Ok(files)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A blocking `Read` over chunks sent from async code.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn chunks(parts: Vec<Vec<u8>>) -> Chunks {
        Box::pin(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from(p))),
        ))
    }

    #[tokio::test]
    async fn check_reads_while_downloading_and_stops_at_the_first_bad_byte() {
        let good = tar_gz(&[("a", &[1u8; 300_000])]);
        let sha = hex::encode(Sha256::digest(&good));
        let parts: Vec<Vec<u8>> = good.chunks(1000).map(<[u8]>::to_vec).collect();
        let d = decide(Mode::Check, chunks(parts.clone()), good.len() as u64, &sha)
            .await
            .unwrap();
        assert_eq!(d, Decision::success("a valid tar.gz with 1 files"));
        // Whole but not what was announced.
        let d = decide(
            Mode::Check,
            chunks(parts),
            good.len() as u64,
            &"0".repeat(64),
        )
        .await
        .unwrap();
        assert!(
            d.validation == "failure" && d.reason.contains("sha256"),
            "{d:?}"
        );
        // Garbage, then bytes without end: the verdict comes without reading them all.
        let endless = futures_util::stream::iter([Ok(Bytes::from_static(b"garbage"))]).chain(
            futures_util::stream::repeat_with(|| Ok(Bytes::from_static(&[0u8; 1024]))),
        );
        let d = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            decide(Mode::Check, Box::pin(endless), u64::MAX, ""),
        )
        .await
        .expect("a verdict before the end of an endless payload")
        .unwrap();
        assert!(d.reason.starts_with("not gzip"), "{d:?}");
    }

    #[test]
    fn a_tar_gz_passes_and_other_things_say_why_not() {
        assert_eq!(
            check_tar_gz(&tar_gz(&[("a", b"x"), ("b/c", b"yz")])[..]),
            Ok(2)
        );
        assert!(check_tar_gz(&b"garbage"[..])
            .unwrap_err()
            .starts_with("not gzip"));
        let mut gz_not_tar = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz_not_tar, &[b'x'; 2000]).unwrap();
        let e = check_tar_gz(&gz_not_tar.finish().unwrap()[..]).unwrap_err();
        assert!(e.starts_with("not a valid tar.gz"), "{e}");
        let whole = tar_gz(&[("a", &[7u8; 100_000])]);
        let e = check_tar_gz(&whole[..whole.len() / 2]).unwrap_err();
        assert!(e.starts_with("not a valid tar.gz"), "{e}");
        assert!(check_tar_gz(&tar_gz(&[])[..])
            .unwrap_err()
            .contains("no files"));
    }
}
