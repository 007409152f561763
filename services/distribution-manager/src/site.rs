//! The site: its identity, and backup and restore of its whole configuration.
//!
//! A backup is JSON lines: a header (format, version, site code, site key fingerprint), then each table's
//! columns and rows (DPs, their sealed storage credentials, groups, content metadata with wrapped data keys,
//! distributions, client policy), then a trailer with the row count and the SHA-256 of everything before it, so
//! a damaged or truncated file is refused. Certificates are never in a backup: restored cloud DPs wait in
//! CERTIFICATES_REQUIRED until their certificates are imported again. The site key is never in a backup either:
//! a restore needs the same key, checked by its fingerprint before anything changes.

use std::sync::Arc;

use clouddp_core::dp::{DpKind, DpState};
use clouddp_platform::clock::now_ms;
use serde_json::{Value, json};
use sqlx::{Row, SqlitePool};

use crate::dp::DistributionManager;
use crate::error::{DmError, DmResult};

/// The backup format's name, on its first line.
pub const FORMAT: &str = "clouddp-site-backup";
/// The backup format's version.
pub const VERSION: u64 = 2;
/// The oldest backup format version a restore reads (version 1 carried no identities).
pub const OLDEST_VERSION: u64 = 1;
/// The size of the chunks a backup is sent in.
pub const BACKUP_CHUNK: usize = 64 * 1024;
/// The largest backup a restore accepts (configuration only; content stays in the DPs' stores).
pub const MAX_BACKUP_BYTES: usize = 512 * 1024 * 1024;

/// The tables in a backup, in an order that respects their references.
const TABLES: &[&str] = &[
    "distribution_points",
    "dp_secrets",
    "content_versions",
    "distributions",
    "distribution_parts",
    "dp_groups",
    "dp_group_members",
    "dp_group_contents",
    "client_settings",
    "client_settings_assignments",
    "boundary_groups",
    "deployments",
    "role_bindings",
    "admin_credentials",
    "enrollment_tokens",
    "devices",
];

/// A site CA from a backup.
struct RestoredCa {
    certificate: String,
    /// Its private key (PEM), opened.
    key: Vec<u8>,
    /// It is not the CA this site has now.
    replaces: bool,
}

/// The sealing context of the site CA's key in a backup.
const CA_KEY_CONTEXT: &str = "site-ca-key";

/// Columns left out of a backup: the links to certificates, which are not backed up.
const LEFT_OUT: &[(&str, &str)] = &[
    ("distribution_points", "management_certificate_id"),
    ("distribution_points", "service_certificate_id"),
];

/// What a restore brought back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// DPs.
    pub distribution_points: u32,
    /// DP groups.
    pub groups: u32,
    /// Content versions.
    pub content_versions: u32,
    /// Distributions.
    pub distributions: u32,
    /// Cloud DPs waiting for their certificates.
    pub certificates_required: u32,
    /// Enrolled devices.
    pub devices: u32,
    /// Another site CA was put in place: a restart serves with it.
    pub restart_required: bool,
}

/// The site's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteInfo {
    /// Site code.
    pub site_code: String,
    /// Site key fingerprint.
    pub fingerprint: String,
    /// When the site's database was created, ms.
    pub create_time_ms: i64,
}

/// Backup and restore over the manager's database.
#[derive(Debug, Clone)]
pub struct Site {
    manager: Arc<DistributionManager>,
    /// The site CA's folder (`ca.pem`, `ca.key`).
    ca_dir: std::path::PathBuf,
    /// The live role bindings and blocked devices, read again after a restore.
    identities: Option<(
        crate::access::AccessStore,
        crate::devices::Devices,
        crate::credentials::Credentials,
    )>,
}

struct Column {
    name: String,
    blob: bool,
}

async fn columns(pool: &SqlitePool, table: &str) -> DmResult<Vec<Column>> {
    let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
        .bind(table)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|row| Column {
            name: row.get("name"),
            blob: row.get::<String, _>("type").eq_ignore_ascii_case("BLOB"),
        })
        .filter(|column| !LEFT_OUT.contains(&(table, column.name.as_str())))
        .collect())
}

fn damaged(message: impl std::fmt::Display) -> DmError {
    DmError::InvalidArgument(clouddp_core::ValidationError::new(
        "backup",
        format!("the backup file is damaged or incomplete: {message}"),
    ))
}

impl Site {
    /// The site of `manager`, whose CA is in `ca_dir`.
    pub fn new(manager: Arc<DistributionManager>, ca_dir: std::path::PathBuf) -> Self {
        Self {
            manager,
            ca_dir,
            identities: None,
        }
    }

    /// The site whose restores refresh `access`, `devices` and `credentials`.
    pub fn with_identities(
        mut self,
        access: crate::access::AccessStore,
        devices: crate::devices::Devices,
        credentials: crate::credentials::Credentials,
    ) -> Self {
        self.identities = Some((access, devices, credentials));
        self
    }

    /// The backup line of the site CA: its certificate and its key sealed by the site key; none on a site that
    /// has no CA (run without authentication).
    fn ca_record(&self) -> DmResult<Option<Value>> {
        let key_path = self.ca_dir.join("ca.key");
        if !key_path.exists() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|error| {
                DmError::Internal(format!("cannot read {}: {error}", path.display()))
            })
        };
        let sealed = self
            .manager
            .site_key()
            .wrap(&read(&key_path)?, CA_KEY_CONTEXT)?;
        let certificate = String::from_utf8_lossy(&read(&self.ca_dir.join("ca.pem"))?).into_owned();
        Ok(Some(
            json!({ "pki": { "ca_pem": certificate, "ca_key_sealed": hex::encode(sealed) } }),
        ))
    }

    /// The CA of a backup's `record`, its key opened with this site key (so a restore with another site key
    /// fails before anything is committed).
    fn open_ca(&self, record: &Value) -> DmResult<RestoredCa> {
        let certificate = record["ca_pem"]
            .as_str()
            .ok_or_else(|| damaged("the site CA has no certificate"))?
            .to_owned();
        let sealed =
            hex::decode(record["ca_key_sealed"].as_str().unwrap_or_default()).map_err(damaged)?;
        let key = self.manager.site_key().unwrap(&sealed, CA_KEY_CONTEXT)?;
        let current = std::fs::read_to_string(self.ca_dir.join("ca.pem")).unwrap_or_default();
        Ok(RestoredCa {
            replaces: current != certificate,
            certificate,
            key,
        })
    }

    /// Puts a restored CA that replaces this site's in the data dir.
    fn put_ca(&self, ca: &RestoredCa) -> DmResult<()> {
        let failed = |error: clouddp_platform::pki::PkiError| {
            DmError::Internal(format!("cannot put the site CA in place: {error}"))
        };
        clouddp_platform::pki::write_file(&self.ca_dir.join("ca.key"), &ca.key, 0o600)
            .map_err(failed)?;
        clouddp_platform::pki::write_file(
            &self.ca_dir.join("ca.pem"),
            ca.certificate.as_bytes(),
            0o644,
        )
        .map_err(failed)?;
        tracing::warn!(dir = %self.ca_dir.display(), "the backup's site CA is in place: restart the distribution manager, then monitoring, to serve with it");
        Ok(())
    }

    fn pool(&self) -> &SqlitePool {
        self.manager.pool()
    }

    /// The site's identity.
    pub async fn info(&self) -> DmResult<SiteInfo> {
        let created: Option<i64> = sqlx::query_scalar(
            "SELECT value FROM site_counters WHERE name = 'site_create_time_ms'",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(SiteInfo {
            site_code: self.manager.site_code().to_owned(),
            fingerprint: self.manager.site_key().fingerprint().to_owned(),
            create_time_ms: created.unwrap_or(0),
        })
    }

    /// Sends a backup to `sink` in chunks of about [`BACKUP_CHUNK`] bytes, from one consistent read of the
    /// database.
    pub async fn backup(&self, sink: tokio::sync::mpsc::Sender<Vec<u8>>) -> DmResult<u64> {
        let mut pending: Vec<u8> = Vec::with_capacity(BACKUP_CHUNK * 2);
        let flush = async |pending: &mut Vec<u8>, force: bool| -> bool {
            if pending.len() < BACKUP_CHUNK && !force {
                return true;
            }
            sink.send(std::mem::take(pending)).await.is_ok()
        };
        let mut transaction = self.pool().begin().await?;
        let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut rows_written = 0_u64;
        let line = |value: Value, hasher: &mut aws_lc_rs::digest::Context| -> Vec<u8> {
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            hasher.update(&bytes);
            bytes
        };
        let gone = || DmError::Unavailable("the backup reader went away".to_owned());
        let info = self.info().await?;
        let header = json!({
            "format": FORMAT,
            "version": VERSION,
            "site_code": info.site_code,
            "site_key_fingerprint": info.fingerprint,
            "create_time_ms": now_ms(),
            "manager_version": env!("CARGO_PKG_VERSION"),
        });
        pending.extend(line(header, &mut hasher));
        if let Some(record) = self.ca_record()? {
            pending.extend(line(record, &mut hasher));
        }
        for table in TABLES {
            let columns = columns(self.pool(), table).await?;
            let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
            let hex: Vec<bool> = columns.iter().map(|column| column.blob).collect();
            pending.extend(line(
                json!({ "table": table, "columns": names, "hex": hex }),
                &mut hasher,
            ));
            let select = format!(
                "SELECT json_array({}) AS row FROM {table}",
                columns
                    .iter()
                    .map(|column| if column.blob {
                        format!("hex(\"{}\")", column.name)
                    } else {
                        format!("\"{}\"", column.name)
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // The table and column names come from the constant list and the schema, never from a request.
            let rows = sqlx::query(sqlx::AssertSqlSafe(select))
                .fetch_all(&mut *transaction)
                .await?;
            for row in rows {
                let values: Value = serde_json::from_str(&row.get::<String, _>("row"))
                    .map_err(|error| DmError::Internal(format!("row of {table}: {error}")))?;
                pending.extend(line(json!({ "t": table, "v": values }), &mut hasher));
                if !flush(&mut pending, false).await {
                    return Err(gone());
                }
                rows_written += 1;
            }
        }
        let digest = hex::encode(hasher.finish().as_ref());
        pending.extend(
            json!({ "end": { "rows": rows_written, "sha256": digest } })
                .to_string()
                .into_bytes(),
        );
        pending.push(b'\n');
        if !flush(&mut pending, true).await {
            return Err(gone());
        }
        transaction.rollback().await?;
        tracing::info!(rows = rows_written, "site backup written");
        Ok(rows_written)
    }

    /// Restores `backup` into this site, which must be empty and have the same site key. All or nothing.
    pub async fn restore(&self, backup: &[u8]) -> DmResult<RestoreSummary> {
        let lines = verify(backup)?;
        let header: Value = serde_json::from_slice(lines[0]).map_err(damaged)?;
        if header["format"] != FORMAT {
            return Err(damaged("it is not a clouddp site backup"));
        }
        if !header["version"]
            .as_u64()
            .is_some_and(|version| (OLDEST_VERSION..=VERSION).contains(&version))
        {
            return Err(DmError::InvalidArgument(
                clouddp_core::ValidationError::new(
                    "backup",
                    format!(
                        "backup format version {} is not supported by this version (it reads {OLDEST_VERSION} to {VERSION})",
                        header["version"]
                    ),
                ),
            ));
        }
        let fingerprint = header["site_key_fingerprint"].as_str().unwrap_or_default();
        let ours = self.manager.site_key().fingerprint();
        if fingerprint != ours {
            return Err(DmError::Precondition(format!(
                "the backup was made with another site key (fingerprint {}…, this site's is {}…): start the \
                 distribution manager with the site key of the backed-up site ([site] key_file); nothing was changed",
                fingerprint.get(..16).unwrap_or(fingerprint),
                ours.get(..16).unwrap_or(ours)
            )));
        }
        self.ensure_empty().await?;

        let mut transaction = clouddp_platform::db::write_transaction(self.pool()).await?;
        let mut current: Option<(String, Vec<String>, Vec<bool>)> = None;
        let mut summary = RestoreSummary::default();
        let mut ca = None;
        for line in &lines[1..] {
            let record: Value = serde_json::from_slice(line).map_err(damaged)?;
            if record.get("pki").is_some() {
                let restored = self.open_ca(&record["pki"])?;
                // The backup brings its own CA: the credentials this empty site issued with its own CA (its first
                // administrator's) die with that CA, so their records go.
                if restored.replaces {
                    sqlx::query("DELETE FROM admin_credentials")
                        .execute(&mut *transaction)
                        .await?;
                }
                ca = Some(restored);
                continue;
            }
            if let Some(table) = record["table"].as_str() {
                if !TABLES.contains(&table) {
                    return Err(damaged(format!("unknown table {table:?}")));
                }
                let known: Vec<String> = columns(self.pool(), table)
                    .await?
                    .into_iter()
                    .map(|column| column.name)
                    .collect();
                let names: Vec<String> =
                    serde_json::from_value(record["columns"].clone()).map_err(damaged)?;
                let hex: Vec<bool> =
                    serde_json::from_value(record["hex"].clone()).map_err(damaged)?;
                if names.len() != hex.len() {
                    return Err(damaged(format!(
                        "the columns of {table} do not match their types"
                    )));
                }
                if let Some(unknown) = names.iter().find(|name| !known.contains(name)) {
                    return Err(damaged(format!(
                        "column {table}.{unknown} is unknown here: was the backup made by a newer version?"
                    )));
                }
                current = Some((table.to_owned(), names, hex));
                continue;
            }
            let Some((table, names, hex)) = &current else {
                return Err(damaged("a row comes before its table"));
            };
            let values = record["v"]
                .as_array()
                .ok_or_else(|| damaged("a row without values"))?;
            if values.len() != names.len() {
                return Err(damaged(format!(
                    "a row of {table} has {} values for {} columns",
                    values.len(),
                    names.len()
                )));
            }
            // Names were checked against the schema above.
            let statement = format!(
                "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
                names
                    .iter()
                    .map(|name| format!("\"{name}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                (1..=names.len())
                    .map(|index| format!("?{index}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
            for (value, is_hex) in values.iter().zip(hex) {
                query = match value {
                    Value::Null => query.bind(None::<String>),
                    Value::Bool(flag) => query.bind(*flag),
                    Value::Number(number) => match number.as_i64() {
                        Some(integer) => query.bind(integer),
                        None => query.bind(number.as_f64().unwrap_or_default()),
                    },
                    Value::String(text) if *is_hex => {
                        query.bind(hex::decode(text).map_err(damaged)?)
                    }
                    Value::String(text) => query.bind(text.clone()),
                    other => return Err(damaged(format!("unexpected value {other} in {table}"))),
                };
            }
            query
                .execute(&mut *transaction)
                .await
                .map_err(|error| match error {
                    sqlx::Error::Database(database) => {
                        damaged(format!("a row of {table} does not fit: {database}"))
                    }
                    other => other.into(),
                })?;
            match table.as_str() {
                "distribution_points" => summary.distribution_points += 1,
                "dp_groups" => summary.groups += 1,
                "content_versions" => summary.content_versions += 1,
                "distributions" => summary.distributions += 1,
                "devices" => summary.devices += 1,
                _ => {}
            }
        }
        // A DP that was being deleted stays so: it never comes back to serve.
        sqlx::query("UPDATE distribution_points SET state_reason = ?1 WHERE state = 'deleting'")
            .bind(
                "it was being deleted when the backup was made; finish the delete with `clouddp dp delete` \
                 (or `--force` when its store is gone)",
            )
            .execute(&mut *transaction)
            .await?;
        summary.certificates_required = u32::try_from(
            sqlx::query(
                "UPDATE distribution_points SET state = ?1, state_reason = ?2, update_time_ms = ?3 WHERE kind = ?4 \
                 AND state <> 'deleting'",
            )
            .bind(DpState::CertificatesRequired.as_str())
            .bind(
                "restored from a backup: import the management and service certificates again \
                 (clouddp cert import-management FILE --dp DP; clouddp cert import-service FILE --dp DP)",
            )
            .bind(now_ms())
            .bind(DpKind::Cloud.as_str())
            .execute(&mut *transaction)
            .await?
            .rows_affected(),
        )
        .unwrap_or(u32::MAX);
        // Revisions go on from the highest restored one, so watchers see every later change as new.
        sqlx::query(
            "UPDATE site_counters SET value = MAX(value, (SELECT COALESCE(MAX(revision), 0) FROM distribution_points)) \
             WHERE name = 'dp_revision'",
        )
        .execute(&mut *transaction)
        .await?;
        // A wrapped data key must open with this site key before the restore counts.
        let probe: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT id, wrapped_key FROM content_versions LIMIT 1")
                .fetch_optional(&mut *transaction)
                .await?;
        if let Some((id, wrapped)) = probe {
            self.manager.site_key().unwrap(&wrapped, &id)?;
        }
        transaction.commit().await?;
        if let Some(ca) = ca.as_ref().filter(|ca| ca.replaces) {
            self.put_ca(ca)?;
            summary.restart_required = true;
        }
        if let Some((access, devices, credentials)) = &self.identities {
            access.refresh().await?;
            devices.refresh_blocked().await?;
            credentials.refresh_revoked().await?;
        }
        self.manager.announce_all().await?;
        tracing::info!(
            distribution_points = summary.distribution_points,
            content_versions = summary.content_versions,
            certificates_required = summary.certificates_required,
            "site restored from a backup"
        );
        Ok(summary)
    }

    async fn ensure_empty(&self) -> DmResult<()> {
        let (dps, content, groups, settings, devices): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM distribution_points), (SELECT COUNT(*) FROM content_versions), \
             (SELECT COUNT(*) FROM dp_groups), (SELECT COUNT(*) FROM client_settings WHERE id <> 'default'), \
             (SELECT COUNT(*) FROM devices)",
        )
        .fetch_one(self.pool())
        .await?;
        if dps + content + groups + settings + devices > 0 {
            return Err(DmError::Precondition(format!(
                "a restore needs an empty site, and this one has {dps} distribution points, {content} content \
                 versions, {groups} groups, {settings} custom client settings and {devices} enrolled devices; start \
                 the distribution manager on an empty data directory with the same site key; nothing was changed"
            )));
        }
        Ok(())
    }
}

/// Splits a backup into lines and checks its trailer: the row count and the SHA-256 of all lines before it.
fn verify(backup: &[u8]) -> DmResult<Vec<&[u8]>> {
    if backup.is_empty() {
        return Err(damaged("it is empty"));
    }
    let body_end = backup[..backup.len() - 1]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map(|index| index + 1)
        .ok_or_else(|| damaged("it has no trailer"))?;
    let trailer: Value = serde_json::from_slice(&backup[body_end..])
        .map_err(|_| damaged("its last line is not the trailer (truncated?)"))?;
    let expected = trailer["end"]["sha256"]
        .as_str()
        .ok_or_else(|| damaged("its last line is not the trailer (truncated?)"))?;
    let actual = hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &backup[..body_end]).as_ref(),
    );
    if expected != actual {
        return Err(damaged("its checksum does not match its contents"));
    }
    let lines: Vec<&[u8]> = backup[..body_end]
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let rows = lines
        .iter()
        .filter(|line| line.starts_with(b"{\"t\":"))
        .count() as u64;
    if trailer["end"]["rows"].as_u64() != Some(rows) || lines.is_empty() {
        return Err(damaged("its row count does not match its trailer"));
    }
    Ok(lines)
}
