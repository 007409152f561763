//! Alerts: one open alert per (DP, condition), raised, escalated, de-escalated, postponed, acknowledged and
//! resolved. Every change is an event with a strictly increasing sequence, committed with the change before it is
//! broadcast to live subscribers; subscribers that fall behind replay from the event table.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

use crate::error::{MonError, MonResult};
use tokio::sync::broadcast;

/// How many events live subscribers may fall behind before they replay from the store instead.
pub const LIVE_BUFFER: usize = 1024;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Stored bytes against the storage threshold.
    StorageThreshold,
    /// 30-day transfers against the transfer threshold.
    TransferThreshold,
    /// The cloud service is not active.
    ServiceNotActive,
    /// The subscription or its credential fails.
    Subscription,
    /// A certificate expired or expires soon.
    Certificate,
    /// Enforcement stopped the service.
    ServiceStoppedByEnforcement,
    /// A background loop of a clouddp service cannot run (the "DP" is the service).
    ServiceHealth,
}

impl AlertKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StorageThreshold => "storage_threshold",
            Self::TransferThreshold => "transfer_threshold",
            Self::ServiceNotActive => "service_not_active",
            Self::Subscription => "subscription",
            Self::Certificate => "certificate",
            Self::ServiceStoppedByEnforcement => "service_stopped_by_enforcement",
            Self::ServiceHealth => "service_health",
        }
    }

    /// From the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::StorageThreshold,
            Self::TransferThreshold,
            Self::ServiceNotActive,
            Self::Subscription,
            Self::Certificate,
            Self::ServiceStoppedByEnforcement,
            Self::ServiceHealth,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information.
    Info,
    /// Warning.
    Warning,
    /// Critical.
    Critical,
}

/// An alert as stored and streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// `alert-<uuid>`.
    pub id: String,
    /// The DP.
    pub dp_id: String,
    /// Its name.
    pub dp_name: String,
    /// The condition.
    pub kind: AlertKind,
    /// Severity.
    pub severity: Severity,
    /// active | postponed | acknowledged | resolved.
    pub state: String,
    /// What happened and what to do.
    pub message: String,
    /// The threshold, bytes.
    pub threshold_bytes: u64,
    /// The level crossed, percent of the threshold.
    pub level_percent: u32,
    /// The measured value, bytes.
    pub measured_bytes: u64,
    /// The window, seconds (30 days for transfers).
    pub window_seconds: u64,
    /// When the level was crossed, ms.
    pub crossing_ms: Option<i64>,
    /// When the next level will be crossed at the 7-day rate, ms.
    pub forecast_ms: Option<i64>,
    /// Raised, ms.
    pub raise_ms: i64,
    /// Last change, ms.
    pub update_ms: i64,
    /// Postponed until, ms.
    pub postponed_until_ms: Option<i64>,
    /// Acknowledgement comment.
    pub ack_comment: String,
}

/// An event of an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Strictly increasing.
    pub sequence: u64,
    /// raised | escalated | deescalated | postponed | acknowledged | resolved.
    pub kind: String,
    /// The alert after the change.
    pub alert: Alert,
    /// When, ms.
    pub time_ms: i64,
}

/// What an evaluation found for one condition of one DP.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The DP.
    pub dp_id: String,
    /// Its name.
    pub dp_name: String,
    /// The condition.
    pub kind: AlertKind,
    /// `None` when the condition is clear.
    pub severity: Option<Severity>,
    /// The message.
    pub message: String,
    /// Threshold bytes.
    pub threshold_bytes: u64,
    /// Level percent.
    pub level_percent: u32,
    /// Measured bytes.
    pub measured_bytes: u64,
    /// Window seconds.
    pub window_seconds: u64,
    /// Forecast of the next level, ms.
    pub forecast_ms: Option<i64>,
}

impl Finding {
    /// A finding about a condition with no measurement behind it (service state, certificates, the store or a
    /// service failing): its byte and window fields are zero. For a service, `dp_id` and `dp_name` are its name.
    pub fn condition(
        dp_id: &str,
        dp_name: &str,
        kind: AlertKind,
        severity: Option<Severity>,
        message: String,
    ) -> Self {
        Self {
            dp_id: dp_id.to_owned(),
            dp_name: dp_name.to_owned(),
            kind,
            severity,
            message,
            threshold_bytes: 0,
            level_percent: 0,
            measured_bytes: 0,
            window_seconds: 0,
            forecast_ms: None,
        }
    }
}

/// The alert store and its live fan-out.
#[derive(Debug, Clone)]
pub struct Alerts {
    pool: SqlitePool,
    live: broadcast::Sender<AlertEvent>,
}

type Result<T> = MonResult<T>;

impl Alerts {
    /// Alerts in `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Self { pool, live }
    }

    /// Live events (after subscribing, replay from the store to fill any gap).
    pub fn subscribe(&self) -> broadcast::Receiver<AlertEvent> {
        self.live.subscribe()
    }

    /// Applies a finding at `now_ms`: raises, escalates, de-escalates or resolves the open alert of its
    /// condition, or does nothing when nothing changed. Returns the event, committed and broadcast.
    pub async fn apply(&self, finding: &Finding, now_ms: i64) -> Result<Option<AlertEvent>> {
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let open = sqlx::query(
            "SELECT * FROM alerts WHERE dp_id = ?1 AND kind = ?2 AND state <> 'resolved'",
        )
        .bind(&finding.dp_id)
        .bind(finding.kind.as_str())
        .fetch_optional(&mut *transaction)
        .await?
        .map(|row| decode(&row))
        .transpose()?;
        let (event_kind, alert) = match (open, finding.severity) {
            (None, None) => return Ok(None),
            (None, Some(severity)) => (
                "raised",
                Alert {
                    id: format!("alert-{}", uuid::Uuid::new_v4()),
                    dp_id: finding.dp_id.clone(),
                    dp_name: finding.dp_name.clone(),
                    kind: finding.kind,
                    severity,
                    state: "active".to_owned(),
                    message: finding.message.clone(),
                    threshold_bytes: finding.threshold_bytes,
                    level_percent: finding.level_percent,
                    measured_bytes: finding.measured_bytes,
                    window_seconds: finding.window_seconds,
                    crossing_ms: Some(now_ms),
                    forecast_ms: finding.forecast_ms,
                    raise_ms: now_ms,
                    update_ms: now_ms,
                    postponed_until_ms: None,
                    ack_comment: String::new(),
                },
            ),
            (Some(mut alert), None) => {
                alert.state = "resolved".to_owned();
                alert.message = finding.message.clone();
                alert.measured_bytes = finding.measured_bytes;
                alert.update_ms = now_ms;
                alert.forecast_ms = None;
                ("resolved", alert)
            }
            (Some(mut alert), Some(severity)) => {
                let kind = match severity.cmp(&alert.severity) {
                    std::cmp::Ordering::Equal => {
                        // Same level: keep the figures current without an event.
                        sqlx::query(
                            "UPDATE alerts SET measured_bytes = ?2, forecast_ms = ?3 WHERE id = ?1",
                        )
                        .bind(&alert.id)
                        .bind(i64::try_from(finding.measured_bytes).unwrap_or(i64::MAX))
                        .bind(finding.forecast_ms)
                        .execute(&mut *transaction)
                        .await?;
                        transaction.commit().await?;
                        return Ok(None);
                    }
                    std::cmp::Ordering::Greater => "escalated",
                    std::cmp::Ordering::Less => "deescalated",
                };
                alert.severity = severity;
                alert.message = finding.message.clone();
                alert.threshold_bytes = finding.threshold_bytes;
                alert.level_percent = finding.level_percent;
                alert.measured_bytes = finding.measured_bytes;
                alert.crossing_ms = Some(now_ms);
                alert.forecast_ms = finding.forecast_ms;
                alert.update_ms = now_ms;
                if kind == "escalated" {
                    // An escalation needs attention again, even if the warning was postponed or acknowledged.
                    alert.state = "active".to_owned();
                    alert.postponed_until_ms = None;
                }
                (kind, alert)
            }
        };
        let event = self
            .write(&mut transaction, event_kind, alert, now_ms)
            .await?;
        transaction.commit().await?;
        let _ = self.live.send(event.clone());
        Ok(Some(event))
    }

    async fn write(
        &self,
        transaction: &mut sqlx::SqliteConnection,
        event_kind: &str,
        alert: Alert,
        now_ms: i64,
    ) -> Result<AlertEvent> {
        sqlx::query(
            "INSERT INTO alerts (id, dp_id, dp_name, kind, severity, state, message, threshold_bytes, level_percent, \
             measured_bytes, window_seconds, crossing_ms, forecast_ms, raise_ms, update_ms, postponed_until_ms, ack_comment) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (id) DO UPDATE SET severity = ?5, state = ?6, message = ?7, threshold_bytes = ?8, \
             level_percent = ?9, measured_bytes = ?10, window_seconds = ?11, crossing_ms = ?12, forecast_ms = ?13, \
             update_ms = ?15, postponed_until_ms = ?16, ack_comment = ?17",
        )
        .bind(&alert.id)
        .bind(&alert.dp_id)
        .bind(&alert.dp_name)
        .bind(alert.kind.as_str())
        .bind(severity_name(alert.severity))
        .bind(&alert.state)
        .bind(&alert.message)
        .bind(i64::try_from(alert.threshold_bytes).unwrap_or(i64::MAX))
        .bind(i64::from(alert.level_percent))
        .bind(i64::try_from(alert.measured_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(alert.window_seconds).unwrap_or(i64::MAX))
        .bind(alert.crossing_ms)
        .bind(alert.forecast_ms)
        .bind(alert.raise_ms)
        .bind(alert.update_ms)
        .bind(alert.postponed_until_ms)
        .bind(&alert.ack_comment)
        .execute(&mut *transaction)
        .await?;
        let sequence: i64 = sqlx::query_scalar(
            "INSERT INTO alert_events (alert_id, type, alert, time_ms) VALUES (?1, ?2, ?3, ?4) RETURNING sequence",
        )
        .bind(&alert.id)
        .bind(event_kind)
        .bind(serde_json::to_string(&alert)?)
        .bind(now_ms)
        .fetch_one(&mut *transaction)
        .await?;
        tracing::info!(alert.id = %alert.id, dp.name = %alert.dp_name, kind = alert.kind.as_str(), severity = severity_name(alert.severity), event = event_kind, sequence, "alert changed");
        Ok(AlertEvent {
            sequence: u64::try_from(sequence).unwrap_or_default(),
            kind: event_kind.to_owned(),
            alert,
            time_ms: now_ms,
        })
    }

    /// Postpones (`until_ms` set) or acknowledges (`comment`) an open alert.
    pub async fn annotate(
        &self,
        id: &str,
        until_ms: Option<i64>,
        comment: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<AlertEvent>> {
        let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
        let Some(mut alert) = sqlx::query("SELECT * FROM alerts WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await?
            .map(|row| decode(&row))
            .transpose()?
        else {
            return Ok(None);
        };
        let kind = match (until_ms, comment) {
            (Some(until), _) => {
                alert.state = "postponed".to_owned();
                alert.postponed_until_ms = Some(until);
                "postponed"
            }
            (None, comment) => {
                alert.state = "acknowledged".to_owned();
                alert.ack_comment = comment.unwrap_or_default().to_owned();
                "acknowledged"
            }
        };
        alert.update_ms = now_ms;
        let event = self.write(&mut transaction, kind, alert, now_ms).await?;
        transaction.commit().await?;
        let _ = self.live.send(event.clone());
        Ok(Some(event))
    }

    /// Resolves the open alerts of DPs that are no longer followed (deleted): nothing is left to watch.
    pub async fn resolve_gone(&self, followed: &[String], now_ms: i64) -> Result<Vec<AlertEvent>> {
        let open = self.list(false).await?;
        let mut events = Vec::new();
        for alert in open
            .into_iter()
            .filter(|alert| alert.kind != AlertKind::ServiceHealth)
            .filter(|alert| !followed.contains(&alert.dp_id))
        {
            let finding = Finding {
                dp_id: alert.dp_id.clone(),
                dp_name: alert.dp_name.clone(),
                kind: alert.kind,
                severity: None,
                message: format!(
                    "{} is no longer a distribution point of the site",
                    alert.dp_name
                ),
                threshold_bytes: alert.threshold_bytes,
                level_percent: alert.level_percent,
                measured_bytes: alert.measured_bytes,
                window_seconds: alert.window_seconds,
                forecast_ms: None,
            };
            if let Some(event) = self.apply(&finding, now_ms).await? {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Makes postponed alerts whose time came active again; returns their events.
    pub async fn wake_postponed(&self, now_ms: i64) -> Result<Vec<AlertEvent>> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM alerts WHERE state = 'postponed' AND postponed_until_ms <= ?1 ORDER BY postponed_until_ms",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(due.len());
        for id in due {
            let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
            let Some(mut alert) =
                sqlx::query("SELECT * FROM alerts WHERE id = ?1 AND state = 'postponed'")
                    .bind(&id)
                    .fetch_optional(&mut *transaction)
                    .await?
                    .map(|row| decode(&row))
                    .transpose()?
            else {
                continue;
            };
            alert.state = "active".to_owned();
            alert.postponed_until_ms = None;
            alert.update_ms = now_ms;
            let event = self
                .write(&mut transaction, "reactivated", alert, now_ms)
                .await?;
            transaction.commit().await?;
            let _ = self.live.send(event.clone());
            events.push(event);
        }
        Ok(events)
    }

    /// One alert.
    pub async fn get(&self, id: &str) -> Result<Option<Alert>> {
        sqlx::query("SELECT * FROM alerts WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| decode(&row))
            .transpose()
    }

    /// Alerts, newest first; resolved ones only when asked.
    pub async fn list(&self, include_resolved: bool) -> Result<Vec<Alert>> {
        let rows = sqlx::query(
            "SELECT * FROM alerts WHERE ?1 OR state <> 'resolved' ORDER BY update_ms DESC, id",
        )
        .bind(include_resolved)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Events after `sequence`, in order, at most `limit`.
    pub async fn events_after(&self, sequence: u64, limit: u32) -> Result<Vec<AlertEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM alert_events WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
        )
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AlertEvent {
                    sequence: u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or_default(),
                    kind: row.try_get("type")?,
                    alert: serde_json::from_str(&row.try_get::<String, _>("alert")?)?,
                    time_ms: row.try_get("time_ms")?,
                })
            })
            .collect()
    }

    /// The newest sequence (0 when none).
    pub async fn latest_sequence(&self) -> Result<u64> {
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(sequence) FROM alert_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(latest
            .and_then(|value| u64::try_from(value).ok())
            .unwrap_or(0))
    }
}

/// The stored name of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<Alert> {
    let kind: String = row.try_get("kind")?;
    let severity: String = row.try_get("severity")?;
    let corrupt = |what: &str| MonError::Internal(format!("stored alert has an invalid {what}"));
    Ok(Alert {
        id: row.try_get("id")?,
        dp_id: row.try_get("dp_id")?,
        dp_name: row.try_get("dp_name")?,
        kind: AlertKind::parse(&kind).ok_or_else(|| corrupt("kind"))?,
        severity: match severity.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return Err(corrupt("severity")),
        },
        state: row.try_get("state")?,
        message: row.try_get("message")?,
        threshold_bytes: u64::try_from(row.try_get::<i64, _>("threshold_bytes")?)
            .unwrap_or_default(),
        level_percent: u32::try_from(row.try_get::<i64, _>("level_percent")?).unwrap_or_default(),
        measured_bytes: u64::try_from(row.try_get::<i64, _>("measured_bytes")?).unwrap_or_default(),
        window_seconds: u64::try_from(row.try_get::<i64, _>("window_seconds")?).unwrap_or_default(),
        crossing_ms: row.try_get("crossing_ms")?,
        forecast_ms: row.try_get("forecast_ms")?,
        raise_ms: row.try_get("raise_ms")?,
        update_ms: row.try_get("update_ms")?,
        postponed_until_ms: row.try_get("postponed_until_ms")?,
        ack_comment: row.try_get("ack_comment")?,
    })
}
