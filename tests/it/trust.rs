//! Who may do what (README "Trust"): every validator verb and status read, over REST
//! and gRPC, for each kind of caller; identity and request id taken from the request,
//! never from the body; a request id used once, whatever the timing.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity as TlsIdentity};
use tonic::Code;

const ADVISOR: &str = "application/vnd.redhat.advisor.collection+tgz";

/// A CA, the gateway's certificate (localhost) and a validator's client certificate
/// (SAN `advisor-validator.test`), all signed by the CA.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["advisor-validator.test".into()]);
        for (name, pem) in [("ca.pem", &ca_cert.pem()), ("server.pem", &server_cert), ("server.key", &server_key)] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Pki { ca_pem: ca_cert.pem(), client_cert, client_key, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Every kind of caller the table asks about.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    OrgA,
    OrgB,
    AdvisorToken,
    ComplianceToken,
    BadToken,
    AdvisorCert,
}

const EVERYONE: [Who; 7] = [Who::Nobody, Who::OrgA, Who::OrgB, Who::AdvisorToken, Who::ComplianceToken, Who::BadToken, Who::AdvisorCert];

struct Gateway {
    t: TestApp,
    pki: Pki,
    tokens: (String, String),
    https: String,
}

async fn gateway() -> Gateway {
    let pki = Pki::new();
    let (adv, comp) = (upload_gateway::auth::make_token(), upload_gateway::auth::make_token());
    let creds = pki.dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "advisor-v sha256:{} advisor\ncompliance-v sha256:{} compliance\nadvisor-mtls cert:advisor-validator.test advisor\n",
            upload_gateway::auth::token_hash(&adv),
            upload_gateway::auth::token_hash(&comp)
        ),
    )
    .unwrap();
    let t = spawn_app(&[
        "--tls-cert", &pki.path("server.pem"),
        "--tls-key", &pki.path("server.key"),
        "--tls-client-ca", &pki.path("ca.pem"),
        "--validator-credentials", &creds.display().to_string(),
    ])
    .await;
    let https = format!("https://localhost:{}", t.app.addr().port());
    Gateway { t, pki, tokens: (adv, comp), https }
}

impl Gateway {
    fn headers(&self, who: Who) -> Vec<(&'static str, String)> {
        match who {
            Who::Nobody | Who::AdvisorCert => vec![],
            Who::OrgA => vec![("x-rh-identity", identity("0001", "orgA"))],
            Who::OrgB => vec![("x-rh-identity", identity("0002", "orgB"))],
            Who::AdvisorToken => vec![("authorization", format!("Bearer {}", self.tokens.0))],
            Who::ComplianceToken => vec![("authorization", format!("Bearer {}", self.tokens.1))],
            Who::BadToken => vec![("authorization", "Bearer ugw_not-a-token-this-gateway-knows".into())],
        }
    }

    fn http(&self, who: Who) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).unwrap());
        if who == Who::AdvisorCert {
            let pem = format!("{}{}", self.pki.client_cert, self.pki.client_key);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    }

    async fn grpc(&self, who: Who) -> pb::upload_gateway_client::UploadGatewayClient<Channel> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.pki.ca_pem)).domain_name("localhost");
        if who == Who::AdvisorCert {
            tls = tls.identity(TlsIdentity::from_pem(&self.pki.client_cert, &self.pki.client_key));
        }
        let channel = Channel::from_shared(self.https.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
        pb::upload_gateway_client::UploadGatewayClient::new(channel)
    }

    fn request<T>(&self, who: Who, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        for (k, v) in self.headers(who) {
            req.metadata_mut().insert(k, v.parse().unwrap());
        }
        req
    }

    /// An advisor payload uploaded by org A over REST; its request id.
    async fn upload_as_org_a(&self, bytes: &'static [u8]) -> String {
        Upload::new(ADVISOR, bytes).file_name("a.tgz").identity("0001", "orgA").accepted(&self.http(Who::OrgA), &self.https).await
    }

    fn quarantine(&self) -> Vec<String> {
        self.t.bucket_files("quarantine")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_verb_answers_each_caller_as_the_trust_table_says() {
    let g = gateway().await;
    let p = g.upload_as_org_a(b"org A's advisor payload").await;

    // track (REST) and GetStatus / WatchStatus (gRPC): the owner and validators; 404 to
    // everyone else, as for an unknown id; a bad token is 401 on any route.
    for who in EVERYONE {
        let want: u16 = match who {
            Who::OrgA | Who::AdvisorToken | Who::ComplianceToken | Who::AdvisorCert => 200,
            Who::Nobody | Who::OrgB => 404,
            Who::BadToken => 401,
        };
        let mut req = g.http(who).get(format!("{}/api/ingress/v1/track/{p}", g.https));
        for (k, v) in g.headers(who) {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(status, want, "track as {who:?}: {body}");
        if want == 404 {
            assert_eq!(body, format!("no payload with request id {p} is known"), "{who:?}: says nothing more than for an unknown id");
            assert!(!body.contains("orgA"));
        }
        let want_code = match want {
            200 => Code::Ok,
            404 => Code::NotFound,
            _ => Code::Unauthenticated,
        };
        let got = g.grpc(who).await.get_status(g.request(who, pb::StatusRequest { request_id: p.clone() })).await;
        assert_eq!(got.as_ref().map_or_else(|s| s.code(), |_| Code::Ok), want_code, "GetStatus as {who:?}: {got:?}");
        let got = g.grpc(who).await.watch_status(g.request(who, pb::StatusRequest { request_id: p.clone() })).await;
        assert_eq!(got.as_ref().map_or_else(|s| s.code(), |_| Code::Ok), want_code, "WatchStatus as {who:?}");
    }

    // Subscribe and Download: validators of the payload's service only.
    for who in EVERYONE {
        let want = match who {
            Who::AdvisorToken | Who::AdvisorCert => Code::Ok,
            Who::ComplianceToken => Code::PermissionDenied,
            _ => Code::Unauthenticated,
        };
        let sub = g.grpc(who).await.subscribe(g.request(who, pb::SubscribeRequest { service: "advisor".into() })).await;
        match sub {
            Ok(resp) => {
                assert_eq!(want, Code::Ok, "Subscribe as {who:?} was let in");
                let a = tokio::time::timeout(Duration::from_secs(10), resp.into_inner().next()).await.unwrap().unwrap().unwrap();
                assert_eq!(a.request_id, p, "the subscriber gets the payload");
            }
            Err(s) => assert_eq!(s.code(), want, "Subscribe as {who:?}: {s:?}"),
        }
        let down = g.grpc(who).await.download(g.request(who, pb::DownloadRequest { request_id: p.clone() })).await;
        match down {
            Ok(resp) => {
                assert_eq!(want, Code::Ok, "Download as {who:?} was let in");
                let chunks: Vec<_> = resp.into_inner().collect().await;
                let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().data.to_vec()).collect();
                assert_eq!(bytes, b"org A's advisor payload");
            }
            Err(s) => assert_eq!(s.code(), want, "Download as {who:?}: {s:?}"),
        }
    }

    // ValidationResult: refused without a validator credential; a verdict from a
    // validator of another service is acked FORBIDDEN and changes nothing.
    for who in EVERYONE {
        if matches!(who, Who::AdvisorToken | Who::AdvisorCert) {
            continue; // allowed: it decides below, once
        }
        let verdicts = futures_util::stream::iter(vec![pb::Verdict { request_id: p.clone(), validation: "success".into(), reason: String::new(), ..Default::default() }]);
        let got = g.grpc(who).await.validation_result(g.request(who, verdicts)).await;
        match who {
            Who::ComplianceToken => {
                let ack = got.unwrap().into_inner().next().await.unwrap().unwrap();
                assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Forbidden as i32, "{}", ack.message);
                assert!(ack.message.contains("not for \"advisor\""), "{}", ack.message);
            }
            Who::AdvisorToken | Who::AdvisorCert => unreachable!("skipped above"),
            _ => assert_eq!(got.err().map(|s| s.code()), Some(Code::Unauthenticated), "ValidationResult as {who:?}"),
        }
        // Every refusal left the payload where it was, and nothing was advertised.
        assert_eq!(g.quarantine(), [p.clone()], "after {who:?}");
        assert!(g.t.bucket_files("perm").is_empty() && g.t.bucket_files("reject").is_empty());
    }
    // The advisor validator (by certificate) decides, and that is the only decision.
    let verdicts = futures_util::stream::iter(vec![pb::Verdict { request_id: p.clone(), validation: "failure".into(), reason: "checked".into(), ..Default::default() }]);
    let mut acks = g.grpc(Who::AdvisorCert).await.validation_result(g.request(Who::AdvisorCert, verdicts)).await.unwrap().into_inner();
    assert_eq!(acks.next().await.unwrap().unwrap().outcome, pb::verdict_ack::Outcome::Rejected as i32);
    assert_eq!(g.t.bucket_files("reject"), [p.clone()]);
    let available = g.t.app.queue().subscribe("platform.upload.available", "trust-check").await.unwrap();
    let none = tokio::time::timeout(Duration::from_millis(300), Box::pin(available).next()).await;
    assert!(none.is_err(), "nothing was advertised");
}

/// gRPC-Web (browsers, tonic-web clients, on the same port) is held to the same
/// rules: the validator verbs need a credential for the payload's service, and a
/// status read by another org is NOT_FOUND, as for an unknown id.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_calls_are_held_to_the_same_roles() {
    use crate::common::grpc_web::{call, WebAnswer};
    use prost::Message as _;
    let g = gateway().await;
    let bytes = b"org A's payload, seen over gRPC-Web";
    let p = g.upload_as_org_a(bytes).await;
    let web = |who: Who, method: &str, msg: Vec<u8>, max_frames: usize| {
        let url = format!("{}/upload.v1.UploadGateway/{method}", g.https);
        let (http, headers) = (g.http(who), g.headers(who));
        async move { call(&http, &url, &headers, msg, max_frames).await }
    };
    let refused = |a: &WebAnswer, code: &str, what: &str| {
        assert_eq!(a.http, 200, "{what}: gRPC-Web answers errors in gRPC terms: {a:?}");
        assert_eq!(a.status, code, "{what}: {a:?}");
        assert!(a.frames.is_empty(), "{what}: no message with a refusal");
    };

    // Subscribe and Download: 16 without a (good) credential, 7 for another service.
    let subscribe = pb::SubscribeRequest { service: "advisor".into() }.encode_to_vec();
    let download = pb::DownloadRequest { request_id: p.clone() }.encode_to_vec();
    for (who, code) in [(Who::Nobody, "16"), (Who::BadToken, "16"), (Who::OrgA, "16"), (Who::ComplianceToken, "7")] {
        refused(&web(who, "Subscribe", subscribe.clone(), 1).await, code, &format!("Subscribe as {who:?}"));
        refused(&web(who, "Download", download.clone(), 100).await, code, &format!("Download as {who:?}"));
    }
    // The advisor validator gets the work and the bytes.
    let work = web(Who::AdvisorToken, "Subscribe", subscribe, 1).await;
    assert_eq!((work.http, work.frames.len()), (200, 1), "{work:?}");
    assert_eq!(pb::Announcement::decode(&work.frames[0][..]).unwrap().request_id, p);
    let got = web(Who::AdvisorToken, "Download", download, 100).await;
    assert_eq!(got.status, "0", "{got:?}");
    let chunks: Vec<_> = got.frames.iter().map(|f| pb::DownloadChunk::decode(&f[..]).unwrap()).collect();
    assert_eq!(chunks.iter().flat_map(|c| c.data.to_vec()).collect::<Vec<u8>>(), bytes);

    // ValidationResult: 16 without a credential; another service's validator is acked
    // FORBIDDEN (as over gRPC) and nothing moves; the advisor validator decides.
    let verdict = |validation: &str| pb::Verdict { request_id: p.clone(), validation: validation.into(), ..Default::default() }.encode_to_vec();
    refused(&web(Who::Nobody, "ValidationResult", verdict("success"), 100).await, "16", "ValidationResult with no credential");
    let ack = |a: &WebAnswer| pb::VerdictAck::decode(&a.frames.first().unwrap_or_else(|| panic!("an ack: {a:?}"))[..]).unwrap();
    let other = web(Who::ComplianceToken, "ValidationResult", verdict("success"), 100).await;
    assert_eq!(ack(&other).outcome, pb::verdict_ack::Outcome::Forbidden as i32, "{:?}", ack(&other).message);
    assert_eq!(g.quarantine(), [p.clone()], "nothing moved");
    let decided = web(Who::AdvisorToken, "ValidationResult", verdict("success"), 100).await;
    assert_eq!(ack(&decided).outcome, pb::verdict_ack::Outcome::Promoted as i32, "{:?}", ack(&decided).message);
    assert_eq!(g.t.bucket_files("perm"), [p.clone()]);

    // GetStatus: the owner sees it; org B and nobody get NOT_FOUND, as for an unknown id.
    let status = |id: &str| pb::StatusRequest { request_id: id.into() }.encode_to_vec();
    let own = web(Who::OrgA, "GetStatus", status(&p), 100).await;
    assert_eq!(own.status, "0", "{own:?}");
    assert_eq!(pb::StatusHistory::decode(&own.frames[0][..]).unwrap().request_id, p);
    let unknown = web(Who::OrgB, "GetStatus", status("no-such-payload-0001"), 100).await;
    for who in [Who::OrgB, Who::Nobody] {
        let a = web(who, "GetStatus", status(&p), 100).await;
        refused(&a, "5", &format!("GetStatus as {who:?}"));
        assert_eq!(a.message.replace(&p, "ID"), unknown.message.replace("no-such-payload-0001", "ID"), "says no more than for an unknown id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cannot_name_another_identity_or_id_in_its_body() {
    let g = gateway().await;
    let header = |identity: &str, request_id: &str| {
        #[allow(deprecated)]
        pb::UploadRequest {
            part: Some(pb::upload_request::Part::Header(pb::UploadHeader {
                content_type: ADVISOR.into(),
                identity: identity.into(),
                request_id: request_id.into(),
                ..Default::default()
            })),
        }
    };
    let chunk = pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(b"x".to_vec().into())) };
    let (a, b) = (identity("0001", "orgA"), identity("0002", "orgB"));
    // Metadata says org A, the header org B: refused, never silently preferred.
    let mut req = g.request(Who::OrgA, futures_util::stream::iter(vec![header(&b, ""), chunk.clone()]));
    req.metadata_mut().insert("x-rh-insights-request-id", "idfrommetadata01".parse().unwrap());
    let err = g.grpc(Who::OrgA).await.upload(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("x-rh-identity"), "{}", err.message());
    // The same with the request id.
    let mut req = g.request(Who::OrgA, futures_util::stream::iter(vec![header("", "idfrombody0001"), chunk.clone()]));
    req.metadata_mut().insert("x-rh-insights-request-id", "idfrommetadata01".parse().unwrap());
    let err = g.grpc(Who::OrgA).await.upload(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(g.quarantine().is_empty(), "nothing was stored");
    // Equal values, or the header alone (no metadata), are accepted as before.
    let req = g.request(Who::OrgA, futures_util::stream::iter(vec![header(&a, ""), chunk.clone()]));
    let r = g.grpc(Who::OrgA).await.upload(req).await.unwrap().into_inner();
    assert_eq!(r.org_id, "orgA");
    let req = g.request(Who::Nobody, futures_util::stream::iter(vec![header(&b, "idfrombody0001"), chunk]));
    let r = g.grpc(Who::Nobody).await.upload(req).await.unwrap().into_inner();
    assert_eq!((r.org_id.as_str(), r.request_id.as_str()), ("orgB", "idfrombody0001"));
}

/// How a racing upload is sent.
#[derive(Debug, Clone, Copy)]
enum Via {
    Rest,
    Grpc,
}

/// One upload of `bytes` under request id `id` to the gateway at `base`; the answer
/// as an HTTP status (a gRPC OK as 202, ALREADY_EXISTS as 409, anything else as 0)
/// and its text.
async fn upload_as(via: Via, base: String, id: &str, bytes: Vec<u8>) -> (u16, String) {
    match via {
        Via::Rest => {
            let resp = Upload::new(ADVISOR, bytes).file_name("a.tgz").request_id(id).send(&reqwest::Client::new(), &base).await;
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
        Via::Grpc => {
            let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base).await.unwrap();
            let msgs = vec![
                pb::UploadRequest { part: Some(pb::upload_request::Part::Header(pb::UploadHeader { content_type: ADVISOR.into(), ..Default::default() })) },
                pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(bytes.into())) },
            ];
            let mut req = tonic::Request::new(futures_util::stream::iter(msgs));
            req.metadata_mut().insert("x-rh-insights-request-id", id.parse().unwrap());
            match client.upload(req).await {
                Ok(_) => (202, String::new()),
                Err(s) if s.code() == Code::AlreadyExists => (409, s.message().to_string()),
                Err(s) => (0, format!("{s:?}")),
            }
        }
    }
}

/// Sends every upload at once (upload `i` is `body(i)`, through `targets[i]`); checks
/// that exactly one got 2xx and every other 409 naming the id, and returns the index
/// of the one that won.
async fn race(targets: &[(Via, String)], id: &str, body: impl Fn(usize) -> Vec<u8>) -> usize {
    let uploads = targets.iter().enumerate().map(|(i, (via, base))| {
        let upload = upload_as(*via, base.clone(), id, body(i));
        async move { (i, *via, upload.await) }
    });
    let results = futures_util::future::join_all(uploads).await;
    let won: Vec<_> = results.iter().filter(|r| r.2 .0 == 202).collect();
    assert_eq!(won.len(), 1, "exactly one upload wins: {results:?}");
    for (i, via, (status, text)) in results.iter().filter(|r| r.2 .0 != 202) {
        assert_eq!(*status, 409, "upload {i} ({via:?}): {text}");
        assert!(text.contains(id), "upload {i} ({via:?}) says which id: {text}");
    }
    won[0].0
}

/// Twenty uploads with one request id at once, ten over REST and ten over gRPC:
/// exactly one 2xx, the others 409 / ALREADY_EXISTS, the stored bytes and meta are
/// the winner's, one announcement.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_is_used_once_whatever_the_timing() {
    let t = spawn_app(&[]).await;
    let id = "race-0000000000000000000000000001";
    let body = |i: usize| format!("payload number {i} of the race").into_bytes();
    let targets: Vec<_> = (0..20).map(|i| (if i < 10 { Via::Rest } else { Via::Grpc }, t.base.clone())).collect();
    let winner = body(race(&targets, id, body).await);
    let stored = crate::common::local_bytes(t.data.path(), "quarantine", id).unwrap();
    assert_eq!(stored, winner, "the stored bytes are the winner's");
    let meta: serde_json::Value = serde_json::from_slice(&crate::common::local_meta(t.data.path(), "quarantine", id).unwrap()).unwrap();
    assert_eq!(meta["sha256"], sha256_hex(&winner), "and so is the stored meta");
    let announce = t.next_message("platform.upload.advisor", "race-check").await;
    assert_eq!(announce.key, id);
    let mut sub = t.app.queue().subscribe("platform.upload.advisor", "race-check").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next()).await.is_err(), "one announcement only");
}

#[tokio::test]
async fn the_embedded_default_makes_a_private_validator_token_and_needs_it() {
    use std::os::unix::fs::PermissionsExt;
    let t = spawn_app(&[]).await;
    let token_file = t.data.path().join("validator-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is the owner's only");
    let mode = std::fs::metadata(t.data.path().join(".signing-key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "so is the URL signing key");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(t.base.clone()).await.unwrap();
    let err = client.subscribe(pb::SubscribeRequest { service: "advisor".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("authorization: Bearer"), "says what to send: {}", err.message());
    let mut req = tonic::Request::new(pb::SubscribeRequest { service: "advisor".into() });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert!(client.subscribe(req).await.is_ok());
    // The token survives a restart: the same file, the same token.
    let data = t.data;
    t.app.stop().await.unwrap();
    let t = spawn_app_in(data, &[]).await;
    assert_eq!(std::fs::read_to_string(t.data.path().join("validator-token")).unwrap().trim(), token);
}

/// The same race across two gateways sharing one S3 store (MinIO, which honours
/// `If-None-Match: *`): twenty uploads of one request id, split between them, at once.
/// Exactly one 2xx; the object and its meta are the winner's.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_is_used_once_across_two_gateways_on_one_s3() {
    use crate::common::s3::*;
    let env = S3Env::minio_from_test_env();
    let buckets = Buckets::unique("race");
    let flags = s3_flags(&env, &buckets, &[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (a, b) = (spawn_app(&flags).await, spawn_app(&flags).await);
    let id = "race-s3-000000000000000000000001";
    let body = |i: usize| format!("payload number {i} of the race across gateways").into_bytes();
    let targets: Vec<_> = (0..20).map(|i| (Via::Rest, if i % 2 == 0 { a.base.clone() } else { b.base.clone() })).collect();
    let winner = body(race(&targets, id, body).await);
    assert_stored_on_s3(&env, &buckets, id, &winner).await;
}

/// The object and the meta (its sha256) under `id` in quarantine are `winner`'s.
async fn assert_stored_on_s3(env: &crate::common::s3::S3Env, buckets: &crate::common::s3::Buckets, id: &str, winner: &[u8]) {
    let s3 = env.client();
    let object = s3.get_object().bucket(&buckets.quarantine).key(id).send().await.unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes().to_vec(), winner, "the stored bytes are the winner's");
    let meta = crate::common::s3::stored_meta(&s3, &buckets.quarantine, id).await.expect("the winner's meta is stored");
    assert_eq!(meta["sha256"], sha256_hex(winner), "and so is its meta");
}

/// The race across two gateway processes (the binary, each with its own data folder
/// and start-up, as two replicas run) sharing one Kafka broker and one S3 store
/// (MinIO): twenty uploads of one request id at once, over REST and gRPC to each.
/// Exactly one 2xx; the object and meta are the winner's; and one announcement on the
/// service's topic: none is sent for a loser, on either replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_is_used_once_across_two_gateway_processes_on_kafka_and_s3() {
    use crate::common::s3::*;
    use crate::kafka::support::{records_for, wait_records, Names, BROKER};
    let _broker = BROKER.read().await;
    let n = Names::new("race2");
    let env = S3Env::minio_from_test_env();
    let buckets = Buckets::unique("race2");
    let flags = s3_flags(&env, &buckets, &as_strs(&n.flags()));
    let (a, b) = crate::common::two_gateways(&flags).await;
    assert_ne!(a.pid(), b.pid());

    let id = "race-two-processes-0000000000001";
    let body = |i: usize| format!("payload number {i} of the race across processes").into_bytes();
    let targets: Vec<_> = (0..20)
        .map(|i| {
            let via = if i % 4 < 2 { Via::Rest } else { Via::Grpc };
            (via, if i % 2 == 0 { a.base.clone() } else { b.base.clone() })
        })
        .collect();
    let winner = body(race(&targets, id, body).await);
    assert_stored_on_s3(&env, &buckets, id, &winner).await;

    // One announcement, the winner's; a second one would come within moments of the
    // first (every upload was answered before this point).
    let topic = n.announce("advisor");
    let first = wait_records(&topic, id, 1, Duration::from_secs(30)).await;
    assert_eq!(first[0].json()["sha256"], sha256_hex(&winner), "the announcement is the winner's");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(records_for(&topic, id).await.len(), 1, "one announcement only");
    drop((a, b));
    n.cleanup().await;
}
