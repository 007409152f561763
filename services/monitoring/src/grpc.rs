//! `MonitoringService`: the followed DPs are served; usage and alerts are pending.

use std::sync::Arc;

use clouddp_core::dp::{DpKind, DpState};
use clouddp_platform::grpc::{PendingStream, pending};
use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::monitoring_service_server::MonitoringService;
use tonic::{Request, Response, Status};

use crate::follower::{DpFollower, FollowedDp};

const USAGE_AND_ALERTS: &str = "usage and alerts";

/// The gRPC adapter of the monitoring service.
#[derive(Debug, Clone)]
pub struct MonitoringGrpc {
    follower: Arc<DpFollower>,
}

impl MonitoringGrpc {
    /// An adapter over `follower`.
    pub fn new(follower: Arc<DpFollower>) -> Self {
        Self { follower }
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
        let followed = self.follower.list().await.map_err(|error| {
            tracing::error!(%error, "cannot read the followed distribution points");
            Status::internal("cannot read the followed distribution points from the local database")
        })?;
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
        _request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        Err(pending(USAGE_AND_ALERTS, "MonitoringService.GetUsage"))
    }

    async fn list_alerts(
        &self,
        _request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        Err(pending(USAGE_AND_ALERTS, "MonitoringService.ListAlerts"))
    }

    async fn get_alert(
        &self,
        _request: Request<pb::GetAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        Err(pending(USAGE_AND_ALERTS, "MonitoringService.GetAlert"))
    }

    async fn postpone_alert(
        &self,
        _request: Request<pb::PostponeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        Err(pending(USAGE_AND_ALERTS, "MonitoringService.PostponeAlert"))
    }

    async fn acknowledge_alert(
        &self,
        _request: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        Err(pending(
            USAGE_AND_ALERTS,
            "MonitoringService.AcknowledgeAlert",
        ))
    }

    type SubscribeAlertsStream = PendingStream<pb::AlertStreamMessage>;

    async fn subscribe_alerts(
        &self,
        _request: Request<pb::SubscribeAlertsRequest>,
    ) -> Result<Response<Self::SubscribeAlertsStream>, Status> {
        Err(pending(
            USAGE_AND_ALERTS,
            "MonitoringService.SubscribeAlerts",
        ))
    }
}
