//! `ContentService`: registration, distribution, status, validation and the progress stream.

use std::sync::Arc;

use clouddp_core::content::ContentFlags;
use clouddp_core::validate;
use clouddp_proto::convert::{content_type, timestamp_from_ms};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_service_server::ContentService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::required;

use crate::content::{self, ContentRecord, NewContent};
use crate::distribution::{Distributor, JobState, JobStatus};
use crate::dp::DistributionManager;
use crate::error::DmError;

/// The gRPC adapter of content and distribution.
#[derive(Debug, Clone)]
pub struct ContentGrpc {
    manager: Arc<DistributionManager>,
    distributor: Arc<Distributor>,
    shutdown: CancellationToken,
}

impl ContentGrpc {
    /// An adapter whose streams end when `shutdown` is cancelled.
    pub fn new(
        manager: Arc<DistributionManager>,
        distributor: Arc<Distributor>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            manager,
            distributor,
            shutdown,
        }
    }
}

/// The manifest of a content version as clients see it.
pub(crate) fn manifest_to_pb(record: &ContentRecord) -> pb::ContentManifest {
    let layout = record.layout().ok();
    pb::ContentManifest {
        files: record
            .files
            .iter()
            .map(|file| pb::ContentFile {
                path: file.path.clone(),
                size: file.size,
                sha256: file.sha256.to_vec(),
            })
            .collect(),
        chunk_size: record.chunk_size,
        plaintext_length: record.size_bytes,
        chunk_count: record.chunk_hashes.len() as u64,
        plaintext_sha256: record.sha256.to_vec(),
        chunk_sha256: record
            .chunk_hashes
            .iter()
            .map(|hash| hash.to_vec())
            .collect(),
        sealed_length: layout.map(|layout| layout.sealed_len()).unwrap_or_default(),
        plaintext_blake3: record.blake3.map(|hash| hash.to_vec()).unwrap_or_default(),
    }
}

fn version_to_pb(record: &ContentRecord, include_manifest: bool) -> pb::ContentVersion {
    let manifest = include_manifest.then(|| manifest_to_pb(record));
    pb::ContentVersion {
        content_id: record.content_id.clone(),
        version: record.version,
        id: record.id.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        r#type: pb::ContentType::from(record.content_type).into(),
        flags: Some((&record.flags).into()),
        file_count: u32::try_from(record.files.len()).unwrap_or(u32::MAX),
        size_bytes: record.size_bytes,
        sha256: record.sha256.to_vec(),
        create_time: Some(timestamp_from_ms(record.create_time_ms)),
        manifest,
    }
}

/// The protobuf form of a job.
pub fn job_to_pb(job: &JobStatus) -> pb::DistributionStatus {
    pb::DistributionStatus {
        content_id: job.content_version_id.clone(),
        distribution_point_id: job.dp_id.clone(),
        distribution_point_name: job.dp_name.clone(),
        content_name: job.content_name.clone(),
        state: match job.state {
            JobState::Waiting => pb::DistributionState::Waiting,
            JobState::InProgress => pb::DistributionState::InProgress,
            JobState::Success => pb::DistributionState::Success,
            JobState::Failed => pb::DistributionState::Failed,
            JobState::Removing => pb::DistributionState::Removing,
        }
        .into(),
        bytes_done: job.bytes_done,
        bytes_total: job.bytes_total,
        attempts: job.attempts,
        error: job.error.clone(),
        update_time: Some(timestamp_from_ms(job.update_time_ms)),
        next_attempt_time: (job.state == JobState::Waiting && job.next_attempt_ms > 0)
            .then(|| timestamp_from_ms(job.next_attempt_ms)),
    }
}

fn optional(value: &str) -> Option<&str> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then_some(trimmed)
}

#[tonic::async_trait]
impl ContentService for ContentGrpc {
    async fn register_content(
        &self,
        request: Request<pb::RegisterContentRequest>,
    ) -> Result<Response<pb::ContentVersion>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().name);
        let request = request.into_inner();
        let new_content = NewContent {
            name: validate::display_name("name", &request.name).map_err(DmError::from)?,
            description: clouddp_core::validate::free_text(
                "description",
                &request.description,
                clouddp_core::validate::MAX_DESCRIPTION,
            ).map_err(crate::error::DmError::from)?,
            content_type: content_type(request.r#type).ok_or_else(|| {
                Status::invalid_argument(
                    "type: give the content type (APPLICATION, PACKAGE, SOFTWARE_UPDATE_PACKAGE, BOOT_IMAGE, OS_IMAGE or TASK_SEQUENCE)",
                )
            })?,
            flags: request.flags.as_ref().map(ContentFlags::from).unwrap_or_default(),
            source_path: validate::absolute_path("source_path", &request.source_path).map_err(DmError::from)?,
        };
        let record = content::register(
            self.manager.pool(),
            self.manager.site_key(),
            &self.manager.roots().sources,
            new_content,
        )
        .await?;
        Ok(Response::new(version_to_pb(&record, false)))
    }

    async fn get_content(
        &self,
        request: Request<pb::GetContentRequest>,
    ) -> Result<Response<pb::ContentVersion>, Status> {
        let request = request.into_inner();
        let record = content::get(self.manager.pool(), &required("id", &request.id)?).await?;
        Ok(Response::new(version_to_pb(
            &record,
            request.include_manifest,
        )))
    }

    async fn list_content(
        &self,
        request: Request<pb::ListContentRequest>,
    ) -> Result<Response<pb::ListContentResponse>, Status> {
        let request = request.into_inner();
        clouddp_proto::convert::check_enum::<pb::ContentType>("type", request.r#type)?;
        let wanted_type = content_type(request.r#type);
        let on_dp = match optional(&request.distribution_point_id) {
            Some(dp) => Some(
                self.distributor
                    .status(None, Some(dp))
                    .await?
                    .into_iter()
                    .filter(|job| job.state == JobState::Success)
                    .map(|job| job.content_version_id)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        let records: Vec<ContentRecord> = content::list(self.manager.pool())
            .await?
            .into_iter()
            .filter(|record| wanted_type.is_none_or(|wanted| wanted == record.content_type))
            .filter(|record| on_dp.as_ref().is_none_or(|ids| ids.contains(&record.id)))
            .collect();
        let page = super::page(request.page.as_ref())?;
        let (items, next_page_token) = page.keyed(&records, |record| {
            clouddp_core::page::name_key(&record.name, &record.id)
        });
        Ok(Response::new(pb::ListContentResponse {
            contents: items
                .iter()
                .map(|record| version_to_pb(record, false))
                .collect(),
            next_page_token,
        }))
    }

    async fn distribute_content(
        &self,
        request: Request<pb::DistributeContentRequest>,
    ) -> Result<Response<pb::DistributeContentResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().content_id);
        let request = request.into_inner();
        let distribution = self
            .distributor
            .distribute(
                &required("content_id", &request.content_id)?,
                &request.distribution_point_ids,
                &request.group_ids,
            )
            .await?;
        Ok(Response::new(pb::DistributeContentResponse {
            jobs: distribution.jobs.iter().map(job_to_pb).collect(),
            skipped: distribution
                .skipped
                .into_iter()
                .map(|skip| pb::SkippedDistributionPoint {
                    distribution_point_id: skip.dp_id,
                    distribution_point_name: skip.dp_name,
                    reason: skip.reason,
                })
                .collect(),
        }))
    }

    async fn redistribute_content(
        &self,
        request: Request<pb::RedistributeContentRequest>,
    ) -> Result<Response<pb::DistributeContentResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().content_id);
        let request = request.into_inner();
        let jobs = self
            .distributor
            .redistribute(
                &required("content_id", &request.content_id)?,
                &request.distribution_point_ids,
            )
            .await?;
        Ok(Response::new(pb::DistributeContentResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
            skipped: Vec::new(),
        }))
    }

    async fn cancel_distribution(
        &self,
        request: Request<pb::CancelDistributionRequest>,
    ) -> Result<Response<pb::CancelDistributionResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().content_id);
        let request = request.into_inner();
        let jobs = self
            .distributor
            .cancel(
                &required("content_id", &request.content_id)?,
                &request.distribution_point_ids,
            )
            .await?;
        Ok(Response::new(pb::CancelDistributionResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
        }))
    }

    async fn remove_content(
        &self,
        request: Request<pb::RemoveContentRequest>,
    ) -> Result<Response<pb::RemoveContentResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().content_id);
        let request = request.into_inner();
        let deleted = self
            .distributor
            .remove(
                &required("content_id", &request.content_id)?,
                &required("distribution_point_id", &request.distribution_point_id)?,
            )
            .await?;
        Ok(Response::new(pb::RemoveContentResponse {
            blobs_deleted: deleted,
        }))
    }

    async fn validate_content(
        &self,
        request: Request<pb::ValidateContentRequest>,
    ) -> Result<Response<pb::ValidateContentResponse>, Status> {
        clouddp_platform::audit::target(&request, &request.get_ref().content_id);
        let request = request.into_inner();
        let report = self
            .distributor
            .validate(
                &required("content_id", &request.content_id)?,
                &required("distribution_point_id", &request.distribution_point_id)?,
            )
            .await?;
        Ok(Response::new(pb::ValidateContentResponse {
            valid: report.problems.is_empty(),
            chunks_checked: report.chunks_checked,
            problems: report.problems,
        }))
    }

    async fn get_distribution_status(
        &self,
        request: Request<pb::GetDistributionStatusRequest>,
    ) -> Result<Response<pb::GetDistributionStatusResponse>, Status> {
        let request = request.into_inner();
        let jobs = self
            .distributor
            .status(
                optional(&request.content_id),
                optional(&request.distribution_point_id),
            )
            .await?;
        Ok(Response::new(pb::GetDistributionStatusResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
        }))
    }

    type WatchDistributionsStream = ReceiverStream<Result<pb::DistributionStatus, Status>>;

    async fn watch_distributions(
        &self,
        request: Request<pb::WatchDistributionsRequest>,
    ) -> Result<Response<Self::WatchDistributionsStream>, Status> {
        let request = request.into_inner();
        let content_filter = match optional(&request.content_id) {
            Some(reference) => Some(content::resolve_id(self.manager.pool(), reference).await?),
            None => None,
        };
        let mut dp_filter = Vec::new();
        for reference in &request.distribution_point_ids {
            dp_filter.push(self.manager.get(reference.trim()).await?.id);
        }
        let matches = move |job: &JobStatus| {
            content_filter
                .as_ref()
                .is_none_or(|id| *id == job.content_version_id)
                && (dp_filter.is_empty() || dp_filter.contains(&job.dp_id))
        };
        let mut events = self.distributor.subscribe();
        let current = self.distributor.status(None, None).await?;
        let (sender, receiver) = mpsc::channel(256);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            for job in current.iter().filter(|job| matches(job)) {
                if sender.send(Ok(job_to_pb(job))).await.is_err() {
                    return;
                }
            }
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sender.closed() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(job) if matches(&job) => {
                        if sender.send(Ok(job_to_pb(&job))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = sender
                            .send(Err(Status::aborted(format!(
                                "the watcher fell {missed} updates behind; watch again for the current state"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}
