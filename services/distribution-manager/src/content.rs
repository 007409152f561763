//! Content versions: registration from a file or a directory on the site server (streamed, hashed into a
//! manifest, never held whole), their records, and reading their plaintext back by range for sealing.

use std::path::{Path, PathBuf};

use clouddp_core::content::{
    ContentFlags, ContentType, ManifestFile, ManifestHasher, relative_path,
};
use clouddp_core::seal::{CHUNK_SIZE, DataKey, SealedLayout};
use clouddp_platform::clock::now_ms;
use clouddp_platform::confine::Roots;
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};
use tokio::io::AsyncReadExt as _;

use crate::error::{DmError, DmResult};
use crate::keys::SiteKey;

/// Bytes read from a source file at a time.
const READ_BUFFER: usize = 1 << 20;

/// A registered content version.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentRecord {
    /// `<content_id>@<version>`.
    pub id: String,
    /// `cnt-<uuid>`, shared by all versions of a name.
    pub content_id: String,
    /// 1, 2, …
    pub version: u32,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Type.
    pub content_type: ContentType,
    /// Flags.
    pub flags: ContentFlags,
    /// The folder the files were read from.
    pub source_root: String,
    /// Files, in plaintext order.
    pub files: Vec<ManifestFile>,
    /// Each source file's modification time at registration (ns since the epoch, 0 = unknown): a file whose
    /// size or time differs when it is read again has changed since registration.
    pub source_stamps: Vec<i64>,
    /// Plaintext bytes.
    pub size_bytes: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// BLAKE3 of the plaintext (None for versions registered before it was recorded).
    pub blake3: Option<[u8; 32]>,
    /// SHA-256 of each plaintext chunk.
    pub chunk_hashes: Vec<[u8; 32]>,
    /// The data key, wrapped by the site key.
    pub wrapped_key: Vec<u8>,
    /// Registration time.
    pub create_time_ms: i64,
}

impl ContentRecord {
    /// The sealed layout.
    pub fn layout(&self) -> DmResult<SealedLayout> {
        SealedLayout::new(self.size_bytes, self.chunk_size)
            .map_err(|error| DmError::Internal(format!("content {}: {error}", self.id)))
    }

    /// The data key, unwrapped.
    pub fn data_key(&self, site_key: &SiteKey) -> DmResult<DataKey> {
        let bytes = site_key.unwrap(&self.wrapped_key, &self.id)?;
        DataKey::from_bytes(&bytes).map_err(|error| DmError::Internal(error.to_string()))
    }

    /// Where the sealed object lives in a DP's store: no name, only ids.
    pub fn store_path(&self) -> String {
        format!("content/{}/v{}.sealed", self.content_id, self.version)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredManifest {
    files: Vec<StoredFile>,
    chunk_sha256: Vec<String>,
    /// BLAKE3 of the whole plaintext, hex (absent in versions registered before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blake3: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredFile {
    path: String,
    size: u64,
    sha256: String,
    /// Modification time of the source file at registration, ns since the epoch (0 = unknown).
    #[serde(default)]
    modified_ns: i64,
}

fn hash_from_hex(text: &str) -> DmResult<[u8; 32]> {
    let bytes =
        hex::decode(text).map_err(|_| DmError::Internal("stored hash is not hex".to_owned()))?;
    bytes
        .try_into()
        .map_err(|_| DmError::Internal("stored hash is not 32 bytes".to_owned()))
}

/// A validated registration request.
#[derive(Debug, Clone)]
pub struct NewContent {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Type.
    pub content_type: ContentType,
    /// Flags.
    pub flags: ContentFlags,
    /// Absolute path of a file or directory.
    pub source_path: String,
}

/// Lists the regular files under `root` (or `root` itself when it is a file), sorted by relative path.
fn collect_files(source: &Path) -> DmResult<(PathBuf, Vec<(String, PathBuf)>)> {
    let invalid = |message: String| {
        DmError::InvalidArgument(clouddp_core::ValidationError::new("source_path", message))
    };
    let metadata = std::fs::symlink_metadata(source).map_err(|error| {
        invalid(format!(
            "{} cannot be read on the site server: {error}",
            source.display()
        ))
    })?;
    if metadata.is_file() {
        let name = source
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .ok_or_else(|| invalid(format!("{} has no file name", source.display())))?;
        let root = source.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((root, vec![(relative_path(&name)?, source.to_path_buf())]));
    }
    if !metadata.is_dir() {
        return Err(invalid(format!(
            "{} is neither a file nor a directory",
            source.display()
        )));
    }
    let mut files = Vec::new();
    let mut pending = vec![source.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|error| invalid(format!("cannot list {}: {error}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|error| invalid(format!("cannot list {}: {error}", dir.display())))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|error| invalid(format!("{}: {error}", path.display())))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(source)
                    .map_err(|_| invalid(format!("{} is outside the source", path.display())))?
                    .to_string_lossy()
                    .to_string();
                files.push((relative_path(&relative)?, path));
            } else {
                return Err(invalid(format!(
                    "{} is a link or special file; content may hold regular files only",
                    path.display()
                )));
            }
        }
    }
    if files.is_empty() {
        return Err(invalid(format!("{} holds no files", source.display())));
    }
    files.sort_by(|left, right| left.0.cmp(&right.0));
    Ok((source.to_path_buf(), files))
}

/// Registers `request`: reads every file once, building the manifest, and stores the version with a fresh
/// data key wrapped by `site_key`.
pub async fn register(
    pool: &SqlitePool,
    site_key: &SiteKey,
    sources: &Roots,
    request: NewContent,
) -> DmResult<ContentRecord> {
    let source = sources
        .confine(Path::new(&request.source_path), false)
        .map_err(|refused| {
            DmError::InvalidArgument(clouddp_core::ValidationError::new("source_path", refused.0))
        })?;
    let (root, files) = tokio::task::spawn_blocking(move || collect_files(&source))
        .await
        .map_err(|error| DmError::Internal(error.to_string()))??;
    let mut hasher = ManifestHasher::new(CHUNK_SIZE);
    let mut manifest_files = Vec::with_capacity(files.len());
    let mut source_stamps = Vec::with_capacity(files.len());
    let mut buffer = vec![0_u8; READ_BUFFER];
    for (relative, path) in &files {
        let mut file = tokio::fs::File::open(path).await.map_err(|error| {
            DmError::InvalidArgument(clouddp_core::ValidationError::new(
                "source_path",
                format!("cannot read {}: {error}", path.display()),
            ))
        })?;
        clouddp_platform::confine::check_opened(&file, path).map_err(|refused| {
            DmError::InvalidArgument(clouddp_core::ValidationError::new("source_path", refused.0))
        })?;
        hasher.start_file();
        let mut size = 0_u64;
        loop {
            let read = file.read(&mut buffer).await.map_err(|error| {
                DmError::Unavailable(format!("reading {}: {error}", path.display()))
            })?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
        let metadata = file
            .metadata()
            .await
            .map_err(|error| DmError::Unavailable(format!("stat {}: {error}", path.display())))?;
        if metadata.len() != size {
            return Err(DmError::Precondition(format!(
                "{} changed while it was being registered; register the content again when it is stable",
                path.display()
            )));
        }
        source_stamps.push(modified_ns(&metadata));
        manifest_files.push(ManifestFile {
            path: relative.clone(),
            size,
            sha256: hasher.finish_file(),
        });
    }
    let digests = hasher.finish();

    let mut transaction = clouddp_platform::db::write_transaction(pool).await?;
    let existing: Option<(String, i64)> = sqlx::query_as(
        "SELECT content_id, MAX(version) FROM content_versions WHERE name = ?1 GROUP BY content_id",
    )
    .bind(&request.name)
    .fetch_optional(&mut *transaction)
    .await?;
    let (content_id, version) = match existing {
        Some((content_id, latest)) => (content_id, u32::try_from(latest + 1).unwrap_or(u32::MAX)),
        None => (format!("cnt-{}", uuid::Uuid::new_v4()), 1),
    };
    let id = format!("{content_id}@{version}");
    let data_key = DataKey::generate().map_err(|error| DmError::Internal(error.to_string()))?;
    let record = ContentRecord {
        wrapped_key: site_key.wrap(data_key.as_bytes(), &id)?,
        id,
        content_id,
        version,
        name: request.name,
        description: request.description,
        content_type: request.content_type,
        flags: request.flags,
        source_root: root.to_string_lossy().to_string(),
        files: manifest_files,
        source_stamps,
        size_bytes: digests.length,
        chunk_size: CHUNK_SIZE,
        sha256: digests.sha256,
        blake3: Some(digests.blake3),
        chunk_hashes: digests.chunk_sha256,
        create_time_ms: now_ms(),
    };
    let manifest = StoredManifest {
        files: record
            .files
            .iter()
            .zip(&record.source_stamps)
            .map(|(file, stamp)| StoredFile {
                path: file.path.clone(),
                size: file.size,
                sha256: hex::encode(file.sha256),
                modified_ns: *stamp,
            })
            .collect(),
        chunk_sha256: record.chunk_hashes.iter().map(hex::encode).collect(),
        blake3: record.blake3.map(hex::encode),
    };
    sqlx::query(
        "INSERT INTO content_versions (id, content_id, version, name, description, content_type, flags, source_path, \
         file_count, size_bytes, chunk_size, chunk_count, sha256, manifest, wrapped_key, create_time_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .bind(&record.id)
    .bind(&record.content_id)
    .bind(i64::from(record.version))
    .bind(&record.name)
    .bind(&record.description)
    .bind(record.content_type.as_str())
    .bind(serde_json::to_string(&record.flags).map_err(|error| DmError::Internal(error.to_string()))?)
    .bind(&record.source_root)
    .bind(i64::try_from(record.files.len()).unwrap_or(i64::MAX))
    .bind(i64::try_from(record.size_bytes).unwrap_or(i64::MAX))
    .bind(i64::from(record.chunk_size))
    .bind(i64::try_from(record.chunk_hashes.len()).unwrap_or(i64::MAX))
    .bind(record.sha256.to_vec())
    .bind(serde_json::to_string(&manifest).map_err(|error| DmError::Internal(error.to_string()))?)
    .bind(record.wrapped_key.clone())
    .bind(record.create_time_ms)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    tracing::info!(content = %record.id, name = %record.name, files = record.files.len(), bytes = record.size_bytes, "content registered");
    Ok(record)
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> DmResult<ContentRecord> {
    let corrupt = |what: &str| DmError::Internal(format!("stored content has an invalid {what}"));
    let manifest: StoredManifest = serde_json::from_str(&row.try_get::<String, _>("manifest")?)
        .map_err(|_| corrupt("manifest"))?;
    let files = manifest
        .files
        .iter()
        .map(|file| {
            Ok(ManifestFile {
                path: file.path.clone(),
                size: file.size,
                sha256: hash_from_hex(&file.sha256)?,
            })
        })
        .collect::<DmResult<Vec<_>>>()?;
    let source_stamps = manifest.files.iter().map(|file| file.modified_ns).collect();
    let chunk_hashes = manifest
        .chunk_sha256
        .iter()
        .map(|text| hash_from_hex(text))
        .collect::<DmResult<Vec<_>>>()?;
    let type_text: String = row.try_get("content_type")?;
    let sha: Vec<u8> = row.try_get("sha256")?;
    Ok(ContentRecord {
        id: row.try_get("id")?,
        content_id: row.try_get("content_id")?,
        version: u32::try_from(row.try_get::<i64, _>("version")?)
            .map_err(|_| corrupt("version"))?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        content_type: ContentType::parse(&type_text).ok_or_else(|| corrupt("type"))?,
        flags: serde_json::from_str(&row.try_get::<String, _>("flags")?)
            .map_err(|_| corrupt("flags"))?,
        source_root: row.try_get("source_path")?,
        files,
        source_stamps,
        size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?)
            .map_err(|_| corrupt("size"))?,
        chunk_size: u32::try_from(row.try_get::<i64, _>("chunk_size")?)
            .map_err(|_| corrupt("chunk size"))?,
        sha256: sha.try_into().map_err(|_| corrupt("hash"))?,
        blake3: manifest.blake3.as_deref().map(hash_from_hex).transpose()?,
        chunk_hashes,
        wrapped_key: row.try_get("wrapped_key")?,
        create_time_ms: row.try_get("create_time_ms")?,
    })
}

/// An empty content reference is a missing argument (INVALID_ARGUMENT), never "not found".
fn required_reference(reference: &str) -> DmResult<()> {
    if reference.trim().is_empty() {
        return Err(
            clouddp_core::ValidationError::new("content_id", "give a content id or name").into(),
        );
    }
    Ok(())
}

/// One content version by `<content_id>@<version>`, content id (latest) or name (latest).
pub async fn get(pool: &SqlitePool, id: &str) -> DmResult<ContentRecord> {
    required_reference(id)?;
    let row = sqlx::query(
        "SELECT * FROM content_versions WHERE id = ?1 OR content_id = ?1 OR name = ?1 \
         ORDER BY (id = ?1) DESC, version DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => decode(&row),
        None => Err(DmError::NotFound(format!(
            "no content has the id or name {id:?}; list them with `clouddp content list`"
        ))),
    }
}

/// All content versions, by name then version.
pub async fn list(pool: &SqlitePool) -> DmResult<Vec<ContentRecord>> {
    let rows = sqlx::query("SELECT * FROM content_versions ORDER BY name COLLATE NOCASE, version")
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

/// The modification time of a file, ns since the epoch (0 when unknown).
fn modified_ns(metadata: &std::fs::Metadata) -> i64 {
    metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|elapsed| i64::try_from(elapsed.as_nanos()).ok())
        .unwrap_or(0)
}

/// The id (`<content_id>@<version>`) a reference names, without reading the manifest.
pub async fn resolve_id(pool: &SqlitePool, reference: &str) -> DmResult<String> {
    required_reference(reference)?;
    sqlx::query_scalar(
        "SELECT id FROM content_versions WHERE id = ?1 OR content_id = ?1 OR name = ?1 \
         ORDER BY (id = ?1) DESC, version DESC LIMIT 1",
    )
    .bind(reference)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| {
        DmError::NotFound(format!(
            "no content has the id or name {reference:?}; list them with `clouddp content list`"
        ))
    })
}

/// Fills `dest` with the plaintext at `offset` of `record`, read from its source files with positional reads
/// (blocking: call it from a blocking task). The files must not have changed since registration.
pub fn read_plaintext_into(record: &ContentRecord, offset: u64, dest: &mut [u8]) -> DmResult<()> {
    use std::os::unix::fs::FileExt as _;
    let mut filled = 0;
    let mut file_start = 0_u64;
    for (file, stamp) in record.files.iter().zip(&record.source_stamps) {
        let file_end = file_start + file.size;
        let want = offset + filled as u64;
        if filled == dest.len() {
            break;
        }
        if want < file_end && file.size > 0 {
            let path = Path::new(&record.source_root).join(&file.path);
            let handle = std::fs::File::open(&path).map_err(|error| {
                DmError::Precondition(format!(
                    "source file {} of content {} cannot be read ({error}); register the content again",
                    path.display(),
                    record.id
                ))
            })?;
            clouddp_platform::confine::check_opened(&handle, &path).map_err(|refused| {
                DmError::Precondition(format!(
                    "source of content {}: {refused}; register the content again",
                    record.id
                ))
            })?;
            let metadata = handle.metadata().map_err(|error| {
                DmError::Unavailable(format!("stat {}: {error}", path.display()))
            })?;
            if metadata.len() != file.size || (*stamp != 0 && modified_ns(&metadata) != *stamp) {
                return Err(DmError::Precondition(format!(
                    "source file {} of {} changed since it was registered; register a new version",
                    path.display(),
                    record.name
                )));
            }
            let take = usize::try_from((file_end - want).min((dest.len() - filled) as u64))
                .unwrap_or(usize::MAX);
            handle.read_exact_at(&mut dest[filled..filled + take], want - file_start).map_err(|error| {
                DmError::Precondition(format!(
                    "source file {} of content {} is shorter than registered ({error}); register the content again",
                    path.display(),
                    record.id
                ))
            })?;
            filled += take;
        }
        file_start = file_end;
    }
    if filled != dest.len() {
        return Err(DmError::Internal(format!(
            "content {} has fewer bytes than asked",
            record.id
        )));
    }
    Ok(())
}
