//! The local-folder adapter: objects are files under a root folder; an upload is staged in a hidden partial
//! file (parts written at their offsets and synced), and `complete` syncs and renames it into place.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{BlobStore, ObjectInfo, StoreError, StoreResult, check_path};

/// Hidden folder under the root where uploads are staged; never listed.
const STAGING_DIR: &str = ".staging";
/// Read buffers kept for reuse, process-wide: a fresh MiB-sized allocation costs a page fault per 4 KiB, on
/// every range a content endpoint serves.
const POOLED_BUFFERS: usize = 32;
/// Larger buffers are freed, not kept (the content endpoint reads 1 MiB slices): at most 64 MiB stay idle.
const POOLED_MAX: usize = 2 << 20;

static READ_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// An empty buffer with room for `len` bytes, reused when one is free.
fn read_buffer(len: usize) -> Vec<u8> {
    let mut buffer = READ_BUFFERS
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default();
    buffer.clear();
    buffer.reserve_exact(len);
    buffer
}

/// Bytes read from a file; the buffer goes back to the pool when the last reference to them is dropped.
struct PooledRead(Vec<u8>);

impl AsRef<[u8]> for PooledRead {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PooledRead {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() <= POOLED_MAX
            && let Ok(mut pool) = READ_BUFFERS.lock()
            && pool.len() < POOLED_BUFFERS
        {
            pool.push(buffer);
        }
    }
}

/// A store in a local folder.
#[derive(Debug, Clone)]
pub struct LocalFolderStore {
    root: PathBuf,
}

fn io_error(context: &str, error: std::io::Error) -> StoreError {
    match error.kind() {
        ErrorKind::NotFound => StoreError::NotFound(format!("{context}: {error}")),
        ErrorKind::PermissionDenied => StoreError::Denied(format!("{context}: {error}")),
        ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            StoreError::Invalid(format!("{context}: {error}"))
        }
        _ => StoreError::Unavailable(format!("{context}: {error}")),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Unavailable(format!("blocking task failed: {error}")))?
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| io_error(&format!("sync {}", dir.display()), error))
}

impl LocalFolderStore {
    /// A store rooted at `root` (absolute).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn object(&self, path: &str) -> StoreResult<PathBuf> {
        check_path(path)?;
        if path.split('/').next() == Some(STAGING_DIR) {
            return Err(StoreError::Invalid(format!("{path:?} is reserved")));
        }
        Ok(self.root.join(path))
    }

    fn staging(&self, path: &str) -> StoreResult<PathBuf> {
        check_path(path)?;
        Ok(self
            .root
            .join(STAGING_DIR)
            .join(format!("{}.partial", path.replace('/', "%2F"))))
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalFolderStore {
    fn describe(&self) -> String {
        format!("folder:{}", self.root.display())
    }

    async fn ensure_container(&self) -> StoreResult<()> {
        let staging = self.root.join(STAGING_DIR);
        blocking(move || {
            std::fs::create_dir_all(&staging).map_err(|error| io_error("create folder", error))
        })
        .await
    }

    async fn delete_container(&self) -> StoreResult<()> {
        let root = self.root.clone();
        blocking(move || match std::fs::remove_dir_all(&root) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("delete folder", error)),
        })
        .await
    }

    async fn put_part(
        &self,
        path: &str,
        index: u32,
        offset: u64,
        data: Bytes,
    ) -> StoreResult<String> {
        let staging = self.staging(path)?;
        blocking(move || {
            if let Some(parent) = staging.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|error| io_error("create staging folder", error))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&staging)
                .map_err(|error| io_error("open staged upload", error))?;
            file.write_all_at(&data, offset)
                .map_err(|error| io_error("write part", error))?;
            file.sync_data()
                .map_err(|error| io_error("sync part", error))?;
            Ok(index.to_string())
        })
        .await
    }

    async fn complete(
        &self,
        path: &str,
        part_tokens: &[String],
        total_len: u64,
    ) -> StoreResult<()> {
        let staging = self.staging(path)?;
        let target = self.object(path)?;
        let parts = part_tokens.len();
        blocking(move || {
            let file =
                File::open(&staging).map_err(|error| io_error("open staged upload", error))?;
            let len = file
                .metadata()
                .map_err(|error| io_error("stat staged upload", error))?
                .len();
            if len != total_len {
                return Err(StoreError::Invalid(format!(
                    "staged upload has {len} bytes from {parts} parts, expected {total_len}"
                )));
            }
            file.sync_all()
                .map_err(|error| io_error("sync staged upload", error))?;
            let parent = target.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&parent)
                .map_err(|error| io_error("create object folder", error))?;
            std::fs::rename(&staging, &target)
                .map_err(|error| io_error("publish object", error))?;
            sync_dir(&parent)
        })
        .await
    }

    async fn abort(&self, path: &str) -> StoreResult<()> {
        let staging = self.staging(path)?;
        blocking(move || match std::fs::remove_file(&staging) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("discard staged upload", error)),
        })
        .await
    }

    async fn put(&self, path: &str, data: Bytes) -> StoreResult<()> {
        self.abort(path).await?;
        let len = data.len() as u64;
        let token = self.put_part(path, 0, 0, data).await?;
        self.complete(path, &[token], len).await
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let target = self.object(path)?;
        let display = path.to_owned();
        blocking(move || {
            let mut file = File::open(&target).map_err(|error| io_error(&display, error))?;
            let len = usize::try_from(range.end.saturating_sub(range.start))
                .map_err(|_| StoreError::Invalid("range too large".to_owned()))?;
            // `read_to_end` fills the spare capacity directly: no zeroing of a buffer about to be overwritten.
            let mut buffer = read_buffer(len);
            std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(range.start))
                .and_then(|_| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(&mut file, len as u64),
                        &mut buffer,
                    )
                })
                .map_err(|error| io_error(&display, error))?;
            if buffer.len() != len {
                return Err(StoreError::Invalid(format!(
                    "range {range:?} is beyond the end of {display}"
                )));
            }
            Ok(Bytes::from_owner(PooledRead(buffer)))
        })
        .await
    }

    async fn head(&self, path: &str) -> StoreResult<Option<u64>> {
        let target = self.object(path)?;
        blocking(move || match std::fs::metadata(&target) {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("stat object", error)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut found = Vec::new();
            let mut pending = vec![root.clone()];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == ErrorKind::NotFound => continue,
                    Err(error) => return Err(io_error("list folder", error)),
                };
                for entry in entries {
                    let entry = entry.map_err(|error| io_error("list folder", error))?;
                    let path = entry.path();
                    let relative = path
                        .strip_prefix(&root)
                        .map(|relative| relative.to_string_lossy().replace('\\', "/"))
                        .unwrap_or_default();
                    if relative == STAGING_DIR {
                        continue;
                    }
                    let metadata = entry
                        .metadata()
                        .map_err(|error| io_error("stat entry", error))?;
                    if metadata.is_dir() {
                        pending.push(path);
                    } else if relative.starts_with(&prefix) {
                        found.push(ObjectInfo {
                            path: relative,
                            size: metadata.len(),
                        });
                    }
                }
            }
            found.sort_by(|left, right| left.path.cmp(&right.path));
            Ok(found)
        })
        .await
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let target = self.object(path)?;
        blocking(move || match std::fs::remove_file(&target) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error("delete object", error)),
        })
        .await
    }
}
