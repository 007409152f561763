//! `MonitoringService`: the followed DPs, usage, alerts and the resumable alert stream.

use std::sync::Arc;

use clouddp_core::dp::{DpKind, DpState};
use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::monitoring_service_server::MonitoringService;
use tonic::{Request, Response, Status};

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertEvent, AlertKind, Alerts, Severity};
use crate::error::MonError;
use crate::follower::{DpFollower, FollowedDp};
use crate::usage::Puller;

/// The gRPC adapter of the monitoring service.
#[derive(Debug, Clone)]
pub struct MonitoringGrpc {
    follower: Arc<DpFollower>,
    puller: Arc<Puller>,
    alerts: Alerts,
    shutdown: CancellationToken,
}

impl MonitoringGrpc {
    /// An adapter whose streams end when `shutdown` is cancelled.
    pub fn new(
        follower: Arc<DpFollower>,
        puller: Arc<Puller>,
        alerts: Alerts,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            follower,
            puller,
            alerts,
            shutdown,
        }
    }

    async fn followed(&self, id: &str) -> Result<FollowedDp, Status> {
        let id = id.trim();
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "distribution_point_id: give a DP id or name",
            ));
        }
        self.follower
            .list()
            .await
            .map_err(MonError::from)?
            .into_iter()
            .find(|dp| dp.id == id || dp.name.eq_ignore_ascii_case(id))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "the monitoring service follows no distribution point {id:?}"
                ))
            })
    }

    async fn open_alert(&self, id: &str) -> Result<Alert, Status> {
        required_alert_id(id)?;
        let alert = self
            .alerts
            .get(id.trim())
            .await?
            .ok_or_else(|| not_found(id))?;
        if alert.state == "resolved" {
            return Err(Status::failed_precondition(format!(
                "alert {} is resolved already",
                alert.id
            )));
        }
        Ok(alert)
    }
}

impl From<&FollowedDp> for pb::FollowedDistributionPoint {
    fn from(dp: &FollowedDp) -> Self {
        Self {
            id: dp.id.clone(),
            name: dp.name.clone(),
            kind: DpKind::parse(&dp.kind)
                .map(pb::DistributionPointKind::from)
                .unwrap_or_default()
                .into(),
            state: DpState::parse(&dp.state)
                .map(pb::DistributionPointState::from)
                .unwrap_or_default()
                .into(),
            thresholds: Some((&dp.thresholds).into()),
            service_name: dp.service_name.clone(),
            revision: dp.revision,
            follow_time: Some(timestamp_from_ms(dp.follow_time_ms)),
            last_pull_time: dp.last_pull_time_ms.map(timestamp_from_ms),
        }
    }
}

#[tonic::async_trait]
impl MonitoringService for MonitoringGrpc {
    async fn list_followed_distribution_points(
        &self,
        _request: Request<pb::ListFollowedDistributionPointsRequest>,
    ) -> Result<Response<pb::ListFollowedDistributionPointsResponse>, Status> {
        let followed = self.follower.list().await.map_err(MonError::from)?;
        let status = self.follower.status().await;
        Ok(Response::new(pb::ListFollowedDistributionPointsResponse {
            distribution_points: followed.iter().map(Into::into).collect(),
            connected: status.connected,
            distribution_manager: self.follower.url().to_owned(),
            connect_time: status.connect_time_ms.map(timestamp_from_ms),
            connections: status.connections,
            last_error: status.last_error,
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let request = request.into_inner();
        let dp = self.followed(&request.distribution_point_id).await?;
        let days = match request.days {
            0 => 30,
            days @ 1..=clouddp_core::limits::MAX_USAGE_DAYS => days,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "days: give 1 to {0} (samples are kept {0} days)",
                    clouddp_core::limits::MAX_USAGE_DAYS
                )));
            }
        };
        let now = self.puller.now();
        let hours = self
            .puller
            .hours(&dp.id, now - i64::from(days) * 24 * 3600 * 1000)
            .await?;
        let samples = self.puller.samples(&dp.id).await?;
        Ok(Response::new(pb::Usage {
            distribution_point_id: dp.id.clone(),
            stored_bytes: hours
                .iter()
                .rev()
                .find_map(|(_, _, stored)| *stored)
                .unwrap_or(0),
            transferred_bytes_30d: clouddp_core::usage::window_total(&samples, now),
            samples: hours
                .into_iter()
                .map(|(hour, transferred, stored)| pb::UsageSample {
                    hour_start: Some(timestamp_from_ms(hour)),
                    transferred_bytes: transferred,
                    stored_bytes: stored.unwrap_or(0),
                })
                .collect(),
            last_pull_time: dp.last_pull_time_ms.map(timestamp_from_ms),
            thresholds: Some((&dp.thresholds).into()),
        }))
    }

    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let request = request.into_inner();
        let filter = Filter::new(
            &request.distribution_point_ids,
            &request.kinds,
            request.min_severity,
        )?;
        let alerts = self.alerts.list(request.include_resolved).await?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts
                .iter()
                .filter(|alert| filter.matches(alert))
                .map(alert_to_pb)
                .collect(),
        }))
    }

    async fn get_alert(
        &self,
        request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let id = request.into_inner().id;
        required_alert_id(&id)?;
        let alert = self
            .alerts
            .get(id.trim())
            .await?
            .ok_or_else(|| not_found(&id))?;
        Ok(Response::new(alert_to_pb(&alert)))
    }

    async fn postpone_alert(
        &self,
        request: Request<pb::PostponeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        if let Some(until) = &request.until
            && !(0..1_000_000_000).contains(&until.nanos)
        {
            return Err(Status::invalid_argument(format!(
                "until: nanos {} is out of range (0 to 999,999,999)",
                until.nanos
            )));
        }
        let until = request
            .until
            .as_ref()
            .map(clouddp_proto::convert::ms_from_timestamp)
            .ok_or_else(|| {
                Status::invalid_argument("until: give the time the alert is postponed to")
            })?;
        let now = self.puller.now();
        if until <= now {
            return Err(Status::invalid_argument("until: give a time in the future"));
        }
        if until > now.saturating_add(clouddp_core::usage::MAX_POSTPONE_MS) {
            return Err(Status::invalid_argument(format!(
                "until: {} is more than {} days ahead; postpone for a year at most",
                clouddp_core::time::rfc3339_ms(until),
                clouddp_core::limits::MAX_POSTPONE_DAYS
            )));
        }
        self.open_alert(&request.id).await?;
        let event = self
            .alerts
            .annotate(request.id.trim(), Some(until), None, self.puller.now())
            .await?
            .ok_or_else(|| not_found(&request.id))?;
        Ok(Response::new(alert_to_pb(&event.alert)))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        self.open_alert(&request.id).await?;
        let event = self
            .alerts
            .annotate(
                request.id.trim(),
                None,
                Some(request.comment.trim()),
                self.puller.now(),
            )
            .await?
            .ok_or_else(|| not_found(&request.id))?;
        Ok(Response::new(alert_to_pb(&event.alert)))
    }

    type SubscribeAlertsStream = ReceiverStream<Result<pb::AlertStreamMessage, Status>>;

    async fn subscribe_alerts(
        &self,
        request: Request<pb::SubscribeAlertsRequest>,
    ) -> Result<Response<Self::SubscribeAlertsStream>, Status> {
        let request = request.into_inner();
        let filter = Filter::new(
            &request.distribution_point_ids,
            &request.kinds,
            request.min_severity,
        )?;
        let heartbeat = Duration::from_secs(u64::from(match request.heartbeat_seconds {
            0 => 15,
            seconds @ 1..=clouddp_core::limits::MAX_HEARTBEAT_SECONDS => seconds,
            seconds => {
                return Err(Status::invalid_argument(format!(
                    "heartbeat_seconds: {seconds} is out of range; give 1 to {}, or 0 for 15",
                    clouddp_core::limits::MAX_HEARTBEAT_SECONDS
                )));
            }
        }));
        let latest = self.alerts.latest_sequence().await?;
        if request.after_sequence > latest {
            return Err(Status::out_of_range(format!(
                "after_sequence {} is ahead of the newest event {latest}; resume from a sequence you received, or 0",
                request.after_sequence
            )));
        }
        let (sender, stream) = mpsc::channel(SUBSCRIBER_QUEUE);
        tokio::spawn(feed(
            self.alerts.clone(),
            request.after_sequence,
            filter,
            heartbeat,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Messages buffered per subscriber; a subscriber further behind waits, and catches up from the store.
const SUBSCRIBER_QUEUE: usize = 16;
/// Events read from the store per replay page.
const REPLAY_PAGE: u32 = 256;

/// What a subscriber wants.
#[derive(Debug, Clone, Default)]
struct Filter {
    dps: Vec<String>,
    kinds: Vec<AlertKind>,
    min_severity: Option<Severity>,
}

impl Filter {
    /// The filter of a request; an unknown kind or severity is refused, never read as "any".
    fn new(dps: &[String], kinds: &[i32], min_severity: i32) -> Result<Self, Status> {
        let kinds = kinds
            .iter()
            .filter(|kind| **kind != pb::AlertKind::Unspecified as i32)
            .map(|kind| {
                kind_from_pb(*kind).ok_or_else(|| {
                    Status::invalid_argument(format!("kinds: {kind} is not an AlertKind"))
                })
            })
            .collect::<Result<_, Status>>()?;
        let min_severity = match pb::AlertSeverity::try_from(min_severity) {
            Ok(pb::AlertSeverity::Unspecified) => None,
            Ok(pb::AlertSeverity::Info) => Some(Severity::Info),
            Ok(pb::AlertSeverity::Warning) => Some(Severity::Warning),
            Ok(pb::AlertSeverity::Critical) => Some(Severity::Critical),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "min_severity: {min_severity} is not an AlertSeverity"
                )));
            }
        };
        Ok(Self {
            dps: dps
                .iter()
                .map(|dp| dp.trim().to_owned())
                .filter(|dp| !dp.is_empty())
                .collect(),
            kinds,
            min_severity,
        })
    }

    fn matches(&self, alert: &Alert) -> bool {
        (self.dps.is_empty()
            || self
                .dps
                .iter()
                .any(|dp| *dp == alert.dp_id || dp.eq_ignore_ascii_case(&alert.dp_name)))
            && (self.kinds.is_empty() || self.kinds.contains(&alert.kind))
            && self.min_severity.is_none_or(|min| alert.severity >= min)
    }
}

/// Replays the events after `cursor` from the store, then forwards live ones; falls back to the store whenever
/// the live feed ran ahead (a slow subscriber costs a replay, never a lost event); heartbeats when idle.
async fn feed(
    alerts: Alerts,
    mut cursor: u64,
    filter: Filter,
    heartbeat: Duration,
    sender: mpsc::Sender<Result<pb::AlertStreamMessage, Status>>,
    shutdown: CancellationToken,
) {
    let send = |message: pb::alert_stream_message::Message| {
        let sender = sender.clone();
        async move {
            sender
                .send(Ok(pb::AlertStreamMessage {
                    message: Some(message),
                }))
                .await
                .is_ok()
        }
    };
    'replay: loop {
        let mut live = alerts.subscribe();
        // Catch up from the store (after subscribing, so nothing committed meanwhile is missed).
        loop {
            let page = match alerts.events_after(cursor, REPLAY_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(error))).await;
                    return;
                }
            };
            let full = page.len() == REPLAY_PAGE as usize;
            for event in page {
                cursor = event.sequence;
                if filter.matches(&event.alert)
                    && !send(pb::alert_stream_message::Message::Event(event_to_pb(
                        &event,
                    )))
                    .await
                {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                () = sender.closed() => return,
                received = tokio::time::timeout(heartbeat, live.recv()) => received,
            };
            match received {
                Err(_) => {
                    let latest = alerts.latest_sequence().await.unwrap_or(cursor);
                    let beat = pb::Heartbeat {
                        latest_sequence: latest,
                        time: Some(timestamp_from_ms(clouddp_platform::clock::now_ms())),
                    };
                    if !send(pb::alert_stream_message::Message::Heartbeat(beat)).await {
                        return;
                    }
                }
                Ok(Ok(event)) => {
                    if event.sequence <= cursor {
                        continue;
                    }
                    if event.sequence > cursor + 1 {
                        // Something between was not seen live: take it from the store.
                        continue 'replay;
                    }
                    cursor = event.sequence;
                    if filter.matches(&event.alert)
                        && !send(pb::alert_stream_message::Message::Event(event_to_pb(
                            &event,
                        )))
                        .await
                    {
                        return;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    // A slow subscriber: count it, and take what it missed from the store.
                    tracing::info!(
                        missed,
                        cursor,
                        "an alert subscriber fell behind the live feed; replaying from the store"
                    );
                    continue 'replay;
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            }
        }
    }
}

/// An empty alert id is a missing argument, as everywhere: INVALID_ARGUMENT, not NOT_FOUND.
fn required_alert_id(id: &str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(Status::invalid_argument("id: give an alert id (`alert-…`)"));
    }
    Ok(())
}

fn not_found(id: &str) -> Status {
    MonError::NotFound(format!(
        "no alert has the id {id:?}; list them with `clouddp alerts list`"
    ))
    .into()
}

fn kind_from_pb(kind: i32) -> Option<AlertKind> {
    match pb::AlertKind::try_from(kind).ok()? {
        pb::AlertKind::StorageThreshold => Some(AlertKind::StorageThreshold),
        pb::AlertKind::TransferThreshold => Some(AlertKind::TransferThreshold),
        pb::AlertKind::ServiceNotActive => Some(AlertKind::ServiceNotActive),
        pb::AlertKind::Subscription => Some(AlertKind::Subscription),
        pb::AlertKind::Certificate => Some(AlertKind::Certificate),
        pb::AlertKind::ServiceStoppedByEnforcement => Some(AlertKind::ServiceStoppedByEnforcement),
        pb::AlertKind::ServiceHealth => Some(AlertKind::ServiceHealth),
        pb::AlertKind::Unspecified => None,
    }
}

fn alert_to_pb(alert: &Alert) -> pb::Alert {
    pb::Alert {
        id: alert.id.clone(),
        distribution_point_id: alert.dp_id.clone(),
        distribution_point_name: alert.dp_name.clone(),
        kind: match alert.kind {
            AlertKind::StorageThreshold => pb::AlertKind::StorageThreshold,
            AlertKind::TransferThreshold => pb::AlertKind::TransferThreshold,
            AlertKind::ServiceNotActive => pb::AlertKind::ServiceNotActive,
            AlertKind::Subscription => pb::AlertKind::Subscription,
            AlertKind::Certificate => pb::AlertKind::Certificate,
            AlertKind::ServiceStoppedByEnforcement => pb::AlertKind::ServiceStoppedByEnforcement,
            AlertKind::ServiceHealth => pb::AlertKind::ServiceHealth,
        }
        .into(),
        severity: match alert.severity {
            Severity::Info => pb::AlertSeverity::Info,
            Severity::Warning => pb::AlertSeverity::Warning,
            Severity::Critical => pb::AlertSeverity::Critical,
        }
        .into(),
        state: match alert.state.as_str() {
            "active" => pb::AlertState::Active,
            "postponed" => pb::AlertState::Postponed,
            "acknowledged" => pb::AlertState::Acknowledged,
            "resolved" => pb::AlertState::Resolved,
            _ => pb::AlertState::Unspecified,
        }
        .into(),
        message: alert.message.clone(),
        threshold_bytes: alert.threshold_bytes,
        level_percent: alert.level_percent,
        measured_bytes: alert.measured_bytes,
        window_seconds: alert.window_seconds,
        crossing_time: alert.crossing_ms.map(timestamp_from_ms),
        forecast_next_level_time: alert.forecast_ms.map(timestamp_from_ms),
        raise_time: Some(timestamp_from_ms(alert.raise_ms)),
        update_time: Some(timestamp_from_ms(alert.update_ms)),
        postponed_until: alert.postponed_until_ms.map(timestamp_from_ms),
        acknowledge_comment: alert.ack_comment.clone(),
    }
}

fn event_to_pb(event: &AlertEvent) -> pb::AlertEvent {
    pb::AlertEvent {
        sequence: event.sequence,
        r#type: match event.kind.as_str() {
            "raised" => pb::AlertEventType::Raised,
            "escalated" => pb::AlertEventType::Escalated,
            "deescalated" => pb::AlertEventType::Deescalated,
            "postponed" => pb::AlertEventType::Postponed,
            "acknowledged" => pb::AlertEventType::Acknowledged,
            "resolved" => pb::AlertEventType::Resolved,
            "reactivated" => pb::AlertEventType::Reactivated,
            _ => pb::AlertEventType::Unspecified,
        }
        .into(),
        alert: Some(alert_to_pb(&event.alert)),
        time: Some(timestamp_from_ms(event.time_ms)),
    }
}
