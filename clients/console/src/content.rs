//! `clouddp content …` and `clouddp group …`: content registration and distribution, DP groups.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_service_client::ContentServiceClient;
use clouddp_proto::v1::distribution_point_group_service_client::DistributionPointGroupServiceClient;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, properties, table, time_text};

/// Content commands.
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// Register a content version from a file or directory on the site server (the distribution manager's host).
    Add {
        /// Display name; an existing name gets a new version.
        #[arg(long)]
        name: String,
        /// The kind of software.
        #[arg(long = "type", value_enum)]
        content_type: TypeArg,
        /// File or directory to read (made absolute from the current directory).
        #[arg(long, value_name = "PATH")]
        source: std::path::PathBuf,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Boot image enabled for PXE (never allowed on cloud DPs).
        #[arg(long)]
        pxe: bool,
        /// Boot image enabled for multicast (never allowed on cloud DPs).
        #[arg(long)]
        multicast: bool,
        /// Package runs from the DP (never allowed on cloud DPs).
        #[arg(long)]
        run_from_dp: bool,
        /// App-V streaming (never allowed on cloud DPs).
        #[arg(long)]
        app_v_streaming: bool,
        /// Prestaged content (never allowed on cloud DPs).
        #[arg(long)]
        prestaged: bool,
    },
    /// List content versions.
    List {
        /// Only this type.
        #[arg(long = "type", value_enum)]
        content_type: Option<TypeArg>,
        /// Only content successfully distributed to this DP.
        #[arg(long, value_name = "DP")]
        dp: Option<String>,
    },
    /// Show one content version (`<id>@<version>`, an id or a name for the latest version).
    Show {
        /// The content.
        id: String,
        /// Also list its files.
        #[arg(long)]
        files: bool,
    },
    /// Distribute a content version to DPs and DP groups.
    Distribute {
        /// The content.
        id: String,
        /// A DP id or name; repeat for several.
        #[arg(long = "dp", value_name = "DP")]
        dps: Vec<String>,
        /// A DP group id or name; repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Follow the transfer with a progress bar per DP until every job ends (exit 1 if any failed).
        #[arg(long)]
        wait: bool,
    },
    /// Transfer a content version again to DPs (all DPs that have it when none is named).
    Redistribute {
        /// The content.
        id: String,
        /// A DP id or name; repeat for several.
        #[arg(long = "dp", value_name = "DP")]
        dps: Vec<String>,
        /// Follow the transfer until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Cancel the jobs of a content version that have not finished (on every DP with a job for it when none is
    /// named): transfers stop, staged parts are discarded, the jobs become failed ("cancelled by an
    /// administrator"); `redistribute` starts them again.
    Cancel {
        /// The content.
        id: String,
        /// A DP id or name; repeat for several.
        #[arg(long = "dp", value_name = "DP")]
        dps: Vec<String>,
    },
    /// Remove a content version from a DP, deleting it from the DP's store.
    Remove {
        /// The content.
        id: String,
        /// The DP.
        #[arg(long, value_name = "DP")]
        dp: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Read a content version back from a DP's store and check every chunk (exit 1 if anything is wrong).
    Validate {
        /// The content.
        id: String,
        /// The DP.
        #[arg(long, value_name = "DP")]
        dp: String,
    },
    /// Distribution status per DP.
    Status {
        /// Only this content.
        id: Option<String>,
        /// Only this DP.
        #[arg(long, value_name = "DP")]
        dp: Option<String>,
    },
}

/// Content types on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// An application.
    Application,
    /// A package.
    Package,
    /// A software update package.
    SoftwareUpdatePackage,
    /// A boot image.
    BootImage,
    /// An OS image.
    OsImage,
    /// A task sequence's content.
    TaskSequence,
}

impl From<TypeArg> for pb::ContentType {
    fn from(value: TypeArg) -> Self {
        match value {
            TypeArg::Application => Self::Application,
            TypeArg::Package => Self::Package,
            TypeArg::SoftwareUpdatePackage => Self::SoftwareUpdatePackage,
            TypeArg::BootImage => Self::BootImage,
            TypeArg::OsImage => Self::OsImage,
            TypeArg::TaskSequence => Self::TaskSequence,
        }
    }
}

fn type_label(value: i32) -> String {
    pb::ContentType::try_from(value)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("CONTENT_TYPE_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// How long a job in progress may go without moving a byte before the table says since when nothing moved.
const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The state, and for a job in progress whose bytes stopped moving, since when.
fn state_with_stall(job: &pb::DistributionStatus) -> String {
    let state = state_label(job.state);
    if job.state != pb::DistributionState::InProgress as i32 {
        return state;
    }
    let Some(moved) = job.update_time.as_ref() else {
        return state;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let idle = now.saturating_sub(u64::try_from(moved.seconds).unwrap_or(u64::MAX));
    if idle < STALL_AFTER.as_secs() {
        return state;
    }
    format!("{state}, nothing moved since {}", time_text(Some(moved)))
}

fn state_label(value: i32) -> String {
    pb::DistributionState::try_from(value)
        .map(|state| {
            state
                .as_str_name()
                .trim_start_matches("DISTRIBUTION_STATE_")
                .to_ascii_lowercase()
                .replace('_', " ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn version_json(version: &pb::ContentVersion) -> serde_json::Value {
    let flags = version.flags.unwrap_or_default();
    json!({
        "id": version.id,
        "content_id": version.content_id,
        "version": version.version,
        "name": version.name,
        "description": version.description,
        "type": type_label(version.r#type),
        "files": version.file_count,
        "size_bytes": version.size_bytes,
        "sha256": hex::encode(&version.sha256),
        "flags": {
            "pxe_enabled": flags.pxe_enabled,
            "multicast_enabled": flags.multicast_enabled,
            "run_from_distribution_point": flags.run_from_distribution_point,
            "app_v_streaming": flags.app_v_streaming,
            "prestaged": flags.prestaged,
        },
        "create_time": time_text(version.create_time.as_ref()),
        "file_list": version.manifest.as_ref().map(|manifest| manifest.files.iter().map(|file| json!({
            "path": file.path, "size": file.size, "sha256": hex::encode(&file.sha256),
        })).collect::<Vec<_>>()),
    })
}

fn job_json(job: &pb::DistributionStatus) -> serde_json::Value {
    json!({
        "content_id": job.content_id,
        "content": job.content_name,
        "distribution_point_id": job.distribution_point_id,
        "distribution_point": job.distribution_point_name,
        "state": state_label(job.state),
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "attempts": job.attempts,
        "error": job.error,
        "update_time": time_text(job.update_time.as_ref()),
        "next_attempt_time": time_text(job.next_attempt_time.as_ref()),
    })
}

/// The error a job cancelled by an administrator shows.
const CANCELLED: &str = "cancelled by an administrator";

fn print_jobs(jobs: &[pb::DistributionStatus], output: OutputFormat) {
    match output {
        OutputFormat::Json => print_json(&serde_json::Value::Array(
            jobs.iter().map(job_json).collect(),
        )),
        OutputFormat::Table => {
            let mut rows = table(&[
                "CONTENT",
                "DP",
                "STATE",
                "PROGRESS",
                "ATTEMPTS",
                "NEXT RETRY",
                "ERROR",
            ]);
            for job in jobs {
                let percent = (job.bytes_done * 100)
                    .checked_div(job.bytes_total)
                    .unwrap_or(0);
                rows.add_row(vec![
                    format!("{} ({})", job.content_name, job.content_id),
                    job.distribution_point_name.clone(),
                    state_with_stall(job),
                    format!("{percent} % of {} bytes", job.bytes_total),
                    job.attempts.to_string(),
                    time_text(job.next_attempt_time.as_ref()),
                    job.error.clone(),
                ]);
            }
            out!("{rows}");
        }
    }
}

fn finished(state: i32) -> bool {
    matches!(
        pb::DistributionState::try_from(state),
        Ok(pb::DistributionState::Success | pb::DistributionState::Failed)
    )
}

/// Follows jobs with one progress bar per DP until each has succeeded or failed; true when all succeeded.
async fn wait_for(
    client: &mut ContentServiceClient<tonic::transport::Channel>,
    endpoints: &Endpoints,
    content_id: &str,
    jobs: &[pb::DistributionStatus],
    output: OutputFormat,
) -> CliResult<bool> {
    let mut pending: HashMap<String, pb::DistributionStatus> = jobs
        .iter()
        .map(|job| (job.distribution_point_id.clone(), job.clone()))
        .collect();
    let bars = MultiProgress::new();
    if output == OutputFormat::Json || !std::io::stderr().is_terminal() {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )
    .map_err(|error| CliError::Local(error.to_string()))?
    .progress_chars("=> ");
    let progress: HashMap<String, ProgressBar> = jobs
        .iter()
        .map(|job| {
            let bar = bars.add(ProgressBar::new(job.bytes_total));
            bar.set_style(style.clone());
            bar.set_prefix(job.distribution_point_name.clone());
            (job.distribution_point_id.clone(), bar)
        })
        .collect();
    let mut stream = client
        .watch_distributions(pb::WatchDistributionsRequest {
            content_id: content_id.to_owned(),
            distribution_point_ids: jobs
                .iter()
                .map(|job| job.distribution_point_id.clone())
                .collect(),
        })
        .await
        .map_err(|status| endpoints.failure(Service::DistributionManager, &status))?
        .into_inner();
    let mut results: Vec<pb::DistributionStatus> = Vec::new();
    while !pending.is_empty() {
        let Some(update) = stream
            .message()
            .await
            .map_err(|status| endpoints.failure(Service::DistributionManager, &status))?
        else {
            return Err(CliError::Local("the distribution manager ended the progress stream; check `clouddp content status`".to_owned()));
        };
        if let Some(bar) = progress.get(&update.distribution_point_id) {
            bar.set_position(update.bytes_done);
            bar.set_message(state_label(update.state));
        }
        if finished(update.state) && pending.remove(&update.distribution_point_id).is_some() {
            if let Some(bar) = progress.get(&update.distribution_point_id) {
                bar.finish();
            }
            results.push(update);
        }
    }
    results.sort_by(|left, right| {
        left.distribution_point_name
            .cmp(&right.distribution_point_name)
    });
    print_jobs(&results, output);
    Ok(results
        .iter()
        .all(|job| job.state == i32::from(pb::DistributionState::Success)))
}

/// Asks before a destructive command unless `--yes`; refuses without a terminal to ask on.
pub(crate) fn confirm(question: &str, yes: bool) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "{question} Pass --yes to confirm."
        )));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|error| CliError::Local(error.to_string()))?;
    if answer.trim().eq_ignore_ascii_case("y") || answer.trim().eq_ignore_ascii_case("yes") {
        Ok(())
    } else {
        Err(CliError::Local("cancelled".to_owned()))
    }
}

/// Runs a `content` command.
pub async fn run(
    command: ContentCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = ContentServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| endpoints.failure(service, &status);
    match command {
        ContentCommand::Add {
            name,
            content_type,
            source,
            description,
            pxe,
            multicast,
            run_from_dp,
            app_v_streaming,
            prestaged,
        } => {
            let source = std::path::absolute(&source).map_err(|error| {
                CliError::Local(format!("--source {}: {error}", source.display()))
            })?;
            let version = client
                .register_content(pb::RegisterContentRequest {
                    name,
                    description,
                    r#type: pb::ContentType::from(content_type).into(),
                    flags: Some(pb::ContentFlags {
                        pxe_enabled: pxe,
                        multicast_enabled: multicast,
                        run_from_distribution_point: run_from_dp,
                        app_v_streaming,
                        prestaged,
                    }),
                    source_path: source.display().to_string(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&version_json(&version)),
                OutputFormat::Table => out!(
                    "registered {} version {} as {} ({} files, {} bytes)",
                    version.name,
                    version.version,
                    version.id,
                    version.file_count,
                    version.size_bytes
                ),
            }
        }
        ContentCommand::List { content_type, dp } => {
            let answer = client
                .list_content(pb::ListContentRequest {
                    r#type: content_type
                        .map(pb::ContentType::from)
                        .unwrap_or_default()
                        .into(),
                    distribution_point_id: dp.unwrap_or_default(),
                    page: Some(pb::PageRequest {
                        page_size: 1000,
                        page_token: String::new(),
                    }),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&serde_json::Value::Array(
                    answer.contents.iter().map(version_json).collect(),
                )),
                OutputFormat::Table => {
                    let mut rows = table(&["NAME", "VERSION", "TYPE", "FILES", "BYTES", "ID"]);
                    for version in &answer.contents {
                        rows.add_row(vec![
                            version.name.clone(),
                            version.version.to_string(),
                            type_label(version.r#type),
                            version.file_count.to_string(),
                            version.size_bytes.to_string(),
                            version.id.clone(),
                        ]);
                    }
                    out!("{rows}");
                }
            }
        }
        ContentCommand::Show { id, files } => {
            let version = client
                .get_content(pb::GetContentRequest {
                    id,
                    include_manifest: files,
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&version_json(&version)),
                OutputFormat::Table => {
                    out!("{}", properties(&version_json(&version), &["file_list"]));
                    if let Some(manifest) = &version.manifest {
                        let mut list = table(&["PATH", "BYTES", "SHA-256"]);
                        for file in &manifest.files {
                            list.add_row(vec![
                                file.path.clone(),
                                file.size.to_string(),
                                hex::encode(&file.sha256),
                            ]);
                        }
                        out!("{list}");
                    }
                }
            }
        }
        ContentCommand::Distribute {
            id,
            dps,
            groups,
            wait,
        } => {
            if dps.is_empty() && groups.is_empty() {
                return Err(CliError::Usage(
                    "say where to distribute: --dp DP or --group GROUP (repeat for several)"
                        .to_owned(),
                ));
            }
            let answer = client
                .distribute_content(pb::DistributeContentRequest {
                    content_id: id.clone(),
                    distribution_point_ids: dps,
                    group_ids: groups,
                })
                .await
                .map_err(fail)?
                .into_inner();
            for skipped in &answer.skipped {
                eprintln!(
                    "clouddp: skipped group member {}: {}",
                    skipped.distribution_point_name, skipped.reason
                );
            }
            let jobs = answer.jobs;
            if wait {
                let content_id = jobs.first().map(|job| job.content_id.clone()).unwrap_or(id);
                if !wait_for(&mut client, endpoints, &content_id, &jobs, output).await? {
                    return Ok(ExitCode::from(crate::EXIT_FAILED));
                }
            } else {
                print_jobs(&jobs, output);
            }
        }
        ContentCommand::Redistribute { id, dps, wait } => {
            let jobs = client
                .redistribute_content(pb::RedistributeContentRequest {
                    content_id: id.clone(),
                    distribution_point_ids: dps,
                })
                .await
                .map_err(fail)?
                .into_inner()
                .jobs;
            if wait {
                let content_id = jobs.first().map(|job| job.content_id.clone()).unwrap_or(id);
                if !wait_for(&mut client, endpoints, &content_id, &jobs, output).await? {
                    return Ok(ExitCode::from(crate::EXIT_FAILED));
                }
            } else {
                print_jobs(&jobs, output);
            }
        }
        ContentCommand::Cancel { id, dps } => {
            let jobs = client
                .cancel_distribution(pb::CancelDistributionRequest {
                    content_id: id,
                    distribution_point_ids: dps,
                })
                .await
                .map_err(fail)?
                .into_inner()
                .jobs;
            if output == OutputFormat::Table && jobs.iter().all(|job| job.error != CANCELLED) {
                eprintln!("clouddp: nothing was left to cancel");
            }
            print_jobs(&jobs, output);
        }
        ContentCommand::Remove { id, dp, yes } => {
            confirm(
                &format!("Remove {id} from {dp} and delete it from the DP's store?"),
                yes,
            )?;
            let answer = client
                .remove_content(pb::RemoveContentRequest {
                    content_id: id.clone(),
                    distribution_point_id: dp.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(
                    &json!({ "removed": id, "distribution_point": dp, "blobs_deleted": answer.blobs_deleted }),
                ),
                OutputFormat::Table => out!(
                    "removed {id} from {dp} ({} object(s) deleted)",
                    answer.blobs_deleted
                ),
            }
        }
        ContentCommand::Validate { id, dp } => {
            let report = client
                .validate_content(pb::ValidateContentRequest {
                    content_id: id.clone(),
                    distribution_point_id: dp.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "content": id, "distribution_point": dp, "valid": report.valid,
                    "chunks_checked": report.chunks_checked, "problems": report.problems,
                })),
                OutputFormat::Table => {
                    if report.valid {
                        out!(
                            "{id} on {dp} is valid: {} chunks checked",
                            report.chunks_checked
                        );
                    } else {
                        out!("{id} on {dp} is NOT valid:");
                        for problem in &report.problems {
                            out!("  - {problem}");
                        }
                    }
                }
            }
            if !report.valid {
                return Ok(ExitCode::from(crate::EXIT_FAILED));
            }
        }
        ContentCommand::Status { id, dp } => {
            let jobs = client
                .get_distribution_status(pb::GetDistributionStatusRequest {
                    content_id: id.unwrap_or_default(),
                    distribution_point_id: dp.unwrap_or_default(),
                })
                .await
                .map_err(fail)?
                .into_inner()
                .jobs;
            print_jobs(&jobs, output);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// DP group commands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group, optionally with members.
    Create {
        /// Unique name.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// A member DP; repeat for several.
        #[arg(long = "dp", value_name = "DP")]
        dps: Vec<String>,
    },
    /// Add DPs to a group; the group's content is distributed to them.
    Add {
        /// The group.
        group: String,
        /// A DP; repeat for several.
        #[arg(long = "dp", value_name = "DP", required = true)]
        dps: Vec<String>,
    },
    /// Remove DPs from a group (content already on them stays).
    Remove {
        /// The group.
        group: String,
        /// A DP; repeat for several.
        #[arg(long = "dp", value_name = "DP", required = true)]
        dps: Vec<String>,
    },
    /// Rename a group.
    Rename {
        /// The group.
        group: String,
        /// Its new name.
        new_name: String,
    },
    /// Delete a group (its members and their content stay).
    Delete {
        /// The group.
        group: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// List groups with member and content counts.
    List,
}

fn group_json(group: &pb::DistributionPointGroup) -> serde_json::Value {
    json!({
        "id": group.id, "name": group.name, "description": group.description,
        "members": group.member_ids, "member_count": group.member_count, "content_count": group.content_count,
        "create_time": time_text(group.create_time.as_ref()),
    })
}

/// Runs a `group` command.
pub async fn run_group(
    command: GroupCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = DistributionPointGroupServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| endpoints.failure(service, &status);
    let group = match command {
        GroupCommand::Create {
            name,
            description,
            dps,
        } => client
            .create_group(pb::CreateGroupRequest {
                name,
                description,
                member_ids: dps,
            })
            .await
            .map_err(fail)?
            .into_inner(),
        GroupCommand::Add { group, dps } => client
            .add_members(pb::AddMembersRequest {
                group_id: group,
                distribution_point_ids: dps,
            })
            .await
            .map_err(fail)?
            .into_inner(),
        GroupCommand::Remove { group, dps } => client
            .remove_members(pb::RemoveMembersRequest {
                group_id: group,
                distribution_point_ids: dps,
            })
            .await
            .map_err(fail)?
            .into_inner(),
        GroupCommand::Rename { group, new_name } => client
            .update_group(pb::UpdateGroupRequest {
                id: group,
                name: new_name,
                description: None,
            })
            .await
            .map_err(fail)?
            .into_inner(),
        GroupCommand::Delete { group, yes } => {
            confirm(
                &format!("Delete group {group}? Its members and their content stay."),
                yes,
            )?;
            let deleted = client
                .delete_group(pb::DeleteGroupRequest { id: group })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({ "deleted": deleted.id })),
                OutputFormat::Table => out!("deleted group {}", deleted.id),
            }
            return Ok(ExitCode::SUCCESS);
        }
        GroupCommand::List => {
            let groups = client
                .list_groups(pb::ListGroupsRequest {
                    page: Some(pb::PageRequest {
                        page_size: 1000,
                        page_token: String::new(),
                    }),
                })
                .await
                .map_err(fail)?
                .into_inner()
                .groups;
            match output {
                OutputFormat::Json => print_json(&serde_json::Value::Array(
                    groups.iter().map(group_json).collect(),
                )),
                OutputFormat::Table => {
                    let mut rows = table(&["NAME", "MEMBERS", "CONTENT", "DESCRIPTION", "ID"]);
                    for group in &groups {
                        rows.add_row(vec![
                            group.name.clone(),
                            group.member_count.to_string(),
                            group.content_count.to_string(),
                            group.description.clone(),
                            group.id.clone(),
                        ]);
                    }
                    out!("{rows}");
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    match output {
        OutputFormat::Json => print_json(&group_json(&group)),
        OutputFormat::Table => out!(
            "group {} ({}): {} member(s), {} content version(s)",
            group.name,
            group.id,
            group.member_count,
            group.content_count
        ),
    }
    Ok(ExitCode::SUCCESS)
}
