//! `ClientPolicyService`: client settings, boundary groups and deployments.

use clouddp_proto::convert::timestamp_from_ms as timestamp;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_server::ClientPolicyService;
use tonic::{Request, Response, Status};

use super::required;

use crate::policy::{
    self, BoundaryGroup, ClientSettings, CloudSelection, Deployment, Policy, TaskSequenceMode,
};

/// The gRPC adapter of [`Policy`].
#[derive(Debug, Clone)]
pub struct ClientPolicyGrpc {
    policy: Policy,
}

impl ClientPolicyGrpc {
    /// An adapter over `policy`.
    pub fn new(policy: Policy) -> Self {
        Self { policy }
    }
}

fn settings_to_pb(settings: ClientSettings) -> pb::ClientSettings {
    pb::ClientSettings {
        is_default: settings.is_default(),
        id: settings.id,
        name: settings.name,
        priority: settings.priority,
        allow_cloud_distribution_points_for_devices: settings.allow_cloud_devices,
        allow_cloud_distribution_points_for_users: settings.allow_cloud_users,
        device_ids: settings.device_ids,
        user_ids: settings.user_ids,
    }
}

fn settings_from_pb(
    settings: Option<pb::ClientSettings>,
    keep_id: bool,
) -> Result<ClientSettings, Status> {
    let settings =
        settings.ok_or_else(|| Status::invalid_argument("settings: give the client settings"))?;
    if keep_id && settings.id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "settings.id: give the id of the settings to change",
        ));
    }
    Ok(ClientSettings {
        id: if keep_id {
            settings.id.trim().to_owned()
        } else {
            String::new()
        },
        name: settings.name,
        priority: settings.priority,
        allow_cloud_devices: settings.allow_cloud_distribution_points_for_devices,
        allow_cloud_users: settings.allow_cloud_distribution_points_for_users,
        device_ids: settings.device_ids,
        user_ids: settings.user_ids,
    })
}

fn group_to_pb(group: BoundaryGroup) -> pb::BoundaryGroup {
    pb::BoundaryGroup {
        id: group.id,
        name: group.name,
        subnets: group.subnets.iter().map(ToString::to_string).collect(),
        distribution_point_ids: group.dp_ids,
    }
}

fn group_from_pb(group: Option<pb::BoundaryGroup>, keep_id: bool) -> Result<BoundaryGroup, Status> {
    let group =
        group.ok_or_else(|| Status::invalid_argument("boundary_group: give the boundary group"))?;
    if keep_id && group.id.trim().is_empty() {
        return Err(Status::invalid_argument(
            "boundary_group.id: give the id of the group to change",
        ));
    }
    Ok(BoundaryGroup {
        id: if keep_id {
            group.id.trim().to_owned()
        } else {
            String::new()
        },
        name: group.name,
        subnets: policy::parse_subnets("boundary_group.subnets", &group.subnets)?,
        dp_ids: group.distribution_point_ids,
    })
}

fn deployment_to_pb(deployment: Deployment) -> pb::Deployment {
    pb::Deployment {
        id: deployment.id,
        content_id: deployment.content_version_id,
        name: deployment.name,
        allow_remote_fallback: deployment.allow_remote_fallback,
        task_sequence_download_mode: match deployment.task_sequence_mode {
            TaskSequenceMode::None => pb::TaskSequenceDownloadMode::Unspecified,
            TaskSequenceMode::AllBeforeStart => {
                pb::TaskSequenceDownloadMode::DownloadAllBeforeStart
            }
            TaskSequenceMode::WhenNeeded => pb::TaskSequenceDownloadMode::DownloadWhenNeeded,
        }
        .into(),
        cloud_selection: match deployment.cloud_selection {
            CloudSelection::Random => pb::CloudSelection::Random,
            CloudSelection::Nearest => pb::CloudSelection::Nearest,
        }
        .into(),
        create_time: Some(timestamp(deployment.create_time_ms)),
    }
}

#[tonic::async_trait]
impl ClientPolicyService for ClientPolicyGrpc {
    async fn create_client_settings(
        &self,
        request: Request<pb::CreateClientSettingsRequest>,
    ) -> Result<Response<pb::ClientSettings>, Status> {
        clouddp_platform::audit::target(
            &request,
            request
                .get_ref()
                .settings
                .as_ref()
                .map_or("", |settings| settings.name.as_str()),
        );
        let settings = settings_from_pb(request.into_inner().settings, false)?;
        Ok(Response::new(settings_to_pb(
            self.policy.save_settings(settings).await?,
        )))
    }

    async fn update_client_settings(
        &self,
        request: Request<pb::UpdateClientSettingsRequest>,
    ) -> Result<Response<pb::ClientSettings>, Status> {
        clouddp_platform::audit::target(
            &request,
            request
                .get_ref()
                .settings
                .as_ref()
                .map_or("", |settings| settings.id.as_str()),
        );
        let settings = settings_from_pb(request.into_inner().settings, true)?;
        Ok(Response::new(settings_to_pb(
            self.policy.save_settings(settings).await?,
        )))
    }

    async fn get_client_settings(
        &self,
        request: Request<pb::GetClientSettingsRequest>,
    ) -> Result<Response<pb::ClientSettings>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(settings_to_pb(
            self.policy.get_settings(&id).await?,
        )))
    }

    async fn list_client_settings(
        &self,
        _request: Request<pb::ListClientSettingsRequest>,
    ) -> Result<Response<pb::ListClientSettingsResponse>, Status> {
        let settings = self.policy.list_settings().await?;
        Ok(Response::new(pb::ListClientSettingsResponse {
            settings: settings.into_iter().map(settings_to_pb).collect(),
        }))
    }

    async fn delete_client_settings(
        &self,
        request: Request<pb::DeleteClientSettingsRequest>,
    ) -> Result<Response<pb::DeleteClientSettingsResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(pb::DeleteClientSettingsResponse {
            id: self.policy.delete_settings(&id).await?,
        }))
    }

    async fn create_boundary_group(
        &self,
        request: Request<pb::CreateBoundaryGroupRequest>,
    ) -> Result<Response<pb::BoundaryGroup>, Status> {
        clouddp_platform::audit::target(
            &request,
            request
                .get_ref()
                .boundary_group
                .as_ref()
                .map_or("", |group| group.name.as_str()),
        );
        let group = group_from_pb(request.into_inner().boundary_group, false)?;
        Ok(Response::new(group_to_pb(
            self.policy.save_boundary_group(group).await?,
        )))
    }

    async fn update_boundary_group(
        &self,
        request: Request<pb::UpdateBoundaryGroupRequest>,
    ) -> Result<Response<pb::BoundaryGroup>, Status> {
        clouddp_platform::audit::target(
            &request,
            request
                .get_ref()
                .boundary_group
                .as_ref()
                .map_or("", |group| group.id.as_str()),
        );
        let group = group_from_pb(request.into_inner().boundary_group, true)?;
        Ok(Response::new(group_to_pb(
            self.policy.save_boundary_group(group).await?,
        )))
    }

    async fn delete_boundary_group(
        &self,
        request: Request<pb::DeleteBoundaryGroupRequest>,
    ) -> Result<Response<pb::DeleteBoundaryGroupResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(pb::DeleteBoundaryGroupResponse {
            id: self.policy.delete_boundary_group(&id).await?,
        }))
    }

    async fn list_boundary_groups(
        &self,
        _request: Request<pb::ListBoundaryGroupsRequest>,
    ) -> Result<Response<pb::ListBoundaryGroupsResponse>, Status> {
        let groups = self.policy.list_boundary_groups().await?;
        Ok(Response::new(pb::ListBoundaryGroupsResponse {
            boundary_groups: groups.into_iter().map(group_to_pb).collect(),
        }))
    }

    async fn create_deployment(
        &self,
        request: Request<pb::CreateDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        clouddp_platform::audit::target(
            &request,
            request
                .get_ref()
                .deployment
                .as_ref()
                .map_or("", |deployment| deployment.content_id.as_str()),
        );
        let deployment = request
            .into_inner()
            .deployment
            .ok_or_else(|| Status::invalid_argument("deployment: give the deployment"))?;
        let content = required("deployment.content_id", &deployment.content_id)?;
        let created = self
            .policy
            .create_deployment(Deployment {
                content_version_id: content,
                name: deployment.name,
                allow_remote_fallback: deployment.allow_remote_fallback,
                task_sequence_mode: match pb::TaskSequenceDownloadMode::try_from(
                    deployment.task_sequence_download_mode,
                ) {
                    Ok(pb::TaskSequenceDownloadMode::DownloadAllBeforeStart) => {
                        TaskSequenceMode::AllBeforeStart
                    }
                    Ok(pb::TaskSequenceDownloadMode::DownloadWhenNeeded) => {
                        TaskSequenceMode::WhenNeeded
                    }
                    Ok(pb::TaskSequenceDownloadMode::Unspecified) => TaskSequenceMode::None,
                    Err(_) => {
                        return Err(Status::invalid_argument(
                            "deployment.task_sequence_download_mode: unknown mode",
                        ));
                    }
                },
                cloud_selection: match pb::CloudSelection::try_from(deployment.cloud_selection) {
                    Ok(pb::CloudSelection::Nearest) => CloudSelection::Nearest,
                    Ok(_) => CloudSelection::Random,
                    Err(_) => {
                        return Err(Status::invalid_argument(
                            "deployment.cloud_selection: unknown selection",
                        ));
                    }
                },
                ..Deployment::default()
            })
            .await?;
        Ok(Response::new(deployment_to_pb(created)))
    }

    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(deployment_to_pb(
            self.policy.get_deployment(&id).await?,
        )))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let content = request.into_inner().content_id;
        let content = content.trim();
        let deployments = self
            .policy
            .list_deployments((!content.is_empty()).then_some(content))
            .await?;
        Ok(Response::new(pb::ListDeploymentsResponse {
            deployments: deployments.into_iter().map(deployment_to_pb).collect(),
        }))
    }

    async fn delete_deployment(
        &self,
        request: Request<pb::DeleteDeploymentRequest>,
    ) -> Result<Response<pb::DeleteDeploymentResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(pb::DeleteDeploymentResponse {
            id: self.policy.delete_deployment(&id).await?,
        }))
    }
}
