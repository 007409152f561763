//! The usage pull: on an interval, for every followed cloud DP, count the usage log objects its content
//! endpoints appended to its store since the last pull (each object once, also when it arrives late), measure
//! the bytes it stores, keep hourly samples, append a line to `CloudDP-<ServiceName>.log`, and evaluate the
//! storage and 30-day transfer thresholds into alerts.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clouddp_core::usage::{self, GB, HOUR_MS, Level, Limit, WINDOW_MS};
use clouddp_platform::clock::now_ms;
use clouddp_platform::store::{
    AzureCredential, AzureStore, AzureStoreConfig, BlobStore, LocalFolderStore,
};
use clouddp_platform::supervise::Heartbeat;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::alerts::{AlertKind, Alerts, Finding, Severity};
use crate::error::{MonError, MonResult};
use crate::follower::{DpFollower, FollowedDp};

/// How long after its hour a usage object is still looked for.
const LATE_MS: i64 = 25 * HOUR_MS;
/// How long hourly samples are kept.
const KEEP_MS: i64 = 35 * 24 * HOUR_MS;
/// How often postponed alerts are looked at, at most.
pub const WAKE_INTERVAL: Duration = Duration::from_secs(10);
/// Rotated log files kept.
const LOG_GENERATIONS: u32 = 5;

/// The usage pull.
#[derive(Debug)]
pub struct Puller {
    pool: SqlitePool,
    follower: Arc<DpFollower>,
    channel: Channel,
    alerts: Alerts,
    interval: Duration,
    log_dir: PathBuf,
    log_max_bytes: u64,
    clock_offset_ms: i64,
    probe: Option<Probe>,
    /// How long a store must keep failing before the subscription alert.
    alert_after_ms: i64,
    /// Since when each failing DP's store has failed (this service's clock).
    failing_since: std::sync::Mutex<HashMap<String, i64>>,
}

/// The content endpoint health probe.
#[derive(Debug)]
pub struct Probe {
    http: reqwest::Client,
    port: u16,
}

impl Probe {
    /// A probe of `port`, trusting `ca` besides the system roots, with address overrides `host=ip,…`.
    pub fn new(port: u16, ca: Option<&std::path::Path>, resolve: &str) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", ca.display()))?;
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        for pair in resolve
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
        {
            let (host, ip) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("[pull] content_endpoint_resolve {pair:?}: write host=ip")
            })?;
            let ip: std::net::IpAddr = ip.parse().map_err(|_| {
                anyhow::anyhow!("[pull] content_endpoint_resolve {pair:?}: bad address")
            })?;
            builder = builder.resolve(host, std::net::SocketAddr::new(ip, port));
        }
        Ok(Self {
            http: builder.build()?,
            port,
        })
    }

    /// `Err` with what failed when `fqdn`'s content endpoint is not healthy.
    async fn check(&self, fqdn: &str) -> Result<(), String> {
        let url = format!("https://{fqdn}:{}/healthz", self.port);
        match self.http.get(&url).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("{url} answered {}", response.status())),
            Err(error) => {
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(inner) = source {
                    text = format!("{text}: {inner}");
                    source = inner.source();
                }
                Err(format!("{url}: {text}"))
            }
        }
    }
}

/// The outcome of one pull of one DP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Bytes transferred that this pull counted.
    pub transferred: u64,
    /// Bytes transferred in the 30 days ending now.
    pub transferred_30d: u64,
    /// Bytes stored.
    pub stored: u64,
    /// Usage objects counted.
    pub objects: usize,
}

fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

impl Puller {
    /// A puller writing logs to `log_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: SqlitePool,
        follower: Arc<DpFollower>,
        channel: Channel,
        alerts: Alerts,
        interval: Duration,
        log_dir: PathBuf,
        log_max_bytes: u64,
        clock_offset: Duration,
        probe: Option<Probe>,
        alert_after: Duration,
    ) -> Self {
        Self {
            pool,
            follower,
            channel,
            alerts,
            interval,
            log_dir,
            log_max_bytes,
            clock_offset_ms: i64::try_from(clock_offset.as_millis()).unwrap_or(0),
            probe,
            alert_after_ms: i64::try_from(alert_after.as_millis()).unwrap_or(i64::MAX),
            failing_since: std::sync::Mutex::default(),
        }
    }

    fn failing_since_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The service's clock (moved forward by the configured offset).
    pub fn now(&self) -> i64 {
        now_ms() + self.clock_offset_ms
    }

    /// Pulls every followed cloud DP on the interval until `shutdown`; each pull round that goes through is a
    /// heartbeat. A failure to record what a round found ends the loop with the error, for the supervisor.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            fail::fail_point!("pull");
            self.pull_round(&shutdown).await;
            heartbeat.ok();
        }
    }

    /// Makes postponed alerts whose time came active again, every [`WAKE_INTERVAL`] (or pull interval, when
    /// shorter), until `shutdown`.
    pub async fn wake_postponed(
        self: Arc<Self>,
        shutdown: CancellationToken,
        heartbeat: Heartbeat,
    ) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(self.interval.min(WAKE_INTERVAL));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            fail::fail_point!("wake", |_| Err(anyhow::anyhow!(
                "injected failure of the alert reactivation"
            )));
            self.alerts
                .wake_postponed(self.now())
                .await
                .map_err(|error| anyhow::anyhow!("cannot reactivate postponed alerts: {error}"))?;
            heartbeat.ok();
        }
    }

    /// One round: every followed cloud DP pulled and evaluated.
    async fn pull_round(&self, shutdown: &CancellationToken) {
        let dps = match self.follower.list().await {
            Ok(dps) => dps,
            Err(error) => {
                tracing::warn!(%error, "cannot read the followed distribution points");
                return;
            }
        };
        // Only once the follower has seen the distribution manager: an empty list at start means nothing.
        if self.follower.status().await.connected {
            let ids: Vec<String> = dps.iter().map(|dp| dp.id.clone()).collect();
            if let Err(error) = self.alerts.resolve_gone(&ids, self.now()).await {
                tracing::warn!(%error, "cannot resolve the alerts of deleted distribution points");
            }
        }
        for dp in dps
            .iter()
            .filter(|dp| dp.kind == "cloud" && dp.state != "deleting" && dp.state != "provisioning")
        {
            if shutdown.is_cancelled() {
                return;
            }
            match self.pull(dp).await {
                Ok(report) => {
                    self.failing_since_lock().remove(&dp.id);
                    tracing::debug!(dp.name = %dp.name, ?report, "usage pulled");
                }
                Err(error) => self.pull_failed(dp, &error).await,
            }
        }
    }

    /// A pull of `dp` failed: the subscription alert is raised once its store kept failing `alert_after`.
    async fn pull_failed(&self, dp: &FollowedDp, error: &MonError) {
        let now = self.now();
        let since = *self
            .failing_since_lock()
            .entry(dp.id.clone())
            .or_insert(now);
        let failing_ms = now - since;
        if failing_ms < self.alert_after_ms {
            tracing::warn!(dp.name = %dp.name, %error, failing_ms, "usage pull failed; alerting if it goes on");
            return;
        }
        tracing::warn!(dp.name = %dp.name, %error, failing_ms, "usage pull failed");
        let finding = Finding::condition(
            &dp.id,
            &dp.name,
            AlertKind::Subscription,
            Some(Severity::Critical),
            format!(
                "cannot read the usage of {} from its store since {}: {error}; check the subscription, the storage account and its credential",
                dp.name,
                clouddp_core::time::rfc3339_ms(since)
            ),
        );
        if let Err(error) = self.alerts.apply(&finding, now).await {
            tracing::warn!(%error, "cannot record the alert");
        }
    }

    async fn store(&self, dp: &FollowedDp) -> MonResult<Arc<dyn BlobStore>> {
        let access = DistributionPointServiceClient::new(self.channel.clone())
            .get_store_access(pb::GetStoreAccessRequest { id: dp.id.clone() })
            .await
            .map_err(|status| {
                MonError::Unavailable(format!(
                    "the distribution manager refused the store access: {}",
                    status.message()
                ))
            })?
            .into_inner();
        match access.store.and_then(|store| store.location) {
            Some(pb::store_location::Location::LocalFolder(folder)) => {
                Ok(Arc::new(LocalFolderStore::new(&folder.path)))
            }
            Some(pb::store_location::Location::AzureBlob(blob)) => {
                let credential = match access
                    .credential
                    .and_then(|credential| credential.credential)
                {
                    Some(pb::storage_credential::Credential::AccountKey(key)) => {
                        AzureCredential::AccountKey(key)
                    }
                    Some(pb::storage_credential::Credential::SasToken(token)) => {
                        AzureCredential::Sas(token)
                    }
                    Some(pb::storage_credential::Credential::ManagedIdentity(_)) => {
                        AzureCredential::ManagedIdentity
                    }
                    Some(pb::storage_credential::Credential::Emulator(_)) => {
                        AzureCredential::Emulator
                    }
                    // A credential the manager does not hand on (an installer's SAS): read through it.
                    None => {
                        return Ok(Arc::new(crate::through_manager::ThroughManager::new(
                            self.channel.clone(),
                            dp.id.clone(),
                        )));
                    }
                };
                let store = AzureStore::new(AzureStoreConfig {
                    account: blob.account,
                    container: blob.container,
                    endpoint: blob.endpoint,
                    credential,
                })
                .map_err(|error| MonError::Precondition(error.to_string()))?;
                Ok(Arc::new(store))
            }
            None => Err(MonError::Precondition(
                "the distribution point has no store".to_owned(),
            )),
        }
    }

    /// Pulls one DP: counts new usage objects, measures storage, logs, evaluates.
    pub async fn pull(&self, dp: &FollowedDp) -> MonResult<PullReport> {
        let store = self.store(dp).await?;
        let now = self.now();
        let unavailable =
            |error: clouddp_platform::store::StoreError| MonError::Unavailable(error.to_string());
        let mut report = PullReport::default();

        // New usage objects of the last 25 hours, each counted once (its path is recorded with its bytes).
        let mut hour = hour_of(now - LATE_MS);
        while hour <= now {
            let objects = store
                .list(&usage::hour_folder(hour))
                .await
                .map_err(unavailable)?;
            for object in objects {
                let seen: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM usage_objects WHERE dp_id = ?1 AND path = ?2",
                )
                .bind(&dp.id)
                .bind(&object.path)
                .fetch_optional(&self.pool)
                .await?;
                if seen.is_some() {
                    continue;
                }
                let bytes = store
                    .get_range(&object.path, 0..object.size)
                    .await
                    .map_err(unavailable)?;
                let mut by_hour: HashMap<i64, u64> = HashMap::new();
                for line in bytes
                    .split(|&byte| byte == b'\n')
                    .filter(|line| !line.is_empty())
                {
                    match serde_json::from_slice::<usage::UsageRecord>(line) {
                        Ok(record) => {
                            *by_hour.entry(hour_of(record.time_ms)).or_default() += record.bytes
                        }
                        Err(error) => {
                            tracing::warn!(path = %object.path, %error, "skipping an unreadable usage record")
                        }
                    }
                }
                let mut transaction = clouddp_platform::db::write_transaction(&self.pool).await?;
                sqlx::query("INSERT INTO usage_objects (dp_id, path, hour_ms) VALUES (?1, ?2, ?3)")
                    .bind(&dp.id)
                    .bind(&object.path)
                    .bind(hour)
                    .execute(&mut *transaction)
                    .await?;
                for (sample_hour, bytes) in by_hour {
                    sqlx::query(
                        "INSERT INTO usage_hours (dp_id, hour_start_ms, transferred_bytes) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (dp_id, hour_start_ms) DO UPDATE SET transferred_bytes = transferred_bytes + ?3",
                    )
                    .bind(&dp.id)
                    .bind(sample_hour)
                    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
                    .execute(&mut *transaction)
                    .await
                    ?;
                    report.transferred += bytes;
                }
                transaction.commit().await?;
                report.objects += 1;
            }
            hour += HOUR_MS;
        }

        // What the DP stores.
        report.stored = store
            .list("content/")
            .await
            .map_err(unavailable)?
            .iter()
            .map(|object| object.size)
            .sum();
        sqlx::query(
            "INSERT INTO usage_hours (dp_id, hour_start_ms, stored_bytes) VALUES (?1, ?2, ?3) \
             ON CONFLICT (dp_id, hour_start_ms) DO UPDATE SET stored_bytes = ?3",
        )
        .bind(&dp.id)
        .bind(hour_of(now))
        .bind(i64::try_from(report.stored).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        for statement in [
            "DELETE FROM usage_objects WHERE dp_id = ?1 AND hour_ms < ?2",
            "DELETE FROM usage_hours WHERE dp_id = ?1 AND hour_start_ms < ?3",
        ] {
            sqlx::query(statement)
                .bind(&dp.id)
                .bind(now - LATE_MS - HOUR_MS)
                .bind(now - KEEP_MS)
                .execute(&self.pool)
                .await?;
        }
        let samples = self.samples(&dp.id).await?;
        report.transferred_30d = usage::window_total(&samples, now);

        // Thresholds.
        let thresholds = &dp.thresholds;
        let rate = usage::seven_day_rate(&samples, now);
        let transfer = Limit::transfer(thresholds);
        let storage = Limit::storage(thresholds);
        let transfer_level = transfer.level(report.transferred_30d);
        let storage_level = storage.level(report.stored);
        let mut results = Vec::new();
        if thresholds.transfer_alerts_enabled {
            results.push(self.finding(
                dp,
                AlertKind::TransferThreshold,
                transfer,
                report.transferred_30d,
                transfer_level,
                Some(rate),
                now,
            ));
        }
        if thresholds.storage_alerts_enabled {
            results.push(self.finding(
                dp,
                AlertKind::StorageThreshold,
                storage,
                report.stored,
                storage_level,
                None,
                now,
            ));
        }
        // Health: the cloud service must be active, and its certificates valid for 30 more days.
        results.extend(self.health(dp, now).await);
        // The store answered: a subscription alert of this DP clears.
        results.push(Finding::condition(
            &dp.id,
            &dp.name,
            AlertKind::Subscription,
            None,
            format!("the store of {} answers again", dp.name),
        ));
        for finding in &results {
            self.alerts.apply(finding, now).await?;
        }
        if transfer_level == Level::Critical
            && thresholds.stop_service_on_transfer_critical
            && dp.state == "ready"
        {
            self.enforce(dp, report.transferred_30d, transfer, now)
                .await;
        }
        sqlx::query("UPDATE followed_distribution_points SET last_pull_time_ms = ?2 WHERE id = ?1")
            .bind(&dp.id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.log_line(dp, &report, storage_level, transfer_level, now)
            .map_err(|error| {
                MonError::Internal(format!("cannot write the CloudDP log: {error}"))
            })?;
        Ok(report)
    }

    /// The optional enforcement: stops the DP's service through the distribution manager, and says so.
    async fn enforce(&self, dp: &FollowedDp, measured: u64, limit: Limit, now: i64) {
        let reason = format!(
            "stopped by enforcement: {:.3} GB transferred in 30 days reached the critical level ({}% of {} GB)",
            measured as f64 / GB as f64,
            limit.critical_percent,
            limit.threshold_bytes / GB
        );
        let outcome = DistributionPointServiceClient::new(self.channel.clone())
            .stop_service(pb::StopServiceRequest {
                id: dp.id.clone(),
                reason: reason.clone(),
            })
            .await;
        let (severity, message) = match outcome {
            Ok(_) => {
                tracing::warn!(dp.name = %dp.name, %reason, "distribution point stopped by enforcement");
                (
                    Severity::Critical,
                    format!(
                        "{}: {reason}; clients cannot download from it until it is started again",
                        dp.name
                    ),
                )
            }
            Err(status) => (
                Severity::Critical,
                format!(
                    "{}: enforcement could not stop the service: {}",
                    dp.name,
                    status.message()
                ),
            ),
        };
        let finding = Finding {
            dp_id: dp.id.clone(),
            dp_name: dp.name.clone(),
            kind: AlertKind::ServiceStoppedByEnforcement,
            severity: Some(severity),
            message,
            threshold_bytes: limit.threshold_bytes,
            level_percent: limit.critical_percent,
            measured_bytes: measured,
            window_seconds: u64::try_from(WINDOW_MS / 1000).unwrap_or(0),
            forecast_ms: None,
        };
        if let Err(error) = self.alerts.apply(&finding, now).await {
            tracing::warn!(%error, "cannot record the enforcement alert");
        }
    }

    /// The service-state and certificate findings of a DP.
    async fn health(&self, dp: &FollowedDp, now: i64) -> Vec<Finding> {
        let blank = |kind: AlertKind, severity: Option<Severity>, message: String| {
            Finding::condition(&dp.id, &dp.name, kind, severity, message)
        };
        let Ok(current) = DistributionPointServiceClient::new(self.channel.clone())
            .get_distribution_point(pb::GetDistributionPointRequest { id: dp.id.clone() })
            .await
            .map(tonic::Response::into_inner)
        else {
            return Vec::new();
        };
        let mut findings = Vec::new();
        let state = current.state();
        if state == pb::DistributionPointState::Ready {
            findings.push(blank(
                AlertKind::ServiceStoppedByEnforcement,
                None,
                format!("{} was started again", dp.name),
            ));
        }
        let probe_failure = match (
            &self.probe,
            state == pb::DistributionPointState::Ready,
            &current.cloud,
        ) {
            (Some(probe), true, Some(cloud)) if !cloud.service_fqdn.is_empty() => {
                probe.check(&cloud.service_fqdn).await.err()
            }
            _ => None,
        };
        findings.push(if let Some(failure) = probe_failure {
            blank(
                AlertKind::ServiceNotActive,
                Some(Severity::Critical),
                format!(
                    "the content endpoint of {} fails its health check: {failure}",
                    dp.name
                ),
            )
        } else if state == pb::DistributionPointState::Ready {
            blank(
                AlertKind::ServiceNotActive,
                None,
                format!("{} is active again", dp.name),
            )
        } else {
            blank(
                AlertKind::ServiceNotActive,
                Some(Severity::Warning),
                format!(
                    "the cloud service of {} is not active: {}{}",
                    dp.name,
                    state
                        .as_str_name()
                        .trim_start_matches("DISTRIBUTION_POINT_STATE_")
                        .to_ascii_lowercase(),
                    if current.state_reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", current.state_reason)
                    }
                ),
            )
        });
        let soon = now + 30 * 24 * HOUR_MS;
        let mut worst: Option<(Severity, String)> = None;
        for certificate in &current.certificates {
            let not_after = certificate
                .not_after
                .as_ref()
                .map(clouddp_proto::convert::ms_from_timestamp)
                .unwrap_or(i64::MAX);
            let when = clouddp_platform::clock::rfc3339(not_after);
            let found = if not_after <= now {
                Some((
                    Severity::Critical,
                    format!(
                        "the certificate {} ({}) of {} expired on {when}",
                        certificate.subject, certificate.thumbprint, dp.name
                    ),
                ))
            } else if not_after <= soon {
                Some((
                    Severity::Warning,
                    format!(
                        "the certificate {} ({}) of {} expires on {when}; import a new one",
                        certificate.subject, certificate.thumbprint, dp.name
                    ),
                ))
            } else {
                None
            };
            if let Some(found) = found
                && worst
                    .as_ref()
                    .is_none_or(|(severity, _)| found.0 > *severity)
            {
                worst = Some(found);
            }
        }
        findings.push(match worst {
            Some((severity, message)) => blank(AlertKind::Certificate, Some(severity), message),
            None => blank(
                AlertKind::Certificate,
                None,
                format!(
                    "the certificates of {} are valid for 30 days or more",
                    dp.name
                ),
            ),
        });
        findings
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        dp: &FollowedDp,
        kind: AlertKind,
        limit: Limit,
        measured: u64,
        level: Level,
        rate_per_day: Option<f64>,
        now: i64,
    ) -> Finding {
        let (what, window_seconds) = match kind {
            AlertKind::TransferThreshold => (
                "transferred in the last 30 days",
                u64::try_from(WINDOW_MS / 1000).unwrap_or(0),
            ),
            _ => ("stored", 0),
        };
        let next = match level {
            Level::Normal => Some(Level::Warning),
            Level::Warning => Some(Level::Critical),
            Level::Critical => None,
        };
        let forecast_ms = match (next, rate_per_day) {
            (Some(next), Some(rate)) => {
                usage::forecast(measured, limit.level_bytes(next), rate, now)
            }
            _ => None,
        };
        let (severity, percent) = match level {
            Level::Normal => (None, 0),
            Level::Warning => (Some(Severity::Warning), limit.warning_percent),
            Level::Critical => (Some(Severity::Critical), limit.critical_percent),
        };
        let forecast_text = forecast_ms
            .map(|ms| {
                format!(
                    "; at the 7-day rate the next level is crossed around {}",
                    clouddp_platform::clock::rfc3339(ms)
                )
            })
            .unwrap_or_default();
        let message = match severity {
            None => format!(
                "{} {:.3} GB {what}, below the warning level of {}% of {} GB",
                dp.name,
                measured as f64 / GB as f64,
                limit.warning_percent,
                limit.threshold_bytes / GB
            ),
            // As the reference words the storage alert: the remaining free space of the threshold.
            Some(_) if kind == AlertKind::StorageThreshold => format!(
                "{} {:.3} GB stored: at or above {percent}% of its {} GB storage threshold, {:.3} GB of the threshold free{forecast_text}",
                dp.name,
                measured as f64 / GB as f64,
                limit.threshold_bytes / GB,
                limit.threshold_bytes.saturating_sub(measured) as f64 / GB as f64
            ),
            Some(_) => format!(
                "{} {:.3} GB {what}: at or above {percent}% of its {} GB threshold{forecast_text}",
                dp.name,
                measured as f64 / GB as f64,
                limit.threshold_bytes / GB
            ),
        };
        Finding {
            dp_id: dp.id.clone(),
            dp_name: dp.name.clone(),
            kind,
            severity,
            message,
            threshold_bytes: limit.threshold_bytes,
            level_percent: percent,
            measured_bytes: measured,
            window_seconds,
            forecast_ms,
        }
    }

    /// The hourly transfer samples of a DP.
    pub async fn samples(&self, dp_id: &str) -> MonResult<Vec<(i64, u64)>> {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT hour_start_ms, transferred_bytes FROM usage_hours WHERE dp_id = ?1 ORDER BY hour_start_ms")
                .bind(dp_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(hour, bytes)| (hour, u64::try_from(bytes).unwrap_or(0)))
            .collect())
    }

    /// The hourly samples (transferred, stored) of a DP since `since_ms`.
    pub async fn hours(
        &self,
        dp_id: &str,
        since_ms: i64,
    ) -> MonResult<Vec<(i64, u64, Option<u64>)>> {
        let rows: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT hour_start_ms, transferred_bytes, stored_bytes FROM usage_hours WHERE dp_id = ?1 AND hour_start_ms >= ?2 \
             ORDER BY hour_start_ms",
        )
        .bind(dp_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(hour, transferred, stored)| {
                (
                    hour,
                    u64::try_from(transferred).unwrap_or(0),
                    stored.and_then(|value| u64::try_from(value).ok()),
                )
            })
            .collect())
    }

    /// Appends one line to `CloudDP-<ServiceName>.log`, rotating it by size.
    fn log_line(
        &self,
        dp: &FollowedDp,
        report: &PullReport,
        storage: Level,
        transfer: Level,
        now: i64,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.log_dir)?;
        let name = if dp.service_name.is_empty() {
            dp.name.as_str()
        } else {
            dp.service_name.as_str()
        };
        let path = self.log_dir.join(format!("CloudDP-{name}.log"));
        if std::fs::metadata(&path)
            .map(|metadata| metadata.len())
            .unwrap_or(0)
            >= self.log_max_bytes
        {
            for generation in (1..LOG_GENERATIONS).rev() {
                let from = path.with_extension(format!("log.{generation}"));
                if from.exists() {
                    std::fs::rename(
                        &from,
                        path.with_extension(format!("log.{}", generation + 1)),
                    )?;
                }
            }
            std::fs::rename(&path, path.with_extension("log.1"))?;
        }
        let thresholds = &dp.thresholds;
        let line = format!(
            "{} transferred={} transferred_30d={} stored={} storage_threshold_gb={} storage_levels={}%/{}% transfer_threshold_gb={} transfer_levels={}%/{}% storage={} transfer={}\n",
            clouddp_platform::clock::rfc3339(now),
            report.transferred,
            report.transferred_30d,
            report.stored,
            thresholds.storage_alert_gb,
            thresholds.storage_warning_percent,
            thresholds.storage_critical_percent,
            thresholds.transfer_alert_gb,
            thresholds.transfer_warning_percent,
            thresholds.transfer_critical_percent,
            storage.as_str(),
            transfer.as_str()
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?
            .write_all(line.as_bytes())
    }
}
