//! Observability (issue #16) as an operator sees it: `/metrics` in OpenMetrics,
//! checked by the Prometheus project's own parser (PyPI prometheus-client, via
//! tests/support/parse_metrics.py), with histogram counts that match what was done;
//! OpenTelemetry traces exported over OTLP to a real Jaeger (scripts/jaeger.sh),
//! queried back from its HTTP API, across the Kafka hop; and nothing exported, tried
//! or logged about it when no `OTEL_*` variable is set.
//! Needs TEST_PYTHON, TEST_OTLP_ENDPOINT, TEST_JAEGER_QUERY and TEST_KAFKA_BROKERS
//! (scripts/test sets them all).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::pb::{upload_request::Part, UploadHeader, UploadRequest};
use crate::common::*;
use crate::kafka::support::{brokers, client_upload, Names, BROKER, IDENTITY_ACCOUNT, IDENTITY_ORG};

const TESTARENO: &str = "application/vnd.redhat.testareno.something+tgz";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const UPLOAD_ROUTE: &str = "/api/ingress/v1/upload";
const GRPC_UPLOAD: &str = "/upload.v1.UploadGateway/Upload";
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------- metrics

/// One sample as the Prometheus parser read it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// An exposition parsed by the Prometheus project's parser: families (name → type)
/// and samples. Fails the test, with the parser's message, when it does not parse.
struct Exposition {
    families: HashMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

fn parse_openmetrics(text: &str) -> Exposition {
    parse_with(text, &[])
}

/// The classic text format, with the same project's classic parser.
fn parse_classic(text: &str) -> Exposition {
    parse_with(text, &["--classic"])
}

fn parse_with(text: &str, args: &[&str]) -> Exposition {
    let python = std::env::var("TEST_PYTHON").unwrap_or_else(|_| {
        panic!("TEST_PYTHON is not set: run the suite with scripts/test (scripts/tools.sh python makes the venv)")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/parse_metrics.py");
    let mut child = Command::new(&python)
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus OpenMetrics parser refused /metrics: {}\n---- /metrics ----\n{text}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the parser script prints JSON");
    let families = v["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f["type"].as_str().unwrap().to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_string(),
            kind: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: match &s["value"] {
                Value::String(v) if v == "+Inf" => f64::INFINITY,
                Value::String(v) if v == "-Inf" => f64::NEG_INFINITY,
                Value::String(_) => f64::NAN,
                v => v.as_f64().unwrap(),
            },
        })
        .collect();
    Exposition { families, samples, text: text.to_string() }
}

impl Exposition {
    /// The samples named `name` whose labels include every pair in `labels`.
    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
    }

    /// The sum of those samples (0 when there are none): with the given labels, summed
    /// over any others.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples of a family, for messages.
    fn show(&self, family: &str) -> String {
        let lines: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.family == family)
            .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
            .collect();
        if lines.is_empty() {
            format!("(no samples of {family}; the exposition:)\n{}", self.text)
        } else {
            lines.join("\n")
        }
    }
}

/// `/metrics` as Prometheus asks for it (OpenMetrics): its content type and its text.
async fn scrape(http: &reqwest::Client, base: &str) -> (String, String) {
    scrape_accepting(http, base, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5").await
}

/// `/metrics` with an `Accept` header of the caller's.
async fn scrape_accepting(http: &reqwest::Client, base: &str, accept: &str) -> (String, String) {
    let resp = http.get(format!("{base}/metrics")).header("accept", accept).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET /metrics");
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (ct, resp.text().await.unwrap())
}

/// A gRPC `Upload`: the header (with an identity as request metadata), then chunks.
fn grpc_upload_request(
    content_type: &str,
    body: &[u8],
) -> tonic::Request<futures_util::stream::Iter<std::vec::IntoIter<UploadRequest>>> {
    let header = UploadHeader { content_type: content_type.into(), ..Default::default() };
    let mut msgs = vec![UploadRequest { part: Some(Part::Header(header)) }];
    msgs.extend(body.chunks(16 * 1024).map(|c| UploadRequest { part: Some(Part::Chunk(c.to_vec().into())) }));
    let mut req = tonic::Request::new(futures_util::stream::iter(msgs));
    req.metadata_mut().insert("x-rh-identity", identity("acct-1", "org-1").parse().unwrap());
    req
}

/// After uploads over both protocols, one refusal on each, one verdict and with one
/// validator subscribed, `/metrics` is OpenMetrics that the Prometheus project's parser
/// accepts, the families the issue names have their types, and the histograms count
/// exactly what was done.
#[tokio::test]
async fn metrics_are_openmetrics_the_prometheus_parser_accepts_and_histograms_count_what_was_done() {
    const REST: usize = 3;
    const GRPC: usize = 2;
    let t = spawn_app(&[]).await;
    let mut bytes_sent = 0u64;
    let mut ids = Vec::new();
    for i in 0..REST {
        let body = format!("rest payload {i} ").repeat(100 * (i + 1)).into_bytes();
        bytes_sent += body.len() as u64;
        ids.push(Upload::new(TESTARENO, body).identity("acct-1", "org-1").accepted(&t.http, &t.base).await);
    }
    for i in 0..GRPC {
        let body = format!("grpc payload {i} ").repeat(1000 * (i + 1)).into_bytes();
        bytes_sent += body.len() as u64;
        let receipt = t.grpc().await.upload(grpc_upload_request(TESTARENO, &body)).await;
        let receipt = receipt.expect("the gRPC upload is accepted").into_inner();
        assert_eq!(receipt.size, body.len() as u64);
        ids.push(receipt.request_id);
    }
    // One refusal each way: a content type that matches no rule.
    let refused = Upload::new("text/plain", b"not for us".to_vec()).send(&t.http, &t.base).await;
    assert_eq!(refused.status(), 415);
    let refused = t.grpc().await.upload(grpc_upload_request("text/plain", b"no")).await;
    assert_eq!(refused.expect_err("text/plain is refused").code(), tonic::Code::InvalidArgument);

    // One verdict, over gRPC with the operator's validator token.
    let verdict = crate::common::pb::Verdict { request_id: ids[0].clone(), validation: "success".into(), ..Default::default() };
    let mut acks = t.grpc().await.validation_result(futures_util::stream::iter([verdict])).await.unwrap().into_inner();
    let ack = tokio::time::timeout(WAIT, acks.message()).await.expect("an ack").unwrap().expect("an ack");
    assert_eq!(ack.outcome, crate::common::pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);
    drop(acks);

    // A validator subscribed to the service, while the gateway is scraped.
    let _subscribed = t
        .grpc()
        .await
        .subscribe(crate::common::pb::SubscribeRequest { service: "testareno".into() })
        .await
        .unwrap()
        .into_inner();

    // Announce and advertise happen behind the answers: scrape until they are counted
    // (or 10 s pass), then look at that exposition whole.
    let uploads = (REST + GRPC) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (content_type, m) = loop {
        let (ct, text) = scrape(&t.http, &t.base).await;
        let m = parse_openmetrics(&text);
        let stage = |s| m.sum("upload_gateway_stage_duration_seconds_count", &[("stage", s)]);
        let subscribers = m.sum("upload_gateway_subscribers", &[("service", "testareno")]);
        if (stage("announced") >= uploads && stage("advertised") >= 1.0 && subscribers >= 1.0) || Instant::now() > deadline {
            break (ct, m);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(content_type, OPENMETRICS, "the content type of /metrics");
    // A client that does not ask for OpenMetrics (curl, the contract's scrapers) gets the
    // classic text format, which the project's classic parser reads, with the same counts.
    let (classic_type, classic_text) = scrape_accepting(&t.http, &t.base, "*/*").await;
    assert_eq!(classic_type, "text/plain; version=0.0.4; charset=utf-8", "the content type without Accept");
    let classic = parse_classic(&classic_text);
    let accepted = classic.sum("upload_gateway_uploads_accepted_total", &[("service", "testareno")]);
    assert_eq!(accepted, 5.0, "the classic format counts the same uploads\n{classic_text}");

    // The families this run must have filled, with their types (the parser names a
    // counter's family without `_total`); the labelled ones nothing here touched (S3 on
    // the embedded default, Kafka errors, drops, held payloads) are written only once a
    // label set exists, so: of their type when there.
    let must: &[(&str, &str)] = &[
        ("upload_gateway_request_duration_seconds", "histogram"),
        ("upload_gateway_payload_size_bytes", "histogram"),
        ("upload_gateway_stage_duration_seconds", "histogram"),
        ("upload_gateway_uploads_accepted", "counter"),
        ("upload_gateway_uploads_refused", "counter"),
        ("upload_gateway_verdicts", "counter"),
        ("upload_gateway_dead_lettered_messages", "counter"),
        ("upload_gateway_uploads_in_flight", "gauge"),
        ("upload_gateway_subscribers", "gauge"),
    ];
    let may: &[(&str, &str)] = &[
        ("upload_gateway_s3_request_duration_seconds", "histogram"),
        ("upload_gateway_kafka_produce_errors", "counter"),
        ("upload_gateway_dropped_messages", "counter"),
        ("upload_gateway_held_payloads", "gauge"),
    ];
    let wrong: Vec<String> = must
        .iter()
        .filter(|(name, kind)| m.families.get(*name).map(String::as_str) != Some(*kind))
        .chain(may.iter().filter(|(name, kind)| m.families.get(*name).is_some_and(|k| k != kind)))
        .map(|(name, kind)| format!("{name}: want {kind}, found {:?}", m.families.get(*name)))
        .collect();
    assert!(wrong.is_empty(), "families missing or of another type: {wrong:#?}\n---- /metrics ----\n{}", m.text);

    // Request durations: per protocol, route or gRPC method, and status.
    let rd = "upload_gateway_request_duration_seconds_count";
    let rest_202 = m.sum(rd, &[("protocol", "rest"), ("method", UPLOAD_ROUTE), ("status", "202")]);
    assert_eq!(rest_202, REST as f64, "REST uploads answered 202:\n{}", m.show("upload_gateway_request_duration_seconds"));
    let rest_415 = m.sum(rd, &[("protocol", "rest"), ("method", UPLOAD_ROUTE), ("status", "415")]);
    assert_eq!(rest_415, 1.0, "REST uploads answered 415:\n{}", m.show("upload_gateway_request_duration_seconds"));
    let grpc_ok = m.sum(rd, &[("protocol", "grpc"), ("method", GRPC_UPLOAD), ("status", "OK")]);
    assert_eq!(grpc_ok, GRPC as f64, "gRPC uploads answered OK:\n{}", m.show("upload_gateway_request_duration_seconds"));
    let grpc_bad = m.sum(rd, &[("protocol", "grpc"), ("method", GRPC_UPLOAD), ("status", "InvalidArgument")]);
    assert_eq!(grpc_bad, 1.0, "gRPC uploads answered InvalidArgument:\n{}", m.show("upload_gateway_request_duration_seconds"));

    // Payload sizes by service: one observation per accepted upload, summing to the
    // bytes sent.
    let ps = |suffix: &str| m.sum(&format!("upload_gateway_payload_size_bytes_{suffix}"), &[("service", "testareno")]);
    assert_eq!(ps("count"), uploads, "payload sizes observed:\n{}", m.show("upload_gateway_payload_size_bytes"));
    assert_eq!(ps("sum"), bytes_sent as f64, "payload bytes observed:\n{}", m.show("upload_gateway_payload_size_bytes"));

    // Stages: stored and announced once per upload, one verdict, one advertised.
    let stage = |s: &str| m.sum("upload_gateway_stage_duration_seconds_count", &[("stage", s)]);
    let show_stages = m.show("upload_gateway_stage_duration_seconds");
    assert_eq!(stage("stored"), uploads, "stage stored:\n{show_stages}");
    assert_eq!(stage("announced"), uploads, "stage announced:\n{show_stages}");
    assert!(stage("verdict") >= 1.0, "stage verdict:\n{show_stages}");
    assert!(stage("advertised") >= 1.0, "stage advertised:\n{show_stages}");

    // The counters agree.
    let accepted = m.sum("upload_gateway_uploads_accepted_total", &[("service", "testareno")]);
    assert_eq!(accepted, uploads, "{}", m.show("upload_gateway_uploads_accepted"));
    let refused = m.sum("upload_gateway_uploads_refused_total", &[("reason", "unsupported_media_type")]);
    assert_eq!(refused, 2.0, "{}", m.show("upload_gateway_uploads_refused"));
    let promoted = m.sum("upload_gateway_verdicts_total", &[("outcome", "promoted")]);
    assert_eq!(promoted, 1.0, "{}", m.show("upload_gateway_verdicts"));
    let subscribers = m.sum("upload_gateway_subscribers", &[("service", "testareno")]);
    assert_eq!(subscribers, 1.0, "one subscriber of testareno:\n{}", m.show("upload_gateway_subscribers"));
    // Nothing is in flight any more.
    assert_eq!(m.sum("upload_gateway_uploads_in_flight", &[]), 0.0, "{}", m.show("upload_gateway_uploads_in_flight"));

    // Build info: one sample, 1, with this build's version and a commit label.
    let info: Vec<&Sample> = m.matching("upload_gateway_build_info", &[]).collect();
    assert_eq!(info.len(), 1, "one build_info sample:\n{}", m.text);
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels.get("version").map(String::as_str), Some(env!("CARGO_PKG_VERSION")), "{:?}", info[0]);
    assert!(info[0].labels.contains_key("commit"), "{:?}", info[0]);
    assert!(m.samples.iter().all(|s| !s.kind.is_empty()), "every sample belongs to a typed family");
    t.app.stop().await.unwrap();
}

// -------------------------------------------------------------------------- traces

/// `n` random bytes as lower-case hex, the first digit never 0 (Jaeger's API writes
/// ids without leading zeros).
fn random_hex(n: usize) -> String {
    let mut s: String = (0..(n + 15) / 16).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    s.truncate(n * 2);
    if s.starts_with('0') {
        s.replace_range(0..1, "a");
    }
    s
}

/// Leading zeros off, lower case: the form Jaeger's API writes ids in.
fn jaeger_id(id: &str) -> String {
    let s = id.trim_start_matches('0').to_ascii_lowercase();
    if s.is_empty() { "0".into() } else { s }
}

/// One span as Jaeger's HTTP API answers it.
#[derive(Debug, Clone)]
struct Span {
    id: String,
    name: String,
    parent: Option<(String, String)>, // (trace id, span id) of its CHILD_OF reference
    service: String,
}

/// `GET {query}/api/traces/{id}`: the spans of that trace, or none yet.
async fn jaeger_trace(query: &str, trace_id: &str) -> Vec<Span> {
    let resp = reqwest::get(format!("{query}/api/traces/{trace_id}")).await.expect("Jaeger's query API answers");
    if resp.status() == 404 {
        return Vec::new();
    }
    assert_eq!(resp.status(), 200, "GET /api/traces/{trace_id}");
    let v: Value = resp.json().await.unwrap();
    let Some(traces) = v["data"].as_array() else { return Vec::new() };
    assert!(traces.len() <= 1, "one trace for one id: {v}");
    let Some(trace) = traces.first() else { return Vec::new() };
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(jaeger_id(s["traceID"].as_str().unwrap()), jaeger_id(trace_id), "a span of another trace: {s}");
            let parent = s["references"].as_array().and_then(|refs| {
                refs.iter().find(|r| r["refType"] == "CHILD_OF").map(|r| {
                    (jaeger_id(r["traceID"].as_str().unwrap()), jaeger_id(r["spanID"].as_str().unwrap()))
                })
            });
            Span {
                id: jaeger_id(s["spanID"].as_str().unwrap()),
                name: s["operationName"].as_str().unwrap().to_string(),
                parent,
                service: processes[s["processID"].as_str().unwrap()]["serviceName"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

fn show_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| format!("{} {} (service {}) parent {:?}", s.id, s.name, s.service, s.parent))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `OTEL_*` variable of this process off the command's environment.
fn without_otel(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(&k);
        }
    }
}

/// A payload's status, as `GET .../track/{id}` answers the operator.
async fn track_status(http: &reqwest::Client, base: &str, id: &str) -> String {
    let v: Value = http
        .get(format!("{base}/api/ingress/v1/track/{id}"))
        .header("x-rh-identity", identity(IDENTITY_ACCOUNT, IDENTITY_ORG))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["status"].as_str().unwrap_or_default().to_string()
}

/// An upload with a W3C `traceparent`, decided by the built-in validator over Kafka,
/// shows up in Jaeger as one trace: the client's span → `request` → `store`,
/// `announce`; over the Kafka hop → `verdict` → `promote`, `advertise`. The 202 names
/// the trace. A gRPC upload with `traceparent` metadata gets its `request` span under
/// the client's span the same way, and its answer's metadata names the trace.
#[tokio::test]
async fn one_trace_follows_an_upload_from_the_client_through_kafka_to_the_verdict_and_advertise() {
    const SVC: &str = "testareno";
    let otlp = required_env("TEST_OTLP_ENDPOINT");
    let query = required_env("TEST_JAEGER_QUERY");
    let _broker = BROKER.read().await;
    let n = Names::new("traces");
    let data = tempfile::tempdir().unwrap();
    let service_name = format!("upload-gateway-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let mut cmd = GatewayProcess::command();
    without_otel(&mut cmd);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_SERVICE_NAME", &service_name)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(n.flags());
    let path = data.path().to_path_buf();
    let gw = tokio::task::spawn_blocking(move || GatewayProcess::spawn(cmd, &path)).await.unwrap();
    let http = operator_http(data.path());

    let trace_id = random_hex(16);
    let client_span = random_hex(8);
    let resp = client_upload(SVC, None, b"followed by a trace".to_vec())
        .request(&http, &gw.base)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    let answered = resp.headers().get("traceparent").map(|v| v.to_str().unwrap().to_string());
    let id = accepted_id(resp).await;
    let answered = answered.expect("the 202 carries a traceparent header");
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {answered}");
    assert_eq!(parts[1], trace_id, "the 202's traceparent names the client's trace: {answered}");

    // The built-in validator decides over Kafka (it copies the announcement's
    // traceparent header onto its verdict).
    let group = format!("{}.cli", n.group);
    let mut validator = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"));
    validator
        .args([
            "validate", "--via", "kafka", "--kafka-brokers", &brokers(), "--service", SVC,
            "--verdict", "success", "--count", "1", "--announce-topic-prefix", &n.prefix,
            "--validation-topic", &n.validation, "--group", &group,
        ])
        .env_remove("KAFKAMQ")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            validator.env_remove(&k);
        }
    }
    let out = tokio::time::timeout(WAIT * 2, validator.output()).await.expect("the validator finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("request_id={id}")) && stdout.contains("verdict=success"), "{stdout}");

    // Promoted and advertised.
    let deadline = Instant::now() + WAIT;
    loop {
        let status = track_status(&http, &gw.base, &id).await;
        if status == "advertised" {
            break;
        }
        assert!(Instant::now() < deadline, "{id} not advertised within {WAIT:?} (status {status:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The spans reach Jaeger within a few batch intervals.
    let wanted = ["request", "store", "announce", "verdict", "promote", "advertise"];
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = jaeger_trace(&query, &trace_id).await;
        if wanted.iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "Jaeger has not got every span of trace {trace_id} ({wanted:?}) within 20 s; it has:\n{}",
            show_spans(&spans)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let all = show_spans(&spans);
    let tid = jaeger_id(&trace_id);
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let child_of = |s: &Span, parent: &Span| s.parent.as_ref() == Some(&(tid.clone(), parent.id.clone()));

    // The server span, under the client's span, from the service named in OTEL_SERVICE_NAME.
    let requests: Vec<&Span> =
        named("request").into_iter().filter(|s| s.parent == Some((tid.clone(), jaeger_id(&client_span)))).collect();
    assert_eq!(requests.len(), 1, "one `request` span whose parent is the client's span {client_span}:\n{all}");
    let request = requests[0];
    assert_eq!(request.service, service_name, "OTEL_SERVICE_NAME names the service:\n{all}");
    for name in ["store", "announce"] {
        for s in named(name) {
            assert!(child_of(s, request), "`{name}` is a child of `request` {}:\n{all}", request.id);
        }
    }
    // The Kafka hop: the verdict, in the same trace, under the upload's spans.
    let verdicts = named("verdict");
    assert_eq!(verdicts.len(), 1, "one `verdict` span:\n{all}");
    let verdict = verdicts[0];
    let mut upload_side: Vec<&Span> = vec![request];
    upload_side.extend(spans.iter().filter(|s| child_of(s, request)));
    assert!(
        upload_side.iter().any(|p| child_of(verdict, p)),
        "the `verdict` span's parent is the request or one of its children (the traceparent carried over Kafka):\n{all}"
    );
    for name in ["promote", "advertise"] {
        for s in named(name) {
            assert!(child_of(s, verdict), "`{name}` is a child of `verdict` {}:\n{all}", verdict.id);
        }
    }

    // The same over gRPC: `traceparent` in the request metadata parents the server
    // span, and the response metadata names the trace.
    let trace_id = random_hex(16);
    let client_span = random_hex(8);
    let mut req = grpc_upload_request(&format!("application/vnd.redhat.{SVC}.collection+tgz"), b"traced over gRPC");
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-{client_span}-01").parse().unwrap());
    let resp = grpc_client(&gw.base, data.path()).await.upload(req).await.expect("the gRPC upload is accepted");
    let answered = resp.metadata().get("traceparent").map(|v| v.to_str().unwrap().to_string());
    let answered = answered.expect("the gRPC answer carries traceparent metadata");
    assert_eq!(answered.split('-').nth(1), Some(trace_id.as_str()), "the answer's traceparent names the client's trace: {answered}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = jaeger_trace(&query, &trace_id).await;
        if ["request", "store", "announce"].iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "Jaeger has not got request, store and announce of the gRPC upload's trace {trace_id} within 20 s; it has:\n{}",
            show_spans(&spans)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let all = show_spans(&spans);
    let tid = jaeger_id(&trace_id);
    let requests: Vec<&Span> =
        spans.iter().filter(|s| s.name == "request" && s.parent == Some((tid.clone(), jaeger_id(&client_span)))).collect();
    assert_eq!(requests.len(), 1, "one gRPC `request` span whose parent is the client's span {client_span}:\n{all}");
    for s in spans.iter().filter(|s| s.name == "store" || s.name == "announce") {
        assert_eq!(s.parent, Some((tid.clone(), requests[0].id.clone())), "`{}` is a child of `request`:\n{all}", s.name);
    }
    drop(gw);
    n.cleanup().await;
}

/// With no `OTEL_*` variable, the gateway exports nothing: nothing connects to the
/// OTLP default port (127.0.0.1:4317) while uploads, a verdict and a few batch
/// intervals go by, and its log says nothing about OpenTelemetry or exporting.
#[tokio::test]
async fn without_otel_variables_nothing_is_exported_tried_or_logged() {
    // The OTLP default endpoint (localhost:4317), on both loopbacks where we can bind it.
    let listeners: Vec<std::net::TcpListener> = ["127.0.0.1:4317", "[::1]:4317"]
        .iter()
        .filter_map(|a| std::net::TcpListener::bind(a).ok())
        .collect();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    // Who connected: the process owning the other end, looked up while it is open.
    let callers: Arc<Mutex<Vec<(std::net::SocketAddr, Option<u32>)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watchers: Vec<std::thread::JoinHandle<()>> = listeners
        .into_iter()
        .map(|l| {
            l.set_nonblocking(true).unwrap();
            let (callers, done) = (callers.clone(), done.clone());
            std::thread::spawn(move || {
                let mut open = Vec::new(); // held, so the caller's socket stays in /proc
                while !done.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((stream, peer)) => {
                            callers.lock().unwrap().push((peer, socket_owner(peer.port(), 4317)));
                            open.push(stream);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                        Err(e) => panic!("accepting on 4317: {e}"),
                    }
                }
            })
        })
        .collect();
    if watchers.is_empty() {
        eprintln!("port 4317 is taken on this machine: the connection check is skipped, the log check runs");
    }

    let data = tempfile::tempdir().unwrap();
    let mut cmd = GatewayProcess::command();
    without_otel(&mut cmd);
    // Logs at info, and the OpenTelemetry crates' own at debug: an SDK set up anyway (a
    // span processor, an exporter, a failed export) would say so.
    cmd.env("RUST_LOG", "info,opentelemetry=debug,opentelemetry_sdk=debug,opentelemetry_otlp=debug")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let path = data.path().to_path_buf();
    let gw = tokio::task::spawn_blocking(move || GatewayProcess::spawn(cmd, &path)).await.unwrap();
    let http = operator_http(data.path());

    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = Upload::new(TESTARENO, format!("untraced {i}").into_bytes())
            .identity("acct-1", "org-1")
            .request(&http, &gw.base)
            .header("traceparent", format!("00-{}-{}-01", random_hex(16), random_hex(8)))
            .send()
            .await
            .unwrap();
        ids.push(accepted_id(resp).await);
    }
    let grpc = grpc_client(&gw.base, data.path()).await;
    let receipt = grpc.clone().upload(grpc_upload_request(TESTARENO, b"untraced grpc")).await;
    receipt.expect("the gRPC upload is accepted");
    let verdict = crate::common::pb::Verdict { request_id: ids[0].clone(), validation: "success".into(), ..Default::default() };
    let mut acks = grpc.clone().validation_result(futures_util::stream::iter([verdict])).await.unwrap().into_inner();
    let ack = tokio::time::timeout(WAIT, acks.message()).await.expect("an ack").unwrap().expect("an ack");
    assert_eq!(ack.outcome, crate::common::pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);

    // The SDK's default batch interval is 5 s: wait past it, and then some.
    tokio::time::sleep(Duration::from_secs(7)).await;
    done.store(true, Ordering::SeqCst);
    for w in watchers {
        w.join().unwrap();
    }
    // Another program on this machine may export to the default port: only the
    // gateway's connections (or ones gone too fast to tell whose) count.
    let callers = callers.lock().unwrap().clone();
    let others: Vec<_> = callers.iter().filter(|(_, pid)| pid.is_some_and(|p| p != gw.pid())).collect();
    if !others.is_empty() {
        eprintln!("other processes connected to 4317 meanwhile (not counted): {others:?}");
    }
    let gateway: Vec<_> = callers.iter().filter(|(_, pid)| pid.is_none_or(|p| p == gw.pid())).collect();
    assert!(
        gateway.is_empty(),
        "the gateway (pid {}) connected to the OTLP default port 4317 with no OTEL_* variable set: {gateway:?}",
        gw.pid()
    );
    let noisy: Vec<String> = gw
        .log_lines()
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["opentelemetry", "otlp", "otel", "export", "4317"].iter().any(|w| l.contains(w))
        })
        .collect();
    assert!(noisy.is_empty(), "log lines about tracing with tracing off: {noisy:#?}");
    drop(gw);
}

/// The process that owns the TCP socket on local port `port` connected to `remote_port`
/// on this machine (from /proc; `None` when it is already gone).
fn socket_owner(port: u16, remote_port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            (f.len() > 9 && port_of(f[1]) == Some(port) && port_of(f[2]) == Some(remote_port)).then(|| f[9].to_string())
        })
    })?;
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(p.path().join("fd")).ok()?;
        fds.filter_map(Result::ok)
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target))
            .then_some(pid)
    })
}
