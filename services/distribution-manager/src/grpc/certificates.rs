//! `CertificateService`: import management and service certificates, show them, export their public part.

use std::sync::Arc;

use clouddp_platform::clock::now_ms;
use clouddp_proto::convert::timestamp_from_ms as timestamp;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::certificate_service_server::CertificateService;
use tonic::{Request, Response, Status};

use super::required_with;

use crate::certs::{self, CertInfo, CertKind};
use crate::dp::{CertChoice, DistributionManager};
use crate::error::DmError;
use clouddp_core::ValidationError;

/// The gRPC adapter of the certificates of [`DistributionManager`].
#[derive(Debug, Clone)]
pub struct CertificateGrpc {
    manager: Arc<DistributionManager>,
}

impl CertificateGrpc {
    /// An adapter over `manager`.
    pub fn new(manager: Arc<DistributionManager>) -> Self {
        Self { manager }
    }
}

impl From<&CertInfo> for pb::CertificateInfo {
    fn from(info: &CertInfo) -> Self {
        Self {
            id: info.id.clone(),
            kind: match info.kind {
                CertKind::Management => pb::CertificateKind::Management,
                CertKind::Service => pb::CertificateKind::Service,
            }
            .into(),
            subject: info.subject.clone(),
            common_name: info.common_name.clone(),
            thumbprint: info.thumbprint.clone(),
            not_before: Some(timestamp(info.not_before_ms)),
            not_after: Some(timestamp(info.not_after_ms)),
            issuer: info.issuer.clone(),
            has_private_key: info.has_private_key,
            distribution_point_ids: info.dp_ids.clone(),
            subscription_id: info.subscription_id.clone(),
        }
    }
}

/// Parses and checks the certificate a request names; `field` names it in errors.
pub(crate) fn cert_choice(
    kind: CertKind,
    field: &'static str,
    source: Option<pb::CertificateSource>,
) -> Result<CertChoice, DmError> {
    let now = now_ms();
    let missing = || -> DmError {
        ValidationError::new(
            field,
            match kind {
                CertKind::Management => {
                    "give the management certificate: a .pfx with its password, a .publishsettings v1 file, or an imported certificate's id"
                }
                CertKind::Service => {
                    "give the service certificate: a .pfx with its password, a PEM certificate and key, or an imported certificate's id"
                }
            },
        )
        .into()
    };
    match source.and_then(|source| source.source) {
        None => Err(missing()),
        Some(pb::certificate_source::Source::CertificateId(id)) if !id.trim().is_empty() => {
            Ok(CertChoice::Existing(id.trim().to_owned()))
        }
        Some(pb::certificate_source::Source::CertificateId(_)) => Err(missing()),
        Some(pb::certificate_source::Source::Pkcs12(pfx)) => Ok(CertChoice::New(
            certs::parse_pkcs12(kind, field, &pfx.data, &pfx.password, now)?,
        )),
        Some(pb::certificate_source::Source::Pem(pem)) => {
            if kind == CertKind::Management {
                return Err(ValidationError::new(
                    field,
                    "a management certificate is imported as a .pfx with its password or a .publishsettings file",
                )
                .into());
            }
            Ok(CertChoice::New(certs::parse_pem(
                kind,
                field,
                &pem.certificate_pem,
                &pem.private_key_pem,
                now,
            )?))
        }
        Some(pb::certificate_source::Source::PublishSettings(xml)) => {
            if kind == CertKind::Service {
                return Err(ValidationError::new(
                    field,
                    "a .publishsettings file holds a management certificate, not a service certificate",
                )
                .into());
            }
            Ok(CertChoice::New(certs::parse_publish_settings(
                field, &xml, now,
            )?))
        }
    }
}

#[tonic::async_trait]
impl CertificateService for CertificateGrpc {
    async fn import_management_certificate(
        &self,
        request: Request<pb::ImportManagementCertificateRequest>,
    ) -> Result<Response<pb::CertificateInfo>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().distribution_point_id);
        let request = request.into_inner();
        let choice = cert_choice(CertKind::Management, "source", request.source)?;
        let dp = request.distribution_point_id.trim();
        let info = self
            .manager
            .import_management_certificate(&choice, (!dp.is_empty()).then_some(dp))
            .await?;
        Ok(Response::new((&info).into()))
    }

    async fn import_service_certificate(
        &self,
        request: Request<pb::ImportServiceCertificateRequest>,
    ) -> Result<Response<pb::CertificateInfo>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().distribution_point_id);
        let request = request.into_inner();
        let dp = required_with(
            "distribution_point_id",
            &request.distribution_point_id,
            "give the cloud distribution point's id or name",
        )?;
        let choice = cert_choice(CertKind::Service, "source", request.source)?;
        let info = self
            .manager
            .import_service_certificate(&dp, &choice)
            .await?;
        Ok(Response::new((&info).into()))
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::CertificateInfo>, Status> {
        let id = required_with(
            "id",
            &request.into_inner().id,
            "give a certificate id or thumbprint",
        )?;
        let info = self.manager.certificates().get(&id).await?;
        Ok(Response::new((&info).into()))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let request = request.into_inner();
        let dp = match request.distribution_point_id.trim() {
            "" => None,
            dp => Some(self.manager.get(dp).await?.id),
        };
        clouddp_proto::convert::check_enum::<pb::CertificateKind>("kind", request.kind)?;
        let kind = match pb::CertificateKind::try_from(request.kind) {
            Ok(pb::CertificateKind::Management) => Some(CertKind::Management),
            Ok(pb::CertificateKind::Service) => Some(CertKind::Service),
            _ => None,
        };
        let certificates = self
            .manager
            .certificates()
            .list(dp.as_deref(), kind)
            .await?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: certificates.iter().map(Into::into).collect(),
        }))
    }

    async fn export_certificate(
        &self,
        request: Request<pb::ExportCertificateRequest>,
    ) -> Result<Response<pb::ExportCertificateResponse>, Status> {
        let id = required_with(
            "id",
            &request.into_inner().id,
            "give a certificate id or thumbprint",
        )?;
        let info = self.manager.certificates().get(&id).await?;
        let der = self.manager.certificates().leaf_der(&info.id).await?;
        let stem = if info.common_name.is_empty() {
            info.thumbprint.clone()
        } else {
            info.common_name.replace(['/', '\\', ' '], "_")
        };
        Ok(Response::new(pb::ExportCertificateResponse {
            certificate_der: der,
            file_name: format!("{stem}.cer"),
        }))
    }
}
