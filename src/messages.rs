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

/// A validation result read from `platform.upload.validation`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationResult {
    pub request_id: String,
    pub validation: Validation,
    pub reason: Option<String>,
    pub satellite_managed: Option<bool>,
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

/// The largest validation message parsed; larger ones are skipped unread.
pub const MAX_VALIDATION_MESSAGE: usize = 1 << 20;

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
        Ok(ValidationResult {
            request_id: id.to_string(),
            validation,
            reason: obj.get("reason").and_then(Value::as_str).map(str::to_string),
            satellite_managed: obj.get("satellite_managed").and_then(Value::as_bool),
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
