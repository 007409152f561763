//! `clouddp access …`: which administrator holds which role.

use std::path::{Path, PathBuf};
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
    /// Administrator credentials: issue, list, revoke.
    #[command(subcommand)]
    Credential(CredentialCommand),
}

/// Administrator credential commands.
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Issue a credential for an administrator: makes its key here, has the site CA sign it, and writes the
    /// folder (key.pem 0600, cert.pem, ca.pem, clouddp.toml 0600) to hand over; grant roles separately.
    Issue {
        /// The administrator, admin/NAME.
        principal: String,
        /// The folder to write (must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the credentials the site issued, newest first.
    List {
        /// Only this administrator's (admin/NAME).
        #[arg(long)]
        principal: Option<String>,
        /// Only revoked ones.
        #[arg(long)]
        revoked: bool,
    },
    /// Revoke a credential by its serial: both services refuse it within a second.
    Revoke {
        /// The serial (as `credential list` shows it).
        serial: String,
    },
}

fn credential_json(credential: &pb::AdminCredential) -> serde_json::Value {
    json!({
        "serial": credential.serial,
        "principal": credential.principal,
        "issue_time": time_text(credential.issue_time.as_ref()),
        "expire_time": time_text(credential.expire_time.as_ref()),
        "issued_by": credential.issued_by,
        "revoked": credential.revoked,
        "revoke_time": time_text(credential.revoke_time.as_ref()),
        "revoked_by": credential.revoked_by,
    })
}

/// Writes `data` to `path` with `mode`, refusing to replace a file.
fn write_new(path: &Path, data: &[u8], mode: u32) -> CliResult<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| CliError::Local(format!("cannot write {}: {error}", path.display())))?;
    file.write_all(data)
        .map_err(|error| CliError::Local(format!("cannot write {}: {error}", path.display())))
}

/// Makes a key here, has it signed for `principal`, and writes the credential folder `out`.
async fn issue(
    client: &mut AccessServiceClient<tonic::transport::Channel>,
    endpoints: &Endpoints,
    principal: String,
    out: &Path,
) -> Result<pb::AdminCredential, CliError> {
    if out.exists() {
        return Err(CliError::Local(format!(
            "{} exists already; give a new folder",
            out.display()
        )));
    }
    let key = rcgen::KeyPair::generate()
        .map_err(|error| CliError::Local(format!("cannot make a key: {error}")))?;
    let request = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|request| request.pem())
        .map_err(|error| CliError::Local(format!("cannot make a certificate request: {error}")))?;
    let service = Service::DistributionManager;
    let credential = client
        .issue_admin_credential(pb::IssueAdminCredentialRequest {
            principal,
            certificate_request_pem: request,
        })
        .await
        .map_err(|status| endpoints.failure(service, &status))?
        .into_inner();
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(|error| {
                CliError::Local(format!("cannot create {}: {error}", out.display()))
            })?;
    }
    let absolute = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    write_new(&out.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(
        &out.join("cert.pem"),
        credential.certificate_pem.as_bytes(),
        0o644,
    )?;
    write_new(
        &out.join("ca.pem"),
        credential.ca_certificate_pem.as_bytes(),
        0o644,
    )?;
    let file = |name: &str| absolute.join(name).display().to_string();
    let config = format!(
        "# clouddp console configuration of {} (serial {}).\n# Use it with: export CLOUDDP_CONFIG={}\n\
         endpoint = {:?}\nmonitoring_endpoint = {:?}\nca_cert = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
        credential.principal,
        credential.serial,
        file("clouddp.toml"),
        endpoints.url(Service::DistributionManager),
        endpoints.url(Service::Monitoring),
        file("ca.pem"),
        file("cert.pem"),
        file("key.pem"),
    );
    write_new(&out.join("clouddp.toml"), config.as_bytes(), 0o600)?;
    Ok(credential)
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
        AccessCommand::Credential(command) => {
            return credential(command, &mut client, endpoints, output).await;
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

async fn credential(
    command: CredentialCommand,
    client: &mut AccessServiceClient<tonic::transport::Channel>,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        CredentialCommand::Issue { principal, out } => {
            let credential = issue(client, endpoints, principal, &out).await?;
            match output {
                OutputFormat::Json => {
                    let mut value = credential_json(&credential);
                    value["folder"] = json!(out.display().to_string());
                    print_json(&value);
                }
                OutputFormat::Table => out!(
                    "issued {} (serial {}) into {}; hand the folder over and have them `export CLOUDDP_CONFIG={}`; grant roles with `clouddp access grant`",
                    credential.principal,
                    credential.serial,
                    out.display(),
                    out.join("clouddp.toml").display()
                ),
            }
        }
        CredentialCommand::List { principal, revoked } => {
            let answer = client
                .list_admin_credentials(pb::ListAdminCredentialsRequest {
                    principal: principal.unwrap_or_default(),
                    revoked_only: revoked,
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "credentials": answer.credentials.iter().map(credential_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => {
                    let mut rows =
                        table(&["SERIAL", "PRINCIPAL", "ISSUED", "EXPIRES", "BY", "REVOKED"]);
                    for credential in &answer.credentials {
                        rows.add_row(vec![
                            credential.serial.clone(),
                            credential.principal.clone(),
                            time_text(credential.issue_time.as_ref()),
                            time_text(credential.expire_time.as_ref()),
                            credential.issued_by.clone(),
                            if credential.revoked {
                                format!(
                                    "{} by {}",
                                    time_text(credential.revoke_time.as_ref()),
                                    credential.revoked_by
                                )
                            } else {
                                String::new()
                            },
                        ]);
                    }
                    out!("{rows}");
                }
            }
        }
        CredentialCommand::Revoke { serial } => {
            let credential = client
                .revoke_admin_credential(pb::RevokeAdminCredentialRequest { serial })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&credential_json(&credential)),
                OutputFormat::Table => out!(
                    "revoked {} of {}: both services refuse it within a second",
                    credential.serial,
                    credential.principal
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
