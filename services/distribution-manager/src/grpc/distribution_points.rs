//! `DistributionPointService`: install, register, get, list, update, start/stop, scale, delete and watch.

use std::collections::HashMap;
use std::sync::Arc;

use clouddp_proto::convert::{dp_kind, timestamp_from_ms as timestamp};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_server::DistributionPointService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::certs::CertKind;
use crate::dp::{
    CloudCredential, CloudProps, DistributionManager, DpChange, DpChangeKind, DpRecord, DpStore,
    DpUpdate, NewCloudDp, NewOnPremDp,
};
use crate::error::DmError;
use clouddp_core::dp::Thresholds;
use clouddp_core::validate;

/// Messages a watch stream may buffer before the sender waits for the client.
const WATCH_STREAM_BUFFER: usize = 64;
/// The store folder of usage logs.
const STORE_USAGE: &str = "usage/";
/// Most objects ListStoreObjects answers.
const MAX_LISTED_OBJECTS: usize = 20_000;
/// Largest object ReadStoreObject reads.
const MAX_READ_OBJECT: u64 = 1 << 20;

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

impl DistributionPointGrpc {
    /// A DP with the public details of its certificates.
    async fn described(&self, record: &DpRecord) -> Result<pb::DistributionPoint, DmError> {
        let mut dp = pb::DistributionPoint::from(record);
        let (count, bytes) = self.manager.content_totals(&record.id).await?;
        dp.content_count = count;
        dp.content_bytes = bytes;
        if record.management_certificate_id.is_some() || record.service_certificate_id.is_some() {
            dp.certificates = self
                .manager
                .certificates()
                .list(Some(&record.id), None)
                .await?
                .iter()
                .map(Into::into)
                .collect();
        }
        Ok(dp)
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

/// Turns an update request and its field mask into the changes to make. Read-only paths are refused with
/// FAILED_PRECONDITION (they need a new DP), unknown ones with INVALID_ARGUMENT.
fn update_from_mask(
    current: &DpRecord,
    request: &pb::UpdateDistributionPointRequest,
) -> Result<DpUpdate, DmError> {
    let paths = request
        .update_mask
        .as_ref()
        .map(|mask| mask.paths.clone())
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(validate::ValidationError::new(
            "update_mask",
            "name the fields to change, for example thresholds.storage_alert_gb",
        )
        .into());
    }
    let given = request.distribution_point.clone().unwrap_or_default();
    let wire = given.thresholds.unwrap_or_default();
    let mut thresholds = current.thresholds;
    let mut update = DpUpdate::default();
    let mut thresholds_changed = false;
    for path in &paths {
        match path.as_str() {
            "thresholds" => {
                thresholds = Thresholds::try_from(&wire)?;
                thresholds_changed = true;
            }
            "thresholds.storage_alert_gb" => thresholds.storage_alert_gb = wire.storage_alert_gb,
            "thresholds.storage_warning_percent" => {
                thresholds.storage_warning_percent = wire.storage_warning_percent
            }
            "thresholds.storage_critical_percent" => {
                thresholds.storage_critical_percent = wire.storage_critical_percent
            }
            "thresholds.transfer_alert_gb" => thresholds.transfer_alert_gb = wire.transfer_alert_gb,
            "thresholds.transfer_warning_percent" => {
                thresholds.transfer_warning_percent = wire.transfer_warning_percent
            }
            "thresholds.transfer_critical_percent" => {
                thresholds.transfer_critical_percent = wire.transfer_critical_percent
            }
            "thresholds.storage_alerts_enabled" => {
                thresholds.storage_alerts_enabled = wire.storage_alerts_enabled
            }
            "thresholds.transfer_alerts_enabled" => {
                thresholds.transfer_alerts_enabled = wire.transfer_alerts_enabled
            }
            "thresholds.stop_service_on_transfer_critical" => {
                thresholds.stop_service_on_transfer_critical =
                    wire.stop_service_on_transfer_critical;
            }
            "cloud.instances" => {
                update.instances = Some(
                    given
                        .cloud
                        .as_ref()
                        .map(|cloud| cloud.instances)
                        .unwrap_or_default(),
                );
            }
            "boundary_groups" => {
                let mut groups = Vec::new();
                for group in &given.boundary_groups {
                    groups.push(validate::display_name("boundary_groups", group)?);
                }
                update.boundary_groups = Some(groups);
            }
            "address" => update.address = Some(given.address.clone()),
            "cloud.subscription_id"
            | "cloud.service_name"
            | "cloud.region"
            | "cloud.service_fqdn"
            | "kind"
            | "id"
            | "site_code"
            | "store"
            | "pull_distribution_point" => {
                return Err(DmError::Precondition(format!(
                    "{path} of {} is read-only: install a new distribution point to change it",
                    current.name
                )));
            }
            "state" | "state_reason" => {
                return Err(DmError::Precondition(
                    "the state changes through StartService and StopService, not through an update"
                        .to_owned(),
                ));
            }
            "certificates" => {
                return Err(DmError::Precondition(
                    "certificates change through `clouddp cert import --dp` (CertificateService.ImportServiceCertificate, \
                     or ImportManagementCertificate with distribution_point_id), which checks them"
                        .to_owned(),
                ));
            }
            other => {
                return Err(validate::ValidationError::new(
                    "update_mask",
                    format!("{other:?} is not a field that can be updated"),
                )
                .into());
            }
        }
        if path.starts_with("thresholds") {
            thresholds_changed = true;
        }
    }
    if thresholds_changed {
        thresholds.validate()?;
        update.thresholds = Some(thresholds);
    }
    Ok(update)
}

/// The trimmed DP id or name of a request, or INVALID_ARGUMENT.
fn required_id(id: &str) -> Result<String, Status> {
    super::required_with("id", id, "give a distribution point id or name")
}

/// Validates an install request into a [`NewCloudDp`]; the first problem names its field.
fn cloud_request(request: pb::InstallCloudDistributionPointRequest) -> Result<NewCloudDp, DmError> {
    if request.pull_distribution_point {
        return Err(DmError::Precondition(
            "a cloud distribution point cannot be configured as a pull distribution point"
                .to_owned(),
        ));
    }
    let management_certificate = super::certificates::cert_choice(
        CertKind::Management,
        "management_certificate",
        request.management_certificate,
    )?;
    let service_certificate = super::certificates::cert_choice(
        CertKind::Service,
        "service_certificate",
        request.service_certificate,
    )?;
    let cloud = request.cloud.unwrap_or_default();
    let service_name = validate::dns_label("cloud.service_name", &cloud.service_name)?;
    let store = request.store.unwrap_or_default();
    let credential = match request
        .credential
        .and_then(|credential| credential.credential)
    {
        Some(pb::storage_credential::Credential::AccountKey(key)) if !key.is_empty() => {
            CloudCredential::AccountKey(key)
        }
        Some(pb::storage_credential::Credential::SasToken(token)) if !token.is_empty() => {
            CloudCredential::SasToken(token)
        }
        Some(pb::storage_credential::Credential::ManagedIdentity(true)) => {
            CloudCredential::ManagedIdentity
        }
        Some(pb::storage_credential::Credential::Emulator(true)) => CloudCredential::Emulator,
        _ => {
            return Err(validate::ValidationError::new(
                "credential",
                "give the storage account key, a SAS token, managed identity, or the emulator",
            )
            .into());
        }
    };
    let account = if store.account.is_empty() && credential == CloudCredential::Emulator {
        clouddp_platform::store::EMULATOR_ACCOUNT.to_owned()
    } else {
        validate::storage_account("store.account", &store.account)?
    };
    let container = if store.container.is_empty() {
        service_name.clone()
    } else {
        validate::dns_label("store.container", &store.container)?
    };
    let endpoint = if store.endpoint.is_empty() {
        String::new()
    } else if store.endpoint.starts_with("https://") || store.endpoint.starts_with("http://") {
        store.endpoint.trim_end_matches('/').to_owned()
    } else {
        return Err(validate::ValidationError::new(
            "store.endpoint",
            "must be an http:// or https:// URL",
        )
        .into());
    };
    let mut thresholds = Thresholds::default();
    if let Some(wire) = &request.thresholds {
        let or_default = |value: u64, default: u64| if value == 0 { default } else { value };
        let or_default_percent =
            |value: u32, default: u32| if value == 0 { default } else { value };
        thresholds.storage_alert_gb =
            or_default(wire.storage_alert_gb, thresholds.storage_alert_gb);
        thresholds.storage_warning_percent = or_default_percent(
            wire.storage_warning_percent,
            thresholds.storage_warning_percent,
        );
        thresholds.storage_critical_percent = or_default_percent(
            wire.storage_critical_percent,
            thresholds.storage_critical_percent,
        );
        thresholds.transfer_alert_gb =
            or_default(wire.transfer_alert_gb, thresholds.transfer_alert_gb);
        thresholds.transfer_warning_percent = or_default_percent(
            wire.transfer_warning_percent,
            thresholds.transfer_warning_percent,
        );
        thresholds.transfer_critical_percent = or_default_percent(
            wire.transfer_critical_percent,
            thresholds.transfer_critical_percent,
        );
        thresholds.stop_service_on_transfer_critical = wire.stop_service_on_transfer_critical;
    }
    thresholds.validate()?;
    Ok(NewCloudDp {
        name: if request.name.trim().is_empty() {
            service_name.clone()
        } else {
            validate::display_name("name", &request.name)?
        },
        site_code: if request.site_code.trim().is_empty() {
            None
        } else {
            Some(validate::site_code(&request.site_code)?)
        },
        cloud: CloudProps {
            subscription_id: validate::guid("cloud.subscription_id", &cloud.subscription_id)?,
            region: validate::dns_label("cloud.region", &cloud.region)?,
            service_fqdn: format!("{service_name}.cloudapp.net"),
            instances: validate::instances(if cloud.instances == 0 {
                2
            } else {
                cloud.instances
            })?,
            service_name,
        },
        account,
        container,
        endpoint,
        credential,
        thresholds,
        management_certificate,
        service_certificate,
    })
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
        request: Request<pb::InstallCloudDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().name);
        let new_dp = cloud_request(request.into_inner()).map_err(Status::from)?;
        let record = self.manager.install_cloud(new_dp).await?;
        Ok(Response::new((&record).into()))
    }

    async fn register_distribution_point(
        &self,
        request: Request<pb::RegisterDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().name);
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
        let request = request.into_inner();
        let record = self.manager.get(&required_id(&request.id)?).await?;
        Ok(Response::new(self.described(&record).await?))
    }

    async fn list_distribution_points(
        &self,
        request: Request<pb::ListDistributionPointsRequest>,
    ) -> Result<Response<pb::ListDistributionPointsResponse>, Status> {
        let request = request.into_inner();
        clouddp_proto::convert::check_enum::<pb::DistributionPointKind>("kind", request.kind)?;
        let kind = dp_kind(request.kind);
        let records = self.manager.list(kind).await?;
        let page = super::page(request.page.as_ref())?;
        let (items, next_page_token) = page.keyed(&records, |dp| {
            clouddp_core::page::name_key(&dp.name, &dp.id)
        });
        Ok(Response::new(pb::ListDistributionPointsResponse {
            distribution_points: {
                let mut described = Vec::with_capacity(items.len());
                for record in items {
                    described.push(self.described(record).await?);
                }
                described
            },
            next_page_token,
        }))
    }

    async fn update_distribution_point(
        &self,
        request: Request<pb::UpdateDistributionPointRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let current = self.manager.get(&required_id(&request.id)?).await?;
        let update = update_from_mask(&current, &request)?;
        let record = self.manager.update(&current.id, update).await?;
        Ok(Response::new((&record).into()))
    }

    async fn start_service(
        &self,
        request: Request<pb::StartServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let record = self
            .manager
            .set_service(&required_id(&request.id)?, true, "")
            .await?;
        Ok(Response::new((&record).into()))
    }

    async fn stop_service(
        &self,
        request: Request<pb::StopServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let record = self
            .manager
            .set_service(
                &required_id(&request.id)?,
                false,
                &clouddp_core::validate::free_text(
                    "reason",
                    &request.reason,
                    clouddp_core::validate::MAX_REASON,
                )
                .map_err(crate::error::DmError::from)?,
            )
            .await?;
        Ok(Response::new((&record).into()))
    }

    async fn scale_service(
        &self,
        request: Request<pb::ScaleServiceRequest>,
    ) -> Result<Response<pb::DistributionPoint>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let record = self
            .manager
            .scale(&required_id(&request.id)?, request.instances)
            .await?;
        Ok(Response::new((&record).into()))
    }

    async fn delete_distribution_point(
        &self,
        request: Request<pb::DeleteDistributionPointRequest>,
    ) -> Result<Response<pb::DeleteDistributionPointResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let deleted = self
            .manager
            .delete(&required_id(&request.id)?, request.force)
            .await?;
        Ok(Response::new(pb::DeleteDistributionPointResponse {
            id: deleted.id,
            blobs_deleted: deleted.blobs_deleted,
            left_in_store: deleted.left_in_store,
        }))
    }

    async fn get_store_access(
        &self,
        request: Request<pb::GetStoreAccessRequest>,
    ) -> Result<Response<pb::StoreAccess>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let dp = self.manager.get(&required_id(&request.id)?).await?;
        // Readers get a read-and-list SAS for the DP's container, valid one hour, never the account key.
        let read_only_sas = |key: &str| -> Result<pb::storage_credential::Credential, Status> {
            let Some(DpStore::AzureBlob {
                account, container, ..
            }) = &dp.store
            else {
                return Err(Status::internal(
                    "a cloud credential without an Azure store",
                ));
            };
            let expiry = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
            let token =
                clouddp_platform::store::container_sas(account, container, key, "rl", expiry)
                    .map_err(|error| {
                        Status::failed_precondition(format!(
                            "cannot sign a SAS for {}: {error}",
                            dp.name
                        ))
                    })?;
            Ok(pb::storage_credential::Credential::SasToken(token))
        };
        let credential = match self.manager.store_credential(&dp).await? {
            None => None,
            Some(CloudCredential::AccountKey(key)) => Some(read_only_sas(&key)?),
            Some(CloudCredential::Emulator) => {
                Some(read_only_sas(clouddp_platform::store::emulator_key())?)
            }
            // The installer's SAS cannot be narrowed: the store is read through the manager instead.
            Some(CloudCredential::SasToken(_)) => None,
            Some(CloudCredential::ManagedIdentity) => {
                Some(pb::storage_credential::Credential::ManagedIdentity(true))
            }
        }
        .map(|credential| pb::StorageCredential {
            credential: Some(credential),
        });
        Ok(Response::new(pb::StoreAccess {
            store: pb::DistributionPoint::from(&dp).store,
            distribution_point_id: dp.id,
            credential,
        }))
    }

    async fn list_store_objects(
        &self,
        request: Request<pb::ListStoreObjectsRequest>,
    ) -> Result<Response<pb::ListStoreObjectsResponse>, Status> {
        let request = request.into_inner();
        let prefix = request.prefix.trim();
        if !(prefix.starts_with(STORE_USAGE) || prefix.starts_with("content/"))
            || prefix.contains("..")
        {
            return Err(DmError::from(clouddp_core::ValidationError::new(
                "prefix",
                "give usage/ or content/, or a folder below one of them",
            ))
            .into());
        }
        let dp = self.manager.get(&required_id(&request.id)?).await?;
        let store = self.manager.store_for(&dp).await?;
        let objects = store.list(prefix).await.map_err(|error| {
            Status::unavailable(format!("cannot list the store of {}: {error}", dp.name))
        })?;
        if objects.len() > MAX_LISTED_OBJECTS {
            return Err(Status::failed_precondition(format!(
                "more than {MAX_LISTED_OBJECTS} objects under {prefix}; list a folder below it"
            )));
        }
        Ok(Response::new(pb::ListStoreObjectsResponse {
            objects: objects
                .into_iter()
                .map(|object| pb::StoreObject {
                    path: object.path,
                    size: object.size,
                })
                .collect(),
        }))
    }

    async fn read_store_object(
        &self,
        request: Request<pb::ReadStoreObjectRequest>,
    ) -> Result<Response<pb::ReadStoreObjectResponse>, Status> {
        let request = request.into_inner();
        let path = request.path.trim();
        if !path.starts_with(STORE_USAGE) || path.contains("..") {
            return Err(DmError::from(clouddp_core::ValidationError::new(
                "path",
                "only usage logs (usage/…) are read through the manager",
            ))
            .into());
        }
        let dp = self.manager.get(&required_id(&request.id)?).await?;
        let store = self.manager.store_for(&dp).await?;
        let unavailable = |error: clouddp_platform::store::StoreError| {
            Status::unavailable(format!("cannot read the store of {}: {error}", dp.name))
        };
        let size = store
            .head(path)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Status::not_found(format!("{} holds no {path:.200}", dp.name)))?;
        if size > MAX_READ_OBJECT {
            return Err(Status::failed_precondition(format!(
                "{path:.200} is {size} bytes, more than a usage log may be ({MAX_READ_OBJECT})"
            )));
        }
        let data = store.get_range(path, 0..size).await.map_err(unavailable)?;
        Ok(Response::new(pb::ReadStoreObjectResponse {
            data: data.to_vec(),
        }))
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
