//! `DistributionPointService`: register, get, list and watch are served; the cloud lifecycle RPCs are pending.

use std::collections::HashMap;
use std::sync::Arc;

use clouddp_platform::grpc::pending;
use clouddp_proto::convert::{dp_kind, timestamp_from_ms as timestamp};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_server::DistributionPointService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::dp::{DistributionManager, DpChange, DpChangeKind, DpRecord, DpStore, NewOnPremDp};
use crate::error::DmError;

const LIFECYCLE: &str = "cloud DP lifecycle";

/// Messages a watch stream may buffer before the sender waits for the client.
const WATCH_STREAM_BUFFER: usize = 64;

/// The gRPC adapter of [`DistributionManager`].
#[derive(Debug, Clone)]
pub struct DistributionPointGrpc {
    manager: Arc<DistributionManager>,
    shutdown: CancellationToken,
}

impl DistributionPointGrpc {
    /// An adapter whose watch streams end when `shutdown` is cancelled.
    pub fn new(manager: Arc<DistributionManager>, shutdown: CancellationToken) -> Self {
        Self { manager, shutdown }
    }
}

impl From<&DpRecord> for pb::DistributionPoint {
    fn from(dp: &DpRecord) -> Self {
        let store = dp.store.as_ref().map(|store| pb::StoreLocation {
            location: Some(match store {
                DpStore::LocalFolder { path } => {
                    pb::store_location::Location::LocalFolder(pb::LocalFolderStore {
                        path: path.clone(),
                    })
                }
                DpStore::AzureBlob {
                    account,
                    container,
                    endpoint,
                } => pb::store_location::Location::AzureBlob(pb::AzureBlobStore {
                    account: account.clone(),
                    container: container.clone(),
                    endpoint: endpoint.clone(),
                }),
            }),
        });
        Self {
            id: dp.id.clone(),
            name: dp.name.clone(),
            kind: pb::DistributionPointKind::from(dp.kind).into(),
            state: pb::DistributionPointState::from(dp.state).into(),
            state_reason: dp.state_reason.clone(),
            site_code: dp.site_code.clone(),
            store,
            address: dp.address.clone(),
            boundary_groups: dp.boundary_groups.clone(),
            cloud: dp.cloud.as_ref().map(|cloud| pb::CloudProperties {
                subscription_id: cloud.subscription_id.clone(),
                service_name: cloud.service_name.clone(),
                region: cloud.region.clone(),
                service_fqdn: cloud.service_fqdn.clone(),
                instances: cloud.instances,
            }),
            thresholds: Some((&dp.thresholds).into()),
            pull_distribution_point: dp.pull_distribution_point,
            certificates: Vec::new(),
            content_count: 0,
            content_bytes: 0,
            create_time: Some(timestamp(dp.create_time_ms)),
            update_time: Some(timestamp(dp.update_time_ms)),
            revision: dp.revision,
            group_ids: Vec::new(),
        }
    }
}

fn change_event(change: &DpChange) -> pb::DistributionPointEvent {
    pb::DistributionPointEvent {
        r#type: match change.kind {
            DpChangeKind::Upserted => pb::DistributionPointEventType::Upserted,
            DpChangeKind::Deleted => pb::DistributionPointEventType::Deleted,
        }
        .into(),
        distribution_point: Some((&change.dp).into()),
        revision: change.dp.revision,
        snapshot: false,
        time: Some(timestamp(change.time_ms)),
    }
}

#[tonic::async_trait]
impl DistributionPointService for DistributionPointGrpc {
    async fn install_cloud_distribution_point(
        &self,
        _request: Request<pb::InstallCloudDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        Err(pending(
            LIFECYCLE,
            "DistributionPointService.InstallCloudDistributionPoint",
        ))
    }

    async fn register_distribution_point(
        &self,
        request: Request<pb::RegisterDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        let request = request.into_inner();
        let kind = dp_kind(request.kind).ok_or_else(|| {
            Status::invalid_argument(
                "kind: give ON_PREMISES or INTERNET_FACING (cloud DPs are installed)",
            )
        })?;
        let new_dp = NewOnPremDp::new(
            &request.name,
            kind,
            &request.site_code,
            &request.folder_path,
            &request.address,
            &request.boundary_groups,
            request.pull_distribution_point,
        )?;
        let record = self.manager.register(new_dp).await?;
        Ok(Response::new((&record).into()))
    }

    async fn get_distribution_point(
        &self,
        request: Request<pb::GetDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        let id = request.into_inner().id;
        if id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "id: give a distribution point id or name",
            ));
        }
        let record = self.manager.get(id.trim()).await?;
        Ok(Response::new((&record).into()))
    }

    async fn list_distribution_points(
        &self,
        request: Request<pb::ListDistributionPointsRequest>,
    ) -> Result<Response<pb::ListDistributionPointsResponse>, Status> {
        let request = request.into_inner();
        let kind = dp_kind(request.kind);
        let records = self.manager.list(kind).await?;
        let page = clouddp_core::page::Page::from_request(
            request
                .page
                .as_ref()
                .map(|page| page.page_size)
                .unwrap_or_default(),
            request
                .page
                .as_ref()
                .map(|page| page.page_token.as_str())
                .unwrap_or_default(),
        )
        .map_err(DmError::from)?;
        let (items, next_page_token) = page.slice(&records);
        Ok(Response::new(pb::ListDistributionPointsResponse {
            distribution_points: items.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_distribution_point(
        &self,
        _request: Request<pb::UpdateDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        Err(pending(
            LIFECYCLE,
            "DistributionPointService.UpdateDistributionPoint",
        ))
    }

    async fn start_service(
        &self,
        _request: Request<pb::StartServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        Err(pending(LIFECYCLE, "DistributionPointService.StartService"))
    }

    async fn stop_service(
        &self,
        _request: Request<pb::StopServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        Err(pending(LIFECYCLE, "DistributionPointService.StopService"))
    }

    async fn scale_service(
        &self,
        _request: Request<pb::ScaleServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        Err(pending(LIFECYCLE, "DistributionPointService.ScaleService"))
    }

    async fn delete_distribution_point(
        &self,
        _request: Request<pb::DeleteDistributionPointRequest>,
    ) -> Result<Response<pb::DeleteDistributionPointResponse>, Status> {
        Err(pending(
            LIFECYCLE,
            "DistributionPointService.DeleteDistributionPoint",
        ))
    }

    type WatchDistributionPointsStream = ReceiverStream<Result<pb::DistributionPointEvent, Status>>;

    async fn watch_distribution_points(
        &self,
        request: Request<pb::WatchDistributionPointsRequest>,
    ) -> Result<Response<Self::WatchDistributionPointsStream>, Status> {
        let skip_snapshot = request.into_inner().skip_snapshot;
        let (snapshot, receiver) = self.manager.watch().await?;
        let (sender, stream) = mpsc::channel(WATCH_STREAM_BUFFER);
        tokio::spawn(forward_changes(
            snapshot,
            skip_snapshot,
            receiver,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Sends the snapshot, its end marker, then each change not already in the snapshot, until the client goes
/// away, the server shuts down, or the client falls so far behind that it must resubscribe.
async fn forward_changes(
    snapshot: Vec<DpRecord>,
    skip_snapshot: bool,
    mut receiver: broadcast::Receiver<DpChange>,
    sender: mpsc::Sender<Result<pb::DistributionPointEvent, Status>>,
    shutdown: CancellationToken,
) {
    let snapshot_revisions: HashMap<String, u64> = snapshot
        .iter()
        .map(|dp| (dp.id.clone(), dp.revision))
        .collect();
    let snapshot_revision = snapshot
        .iter()
        .map(|dp| dp.revision)
        .max()
        .unwrap_or_default();
    let mut initial: Vec<pb::DistributionPointEvent> = Vec::new();
    if !skip_snapshot {
        initial.extend(snapshot.iter().map(|dp| pb::DistributionPointEvent {
            r#type: pb::DistributionPointEventType::Upserted.into(),
            distribution_point: Some(dp.into()),
            revision: dp.revision,
            snapshot: true,
            time: Some(timestamp(dp.update_time_ms)),
        }));
    }
    initial.push(pb::DistributionPointEvent {
        r#type: pb::DistributionPointEventType::SnapshotComplete.into(),
        distribution_point: None,
        revision: snapshot_revision,
        snapshot: true,
        time: None,
    });
    for event in initial {
        if sender.send(Ok(event)).await.is_err() {
            return;
        }
    }
    loop {
        let change = tokio::select! {
            () = shutdown.cancelled() => return,
            () = sender.closed() => return,
            received = receiver.recv() => received,
        };
        match change {
            Ok(change) => {
                let already_sent = snapshot_revisions
                    .get(&change.dp.id)
                    .is_some_and(|revision| *revision >= change.dp.revision);
                if already_sent {
                    continue;
                }
                if sender.send(Ok(change_event(&change))).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "a distribution point watcher fell behind; asking it to resubscribe"
                );
                let _ = sender
                    .send(Err(Status::aborted(format!(
                        "the watcher fell {missed} changes behind; subscribe again for a fresh snapshot"
                    ))))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
