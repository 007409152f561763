//! `AccessService`: the role bindings of the site's administrators.

use clouddp_platform::access::Role;
use clouddp_platform::authorize::Caller;
use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::access_service_server::AccessService;
use tonic::{Request, Response, Status};

use crate::access::{AccessStore, Binding, admin_name};
use crate::credentials::{Credentials, IssuedCredential};

/// The gRPC adapter of role bindings and administrator credentials.
#[derive(Debug, Clone)]
pub struct AccessGrpc {
    store: AccessStore,
    credentials: Credentials,
}

impl AccessGrpc {
    /// An adapter over `store` and `credentials`.
    pub fn new(store: AccessStore, credentials: Credentials) -> Self {
        Self { store, credentials }
    }
}

fn credential_to_pb(credential: IssuedCredential) -> pb::AdminCredential {
    pb::AdminCredential {
        serial: credential.serial,
        principal: format!("admin/{}", credential.admin_name),
        certificate_pem: String::new(),
        ca_certificate_pem: String::new(),
        issue_time: Some(timestamp_from_ms(credential.issue_time_ms)),
        expire_time: Some(timestamp_from_ms(credential.expire_ms)),
        issued_by: credential.issued_by,
        revoked: credential.revoked,
        revoke_time: credential
            .revoked
            .then(|| timestamp_from_ms(credential.revoke_time_ms)),
        revoked_by: credential.revoked_by,
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

    async fn issue_admin_credential(
        &self,
        request: Request<pb::IssueAdminCredentialRequest>,
    ) -> Result<Response<pb::AdminCredential>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().principal);
        let caller = Caller::of(&request).describe();
        let request = request.into_inner();
        let name = admin_name(&request.principal)?;
        let issued = self
            .credentials
            .issue(&name, &request.certificate_request_pem, &caller)
            .await?;
        tracing::info!(principal = %format!("admin/{name}"), serial = %issued.record.serial, by = %caller, "administrator credential issued");
        Ok(Response::new(pb::AdminCredential {
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: issued.ca_pem,
            ..credential_to_pb(issued.record)
        }))
    }

    async fn list_admin_credentials(
        &self,
        request: Request<pb::ListAdminCredentialsRequest>,
    ) -> Result<Response<pb::ListAdminCredentialsResponse>, Status> {
        let request = request.into_inner();
        let name = if request.principal.trim().is_empty() {
            None
        } else {
            Some(admin_name(&request.principal)?)
        };
        let credentials = self
            .credentials
            .list(name.as_deref(), request.revoked_only)
            .await?;
        Ok(Response::new(pb::ListAdminCredentialsResponse {
            credentials: credentials.into_iter().map(credential_to_pb).collect(),
        }))
    }

    async fn revoke_admin_credential(
        &self,
        request: Request<pb::RevokeAdminCredentialRequest>,
    ) -> Result<Response<pb::AdminCredential>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().serial);
        let caller = Caller::of(&request).describe();
        let revoked = self
            .credentials
            .revoke(&request.into_inner().serial, &caller)
            .await?;
        tracing::info!(principal = %format!("admin/{}", revoked.admin_name), serial = %revoked.serial, by = %caller, "administrator credential revoked");
        Ok(Response::new(credential_to_pb(revoked)))
    }
}
