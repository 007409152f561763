//! The store of a DP whose credential the distribution manager does not hand on (one installed with a SAS, which
//! cannot be narrowed to read and list): read through the manager's ListStoreObjects and ReadStoreObject. It
//! reads usage logs and lists objects; anything else is refused.

use std::ops::Range;

use bytes::Bytes;
use clouddp_platform::store::{BlobStore, ObjectInfo, StoreError, StoreResult};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use tonic::transport::Channel;

/// A DP's store, read through the distribution manager.
#[derive(Debug, Clone)]
pub struct ThroughManager {
    channel: Channel,
    dp_id: String,
}

impl ThroughManager {
    /// The store of DP `dp_id`, read over `channel`.
    pub fn new(channel: Channel, dp_id: String) -> Self {
        Self { channel, dp_id }
    }

    fn client(&self) -> DistributionPointServiceClient<Channel> {
        DistributionPointServiceClient::new(self.channel.clone())
    }
}

fn store_error(status: &tonic::Status) -> StoreError {
    let message = format!("through the distribution manager: {}", status.message());
    match status.code() {
        tonic::Code::NotFound => StoreError::NotFound(message),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => StoreError::Denied(message),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            StoreError::Invalid(message)
        }
        _ => StoreError::Unavailable(message),
    }
}

fn read_only() -> StoreError {
    StoreError::Denied("a store read through the distribution manager is read-only".to_owned())
}

#[async_trait::async_trait]
impl BlobStore for ThroughManager {
    fn describe(&self) -> String {
        format!("manager:{}", self.dp_id)
    }

    async fn ensure_container(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn delete_container(&self) -> StoreResult<()> {
        Err(read_only())
    }

    async fn put_part(&self, _: &str, _: u32, _: u64, _: Bytes) -> StoreResult<String> {
        Err(read_only())
    }

    async fn complete(&self, _: &str, _: &[String], _: u64) -> StoreResult<()> {
        Err(read_only())
    }

    async fn abort(&self, _: &str) -> StoreResult<()> {
        Err(read_only())
    }

    async fn put(&self, _: &str, _: Bytes) -> StoreResult<()> {
        Err(read_only())
    }

    async fn get_range(&self, path: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let data = self
            .client()
            .read_store_object(pb::ReadStoreObjectRequest {
                id: self.dp_id.clone(),
                path: path.to_owned(),
            })
            .await
            .map_err(|status| store_error(&status))?
            .into_inner()
            .data;
        let end = usize::try_from(range.end)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
        Ok(Bytes::from(data).slice(start..end))
    }

    async fn head(&self, path: &str) -> StoreResult<Option<u64>> {
        let listed = self.list(path).await?;
        Ok(listed
            .into_iter()
            .find(|object| object.path == path)
            .map(|object| object.size))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<ObjectInfo>> {
        Ok(self
            .client()
            .list_store_objects(pb::ListStoreObjectsRequest {
                id: self.dp_id.clone(),
                prefix: prefix.to_owned(),
            })
            .await
            .map_err(|status| store_error(&status))?
            .into_inner()
            .objects
            .into_iter()
            .map(|object| ObjectInfo {
                path: object.path,
                size: object.size,
            })
            .collect())
    }

    async fn delete(&self, _: &str) -> StoreResult<()> {
        Err(read_only())
    }
}
