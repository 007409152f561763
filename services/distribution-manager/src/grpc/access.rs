//! `AccessService`: the role bindings of the site's administrators.

use clouddp_platform::access::Role;
use clouddp_platform::authorize::Caller;
use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use crate::access::{AccessStore, Binding, admin_name};

/// The gRPC adapter of role bindings.
#[derive(Debug, Clone)]
pub struct AccessGrpc {
    store: AccessStore,
}

impl AccessGrpc {
    /// An adapter over `store`.
    pub fn new(store: AccessStore) -> Self {
        Self { store }
    }
}

fn binding_to_pb(binding: Binding) -> pb::RoleBinding {
    pb::RoleBinding {
        principal: format!("admin/{}", binding.admin_name),
        role: binding.role.key().to_owned(),
        role_name: binding.role.name().to_owned(),
        grant_time: Some(timestamp_from_ms(binding.grant_time_ms)),
        granted_by: binding.granted_by,
    }
}

fn role(text: &str) -> Result<Role, Status> {
    Role::parse(text.trim()).ok_or_else(|| {
        let known: Vec<&str> = Role::ADMINISTRATIVE.iter().map(|role| role.key()).collect();
        crate::error::DmError::from(clouddp_core::ValidationError::new(
            "role",
            format!("unknown role; give one of {}", known.join(", ")),
        ))
        .into()
    })
}

#[tonic::async_trait]
impl AccessService for AccessGrpc {
    async fn list_role_bindings(
        &self,
        request: Request<pb::ListRoleBindingsRequest>,
    ) -> Result<Response<pb::ListRoleBindingsResponse>, Status> {
        let request = request.into_inner();
        let name = if request.principal.trim().is_empty() {
            None
        } else {
            Some(admin_name(&request.principal)?)
        };
        let bindings = self.store.list(name.as_deref()).await?;
        Ok(Response::new(pb::ListRoleBindingsResponse {
            bindings: bindings.into_iter().map(binding_to_pb).collect(),
        }))
    }

    async fn grant_role(
        &self,
        request: Request<pb::GrantRoleRequest>,
    ) -> Result<Response<pb::RoleBinding>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().principal);
        let caller = Caller::of(&request).describe();
        let request = request.into_inner();
        let name = admin_name(&request.principal)?;
        let role = role(&request.role)?;
        let binding = self.store.grant(&name, role, &caller).await?;
        tracing::info!(principal = %format!("admin/{name}"), role = role.name(), by = %caller, "role granted");
        Ok(Response::new(binding_to_pb(binding)))
    }

    async fn revoke_role(
        &self,
        request: Request<pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::RevokeRoleResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().principal);
        let caller = Caller::of(&request).describe();
        let request = request.into_inner();
        let name = admin_name(&request.principal)?;
        let role = role(&request.role)?;
        self.store.revoke(&name, role).await?;
        tracing::info!(principal = %format!("admin/{name}"), role = role.name(), by = %caller, "role revoked");
        Ok(Response::new(pb::RevokeRoleResponse {}))
    }
}
