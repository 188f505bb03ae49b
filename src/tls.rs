//! TLS on the one port, when a certificate is configured: ALPN offers h2 (gRPC) and
//! http/1.1 (REST), so both protocols keep sharing the port. With a client CA, clients
//! may present a certificate; a verified one's DNS names identify a validator.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

/// Loads the PEM files into an acceptor; errors say which file is wrong.
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS_CERT_FILE {}: cannot read", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("TLS_CERT_FILE {}: not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "TLS_CERT_FILE {}: holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("TLS_KEY_FILE {}: not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("TLS_CLIENT_CA_FILE {}: cannot read", ca.display()))? {
                let c = c.with_context(|| format!("TLS_CLIENT_CA_FILE {}: not PEM certificates", ca.display()))?;
                roots.add(c).with_context(|| format!("TLS_CLIENT_CA_FILE {}: not a usable CA certificate", ca.display()))?;
            }
            anyhow::ensure!(!roots.is_empty(), "TLS_CLIENT_CA_FILE {}: holds no certificate", ca.display());
            // Uploaders connect without a certificate; a certificate, when sent, must verify.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("TLS_CLIENT_CA_FILE")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("TLS_CERT_FILE and TLS_KEY_FILE do not make a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The DNS names (subjectAltName, and the subject's CN) of the client certificate the
/// handshake verified; empty without one.
pub fn peer_names(conn: &ServerConnection) -> Vec<String> {
    let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_string());
            }
        }
    }
    names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string));
    names
}
