//! The gateway on a real Kafka broker (contract §4): announce, verdicts, available and
//! status messages, bad validation messages, outages, restarts, gRPC validators.
//! Needs TEST_KAFKA_BROKERS (scripts/test starts the broker).

pub(crate) mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use support::*;

const SVC: &str = "testareno";
const WAIT: Duration = Duration::from_secs(30);

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("a JSON object").keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn download(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn end_to_end_success_and_failure_through_the_broker() {
    let _broker = BROKER.read().await;
    let n = Names::new("e2e");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let body_a = b"payload A: promoted".repeat(100);
    let body_b = b"payload B: rejected".to_vec();
    let a = accepted_id(upload(&t, SVC, None, body_a.clone()).await).await;
    let b = accepted_id(upload(&t, SVC, Some("client-chosen-b.1"), body_b.clone()).await).await;
    assert_eq!(b, "client-chosen-b.1");

    // An independent consumer reads the announcements off the service's topic.
    let announce_topic = n.announce(SVC);
    let ra = wait_records(&announce_topic, &a, 1, WAIT).await;
    assert_eq!(ra.len(), 1, "one announce message per upload");
    assert_eq!(ra[0].headers.get("service").map(String::as_str), Some(SVC));
    let ann = ra[0].json();
    assert_eq!(
        keys(&ann),
        set(&[
            "account", "rh_account", "org_id", "principal", "request_id", "payload_id", "size", "service",
            "category", "content_type", "b64_identity", "metadata", "url", "timestamp", "sha256",
        ])
    );
    assert_eq!(ann["account"], IDENTITY_ACCOUNT);
    assert_eq!(ann["rh_account"], IDENTITY_ACCOUNT);
    assert_eq!(ann["org_id"], IDENTITY_ORG);
    assert_eq!(ann["principal"], IDENTITY_ORG);
    assert_eq!(ann["request_id"], a.as_str());
    assert_eq!(ann["payload_id"], a.as_str());
    assert_eq!(ann["size"], body_a.len() as u64);
    assert_eq!(ann["service"], SVC);
    assert_eq!(ann["category"], "collection");
    assert_eq!(ann["content_type"], "application/vnd.redhat.testareno.collection+tgz");
    assert_eq!(ann["b64_identity"], identity(IDENTITY_ACCOUNT, IDENTITY_ORG));
    assert_eq!(ann["metadata"], serde_json::from_str::<Value>(METADATA).unwrap());
    assert_eq!(ann["sha256"], sha256_hex(&body_a));
    assert_utc_rfc3339(&ann["timestamp"], "announce timestamp");
    assert_eq!(download(ann["url"].as_str().unwrap()).await, body_a);
    let ann_b = wait_records(&announce_topic, &b, 1, WAIT).await[0].json();
    assert_eq!(ann_b["size"], body_b.len() as u64);

    // The validator answers on the validation topic, echoing the announcement.
    let v = Validator::new();
    let mut ok = ann.clone();
    ok["validation"] = json!("success");
    ok["satellite_managed"] = json!(true);
    ok["reason"] = json!("looks fine");
    v.send(&n.validation, &a, &ok).await;
    let mut bad = ann_b.clone();
    bad["validation"] = json!("failure");
    v.send(&n.validation, &b, &bad).await;

    wait_file(t.data.path(), "perm", &a, WAIT).await;
    wait_file(t.data.path(), "reject", &b, WAIT).await;
    // Verdicts for different payloads are applied side by side: each leaves quarantine
    // once its copy is in place (and, for a, its `available` is out).
    eventually(WAIT, "both payloads leave quarantine", || async { t.bucket_files("quarantine").is_empty() }).await;
    assert!(!t.bucket_files("perm").contains(&b));

    let avail = wait_records(&n.available, &a, 1, WAIT).await;
    assert_eq!(avail.len(), 1);
    let av = avail[0].json();
    assert_eq!(
        keys(&av),
        set(&[
            "id", "url", "service", "category", "request_id", "payload_id", "account", "rh_account", "org_id",
            "principal", "rh_principal", "b64_identity", "satellite_managed", "size", "sha256", "timestamp",
        ])
    );
    for k in ["id", "request_id", "payload_id"] {
        assert_eq!(av[k], a.as_str(), "{k}");
    }
    assert_eq!(av["service"], SVC);
    assert_eq!(av["category"], "collection");
    for k in ["account", "rh_account"] {
        assert_eq!(av[k], IDENTITY_ACCOUNT, "{k}");
    }
    for k in ["org_id", "principal", "rh_principal"] {
        assert_eq!(av[k], IDENTITY_ORG, "{k}");
    }
    assert_eq!(av["b64_identity"], identity(IDENTITY_ACCOUNT, IDENTITY_ORG));
    assert_eq!(av["satellite_managed"], true);
    assert_eq!(av["size"], body_a.len() as u64);
    assert_eq!(av["sha256"], sha256_hex(&body_a));
    assert_utc_rfc3339(&av["timestamp"], "available timestamp");
    assert_ne!(av["url"], ann["url"], "the available URL points at perm");
    assert_eq!(download(av["url"].as_str().unwrap()).await, body_a);
    assert!(records_for(&n.available, &b).await.is_empty(), "a rejected payload is not advertised");

    // Status: every milestone on the status topic, in order per payload.
    let statuses = |recs: Vec<Record>| -> Vec<String> {
        recs.iter().map(|r| r.json()["status"].as_str().unwrap().to_string()).collect()
    };
    let sa = wait_records(&n.status, &a, 4, WAIT).await;
    assert_eq!(statuses(sa.clone()), ["received", "announced", "success", "advertised"]);
    let ev = sa[2].json();
    assert_eq!(
        keys(&ev),
        set(&["service", "status", "status_msg", "account", "org_id", "request_id", "payload_id", "date"])
    );
    assert_eq!(ev["service"], "ingress");
    assert_eq!(ev["status_msg"], "looks fine");
    assert_eq!(ev["account"], IDENTITY_ACCOUNT);
    assert_eq!(ev["org_id"], IDENTITY_ORG);
    assert_eq!(ev["payload_id"], a.as_str());
    assert_utc_rfc3339(&ev["date"], "status date");
    let sb = wait_records(&n.status, &b, 3, WAIT).await;
    assert_eq!(statuses(sb), ["received", "announced", "rejected"]);

    let track: Value = t.http.get(t.url(&format!("/api/ingress/v1/track/{a}"))).header("x-rh-identity", identity(IDENTITY_ACCOUNT, IDENTITY_ORG)).send().await.unwrap().json().await.unwrap();
    assert_eq!(track["status"], "advertised");
    assert_eq!(track["history"].as_array().unwrap().len(), 4, "each milestone once: {track}");
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

#[tokio::test]
async fn twenty_malformed_validation_messages_are_skipped_and_the_next_good_one_applied() {
    let _broker = BROKER.read().await;
    let n = Names::new("malformed");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let id = accepted_id(upload(&t, SVC, None, b"waiting for its verdict".to_vec()).await).await;
    wait_records(&n.announce(SVC), &id, 1, WAIT).await;

    let huge = format!(r#"{{"request_id":"{id}","validation":"{}"}}"#, "x".repeat(900_000));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let raw = |s: String| Some(s.into_bytes());
    #[rustfmt::skip]
    let table: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("bad JSON", raw("not json at all".into())),
        ("truncated JSON", raw(format!(r#"{{"request_id":"{id}","validation":"succ"#))),
        ("no payload (tombstone)", None),
        ("a JSON array", raw(format!(r#"["{id}","success"]"#))),
        ("a JSON string", raw(r#""success""#.into())),
        ("an empty object", raw("{}".into())),
        ("no id", raw(r#"{"validation":"success"}"#.into())),
        ("empty id", raw(r#"{"request_id":"","validation":"success"}"#.into())),
        ("numeric id", raw(r#"{"request_id":12345,"validation":"success"}"#.into())),
        ("boolean verdict", raw(format!(r#"{{"request_id":"{id}","validation":true}}"#))),
        ("numeric verdict", raw(format!(r#"{{"request_id":"{id}","validation":1}}"#))),
        ("null verdict", raw(format!(r#"{{"request_id":"{id}","validation":null}}"#))),
        ("array verdict", raw(format!(r#"{{"payload_id":"{id}","validation":["success"]}}"#))),
        ("no verdict", raw(format!(r#"{{"request_id":"{id}"}}"#))),
        ("unknown verdict", raw(format!(r#"{{"request_id":"{id}","validation":"maybe"}}"#))),
        ("empty verdict", raw(format!(r#"{{"request_id":"{id}","validation":""}}"#))),
        ("unknown id", raw(r#"{"request_id":"no-such-payload-0001","validation":"success"}"#.into())),
        ("id that is a path", raw(r#"{"request_id":"../../etc/passwd","validation":"success"}"#.into())),
        ("huge message (900 kB)", raw(huge)),
        ("JSON nested 100000 deep", raw(deep)),
    ];
    assert_eq!(table.len(), 20);
    let v = Validator::new();
    for (what, payload) in &table {
        v.send_raw(&n.validation, Some(&id), payload.as_deref()).await;
        let _ = what;
    }
    // Upper case and payload_id instead of request_id: still a valid verdict.
    v.send(&n.validation, &id, &json!({"payload_id": id, "validation": "SUCCESS"})).await;

    wait_file(t.data.path(), "perm", &id, WAIT).await;
    let available = wait_records(&n.available, &id, 1, WAIT).await;
    assert_eq!(available.len(), 1);
    // Every bad message was counted as skipped (invalid, or an unknown id).
    let invalid = t.metric(r#"upload_gateway_verdicts_total{outcome="invalid"}"#).await;
    let unknown = t.metric(r#"upload_gateway_verdicts_total{outcome="unknown_id"}"#).await;
    let promoted = t.metric(r#"upload_gateway_verdicts_total{outcome="promoted"}"#).await;
    assert_eq!((invalid, unknown, promoted), (19.0, 1.0, 1.0));
    // The gateway still answers and is ready.
    assert_eq!(t.http.get(t.url("/readyz")).send().await.unwrap().status(), 200);
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

#[tokio::test]
async fn a_grpc_subscriber_gets_work_from_the_service_topic_and_its_verdict_is_applied() {
    let _broker = BROKER.read().await;
    let n = Names::new("grpcsub");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let mut client = t.grpc().await;
    let mut work = client
        .subscribe(pb::SubscribeRequest { service: SVC.into() })
        .await
        .unwrap()
        .into_inner();
    let body = b"for a gRPC validator".to_vec();
    let id = accepted_id(upload(&t, SVC, None, body.clone()).await).await;
    // The work comes through the Kafka topic: it is there for any consumer too.
    assert_eq!(wait_records(&n.announce(SVC), &id, 1, WAIT).await.len(), 1);

    let a = tokio::time::timeout(WAIT, work.message()).await.expect("work within 30 s").unwrap().unwrap();
    assert_eq!(a.request_id, id);
    assert_eq!(a.size, body.len() as u64);
    assert_eq!(a.sha256, sha256_hex(&body));
    assert_eq!(download(&a.url).await, body);
    let j: Value = serde_json::from_str(&a.json).unwrap();
    assert_eq!(j["request_id"], id.as_str());
    assert_eq!(j["metadata"], serde_json::from_str::<Value>(METADATA).unwrap());

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::Verdict { request_id: id.clone(), validation: "success".into(), reason: "ok by gRPC".into(), ..Default::default() })
        .await
        .unwrap();
    let mut acks = client
        .validation_result(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let ack = tokio::time::timeout(WAIT, acks.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(ack.request_id, id);
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Promoted as i32, "{}", ack.message);
    assert!(t.bucket_files("perm").contains(&id));
    let av = wait_records(&n.available, &id, 1, WAIT).await;
    assert_eq!(av[0].json()["url"].as_str().map(|u| u.contains("/perm/")), Some(true));
    drop(tx);
    drop(work);
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

#[tokio::test]
async fn one_announce_topic_with_a_service_header_when_configured() {
    let _broker = BROKER.read().await;
    let n = Names::new("single");
    let single = format!("{}announce", n.prefix);
    let mut flags = n.flags();
    flags.extend(["--announce-topic".to_string(), single.clone()]);
    let t = spawn_app(&as_strs(&flags)).await;
    let a = accepted_id(upload(&t, "advisor", None, b"a".to_vec()).await).await;
    let b = accepted_id(upload(&t, SVC, None, b"b".to_vec()).await).await;
    let ra = wait_records(&single, &a, 1, WAIT).await;
    let rb = wait_records(&single, &b, 1, WAIT).await;
    assert_eq!(ra[0].headers["service"], "advisor");
    assert_eq!(rb[0].headers["service"], SVC);
    assert!(read_all(&n.announce(SVC)).await.is_empty(), "nothing on the per-service topic");
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

#[tokio::test]
async fn an_unknown_librdkafka_option_is_refused_at_start_up() {
    let n = Names::new("badopt");
    let mut args = vec!["gw".to_string(), "--listen".into(), "127.0.0.1:0".into()];
    args.extend(n.flags());
    args.extend(["--kafka-option".to_string(), "no.such.setting=1".into()]);
    let dir = tempfile::tempdir().unwrap();
    args.extend(["--data-dir".to_string(), dir.path().display().to_string()]);
    let config = upload_gateway::Config::from_args(args).unwrap();
    let err = upload_gateway::App::start(config).await.err().expect("start refused");
    assert!(format!("{err:#}").contains("no.such.setting"), "{err:#}");
}

mod outage;
mod queue;
mod restart;
mod original_env;

// Used by the outage module.
pub(crate) fn count_by_key(recs: &[Record]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in recs {
        *m.entry(r.key.clone()).or_insert(0) += 1;
    }
    m
}

/// A platform validator on rdkafka directly (what `validate --via kafka` uses).
#[tokio::test]
async fn a_validator_on_kafka_reads_the_service_topic_and_its_verdict_is_applied() {
    use upload_gateway::queue::kafka::validator::{LinkConfig, ValidatorLink};
    let _broker = BROKER.read().await;
    let n = Names::new("link");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let link = ValidatorLink::connect(LinkConfig {
        brokers: brokers(),
        options: vec![],
        service: SVC.into(),
        announce_topic: n.announce(SVC),
        validation_topic: n.validation.clone(),
        group: format!("{}.validator", n.group),
    })
    .unwrap();
    let good = accepted_id(upload(&t, SVC, None, b"good".to_vec()).await).await;
    let bad = accepted_id(upload(&t, SVC, None, b"bad".to_vec()).await).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let a = tokio::time::timeout(WAIT, link.next()).await.expect("an announcement").unwrap();
        let verdict = if a.announce.request_id == good { "success" } else { "failure" };
        link.answer(&a, verdict, Some("checked by the test validator")).await.unwrap();
        seen.push(a.announce.request_id);
    }
    seen.sort();
    let mut want = vec![good.clone(), bad.clone()];
    want.sort();
    assert_eq!(seen, want);
    wait_file(t.data.path(), "perm", &good, WAIT).await;
    wait_file(t.data.path(), "reject", &bad, WAIT).await;
    // The verdict echoed the announcement, as platform validators do.
    let v = wait_records(&n.validation, &good, 1, WAIT).await[0].json();
    assert_eq!(v["validation"], "success");
    assert_eq!(v["sha256"], sha256_hex(b"good"));
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

/// `upload-gateway validate --via kafka`: the built-in validator as a platform
/// validator, reading the service topic and answering on the validation topic.
#[tokio::test]
async fn the_built_in_validator_works_over_kafka() {
    let _broker = BROKER.read().await;
    let n = Names::new("cli");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let id = accepted_id(upload(&t, SVC, None, b"validated over kafka".to_vec()).await).await;
    let group = format!("{}.cli", n.group);
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_upload-gateway"))
        .args([
            "validate", "--via", "kafka", "--kafka-brokers", &brokers(), "--service", SVC,
            "--verdict", "success", "--count", "1", "--announce-topic-prefix", &n.prefix,
            "--validation-topic", &n.validation, "--group", &group,
        ])
        .env_remove("KAFKAMQ")
        .output();
    let out = tokio::time::timeout(WAIT * 2, run).await.expect("validator finished").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("request_id={id}")) && stdout.contains("verdict=success"), "{stdout}");
    wait_file(t.data.path(), "perm", &id, WAIT).await;
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

/// Work a gRPC subscriber took and left without a verdict goes to the next one.
#[tokio::test]
async fn work_left_by_a_grpc_subscriber_goes_to_the_next_one() {
    let _broker = BROKER.read().await;
    let n = Names::new("releases");
    let t = spawn_app(&as_strs(&n.flags())).await;
    let id = accepted_id(upload(&t, SVC, None, b"left behind".to_vec()).await).await;
    let mut first = t.grpc().await;
    let mut work = first.subscribe(pb::SubscribeRequest { service: SVC.into() }).await.unwrap().into_inner();
    let a = tokio::time::timeout(WAIT, work.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(a.request_id, id);
    // A second subscriber waits; the first leaves without a verdict.
    let mut second = t.grpc().await;
    let mut other = second.subscribe(pb::SubscribeRequest { service: SVC.into() }).await.unwrap().into_inner();
    drop(work);
    drop(first);
    let b = tokio::time::timeout(WAIT, other.message()).await.expect("given out again").unwrap().unwrap();
    assert_eq!(b.request_id, id);
    drop(other);
    drop(second);
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

/// A status message the broker refuses for good goes to the dead-letter topic and the
/// messages behind it go on (the test makes the status topic itself, with room for
/// 2,000 bytes a message); a 3 MB verdict reason over gRPC is applied, and its status
/// message goes out cut to a few KiB.
#[tokio::test]
async fn a_message_the_broker_refuses_for_good_is_dead_lettered_and_the_rest_go_on() {
    let _broker = BROKER.read().await;
    let n = Names::new("deadletter");
    let dead = format!("{}.dead", n.group);
    create_topic(&n.status, &[("max.message.bytes", "2000")]).await;
    let mut flags = n.flags();
    flags.extend(["--dead-letter-topic".to_string(), dead.clone()]);
    let t = spawn_app(&as_strs(&flags)).await;
    let id = accepted_id(upload(&t, SVC, None, b"to be refused at length".to_vec()).await).await;
    wait_records(&n.status, &id, 2, WAIT).await; // received, announced: small enough

    let reason = "r".repeat(3_000_000);
    let verdict = pb::Verdict { request_id: id.clone(), validation: "failure".into(), reason, ..Default::default() };
    let mut acks = t.grpc().await.validation_result(futures_util::stream::iter([verdict])).await.unwrap().into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Rejected as i32, "{}", ack.message);
    assert_eq!(t.bucket_files("reject"), [id.clone()]);

    // Its `rejected` status (the reason cut to 4 KiB) is over the topic's limit: the
    // broker refuses it for good, and it goes to the dead-letter topic instead.
    let letters = wait_records(&dead, &id, 1, WAIT).await;
    let letter = letters[0].json();
    assert_eq!(letter["topic"], n.status.as_str());
    let size = letter["size"].as_u64().unwrap();
    assert!((2000..8192).contains(&size), "the status message was cut to a few KiB: {size} bytes");
    assert!(letter["reason"].as_str().unwrap().contains("Message size too large"), "{}", letter["reason"]);
    let excerpt = letter["payload_excerpt"].as_str().unwrap();
    assert!(excerpt.starts_with(r#"{"service":"ingress","status":"rejected""#), "{:.80}", excerpt);
    assert_eq!(excerpt.len(), 4096, "the letter keeps the start of the payload");
    // What comes behind it goes on.
    let next = accepted_id(upload(&t, SVC, None, b"behind it".to_vec()).await).await;
    wait_records(&n.status, &next, 2, WAIT).await;
    assert_eq!(records_for(&n.status, &id).await.len(), 2, "the refused status is not on the status topic");
    assert_eq!(t.metric("upload_gateway_dead_lettered_messages_total").await, 1.0);
    assert_eq!(t.metric("upload_gateway_outbox_retries_total").await, 0.0, "not retried");
    t.app.stop().await.unwrap();
    n.cleanup().await;
}

/// A 3 MB verdict reason sent the way the contract's Kafka validators send verdicts: on
/// the validation topic (made to take messages of 4 MiB, as the test's producer may
/// send). The verdict applies, its status message goes out cut to a few KiB with the
/// marker, and the messages queued behind it (its `advertised`, another upload's
/// milestones) go out too.
#[tokio::test]
async fn a_3_mb_reason_over_the_validation_topic_is_applied_and_its_status_cut() {
    const ROOM: usize = 4 << 20;
    let _broker = BROKER.read().await;
    let n = Names::new("bigreason");
    create_topic(&n.validation, &[("max.message.bytes", &ROOM.to_string())]).await;
    let t = spawn_app(&as_strs(&n.flags())).await;
    let body = b"judged at length".to_vec();
    let id = accepted_id(upload(&t, SVC, None, body.clone()).await).await;
    let announced = wait_records(&n.announce(SVC), &id, 1, WAIT).await[0].json();

    // The validator echoes the announcement, with its verdict and a 3 MB reason.
    let mut verdict = announced;
    verdict["validation"] = json!("success");
    verdict["reason"] = json!("r".repeat(3_000_000));
    let sent = serde_json::to_vec(&verdict).unwrap();
    assert!(sent.len() > 3_000_000 && sent.len() < ROOM);
    Validator::sending_up_to(ROOM).send_raw(&n.validation, Some(&id), Some(&sent)).await;

    // Applied: promoted and advertised.
    wait_file(t.data.path(), "perm", &id, WAIT).await;
    let available = wait_records(&n.available, &id, 1, WAIT).await;
    assert_eq!(available[0].json()["sha256"], sha256_hex(&body));
    // Its `success` status carries the reason cut to 4 KiB, saying how long it was;
    // the `advertised` queued after it went out too.
    let statuses = wait_records(&n.status, &id, 4, WAIT).await;
    let names: Vec<String> = statuses.iter().map(|r| r.json()["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["received", "announced", "success", "advertised"]);
    let success = statuses[2].json();
    let msg = success["status_msg"].as_str().unwrap();
    assert!(msg.len() <= 4096 && msg.len() > 4000, "cut to a few KiB: {} bytes", msg.len());
    assert!(msg.starts_with("rrrr") && msg.ends_with(" [cut: 3000000 bytes]"), "...{}", &msg[msg.len() - 40..]);
    assert!(statuses[2].payload.len() < 8192, "the status message is {} bytes", statuses[2].payload.len());
    // Messages of another payload, queued after it, go out as well.
    let next = accepted_id(upload(&t, SVC, None, b"behind it".to_vec()).await).await;
    wait_records(&n.status, &next, 2, WAIT).await;
    assert_eq!(t.metric(r#"upload_gateway_verdicts_total{outcome="promoted"}"#).await, 1.0);
    assert_eq!(t.metric("upload_gateway_outbox_retries_total").await, 0.0, "nothing had to be sent again");
    t.app.stop().await.unwrap();
    n.cleanup().await;
}
