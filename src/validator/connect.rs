//! How the built-in validator reaches the gateway: its gRPC endpoint (plain http, or
//! https with a CA file) and its credential, sent as `authorization: Bearer <token>`
//! on every call.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::grpc::pb::upload_gateway_client::UploadGatewayClient;

/// The gateway client the validator uses: every call carries the credential.
pub type Client = UploadGatewayClient<InterceptedService<Channel, Bearer>>;

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The validator token. Default: read from --token-file.
    #[arg(long, env = "UPLOAD_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the validator token. Default: `<--data-dir>/validator-token`,
    /// the token the gateway's embedded default made on its first start.
    #[arg(long, env = "UPLOAD_GATEWAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The gateway's data folder, where the embedded default keeps its token.
    #[arg(long = "data-dir", env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PEM file of the CA that signed the gateway's certificate, for https:// URLs.
    /// Default: the system's roots.
    #[arg(long, env = "UPLOAD_GATEWAY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The token: --token, else --token-file, else the data folder's token file.
    pub fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        let path = self
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::auth::source::TOKEN_FILE));
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no validator token: cannot read {} (give --token, --token-file, or --data-dir of the gateway)",
                path.display()
            )
        })?;
        anyhow::ensure!(!token.trim().is_empty(), "{} is empty", path.display());
        Ok(token.trim().to_string())
    }

    /// The gateway's gRPC endpoint: http:// plain, https:// with TLS.
    pub fn endpoint(&self, gateway: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(gateway.to_string())
            .map_err(|e| anyhow::anyhow!("--gateway {gateway:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if gateway.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca_file {
                Some(ca) => {
                    let pem = std::fs::read(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
                    tls.ca_certificate(Certificate::from_pem(pem))
                }
                None => tls.with_enabled_roots(),
            };
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        } else if !gateway.starts_with("http://") {
            anyhow::bail!("--gateway {gateway:?}: give an http:// or https:// URL, e.g. http://gateway:8080");
        }
        Ok(endpoint)
    }

    /// A client on `channel` that sends the token with every call.
    pub fn client(&self, channel: Channel) -> anyhow::Result<Client> {
        client(channel, &self.token()?)
    }
}

/// A gateway client on `channel` that sends `token` with every call.
pub fn client(channel: Channel, token: &str) -> anyhow::Result<Client> {
    let value = MetadataValue::try_from(format!("Bearer {token}"))
        .context("the validator token has characters a header cannot carry")?;
    Ok(UploadGatewayClient::with_interceptor(channel, Bearer(value)).max_decoding_message_size(16 << 20))
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}
