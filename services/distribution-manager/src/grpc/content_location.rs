//! `ContentLocationService`: content location for clients and the token signing keys.

use clouddp_core::location::Tier;
use clouddp_core::token::Confirmation;
use clouddp_platform::access::PrincipalKind;
use clouddp_platform::authorize::Caller;
use clouddp_proto::convert::timestamp_from_ms as timestamp;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_location_service_server::ContentLocationService;
use tonic::{Request, Response, Status};

use crate::locate::{LocateRequest, Locator};
use crate::tokens::PublicKey;

/// The gRPC adapter of [`Locator`].
#[derive(Debug, Clone)]
pub struct ContentLocationGrpc {
    locator: Locator,
}

impl ContentLocationGrpc {
    /// An adapter over `locator`.
    pub fn new(locator: Locator) -> Self {
        Self { locator }
    }
}

fn key_to_pb(key: PublicKey) -> pb::SigningKey {
    pb::SigningKey {
        key_id: key.id,
        public_key: key.public_key,
        create_time: Some(timestamp(key.create_time_ms)),
        current: key.current,
    }
}

/// The device and user a location is for: the device of the caller's credential (a different `device_id` in the
/// request is refused), and no user, since a user the device merely names proves nothing. Only a server a test
/// runs without authentication takes both from the request.
fn identity(
    caller: &Caller,
    device_id: String,
    user_id: String,
) -> Result<(String, String), Status> {
    let Some(principal) = &caller.principal else {
        return Ok((device_id, user_id));
    };
    if principal.kind != PrincipalKind::Device {
        return Err(Status::permission_denied(format!(
            "{principal} is not a device; content is located by the device that downloads it"
        )));
    }
    let named = device_id.trim();
    if !named.is_empty() && named != principal.name {
        return Err(Status::permission_denied(format!(
            "device/{} may locate content only as itself, not as {:?}",
            principal.name,
            named.chars().take(64).collect::<String>()
        )));
    }
    Ok((principal.name.clone(), String::new()))
}

#[tonic::async_trait]
impl ContentLocationService for ContentLocationGrpc {
    async fn locate_content(
        &self,
        request: Request<pb::LocateContentRequest>,
    ) -> Result<Response<pb::LocateContentResponse>, Status> {
        let caller = Caller::of(&request);
        // The tokens are bound to the certificate the device called with (RFC 8705).
        let certificate = caller.principal.as_ref().and_then(|_| {
            let chain = request.peer_certs()?;
            Some(Confirmation::of_certificate(chain.first()?))
        });
        let request = request.into_inner();
        let network = pb::ClientNetwork::try_from(request.network)
            .map_err(|_| Status::invalid_argument("network: give INTRANET or INTERNET"))?;
        let (device_id, user_id) = identity(&caller, request.device_id, request.user_id)?;
        let answer = self
            .locator
            .locate(LocateRequest {
                device_id,
                user_id,
                ip_address: request.ip_address,
                internet: network == pb::ClientNetwork::Internet,
                deployment_id: request.deployment_id,
                region_hint: request.region_hint,
                latency_hints_ms: request.latency_hints_ms.into_iter().collect(),
                certificate,
            })
            .await?;
        Ok(Response::new(pb::LocateContentResponse {
            locations: answer
                .locations
                .into_iter()
                .map(|location| pb::ContentLocation {
                    distribution_point_id: location.dp.id.clone(),
                    distribution_point_name: location.dp.name.clone(),
                    kind: pb::DistributionPointKind::from(location.dp.kind).into(),
                    tier: match location.tier {
                        Tier::Preferred => pb::LocationTier::Preferred,
                        Tier::Remote => pb::LocationTier::Remote,
                        Tier::Cloud => pb::LocationTier::Cloud,
                        Tier::Internet => pb::LocationTier::Internet,
                    }
                    .into(),
                    url: location.url,
                    access_token: location.token,
                    token_expire_time: Some(timestamp(location.token_expire_ms)),
                    server_name: location.server_name,
                })
                .collect(),
            content_id: answer.content.record.id.clone(),
            data_key: answer.content.data_key.as_bytes().to_vec(),
            manifest: Some(super::content::manifest_to_pb(&answer.content.record)),
            decisions: answer
                .decisions
                .into_iter()
                .map(|decision| pb::LocationDecision {
                    distribution_point_id: decision.dp_id,
                    distribution_point_name: decision.dp_name,
                    included: decision.included,
                    reasons: decision.reasons,
                })
                .collect(),
        }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys: self
                .locator
                .keys()
                .list()
                .into_iter()
                .map(key_to_pb)
                .collect(),
        }))
    }

    async fn rotate_signing_key(
        &self,
        _request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKey>, Status> {
        Ok(Response::new(key_to_pb(
            self.locator.keys().rotate().await?,
        )))
    }
}
