//! `clouddp device …`: bulk registration tokens, enrolled devices, blocking.

use std::process::ExitCode;

use clap::Subcommand;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::device_service_client::DeviceServiceClient;
use serde_json::json;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, table, time_text};

/// Device commands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Bulk registration tokens devices enroll with (`clouddp-agent enroll --token …`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// List enrolled devices.
    List {
        /// Only blocked devices.
        #[arg(long)]
        blocked: bool,
    },
    /// Block a device: its calls are refused within a second; its access tokens end at their expiry (≤ 1 h).
    Block {
        /// The device id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Unblock a device.
    Unblock {
        /// The device id.
        id: String,
    },
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bulk registration token; its secret is printed once.
    Create {
        /// How many devices may enroll with it (1 to 100,000).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid (1m to 30d), for example 24h.
        #[arg(long, default_value = "24h")]
        expires: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
    },
}

fn device_json(device: &pb::Device) -> serde_json::Value {
    json!({
        "id": device.id,
        "enroll_time": time_text(device.enroll_time.as_ref()),
        "certificate_expire_time": time_text(device.certificate_expire_time.as_ref()),
        "blocked": device.blocked,
        "block_reason": device.block_reason,
    })
}

/// Runs a `device` command.
pub async fn run(
    command: DeviceCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::DistributionManager;
    let mut client = DeviceServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    match command {
        DeviceCommand::Token(TokenCommand::Create {
            uses,
            expires,
            description,
        }) => {
            let lifetime = humantime::parse_duration(&expires).map_err(|_| {
                CliError::Local(format!(
                    "--expires {expires:?}: give a duration like 24h or 7d"
                ))
            })?;
            let token = client
                .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                    uses,
                    lifetime_seconds: lifetime.as_secs(),
                    description,
                })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&json!({
                    "id": token.id,
                    "token": token.token,
                    "uses_left": token.uses_left,
                    "expire_time": time_text(token.expire_time.as_ref()),
                })),
                OutputFormat::Table => {
                    out!("{}", token.token);
                    out!(
                        "token {} enrolls up to {} device(s) until {}; it is shown only now. On a device: \
                         clouddp-agent enroll --token <token> --ca-cert <the site CA, admin/ca.pem>",
                        token.id,
                        token.uses_left,
                        time_text(token.expire_time.as_ref())
                    );
                }
            }
        }
        DeviceCommand::List { blocked } => {
            let mut devices = Vec::new();
            let mut page_token = String::new();
            loop {
                let answer = client
                    .list_devices(pb::ListDevicesRequest {
                        page: Some(pb::PageRequest {
                            page_size: 1000,
                            page_token: page_token.clone(),
                        }),
                        blocked_only: blocked,
                    })
                    .await
                    .map_err(fail)?
                    .into_inner();
                devices.extend(answer.devices);
                if answer.next_page_token.is_empty() {
                    break;
                }
                page_token = answer.next_page_token;
            }
            match output {
                OutputFormat::Json => print_json(&json!({
                    "devices": devices.iter().map(device_json).collect::<Vec<_>>(),
                })),
                OutputFormat::Table => {
                    let mut rows = table(&["DEVICE", "ENROLLED", "CERTIFICATE EXPIRES", "BLOCKED"]);
                    for device in &devices {
                        rows.add_row(vec![
                            device.id.clone(),
                            time_text(device.enroll_time.as_ref()),
                            time_text(device.certificate_expire_time.as_ref()),
                            if device.blocked {
                                format!("yes: {}", device.block_reason)
                            } else {
                                "no".to_owned()
                            },
                        ]);
                    }
                    out!("{rows}");
                    out!("{} device(s)", devices.len());
                }
            }
        }
        DeviceCommand::Block { id, reason } => {
            let device = client
                .block_device(pb::BlockDeviceRequest { id, reason })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&device_json(&device)),
                OutputFormat::Table => {
                    out!("device/{} is blocked: {}", device.id, device.block_reason)
                }
            }
        }
        DeviceCommand::Unblock { id } => {
            let device = client
                .unblock_device(pb::UnblockDeviceRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            match output {
                OutputFormat::Json => print_json(&device_json(&device)),
                OutputFormat::Table => out!("device/{} is unblocked", device.id),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
