//! Follows the distribution manager's DP list through its watch stream: applies the snapshot and each change to
//! the local database, and reconnects with exponential backoff whenever the stream breaks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use clouddp_core::dp::Thresholds;
use clouddp_platform::client::{TracedChannel, traced};
use clouddp_platform::clock::now_ms;
use clouddp_platform::supervise::Heartbeat;
use clouddp_proto::convert::{dp_kind, dp_state};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use sqlx::{Row, SqlitePool};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument as _;

/// First wait before reconnecting.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A DP as the monitoring service last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowedDp {
    /// The DP's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its kind (stable name).
    pub kind: String,
    /// Its state (stable name).
    pub state: String,
    /// Cloud service name, empty for on-premises DPs.
    pub service_name: String,
    /// Its thresholds.
    pub thresholds: Thresholds,
    /// The distribution manager's revision of it.
    pub revision: u64,
    /// When it was first seen, ms since the epoch.
    pub follow_time_ms: i64,
    /// When usage was last pulled, ms since the epoch.
    pub last_pull_time_ms: Option<i64>,
}

/// The state of the watch stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// True while the stream is open.
    pub connected: bool,
    /// When the current or last stream was opened, ms since the epoch.
    pub connect_time_ms: Option<i64>,
    /// Streams opened since start.
    pub connections: u64,
    /// The last stream error.
    pub last_error: String,
}

/// Errors of the follower.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The stream failed or could not be opened.
    #[error("watch stream: {0}")]
    Stream(#[from] tonic::Status),
    /// The local database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result of following.
pub type FollowResult<T> = Result<T, FollowError>;

/// Keeps the followed DPs in step with the distribution manager.
#[derive(Debug)]
pub struct DpFollower {
    pool: SqlitePool,
    channel: Channel,
    url: String,
    status: RwLock<ConnectionStatus>,
}

impl DpFollower {
    /// A follower of the distribution manager at `url` over `channel`, storing into `pool`.
    pub fn new(pool: SqlitePool, channel: Channel, url: String) -> Self {
        Self {
            pool,
            channel,
            url,
            status: RwLock::new(ConnectionStatus::default()),
        }
    }

    /// The distribution manager's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The watch stream's state now.
    pub async fn status(&self) -> ConnectionStatus {
        self.status.read().await.clone()
    }

    /// Follows until `shutdown` is cancelled, reconnecting with backoff after every failure (an unreachable
    /// distribution manager is the follower doing its work: each attempt is a heartbeat).
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) -> anyhow::Result<()> {
        let mut backoff = BACKOFF_MIN;
        while !shutdown.is_cancelled() {
            fail::fail_point!("follower", |_| Err(anyhow::anyhow!(
                "injected failure of the follower"
            )));
            heartbeat.ok();
            let span = tracing::info_span!("follow_distribution_manager", url = %self.url);
            let outcome = self
                .follow_once(&shutdown, &mut backoff)
                .instrument(span)
                .await;
            {
                let mut status = self.status.write().await;
                status.connected = false;
                if let Err(error) = &outcome {
                    status.last_error = error.to_string();
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            match outcome {
                Ok(()) => {
                    tracing::warn!(url = %self.url, retry_in = ?backoff, "distribution manager closed the watch stream; reconnecting")
                }
                Err(error) => {
                    tracing::warn!(url = %self.url, retry_in = ?backoff, %error, "cannot follow the distribution manager; reconnecting")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        tracing::info!("stopped following the distribution manager");
        Ok(())
    }

    /// One watch stream from open to end; resets `backoff` once the snapshot has been applied.
    async fn follow_once(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> FollowResult<()> {
        let mut client: DistributionPointServiceClient<TracedChannel> =
            DistributionPointServiceClient::new(traced(self.channel.clone()));
        let mut stream = client
            .watch_distribution_points(pb::WatchDistributionPointsRequest {
                skip_snapshot: false,
            })
            .await?
            .into_inner();
        {
            let mut status = self.status.write().await;
            status.connected = true;
            status.connections += 1;
            status.connect_time_ms = Some(now_ms());
        }
        let mut snapshot_ids: HashSet<String> = HashSet::new();
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = stream.message() => message?,
            };
            let Some(event) = message else {
                return Ok(());
            };
            match pb::DistributionPointEventType::try_from(event.r#type) {
                Ok(pb::DistributionPointEventType::Upserted) => {
                    if let Some(dp) = &event.distribution_point {
                        if event.snapshot {
                            snapshot_ids.insert(dp.id.clone());
                        }
                        self.upsert(dp).await?;
                    }
                }
                Ok(pb::DistributionPointEventType::Deleted) => {
                    if let Some(dp) = &event.distribution_point {
                        sqlx::query("DELETE FROM followed_distribution_points WHERE id = ?1")
                            .bind(&dp.id)
                            .execute(&self.pool)
                            .await?;
                        tracing::info!(dp.id = %dp.id, dp.name = %dp.name, "stopped following a deleted distribution point");
                    }
                }
                Ok(pb::DistributionPointEventType::SnapshotComplete) => {
                    let removed = self.retain(&snapshot_ids).await?;
                    *backoff = BACKOFF_MIN;
                    tracing::info!(
                        url = %self.url,
                        following = snapshot_ids.len(),
                        removed,
                        revision = event.revision,
                        "following the distribution manager's distribution points"
                    );
                }
                Ok(pb::DistributionPointEventType::Unspecified) | Err(_) => {
                    tracing::warn!(
                        r#type = event.r#type,
                        "ignoring a distribution point event of unknown type"
                    );
                }
            }
        }
    }

    async fn upsert(&self, dp: &pb::DistributionPoint) -> FollowResult<()> {
        let thresholds = dp
            .thresholds
            .as_ref()
            .and_then(|wire| Thresholds::try_from(wire).ok())
            .unwrap_or_default();
        let kind = dp_kind(dp.kind)
            .map(|kind| kind.as_str())
            .unwrap_or("unknown");
        let state = dp_state(dp.state)
            .map(|state| state.as_str())
            .unwrap_or("unknown");
        let service_name = dp
            .cloud
            .as_ref()
            .map(|cloud| cloud.service_name.as_str())
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO followed_distribution_points \
             (id, name, kind, state, service_name, thresholds, revision, follow_time_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, state = excluded.state, \
             service_name = excluded.service_name, thresholds = excluded.thresholds, revision = excluded.revision \
             WHERE excluded.revision >= followed_distribution_points.revision",
        )
        .bind(&dp.id)
        .bind(&dp.name)
        .bind(kind)
        .bind(state)
        .bind(service_name)
        .bind(serde_json::to_string(&thresholds).unwrap_or_default())
        .bind(i64::try_from(dp.revision).unwrap_or(i64::MAX))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        tracing::debug!(dp.id = %dp.id, dp.name = %dp.name, revision = dp.revision, "distribution point updated");
        Ok(())
    }

    /// Forgets DPs the snapshot no longer has (deleted while disconnected); returns how many.
    async fn retain(&self, ids: &HashSet<String>) -> FollowResult<usize> {
        let known = self.list().await?;
        let mut removed = 0;
        for dp in known.iter().filter(|dp| !ids.contains(&dp.id)) {
            sqlx::query("DELETE FROM followed_distribution_points WHERE id = ?1")
                .bind(&dp.id)
                .execute(&self.pool)
                .await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// The followed DPs, ordered by name.
    pub async fn list(&self) -> FollowResult<Vec<FollowedDp>> {
        let rows =
            sqlx::query("SELECT * FROM followed_distribution_points ORDER BY name COLLATE NOCASE")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let thresholds: String = row.try_get("thresholds")?;
                Ok(FollowedDp {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    state: row.try_get("state")?,
                    service_name: row.try_get("service_name")?,
                    thresholds: serde_json::from_str(&thresholds).unwrap_or_default(),
                    revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or_default(),
                    follow_time_ms: row.try_get("follow_time_ms")?,
                    last_pull_time_ms: row.try_get("last_pull_time_ms")?,
                })
            })
            .collect()
    }
}
