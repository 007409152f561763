//! The blob-store port: what distribution, the content endpoint and monitoring need from a DP's store, with two
//! adapters, Azure Blob Storage and a local folder. Uploads are resumable: parts are staged one by one (each
//! part's token is kept by the caller), and only `complete` makes the object visible, so a half-written object
//! is never read.

mod azure;
mod local;

use std::fmt::Debug;
use std::ops::Range;

use bytes::Bytes;

pub use azure::{
    AzureCredential, AzureStore, AzureStoreConfig, EMULATOR_ACCOUNT, container_sas, emulator_key,
};
pub use local::LocalFolderStore;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The credentials were refused; retrying will not help.
    #[error("access denied: {0}")]
    Denied(String),
    /// The path or request is invalid; retrying will not help.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The store is unreachable or failed transiently; retry with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The store no longer has parts it acknowledged (uncommitted Azure blocks expire after a week; an emulator
    /// restart loses them): stage them again, then commit.
    #[error("staged parts are gone from the store: {0}")]
    PartsLost(String),
}

impl StoreError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its path, relative to the store's root.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A DP's content store.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// A short description for logs (`azure:account/container`, `folder:/srv/dp`).
    fn describe(&self) -> String;
    /// Creates the container or folder if it does not exist, and checks the credentials.
    async fn ensure_container(&self) -> StoreResult<()>;
    /// Deletes the container or folder with everything in it.
    async fn delete_container(&self) -> StoreResult<()>;
    /// Stages part `index` (at byte `offset` of the final object) of an upload to `path`; returns the part's
    /// token, which `complete` needs. Staging a part again replaces it.
    async fn put_part(
        &self,
        path: &str,
        index: u32,
        offset: u64,
        data: Bytes,
    ) -> StoreResult<String>;
    /// Makes the object at `path` from the staged parts, in order; `total_len` is checked.
    async fn complete(&self, path: &str, part_tokens: &[String], total_len: u64)
    -> StoreResult<()>;
    /// Discards staged parts of an upload to `path` (a no-op where the store collects them itself).
    async fn abort(&self, path: &str) -> StoreResult<()>;
    /// Writes a small object at once.
    async fn put(&self, path: &str, data: Bytes) -> StoreResult<()>;
    /// Reads a byte range of an object.
    async fn get_range(&self, path: &str, range: Range<u64>) -> StoreResult<Bytes>;
    /// The size of an object, `None` when it does not exist.
    async fn head(&self, path: &str) -> StoreResult<Option<u64>>;
    /// The objects under `prefix` (all objects for an empty prefix), ordered by path.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, path: &str) -> StoreResult<()>;
}

/// Checks an object path: relative, `/`-separated, no empty, `.` or `..` component, no control characters.
pub fn check_path(path: &str) -> StoreResult<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .chars()
            .any(|character| character.is_control() || character == '\\')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(StoreError::Invalid(format!(
            "{path:?} is not a valid object path"
        )));
    }
    Ok(())
}
