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
        let verdicts = futures_util::stream::iter(vec![pb::Verdict { request_id: p.clone(), validation: "success".into(), reason: String::new(), ..Default::default() }]);
        let got = g.grpc(who).await.validation_result(g.request(who, verdicts)).await;
        match who {
            Who::ComplianceToken => {
                let ack = got.unwrap().into_inner().next().await.unwrap().unwrap();
                assert_eq!(ack.outcome, pb::verdict_ack::Outcome::Forbidden as i32, "{}", ack.message);
                assert!(ack.message.contains("not for \"advisor\""), "{}", ack.message);
            }
            Who::AdvisorToken | Who::AdvisorCert => {} // allowed: decided below, once
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

/// Twenty uploads with one request id at once, ten over REST and ten over gRPC:
/// exactly one 2xx, the others 409 / ALREADY_EXISTS, the stored bytes and meta are
/// the winner's, one announcement.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_is_used_once_whatever_the_timing() {
    let t = spawn_app(&[]).await;
    let id = "race-0000000000000000000000000001";
    let body = |i: usize| format!("payload number {i} of the race").into_bytes();
    let rest = (0..10).map(|i| {
        let (http, base, bytes) = (t.http.clone(), t.base.clone(), body(i));
        async move {
            let resp = Upload::new(ADVISOR, bytes).file_name("a.tgz").request_id(id).send(&http, &base).await;
            (i, resp.status().as_u16(), resp.text().await.unwrap())
        }
    });
    let grpc = (10..20).map(|i| {
        let (base, bytes) = (t.base.clone(), body(i));
        async move {
            let mut client = pb::upload_gateway_client::UploadGatewayClient::connect(base).await.unwrap();
            let msgs = vec![
                pb::UploadRequest { part: Some(pb::upload_request::Part::Header(pb::UploadHeader { content_type: ADVISOR.into(), ..Default::default() })) },
                pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(bytes.into())) },
            ];
            let mut req = tonic::Request::new(futures_util::stream::iter(msgs));
            req.metadata_mut().insert("x-rh-insights-request-id", id.parse().unwrap());
            match client.upload(req).await {
                Ok(_) => (i, 202, String::new()),
                Err(s) if s.code() == Code::AlreadyExists => (i, 409, s.message().to_string()),
                Err(s) => (i, 0, format!("{s:?}")),
            }
        }
    });
    let (mut results, g) = tokio::join!(futures_util::future::join_all(rest), futures_util::future::join_all(grpc));
    results.extend(g);
    let won: Vec<_> = results.iter().filter(|r| r.1 == 202).collect();
    assert_eq!(won.len(), 1, "exactly one upload wins: {results:?}");
    for (i, status, text) in results.iter().filter(|r| r.1 != 202) {
        assert_eq!(*status, 409, "upload {i}: {text}");
        assert!(text.contains(id), "upload {i} says which id: {text}");
    }
    let winner = body(won[0].0);
    let stored = std::fs::read(t.data.path().join("quarantine").join(id)).unwrap();
    assert_eq!(stored, winner, "the stored bytes are the winner's");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(t.data.path().join("quarantine/.meta").join(format!("{id}.json"))).unwrap()).unwrap();
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
    let uploads = (0..20).map(|i| {
        let (base, http) = if i % 2 == 0 { (a.base.clone(), a.http.clone()) } else { (b.base.clone(), b.http.clone()) };
        let upload = Upload::new(ADVISOR, body(i)).request_id(id);
        async move {
            let resp = upload.send(&http, &base).await;
            (i, resp.status().as_u16(), resp.text().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(uploads).await;
    let won: Vec<_> = results.iter().filter(|r| r.1 == 202).collect();
    assert_eq!(won.len(), 1, "exactly one upload wins across the two gateways: {results:?}");
    for (i, status, text) in results.iter().filter(|r| r.1 != 202) {
        assert_eq!(*status, 409, "upload {i}: {text}");
    }
    let winner = body(won[0].0);
    let s3 = env.client();
    let object = s3.get_object().bucket(&buckets.quarantine).key(id).send().await.unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes().to_vec(), winner, "the stored bytes are the winner's");
    let meta = s3.get_object().bucket(&buckets.quarantine).key(format!(".meta/{id}.json")).send().await.unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(meta["sha256"], sha256_hex(&winner), "and so is its meta");
}
