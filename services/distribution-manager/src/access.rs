//! Role bindings of the site's administrators, and the site's own credentials: on the first start the site CA,
//! the manager's server certificate, the first administrator's credential (granted Full Administrator) with its
//! console configuration, and the monitoring service's credential.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clouddp_platform::access::{Principal, PrincipalKind, Role};
use clouddp_platform::authorize::RoleBindings;
use clouddp_platform::clock::now_ms;
use clouddp_platform::pki::{self, SiteCa};
use sqlx::SqlitePool;

use crate::error::{DmError, DmResult};

/// The name of the administrator the first start creates.
pub const FIRST_ADMIN: &str = "admin";
/// Who granted the first administrator's role.
pub const GRANTED_BY_SITE: &str = "site";

/// One granted role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The administrator's name.
    pub admin_name: String,
    /// The role.
    pub role: Role,
    /// When it was granted.
    pub grant_time_ms: i64,
    /// Who granted it.
    pub granted_by: String,
}

/// The role bindings in the database, mirrored into the authorizer's [`RoleBindings`].
#[derive(Debug, Clone)]
pub struct AccessStore {
    pool: SqlitePool,
    live: Arc<RoleBindings>,
}

impl AccessStore {
    /// The store over `pool`, filling `live` now.
    pub async fn open(pool: SqlitePool, live: Arc<RoleBindings>) -> DmResult<Self> {
        let store = Self { pool, live };
        store.refresh().await?;
        Ok(store)
    }

    /// Reads the bindings into the live set again (after a restore).
    pub(crate) async fn refresh(&self) -> DmResult<()> {
        let bindings = self.list(None).await?;
        self.live.replace(
            bindings
                .into_iter()
                .map(|binding| (binding.admin_name, binding.role)),
        );
        Ok(())
    }

    /// Every binding, or one administrator's, ordered by name then role.
    pub async fn list(&self, admin_name: Option<&str>) -> DmResult<Vec<Binding>> {
        let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
            "SELECT admin_name, role, grant_time_ms, granted_by FROM role_bindings \
             WHERE ?1 IS NULL OR admin_name = ?1 ORDER BY admin_name, role",
        )
        .bind(admin_name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(admin_name, role, grant_time_ms, granted_by)| {
                let role = Role::parse(&role).ok_or_else(|| {
                    DmError::Internal(format!(
                        "role binding of {admin_name} names an unknown role {role:?}"
                    ))
                })?;
                Ok(Binding {
                    admin_name,
                    role,
                    grant_time_ms,
                    granted_by,
                })
            })
            .collect()
    }

    /// Grants `role` to `admin_name`; an existing grant is kept as it was.
    pub async fn grant(&self, admin_name: &str, role: Role, granted_by: &str) -> DmResult<Binding> {
        if !Role::ADMINISTRATIVE.contains(&role) {
            return Err(clouddp_core::ValidationError::new(
                "role",
                format!(
                    "{} belongs to devices or services by their kind and cannot be granted",
                    role.name()
                ),
            )
            .into());
        }
        sqlx::query(
            "INSERT INTO role_bindings (admin_name, role, grant_time_ms, granted_by) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (admin_name, role) DO NOTHING",
        )
        .bind(admin_name)
        .bind(role.key())
        .bind(now_ms())
        .bind(granted_by)
        .execute(&self.pool)
        .await?;
        self.refresh().await?;
        self.list(Some(admin_name))
            .await?
            .into_iter()
            .find(|binding| binding.role == role)
            .ok_or_else(|| DmError::Internal("a granted role is missing".to_owned()))
    }

    /// Revokes `role` from `admin_name`; the last Full Administrator keeps it.
    pub async fn revoke(&self, admin_name: &str, role: Role) -> DmResult<()> {
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        if role == Role::FullAdministrator {
            let others: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM role_bindings WHERE role = ?1 AND admin_name <> ?2",
            )
            .bind(role.key())
            .bind(admin_name)
            .fetch_one(&mut *transaction)
            .await?;
            if others == 0 {
                return Err(DmError::Precondition(format!(
                    "admin/{admin_name} is the site's last Full Administrator; grant the role to another administrator first"
                )));
            }
        }
        let removed = sqlx::query("DELETE FROM role_bindings WHERE admin_name = ?1 AND role = ?2")
            .bind(admin_name)
            .bind(role.key())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        if removed == 0 {
            return Err(DmError::NotFound(format!(
                "admin/{admin_name} does not have the role {}",
                role.name()
            )));
        }
        self.refresh().await
    }

    /// Grants Full Administrator to the first administrator when no one has a role yet.
    pub async fn bootstrap(&self) -> DmResult<()> {
        let any: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM role_bindings")
            .fetch_one(&self.pool)
            .await?;
        if any == 0 {
            self.grant(FIRST_ADMIN, Role::FullAdministrator, GRANTED_BY_SITE)
                .await?;
        }
        Ok(())
    }
}

/// The administrator named by `principal` (`admin/<name>`), or INVALID_ARGUMENT.
pub fn admin_name(principal: &str) -> DmResult<String> {
    principal
        .trim()
        .strip_prefix("admin/")
        .filter(|name| Principal::is_valid_name(name))
        .map(str::to_owned)
        .ok_or_else(|| {
            clouddp_core::ValidationError::new(
                "principal",
                "give an administrator as admin/<name> (letters, digits, -, ., _ and @, at most 128 characters)",
            )
            .into()
        })
}

/// Where the site's credentials live in the data dir.
#[derive(Debug, Clone)]
pub struct SiteCredentials {
    /// The CA (`ca.pem`, `ca.key`).
    pub ca_dir: PathBuf,
    /// The manager's server credential.
    pub server_dir: PathBuf,
    /// The first administrator's credential and `clouddp.toml`.
    pub admin_dir: PathBuf,
    /// The monitoring service's credential (its server and client certificate).
    pub monitoring_dir: PathBuf,
}

impl SiteCredentials {
    /// The folders under `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            ca_dir: data_dir.join("pki"),
            server_dir: data_dir.join("pki/server"),
            admin_dir: data_dir.join("admin"),
            monitoring_dir: data_dir.join("services/monitoring"),
        }
    }

    /// Creates what is missing: the CA, the server credential for `listen`, the first administrator's
    /// credential with a console configuration, the monitoring credential.
    pub fn ensure(&self, trust_domain: &str, listen: std::net::SocketAddr) -> DmResult<SiteCa> {
        let pki_error =
            |error: pki::PkiError| DmError::Internal(format!("site certificates: {error}"));
        let ca = SiteCa::load_or_create(&self.ca_dir, trust_domain).map_err(pki_error)?;
        let ips = pki::listener_ips(listen.ip());
        ca.ensure_credential(
            &self.server_dir,
            &Principal::new(PrincipalKind::Service, "distribution-manager"),
            pki::LOCAL_NAMES,
            &ips,
        )
        .map_err(pki_error)?;
        ca.ensure_credential(
            &self.monitoring_dir,
            &Principal::new(
                PrincipalKind::Service,
                clouddp_platform::access::MONITORING_SERVICE,
            ),
            pki::LOCAL_NAMES,
            &pki::listener_ips(IpAddr::from([127, 0, 0, 1])),
        )
        .map_err(pki_error)?;
        let written = ca
            .ensure_credential(
                &self.admin_dir,
                &Principal::new(PrincipalKind::Admin, FIRST_ADMIN),
                &[],
                &[],
            )
            .map_err(pki_error)?;
        let config = self.admin_dir.join(CONSOLE_CONFIG_FILE);
        if written || !config.exists() {
            // A listener on every address is reached on loopback from here.
            let host = if listen.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            let endpoint = format!("https://{}", std::net::SocketAddr::new(host, listen.port()));
            let text = console_config(&self.admin_dir, &endpoint);
            pki::write_file(&config, text.as_bytes(), 0o600).map_err(pki_error)?;
            tracing::info!(config = %config.display(), "wrote the first administrator's console configuration; export CLOUDDP_CONFIG={}", config.display());
        }
        Ok(ca)
    }
}

/// The console configuration file in the administrator's folder.
pub const CONSOLE_CONFIG_FILE: &str = "clouddp.toml";

/// The default monitoring endpoint written into a console configuration.
pub const DEFAULT_MONITORING_ENDPOINT: &str = "https://127.0.0.1:7401";

fn console_config(dir: &Path, endpoint: &str) -> String {
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let file = |name: &str| absolute.join(name).display().to_string();
    format!(
        "# clouddp console configuration of admin/{FIRST_ADMIN} (Full Administrator), written by the site's first start.\n\
         # Use it with: export CLOUDDP_CONFIG={}\n\
         endpoint = {endpoint:?}\n\
         # Where monitoring listens (its --listen); change it when monitoring runs elsewhere.\n\
         monitoring_endpoint = {DEFAULT_MONITORING_ENDPOINT:?}\n\
         ca_cert = {:?}\n\
         client_cert = {:?}\n\
         client_key = {:?}\n",
        file(CONSOLE_CONFIG_FILE),
        file(pki::CA_FILE),
        file(pki::CERT_FILE),
        file(pki::KEY_FILE),
    )
}
