//! The validation-message parser: any bytes; a parsed message names a non-empty id
//! it carries as request_id or payload_id, and a known verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upload_gateway::messages::{Validation, ValidationResult};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ValidationResult::parse(data) {
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert!(!r.request_id.is_empty());
        assert!(v["request_id"].as_str() == Some(&r.request_id) || v["payload_id"].as_str() == Some(&r.request_id));
        let said = v["validation"].as_str().unwrap();
        assert_eq!(Validation::parse(said), Some(r.validation));
    }
});
