//! The S3 part of the config, checked against S3's own limits.

use std::time::Duration;

use super::{parse_size, Config};

/// S3 allows at most this many parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// S3's part size limits.
const MIN_PART: u64 = 5 << 20;
const MAX_PART: u64 = 5 << 30;

/// The S3 settings, checked.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub quarantine: String,
    pub perm: String,
    pub reject: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub credentials: Option<(String, String)>,
    pub part_size: usize,
    pub max_inflight_parts: usize,
    pub create_buckets: bool,
    pub stale_upload_after: Duration,
    pub multipart_copy_threshold: u64,
    /// Sign request payloads (SigV4): over plain HTTP only, see `upload.rs`.
    pub sign_payloads: bool,
    /// Where this gateway notes its unfinished multipart uploads
    /// (`storage/s3/journal.rs`): `<data>/s3-uploads`.
    pub journal_dir: Option<std::path::PathBuf>,
}

impl S3Options {
    /// Checks the S3 part of the config. `largest_limit` is the largest payload the
    /// gateway accepts: it must fit in 10,000 parts.
    pub fn from_config(c: &Config, largest_limit: u64, data_dir: &std::path::Path) -> Result<Self, String> {
        let buckets = [
            ("S3_QUARANTINE", &c.s3_quarantine),
            ("S3_PERM", &c.s3_perm),
            ("S3_REJECT", &c.s3_reject),
        ];
        for (name, b) in buckets {
            if !is_bucket_name(b) {
                return Err(format!(
                    "{name}: {b:?} is not a bucket name (3-63 of lower-case letters, digits, '.' and '-')"
                ));
            }
        }
        if c.s3_quarantine == c.s3_perm || c.s3_quarantine == c.s3_reject || c.s3_perm == c.s3_reject {
            return Err("S3_QUARANTINE, S3_PERM and S3_REJECT must be three different buckets".into());
        }
        let part_size = parse_size(&c.s3_part_size).map_err(|e| format!("S3_PART_SIZE: {e}"))?;
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err("S3_PART_SIZE: between 5MiB and 5GiB (S3's part limits)".into());
        }
        if largest_limit.div_ceil(part_size) > MAX_PARTS {
            return Err(format!(
                "S3_PART_SIZE: {part_size} bytes is too small for payloads of {largest_limit} bytes \
                 (S3 allows 10000 parts); use at least {} bytes",
                largest_limit.div_ceil(MAX_PARTS)
            ));
        }
        if c.s3_max_inflight_parts == 0 {
            return Err("S3_MAX_INFLIGHT_PARTS: must be at least 1".into());
        }
        if c.s3_stale_upload_secs == 0 {
            return Err("S3_STALE_UPLOAD_SECS: must be at least 1".into());
        }
        let multipart_copy_threshold = parse_size(&c.s3_multipart_copy_threshold)
            .map_err(|e| format!("S3_MULTIPART_COPY_THRESHOLD: {e}"))?;
        if !(MIN_PART..=MAX_PART).contains(&multipart_copy_threshold) {
            return Err("S3_MULTIPART_COPY_THRESHOLD: between 5MiB and 5GiB".into());
        }
        if let Some(url) = &c.s3_endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("S3_ENDPOINT_URL: {url:?} should start with http:// or https://"));
            }
        }
        let credentials = match (&c.s3_access_key_id, &c.s3_secret_access_key) {
            (Some(k), Some(s)) => Some((k.clone(), s.clone())),
            (None, None) => None,
            _ => return Err("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY: set both or neither".into()),
        };
        Ok(S3Options {
            quarantine: c.s3_quarantine.clone(),
            perm: c.s3_perm.clone(),
            reject: c.s3_reject.clone(),
            endpoint_url: c.s3_endpoint_url.clone(),
            region: c.s3_region.clone(),
            credentials,
            part_size: part_size as usize,
            max_inflight_parts: c.s3_max_inflight_parts,
            create_buckets: c.s3_create_buckets,
            stale_upload_after: Duration::from_secs(c.s3_stale_upload_secs),
            multipart_copy_threshold,
            sign_payloads: c.s3_endpoint_url.as_deref().is_some_and(|u| u.starts_with("http://")),
            journal_dir: Some(data_dir.join("s3-uploads")),
        })
    }
}

fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str], largest: u64) -> Result<S3Options, String> {
        let mut v = vec!["gw", "--storage-driver", "s3"];
        v.extend_from_slice(args);
        S3Options::from_config(&Config::from_args(v).unwrap(), largest, std::path::Path::new("/tmp/gw"))
    }

    #[test]
    fn defaults_are_the_original_buckets_and_8_mib_parts() {
        let o = options(&[], 100 << 20).unwrap();
        assert_eq!(o.quarantine, "insights-upload-quarantine");
        assert_eq!((o.part_size, o.max_inflight_parts), (8 << 20, 4));
        assert!(o.create_buckets && o.credentials.is_none() && !o.sign_payloads);
        assert_eq!(o.region, "us-east-1");
        let o = options(&["--s3-create-buckets", "false", "--s3-endpoint-url", "http://127.0.0.1:3900"], 1).unwrap();
        assert!(!o.create_buckets && o.sign_payloads);
    }

    #[test]
    fn bad_settings_say_what_to_fix() {
        let err = |args: &[&str], largest| options(args, largest).unwrap_err();
        assert!(err(&["--s3-part-size", "1MiB"], 1).contains("S3_PART_SIZE"));
        assert!(err(&["--s3-perm", "insights-upload-quarantine"], 1).contains("three different buckets"));
        assert!(err(&["--s3-reject", "Bad_Bucket"], 1).contains("S3_REJECT"));
        assert!(err(&["--s3-max-inflight-parts", "0"], 1).contains("S3_MAX_INFLIGHT_PARTS"));
        assert!(err(&["--s3-access-key-id", "k"], 1).contains("both or neither"));
        assert!(err(&["--s3-endpoint-url", "127.0.0.1:3900"], 1).contains("S3_ENDPOINT_URL"));
        // 100 GiB in 8 MiB parts is 12800 parts: more than S3 allows.
        let e = err(&[], 100 << 30);
        assert!(e.contains("10000 parts") && e.contains("10737419"), "{e}");
        assert!(options(&["--s3-part-size", "16MiB"], 100 << 30).is_ok());
    }
}
