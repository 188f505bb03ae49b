//! The contract's JSON messages (§4), field for field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a service's validator receives on `platform.upload.<service>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announce {
    pub account: Option<String>,
    pub rh_account: Option<String>,
    pub org_id: Option<String>,
    pub principal: Option<String>,
    pub request_id: String,
    pub payload_id: String,
    pub size: u64,
    pub service: String,
    pub category: String,
    pub content_type: String,
    pub b64_identity: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Value>,
    pub url: String,
    pub timestamp: String,
    pub sha256: String,
}

/// What every platform consumer receives on `platform.upload.available`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Available {
    pub id: String,
    pub url: String,
    pub service: String,
    pub category: String,
    pub request_id: String,
    pub payload_id: String,
    pub account: Option<String>,
    pub rh_account: Option<String>,
    pub org_id: Option<String>,
    pub principal: Option<String>,
    pub rh_principal: Option<String>,
    pub b64_identity: String,
    pub satellite_managed: Option<bool>,
    pub size: u64,
    pub sha256: String,
    pub timestamp: String,
}

/// One milestone on `platform.payload-status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadStatus {
    pub service: String,
    pub status: String,
    pub status_msg: String,
    pub account: Option<String>,
    pub org_id: Option<String>,
    pub request_id: String,
    pub payload_id: String,
    pub date: String,
}

/// A validator's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    Success,
    Failure,
    Handoff,
}

impl Validation {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "success" => Some(Validation::Success),
            "failure" => Some(Validation::Failure),
            "handoff" => Some(Validation::Handoff),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Validation::Success => "success",
            Validation::Failure => "failure",
            Validation::Handoff => "handoff",
        }
    }
}

/// A validation result read from `platform.upload.validation` (or sent over gRPC),
/// checked: every field of the message that the gateway reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationResult {
    pub request_id: String,
    pub validation: Validation,
    pub reason: Option<String>,
    /// Echoed as the available message's `satellite_managed`.
    pub satellite_managed: Option<bool>,
    /// The platform's id for what the payload describes (the old service echoed it as
    /// the available message's `id`); the request id when absent.
    pub id: Option<String>,
    /// The announce fields the validator echoed back.
    pub echo: Echoed,
}

/// What a verdict carries besides its id and validation word: the rest of
/// [`ValidationResult`], as a gRPC validator sends it field by field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerdictDetails {
    pub reason: Option<String>,
    pub satellite_managed: Option<bool>,
    pub id: Option<String>,
    pub echo: Echoed,
}

/// Announce fields a validator echoes back. The gateway's own record of a payload wins;
/// these fill in only what it lacks: a payload the replaced services stored, without
/// the gateway's record, is known by its key, size and S3 user metadata alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echoed {
    pub service: Option<String>,
    pub category: Option<String>,
    /// `account`, else `rh_account`.
    pub account: Option<String>,
    /// `org_id`, else `principal`.
    pub org_id: Option<String>,
    pub b64_identity: Option<String>,
}

/// Why a validation message was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValidation {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no request_id or payload_id string")]
    NoId,
    #[error("validation is missing or not a string")]
    NotAString,
    #[error("unknown validation value {0:?} (expected success, failure or handoff)")]
    Unknown(String),
}

/// The largest validation message parsed; larger ones are skipped unread. The same as
/// a gRPC verdict may be (the gRPC service's message limit), so that a verdict with a
/// long `reason` (cut in its status message) applies whichever way it comes.
pub const MAX_VALIDATION_MESSAGE: usize = 4 << 20;

impl ValidationResult {
    pub fn parse(bytes: &[u8]) -> Result<Self, BadValidation> {
        if bytes.len() > MAX_VALIDATION_MESSAGE {
            return Err(BadValidation::NotJson(format!(
                "{} bytes is over the {MAX_VALIDATION_MESSAGE} byte limit",
                bytes.len()
            )));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| BadValidation::NotJson(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| BadValidation::NotJson("a JSON value that is not an object".into()))?;
        let id = ["request_id", "payload_id"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
            .ok_or(BadValidation::NoId)?;
        let validation = obj
            .get("validation")
            .and_then(Value::as_str)
            .ok_or(BadValidation::NotAString)?;
        let validation = Validation::parse(validation)
            .ok_or_else(|| BadValidation::Unknown(validation.chars().take(64).collect()))?;
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
                .map(str::to_string)
        };
        Ok(ValidationResult {
            request_id: id.to_string(),
            validation,
            reason: text(&["reason"]),
            satellite_managed: obj.get("satellite_managed").and_then(Value::as_bool),
            id: text(&["id"]),
            echo: Echoed {
                service: text(&["service"]),
                category: text(&["category"]),
                account: text(&["account", "rh_account"]),
                org_id: text(&["org_id", "principal"]),
                b64_identity: text(&["b64_identity"]),
            },
        })
    }
}

/// Now, RFC 3339 UTC, as every message's timestamp.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_results_parse_case_insensitively() {
        let r = ValidationResult::parse(br#"{"payload_id":"abc","validation":"SUCCESS","reason":"ok"}"#)
            .unwrap();
        assert_eq!(r.request_id, "abc");
        assert_eq!(r.validation, Validation::Success);
        assert_eq!(r.reason.as_deref(), Some("ok"));
    }

    #[test]
    fn echoed_fields_are_read_with_their_aliases() {
        let r = ValidationResult::parse(
            br#"{"payload_id":"abc","validation":"failure","id":"host-1","satellite_managed":true,
                "service":"advisor","category":"collection","rh_account":"a1","principal":"o1",
                "b64_identity":"e30=","size":3,"url":"http://x"}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("host-1"));
        assert_eq!(r.satellite_managed, Some(true));
        let want = Echoed {
            service: Some("advisor".into()),
            category: Some("collection".into()),
            account: Some("a1".into()),
            org_id: Some("o1".into()),
            b64_identity: Some("e30=".into()),
        };
        assert_eq!(r.echo, want);
    }

    #[test]
    fn bad_validation_messages_say_why() {
        let cases: [(&[u8], BadValidation); 5] = [
            (b"{not json", BadValidation::NotJson(String::new())),
            (br#"[1,2]"#, BadValidation::NotJson(String::new())),
            (br#"{"validation":"success"}"#, BadValidation::NoId),
            (br#"{"request_id":"a","validation":1}"#, BadValidation::NotAString),
            (br#"{"request_id":"a","validation":"maybe"}"#, BadValidation::Unknown("maybe".into())),
        ];
        for (msg, want) in cases {
            let got = ValidationResult::parse(msg).unwrap_err();
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want));
        }
    }
}
