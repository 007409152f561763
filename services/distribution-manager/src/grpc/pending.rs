//! Services of the distribution manager whose capabilities later work provides: each RPC answers
//! UNIMPLEMENTED naming its capability, so clients and grpcurl see the whole contract today.

use clouddp_platform::grpc::pending;
use clouddp_proto::v1::*;
use tonic::{Request, Response, Status};

const CONTENT_LOCATION: &str = "content location";

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
