//! Devices: bulk registration tokens, enrollment (the site CA signs the device's own certificate request),
//! renewal, and blocking, mirrored into the authorizer so that a blocked device is refused at once.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clouddp_core::page::Page;
use clouddp_platform::access::{Principal, PrincipalKind};
use clouddp_platform::authorize::RoleBindings;
use clouddp_platform::clock::now_ms;
use clouddp_platform::pki::SiteCa;
use sqlx::{Row as _, SqlitePool};

use crate::error::{DmError, DmResult};

/// Devices one token may enroll, at most.
pub const MAX_TOKEN_USES: u32 = 100_000;
/// The shortest token lifetime, in seconds.
pub const MIN_TOKEN_SECONDS: u64 = 60;
/// The longest token lifetime, in seconds (30 days).
pub const MAX_TOKEN_SECONDS: u64 = 30 * 24 * 3600;
/// The largest certificate request taken.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// What a token starts with.
const TOKEN_PREFIX: &str = "cdpet";

/// A new bulk registration token (its secret shown once).
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its id.
    pub id: String,
    /// The whole token.
    pub token: String,
    /// Uses left.
    pub uses_left: u32,
    /// When it expires.
    pub expire_ms: i64,
}

/// A device's signed certificate.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The device.
    pub device_id: String,
    /// Its certificate (PEM).
    pub certificate_pem: String,
    /// The site CA (PEM).
    pub ca_pem: String,
    /// When the certificate expires.
    pub expire_ms: i64,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Its id.
    pub id: String,
    /// When it first enrolled.
    pub enroll_time_ms: i64,
    /// When its certificate expires.
    pub certificate_expire_ms: i64,
    /// Blocked by an administrator.
    pub blocked: bool,
    /// Why.
    pub block_reason: String,
}

/// The devices of the site.
#[derive(Debug, Clone)]
pub struct Devices {
    pool: SqlitePool,
    live: Arc<RoleBindings>,
    ca: Option<Arc<SiteCa>>,
}

/// The device id `text` names, or INVALID_ARGUMENT.
pub fn device_id(text: &str) -> DmResult<String> {
    Some(text.trim())
        .filter(|id| Principal::is_valid_name(id))
        .map(str::to_owned)
        .ok_or_else(|| {
            clouddp_core::ValidationError::new(
                "device_id",
                "give the device's id: letters, digits, -, ., _ and @, at most 128 characters",
            )
            .into()
        })
}

fn refused_token() -> DmError {
    DmError::Unauthenticated(
        "the enrollment token is unknown, used up or expired; ask an administrator for a new one (`clouddp device token create`)"
            .to_owned(),
    )
}

impl Devices {
    /// The devices in `pool`, with the blocked ones put into `live`; `ca` signs (none on a plaintext server).
    pub async fn open(
        pool: SqlitePool,
        live: Arc<RoleBindings>,
        ca: Option<Arc<SiteCa>>,
    ) -> DmResult<Self> {
        let devices = Self { pool, live, ca };
        devices.refresh_blocked().await?;
        Ok(devices)
    }

    /// Reads the blocked devices into the live set again (after a restore).
    pub(crate) async fn refresh_blocked(&self) -> DmResult<()> {
        let blocked: Vec<String> = sqlx::query_scalar("SELECT id FROM devices WHERE blocked = 1")
            .fetch_all(&self.pool)
            .await?;
        self.live.replace_blocked(blocked);
        Ok(())
    }

    fn ca(&self) -> DmResult<&SiteCa> {
        self.ca.as_deref().ok_or_else(|| {
            DmError::Precondition(
                "this server runs in plaintext without the site CA; devices enroll with a server that uses its certificates"
                    .to_owned(),
            )
        })
    }

    /// Creates a token for `uses` devices valid `lifetime_seconds`.
    pub async fn create_token(
        &self,
        uses: u32,
        lifetime_seconds: u64,
        description: &str,
        created_by: &str,
    ) -> DmResult<NewToken> {
        if !(1..=MAX_TOKEN_USES).contains(&uses) {
            return Err(clouddp_core::ValidationError::new("uses", "must be 1 to 100,000").into());
        }
        if !(MIN_TOKEN_SECONDS..=MAX_TOKEN_SECONDS).contains(&lifetime_seconds) {
            return Err(clouddp_core::ValidationError::new(
                "lifetime_seconds",
                "must be 60 (a minute) to 2,592,000 (30 days)",
            )
            .into());
        }
        let description = clouddp_core::validate::free_text("description", description, 1024)?;
        let mut secret = [0_u8; 32];
        let mut id_bytes = [0_u8; 6];
        aws_lc_rs::rand::fill(&mut secret)
            .and_then(|()| aws_lc_rs::rand::fill(&mut id_bytes))
            .map_err(|_| DmError::Internal("no randomness for a token".to_owned()))?;
        let id = format!("et-{}", hex::encode(id_bytes));
        let now = now_ms();
        let expire_ms = now + i64::try_from(lifetime_seconds * 1000).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, secret_sha256, uses_left, expire_ms, description, create_time_ms, created_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&id)
        .bind(clouddp_core::content::sha256(&secret).to_vec())
        .bind(i64::from(uses))
        .bind(expire_ms)
        .bind(&description)
        .bind(now)
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(NewToken {
            token: format!("{TOKEN_PREFIX}.{id}.{}", URL_SAFE_NO_PAD.encode(secret)),
            id,
            uses_left: uses,
            expire_ms,
        })
    }

    /// Enrolls `device_id` with `token`, signing `csr_pem`; the token's id is returned for the audit trail.
    pub async fn enroll(
        &self,
        token: &str,
        device_id: &str,
        csr_pem: &str,
    ) -> DmResult<(Credential, String)> {
        let ca = self.ca()?;
        let device = self::device_id(device_id)?;
        check_request(csr_pem)?;
        let mut parts = token.trim().splitn(3, '.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(refused_token());
        };
        let secret = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| refused_token())?;
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let row = sqlx::query(
            "SELECT secret_sha256, uses_left, expire_ms FROM enrollment_tokens WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(refused_token)?;
        let stored: Vec<u8> = row.try_get("secret_sha256")?;
        let uses_left: i64 = row.try_get("uses_left")?;
        let expire_ms: i64 = row.try_get("expire_ms")?;
        let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
            &stored,
            &clouddp_core::content::sha256(&secret),
        )
        .is_ok();
        if !matches || uses_left < 1 || expire_ms <= now_ms() {
            return Err(refused_token());
        }
        let blocked: Option<i64> = sqlx::query_scalar("SELECT blocked FROM devices WHERE id = ?1")
            .bind(&device)
            .fetch_optional(&mut *transaction)
            .await?;
        if blocked == Some(1) {
            return Err(DmError::PermissionDenied(format!(
                "device/{device} is blocked; an administrator unblocks it with `clouddp device unblock {device}`"
            )));
        }
        let credential = sign(ca, &device, csr_pem)?;
        sqlx::query("UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = ?1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        record_certificate(&mut *transaction, &credential).await?;
        transaction.commit().await?;
        Ok((credential, id.to_owned()))
    }

    /// Renews the certificate of `device_id` (the caller) from `csr_pem`.
    pub async fn renew(&self, device_id: &str, csr_pem: &str) -> DmResult<Credential> {
        let ca = self.ca()?;
        check_request(csr_pem)?;
        let credential = sign(ca, device_id, csr_pem)?;
        record_certificate(&self.pool, &credential).await?;
        Ok(credential)
    }

    /// A page of devices by id.
    pub async fn list(
        &self,
        page: &Page,
        blocked_only: bool,
    ) -> DmResult<(Vec<DeviceRecord>, String)> {
        let limit = i64::try_from(page.size()).unwrap_or(1000) + 1;
        let rows = sqlx::query(
            "SELECT id, enroll_time_ms, certificate_expire_ms, blocked, block_reason FROM devices \
             WHERE id > ?1 AND (?2 = 0 OR blocked = 1) ORDER BY id LIMIT ?3",
        )
        .bind(page.after().unwrap_or_default())
        .bind(blocked_only)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut devices = rows
            .iter()
            .map(record)
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let next = if devices.len() > page.size() {
            devices.truncate(page.size());
            devices
                .last()
                .map(|last| Page::token_after(&last.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((devices, next))
    }

    /// Blocks a device (with `reason`) or unblocks it; takes effect on its next call.
    pub async fn set_blocked(
        &self,
        id: &str,
        blocked: bool,
        reason: &str,
    ) -> DmResult<DeviceRecord> {
        let id = self::device_id(id)?;
        let reason = if blocked {
            clouddp_core::validate::free_text("reason", reason, 256)?
        } else {
            String::new()
        };
        let changed = sqlx::query(
            "UPDATE devices SET blocked = ?2, block_reason = ?3, update_time_ms = ?4 WHERE id = ?1",
        )
        .bind(&id)
        .bind(blocked)
        .bind(&reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(DmError::NotFound(format!(
                "no device device/{id} has enrolled; list them with `clouddp device list`"
            )));
        }
        self.refresh_blocked().await?;
        let row = sqlx::query(
            "SELECT id, enroll_time_ms, certificate_expire_ms, blocked, block_reason FROM devices WHERE id = ?1",
        )
        .bind(&id)
        .fetch_one(&self.pool)
        .await?;
        Ok(record(&row)?)
    }
}

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<DeviceRecord, sqlx::Error> {
    Ok(DeviceRecord {
        id: row.try_get("id")?,
        enroll_time_ms: row.try_get("enroll_time_ms")?,
        certificate_expire_ms: row.try_get("certificate_expire_ms")?,
        blocked: row.try_get::<i64, _>("blocked")? == 1,
        block_reason: row.try_get("block_reason")?,
    })
}

/// The certificate `ca` signs for `device` from its request `csr_pem`.
/// `csr_pem` has passed [`check_request`].
fn sign(ca: &SiteCa, device: &str, csr_pem: &str) -> DmResult<Credential> {
    let (certificate_pem, expire_ms) = ca
        .sign_request(csr_pem, &Principal::new(PrincipalKind::Device, device))
        .map_err(|error| {
            clouddp_core::ValidationError::new("certificate_request_pem", error.to_string())
        })?;
    Ok(Credential {
        device_id: device.to_owned(),
        certificate_pem,
        ca_pem: ca.certificate_pem().to_owned(),
        expire_ms,
    })
}

/// Records the device of `credential` (enrolled now, when it is new) and its certificate's expiry.
async fn record_certificate(
    executor: impl sqlx::SqliteExecutor<'_>,
    credential: &Credential,
) -> DmResult<()> {
    sqlx::query(
        "INSERT INTO devices (id, enroll_time_ms, certificate_expire_ms, update_time_ms) VALUES (?1, ?2, ?3, ?2) \
         ON CONFLICT (id) DO UPDATE SET certificate_expire_ms = ?3, update_time_ms = ?2",
    )
    .bind(&credential.device_id)
    .bind(now_ms())
    .bind(credential.expire_ms)
    .execute(executor)
    .await?;
    Ok(())
}

pub(crate) fn check_request(csr_pem: &str) -> DmResult<()> {
    if csr_pem.len() > MAX_REQUEST_BYTES {
        return Err(clouddp_core::ValidationError::new(
            "certificate_request_pem",
            "at most 16 KiB",
        )
        .into());
    }
    if !csr_pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err(clouddp_core::ValidationError::new(
            "certificate_request_pem",
            "give a PKCS#10 certificate request in PEM",
        )
        .into());
    }
    Ok(())
}
