//! `DeviceService`: bulk registration tokens, enrollment, renewal, blocking.

use clouddp_platform::access::PrincipalKind;
use clouddp_platform::authorize::Caller;
use clouddp_proto::convert::timestamp_from_ms;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::device_service_server::DeviceService;
use tonic::{Request, Response, Status};

use crate::devices::{Credential, DeviceRecord, Devices};

/// The gRPC adapter of devices.
#[derive(Debug, Clone)]
pub struct DeviceGrpc {
    devices: Devices,
}

impl DeviceGrpc {
    /// An adapter over `devices`.
    pub fn new(devices: Devices) -> Self {
        Self { devices }
    }
}

fn credential_to_pb(credential: Credential) -> pb::DeviceCredential {
    pb::DeviceCredential {
        device_id: credential.device_id,
        certificate_pem: credential.certificate_pem,
        ca_certificate_pem: credential.ca_pem,
        expire_time: Some(timestamp_from_ms(credential.expire_ms)),
    }
}

fn device_to_pb(device: DeviceRecord) -> pb::Device {
    pb::Device {
        id: device.id,
        enroll_time: Some(timestamp_from_ms(device.enroll_time_ms)),
        certificate_expire_time: Some(timestamp_from_ms(device.certificate_expire_ms)),
        blocked: device.blocked,
        block_reason: device.block_reason,
    }
}

#[tonic::async_trait]
impl DeviceService for DeviceGrpc {
    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::EnrollmentToken>, Status> {
        let caller = Caller::of(&request).describe();
        let request = request.into_inner();
        let token = self
            .devices
            .create_token(
                request.uses,
                request.lifetime_seconds,
                &request.description,
                &caller,
            )
            .await?;
        Ok(Response::new(pb::EnrollmentToken {
            id: token.id,
            token: token.token,
            uses_left: token.uses_left,
            expire_time: Some(timestamp_from_ms(token.expire_ms)),
        }))
    }

    async fn enroll_device(
        &self,
        request: Request<pb::EnrollDeviceRequest>,
    ) -> Result<Response<pb::DeviceCredential>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().device_id);
        let request = request.into_inner();
        let (credential, token_id) = self
            .devices
            .enroll(
                &request.token,
                &request.device_id,
                &request.certificate_request_pem,
            )
            .await?;
        tracing::info!(device = %credential.device_id, token = %token_id, "device enrolled");
        Ok(Response::new(credential_to_pb(credential)))
    }

    async fn renew_device_certificate(
        &self,
        request: Request<pb::RenewDeviceCertificateRequest>,
    ) -> Result<Response<pb::DeviceCredential>, Status> {
        let caller = Caller::of(&request);
        let Some(principal) = caller
            .principal
            .filter(|principal| principal.kind == PrincipalKind::Device)
        else {
            return Err(Status::permission_denied(
                "only a device renews its certificate, with the certificate it has",
            ));
        };
        clouddp_platform::audit::target(&request, &principal.name);
        let credential = self
            .devices
            .renew(&principal.name, &request.get_ref().certificate_request_pem)
            .await?;
        Ok(Response::new(credential_to_pb(credential)))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let request = request.into_inner();
        let page = super::page(request.page.as_ref())?;
        let (devices, next_page_token) = self.devices.list(&page, request.blocked_only).await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.into_iter().map(device_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn block_device(
        &self,
        request: Request<pb::BlockDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let request = request.into_inner();
        let reason = if request.reason.trim().is_empty() {
            "blocked by an administrator"
        } else {
            request.reason.as_str()
        };
        let device = self.devices.set_blocked(&request.id, true, reason).await?;
        Ok(Response::new(device_to_pb(device)))
    }

    async fn unblock_device(
        &self,
        request: Request<pb::UnblockDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().id);
        let device = self
            .devices
            .set_blocked(&request.get_ref().id, false, "")
            .await?;
        Ok(Response::new(device_to_pb(device)))
    }
}
