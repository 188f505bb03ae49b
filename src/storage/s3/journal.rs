//! This gateway's unfinished multipart uploads, one small file each in its data folder
//! (`<data>/s3-uploads/`): written once S3 has given the upload its id, removed when
//! the upload completes or is aborted. After a SIGKILL the next start aborts what the
//! files name at once, instead of waiting for the stale age that the periodic sweep
//! needs to keep its hands off other replicas' uploads.
//!
//! The files are not fsynced: a killed process leaves its writes in the page cache;
//! what a power loss takes with it, the stale-age sweep still removes.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
}

#[derive(Debug, Clone)]
pub(super) struct Journal {
    dir: PathBuf,
}

impl Journal {
    pub fn new(dir: PathBuf) -> Self {
        Journal { dir }
    }

    /// Notes an upload S3 has started; returns its file, to pass to [`Journal::done`].
    /// A journal that cannot be written costs only the fast clean-up, so the upload
    /// goes on (with a warning).
    pub async fn add(&self, entry: &Entry) -> Option<PathBuf> {
        let path = self.dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        let bytes = serde_json::to_vec(entry).ok()?;
        let written = match tokio::fs::write(&path, &bytes).await {
            // The folder is made with the first upload.
            Err(e) if e.kind() == ErrorKind::NotFound => match tokio::fs::create_dir_all(&self.dir).await {
                Ok(()) => tokio::fs::write(&path, &bytes).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e,
                    "cannot note an unfinished upload; after a crash the stale-age sweep removes it");
                None
            }
        }
    }

    /// The upload is finished or aborted.
    pub async fn done(path: &Path) {
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a journal file"),
        }
    }

    /// What an earlier life of this gateway left unfinished. Unreadable files (cut
    /// short by a crash while being written) are removed.
    pub async fn entries(&self) -> Vec<(PathBuf, Entry)> {
        let mut out = Vec::new();
        let Ok(mut dir) = tokio::fs::read_dir(&self.dir).await else {
            return out;
        };
        while let Ok(Some(e)) = dir.next_entry().await {
            let path = e.path();
            let parsed = tokio::fs::read(&path)
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            match parsed {
                Some(entry) => out.push((path, entry)),
                None => Self::done(&path).await,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_come_back_until_done_and_broken_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path().join("s3-uploads"));
        assert!(j.entries().await.is_empty(), "no folder yet: nothing to do");
        let e = Entry { bucket: "b".into(), key: "k".into(), upload_id: "u1".into() };
        let path = j.add(&e).await.unwrap();
        let other = j.add(&Entry { upload_id: "u2".into(), ..e.clone() }).await.unwrap();
        std::fs::write(dir.path().join("s3-uploads/cut.json"), b"{\"bucket\":").unwrap();
        let mut got: Vec<String> = j.entries().await.into_iter().map(|(_, e)| e.upload_id).collect();
        got.sort();
        assert_eq!(got, ["u1", "u2"]);
        assert!(!dir.path().join("s3-uploads/cut.json").exists());
        Journal::done(&path).await;
        Journal::done(&path).await; // twice is fine
        assert_eq!(j.entries().await, vec![(other, Entry { upload_id: "u2".into(), ..e })]);
    }
}
