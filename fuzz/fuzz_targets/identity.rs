//! The identity decoder: any header value; a decoded one keeps the raw header and is
//! base64 of a JSON object with an `identity` object.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use upload_gateway::pipeline::identity::decode;

fuzz_target!(|data: &[u8]| {
    // Both raw strings and base64 of arbitrary bytes (which reaches the JSON parser).
    let raw = match std::str::from_utf8(data) {
        Ok(s) if data.first().is_some_and(|b| b % 2 == 0) => s.to_string(),
        _ => base64::engine::general_purpose::STANDARD.encode(data),
    };
    if let Ok(id) = decode(&raw) {
        assert_eq!(id.raw, raw);
        let json = base64::engine::general_purpose::STANDARD.decode(raw.trim()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v["identity"].is_object());
        assert!(id.org_id.as_deref() != Some("") && id.account_number.as_deref() != Some(""));
    }
});
