//! Resumable uploads on S3: being built (issue #14). Until then every call is refused
//! with a clear error.

use super::S3Storage;
use crate::error::{Error, Result};
use crate::storage::resumable::{UploadRecord, UploadWriter};
use crate::storage::ObjectMeta;

fn not_yet() -> Error {
    Error::Internal("resumable uploads on S3 are not built yet".into())
}

impl S3Storage {
    pub(super) async fn create_upload(&self, _rec: &UploadRecord) -> Result<()> {
        Err(not_yet())
    }
    pub(super) async fn load_upload(&self, _id: &str) -> Result<Option<UploadRecord>> {
        Err(not_yet())
    }
    pub(super) async fn save_upload(&self, _rec: &UploadRecord) -> Result<bool> {
        Err(not_yet())
    }
    pub(super) async fn upload_writer(&self, _rec: &UploadRecord) -> Result<Box<dyn UploadWriter>> {
        Err(not_yet())
    }
    pub(super) async fn finish_upload(&self, _rec: &UploadRecord, _meta: ObjectMeta) -> Result<ObjectMeta> {
        Err(not_yet())
    }
    pub(super) async fn remove_upload(&self, _rec: &UploadRecord) -> Result<()> {
        Err(not_yet())
    }
    pub(super) async fn list_uploads(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
