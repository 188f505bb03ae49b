//! Where credentials come from: the credentials file (`VALIDATOR_CREDENTIALS_FILE`),
//! re-read when it changes or on SIGHUP; or, without one, the embedded default's
//! single token, made on first start and kept in `<data>/validator-token` (0600).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{make_token, Credentials, Table};

/// The embedded default's token file, in the data folder.
pub const TOKEN_FILE: &str = "validator-token";

/// Loads the credentials at start-up. With a file, its errors stop the start with
/// a sentence naming the line; without, the embedded token is read or made.
pub async fn open(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<Arc<Credentials>> {
    match file {
        Some(path) => {
            let table = read(path).await.map_err(|e| anyhow::anyhow!("VALIDATOR_CREDENTIALS_FILE {}: {e}", path.display()))?;
            if table.is_empty() {
                tracing::warn!(file = %path.display(), "the credentials file names no credential: no validator can call in");
            }
            Ok(Arc::new(Credentials::new(table)))
        }
        None => {
            let path = data_dir.join(TOKEN_FILE);
            let token = match tokio::fs::read_to_string(&path).await {
                Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    let t = make_token();
                    write_private(&path, format!("{t}\n").as_bytes())
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot write the validator token to {}: {e}", path.display()))?;
                    t
                }
            };
            tracing::info!(
                token_file = %path.display(),
                "validators authenticate with the token in this file (upload-gateway validate --token-file, or `authorization: Bearer <token>`)"
            );
            Ok(Arc::new(Credentials::new(Table::single_token("embedded", &token))))
        }
    }
}

async fn read(path: &Path) -> Result<Table, String> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| format!("cannot read: {e}"))?;
    Table::parse(&text)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the credentials file when it changes (looked at every 2 s) or on SIGHUP,
/// until shutdown. A file that no longer parses is logged and the old credentials
/// stay in force.
pub async fn watch(credentials: Arc<Credentials>, path: PathBuf, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut last = stamp(&path);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = stamp(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match read(&path).await {
            Ok(table) => {
                credentials.replace(table);
                tracing::info!(file = %path.display(), "validator credentials reloaded");
            }
            Err(e) => tracing::error!(file = %path.display(), error = %e, "validator credentials not reloaded; the old ones stay in force"),
        }
    }
}

/// Writes a secret to a file only its owner can read (mode 0600), replacing it.
pub async fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await?
}
