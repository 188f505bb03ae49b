//! The durable-write ceiling of a disk, with no network and no gateway: each
//! "upload" is the least a crash-safe store must do with a payload: write it to a
//! temp file, fsync it, rename it into place and fsync the folder.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::driver::Uploader;

pub struct DiskWriter {
    dir: Arc<PathBuf>,
    bytes: Bytes,
}

impl DiskWriter {
    pub fn new(dir: Arc<PathBuf>, bytes: Bytes) -> Self {
        DiskWriter { dir, bytes }
    }
}

/// Makes `<dir>/tmp` and `<dir>/objects`.
pub fn prepare(target: &str) -> anyhow::Result<Arc<PathBuf>> {
    let dir = PathBuf::from(target);
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::create_dir_all(dir.join("objects"))?;
    Ok(Arc::new(dir))
}

fn write_one(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join("tmp").join(&name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    let objects = dir.join("objects");
    std::fs::rename(&tmp, objects.join(&name))?;
    std::fs::File::open(&objects)?.sync_all()
}

impl Uploader for DiskWriter {
    async fn upload(&mut self) -> Result<(), String> {
        let (dir, bytes) = (self.dir.clone(), self.bytes.clone());
        tokio::task::spawn_blocking(move || write_one(&dir, &bytes))
            .await
            .map_err(|_| "panicked".to_string())?
            .map_err(|e| format!("io: {}", e.kind()))
    }
}
