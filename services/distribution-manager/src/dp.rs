//! Distribution points: the records, their repository in SQLite, and the use-case type that changes them and
//! tells watchers.

use clouddp_core::dp::{DpKind, DpState, Thresholds};
use clouddp_core::validate;
use clouddp_platform::clock::now_ms;
use clouddp_platform::confine::Roots;
use sqlx::{Row, SqlitePool};
use tokio::sync::broadcast;

use crate::certs::{CertInfo, CertKind, CertificateStore, ParsedCertificate, matches_device};
use crate::error::{DmError, DmResult};
use crate::keys::SiteKey;
use clouddp_platform::store::{
    AzureCredential, AzureStore, AzureStoreConfig, BlobStore, LocalFolderStore, StoreError,
};
use std::sync::Arc;

/// How many changes a watcher may fall behind before it must resubscribe.
const WATCH_BUFFER: usize = 1024;

/// Where a DP's content is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpStore {
    /// A local folder.
    LocalFolder { path: String },
    /// An Azure Blob container.
    AzureBlob {
        account: String,
        container: String,
        endpoint: String,
    },
}

/// Cloud properties of a cloud DP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudProps {
    /// Azure subscription id.
    pub subscription_id: String,
    /// Globally unique service name.
    pub service_name: String,
    /// Azure region.
    pub region: String,
    /// Service FQDN (service certificate CN).
    pub service_fqdn: String,
    /// Content endpoint instances.
    pub instances: u32,
}

/// A distribution point as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DpRecord {
    /// `dp-<uuid>`.
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// Kind.
    pub kind: DpKind,
    /// Lifecycle state.
    pub state: DpState,
    /// Why it is in its state.
    pub state_reason: String,
    /// Managing site.
    pub site_code: String,
    /// HTTPS base URL for clients.
    pub address: String,
    /// Content store.
    pub store: Option<DpStore>,
    /// Cloud properties (cloud DPs).
    pub cloud: Option<CloudProps>,
    /// Alert thresholds.
    pub thresholds: Thresholds,
    /// Preferred for these boundary groups.
    pub boundary_groups: Vec<String>,
    /// Pull DP.
    pub pull_distribution_point: bool,
    /// Creation time, ms since the epoch.
    pub create_time_ms: i64,
    /// Last change, ms since the epoch.
    pub update_time_ms: i64,
    /// Site-wide revision of its last change.
    pub revision: u64,
    /// The management certificate (cloud DPs).
    pub management_certificate_id: Option<String>,
    /// The service certificate (cloud DPs).
    pub service_certificate_id: Option<String>,
}

/// A storage credential as sealed in the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum CloudCredential {
    /// Shared key.
    AccountKey(String),
    /// SAS token.
    SasToken(String),
    /// Managed identity.
    ManagedIdentity,
    /// The emulator's development key.
    Emulator,
}

impl From<CloudCredential> for AzureCredential {
    fn from(credential: CloudCredential) -> Self {
        match credential {
            CloudCredential::AccountKey(key) => Self::AccountKey(key),
            CloudCredential::SasToken(token) => Self::Sas(token),
            CloudCredential::ManagedIdentity => Self::ManagedIdentity,
            CloudCredential::Emulator => Self::Emulator,
        }
    }
}

/// The editable properties an update changes; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DpUpdate {
    /// New thresholds (already merged with the current ones and validated).
    pub thresholds: Option<Thresholds>,
    /// New instance count (cloud DPs).
    pub instances: Option<u32>,
    /// New boundary groups (on-premises DPs).
    pub boundary_groups: Option<Vec<String>>,
    /// New client address (on-premises DPs).
    pub address: Option<String>,
}

/// A validated request to install a cloud DP.
#[derive(Debug, Clone)]
pub struct NewCloudDp {
    /// Display name.
    pub name: String,
    /// Managing site; the configured site when `None`.
    pub site_code: Option<String>,
    /// Subscription, service name, region, FQDN, instances.
    pub cloud: CloudProps,
    /// Storage account.
    pub account: String,
    /// Container.
    pub container: String,
    /// Blob endpoint (empty for Azure's public one).
    pub endpoint: String,
    /// Credential.
    pub credential: CloudCredential,
    /// Thresholds.
    pub thresholds: Thresholds,
    /// The management certificate.
    pub management_certificate: CertChoice,
    /// The service certificate; its CN is the service FQDN.
    pub service_certificate: CertChoice,
}

/// Where clouddp writes in a DP's store: sealed content and the content endpoint's usage logs. A delete lists
/// these and removes only the objects [`written_by_clouddp`] recognizes.
const WRITTEN_PREFIXES: [&str; 2] = ["content/", "usage/"];

/// True for the names clouddp gives the objects it writes: `content/cnt-<uuid>/v<N>.sealed` and
/// `usage/YYYY/MM/DD/HH/<instance>-<13 digits>-<6 digits>.jsonl`. Anything else in a DP's folder or container
/// was put there by someone else and stays.
fn written_by_clouddp(path: &str) -> bool {
    let digits =
        |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["content", id, file] => {
            let uuid = id
                .strip_prefix("cnt-")
                .and_then(|rest| uuid::Uuid::parse_str(rest).ok());
            let version = file
                .strip_prefix('v')
                .and_then(|rest| rest.strip_suffix(".sealed"))
                .is_some_and(|number| {
                    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
                });
            uuid.is_some() && version
        }
        ["usage", year, month, day, hour, file] => {
            let stem = file.strip_suffix(".jsonl").unwrap_or_default();
            let mut tail = stem.rsplitn(3, '-');
            let (Some(sequence), Some(time), Some(instance)) =
                (tail.next(), tail.next(), tail.next())
            else {
                return false;
            };
            digits(year, 4)
                && digits(month, 2)
                && digits(day, 2)
                && digits(hour, 2)
                && digits(sequence, 6)
                && digits(time, 13)
                && !instance.is_empty()
        }
        _ => false,
    }
}

/// A DP's store in words, for a person deciding what to clean by hand.
fn describe_store(store: Option<&DpStore>) -> String {
    match store {
        Some(DpStore::AzureBlob {
            account, container, ..
        }) => format!("the container {container:?} of the storage account {account:?}"),
        Some(DpStore::LocalFolder { path }) => format!("the folder {path:?}"),
        None => "its store".to_owned(),
    }
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The deleted DP's id.
    pub id: String,
    /// Objects removed from its store.
    pub blobs_deleted: u64,
    /// With force, when the store could not be cleaned: what may be left there and why.
    pub left_in_store: String,
}

/// A certificate named in a request: one imported already, or a new one parsed and checked.
#[derive(Debug, Clone)]
pub enum CertChoice {
    /// An imported certificate's id or thumbprint.
    Existing(String),
    /// A new certificate.
    New(ParsedCertificate),
}

/// A validated request to register an on-premises or internet-facing DP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOnPremDp {
    /// Display name.
    pub name: String,
    /// OnPremises or InternetFacing.
    pub kind: DpKind,
    /// Managing site; the configured site when `None`.
    pub site_code: Option<String>,
    /// Content folder.
    pub folder_path: String,
    /// HTTPS base URL.
    pub address: String,
    /// Boundary group names.
    pub boundary_groups: Vec<String>,
    /// Pull DP.
    pub pull_distribution_point: bool,
}

impl NewOnPremDp {
    /// Validates every field; the first problem is returned with its field name.
    pub fn new(
        name: &str,
        kind: DpKind,
        site_code: &str,
        folder_path: &str,
        address: &str,
        boundary_groups: &[String],
        pull_distribution_point: bool,
    ) -> DmResult<Self> {
        if kind == DpKind::Cloud {
            return Err(validate::ValidationError::new(
                "kind",
                "cloud DPs are installed with InstallCloudDistributionPoint, not registered",
            )
            .into());
        }
        let site_code = if site_code.trim().is_empty() {
            None
        } else {
            Some(validate::site_code(site_code)?)
        };
        let mut groups = Vec::with_capacity(boundary_groups.len());
        for group in boundary_groups {
            let group = validate::display_name("boundary_groups", group)?;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok(Self {
            name: validate::display_name("name", name)?,
            kind,
            site_code,
            folder_path: validate::absolute_path("folder_path", folder_path)?,
            address: validate::https_url("address", address)?,
            boundary_groups: groups,
            pull_distribution_point,
        })
    }
}

/// What happened to a DP, as watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpChangeKind {
    /// Created or changed.
    Upserted,
    /// Deleted.
    Deleted,
}

/// One committed change of a DP.
#[derive(Debug, Clone)]
pub struct DpChange {
    /// What happened.
    pub kind: DpChangeKind,
    /// The DP after the change (before it, when deleted).
    pub dp: DpRecord,
    /// Commit time, ms since the epoch.
    pub time_ms: i64,
}

/// Manages DPs: validates, persists, and broadcasts each committed change.
#[derive(Debug)]
pub struct DistributionManager {
    pool: SqlitePool,
    site_code: String,
    site_key: Arc<SiteKey>,
    certificates: CertificateStore,
    changes: broadcast::Sender<DpChange>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    roots: Arc<Confinement>,
}

/// Where an administrator may point the manager on the server's file system.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Content is registered only from below these.
    pub sources: Roots,
    /// On-premises folder stores live only below these.
    pub stores: Roots,
    /// The manager's data dir (canonical): no folder store may hold it or lie in it, but for its `stores/`.
    pub data_dir: std::path::PathBuf,
}

impl DistributionManager {
    /// A manager over `pool` for site `site_code`.
    pub fn new(pool: SqlitePool, site_code: String, site_key: Arc<SiteKey>) -> Self {
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            certificates: CertificateStore::new(pool.clone(), site_key.clone()),
            pool,
            site_code,
            site_key,
            changes,
            generation: Arc::default(),
            roots: Arc::default(),
        }
    }

    /// Confines content sources and folder stores to `roots` (nothing is accepted without).
    pub fn with_roots(mut self, roots: Confinement) -> Self {
        self.roots = Arc::new(roots);
        self
    }

    /// Where content and folder stores may be.
    pub fn roots(&self) -> &Confinement {
        &self.roots
    }

    /// The database.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The site key.
    pub fn site_key(&self) -> &Arc<SiteKey> {
        &self.site_key
    }

    /// A counter bumped after every committed change that content location depends on (DPs, distributions,
    /// client policy): caches compare it to know they are current.
    pub fn generation(&self) -> &Arc<std::sync::atomic::AtomicU64> {
        &self.generation
    }

    /// Marks cached views stale; call after the change has committed.
    pub fn touch(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The certificates.
    pub fn certificates(&self) -> &CertificateStore {
        &self.certificates
    }

    /// The content versions distributed successfully to a DP, and their sealed bytes.
    pub async fn content_totals(&self, dp_id: &str) -> DmResult<(u64, u64)> {
        let (count, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(bytes_total), 0) FROM distributions WHERE dp_id = ?1 AND state = 'success'",
        )
        .bind(dp_id)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            u64::try_from(count).unwrap_or(0),
            u64::try_from(bytes).unwrap_or(0),
        ))
    }

    /// Tells watchers about every DP again (after a restore).
    pub async fn announce_all(&self) -> DmResult<()> {
        let now = now_ms();
        for dp in self.list(None).await? {
            self.publish(DpChangeKind::Upserted, &dp, now);
        }
        Ok(())
    }

    /// The site's code.
    pub fn site_code(&self) -> &str {
        &self.site_code
    }

    /// Installs a cloud DP: records it PROVISIONING with its credential sealed by the site key, creates its
    /// container and checks the credential, then READY (or ERROR with the reason, and the error returned).
    /// A retried install with the same service name provisions the existing DP again instead of adding one.
    pub async fn install_cloud(&self, request: NewCloudDp) -> DmResult<DpRecord> {
        let existing = sqlx::query_scalar::<_, String>(
            "SELECT id FROM distribution_points WHERE service_name = ?1",
        )
        .bind(&request.cloud.service_name)
        .fetch_optional(&self.pool)
        .await?;
        let record = match existing {
            Some(id) => {
                let record = self.get(&id).await?;
                let differing = self.install_differences(&record, &request).await?;
                match record.state {
                    DpState::Deleting => {
                        return Err(DmError::Precondition(format!(
                            "{} is being deleted ({}); wait for the delete to finish, or finish it with `dp delete --force`, then install again",
                            record.name, record.state_reason
                        )));
                    }
                    // An install that never finished is corrected with what this request says, then tried again.
                    DpState::Error | DpState::Provisioning => {
                        self.correct_install(&record, &request, &differing).await?
                    }
                    _ if differing.is_empty() => return Ok(record),
                    _ => {
                        return Err(DmError::AlreadyExists(format!(
                            "{} is installed already with other parameters: {}; editable properties change with `dp set`, the others need a delete and a new install",
                            request.cloud.service_name,
                            differing.join(", ")
                        )));
                    }
                }
            }
            None => {
                let now = now_ms();
                let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
                let management = self
                    .resolve_certificate(
                        &mut transaction,
                        CertKind::Management,
                        &request.management_certificate,
                    )
                    .await?;
                let service = self
                    .resolve_certificate(
                        &mut transaction,
                        CertKind::Service,
                        &request.service_certificate,
                    )
                    .await?;
                check_service_name(&mut transaction, &service, None).await?;
                let mut cloud = request.cloud.clone();
                cloud.service_fqdn = service.common_name.to_ascii_lowercase();
                let revision = next_revision(&mut transaction).await?;
                let record = DpRecord {
                    id: format!("dp-{}", uuid::Uuid::new_v4()),
                    name: request.name.clone(),
                    kind: DpKind::Cloud,
                    state: DpState::Provisioning,
                    state_reason: String::new(),
                    site_code: request
                        .site_code
                        .clone()
                        .unwrap_or_else(|| self.site_code.clone()),
                    address: format!("https://{}", cloud.service_fqdn),
                    store: Some(DpStore::AzureBlob {
                        account: request.account.clone(),
                        container: request.container.clone(),
                        endpoint: request.endpoint.clone(),
                    }),
                    cloud: Some(cloud),
                    thresholds: request.thresholds,
                    boundary_groups: Vec::new(),
                    pull_distribution_point: false,
                    create_time_ms: now,
                    update_time_ms: now,
                    revision,
                    management_certificate_id: Some(management.id),
                    service_certificate_id: Some(service.id),
                };
                insert(&mut transaction, &record).await.map_err(|error| match error {
                    sqlx::Error::Database(database) if database.is_unique_violation() => DmError::AlreadyExists(format!(
                        "a distribution point named {:?} exists already; choose another name",
                        record.name
                    )),
                    other => other.into(),
                })?;
                let secret = serde_json::to_vec(&request.credential)
                    .map_err(|error| DmError::Internal(error.to_string()))?;
                sqlx::query("INSERT INTO dp_secrets (dp_id, sealed) VALUES (?1, ?2)")
                    .bind(&record.id)
                    .bind(self.site_key.wrap(&secret, &record.id)?)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                self.publish(DpChangeKind::Upserted, &record, now);
                record
            }
        };
        let store = self.store_for(&record).await?;
        match store.ensure_container().await {
            Ok(()) => {
                let ready = self.set_state(&record.id, DpState::Ready, "").await?;
                tracing::info!(dp.id = %ready.id, dp.name = %ready.name, store = %store.describe(), "cloud distribution point installed");
                Ok(ready)
            }
            Err(error) => {
                let reason = format!("provisioning the store failed: {error}");
                self.set_state(&record.id, DpState::Error, &reason).await?;
                tracing::warn!(dp.id = %record.id, %reason, "cloud distribution point install failed");
                Err(match error {
                    StoreError::Unavailable(_) => DmError::Unavailable(reason),
                    _ => DmError::Precondition(reason),
                })
            }
        }
    }

    /// What an install request says differently from the installed DP, each as `field: installed → asked`.
    async fn install_differences(
        &self,
        record: &DpRecord,
        request: &NewCloudDp,
    ) -> DmResult<Vec<String>> {
        let mut differing = Vec::new();
        let mut compare = |field: &str, installed: &str, asked: &str| {
            if installed != asked {
                differing.push(format!("{field} {installed:?} (asked {asked:?})"));
            }
        };
        compare("name", &record.name, &request.name);
        if let Some(site_code) = &request.site_code {
            compare("site code", &record.site_code, site_code);
        }
        if let Some(cloud) = &record.cloud {
            compare(
                "subscription",
                &cloud.subscription_id,
                &request.cloud.subscription_id,
            );
            compare("region", &cloud.region, &request.cloud.region);
        }
        if let Some(DpStore::AzureBlob {
            account,
            container,
            endpoint,
        }) = &record.store
        {
            compare("account", account, &request.account);
            compare("container", container, &request.container);
            compare("blob endpoint", endpoint, &request.endpoint);
        }
        let installed_credential = self.store_credential(record).await?;
        if installed_credential.as_ref() != Some(&request.credential) {
            differing.push("storage credential".to_owned());
        }
        Ok(differing)
    }

    /// Writes the parameters of `request` into an install that never finished (ERROR or PROVISIONING); returns
    /// the corrected record.
    async fn correct_install(
        &self,
        record: &DpRecord,
        request: &NewCloudDp,
        differing: &[String],
    ) -> DmResult<DpRecord> {
        if differing.is_empty() {
            return Ok(record.clone());
        }
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let revision = next_revision(&mut transaction).await?;
        sqlx::query(
            "UPDATE distribution_points SET name = ?2, site_code = ?3, subscription_id = ?4, region = ?5, \
             azure_account = ?6, azure_container = ?7, azure_endpoint = ?8, update_time_ms = ?9, revision = ?10 \
             WHERE id = ?1",
        )
        .bind(&record.id)
        .bind(&request.name)
        .bind(request.site_code.as_deref().unwrap_or(&record.site_code))
        .bind(&request.cloud.subscription_id)
        .bind(&request.cloud.region)
        .bind(&request.account)
        .bind(&request.container)
        .bind(&request.endpoint)
        .bind(now_ms())
        .bind(i64::try_from(revision).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await
        .map_err(|error| match error {
            sqlx::Error::Database(database) if database.is_unique_violation() => DmError::AlreadyExists(format!(
                "a distribution point named {:?} exists already; choose another name",
                request.name
            )),
            other => other.into(),
        })?;
        let secret = serde_json::to_vec(&request.credential)
            .map_err(|error| DmError::Internal(error.to_string()))?;
        sqlx::query("UPDATE dp_secrets SET sealed = ?2 WHERE dp_id = ?1")
            .bind(&record.id)
            .bind(self.site_key.wrap(&secret, &record.id)?)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        tracing::info!(dp.id = %record.id, dp.name = %request.name, corrected = %differing.join(", "), "install parameters corrected; provisioning again");
        let corrected = self.get(&record.id).await?;
        self.publish(DpChangeKind::Upserted, &corrected, now_ms());
        Ok(corrected)
    }

    /// The stored certificate a request names, inserting a new one in `transaction`; checks its kind.
    async fn resolve_certificate(
        &self,
        transaction: &mut sqlx::SqliteConnection,
        kind: CertKind,
        choice: &CertChoice,
    ) -> DmResult<CertInfo> {
        match choice {
            CertChoice::New(parsed) => {
                let mut info = parsed.info.clone();
                info.id = self.certificates.insert(transaction, parsed).await?;
                Ok(info)
            }
            CertChoice::Existing(id) => {
                let info = self.certificates.get(id).await?;
                if info.kind != kind {
                    return Err(validate::ValidationError::new(
                        match kind {
                            CertKind::Management => "management_certificate",
                            CertKind::Service => "service_certificate",
                        },
                        format!(
                            "certificate {} is a {} certificate, not a {} certificate",
                            info.id,
                            info.kind.as_str(),
                            kind.as_str()
                        ),
                    )
                    .into());
                }
                Ok(info)
            }
        }
    }

    /// Imports a management certificate, and makes it the management certificate of `dp` when given.
    pub async fn import_management_certificate(
        &self,
        choice: &CertChoice,
        dp: Option<&str>,
    ) -> DmResult<CertInfo> {
        let dp = match dp {
            Some(dp) => Some(self.cloud_dp(dp).await?),
            None => None,
        };
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let info = self
            .resolve_certificate(&mut transaction, CertKind::Management, choice)
            .await?;
        if let Some(dp) = &dp {
            self.link_certificate(&mut transaction, dp, CertKind::Management, &info.id)
                .await?;
        }
        transaction.commit().await?;
        if let Some(dp) = &dp {
            self.after_certificate_change(&dp.id).await?;
        }
        self.certificates.get(&info.id).await
    }

    /// Imports or replaces the service certificate of a cloud DP. A replacement keeps the DP's service FQDN as
    /// its CN; a new one's CN must be unique among the DPs and match no registered device.
    pub async fn import_service_certificate(
        &self,
        dp: &str,
        choice: &CertChoice,
    ) -> DmResult<CertInfo> {
        let dp = self.cloud_dp(dp).await?;
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let info = self
            .resolve_certificate(&mut transaction, CertKind::Service, choice)
            .await?;
        let current = dp
            .cloud
            .as_ref()
            .map(|cloud| cloud.service_fqdn.clone())
            .unwrap_or_default();
        if !current.is_empty() && !current.eq_ignore_ascii_case(info.common_name.trim()) {
            return Err(DmError::Precondition(format!(
                "the new service certificate's CN {:?} differs from {}'s service FQDN {current:?}; a replacement \
                 must keep the same CN (clients resolve the DP by it)",
                info.common_name, dp.name
            )));
        }
        check_service_name(&mut transaction, &info, Some(&dp.id)).await?;
        self.link_certificate(&mut transaction, &dp, CertKind::Service, &info.id)
            .await?;
        transaction.commit().await?;
        self.after_certificate_change(&dp.id).await?;
        self.certificates.get(&info.id).await
    }

    async fn cloud_dp(&self, id_or_name: &str) -> DmResult<DpRecord> {
        let dp = self.get(id_or_name).await?;
        if dp.kind != DpKind::Cloud {
            return Err(DmError::Precondition(format!(
                "{} is not a cloud distribution point: only cloud DPs have management and service certificates",
                dp.name
            )));
        }
        if dp.state == DpState::Deleting {
            return Err(DmError::Precondition(format!(
                "{} is being deleted",
                dp.name
            )));
        }
        Ok(dp)
    }

    async fn link_certificate(
        &self,
        transaction: &mut sqlx::SqliteConnection,
        dp: &DpRecord,
        column: CertKind,
        certificate_id: &str,
    ) -> DmResult<()> {
        let revision = next_revision(transaction).await?;
        let statement = match column {
            CertKind::Management => {
                "UPDATE distribution_points SET management_certificate_id = ?2, update_time_ms = ?3, revision = ?4 \
                 WHERE id = ?1"
            }
            CertKind::Service => {
                "UPDATE distribution_points SET service_certificate_id = ?2, \
                 service_fqdn = lower((SELECT common_name FROM certificates WHERE id = ?2)), \
                 address = 'https://' || lower((SELECT common_name FROM certificates WHERE id = ?2)), \
                 update_time_ms = ?3, revision = ?4 WHERE id = ?1"
            }
        };
        sqlx::query(statement)
            .bind(&dp.id)
            .bind(certificate_id)
            .bind(now_ms())
            .bind(i64::try_from(revision).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?;
        Ok(())
    }

    /// Tells watchers of a certificate change; a DP waiting for its certificates becomes ready once it has both.
    async fn after_certificate_change(&self, dp_id: &str) -> DmResult<DpRecord> {
        let dp = self.get(dp_id).await?;
        if dp.state == DpState::CertificatesRequired
            && dp.management_certificate_id.is_some()
            && dp.service_certificate_id.is_some()
        {
            tracing::info!(dp.id = %dp.id, dp.name = %dp.name, "certificates imported again; the distribution point serves again");
            return self.set_state(&dp.id, DpState::Ready, "").await;
        }
        self.publish(DpChangeKind::Upserted, &dp, now_ms());
        Ok(dp)
    }

    /// Starts (`running`) or stops a DP's service. Stopping deletes no content and does not stop the site's
    /// transfers to the DP; both are idempotent. Only a READY or STOPPED DP can change.
    pub async fn set_service(
        &self,
        id_or_name: &str,
        running: bool,
        reason: &str,
    ) -> DmResult<DpRecord> {
        let dp = self.get(id_or_name).await?;
        let (wanted, verb) = if running {
            (DpState::Ready, "start")
        } else {
            (DpState::Stopped, "stop")
        };
        if dp.state == wanted {
            return Ok(dp);
        }
        if !matches!(dp.state, DpState::Ready | DpState::Stopped) {
            return Err(DmError::Precondition(format!(
                "cannot {verb} {}: it is {} ({}); its service can be started or stopped only when it is ready or stopped",
                dp.name,
                dp.state.as_str(),
                if dp.state_reason.is_empty() {
                    "no reason recorded"
                } else {
                    dp.state_reason.as_str()
                }
            )));
        }
        let reason = if running {
            String::new()
        } else if reason.trim().is_empty() {
            "stopped by an administrator".to_owned()
        } else {
            reason.trim().to_owned()
        };
        let record = self.set_state(&dp.id, wanted, &reason).await?;
        tracing::info!(dp.id = %record.id, dp.name = %record.name, state = record.state.as_str(), %reason, "distribution point service changed");
        Ok(record)
    }

    /// Deletes a DP: marks it DELETING (so a crash finishes the job at the next start), removes every object of
    /// it from its store (a cloud DP's container too), then the DP with its jobs, parts and group memberships.
    /// Refused while content is being transferred to it. Returns the DP's id and the objects deleted.
    pub async fn delete(&self, id_or_name: &str, force: bool) -> DmResult<Deleted> {
        let dp = self.get(id_or_name).await?;
        let transferring: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM distributions WHERE dp_id = ?1 AND state = 'in_progress'",
        )
        .bind(&dp.id)
        .fetch_one(&self.pool)
        .await?;
        if transferring > 0 && dp.state != DpState::Deleting && !force {
            return Err(DmError::Precondition(format!(
                "content is being transferred to {} right now; delete it when the transfers have finished, or cancel them (`content cancel`)",
                dp.name
            )));
        }
        let dp = if dp.state == DpState::Deleting {
            dp
        } else {
            self.set_state(&dp.id, DpState::Deleting, "delete requested")
                .await?
        };
        match self.clean_store(&dp).await {
            Ok(blobs_deleted) => {
                self.remove_record(&dp).await?;
                Ok(Deleted {
                    id: dp.id,
                    blobs_deleted,
                    left_in_store: String::new(),
                })
            }
            Err(error) if force => {
                let left_in_store = format!(
                    "{} may still hold objects of this DP: {error}",
                    describe_store(dp.store.as_ref())
                );
                tracing::warn!(dp.id = %dp.id, dp.name = %dp.name, %left_in_store, "distribution point removed without cleaning its store (forced)");
                self.remove_record(&dp).await?;
                Ok(Deleted {
                    id: dp.id,
                    blobs_deleted: 0,
                    left_in_store,
                })
            }
            Err(error) => {
                let reason = format!(
                    "delete requested; cleaning the store failed: {error}; retry the delete when the store answers, or remove the record anyway with `clouddp dp delete DP --yes --force`"
                );
                self.set_state(&dp.id, DpState::Deleting, &reason).await?;
                tracing::warn!(dp.id = %dp.id, dp.name = %dp.name, %error, "distribution point delete cannot clean its store; it stays deleting");
                Err(match error {
                    DmError::Unavailable(_) => DmError::Unavailable(reason),
                    _ => DmError::Precondition(reason),
                })
            }
        }
    }

    /// Finishes the deletes a crash interrupted; one that cannot finish yet stays DELETING with its reason.
    pub async fn resume_deletes(&self) -> DmResult<usize> {
        let pending: Vec<DpRecord> = self
            .list(None)
            .await?
            .into_iter()
            .filter(|dp| dp.state == DpState::Deleting)
            .collect();
        let mut finished = 0;
        for dp in &pending {
            tracing::info!(dp.id = %dp.id, dp.name = %dp.name, "finishing an interrupted delete");
            match self.delete(&dp.id, false).await {
                Ok(_) => finished += 1,
                Err(error) => {
                    tracing::warn!(dp.id = %dp.id, dp.name = %dp.name, %error, "an interrupted delete cannot finish yet")
                }
            }
        }
        Ok(finished)
    }

    /// Deletes what clouddp wrote into the DP's store (sealed content and usage logs; its container too, for a
    /// cloud DP, which clouddp created); the objects deleted. Anything else in a folder stays. A store that never
    /// existed has nothing to delete.
    async fn clean_store(&self, dp: &DpRecord) -> DmResult<u64> {
        let store = self.store_for(dp).await?;
        let store_error = |error: StoreError| match error {
            StoreError::Unavailable(_) => DmError::Unavailable(error.to_string()),
            _ => DmError::Precondition(error.to_string()),
        };
        let mut objects = Vec::new();
        for prefix in WRITTEN_PREFIXES {
            match store.list(prefix).await {
                Ok(found) => objects.extend(found),
                Err(StoreError::NotFound(_)) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        objects.retain(|object| written_by_clouddp(&object.path));
        for object in &objects {
            store.delete(&object.path).await.map_err(store_error)?;
        }
        let staged: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT c.content_id || '/v' || c.version FROM distribution_parts p \
             JOIN content_versions c ON c.id = p.content_version_id WHERE p.dp_id = ?1",
        )
        .bind(&dp.id)
        .fetch_all(&self.pool)
        .await?;
        for path in staged {
            store
                .abort(&format!("content/{path}.sealed"))
                .await
                .map_err(store_error)?;
        }
        if dp.kind == DpKind::Cloud {
            match store.delete_container().await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(error) => return Err(store_error(error)),
            }
        }
        Ok(objects.len() as u64)
    }

    /// Removes the DP's record and everything that hangs on it, and tells watchers.
    async fn remove_record(&self, dp: &DpRecord) -> DmResult<()> {
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        for statement in [
            "DELETE FROM distribution_parts WHERE dp_id = ?1",
            "DELETE FROM distributions WHERE dp_id = ?1",
            "DELETE FROM dp_group_members WHERE dp_id = ?1",
            "DELETE FROM dp_secrets WHERE dp_id = ?1",
            "DELETE FROM distribution_points WHERE id = ?1",
        ] {
            sqlx::query(statement)
                .bind(&dp.id)
                .execute(&mut *transaction)
                .await?;
        }
        // The delete is a change of its own: its event carries a revision above the DELETING one.
        let revision = next_revision(&mut transaction).await?;
        transaction.commit().await?;
        let deleted = DpRecord {
            revision,
            ..dp.clone()
        };
        self.publish(DpChangeKind::Deleted, &deleted, now_ms());
        tracing::info!(dp.id = %dp.id, dp.name = %dp.name, "distribution point deleted");
        Ok(())
    }

    /// Changes editable properties; the rest stay. One revision, one event.
    pub async fn update(&self, id_or_name: &str, update: DpUpdate) -> DmResult<DpRecord> {
        let dp = self.get(id_or_name).await?;
        if update.instances.is_some() && dp.kind != DpKind::Cloud {
            return Err(DmError::Precondition(format!(
                "{} is an on-premises distribution point: instances apply to cloud distribution points only",
                dp.name
            )));
        }
        if (update.address.is_some() || update.boundary_groups.is_some())
            && dp.kind == DpKind::Cloud
        {
            return Err(DmError::Precondition(format!(
                "{} is a cloud distribution point: its address is its service FQDN and it has no boundary groups",
                dp.name
            )));
        }
        let thresholds = update.thresholds.unwrap_or(dp.thresholds);
        let instances = match update.instances {
            Some(instances) => Some(validate::instances(instances)?),
            None => dp.cloud.as_ref().map(|cloud| cloud.instances),
        };
        let boundary_groups = update
            .boundary_groups
            .unwrap_or_else(|| dp.boundary_groups.clone());
        let address = match update.address {
            Some(address) => validate::https_url("address", &address)?,
            None => dp.address.clone(),
        };
        let now = now_ms();
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let revision = next_revision(&mut transaction).await?;
        sqlx::query(
            "UPDATE distribution_points SET thresholds = ?2, instances = ?3, boundary_groups = ?4, address = ?5, \
             update_time_ms = ?6, revision = ?7 WHERE id = ?1",
        )
        .bind(&dp.id)
        .bind(serde_json::to_string(&thresholds).map_err(|error| DmError::Internal(error.to_string()))?)
        .bind(instances.map(i64::from))
        .bind(serde_json::to_string(&boundary_groups).map_err(|error| DmError::Internal(error.to_string()))?)
        .bind(&address)
        .bind(now)
        .bind(i64::try_from(revision).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let record = self.get(&dp.id).await?;
        self.publish(DpChangeKind::Upserted, &record, now);
        tracing::info!(dp.id = %record.id, dp.name = %record.name, revision, "distribution point properties updated");
        Ok(record)
    }

    /// Sets the instance count of a cloud DP's content endpoint (1 to 16).
    pub async fn scale(&self, id_or_name: &str, instances: u32) -> DmResult<DpRecord> {
        let update = DpUpdate {
            instances: Some(instances),
            ..DpUpdate::default()
        };
        self.update(id_or_name, update).await
    }

    /// Sets a DP's state and reason, bumping its revision and telling watchers.
    pub async fn set_state(&self, id: &str, state: DpState, reason: &str) -> DmResult<DpRecord> {
        let now = now_ms();
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let revision = next_revision(&mut transaction).await?;
        sqlx::query(
            "UPDATE distribution_points SET state = ?2, state_reason = ?3, update_time_ms = ?4, revision = ?5 WHERE id = ?1",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(reason)
        .bind(now)
        .bind(i64::try_from(revision).unwrap_or(i64::MAX))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let record = self.get(id).await?;
        self.publish(DpChangeKind::Upserted, &record, now);
        Ok(record)
    }

    /// The storage credential of a cloud DP, unsealed; `None` for a folder store.
    pub async fn store_credential(&self, dp: &DpRecord) -> DmResult<Option<CloudCredential>> {
        if !matches!(dp.store, Some(DpStore::AzureBlob { .. })) {
            return Ok(None);
        }
        let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM dp_secrets WHERE dp_id = ?1")
            .bind(&dp.id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                DmError::Precondition(format!(
                    "distribution point {} has no storage credential",
                    dp.name
                ))
            })?;
        let credential = serde_json::from_slice(&self.site_key.unwrap(&sealed, &dp.id)?)
            .map_err(|error| DmError::Internal(format!("stored credential: {error}")))?;
        Ok(Some(credential))
    }

    /// The store of a DP, with its credential unsealed.
    pub async fn store_for(&self, dp: &DpRecord) -> DmResult<Arc<dyn BlobStore>> {
        match &dp.store {
            Some(DpStore::LocalFolder { path }) => Ok(Arc::new(LocalFolderStore::new(path))),
            Some(DpStore::AzureBlob {
                account,
                container,
                endpoint,
            }) => {
                let sealed: Vec<u8> =
                    sqlx::query_scalar("SELECT sealed FROM dp_secrets WHERE dp_id = ?1")
                        .bind(&dp.id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or_else(|| {
                            DmError::Precondition(format!(
                                "distribution point {} has no storage credential",
                                dp.name
                            ))
                        })?;
                let credential: CloudCredential = serde_json::from_slice(
                    &self.site_key.unwrap(&sealed, &dp.id)?,
                )
                .map_err(|error| DmError::Internal(format!("stored credential: {error}")))?;
                let store = AzureStore::new(AzureStoreConfig {
                    account: account.clone(),
                    container: container.clone(),
                    endpoint: endpoint.clone(),
                    credential: credential.into(),
                })
                .map_err(|error| DmError::Precondition(format!("store of {}: {error}", dp.name)))?;
                Ok(Arc::new(store))
            }
            None => Err(DmError::Precondition(format!(
                "distribution point {} has no store",
                dp.name
            ))),
        }
    }

    /// Registers an on-premises or internet-facing DP.
    pub async fn register(&self, mut request: NewOnPremDp) -> DmResult<DpRecord> {
        let folder = std::path::Path::new(&request.folder_path);
        request.folder_path = self
            .roots
            .stores
            .confine(folder, true)
            .map_err(|refused| validate::ValidationError::new("folder_path", refused.0))?
            .display()
            .to_string();
        let folder = std::path::Path::new(&request.folder_path);
        let data_dir = &self.roots.data_dir;
        let in_data_dir = folder.starts_with(data_dir)
            && !folder.starts_with(data_dir.join(crate::config::DATA_DIR_STORES));
        if in_data_dir || data_dir.starts_with(folder) {
            return Err(validate::ValidationError::new(
                "folder_path",
                format!(
                    "{} overlaps the distribution manager's data directory {}; use a folder of its own (under {}/ there, say)",
                    request.folder_path,
                    data_dir.display(),
                    data_dir.join(crate::config::DATA_DIR_STORES).display()
                ),
            )
            .into());
        }
        let now = now_ms();
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        // Two DPs in one folder (or one inside the other) would delete each other's content.
        let folders: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, folder_path FROM distribution_points WHERE folder_path IS NOT NULL",
        )
        .fetch_all(&mut *transaction)
        .await?;
        let wanted = std::path::Path::new(&request.folder_path);
        if let Some((name, folder)) = folders.iter().find(|(_, folder)| {
            let existing = std::path::Path::new(folder);
            wanted.starts_with(existing) || existing.starts_with(wanted)
        }) {
            return Err(DmError::AlreadyExists(format!(
                "folder_path {:?} overlaps the folder {folder:?} of distribution point {name}; give each DP a folder of its own",
                request.folder_path
            )));
        }
        let revision = next_revision(&mut transaction).await?;
        let record = DpRecord {
            id: format!("dp-{}", uuid::Uuid::new_v4()),
            name: request.name,
            kind: request.kind,
            state: DpState::Ready,
            state_reason: String::new(),
            site_code: request.site_code.unwrap_or_else(|| self.site_code.clone()),
            address: request.address,
            store: Some(DpStore::LocalFolder {
                path: request.folder_path,
            }),
            cloud: None,
            thresholds: Thresholds::default(),
            boundary_groups: request.boundary_groups,
            pull_distribution_point: request.pull_distribution_point,
            create_time_ms: now,
            update_time_ms: now,
            revision,
            management_certificate_id: None,
            service_certificate_id: None,
        };
        insert(&mut transaction, &record)
            .await
            .map_err(|error| match error {
                sqlx::Error::Database(database) if database.is_unique_violation() => {
                    DmError::AlreadyExists(format!(
                        "a distribution point named {:?} exists already; choose another name",
                        record.name
                    ))
                }
                other => other.into(),
            })?;
        transaction.commit().await?;
        tracing::info!(dp.id = %record.id, dp.name = %record.name, dp.kind = record.kind.as_str(), revision, "distribution point registered");
        self.publish(DpChangeKind::Upserted, &record, now);
        Ok(record)
    }

    /// One DP by id or name.
    pub async fn get(&self, id_or_name: &str) -> DmResult<DpRecord> {
        let row = sqlx::query("SELECT * FROM distribution_points WHERE id = ?1 OR name = ?1")
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => decode(&row),
            None => Err(DmError::NotFound(format!(
                "no distribution point has the id or name {id_or_name:?}; list them with `clouddp dp list`"
            ))),
        }
    }

    /// All DPs, optionally of one kind, ordered by name.
    pub async fn list(&self, kind: Option<DpKind>) -> DmResult<Vec<DpRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM distribution_points WHERE ?1 IS NULL OR kind = ?1 ORDER BY name COLLATE NOCASE",
        )
        .bind(kind.map(DpKind::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Subscribes to changes, then reads the current DPs: every change committed after the snapshot is
    /// delivered by the receiver (some may also be in the snapshot; compare revisions).
    pub async fn watch(&self) -> DmResult<(Vec<DpRecord>, broadcast::Receiver<DpChange>)> {
        let receiver = self.changes.subscribe();
        let snapshot = self.list(None).await?;
        Ok((snapshot, receiver))
    }

    fn publish(&self, kind: DpChangeKind, dp: &DpRecord, time_ms: i64) {
        self.touch();
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(DpChange {
            kind,
            dp: dp.clone(),
            time_ms,
        });
    }
}

/// Refuses a service certificate whose CN is another DP's service FQDN or names a registered device.
async fn check_service_name(
    transaction: &mut sqlx::SqliteConnection,
    service: &CertInfo,
    dp_id: Option<&str>,
) -> DmResult<()> {
    let common_name = service.common_name.trim();
    if common_name.is_empty() {
        return Err(validate::ValidationError::new(
            "service_certificate",
            format!(
                "the certificate {:?} has no subject CN; its CN must be the DP's service FQDN",
                service.subject
            ),
        )
        .into());
    }
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT name FROM distribution_points WHERE lower(service_fqdn) = lower(?1) AND (?2 IS NULL OR id <> ?2)",
    )
    .bind(common_name)
    .bind(dp_id)
    .fetch_optional(&mut *transaction)
    .await?;
    if let Some(name) = taken {
        return Err(DmError::AlreadyExists(format!(
            "the service certificate's CN {common_name:?} is already the service FQDN of distribution point {name}; \
             each cloud DP needs a service certificate with its own CN"
        )));
    }
    let devices: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT a.principal FROM client_settings_assignments a JOIN client_settings s \
         ON s.id = a.settings_id AND a.generation = s.assignments_generation WHERE a.principal_kind = 'device'",
    )
    .fetch_all(&mut *transaction)
    .await?;
    if let Some(device) = devices
        .iter()
        .find(|device| matches_device(common_name, device))
    {
        return Err(DmError::AlreadyExists(format!(
            "the service certificate's CN {common_name:?} matches the registered device {device:?}; \
             the CN must not match any device name"
        )));
    }
    Ok(())
}

async fn next_revision(transaction: &mut sqlx::SqliteConnection) -> DmResult<u64> {
    let value: i64 = sqlx::query_scalar(
        "UPDATE site_counters SET value = value + 1 WHERE name = 'dp_revision' RETURNING value",
    )
    .fetch_one(&mut *transaction)
    .await?;
    u64::try_from(value).map_err(|_| DmError::Internal(format!("negative revision {value}")))
}

async fn insert(
    transaction: &mut sqlx::SqliteConnection,
    dp: &DpRecord,
) -> Result<(), sqlx::Error> {
    let (folder_path, azure_account, azure_container, azure_endpoint) = match &dp.store {
        Some(DpStore::LocalFolder { path }) => (Some(path.as_str()), None, None, None),
        Some(DpStore::AzureBlob {
            account,
            container,
            endpoint,
        }) => (
            None,
            Some(account.as_str()),
            Some(container.as_str()),
            Some(endpoint.as_str()),
        ),
        None => (None, None, None, None),
    };
    let cloud = dp.cloud.as_ref();
    sqlx::query(
        "INSERT INTO distribution_points (id, name, kind, state, state_reason, site_code, address, folder_path, \
         azure_account, azure_container, azure_endpoint, subscription_id, service_name, region, service_fqdn, \
         instances, thresholds, boundary_groups, pull_distribution_point, create_time_ms, update_time_ms, revision, \
         management_certificate_id, service_certificate_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
    )
    .bind(&dp.id)
    .bind(&dp.name)
    .bind(dp.kind.as_str())
    .bind(dp.state.as_str())
    .bind(&dp.state_reason)
    .bind(&dp.site_code)
    .bind(&dp.address)
    .bind(folder_path)
    .bind(azure_account)
    .bind(azure_container)
    .bind(azure_endpoint)
    .bind(cloud.map(|cloud| cloud.subscription_id.as_str()))
    .bind(cloud.map(|cloud| cloud.service_name.as_str()))
    .bind(cloud.map(|cloud| cloud.region.as_str()))
    .bind(cloud.map(|cloud| cloud.service_fqdn.as_str()))
    .bind(cloud.map(|cloud| i64::from(cloud.instances)))
    .bind(serde_json::to_string(&dp.thresholds).map_err(|error| sqlx::Error::Encode(error.into()))?)
    .bind(serde_json::to_string(&dp.boundary_groups).map_err(|error| sqlx::Error::Encode(error.into()))?)
    .bind(dp.pull_distribution_point)
    .bind(dp.create_time_ms)
    .bind(dp.update_time_ms)
    .bind(i64::try_from(dp.revision).unwrap_or(i64::MAX))
    .bind(&dp.management_certificate_id)
    .bind(&dp.service_certificate_id)
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> DmResult<DpRecord> {
    let corrupt =
        |what: &str| DmError::Internal(format!("stored distribution point has an invalid {what}"));
    let kind_text: String = row.try_get("kind")?;
    let state_text: String = row.try_get("state")?;
    let folder_path: Option<String> = row.try_get("folder_path")?;
    let azure_account: Option<String> = row.try_get("azure_account")?;
    let store = match (folder_path, azure_account) {
        (Some(path), _) => Some(DpStore::LocalFolder { path }),
        (None, Some(account)) => Some(DpStore::AzureBlob {
            account,
            container: row
                .try_get::<Option<String>, _>("azure_container")?
                .unwrap_or_default(),
            endpoint: row
                .try_get::<Option<String>, _>("azure_endpoint")?
                .unwrap_or_default(),
        }),
        (None, None) => None,
    };
    let service_name: Option<String> = row.try_get("service_name")?;
    let cloud = match service_name {
        Some(service_name) => Some(CloudProps {
            subscription_id: row
                .try_get::<Option<String>, _>("subscription_id")?
                .unwrap_or_default(),
            service_name,
            region: row
                .try_get::<Option<String>, _>("region")?
                .unwrap_or_default(),
            service_fqdn: row
                .try_get::<Option<String>, _>("service_fqdn")?
                .unwrap_or_default(),
            instances: u32::try_from(row.try_get::<Option<i64>, _>("instances")?.unwrap_or(2))
                .map_err(|_| corrupt("instance count"))?,
        }),
        None => None,
    };
    let thresholds_json: String = row.try_get("thresholds")?;
    let groups_json: String = row.try_get("boundary_groups")?;
    Ok(DpRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: DpKind::parse(&kind_text).ok_or_else(|| corrupt("kind"))?,
        state: DpState::parse(&state_text).ok_or_else(|| corrupt("state"))?,
        state_reason: row.try_get("state_reason")?,
        site_code: row.try_get("site_code")?,
        address: row.try_get("address")?,
        store,
        cloud,
        thresholds: serde_json::from_str(&thresholds_json).map_err(|_| corrupt("thresholds"))?,
        boundary_groups: serde_json::from_str(&groups_json)
            .map_err(|_| corrupt("boundary group list"))?,
        pull_distribution_point: row.try_get("pull_distribution_point")?,
        create_time_ms: row.try_get("create_time_ms")?,
        update_time_ms: row.try_get("update_time_ms")?,
        revision: u64::try_from(row.try_get::<i64, _>("revision")?)
            .map_err(|_| corrupt("revision"))?,
        management_certificate_id: row.try_get("management_certificate_id")?,
        service_certificate_id: row.try_get("service_certificate_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_clouddp_gives_its_objects_are_deleted() {
        assert!(written_by_clouddp(
            "content/cnt-0b7d1c3e-5d0c-4f49-9a55-0f6f1b2c3d4e/v12.sealed"
        ));
        assert!(written_by_clouddp(
            "usage/2026/12/04/05/ep-1a2b-1764824400000-000042.jsonl"
        ));
        for foreign in [
            "content/notes.txt",
            "content/cnt-0b7d1c3e-5d0c-4f49-9a55-0f6f1b2c3d4e/v12.sealed.bak",
            "content/cnt-not-a-uuid/v1.sealed",
            "content/cnt-0b7d1c3e-5d0c-4f49-9a55-0f6f1b2c3d4e/readme.txt",
            "usage/2026/12/04/05/notes.txt",
            "usage/readme",
            "other.txt",
        ] {
            assert!(!written_by_clouddp(foreign), "{foreign}");
        }
    }
}
