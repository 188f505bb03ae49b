//! Cutting a payload stream into upload parts.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::{Error, Result};
use crate::domain::Payload;

/// Cuts the payload stream into parts of a fixed size (the last one shorter).
///
/// A part is gathered in memory of its own (an anonymous mapping) that goes back to
/// the system as soon as the part has been sent. From the heap, multi-MiB buffers
/// freed on other threads stay cached by the allocator, and resident memory creeps up
/// by tens of MiB per upload; the mapping keeps it at what is really in flight.
pub(super) struct PartReader {
    pub payload: Payload,
    /// What the last chunk held beyond the previous part.
    pub carry: Option<Bytes>,
    /// The payload itself failed (too large, stalled, short, wrong sha256).
    pub failed: bool,
}

impl PartReader {
    /// The next part: `size` bytes, fewer at the end, empty once the payload has ended.
    pub async fn next_part(&mut self, size: usize) -> Result<Bytes> {
        let mut buf: Option<memmap2::MmapMut> = None;
        let mut len = 0;
        while len < size {
            let chunk = match self.carry.take() {
                Some(c) => c,
                None => match self.payload.next().await {
                    Some(c) => self.check(c)?,
                    None => break,
                },
            };
            if chunk.is_empty() {
                continue;
            }
            if len == 0 && chunk.len() >= size {
                // A chunk as large as a part: no copy.
                let mut chunk = chunk;
                let rest = chunk.split_off(size);
                if !rest.is_empty() {
                    self.carry = Some(rest);
                }
                return Ok(chunk);
            }
            let map = match &mut buf {
                Some(m) => m,
                None => buf.insert(memmap2::MmapMut::map_anon(size).map_err(|e| {
                    Error::Internal(format!("cannot map {size} bytes for an upload part: {e}"))
                })?),
            };
            let n = chunk.len().min(size - len);
            map[len..len + n].copy_from_slice(&chunk[..n]);
            len += n;
            if n < chunk.len() {
                self.carry = Some(chunk.slice(n..));
            }
        }
        Ok(match buf {
            Some(map) => Bytes::from_owner(map).slice(..len),
            None => Bytes::new(),
        })
    }

    /// Whether the payload has ended (reads ahead one chunk when it must).
    pub async fn at_end(&mut self) -> Result<bool> {
        while self.carry.is_none() {
            match self.payload.next().await {
                None => return Ok(true),
                Some(c) => {
                    let c = self.check(c)?;
                    if !c.is_empty() {
                        self.carry = Some(c);
                    }
                }
            }
        }
        Ok(false)
    }

    fn check(&mut self, chunk: Result<Bytes>) -> Result<Bytes> {
        self.failed |= chunk.is_err();
        chunk
    }
}
