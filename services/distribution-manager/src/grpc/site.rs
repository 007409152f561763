//! `SiteService`: the site's identity, backup and restore.

use clouddp_proto::convert::timestamp_from_ms as timestamp;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::site_service_server::SiteService;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::site::{MAX_BACKUP_BYTES, Site};

/// Backup chunks buffered before the sender waits for the client.
const BACKUP_STREAM_BUFFER: usize = 4;

/// The gRPC adapter of [`Site`].
#[derive(Debug, Clone)]
pub struct SiteGrpc {
    site: Site,
}

impl SiteGrpc {
    /// An adapter over `site`.
    pub fn new(site: Site) -> Self {
        Self { site }
    }
}

#[tonic::async_trait]
impl SiteService for SiteGrpc {
    async fn get_site(
        &self,
        _request: Request<pb::GetSiteRequest>,
    ) -> Result<Response<pb::Site>, Status> {
        let info = self.site.info().await?;
        Ok(Response::new(pb::Site {
            site_code: info.site_code,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            site_key_fingerprint: info.fingerprint,
            create_time: Some(timestamp(info.create_time_ms)),
        }))
    }

    type BackupSiteStream = ReceiverStream<Result<pb::BackupChunk, Status>>;

    async fn backup_site(
        &self,
        _request: Request<pb::BackupSiteRequest>,
    ) -> Result<Response<Self::BackupSiteStream>, Status> {
        let (chunks, mut chunk_receiver) = mpsc::channel::<Vec<u8>>(BACKUP_STREAM_BUFFER);
        let (sender, stream) = mpsc::channel(BACKUP_STREAM_BUFFER);
        let site = self.site.clone();
        tokio::spawn(async move {
            let writer = tokio::spawn(async move { site.backup(chunks).await });
            while let Some(data) = chunk_receiver.recv().await {
                if sender.send(Ok(pb::BackupChunk { data })).await.is_err() {
                    return;
                }
            }
            let outcome = match writer.await {
                Ok(Ok(_)) => return,
                Ok(Err(error)) => Status::from(error),
                Err(error) => Status::internal(format!("backup task failed: {error}")),
            };
            // The client sees the stream fail, never a backup that merely looks short.
            let _ = sender.send(Err(outcome)).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn restore_site(
        &self,
        request: Request<Streaming<pb::RestoreSiteChunk>>,
    ) -> Result<Response<pb::RestoreSiteResponse>, Status> {
        let mut stream = request.into_inner();
        let mut backup = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if backup.len() + chunk.data.len() > MAX_BACKUP_BYTES {
                return Err(Status::invalid_argument(format!(
                    "backup: larger than {} MiB; this is not a site backup",
                    MAX_BACKUP_BYTES >> 20
                )));
            }
            backup.extend_from_slice(&chunk.data);
        }
        let summary = self.site.restore(&backup).await?;
        Ok(Response::new(pb::RestoreSiteResponse {
            distribution_points: summary.distribution_points,
            groups: summary.groups,
            content_versions: summary.content_versions,
            distributions: summary.distributions,
            certificates_required: summary.certificates_required,
            devices: summary.devices,
            restart_required: summary.restart_required,
        }))
    }
}
