//! The administrator credentials the site issues: the site CA signs a certificate request made where the key
//! stays, each credential is recorded by its serial, and a revoked one is refused by both services (the manager
//! at once, monitoring on its next read of the revoked serials, within a second).

use std::sync::Arc;

use clouddp_platform::access::{Principal, PrincipalKind, Role};
use clouddp_platform::authorize::RoleBindings;
use clouddp_platform::clock::now_ms;
use clouddp_platform::pki::{self, SiteCa};
use sqlx::SqlitePool;

use crate::error::{DmError, DmResult};

/// One issued credential.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IssuedCredential {
    /// The certificate serial, lower-case hex.
    pub serial: String,
    /// The administrator's name.
    pub admin_name: String,
    /// When it was issued, ms.
    pub issue_time_ms: i64,
    /// When it expires, ms.
    pub expire_ms: i64,
    /// Who issued it.
    pub issued_by: String,
    /// Refused by both services.
    pub revoked: bool,
    /// When it was revoked, ms (0 when not).
    pub revoke_time_ms: i64,
    /// Who revoked it.
    pub revoked_by: String,
}

/// A credential just issued: its record, certificate and the CA's.
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// The record.
    pub record: IssuedCredential,
    /// The certificate (PEM).
    pub certificate_pem: String,
    /// The site CA (PEM).
    pub ca_pem: String,
}

/// The issued credentials, with the revoked serials mirrored into the authorizer's [`RoleBindings`].
#[derive(Debug, Clone)]
pub struct Credentials {
    pool: SqlitePool,
    live: Arc<RoleBindings>,
    ca: Option<Arc<SiteCa>>,
}

const COLUMNS: &str =
    "serial, admin_name, issue_time_ms, expire_ms, issued_by, revoked, revoke_time_ms, revoked_by";

/// A serial as given, written as the site writes it: lower-case hex, colons, spaces and leading zero bytes
/// dropped.
fn normalized(serial: &str) -> String {
    let mut hex: String = serial
        .chars()
        .filter(|character| !matches!(character, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    while hex.len() > 2 && hex.starts_with("00") {
        hex.drain(..2);
    }
    hex
}

impl Credentials {
    /// The credentials in `pool`, the revoked ones put into `live`; `ca` signs (none on a plaintext server).
    pub async fn open(
        pool: SqlitePool,
        live: Arc<RoleBindings>,
        ca: Option<Arc<SiteCa>>,
    ) -> DmResult<Self> {
        let credentials = Self { pool, live, ca };
        credentials.refresh_revoked().await?;
        Ok(credentials)
    }

    /// Reads the revoked serials into the live set again (after a change or a restore).
    pub(crate) async fn refresh_revoked(&self) -> DmResult<()> {
        let revoked: Vec<String> =
            sqlx::query_scalar("SELECT serial FROM admin_credentials WHERE revoked = 1")
                .fetch_all(&self.pool)
                .await?;
        self.live.replace_revoked(revoked);
        Ok(())
    }

    /// Records the first administrator's credential (written by the first start) when it is not yet.
    pub async fn record_first(&self, certificate_pem: &str, admin_name: &str) -> DmResult<()> {
        let serial = pki::serial_of(certificate_pem).map_err(|error| {
            DmError::Internal(format!("the first administrator's credential: {error}"))
        })?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO admin_credentials (serial, admin_name, issue_time_ms, expire_ms, issued_by) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (serial) DO NOTHING",
        )
        .bind(serial)
        .bind(admin_name)
        .bind(now)
        .bind(now + pki::CERTIFICATE_DAYS * 86_400_000)
        .bind(crate::access::GRANTED_BY_SITE)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Signs `csr_pem` for `admin/<admin_name>` and records the credential.
    pub async fn issue(
        &self,
        admin_name: &str,
        csr_pem: &str,
        issued_by: &str,
    ) -> DmResult<NewCredential> {
        let ca = self.ca.as_deref().ok_or_else(|| {
            DmError::Precondition(
                "this server runs in plaintext without the site CA; credentials are issued by a server that uses its certificates"
                    .to_owned(),
            )
        })?;
        crate::devices::check_request(csr_pem)?;
        let (certificate_pem, expire_ms) = ca
            .sign_request(csr_pem, &Principal::new(PrincipalKind::Admin, admin_name))
            .map_err(|error| {
                clouddp_core::ValidationError::new("certificate_request_pem", error.to_string())
            })?;
        let serial = pki::serial_of(&certificate_pem)
            .map_err(|error| DmError::Internal(error.to_string()))?;
        let record = IssuedCredential {
            serial,
            admin_name: admin_name.to_owned(),
            issue_time_ms: now_ms(),
            expire_ms,
            issued_by: issued_by.to_owned(),
            revoked: false,
            revoke_time_ms: 0,
            revoked_by: String::new(),
        };
        sqlx::query(
            "INSERT INTO admin_credentials (serial, admin_name, issue_time_ms, expire_ms, issued_by) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&record.serial)
        .bind(&record.admin_name)
        .bind(record.issue_time_ms)
        .bind(record.expire_ms)
        .bind(&record.issued_by)
        .execute(&self.pool)
        .await?;
        Ok(NewCredential {
            record,
            certificate_pem,
            ca_pem: ca.certificate_pem().to_owned(),
        })
    }

    /// The issued credentials, newest first: one administrator's, or the revoked ones only.
    pub async fn list(
        &self,
        admin_name: Option<&str>,
        revoked_only: bool,
    ) -> DmResult<Vec<IssuedCredential>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM admin_credentials WHERE (?1 IS NULL OR admin_name = ?1) AND (?2 = 0 OR revoked = 1) \
             ORDER BY issue_time_ms DESC, serial"
        )))
        .bind(admin_name)
        .bind(revoked_only)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes the credential `serial`, unless no other unrevoked credential of a Full Administrator would be left.
    pub async fn revoke(&self, serial: &str, revoked_by: &str) -> DmResult<IssuedCredential> {
        let serial = normalized(serial);
        if serial.is_empty()
            || serial.len() > 64
            || !serial.bytes().all(|byte| byte.is_ascii_hexdigit())
        {
            return Err(clouddp_core::ValidationError::new(
                "serial",
                "give the credential's serial in hex, as `clouddp access credential list` shows it",
            )
            .into());
        }
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let found: IssuedCredential = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM admin_credentials WHERE serial = ?1"
        )))
        .bind(&serial)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| {
            DmError::NotFound(format!(
                "the site issued no credential with serial {serial:.40}"
            ))
        })?;
        if found.revoked {
            return Ok(found);
        }
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM admin_credentials AS c JOIN role_bindings AS b ON b.admin_name = c.admin_name \
             WHERE b.role = ?1 AND c.revoked = 0 AND c.serial <> ?2 AND c.expire_ms > ?3",
        )
        .bind(Role::FullAdministrator.key())
        .bind(&serial)
        .bind(now_ms())
        .fetch_one(&mut *transaction)
        .await?;
        if others == 0 {
            return Err(DmError::Precondition(format!(
                "credential {serial} is the last one of a Full Administrator the site issued; issue another \
                 (clouddp access credential issue) before revoking it"
            )));
        }
        let now = now_ms();
        sqlx::query(
            "UPDATE admin_credentials SET revoked = 1, revoke_time_ms = ?2, revoked_by = ?3 WHERE serial = ?1",
        )
        .bind(&serial)
        .bind(now)
        .bind(revoked_by)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        self.refresh_revoked().await?;
        Ok(IssuedCredential {
            revoked: true,
            revoke_time_ms: now,
            revoked_by: revoked_by.to_owned(),
            ..found
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn serials_are_normalized() {
        assert_eq!(super::normalized("0A:1b:FF"), "0a1bff");
        assert_eq!(super::normalized(" 00ab "), "ab");
    }
}
