//! `clouddp dp …`: distribution points.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use serde_json::json;
use tonic::transport::Channel;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, properties, table, time_text};

/// Distribution point commands.
#[derive(Debug, Subcommand)]
pub enum DpCommand {
    /// Register an on-premises or internet-facing distribution point with its content folder.
    Register {
        /// Unique name: letters, digits, '-', '_' and '.'.
        #[arg(long)]
        name: String,
        /// Where the DP runs.
        #[arg(long, value_enum, default_value_t = RegisterKind::OnPremises)]
        kind: RegisterKind,
        /// Absolute path of the DP's content folder.
        #[arg(long, value_name = "PATH")]
        folder: String,
        /// HTTPS base URL clients download from, for example https://dp1.example.com:7443.
        #[arg(long, value_name = "URL")]
        address: String,
        /// A boundary group whose clients prefer this DP; repeat for several.
        #[arg(long = "boundary-group", value_name = "NAME")]
        boundary_groups: Vec<String>,
        /// The managing site's three-character code; the site's own by default.
        #[arg(long, value_name = "CODE", default_value = "")]
        site: String,
        /// Make it a pull distribution point.
        #[arg(long)]
        pull: bool,
    },
    /// Install a cloud distribution point on an Azure storage account (or the Azurite emulator).
    Install {
        /// The cloud service name: globally unique, 3 to 63 lowercase letters, digits and '-'.
        #[arg(long)]
        service_name: String,
        /// Display name; the service name by default.
        #[arg(long, default_value = "")]
        name: String,
        /// The Azure subscription id (a GUID).
        #[arg(long)]
        subscription: String,
        /// The Azure region, for example westeurope.
        #[arg(long)]
        region: String,
        /// The storage account name.
        #[arg(long, default_value = "")]
        account: String,
        /// The container; the service name by default.
        #[arg(long, default_value = "")]
        container: String,
        /// The blob service endpoint, for the emulator or a sovereign cloud (for example
        /// http://127.0.0.1:10000/devstoreaccount1); Azure's public endpoint by default.
        #[arg(long, default_value = "")]
        blob_endpoint: String,
        /// The storage account key (prefer the CLOUDDP_STORAGE_KEY environment variable).
        #[arg(
            long,
            env = "CLOUDDP_STORAGE_KEY",
            hide_env_values = true,
            group = "credential"
        )]
        account_key: Option<String>,
        /// A SAS token with read, write, delete and list rights.
        #[arg(
            long,
            env = "CLOUDDP_STORAGE_SAS",
            hide_env_values = true,
            group = "credential"
        )]
        sas_token: Option<String>,
        /// Use the host's managed identity (the container must exist).
        #[arg(long, group = "credential")]
        managed_identity: bool,
        /// Use the Azurite emulator's development account.
        #[arg(long, group = "credential")]
        emulator: bool,
        /// Content endpoint instances, 1 to 16.
        #[arg(long, default_value_t = 2)]
        instances: u32,
        /// Storage alert threshold in GB.
        #[arg(long, default_value_t = 2000)]
        storage_threshold_gb: u64,
        /// Transfer alert threshold in GB over 30 days.
        #[arg(long, default_value_t = 10000)]
        transfer_threshold_gb: u64,
        #[command(flatten)]
        certificates: crate::cert::InstallCertificates,
    },
    /// List distribution points.
    List {
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<ListKind>,
    },
    /// Change a distribution point's editable properties: thresholds, alert toggles, instances (cloud), address
    /// and boundary groups (on-premises). Subscription, service name and region are read-only.
    Set {
        /// Its id or name.
        id: String,
        /// Storage alert threshold, GB.
        #[arg(long)]
        storage_threshold_gb: Option<u64>,
        /// Storage warning level, percent of the threshold.
        #[arg(long)]
        storage_warning_percent: Option<u32>,
        /// Storage critical level, percent of the threshold.
        #[arg(long)]
        storage_critical_percent: Option<u32>,
        /// Transfer alert threshold over 30 days, GB.
        #[arg(long)]
        transfer_threshold_gb: Option<u64>,
        /// Transfer warning level, percent of the threshold.
        #[arg(long)]
        transfer_warning_percent: Option<u32>,
        /// Transfer critical level, percent of the threshold.
        #[arg(long)]
        transfer_critical_percent: Option<u32>,
        /// Raise storage alerts.
        #[arg(long)]
        storage_alerts: Option<bool>,
        /// Raise transfer alerts.
        #[arg(long)]
        transfer_alerts: Option<bool>,
        /// Stop the service when the transfer critical level is crossed (off by default).
        #[arg(long)]
        stop_on_transfer_critical: Option<bool>,
        /// Content endpoint instances (cloud DPs), 1 to 16.
        #[arg(long)]
        instances: Option<u32>,
        /// HTTPS base URL clients download from (on-premises DPs).
        #[arg(long)]
        address: Option<String>,
        /// Boundary groups (on-premises DPs); repeat for several; replaces the current list.
        #[arg(long = "boundary-group", value_name = "NAME")]
        boundary_groups: Option<Vec<String>>,
    },
    /// Start a distribution point's service: clients may download from it again.
    Start {
        /// Its id or name.
        id: String,
    },
    /// Stop a distribution point's service: client downloads are refused at once; its content stays and the
    /// site still distributes to it.
    Stop {
        /// Its id or name.
        id: String,
        /// Why (shown as the DP's state reason).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Set the number of content endpoint instances of a cloud distribution point (1 to 16).
    Scale {
        /// Its id or name.
        id: String,
        /// Instance count.
        #[arg(long)]
        instances: u32,
    },
    /// Delete a distribution point: every object of it is removed from its store (a cloud DP's container too),
    /// then the DP, its distributions and its group memberships.
    Delete {
        /// Its id or name.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Remove the DP even when its store cannot be cleaned (unreachable, refused, or never created); prints
        /// what may be left in the store.
        #[arg(long)]
        force: bool,
    },
    /// Show one distribution point with all its properties.
    Show {
        /// Its id or name.
        id: String,
    },
    /// Print the Kubernetes manifests of the cloud DPs' content endpoints: one Deployment per cloud DP whose
    /// replicas are its instance count, with its Service and PodDisruptionBudget (apply with kubectl apply -f -).
    Manifests {
        /// Only this DP; every cloud DP by default.
        #[arg(long)]
        dp: Option<String>,
        /// The container image of clouddp.
        #[arg(long, default_value = "clouddp:latest")]
        image: String,
        /// The namespace.
        #[arg(long, default_value = "clouddp")]
        namespace: String,
    },
}

/// Kinds that can be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegisterKind {
    /// On the intranet.
    OnPremises,
    /// Also reachable from the internet.
    InternetFacing,
}

/// Kinds to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListKind {
    /// Cloud DPs.
    Cloud,
    /// On-premises DPs.
    OnPremises,
    /// Internet-facing DPs.
    InternetFacing,
}

fn kind_label(kind: i32) -> &'static str {
    match pb::DistributionPointKind::try_from(kind).unwrap_or_default() {
        pb::DistributionPointKind::Cloud => "cloud",
        pb::DistributionPointKind::OnPremises => "on-premises",
        pb::DistributionPointKind::InternetFacing => "internet-facing",
        pb::DistributionPointKind::Unspecified => "unknown",
    }
}

fn state_label(state: i32) -> &'static str {
    match pb::DistributionPointState::try_from(state).unwrap_or_default() {
        pb::DistributionPointState::Provisioning => "provisioning",
        pb::DistributionPointState::Ready => "ready",
        pb::DistributionPointState::Stopped => "stopped",
        pb::DistributionPointState::Error => "error",
        pb::DistributionPointState::CertificatesRequired => "certificates required",
        pb::DistributionPointState::Deleting => "deleting",
        pb::DistributionPointState::Unspecified => "unknown",
    }
}

fn store_label(dp: &pb::DistributionPoint) -> String {
    match dp.store.as_ref().and_then(|store| store.location.as_ref()) {
        Some(pb::store_location::Location::LocalFolder(folder)) => {
            format!("folder {}", folder.path)
        }
        Some(pb::store_location::Location::AzureBlob(blob)) => {
            format!("azure blob {}/{}", blob.account, blob.container)
        }
        None => String::new(),
    }
}

/// The JSON form of a DP, for `--output json`.
pub fn dp_json(dp: &pb::DistributionPoint) -> serde_json::Value {
    let thresholds = dp.thresholds.unwrap_or_default();
    json!({
        "id": dp.id,
        "name": dp.name,
        "kind": kind_label(dp.kind),
        "state": state_label(dp.state),
        "state_reason": dp.state_reason,
        "site_code": dp.site_code,
        "address": dp.address,
        "store": store_label(dp),
        "boundary_groups": dp.boundary_groups,
        "pull_distribution_point": dp.pull_distribution_point,
        "cloud": dp.cloud.as_ref().map(|cloud| json!({
            "subscription_id": cloud.subscription_id,
            "service_name": cloud.service_name,
            "region": cloud.region,
            "service_fqdn": cloud.service_fqdn,
            "instances": cloud.instances,
        })),
        "thresholds": {
            "storage_alert_gb": thresholds.storage_alert_gb,
            "storage_warning_percent": thresholds.storage_warning_percent,
            "storage_critical_percent": thresholds.storage_critical_percent,
            "transfer_alert_gb": thresholds.transfer_alert_gb,
            "transfer_warning_percent": thresholds.transfer_warning_percent,
            "transfer_critical_percent": thresholds.transfer_critical_percent,
            "storage_alerts_enabled": thresholds.storage_alerts_enabled,
            "transfer_alerts_enabled": thresholds.transfer_alerts_enabled,
            "stop_service_on_transfer_critical": thresholds.stop_service_on_transfer_critical,
        },
        "certificates": dp.certificates.iter().map(crate::cert::cert_json).collect::<Vec<_>>(),
        "content_count": dp.content_count,
        "content_bytes": dp.content_bytes,
        "create_time": time_text(dp.create_time.as_ref()),
        "update_time": time_text(dp.update_time.as_ref()),
        "revision": dp.revision,
    })
}

fn print_one(dp: &pb::DistributionPoint, output: OutputFormat) {
    match output {
        OutputFormat::Json => print_json(&dp_json(dp)),
        OutputFormat::Table => out!("{}", properties(&dp_json(dp), &[])),
    }
}

fn report_state(dp: &pb::DistributionPoint, output: OutputFormat) {
    match output {
        OutputFormat::Json => print_one(dp, output),
        OutputFormat::Table => out!("{} is {}", dp.name, state_label(dp.state)),
    }
}

/// Runs a `dp` command.
pub async fn run(
    command: DpCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client: DistributionPointServiceClient<Channel> =
        DistributionPointServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        DpCommand::Register {
            name,
            kind,
            folder,
            address,
            boundary_groups,
            site,
            pull,
        } => {
            let kind = match kind {
                RegisterKind::OnPremises => pb::DistributionPointKind::OnPremises,
                RegisterKind::InternetFacing => pb::DistributionPointKind::InternetFacing,
            };
            let dp = client
                .register_distribution_point(pb::RegisterDistributionPointRequest {
                    name,
                    kind: kind.into(),
                    site_code: site,
                    folder_path: folder,
                    address,
                    boundary_groups,
                    pull_distribution_point: pull,
                })
                .await
                .map_err(fail)?
                .into_inner();
            if output == OutputFormat::Table {
                out!("registered distribution point {} ({})", dp.name, dp.id);
            } else {
                print_one(&dp, output);
            }
        }
        DpCommand::Install {
            service_name,
            name,
            subscription,
            region,
            account,
            container,
            blob_endpoint,
            account_key,
            sas_token,
            managed_identity,
            emulator,
            instances,
            storage_threshold_gb,
            transfer_threshold_gb,
            certificates,
        } => {
            use pb::storage_credential::Credential;
            let (management_certificate, service_certificate) =
                certificates.sources(&service_name)?;
            let credential = match (account_key, sas_token) {
                (Some(key), _) => Credential::AccountKey(key),
                (None, Some(token)) => Credential::SasToken(token),
                (None, None) if managed_identity => Credential::ManagedIdentity(true),
                (None, None) if emulator => Credential::Emulator(true),
                (None, None) => {
                    return Err(CliError::Local(
                        "give a storage credential: --account-key (or CLOUDDP_STORAGE_KEY), --sas-token, --managed-identity or --emulator"
                            .to_owned(),
                    ));
                }
            };
            let dp = client
                .install_cloud_distribution_point(pb::InstallCloudDistributionPointRequest {
                    name,
                    site_code: String::new(),
                    cloud: Some(pb::CloudProperties {
                        subscription_id: subscription,
                        service_name,
                        region,
                        service_fqdn: String::new(),
                        instances,
                    }),
                    store: Some(pb::AzureBlobStore {
                        account,
                        container,
                        endpoint: blob_endpoint,
                    }),
                    credential: Some(pb::StorageCredential {
                        credential: Some(credential),
                    }),
                    thresholds: Some(pb::Thresholds {
                        storage_alert_gb: storage_threshold_gb,
                        transfer_alert_gb: transfer_threshold_gb,
                        ..Default::default()
                    }),
                    management_certificate: Some(management_certificate),
                    service_certificate: Some(service_certificate),
                    pull_distribution_point: false,
                })
                .await
                .map_err(fail)?
                .into_inner();
            if output == OutputFormat::Table {
                out!(
                    "installed cloud distribution point {} ({}), state {}",
                    dp.name,
                    dp.id,
                    state_label(dp.state)
                );
            } else {
                print_one(&dp, output);
            }
        }
        DpCommand::Set {
            id,
            storage_threshold_gb,
            storage_warning_percent,
            storage_critical_percent,
            transfer_threshold_gb,
            transfer_warning_percent,
            transfer_critical_percent,
            storage_alerts,
            transfer_alerts,
            stop_on_transfer_critical,
            instances,
            address,
            boundary_groups,
        } => {
            let mut paths = Vec::new();
            let mut thresholds = pb::Thresholds::default();
            macro_rules! set_threshold {
                ($value:expr, $field:ident) => {
                    if let Some(value) = $value {
                        thresholds.$field = value;
                        paths.push(concat!("thresholds.", stringify!($field)).to_owned());
                    }
                };
            }
            set_threshold!(storage_threshold_gb, storage_alert_gb);
            set_threshold!(storage_warning_percent, storage_warning_percent);
            set_threshold!(storage_critical_percent, storage_critical_percent);
            set_threshold!(transfer_threshold_gb, transfer_alert_gb);
            set_threshold!(transfer_warning_percent, transfer_warning_percent);
            set_threshold!(transfer_critical_percent, transfer_critical_percent);
            set_threshold!(storage_alerts, storage_alerts_enabled);
            set_threshold!(transfer_alerts, transfer_alerts_enabled);
            set_threshold!(stop_on_transfer_critical, stop_service_on_transfer_critical);
            if instances.is_some() {
                paths.push("cloud.instances".to_owned());
            }
            if address.is_some() {
                paths.push("address".to_owned());
            }
            if boundary_groups.is_some() {
                paths.push("boundary_groups".to_owned());
            }
            if paths.is_empty() {
                return Err(CliError::Local("nothing to change: give at least one property flag (see clouddp dp set --help)".to_owned()));
            }
            let dp = client
                .update_distribution_point(pb::UpdateDistributionPointRequest {
                    id,
                    distribution_point: Some(pb::DistributionPoint {
                        thresholds: Some(thresholds),
                        cloud: instances.map(|instances| pb::CloudProperties {
                            instances,
                            ..Default::default()
                        }),
                        address: address.unwrap_or_default(),
                        boundary_groups: boundary_groups.unwrap_or_default(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_one(&dp, output);
        }
        DpCommand::Start { id } => {
            let dp = client
                .start_service(pb::StartServiceRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            report_state(&dp, output);
        }
        DpCommand::Stop { id, reason } => {
            let dp = client
                .stop_service(pb::StopServiceRequest { id, reason })
                .await
                .map_err(fail)?
                .into_inner();
            report_state(&dp, output);
        }
        DpCommand::Scale { id, instances } => {
            let dp = client
                .scale_service(pb::ScaleServiceRequest { id, instances })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_one(&dp, output),
                OutputFormat::Table => out!(
                    "{} now has {} instance(s)",
                    dp.name,
                    dp.cloud
                        .as_ref()
                        .map(|cloud| cloud.instances)
                        .unwrap_or_default()
                ),
            }
        }
        DpCommand::Delete { id, yes, force } => {
            crate::content::confirm(
                &format!("Delete distribution point {id} and every object in its store?"),
                yes,
            )?;
            let deleted = client
                .delete_distribution_point(pb::DeleteDistributionPointRequest {
                    id: id.clone(),
                    force,
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(
                    &json!({ "deleted": deleted.id, "objects_deleted": deleted.blobs_deleted, "left_in_store": deleted.left_in_store }),
                ),
                OutputFormat::Table if deleted.left_in_store.is_empty() => out!(
                    "deleted {id} ({}), {} object(s) removed from its store",
                    deleted.id,
                    deleted.blobs_deleted
                ),
                OutputFormat::Table => out!(
                    "deleted {id} ({}) without cleaning its store: {}",
                    deleted.id,
                    deleted.left_in_store
                ),
            }
        }
        DpCommand::Manifests {
            dp,
            image,
            namespace,
        } => {
            let dps = match dp {
                Some(id) => vec![
                    client
                        .get_distribution_point(pb::GetDistributionPointRequest { id })
                        .await
                        .map_err(fail)?
                        .into_inner(),
                ],
                None => {
                    client
                        .list_distribution_points(pb::ListDistributionPointsRequest {
                            kind: pb::DistributionPointKind::Cloud.into(),
                            page: Some(pb::PageRequest {
                                page_size: 1000,
                                page_token: String::new(),
                            }),
                        })
                        .await
                        .map_err(fail)?
                        .into_inner()
                        .distribution_points
                }
            };
            let documents: Vec<String> = dps
                .iter()
                .filter_map(|dp| {
                    dp.cloud.as_ref().map(|cloud| {
                        crate::manifests::content_endpoint(dp, cloud, &image, &namespace)
                    })
                })
                .collect();
            if documents.is_empty() {
                return Err(CliError::Local(
                    "no cloud distribution point to render".to_owned(),
                ));
            }
            out!("{}", documents.join("---\n"));
        }
        DpCommand::Show { id } => {
            let dp = client
                .get_distribution_point(pb::GetDistributionPointRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            print_one(&dp, output);
        }
        DpCommand::List { kind } => {
            let kind = match kind {
                None => pb::DistributionPointKind::Unspecified,
                Some(ListKind::Cloud) => pb::DistributionPointKind::Cloud,
                Some(ListKind::OnPremises) => pb::DistributionPointKind::OnPremises,
                Some(ListKind::InternetFacing) => pb::DistributionPointKind::InternetFacing,
            };
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_distribution_points(pb::ListDistributionPointsRequest {
                        kind: kind.into(),
                        page: Some(pb::PageRequest {
                            page_size: 1000,
                            page_token,
                        }),
                    })
                    .await
                    .map_err(fail)?
                    .into_inner();
                all.extend(page.distribution_points);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            match output {
                OutputFormat::Json => {
                    print_json(&serde_json::Value::Array(all.iter().map(dp_json).collect()))
                }
                OutputFormat::Table => {
                    let mut rows =
                        table(&["NAME", "KIND", "STATE", "SITE", "ADDRESS", "STORE", "ID"]);
                    for dp in &all {
                        rows.add_row(vec![
                            dp.name.clone(),
                            kind_label(dp.kind).to_owned(),
                            state_label(dp.state).to_owned(),
                            dp.site_code.clone(),
                            dp.address.clone(),
                            store_label(dp),
                            dp.id.clone(),
                        ]);
                    }
                    out!("{rows}");
                    out!("{} distribution point(s)", all.len());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
