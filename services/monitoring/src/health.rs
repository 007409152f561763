//! The health alerts of the site's own services: one `service_health` alert per service, raised while one of
//! its background loops cannot run and resolved when they all run again. Monitoring's own loops are read from
//! its supervisor; the distribution manager's from its gRPC health (NOT_SERVING while a loop of it is down).

use std::sync::Arc;
use std::time::Duration;

use clouddp_platform::supervise::{Heartbeat, Supervisor};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::alerts::{AlertKind, Alerts, Finding, Severity};
use crate::usage::Puller;

/// How often the distribution manager's health is read.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The name a health alert of the monitoring service carries in place of a DP.
pub const MONITORING: &str = "clouddp-monitoring";
/// The name a health alert of the distribution manager carries in place of a DP.
pub const DISTRIBUTION_MANAGER: &str = "clouddp-distribution-manager";

/// Raises and resolves the services' health alerts until `shutdown`.
pub async fn watch(
    supervisor: Supervisor,
    alerts: Alerts,
    puller: Arc<Puller>,
    upstream: Channel,
    shutdown: CancellationToken,
    heartbeat: Heartbeat,
) -> anyhow::Result<()> {
    let mut changes = supervisor.changes();
    // NOT_SERVING counts once seen on two checks in a row: a distribution manager restarting says it for a moment.
    let mut upstream_down_checks = 0_u32;
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        fail::fail_point!("health", |_| Err(anyhow::anyhow!(
            "injected failure of the health alerts"
        )));
        let own = own_finding(&supervisor);
        alerts.apply(&own, puller.now()).await?;
        if let Some(finding) = upstream_finding(&upstream).await {
            upstream_down_checks = if finding.severity.is_some() {
                upstream_down_checks.saturating_add(1)
            } else {
                0
            };
            if upstream_down_checks != 1 {
                alerts.apply(&finding, puller.now()).await?;
            }
        }
        heartbeat.ok();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
            changed = changes.changed() => changed?,
        }
    }
}

/// The monitoring service's own finding: critical while a loop of it is down.
fn own_finding(supervisor: &Supervisor) -> Finding {
    let down = supervisor.down();
    // This loop runs, so it is not down; a finding about itself would never be resolved.
    let described: Vec<String> = down
        .iter()
        .filter(|failure| failure.name != "health")
        .map(|failure| {
            format!(
                "{} ({}; {} failure(s) in a row since {})",
                failure.name,
                failure.cause,
                failure.failures,
                clouddp_core::time::rfc3339_ms(failure.since_ms)
            )
        })
        .collect();
    let (severity, message) = if described.is_empty() {
        (
            None,
            "the background loops of the monitoring service run".to_owned(),
        )
    } else {
        (
            Some(Severity::Critical),
            format!(
                "background loops of the monitoring service cannot run: {}; it restarts them with backoff, see its log",
                described.join(", ")
            ),
        )
    };
    service_finding(MONITORING, severity, message)
}

/// The distribution manager's finding from its health service, or `None` when it cannot be asked (the
/// follower reports an unreachable distribution manager).
async fn upstream_finding(upstream: &Channel) -> Option<Finding> {
    let mut client = HealthClient::new(upstream.clone());
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let answer = tokio::time::timeout(CHECK_INTERVAL, client.check(request))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let (severity, message) = if answer.status() == ServingStatus::Serving {
        (None, "the distribution manager reports SERVING".to_owned())
    } else {
        (
            Some(Severity::Critical),
            "the distribution manager reports NOT_SERVING: one of its background loops cannot run (distribution, endpoint refresh…); its log says which and why".to_owned(),
        )
    };
    Some(service_finding(DISTRIBUTION_MANAGER, severity, message))
}

fn service_finding(service: &str, severity: Option<Severity>, message: String) -> Finding {
    Finding::condition(
        service,
        service,
        AlertKind::ServiceHealth,
        severity,
        message,
    )
}
