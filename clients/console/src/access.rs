//! `clouddp access …`: which administrator holds which role.

use std::process::ExitCode;

use clap::Subcommand;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::access_service_client::AccessServiceClient;
use serde_json::json;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, table, time_text};

/// Role commands. Roles: full-administrator, infrastructure-administrator (DPs, DP and boundary groups,
/// certificates, signing keys, alerts), application-administrator (content, distributions, client settings,
/// deployments), read-only-analyst (every read and the alert watch). Devices and the site's services have
/// built-in roles of their own.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// List role bindings (all, or one administrator's).
    List {
        /// Only this administrator's (admin/NAME).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Grant a role to an administrator (admin/NAME); the administrator authenticates with a certificate of the
    /// site whose URI SAN is spiffe://<site>.clouddp/admin/NAME.
    Grant {
        /// The administrator, admin/NAME.
        principal: String,
        /// The role, for example read-only-analyst.
        role: String,
    },
    /// Revoke a role; the administrator's calls that needed it are refused within a second.
    Revoke {
        /// The administrator, admin/NAME.
        principal: String,
        /// The role.
        role: String,
    },
}

fn binding_json(binding: &pb::RoleBinding) -> serde_json::Value {
    json!({
        "principal": binding.principal,
        "role": binding.role,
        "role_name": binding.role_name,
        "grant_time": time_text(binding.grant_time.as_ref()),
        "granted_by": binding.granted_by,
    })
}

/// Runs an `access` command.
pub async fn run(
    command: AccessCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = AccessServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        AccessCommand::List { principal } => {
            let answer = client
                .list_role_bindings(pb::ListRoleBindingsRequest {
                    principal: principal.unwrap_or_default(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "bindings": answer.bindings.iter().map(binding_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => {
                    let mut rows = table(&["PRINCIPAL", "ROLE", "GRANTED", "BY"]);
                    for binding in &answer.bindings {
                        rows.add_row(vec![
                            binding.principal.clone(),
                            binding.role_name.clone(),
                            time_text(binding.grant_time.as_ref()),
                            binding.granted_by.clone(),
                        ]);
                    }
                    out!("{rows}");
                }
            }
        }
        AccessCommand::Grant { principal, role } => {
            let binding = client
                .grant_role(pb::GrantRoleRequest { principal, role })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&binding_json(&binding)),
                OutputFormat::Table => {
                    out!("{} has the role {}", binding.principal, binding.role_name)
                }
            }
        }
        AccessCommand::Revoke { principal, role } => {
            client
                .revoke_role(pb::RevokeRoleRequest {
                    principal: principal.clone(),
                    role: role.clone(),
                })
                .await
                .map_err(fail)?;
            match output {
                OutputFormat::Json => {
                    print_json(&json!({ "principal": principal, "revoked": role }))
                }
                OutputFormat::Table => out!("{principal} no longer has the role {role}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
