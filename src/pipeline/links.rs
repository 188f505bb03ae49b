//! Download URLs. S3 presigns its own; for the embedded storage the gateway signs
//! URLs to itself (`/download/<bucket>/<key>?expires=..&signature=..`, HMAC-SHA256)
//! and checks them when they come back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Pipeline;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::storage::{Bucket, ByteStream, ObjectMeta};

pub struct Links {
    key: Vec<u8>,
    base: String,
    ttl: Duration,
}

impl Links {
    /// `base` is the gateway's public URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(key: Vec<u8>, base: &str, ttl: Duration) -> Self {
        Links {
            key,
            base: base.trim_end_matches('/').to_string(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, bucket: Bucket, key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{}\n{key}\n{expires}", bucket.as_str()).as_bytes());
        mac
    }

    fn signature(&self, bucket: Bucket, key: &str, expires: u64) -> String {
        hex::encode(self.mac(bucket, key, expires).finalize().into_bytes())
    }

    /// A URL to the gateway itself, valid for the configured time.
    pub fn sign(&self, bucket: Bucket, key: &str) -> String {
        let expires = now() + self.ttl.as_secs();
        format!(
            "{}/download/{}/{key}?expires={expires}&signature={}",
            self.base,
            bucket.as_str(),
            self.signature(bucket, key, expires)
        )
    }

    /// Checks a signed URL's parts; 403 when tampered with or expired.
    pub fn verify(&self, bucket: Bucket, key: &str, expires: u64, signature: &str) -> Result<()> {
        let given = hex::decode(signature).map_err(|_| Error::Forbidden("bad signature".into()))?;
        if self.mac(bucket, key, expires).verify_slice(&given).is_err() {
            return Err(Error::Forbidden("bad signature".into()));
        }
        if expires < now() {
            return Err(Error::Forbidden("this URL has expired".into()));
        }
        Ok(())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Pipeline {
    /// A URL from which a stored payload can be downloaded.
    pub(crate) async fn url(&self, bucket: Bucket, key: &str) -> Result<String> {
        let links = &self.inner.links;
        match self.inner.storage.presign(bucket, key, links.ttl()).await? {
            Some(url) => Ok(url),
            None => Ok(links.sign(bucket, key)),
        }
    }

    /// Reads a payload back from whichever bucket holds it, for a validator of its
    /// service.
    pub async fn download(&self, caller: &Caller, request_id: &str) -> Result<(Bucket, ObjectMeta, ByteStream)> {
        caller.validator()?;
        let not_found = || Error::NotFound(format!("no stored payload has request id {request_id}"));
        if !super::request_id::is_valid(request_id) {
            return Err(not_found());
        }
        for b in Bucket::ALL {
            if let Some((meta, bytes)) = self.inner.storage.get(b, request_id).await? {
                caller.may_validate(&meta.service)?;
                return Ok((b, meta, bytes));
            }
        }
        Err(not_found())
    }

    /// Serves a URL the gateway signed: checks the signature, then streams the bytes.
    pub async fn open_signed(
        &self,
        bucket: &str,
        key: &str,
        expires: u64,
        signature: &str,
    ) -> Result<(ObjectMeta, ByteStream)> {
        let bucket = Bucket::parse(bucket)
            .ok_or_else(|| Error::NotFound(format!("no bucket named {bucket:?}")))?;
        if !super::request_id::is_valid(key) {
            return Err(Error::NotFound(format!("no stored payload is named {key:?}")));
        }
        self.inner.links.verify(bucket, key, expires, signature)?;
        self.inner
            .storage
            .get(bucket, key)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{key} is no longer in {}", bucket.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_verify_and_tampering_fails() {
        let l = Links::new(b"k".to_vec(), "http://h:1/", Duration::from_secs(60));
        let url = l.sign(Bucket::Perm, "abc");
        let q = url.split_once('?').unwrap().1;
        let expires: u64 = q.split('&').next().unwrap()["expires=".len()..].parse().unwrap();
        let sig = q.split("signature=").nth(1).unwrap();
        assert!(url.starts_with("http://h:1/download/perm/abc?"));
        l.verify(Bucket::Perm, "abc", expires, sig).unwrap();
        assert!(l.verify(Bucket::Perm, "abd", expires, sig).is_err());
        assert!(l.verify(Bucket::Reject, "abc", expires, sig).is_err());
        assert!(l.verify(Bucket::Perm, "abc", expires + 1, sig).is_err());
        let old = 1_000;
        let old_sig = l.signature(Bucket::Perm, "abc", old);
        assert!(matches!(l.verify(Bucket::Perm, "abc", old, &old_sig), Err(Error::Forbidden(m)) if m.contains("expired")));
    }
}
