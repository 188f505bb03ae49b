//! The resume state: one small JSON file per upload under the user's cache folder
//! (`$XDG_CACHE_HOME/upload-gateway/uploads/`, else `~/.cache/upload-gateway/uploads/`),
//! named after the file it sends (canonical path, size and modification time), so that
//! the same command run again finds the upload it began. It is written before the first
//! byte leaves, updated as the gateway commits bytes, and removed when the upload ends.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What identifies the file being sent: a file changed since (other size or time)
/// is a new upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
}

impl FileKey {
    pub fn of(path: &Path) -> anyhow::Result<FileKey> {
        let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
        let meta = std::fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
        anyhow::ensure!(meta.is_file(), "{} is not a file", path.display());
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(FileKey { path, size: meta.len(), mtime_ns })
    }

    /// The state file's name: sha256 of path, size and time.
    fn file_name(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.path.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(self.size.to_le_bytes());
        h.update(self.mtime_ns.to_le_bytes());
        format!("{}.json", hex::encode(&h.finalize()[..16]))
    }
}

/// One unfinished upload, as kept between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub file: FileKey,
    /// The gateway it was begun on (a run against another gateway starts over).
    pub gateway: String,
    /// The content type it was created with (another one starts over).
    pub content_type: String,
    /// The upload's id (the payload's request id): what gRPC names it by.
    pub upload_id: String,
    /// The tus URL of the upload, absolute.
    pub upload_url: String,
    /// The file's sha256 (hex), declared at creation.
    pub sha256: String,
    /// The bytes the gateway had committed when last heard from (the gateway's own
    /// answer to HEAD / QueryWriteStatus is what counts).
    pub offset: u64,
}

/// The folder of state files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `$XDG_CACHE_HOME/upload-gateway/uploads`, else `$HOME/.cache/upload-gateway/uploads`.
    pub fn default_dir() -> anyhow::Result<PathBuf> {
        let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(c) => PathBuf::from(c),
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .context("neither XDG_CACHE_HOME nor HOME is set: no place for the resume state (or give --no-resume)")?,
            )
            .join(".cache"),
        };
        Ok(cache.join("upload-gateway").join("uploads"))
    }

    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub fn path_for(&self, key: &FileKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The saved upload of this file, if one matches it exactly. A state file that
    /// cannot be read or parsed is ignored (and replaced by the next save).
    pub fn load(&self, key: &FileKey) -> Option<Saved> {
        let text = std::fs::read_to_string(self.path_for(key)).ok()?;
        let saved: Saved = serde_json::from_str(&text).ok()?;
        (saved.file == *key).then_some(saved)
    }

    /// Writes the state (a temp file renamed over the old one, so a kill never leaves
    /// half a file).
    pub fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.path_for(&saved.file);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(saved)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn remove(&self, key: &FileKey) {
        let _ = std::fs::remove_file(self.path_for(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(key: FileKey) -> Saved {
        Saved {
            file: key,
            gateway: "http://localhost:8080".into(),
            content_type: "application/vnd.redhat.advisor.collection+tgz".into(),
            upload_id: "abc".into(),
            upload_url: "http://localhost:8080/api/ingress/v1/uploads/abc".into(),
            sha256: "00".repeat(32),
            offset: 42,
        }
    }

    #[test]
    fn saved_state_is_found_again_for_the_same_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.tar.gz");
        std::fs::write(&file, b"hello").unwrap();
        let store = Store::new(dir.path().join("state"));
        let key = FileKey::of(&file).unwrap();
        assert_eq!(key.size, 5);
        assert!(store.load(&key).is_none());
        store.save(&saved(key.clone())).unwrap();
        // The same file by another path (relative, through `.`) is the same key.
        let again = FileKey::of(&dir.path().join(".").join("payload.tar.gz")).unwrap();
        assert_eq!(store.load(&again).unwrap().offset, 42);
        // Changed content (another size): another upload.
        std::fs::write(&file, b"hello, again").unwrap();
        let changed = FileKey::of(&file).unwrap();
        assert!(store.load(&changed).is_none());
        // Remove: gone.
        store.remove(&key);
        assert!(store.load(&key).is_none());
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path().join("state")).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_state_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let store = Store::new(dir.path().join("state"));
        let key = FileKey::of(&file).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(store.path_for(&key), b"{not json").unwrap();
        assert!(store.load(&key).is_none());
        store.save(&saved(key.clone())).unwrap();
        assert_eq!(store.load(&key).unwrap().upload_id, "abc");
    }

    #[test]
    fn a_folder_is_not_a_file_to_send() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileKey::of(dir.path()).is_err());
        assert!(FileKey::of(&dir.path().join("missing")).is_err());
    }
}
