//! The content-type router: any string; a routed one names a service and a category
//! of [a-z0-9-]+ that the string starts with (or is a legacy gzip type).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upload_gateway::pipeline::content_type::route;

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fuzz_target!(|ct: &str| {
    if let Ok(r) = route(ct) {
        assert!(is_name(&r.service) && is_name(&r.category), "{ct:?} -> {r:?}");
        let vendor = format!("application/vnd.redhat.{}.{}", r.service, r.category);
        assert!(ct.starts_with(&vendor) || (r.service == "advisor" && r.category == "upload" && ct.contains("gzip")));
    }
});
