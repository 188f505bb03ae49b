//! A payload's durable history on local disk, one small file per event:
//!
//! ```text
//! <data>/.status/<key>/<name>.json
//! ```
//! Created with `O_EXCL` (create-only: of two writers of one name, one wins) and
//! written in one call; a reader skips a file it cannot parse (a crash part-way
//! through a write). Not fsynced: a power loss may take the newest events with it,
//! never the payload or its decision record, which are; a SIGKILL loses nothing (the
//! page cache keeps the writes). One file creation per event: about as cheap as the
//! file system allows, since every upload writes one (its `announced` event).

use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use super::{io, LocalDisk};
use crate::error::Result;

impl LocalDisk {
    fn events_dir(&self, key: &str) -> PathBuf {
        self.root.join(".status").join(key)
    }

    pub(super) fn add_event_now(&self, key: &str, name: &str, event: &[u8]) -> Result<bool> {
        let dir = self.events_dir(key);
        let path = dir.join(format!("{name}.json"));
        let open = || std::fs::OpenOptions::new().write(true).create_new(true).open(&path);
        // A metadata operation of a few µs: done here, not handed to the blocking pool
        // (see `claim` in local.rs).
        let mut file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match std::fs::create_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(e)),
                }
                match open() {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        file.write_all(event).map_err(io)?;
        Ok(true)
    }

    pub(super) async fn list_events(&self, key: &str) -> Result<Vec<String>> {
        let mut dir = match tokio::fs::read_dir(self.events_dir(key)).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut names = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(io)? {
            if let Some(name) = entry.file_name().to_string_lossy().strip_suffix(".json") {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    pub(super) async fn read_events(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut events = Vec::new();
        for name in self.list_events(key).await? {
            match tokio::fs::read(self.events_dir(key).join(format!("{name}.json"))).await {
                Ok(bytes) => events.push((name, bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(events)
    }
}
