//! The bytes a run uploads: one random block, repeated, handed out in chunks (so a
//! 1 GiB payload costs the client one chunk of memory), and its multipart framing.

use bytes::{Bytes, BytesMut};
use rand::RngCore;

#[derive(Clone)]
pub struct PayloadSource {
    block: Bytes,
    size: u64,
}

impl PayloadSource {
    /// `size` bytes, served in pieces of at most `chunk` bytes.
    pub fn new(size: u64, chunk: u64) -> Self {
        let len = size.min(chunk.max(1)) as usize;
        let mut block = vec![0u8; len];
        rand::rng().fill_bytes(&mut block);
        PayloadSource { block: block.into(), size }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The payload as a sequence of chunks (cheap clones of one block).
    pub fn chunks(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let block = self.block.clone();
        let step = block.len().max(1) as u64;
        let size = self.size;
        (0..size.div_ceil(step)).map(move |i| {
            let n = (size - i * step).min(step) as usize;
            block.slice(..n)
        })
    }

    /// The whole payload in one buffer (small payloads only).
    pub fn contiguous(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.size as usize);
        for c in self.chunks() {
            b.extend_from_slice(&c);
        }
        b.freeze()
    }
}

/// A `multipart/form-data` body with one `file` part, the way curl sends it.
pub struct Multipart {
    pub content_type: String,
    pub prefix: Bytes,
    pub suffix: Bytes,
}

const BOUNDARY: &str = "------------------------upload-load-bench-7d2f";

impl Multipart {
    pub fn new(service: &str) -> Self {
        let prefix = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.tgz\"\r\n\
             Content-Type: {}\r\n\r\n",
            content_type(service)
        );
        Multipart {
            content_type: format!("multipart/form-data; boundary={BOUNDARY}"),
            prefix: Bytes::from(prefix),
            suffix: Bytes::from(format!("\r\n--{BOUNDARY}--\r\n")),
        }
    }

    pub fn len(&self, payload: u64) -> u64 {
        self.prefix.len() as u64 + payload + self.suffix.len() as u64
    }
}

/// The payload's own content type, which routes it to `service`.
pub fn content_type(service: &str) -> String {
    format!("application/vnd.redhat.{service}.bench+tgz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_size_exactly() {
        for (size, chunk) in [(10u64, 4u64), (8, 4), (3, 10), (1 << 20, 1000)] {
            let p = PayloadSource::new(size, chunk);
            let total: u64 = p.chunks().map(|c| c.len() as u64).sum();
            assert_eq!(total, size);
            assert!(p.chunks().all(|c| c.len() as u64 <= chunk));
        }
    }
}
