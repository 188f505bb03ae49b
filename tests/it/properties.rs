//! Property tests (issue #7, item 4) for the parsers that face untrusted bytes: the
//! content-type router, the identity decoder, the multipart front end (through the
//! real REST handler), metadata parsing and the validation-message parser. Each
//! property says what any input may produce: never a panic, never a 5xx, and
//! accepted values that satisfy the rules. Bounded: a few hundred cases each.
//! The coverage-guided fuzz targets for the same parsers are in `fuzz/`.


use std::time::Duration;

use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use upload_gateway::messages::{Validation, ValidationResult};
use upload_gateway::pipeline::{content_type, identity, RequestId};

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- content type ------------------------------------------------------------------

fn content_types() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "application/vnd\\.redhat\\.[a-zA-Z0-9.+-]{0,12}\\.[a-z0-9.;= +-]{0,16}",
        "(application/vnd\\.redhat\\.)?[a-z0-9-]{1,8}\\.[a-z0-9-]{1,8}[^a-z0-9-]?.{0,8}",
        Just("application/gzip; charset=binary".to_string()),
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_routed_content_type_names_a_service_and_category_by_the_rule(ct in content_types()) {
        if let Ok(r) = content_type::route(&ct) {
            prop_assert!(is_name(&r.service), "service {:?}", r.service);
            prop_assert!(is_name(&r.category), "category {:?}", r.category);
            let vendor = format!("application/vnd.redhat.{}.{}", r.service, r.category);
            let legacy = r.service == "advisor" && r.category == "upload" && ct.contains("gzip");
            prop_assert!(ct.starts_with(&vendor) || legacy, "{ct:?} routed to {r:?}");
            // The names are the longest runs the rule allows.
            let next = ct.as_bytes().get(vendor.len()).copied();
            prop_assert!(legacy || !next.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }
    }

    #[test]
    fn a_well_formed_vendor_type_routes_to_its_names(
        svc in "[a-z0-9-]{1,20}", cat in "[a-z0-9-]{1,20}", rest in "([^a-z0-9-].{0,10})?"
    ) {
        let r = content_type::route(&format!("application/vnd.redhat.{svc}.{cat}{rest}")).unwrap();
        prop_assert_eq!((r.service, r.category), (svc, cat));
    }
}

// ---- identity ------------------------------------------------------------------------

fn identity_json() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("[\"x\"]".to_string()),
        Just("{}".to_string()),
    ];
    (value.clone(), value.clone(), value, any::<bool>()).prop_map(|(acct, org, internal, wrap)| {
        let inner = format!(r#"{{"account_number":{acct},"org_id":{org},"internal":{{"org_id":{internal}}}}}"#);
        if wrap { format!(r#"{{"identity":{inner},"entitlements":{{}}}}"#) } else { inner }
    })
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn identity_decoding_never_panics_and_keeps_the_raw_header(raw in prop_oneof![
        any::<String>(),
        identity_json().prop_map(|j| b64(j.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| b64(&b)),
    ]) {
        if let Ok(id) = identity::decode(&raw) {
            prop_assert_eq!(&id.raw, &raw);
            let json: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD.decode(raw.trim()).unwrap()
            ).unwrap();
            prop_assert!(json["identity"].is_object());
            for v in [&id.account_number, &id.org_id].into_iter().flatten() {
                prop_assert!(!v.is_empty());
            }
        }
    }

    #[test]
    fn an_identity_gives_back_its_account_and_org(acct in "[ -~]{1,20}", org in "[ -~]{1,20}", internal in any::<bool>()) {
        let (a, o) = (serde_json::to_string(&acct).unwrap(), serde_json::to_string(&org).unwrap());
        let json = if internal {
            format!(r#"{{"identity":{{"account_number":{a},"internal":{{"org_id":{o}}}}}}}"#)
        } else {
            format!(r#"{{"identity":{{"account_number":{a},"org_id":{o}}}}}"#)
        };
        let id = identity::decode(&b64(json.as_bytes())).unwrap();
        prop_assert_eq!(id.account_number, Some(acct));
        prop_assert_eq!(id.org_id, Some(org));
    }
}

// ---- request ids ----------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn an_accepted_request_id_is_a_safe_file_name(s in prop_oneof![any::<String>(), "[A-Za-z0-9._/%-]{0,70}"]) {
        if let Ok(id) = RequestId::parse(&s) {
            let id = id.as_str();
            prop_assert!((1..=64).contains(&id.len()));
            prop_assert!(!id.starts_with('.') && !id.contains('/') && !id.contains('\0') && !id.contains('%'));
        }
    }
}

// ---- validation messages ---------------------------------------------------------------

fn validation_messages() -> impl Strategy<Value = Vec<u8>> {
    let id = prop_oneof![Just("null".to_string()), Just("7".to_string()), any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap())];
    let verdict = prop_oneof![
        "(success|failure|handoff|SUCCESS|Failure|hAnDoFf|maybe|)".prop_map(|s| format!("\"{s}\"")),
        Just("1".to_string()),
        Just("null".to_string()),
    ];
    let structured = (id.clone(), id, verdict, any::<u8>()).prop_map(|(rid, pid, v, keys)| {
        let mut fields = Vec::new();
        if keys & 1 != 0 { fields.push(format!("\"request_id\":{rid}")); }
        if keys & 2 != 0 { fields.push(format!("\"payload_id\":{pid}")); }
        if keys & 4 != 0 { fields.push(format!("\"validation\":{v}")); }
        if keys & 8 != 0 { fields.push("\"reason\":\"r\",\"satellite_managed\":true".into()); }
        format!("{{{}}}", fields.join(",")).into_bytes()
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..300), structured]
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_parsed_validation_names_its_id_and_a_known_verdict(msg in validation_messages()) {
        if let Ok(r) = ValidationResult::parse(&msg) {
            let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
            prop_assert!(!r.request_id.is_empty());
            let named = [&v["request_id"], &v["payload_id"]].iter().any(|x| x.as_str() == Some(&r.request_id));
            prop_assert!(named, "{:?} names neither", r.request_id);
            let said = v["validation"].as_str().unwrap().to_ascii_lowercase();
            prop_assert_eq!(Validation::parse(&said), Some(r.validation));
        }
    }
}

// ---- through a running gateway: metadata and the multipart front end -------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn metadata_is_an_object_within_its_limit_or_refused() {
    let rt = runtime();
    let t = rt.block_on(crate::common::spawn_app(&["--metadata-limit", "2048"]));
    let pipeline = t.app.pipeline();
    let inputs = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3000),
        (0usize..300).prop_map(|d| nested(d).into_bytes()),
        (0usize..300).prop_map(|d| format!("{{\"a\":{}}}", nested(d)).into_bytes()),
        prop::collection::btree_map("[a-z]{1,8}", any::<String>(), 0..40)
            .prop_map(|m| serde_json::to_vec(&m).unwrap()),
    ];
    TestRunner::new(config(1000))
        .run(&inputs, |raw| {
            match pipeline.parse_metadata(&raw) {
                Ok(v) => {
                    prop_assert!(raw.len() <= 2048);
                    prop_assert!(v.is_object());
                }
                Err(e) => prop_assert_eq!(e.http_status(), 400),
            }
            Ok(())
        })
        .unwrap();
}

const B: &str = "prop-b0undary";
const ADVISOR: &str = "application/vnd.redhat.advisor.prop+tgz";
const LIMIT: usize = 4096;

#[derive(Debug, Clone)]
struct FormPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Mutation {
    None,
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Flip(prop::sample::Index, u8),
}

fn form_parts() -> impl Strategy<Value = Vec<FormPart>> {
    let part = (
        prop_oneof!["file", "upload", "metadata", "other", ".{0,8}"],
        prop::option::of("[ -~]{0,12}"),
        prop::option::of(prop_oneof![Just(ADVISOR.to_string()), Just("application/gzip".to_string()), ".{0,30}"]),
        prop_oneof![prop::collection::vec(any::<u8>(), 0..LIMIT + 100), Just(b"{\"k\":1}".to_vec())],
    )
        .prop_map(|(name, file_name, content_type, data)| FormPart { name, file_name, content_type, data });
    prop::collection::vec(part, 0..5)
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::None),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..40)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
    ]
}

fn encode(parts: &[FormPart]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        let mut head = format!("--{B}\r\nContent-Disposition: form-data; name=\"{}\"", p.name);
        if let Some(f) = &p.file_name {
            head.push_str(&format!("; filename=\"{f}\""));
        }
        if let Some(ct) = &p.content_type {
            head.push_str(&format!("\r\nContent-Type: {ct}"));
        }
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(&p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{B}--\r\n").as_bytes());
    body
}

/// A part whose header lines are well-formed: printable ASCII, no quotes to break
/// the quoted name and file name.
fn well_formed(p: &FormPart) -> bool {
    let ok = |s: &str| s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    ok(&p.name) && p.file_name.as_deref().is_none_or(ok) && p.content_type.as_deref().is_none_or(ok)
}

fn mutate(mut body: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::None => {}
        Mutation::Truncate(i) => body.truncate(i.index(body.len() + 1)),
        Mutation::Insert(i, bytes) => {
            let at = i.index(body.len() + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Flip(i, b) if !body.is_empty() => {
            let at = i.index(body.len());
            body[at] ^= b | 1;
        }
        Mutation::Flip(..) => {}
    }
    body
}

/// Posts a body as a multipart form; returns the status and the body of the answer.
async fn post(t: &crate::common::TestApp, body: Vec<u8>) -> (u16, String) {
    let resp = t
        .http
        .post(t.url("/api/ingress/v1/upload"))
        .header("content-type", format!("multipart/form-data; boundary={B}"))
        .body(body)
        .send();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("answered").expect("sent");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[test]
fn any_multipart_body_gets_a_precise_answer_and_good_forms_are_stored() {
    let rt = runtime();
    let limit = LIMIT.to_string();
    let t = rt.block_on(crate::common::spawn_app(&["--max-length", &limit]));
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let inputs = prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..2000).prop_map(|b| (Vec::new(), Mutation::None, Some(b))),
        4 => (form_parts(), mutation()).prop_map(|(p, m)| (p, m, None)),
    ];
    TestRunner::new(config(1000))
        .run(&inputs, |(parts, m, raw)| {
            let body = raw.unwrap_or_else(|| mutate(encode(&parts), &m));
            let (status, text) = rt.block_on(post(&t, body));
            prop_assert!([202, 400, 413, 415].contains(&status), "{status}: {text}");
            if status == 202 {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            // Oracles for untouched forms.
            let untouched = matches!(m, Mutation::None) && !parts.is_empty() && parts.iter().all(well_formed);
            let file = parts.iter().find(|p| p.name == "upload").or_else(|| parts.iter().find(|p| p.name == "file"));
            let plain = parts.iter().all(|p| p.name == "other");
            if untouched && plain {
                prop_assert_eq!(status, 415, "{}", text);
            }
            let simple = parts.len() == 1 && parts[0].content_type.as_deref() == Some(ADVISOR);
            if untouched && simple && file.is_some() {
                let want = if parts[0].data.len() > LIMIT { 413 } else { 202 };
                prop_assert_eq!(status, want, "{}", text);
                if status == 202 {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let stored = crate::common::local_bytes(t.data.path(), "quarantine", v["request_id"].as_str().unwrap());
                    prop_assert_eq!(stored.unwrap(), parts[0].data.clone());
                }
            }
            Ok(())
        })
        .unwrap();
    // What was refused left nothing behind (removal runs in the background).
    let want = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while crate::common::list_bucket(t.data.path(), "quarantine").len() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(crate::common::list_bucket(t.data.path(), "quarantine").len(), want);
    assert!(crate::common::list_bucket(t.data.path(), ".tmp").is_empty());
    eprintln!("{want} of 1000 generated forms were accepted");
}
