//! Services of the distribution manager whose capabilities later work provides: each RPC answers
//! UNIMPLEMENTED naming its capability, so clients and grpcurl see the whole contract today.

use clouddp_platform::grpc::{PendingStream, pending};
use clouddp_proto::v1::*;
use tonic::{Request, Response, Status, Streaming};

const CERTIFICATES: &str = "certificates";
const CLIENT_POLICY: &str = "client policy";
const CONTENT_LOCATION: &str = "content location";
const SITE: &str = "site backup and restore";

/// `CertificateService`: pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificateGrpc;

#[tonic::async_trait]
impl certificate_service_server::CertificateService for CertificateGrpc {
    async fn import_management_certificate(
        &self,
        _request: Request<ImportManagementCertificateRequest>,
    ) -> Result<Response<CertificateInfo>, Status> {
        Err(pending(
            CERTIFICATES,
            "CertificateService.ImportManagementCertificate",
        ))
    }
    async fn import_service_certificate(
        &self,
        _request: Request<ImportServiceCertificateRequest>,
    ) -> Result<Response<CertificateInfo>, Status> {
        Err(pending(
            CERTIFICATES,
            "CertificateService.ImportServiceCertificate",
        ))
    }
    async fn get_certificate(
        &self,
        _request: Request<GetCertificateRequest>,
    ) -> Result<Response<CertificateInfo>, Status> {
        Err(pending(CERTIFICATES, "CertificateService.GetCertificate"))
    }
    async fn list_certificates(
        &self,
        _request: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        Err(pending(CERTIFICATES, "CertificateService.ListCertificates"))
    }
    async fn export_certificate(
        &self,
        _request: Request<ExportCertificateRequest>,
    ) -> Result<Response<ExportCertificateResponse>, Status> {
        Err(pending(
            CERTIFICATES,
            "CertificateService.ExportCertificate",
        ))
    }
}

/// `ClientPolicyService`: pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientPolicyGrpc;

#[tonic::async_trait]
impl client_policy_service_server::ClientPolicyService for ClientPolicyGrpc {
    async fn create_client_settings(
        &self,
        _request: Request<CreateClientSettingsRequest>,
    ) -> Result<Response<ClientSettings>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.CreateClientSettings",
        ))
    }
    async fn update_client_settings(
        &self,
        _request: Request<UpdateClientSettingsRequest>,
    ) -> Result<Response<ClientSettings>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.UpdateClientSettings",
        ))
    }
    async fn get_client_settings(
        &self,
        _request: Request<GetClientSettingsRequest>,
    ) -> Result<Response<ClientSettings>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.GetClientSettings",
        ))
    }
    async fn list_client_settings(
        &self,
        _request: Request<ListClientSettingsRequest>,
    ) -> Result<Response<ListClientSettingsResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.ListClientSettings",
        ))
    }
    async fn delete_client_settings(
        &self,
        _request: Request<DeleteClientSettingsRequest>,
    ) -> Result<Response<DeleteClientSettingsResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.DeleteClientSettings",
        ))
    }
    async fn create_boundary_group(
        &self,
        _request: Request<CreateBoundaryGroupRequest>,
    ) -> Result<Response<BoundaryGroup>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.CreateBoundaryGroup",
        ))
    }
    async fn update_boundary_group(
        &self,
        _request: Request<UpdateBoundaryGroupRequest>,
    ) -> Result<Response<BoundaryGroup>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.UpdateBoundaryGroup",
        ))
    }
    async fn delete_boundary_group(
        &self,
        _request: Request<DeleteBoundaryGroupRequest>,
    ) -> Result<Response<DeleteBoundaryGroupResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.DeleteBoundaryGroup",
        ))
    }
    async fn list_boundary_groups(
        &self,
        _request: Request<ListBoundaryGroupsRequest>,
    ) -> Result<Response<ListBoundaryGroupsResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.ListBoundaryGroups",
        ))
    }
    async fn create_deployment(
        &self,
        _request: Request<CreateDeploymentRequest>,
    ) -> Result<Response<Deployment>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.CreateDeployment",
        ))
    }
    async fn get_deployment(
        &self,
        _request: Request<GetDeploymentRequest>,
    ) -> Result<Response<Deployment>, Status> {
        Err(pending(CLIENT_POLICY, "ClientPolicyService.GetDeployment"))
    }
    async fn list_deployments(
        &self,
        _request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.ListDeployments",
        ))
    }
    async fn delete_deployment(
        &self,
        _request: Request<DeleteDeploymentRequest>,
    ) -> Result<Response<DeleteDeploymentResponse>, Status> {
        Err(pending(
            CLIENT_POLICY,
            "ClientPolicyService.DeleteDeployment",
        ))
    }
}

/// `ContentLocationService`: pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContentLocationGrpc;

#[tonic::async_trait]
impl content_location_service_server::ContentLocationService for ContentLocationGrpc {
    async fn locate_content(
        &self,
        _request: Request<LocateContentRequest>,
    ) -> Result<Response<LocateContentResponse>, Status> {
        Err(pending(
            CONTENT_LOCATION,
            "ContentLocationService.LocateContent",
        ))
    }
    async fn list_signing_keys(
        &self,
        _request: Request<ListSigningKeysRequest>,
    ) -> Result<Response<ListSigningKeysResponse>, Status> {
        Err(pending(
            CONTENT_LOCATION,
            "ContentLocationService.ListSigningKeys",
        ))
    }
    async fn rotate_signing_key(
        &self,
        _request: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<SigningKey>, Status> {
        Err(pending(
            CONTENT_LOCATION,
            "ContentLocationService.RotateSigningKey",
        ))
    }
}

/// `SiteService`: pending.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteGrpc;

#[tonic::async_trait]
impl site_service_server::SiteService for SiteGrpc {
    async fn get_site(&self, _request: Request<GetSiteRequest>) -> Result<Response<Site>, Status> {
        Err(pending(SITE, "SiteService.GetSite"))
    }
    type BackupSiteStream = PendingStream<BackupChunk>;
    async fn backup_site(
        &self,
        _request: Request<BackupSiteRequest>,
    ) -> Result<Response<Self::BackupSiteStream>, Status> {
        Err(pending(SITE, "SiteService.BackupSite"))
    }
    async fn restore_site(
        &self,
        _request: Request<Streaming<RestoreSiteChunk>>,
    ) -> Result<Response<RestoreSiteResponse>, Status> {
        Err(pending(SITE, "SiteService.RestoreSite"))
    }
}
