//! `DistributionPointGroupService`: groups and their members; adding a member distributes the group's content.

use std::sync::Arc;

use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_group_service_server::DistributionPointGroupService;
use tonic::{Request, Response, Status};

use crate::distribution::Distributor;
use crate::dp::DistributionManager;
use crate::groups::{self, GroupRecord};

/// The gRPC adapter of DP groups.
#[derive(Debug, Clone)]
pub struct DistributionPointGroupGrpc {
    manager: Arc<DistributionManager>,
    distributor: Arc<Distributor>,
}

impl DistributionPointGroupGrpc {
    /// An adapter over `manager` and `distributor`.
    pub fn new(manager: Arc<DistributionManager>, distributor: Arc<Distributor>) -> Self {
        Self {
            manager,
            distributor,
        }
    }

    async fn dp_ids(&self, references: &[String]) -> Result<Vec<String>, Status> {
        let mut ids = Vec::with_capacity(references.len());
        for reference in references {
            ids.push(self.manager.get(reference.trim()).await?.id);
        }
        Ok(ids)
    }
}

fn group_to_pb(group: &GroupRecord) -> pb::DistributionPointGroup {
    pb::DistributionPointGroup {
        id: group.id.clone(),
        name: group.name.clone(),
        description: group.description.clone(),
        member_ids: group.member_ids.clone(),
        member_count: u32::try_from(group.member_ids.len()).unwrap_or(u32::MAX),
        content_count: group.content_count,
        create_time: Some(timestamp_from_ms(group.create_time_ms)),
    }
}

#[tonic::async_trait]
impl DistributionPointGroupService for DistributionPointGroupGrpc {
    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::DistributionPointGroup>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().name);
        let request = request.into_inner();
        let members = self.dp_ids(&request.member_ids).await?;
        let group =
            groups::create(self.manager.pool(), &request.name, &request.description).await?;
        groups::add_members(self.manager.pool(), &group.id, &members).await?;
        Ok(Response::new(group_to_pb(
            &groups::get(self.manager.pool(), &group.id).await?,
        )))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::DistributionPointGroup>, Status> {
        let group = groups::get(self.manager.pool(), &request.into_inner().id).await?;
        Ok(Response::new(group_to_pb(&group)))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::DistributionPointGroup>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let group = groups::update(
            self.manager.pool(),
            &request.id,
            Some(&request.name),
            request.description.as_deref(),
        )
        .await?;
        Ok(Response::new(group_to_pb(&group)))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let id = groups::delete(self.manager.pool(), &request.into_inner().id).await?;
        Ok(Response::new(pb::DeleteGroupResponse { id }))
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Result<Response<pb::DistributionPointGroup>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().group_id);
        let request = request.into_inner();
        let group = groups::get(self.manager.pool(), &request.group_id).await?;
        let members = self.dp_ids(&request.distribution_point_ids).await?;
        let added = groups::add_members(self.manager.pool(), &group.id, &members).await?;
        for dp_id in &added {
            self.distributor
                .distribute_group_contents(&group.id, dp_id)
                .await?;
        }
        Ok(Response::new(group_to_pb(
            &groups::get(self.manager.pool(), &group.id).await?,
        )))
    }

    async fn remove_members(
        &self,
        request: Request<pb::RemoveMembersRequest>,
    ) -> Result<Response<pb::DistributionPointGroup>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().group_id);
        let request = request.into_inner();
        let group = groups::get(self.manager.pool(), &request.group_id).await?;
        let members = self.dp_ids(&request.distribution_point_ids).await?;
        groups::remove_members(self.manager.pool(), &group.id, &members).await?;
        Ok(Response::new(group_to_pb(
            &groups::get(self.manager.pool(), &group.id).await?,
        )))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let request = request.into_inner();
        let all = groups::list(self.manager.pool()).await?;
        let page = super::page(request.page.as_ref())?;
        let (items, next_page_token) = page.keyed(&all, |group| {
            clouddp_core::page::name_key(&group.name, &group.id)
        });
        Ok(Response::new(pb::ListGroupsResponse {
            groups: items.into_iter().map(group_to_pb).collect(),
            next_page_token,
        }))
    }
}
