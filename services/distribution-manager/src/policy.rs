//! Client policy: client settings (who may use cloud DPs, assigned to devices and users), boundary groups
//! (subnets and their preferred DPs) and deployments (fallback, task-sequence download mode, cloud selection).

use clouddp_core::{ValidationError, validate};
use clouddp_platform::clock::now_ms;
use sqlx::{Row, SqlitePool};

use crate::error::{DmError, DmResult};

/// The id of the default client settings.
pub const DEFAULT_SETTINGS: &str = "default";
/// Priority of the default settings: after every custom one.
const DEFAULT_PRIORITY: u32 = 10_001;

/// A client settings object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSettings {
    /// `cs-<uuid>` or `default`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Lowest wins among custom settings; the default comes last.
    pub priority: u32,
    /// Allow access to cloud DPs, for devices.
    pub allow_cloud_devices: bool,
    /// Allow access to cloud DPs, for users.
    pub allow_cloud_users: bool,
    /// Devices it is assigned to.
    pub device_ids: Vec<String>,
    /// Users it is assigned to.
    pub user_ids: Vec<String>,
}

impl ClientSettings {
    /// True for the default settings.
    pub fn is_default(&self) -> bool {
        self.id == DEFAULT_SETTINGS
    }
}

/// A boundary group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BoundaryGroup {
    /// `bg-<uuid>`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Subnets, CIDR.
    pub subnets: Vec<ipnet::IpNet>,
    /// Preferred on-premises DPs.
    pub dp_ids: Vec<String>,
}

/// How a task sequence downloads its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSequenceMode {
    /// Not a task sequence.
    #[default]
    None,
    /// Download all content before starting: cloud DPs allowed.
    AllBeforeStart,
    /// Download content when needed: cloud DPs never offered.
    WhenNeeded,
}

impl TaskSequenceMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "",
            Self::AllBeforeStart => "all_before_start",
            Self::WhenNeeded => "when_needed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "all_before_start" => Self::AllBeforeStart,
            "when_needed" => Self::WhenNeeded,
            _ => Self::None,
        }
    }
}

/// How cloud DPs are ordered for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloudSelection {
    /// Random order (the reference's clients).
    #[default]
    Random,
    /// Nearest first.
    Nearest,
}

/// A deployment of a content version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    /// `dep-<uuid>`.
    pub id: String,
    /// The content version id (`<content_id>@<version>`).
    pub content_version_id: String,
    /// Display name.
    pub name: String,
    /// Clients may fall back to remote on-premises DPs.
    pub allow_remote_fallback: bool,
    /// Task sequence download mode.
    pub task_sequence_mode: TaskSequenceMode,
    /// Cloud DP ordering.
    pub cloud_selection: CloudSelection,
    /// Creation time, ms.
    pub create_time_ms: i64,
}

fn principal_list(field: &'static str, values: &[String]) -> DmResult<Vec<String>> {
    if values.len() > MAX_PRINCIPALS {
        return Err(ValidationError::new(
            field,
            format!(
                "{} names given; at most {MAX_PRINCIPALS} per client settings",
                values.len()
            ),
        )
        .into());
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    let mut seen: std::collections::HashSet<String> =
        std::collections::HashSet::with_capacity(values.len());
    for value in values {
        let value = value.trim();
        if value.is_empty()
            || value.chars().count() > clouddp_core::limits::MAX_PRINCIPAL_CHARS
            || value.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                field,
                format!("{value:?} is not a device or user name (1 to 255 printable characters)"),
            )
            .into());
        }
        if seen.insert(value.to_ascii_lowercase()) {
            out.push(value.to_owned());
        }
    }
    Ok(out)
}

/// The most device (or user) names one client settings object is assigned.
pub const MAX_PRINCIPALS: usize = clouddp_core::limits::MAX_PRINCIPALS;

/// Assignments written (or removed) per transaction: about 20 ms of the write lock each.
const ASSIGNMENT_CHUNK: usize = 10_000;

/// Client policy in SQLite.
#[derive(Debug, Clone)]
pub struct Policy {
    pool: SqlitePool,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Saves of client settings, one at a time.
    saving: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Policy {
    /// Policy over `pool`; every committed change bumps `generation` (see
    /// [`crate::dp::DistributionManager::generation`]).
    pub fn new(pool: SqlitePool, generation: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            pool,
            generation,
            saving: std::sync::Arc::default(),
        }
    }

    fn touch(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Creates (`id` empty) or replaces client settings.
    pub async fn save_settings(&self, settings: ClientSettings) -> DmResult<ClientSettings> {
        let creating = settings.id.is_empty();
        let id = if creating {
            format!("cs-{}", uuid::Uuid::new_v4())
        } else {
            self.get_settings(&settings.id).await?.id
        };
        let is_default = id == DEFAULT_SETTINGS;
        let name = validate::display_name_free("settings.name", &settings.name)?;
        let priority = if is_default {
            DEFAULT_PRIORITY
        } else if (1..=clouddp_core::limits::MAX_PRIORITY).contains(&settings.priority) {
            settings.priority
        } else {
            return Err(ValidationError::new(
                "settings.priority",
                "give a priority from 1 (wins) to 10000",
            )
            .into());
        };
        let devices = principal_list("settings.device_ids", &settings.device_ids)?;
        let users = principal_list("settings.user_ids", &settings.user_ids)?;
        if is_default && (!devices.is_empty() || !users.is_empty()) {
            return Err(ValidationError::new(
                "settings",
                "the default client settings apply to everyone and cannot be assigned; create custom settings",
            )
            .into());
        }
        // One save at a time: a save's clean-up removes every generation but the one it switched to.
        let _saving = self.saving.lock().await;
        let generation = uuid::Uuid::new_v4().to_string();
        if creating {
            // The new object exists with no assignment (it applies to nobody) while its assignments are written.
            let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
            // Its other fields come with the switch below.
            sqlx::query(
                "INSERT INTO client_settings (id, name, priority, update_time_ms) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(&id)
            .bind(&name)
            .bind(i64::from(priority))
            .bind(now_ms())
            .execute(&mut *transaction)
            .await
            .map_err(|error| unique(error, format!("client settings named {name:?} exist already")))?;
            transaction.commit().await?;
        }
        let mut longest_lock_ms = self
            .write_assignments(&id, &generation, &devices, &users)
            .await?;
        // The switch: the new fields and the new assignments together, in one short transaction.
        let held = std::time::Instant::now();
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let switched = sqlx::query(
            "UPDATE client_settings SET name = ?2, priority = ?3, allow_cloud_devices = ?4, allow_cloud_users = ?5, \
             update_time_ms = ?6, assignments_generation = ?7 WHERE id = ?1",
        )
        .bind(&id)
        .bind(&name)
        .bind(i64::from(priority))
        .bind(settings.allow_cloud_devices)
        .bind(settings.allow_cloud_users)
        .bind(now_ms())
        .bind(&generation)
        .execute(&mut *transaction)
        .await
        .map_err(|error| unique(error, format!("client settings named {name:?} exist already")));
        let switched = match switched {
            Ok(_) => transaction.commit().await.map_err(DmError::from),
            Err(error) => {
                // Let go of the write lock before cleaning up, or the clean-up waits for it until the busy timeout.
                transaction.rollback().await?;
                tracing::info!(settings.id = %id, %error, "client settings not saved");
                Err(error)
            }
        };
        longest_lock_ms = longest_lock_ms.max(held.elapsed().as_millis());
        // Then the generation left behind (or, when the switch failed, the one written for nothing).
        self.remove_stale_generations(&id).await?;
        switched?;
        tracing::info!(
            settings.id = %id,
            settings.name = %name,
            created = creating,
            assignments = devices.len() + users.len(),
            longest_lock_ms,
            "client settings saved"
        );
        self.get_settings(&id).await
    }

    /// Writes the assignments of `settings_id` under `generation`, a chunk per transaction; returns the longest
    /// time one of them held the write lock, in ms.
    async fn write_assignments(
        &self,
        settings_id: &str,
        generation: &str,
        devices: &[String],
        users: &[String],
    ) -> DmResult<u128> {
        let mut longest_lock_ms = 0;
        for (kind, principals) in [("device", devices), ("user", users)] {
            for chunk in principals.chunks(ASSIGNMENT_CHUNK) {
                let held = std::time::Instant::now();
                let names = serde_json::to_string(chunk)
                    .map_err(|error| DmError::Internal(error.to_string()))?;
                let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO client_settings_assignments (settings_id, generation, principal_kind, principal) \
                     SELECT ?1, ?2, ?3, value FROM json_each(?4)",
                )
                .bind(settings_id)
                .bind(generation)
                .bind(kind)
                .bind(names)
                .execute(&mut *transaction)
                .await?;
                transaction.commit().await?;
                longest_lock_ms = longest_lock_ms.max(held.elapsed().as_millis());
            }
        }
        Ok(longest_lock_ms)
    }

    /// Removes, a chunk per transaction, the assignments of `settings_id` in any generation but its current one.
    async fn remove_stale_generations(&self, settings_id: &str) -> DmResult<()> {
        loop {
            let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
            let removed = sqlx::query(
                "DELETE FROM client_settings_assignments WHERE rowid IN (SELECT rowid FROM client_settings_assignments \
                 WHERE settings_id = ?1 AND generation <> \
                 (SELECT assignments_generation FROM client_settings WHERE id = ?1) LIMIT ?2)",
            )
            .bind(settings_id)
            .bind(i64::try_from(ASSIGNMENT_CHUNK).unwrap_or(i64::MAX))
            .execute(&mut *transaction)
            .await?
            .rows_affected();
            transaction.commit().await?;
            if removed == 0 {
                return Ok(());
            }
        }
    }

    /// Client settings by id or name.
    pub async fn get_settings(&self, id_or_name: &str) -> DmResult<ClientSettings> {
        let row = sqlx::query("SELECT * FROM client_settings WHERE id = ?1 OR name = ?1")
            .bind(id_or_name.trim())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                DmError::NotFound(format!(
                    "no client settings have the id or name {id_or_name:?}"
                ))
            })?;
        self.decode_settings(&row).await
    }

    /// All client settings, by priority (the default last).
    pub async fn list_settings(&self) -> DmResult<Vec<ClientSettings>> {
        let rows = sqlx::query("SELECT * FROM client_settings ORDER BY priority, name")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.decode_settings(row).await?);
        }
        Ok(out)
    }

    /// Deletes custom client settings.
    pub async fn delete_settings(&self, id_or_name: &str) -> DmResult<String> {
        let settings = self.get_settings(id_or_name).await?;
        if settings.is_default() {
            return Err(DmError::Precondition(
                "the default client settings cannot be deleted; change them instead".to_owned(),
            ));
        }
        sqlx::query("DELETE FROM client_settings WHERE id = ?1")
            .bind(&settings.id)
            .execute(&self.pool)
            .await?;
        self.touch();
        Ok(settings.id)
    }

    /// The settings that apply to a device or user: the custom one of lowest priority assigned to it, else the
    /// default.
    pub async fn settings_for(
        &self,
        principal_kind: &str,
        principal: &str,
    ) -> DmResult<ClientSettings> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT s.id FROM client_settings s JOIN client_settings_assignments a ON a.settings_id = s.id \
             AND a.generation = s.assignments_generation \
             WHERE a.principal_kind = ?1 AND a.principal = ?2 ORDER BY s.priority, s.name LIMIT 1",
        )
        .bind(principal_kind)
        .bind(principal.trim())
        .fetch_optional(&self.pool)
        .await?;
        self.get_settings(id.as_deref().unwrap_or(DEFAULT_SETTINGS))
            .await
    }

    async fn decode_settings(&self, row: &sqlx::sqlite::SqliteRow) -> DmResult<ClientSettings> {
        let id: String = row.try_get("id")?;
        let generation: String = row.try_get("assignments_generation")?;
        let assignments = sqlx::query(
            "SELECT principal_kind, principal FROM client_settings_assignments WHERE settings_id = ?1 \
             AND generation = ?2 ORDER BY principal",
        )
        .bind(&id)
        .bind(&generation)
        .fetch_all(&self.pool)
        .await?;
        let pick = |kind: &str| -> Vec<String> {
            assignments
                .iter()
                .filter(|row| row.get::<String, _>("principal_kind") == kind)
                .map(|row| row.get::<String, _>("principal"))
                .collect()
        };
        Ok(ClientSettings {
            name: row.try_get("name")?,
            priority: u32::try_from(row.try_get::<i64, _>("priority")?).unwrap_or(DEFAULT_PRIORITY),
            allow_cloud_devices: row.try_get("allow_cloud_devices")?,
            allow_cloud_users: row.try_get("allow_cloud_users")?,
            device_ids: pick("device"),
            user_ids: pick("user"),
            id,
        })
    }

    /// Creates (`id` empty) or replaces a boundary group.
    pub async fn save_boundary_group(&self, group: BoundaryGroup) -> DmResult<BoundaryGroup> {
        let id = if group.id.is_empty() {
            format!("bg-{}", uuid::Uuid::new_v4())
        } else {
            self.get_boundary_group(&group.id).await?.id
        };
        let name = validate::display_name("boundary_group.name", &group.name)?;
        let mut dp_ids: Vec<String> = Vec::new();
        for dp in &group.dp_ids {
            let row =
                sqlx::query("SELECT id, kind FROM distribution_points WHERE id = ?1 OR name = ?1")
                    .bind(dp.trim())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| {
                        DmError::NotFound(format!(
                            "boundary_group.distribution_point_ids: no distribution point has the id or name {dp:?}"
                        ))
                    })?;
            if row.get::<String, _>("kind") == "cloud" {
                return Err(ValidationError::new(
                    "boundary_group.distribution_point_ids",
                    format!("{dp} is a cloud DP: boundary groups list on-premises site systems; cloud DPs are the fallback"),
                )
                .into());
            }
            let dp_id: String = row.get("id");
            if !dp_ids.contains(&dp_id) {
                dp_ids.push(dp_id);
            }
        }
        let subnets: Vec<String> = group.subnets.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO boundary_groups (id, name, subnets, dp_ids) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET name = ?2, subnets = ?3, dp_ids = ?4",
        )
        .bind(&id)
        .bind(&name)
        .bind(
            serde_json::to_string(&subnets)
                .map_err(|error| DmError::Internal(error.to_string()))?,
        )
        .bind(serde_json::to_string(&dp_ids).map_err(|error| DmError::Internal(error.to_string()))?)
        .execute(&self.pool)
        .await
        .map_err(|error| {
            unique(
                error,
                format!("a boundary group named {name:?} exists already"),
            )
        })?;
        self.touch();
        self.get_boundary_group(&id).await
    }

    /// A boundary group by id or name.
    pub async fn get_boundary_group(&self, id_or_name: &str) -> DmResult<BoundaryGroup> {
        let row = sqlx::query("SELECT * FROM boundary_groups WHERE id = ?1 OR name = ?1")
            .bind(id_or_name.trim())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                DmError::NotFound(format!(
                    "no boundary group has the id or name {id_or_name:?}"
                ))
            })?;
        decode_group(&row)
    }

    /// All boundary groups by name.
    pub async fn list_boundary_groups(&self) -> DmResult<Vec<BoundaryGroup>> {
        let rows = sqlx::query("SELECT * FROM boundary_groups ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_group).collect()
    }

    /// Deletes a boundary group.
    pub async fn delete_boundary_group(&self, id_or_name: &str) -> DmResult<String> {
        let group = self.get_boundary_group(id_or_name).await?;
        sqlx::query("DELETE FROM boundary_groups WHERE id = ?1")
            .bind(&group.id)
            .execute(&self.pool)
            .await?;
        self.touch();
        Ok(group.id)
    }

    /// Creates a deployment of an existing content version.
    pub async fn create_deployment(&self, deployment: Deployment) -> DmResult<Deployment> {
        if deployment.content_version_id.trim().is_empty() {
            return Err(ValidationError::new(
                "deployment.content_id",
                "give the content to deploy",
            )
            .into());
        }
        let content_version_id =
            crate::content::resolve_id(&self.pool, deployment.content_version_id.trim()).await?;
        let given_name = if deployment.name.trim().is_empty() {
            None
        } else {
            Some(validate::display_name_free(
                "deployment.name",
                &deployment.name,
            )?)
        };
        let id = format!("dep-{}", uuid::Uuid::new_v4());
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let taken = |name: String| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM deployments WHERE name = ?1 COLLATE NOCASE",
            )
            .bind(name)
        };
        let name = match given_name {
            Some(name) => {
                if taken(name.clone()).fetch_one(&mut *transaction).await? > 0 {
                    return Err(DmError::AlreadyExists(format!(
                        "a deployment named {name:?} exists already; choose another name"
                    )));
                }
                name
            }
            // Unnamed: the content's id, numbered when another deployment has it already.
            None => {
                let mut candidate = content_version_id.clone();
                let mut number = 1;
                while taken(candidate.clone())
                    .fetch_one(&mut *transaction)
                    .await?
                    > 0
                {
                    number += 1;
                    candidate = format!("{content_version_id} #{number}");
                }
                candidate
            }
        };
        sqlx::query(
            "INSERT INTO deployments (id, content_version_id, name, allow_remote_fallback, task_sequence_mode, \
             cloud_selection, create_time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&id)
        .bind(&content_version_id)
        .bind(&name)
        .bind(deployment.allow_remote_fallback)
        .bind(deployment.task_sequence_mode.as_str())
        .bind(match deployment.cloud_selection {
            CloudSelection::Random => "random",
            CloudSelection::Nearest => "nearest",
        })
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        self.touch();
        tracing::info!(deployment.id = %id, content = %content_version_id, "deployment created");
        self.get_deployment(&id).await
    }

    /// A deployment by id.
    pub async fn get_deployment(&self, id: &str) -> DmResult<Deployment> {
        let row = sqlx::query("SELECT * FROM deployments WHERE id = ?1")
            .bind(id.trim())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| DmError::NotFound(format!("no deployment has the id {id:?}")))?;
        decode_deployment(&row)
    }

    /// Deployments, newest first, optionally of one content version.
    pub async fn list_deployments(&self, content: Option<&str>) -> DmResult<Vec<Deployment>> {
        let content = match content {
            Some(reference) => Some(crate::content::resolve_id(&self.pool, reference).await?),
            None => None,
        };
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE ?1 IS NULL OR content_version_id = ?1 ORDER BY create_time_ms DESC, id",
        )
        .bind(content)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_deployment).collect()
    }

    /// Deletes a deployment.
    pub async fn delete_deployment(&self, id: &str) -> DmResult<String> {
        let deployment = self.get_deployment(id).await?;
        sqlx::query("DELETE FROM deployments WHERE id = ?1")
            .bind(&deployment.id)
            .execute(&self.pool)
            .await?;
        self.touch();
        Ok(deployment.id)
    }
}

/// Parses CIDR subnets; a bare address is a single-host subnet.
pub fn parse_subnets(field: &'static str, values: &[String]) -> DmResult<Vec<ipnet::IpNet>> {
    values
        .iter()
        .map(|value| {
            let value = value.trim();
            value
                .parse::<ipnet::IpNet>()
                .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    ValidationError::new(
                        field,
                        format!(
                            "{value:?} is not a subnet; write it as CIDR, for example 10.1.0.0/16"
                        ),
                    )
                    .into()
                })
        })
        .collect()
}

fn unique(error: sqlx::Error, message: String) -> DmError {
    match error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            DmError::AlreadyExists(message)
        }
        other => other.into(),
    }
}

fn decode_group(row: &sqlx::sqlite::SqliteRow) -> DmResult<BoundaryGroup> {
    let corrupt = || DmError::Internal("stored boundary group is damaged".to_owned());
    let subnets: Vec<String> =
        serde_json::from_str(&row.try_get::<String, _>("subnets")?).map_err(|_| corrupt())?;
    Ok(BoundaryGroup {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        subnets: subnets
            .iter()
            .map(|subnet| subnet.parse().map_err(|_| corrupt()))
            .collect::<DmResult<_>>()?,
        dp_ids: serde_json::from_str(&row.try_get::<String, _>("dp_ids")?)
            .map_err(|_| corrupt())?,
    })
}

fn decode_deployment(row: &sqlx::sqlite::SqliteRow) -> DmResult<Deployment> {
    Ok(Deployment {
        id: row.try_get("id")?,
        content_version_id: row.try_get("content_version_id")?,
        name: row.try_get("name")?,
        allow_remote_fallback: row.try_get("allow_remote_fallback")?,
        task_sequence_mode: TaskSequenceMode::parse(
            &row.try_get::<String, _>("task_sequence_mode")?,
        ),
        cloud_selection: if row.try_get::<String, _>("cloud_selection")? == "nearest" {
            CloudSelection::Nearest
        } else {
            CloudSelection::Random
        },
        create_time_ms: row.try_get("create_time_ms")?,
    })
}
