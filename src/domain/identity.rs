//! The `x-rh-identity` header: base64 of a JSON identity, trusted as the API gateway
//! in front has authenticated it; refused when malformed.

use base64::Engine;
use serde::Deserialize;

use crate::error::Error;

/// The largest identity header accepted (base64 characters).
pub const MAX_IDENTITY_LEN: usize = 16 * 1024;

/// Who uploaded: the parts of the identity the gateway uses, and the raw header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub account_number: Option<String>,
    pub org_id: Option<String>,
    /// The header exactly as sent; travels on as `b64_identity`.
    pub raw: String,
}

#[derive(Deserialize)]
struct Envelope {
    identity: Inner,
}

#[derive(Deserialize)]
struct Inner {
    #[serde(default)]
    account_number: Option<serde_json::Value>,
    #[serde(default)]
    org_id: Option<serde_json::Value>,
    #[serde(default)]
    internal: Option<Internal>,
}

#[derive(Deserialize)]
struct Internal {
    #[serde(default)]
    org_id: Option<serde_json::Value>,
}

/// Decodes and checks an `x-rh-identity` value.
pub fn decode(raw: &str) -> Result<Identity, Error> {
    if raw.len() > MAX_IDENTITY_LEN {
        return Err(Error::bad_request(format!(
            "x-rh-identity is {} bytes; it may be at most {MAX_IDENTITY_LEN}",
            raw.len()
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|e| Error::bad_request(format!("x-rh-identity is not valid base64: {e}")))?;
    // serde skips ignored fields without checking their UTF-8: check it all first
    // (JSON is UTF-8; the header travels on to consumers that decode it whole).
    let json = std::str::from_utf8(&bytes)
        .map_err(|e| Error::bad_request(format!("x-rh-identity is not UTF-8 JSON: {e}")))?;
    let not_an_identity = |why: String| {
        Error::bad_request(format!(
            "x-rh-identity is not a JSON object with an \"identity\" object: {why}"
        ))
    };
    // The shape first: serde would also read a struct from an array (`[[]]`).
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| not_an_identity(e.to_string()))?;
    let internal = &value["identity"]["internal"];
    if !value["identity"].is_object() || !(internal.is_null() || internal.is_object()) {
        return Err(not_an_identity("identity (and identity.internal) must be objects".into()));
    }
    let env: Envelope = serde_json::from_value(value).map_err(|e| not_an_identity(e.to_string()))?;
    let account_number = text(env.identity.account_number, "identity.account_number")?;
    let org_id = match text(env.identity.org_id, "identity.org_id")? {
        Some(o) => Some(o),
        None => text(
            env.identity.internal.and_then(|i| i.org_id),
            "identity.internal.org_id",
        )?,
    };
    Ok(Identity {
        account_number,
        org_id,
        raw: raw.to_string(),
    })
}

/// A string field, or a number given where a string was meant; empty means absent.
fn text(v: Option<serde_json::Value>, name: &str) -> Result<Option<String>, Error> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Error::bad_request(format!(
            "x-rh-identity: {name} should be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_account_and_org() {
        let raw = b64(r#"{"identity":{"account_number":"12345","org_id":"678","type":"User"},"entitlements":{}}"#);
        let id = decode(&raw).unwrap();
        assert_eq!(id.account_number.as_deref(), Some("12345"));
        assert_eq!(id.org_id.as_deref(), Some("678"));
        assert_eq!(id.raw, raw);
    }

    #[test]
    fn org_id_falls_back_to_internal() {
        let id = decode(&b64(r#"{"identity":{"internal":{"org_id":"42"}}}"#)).unwrap();
        assert_eq!(id.org_id.as_deref(), Some("42"));
        assert_eq!(id.account_number, None);
    }

    #[test]
    fn malformed_is_a_bad_request() {
        for raw in [
            "not base64!".to_string(),
            b64("not json"),
            b64(r#"{"no_identity":1}"#),
            b64(r#"{"identity":{"org_id":["x"]}}"#),
            "A".repeat(MAX_IDENTITY_LEN + 1),
            // Found by the identity fuzz target: invalid UTF-8 inside a field the
            // decoder ignores was accepted.
            base64::engine::general_purpose::STANDARD
                .encode(b"{\"identity\":{\"org_id\":\"1\",\"x\":{\"\xff\xff\":1}}}"),
            // Found by the identity fuzz target: serde read the envelope from arrays.
            b64("[[]]"),
            b64(r#"[{"org_id":"5"}]"#),
            b64(r#"{"identity":{"internal":["5"]}}"#),
        ] {
            assert!(matches!(decode(&raw), Err(Error::BadRequest(_))), "{raw:.40}");
        }
    }
}
