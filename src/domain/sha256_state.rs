//! A SHA-256 whose state can be stored and picked up again: a resumable upload's bytes
//! arrive over many requests, on any replica, and its hash must continue where the
//! last committed byte left it. The state is the eight words, the bytes compressed so
//! far (a multiple of 64) and the less than 64 bytes after them; `sha2::compress256`
//! does the work, so the speed is the `sha2` crate's.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes already compressed into `h` (a multiple of 64).
    compressed: u64,
    /// The bytes after them, fewer than 64.
    rest: Vec<u8>,
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State { h: IV, compressed: 0, rest: Vec::with_capacity(64) }
    }
}

impl Sha256State {
    /// The number of bytes hashed.
    pub fn len(&self) -> u64 {
        self.compressed + self.rest.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.rest.is_empty() {
            let take = (64 - self.rest.len()).min(data.len());
            self.rest.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.rest.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.rest);
            self.compress(&block);
            self.rest = Vec::with_capacity(64);
        }
        let whole = data.len() / 64 * 64;
        if whole > 0 {
            self.compress(&data[..whole]);
        }
        self.rest.extend_from_slice(&data[whole..]);
    }

    fn compress(&mut self, blocks: &[u8]) {
        debug_assert_eq!(blocks.len() % 64, 0);
        let blocks: Vec<GenericArray<u8, _>> =
            blocks.chunks_exact(64).map(|b| *GenericArray::from_slice(b)).collect();
        sha2::compress256(&mut self.h, &blocks);
        self.compressed += 64 * blocks.len() as u64;
    }

    /// The digest of every byte so far (the state itself is left as it is).
    pub fn digest(&self) -> [u8; 32] {
        let mut s = self.clone();
        let bits = s.len().wrapping_mul(8);
        let mut pad = vec![0x80u8];
        let used = (s.rest.len() + 1) % 64;
        let zeros = if used <= 56 { 56 - used } else { 120 - used };
        pad.resize(1 + zeros, 0);
        pad.extend_from_slice(&bits.to_be_bytes());
        let mut tail = std::mem::take(&mut s.rest);
        tail.extend_from_slice(&pad);
        s.compress(&tail);
        let mut out = [0u8; 32];
        for (i, w) in s.h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    pub fn hex(&self) -> String {
        hex::encode(self.digest())
    }
}

/// Stored as `{"h": hex of the words, "n": bytes compressed, "rest": base64}`.
#[derive(Serialize, Deserialize)]
struct Stored {
    h: String,
    n: u64,
    rest: String,
}

impl Serialize for Sha256State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut h = [0u8; 32];
        for (i, w) in self.h.iter().enumerate() {
            h[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Stored {
            h: hex::encode(h),
            n: self.compressed,
            rest: base64::engine::general_purpose::STANDARD.encode(&self.rest),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sha256State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = Stored::deserialize(d)?;
        let bytes = hex::decode(&s.h).map_err(D::Error::custom)?;
        let rest = base64::engine::general_purpose::STANDARD.decode(&s.rest).map_err(D::Error::custom)?;
        if bytes.len() != 32 || rest.len() >= 64 || s.n % 64 != 0 {
            return Err(D::Error::custom("not a sha256 state"));
        }
        let mut h = [0u32; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        }
        Ok(Sha256State { h, compressed: s.n, rest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn equals_sha256_for_every_split_and_survives_a_round_trip_through_json() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0usize, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000] {
            for cut in [0, 1.min(len), len / 3, len / 2, len.saturating_sub(1), len] {
                let mut s = Sha256State::default();
                s.update(&data[..cut]);
                let json = serde_json::to_string(&s).unwrap();
                let mut s: Sha256State = serde_json::from_str(&json).unwrap();
                for piece in data[cut..len].chunks(17) {
                    s.update(piece);
                }
                assert_eq!(s.len(), len as u64);
                assert_eq!(s.hex(), hex::encode(Sha256::digest(&data[..len])), "len {len} cut {cut}");
            }
        }
    }
}
