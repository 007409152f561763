//! Distribution point groups: named sets of DPs; content distributed to a group goes to every member, and to
//! members added later.

use clouddp_core::validate;
use clouddp_platform::clock::now_ms;
use sqlx::{Row, SqlitePool};

use crate::error::{DmError, DmResult};

/// A group with its members and content count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// `grp-<uuid>`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Member DP ids.
    pub member_ids: Vec<String>,
    /// Content versions distributed to the group.
    pub content_count: u32,
    /// Creation time.
    pub create_time_ms: i64,
}

fn conflict(name: &str) -> impl Fn(sqlx::Error) -> DmError + '_ {
    move |error| match error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            DmError::AlreadyExists(format!(
                "a group named {name:?} exists already; choose another name"
            ))
        }
        other => other.into(),
    }
}

/// Creates a group.
pub async fn create(pool: &SqlitePool, name: &str, description: &str) -> DmResult<GroupRecord> {
    let description = clouddp_core::validate::free_text(
        "description",
        description,
        clouddp_core::validate::MAX_DESCRIPTION,
    )?;
    let description = description.as_str();
    let name = validate::display_name("name", name)?;
    let id = format!("grp-{}", uuid::Uuid::new_v4());
    sqlx::query(
        "INSERT INTO dp_groups (id, name, description, create_time_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&id)
    .bind(&name)
    .bind(description)
    .bind(now_ms())
    .execute(pool)
    .await
    .map_err(conflict(&name))?;
    get(pool, &id).await
}

/// One group by id or name.
pub async fn get(pool: &SqlitePool, reference: &str) -> DmResult<GroupRecord> {
    if reference.trim().is_empty() {
        return Err(clouddp_core::ValidationError::new(
            "id",
            "give a distribution point group id or name",
        )
        .into());
    }
    let row = sqlx::query("SELECT * FROM dp_groups WHERE id = ?1 OR name = ?1")
        .bind(reference.trim())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| {
            DmError::NotFound(format!("no distribution point group has the id or name {reference:?}; list them with `clouddp group list`"))
        })?;
    decode(pool, &row).await
}

async fn decode(pool: &SqlitePool, row: &sqlx::sqlite::SqliteRow) -> DmResult<GroupRecord> {
    let id: String = row.try_get("id")?;
    let member_ids: Vec<String> = sqlx::query_scalar(
        "SELECT m.dp_id FROM dp_group_members m JOIN distribution_points d ON d.id = m.dp_id \
         WHERE m.group_id = ?1 ORDER BY d.name COLLATE NOCASE",
    )
    .bind(&id)
    .fetch_all(pool)
    .await?;
    let content_count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM dp_group_contents WHERE group_id = ?1")
            .bind(&id)
            .fetch_one(pool)
            .await?;
    Ok(GroupRecord {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        member_ids,
        content_count: u32::try_from(content_count).unwrap_or(u32::MAX),
        create_time_ms: row.try_get("create_time_ms")?,
        id,
    })
}

/// All groups by name.
pub async fn list(pool: &SqlitePool) -> DmResult<Vec<GroupRecord>> {
    let rows = sqlx::query("SELECT * FROM dp_groups ORDER BY name COLLATE NOCASE")
        .fetch_all(pool)
        .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        groups.push(decode(pool, row).await?);
    }
    Ok(groups)
}

/// Renames a group and/or changes its description.
pub async fn update(
    pool: &SqlitePool,
    reference: &str,
    name: Option<&str>,
    description: Option<&str>,
) -> DmResult<GroupRecord> {
    let description = description
        .map(|text| {
            clouddp_core::validate::free_text(
                "description",
                text,
                clouddp_core::validate::MAX_DESCRIPTION,
            )
        })
        .transpose()?;
    let description = description.as_deref();
    let group = get(pool, reference).await?;
    let name = match name {
        Some(name) if !name.trim().is_empty() => validate::display_name("name", name)?,
        _ => group.name.clone(),
    };
    sqlx::query("UPDATE dp_groups SET name = ?2, description = ?3 WHERE id = ?1")
        .bind(&group.id)
        .bind(&name)
        .bind(description.unwrap_or(&group.description))
        .execute(pool)
        .await
        .map_err(conflict(&name))?;
    get(pool, &group.id).await
}

/// Deletes a group; members and their content stay.
pub async fn delete(pool: &SqlitePool, reference: &str) -> DmResult<String> {
    let group = get(pool, reference).await?;
    sqlx::query("DELETE FROM dp_groups WHERE id = ?1")
        .bind(&group.id)
        .execute(pool)
        .await?;
    Ok(group.id)
}

/// Adds members (DP ids); returns the ids that were not members before.
pub async fn add_members(
    pool: &SqlitePool,
    group_id: &str,
    dp_ids: &[String],
) -> DmResult<Vec<String>> {
    let mut added = Vec::new();
    for dp_id in dp_ids {
        let result =
            sqlx::query("INSERT OR IGNORE INTO dp_group_members (group_id, dp_id) VALUES (?1, ?2)")
                .bind(group_id)
                .bind(dp_id)
                .execute(pool)
                .await?;
        if result.rows_affected() > 0 {
            added.push(dp_id.clone());
        }
    }
    Ok(added)
}

/// Removes members (DP ids).
pub async fn remove_members(pool: &SqlitePool, group_id: &str, dp_ids: &[String]) -> DmResult<()> {
    for dp_id in dp_ids {
        sqlx::query("DELETE FROM dp_group_members WHERE group_id = ?1 AND dp_id = ?2")
            .bind(group_id)
            .bind(dp_id)
            .execute(pool)
            .await?;
    }
    Ok(())
}
