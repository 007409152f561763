//! `clouddp site …`: the site's identity, backup and restore.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::site_service_client::SiteServiceClient;
use serde_json::json;
use tokio_stream::StreamExt as _;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, time_text};

/// Size of the chunks a backup file is sent in.
const RESTORE_CHUNK: usize = 64 * 1024;

/// Site commands.
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Show the site's code, version and site key fingerprint.
    Show,
    /// Write a backup of the whole configuration (DPs, groups, content metadata, distributions, client policy,
    /// wrapped data keys) and the site's identities (the site CA with its key sealed by the site key, role
    /// bindings, administrator credentials, enrolled devices) to FILE. It holds no private key in the clear and
    /// no site key: keep the site key and the certificates' .pfx files safe yourself.
    Backup {
        /// The backup file to write (written to FILE.partial, then renamed).
        file: PathBuf,
    },
    /// Restore a backup into this site, which must be empty and use the same site key. Cloud DPs come back
    /// waiting for their certificates (import them again with `clouddp cert import-management/import-service`).
    Restore {
        /// The backup file.
        file: PathBuf,
    },
}

/// Runs a `site` command.
pub async fn run(
    command: SiteCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = SiteServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        SiteCommand::Show => {
            let site = client
                .get_site(pb::GetSiteRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            let value = json!({
                "site_code": site.site_code,
                "version": site.version,
                "site_key_fingerprint": site.site_key_fingerprint,
                "create_time": time_text(site.create_time.as_ref()),
            });
            match output {
                OutputFormat::Json => print_json(&value),
                OutputFormat::Table => out!(
                    "site {} (distribution manager {}), site key fingerprint {}",
                    site.site_code,
                    site.version,
                    site.site_key_fingerprint
                ),
            }
        }
        SiteCommand::Backup { file } => {
            let partial = file.with_extension("partial");
            let local = |error: std::io::Error| {
                CliError::Local(format!("cannot write {}: {error}", partial.display()))
            };
            let mut stream = client
                .backup_site(pb::BackupSiteRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            let mut out = std::fs::File::create(&partial).map_err(local)?;
            let mut bytes = 0_u64;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(status) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(fail(status));
                    }
                };
                out.write_all(&chunk.data).map_err(local)?;
                bytes += chunk.data.len() as u64;
            }
            out.sync_all().map_err(local)?;
            std::fs::rename(&partial, &file).map_err(local)?;
            match output {
                OutputFormat::Json => print_json(&json!({ "file": file, "bytes": bytes })),
                OutputFormat::Table => out!(
                    "wrote the site backup {} ({bytes} bytes); it holds no private key in the clear and no site key; keep the site key safe",
                    file.display()
                ),
            }
        }
        SiteCommand::Restore { file } => {
            let data = std::fs::read(&file).map_err(|error| {
                CliError::Local(format!("cannot read {}: {error}", file.display()))
            })?;
            let chunks: Vec<pb::RestoreSiteChunk> = data
                .chunks(RESTORE_CHUNK)
                .map(|data| pb::RestoreSiteChunk {
                    data: data.to_vec(),
                })
                .collect();
            let summary = client
                .restore_site(tokio_stream::iter(chunks))
                .await
                .map_err(fail)?
                .into_inner();
            let value = json!({
                "distribution_points": summary.distribution_points,
                "groups": summary.groups,
                "content_versions": summary.content_versions,
                "distributions": summary.distributions,
                "certificates_required": summary.certificates_required,
                "devices": summary.devices,
                "restart_required": summary.restart_required,
            });
            match output {
                OutputFormat::Json => print_json(&value),
                OutputFormat::Table => {
                    out!(
                        "restored {} distribution points, {} groups, {} content versions, {} distributions, {} devices",
                        summary.distribution_points,
                        summary.groups,
                        summary.content_versions,
                        summary.distributions,
                        summary.devices
                    );
                    if summary.restart_required {
                        out!(
                            "the backup's site CA is in the data dir: restart the distribution manager, then \
                             monitoring, to serve with it (enrolled devices and issued credentials then work again; \
                             the first administrator's credential is re-issued in the same place)"
                        );
                    }
                    if summary.certificates_required > 0 {
                        out!(
                            "{} cloud distribution points wait for their certificates: import them with \
                             `clouddp cert import-management FILE --dp DP` and `clouddp cert import-service FILE --dp DP`",
                            summary.certificates_required
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
