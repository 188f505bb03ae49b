//! RFC 9530 `Repr-Digest` on a request: the whole payload's sha256, declared by the
//! client (the multipart upload, whose body is a form and not the payload; the tus
//! creation). One parser for both.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use crate::error::{Error, Result};

/// Standard base64, padded or not (RFC 8941 byte sequences; tus metadata values).
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The `sha-256` member of the request's `Repr-Digest` (a structured-field dictionary,
/// `sha-256=:<base64>:`, possibly with other algorithms, which are not checked), as
/// lower-case hex; None without the header. A malformed header, or one without a
/// `sha-256` member, is refused (400): a digest the client asked for that the gateway
/// cannot check must not pass silently.
pub(crate) fn repr_digest_sha256(headers: &http::HeaderMap) -> Result<Option<String>> {
    let mut values = Vec::new();
    for v in headers.get_all("repr-digest") {
        values.push(v.to_str().map_err(|_| malformed("it is not visible ASCII"))?);
    }
    if values.is_empty() {
        return Ok(None);
    }
    let mut found: Option<Vec<u8>> = None;
    for member in values.join(",").split(',') {
        let member = member.trim_matches([' ', '\t']);
        let (key, value) = member.split_once('=').ok_or_else(|| malformed("a member is not key=:base64:"))?;
        if !is_key(key) {
            return Err(malformed("a member's algorithm is not a structured-field key"));
        }
        let encoded = value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(|| malformed("a digest is not a byte sequence (:base64:)"))?;
        let digest = BASE64.decode(encoded).map_err(|_| malformed("a digest is not valid base64"))?;
        if key != "sha-256" {
            continue;
        }
        if digest.len() != 32 {
            return Err(malformed("the sha-256 digest is not 32 bytes"));
        }
        if found.as_ref().is_some_and(|f| *f != digest) {
            return Err(malformed("it names two different sha-256 digests"));
        }
        found = Some(digest);
    }
    match found {
        Some(d) => Ok(Some(hex::encode(d))),
        None => Err(Error::bad_request(
            "Repr-Digest has no sha-256 member: the gateway checks sha-256 only (send sha-256=:<base64>:)",
        )),
    }
}

fn malformed(why: &str) -> Error {
    Error::bad_request(format!("malformed Repr-Digest (RFC 9530; send sha-256=:<base64>:): {why}"))
}

/// An RFC 8941 key: a lower-case letter or `*`, then lower-case letters, digits, `_-.*`.
fn is_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0] == b'*')
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b'*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Option<String>> {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("repr-digest", v.parse().unwrap());
        }
        repr_digest_sha256(&h)
    }

    // sha256("hello")
    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_B64: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    #[test]
    fn the_sha256_member_is_taken_as_hex() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[&format!("sha-256=:{HELLO_B64}:")]).unwrap().as_deref(), Some(HELLO));
        let unpadded = HELLO_B64.trim_end_matches('=');
        assert_eq!(parse(&[&format!("sha-256=:{unpadded}:")]).unwrap().as_deref(), Some(HELLO));
        // Other algorithms beside it are not checked; two header lines are one dictionary.
        assert_eq!(parse(&[&format!("sha-512=:AAAA:, sha-256=:{HELLO_B64}:")]).unwrap().as_deref(), Some(HELLO));
        assert_eq!(parse(&["sha-512=:AAAA:", &format!("sha-256=:{HELLO_B64}:")]).unwrap().as_deref(), Some(HELLO));
    }

    #[test]
    fn malformed_or_unusable_headers_are_refused() {
        for bad in [
            "",
            "sha-256",
            &format!("sha-256={HELLO_B64}"),
            &format!("SHA-256=:{HELLO_B64}:"),
            "sha-256=:not base64!:",
            "sha-256=:AAAA:",
            "sha-512=:AAAA:",
            &format!("sha-256=:{HELLO_B64}:;p=1"),
            &format!("sha-256=:{HELLO_B64}:, sha-256=:{}:", "A".repeat(43) + "="),
        ] {
            let e = parse(&[bad]).unwrap_err();
            assert_eq!(e.http_status(), 400, "{bad:?}: {e}");
            assert!(e.to_string().contains("Repr-Digest"), "{bad:?}: {e}");
        }
    }
}
