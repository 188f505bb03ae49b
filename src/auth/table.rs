//! The credentials file: one credential a line, `name credential services`.
//!
//! ```text
//! # name          credential                     services
//! advisor-prod    sha256:<64 hex of the token>   advisor
//! operator        sha256:<64 hex>                *
//! compliance-mtls cert:compliance-validator.internal compliance,advisor
//! ```
//! `sha256:` lines hold the hash of a bearer token (never the token itself:
//! `upload-gateway token` makes one); `cert:` lines name a client certificate by a DNS
//! name in its subjectAltName (or its subject CN). Blank lines and `#` comments are
//! skipped.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Services, Validator};

#[derive(Debug, Clone, Default)]
pub struct Table {
    tokens: Vec<(Validator, [u8; 32])>,
    certs: Vec<(Validator, String)>,
}

impl Table {
    /// One token, allowed every service (the embedded default's).
    pub fn single_token(name: &str, token: &str) -> Table {
        let v = Validator { name: name.into(), services: Services::All };
        Table { tokens: vec![(v, Sha256::digest(token.as_bytes()).into())], certs: Vec::new() }
    }

    /// Parses the file's text; the error names the line and what to fix.
    pub fn parse(text: &str) -> Result<Table, String> {
        let mut table = Table::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |why: &str| format!("line {}: {why}", n + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, credential, services] = fields[..] else {
                return Err(at("expected three fields: name, sha256:<hash> or cert:<name>, services"));
            };
            let services = parse_services(services).map_err(|e| at(&e))?;
            let validator = Validator { name: name.to_string(), services };
            if let Some(hash) = credential.strip_prefix("sha256:") {
                let bytes = hex::decode(hash)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| at("sha256: must be followed by 64 hex characters (the token's hash)"))?;
                table.tokens.push((validator, bytes));
            } else if let Some(cert) = credential.strip_prefix("cert:").filter(|c| !c.is_empty()) {
                table.certs.push((validator, cert.to_ascii_lowercase()));
            } else {
                return Err(at("the credential must be sha256:<64 hex> or cert:<DNS name>"));
            }
        }
        Ok(table)
    }

    /// The validator whose token hashes to `hash`. Every entry is compared, each in
    /// constant time, so the answer's timing says nothing about which bytes matched.
    pub fn by_token(&self, hash: &[u8; 32]) -> Option<Validator> {
        let mut found = None;
        for (v, h) in &self.tokens {
            let diff = h.iter().zip(hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(v.clone());
            }
        }
        found
    }

    /// The validator a verified client certificate with these names maps to.
    pub fn by_cert(&self, names: &[String]) -> Option<Validator> {
        self.certs
            .iter()
            .find(|(_, name)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|(v, _)| v.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.certs.is_empty()
    }
}

fn parse_services(s: &str) -> Result<Services, String> {
    if s == "*" {
        return Ok(Services::All);
    }
    let list: Vec<String> = s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if list.is_empty() || list.iter().any(|s| !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')) {
        return Err(format!("services {s:?}: a comma-separated list of service names, or *"));
    }
    Ok(Services::Only(list))
}

/// A new random bearer token (256 bits, URL-safe).
pub fn make_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("ugw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The hex sha256 of a token, as the credentials file holds it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_say_what_to_fix() {
        let err = |t: &str| Table::parse(t).unwrap_err();
        assert!(err("a sha256:abc advisor").contains("line 1: sha256: must be followed by 64 hex"));
        assert!(err("\n\na b").contains("line 3: expected three fields"));
        assert!(err(&format!("a sha256:{} Advisor!", "0".repeat(64))).contains("services"));
        assert!(err("a token:xyz advisor").contains("sha256:<64 hex> or cert:<DNS name>"));
        let t = Table::parse(&format!("# c\n\na sha256:{} *  # trailing\n", "ab".repeat(32))).unwrap();
        assert!(!t.is_empty());
        assert_eq!(t.by_token(&[0xab; 32]).unwrap().services, Services::All);
        assert!(t.by_token(&[0xac; 32]).is_none());
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (make_token(), make_token());
        assert_ne!(a, b);
        assert!(a.starts_with("ugw_") && a.len() == 47, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
    }
}
