//! `clouddp audit …`: who changed what, and who was refused, on both services.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::audit_service_client::AuditServiceClient;
use serde_json::json;

use crate::connect::{CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{FromNow, OutputFormat, print_json, table, time_arg, time_text};

/// Which services' trails to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trail {
    /// The distribution manager's and monitoring's, merged by time.
    All,
    /// The distribution manager's.
    DistributionManager,
    /// Monitoring's.
    Monitoring,
}

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first: every change, and every refused call.
    List {
        /// Only this caller's (admin/NAME, device/ID, service/NAME, unauthenticated).
        #[arg(long)]
        principal: Option<String>,
        /// Only this RPC's (Service/Method, or a method name alone).
        #[arg(long)]
        rpc: Option<String>,
        /// Only refused calls.
        #[arg(long)]
        refused: bool,
        /// Only events of the last DURATION (1h, 7d) or since an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Events per service, at most 1000.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Whose trail.
        #[arg(long, value_enum, default_value_t = Trail::All)]
        service: Trail,
    },
}

/// Runs an `audit` command.
pub async fn run(
    command: AuditCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let AuditCommand::List {
        principal,
        rpc,
        refused,
        since,
        limit,
        service,
    } = command;
    let request = pb::ListAuditEventsRequest {
        page: Some(pb::PageRequest {
            page_size: limit.clamp(1, 1000),
            page_token: String::new(),
        }),
        principal: principal.unwrap_or_default(),
        rpc: rpc.unwrap_or_default(),
        refused_only: refused,
        since: since
            .as_deref()
            .map(|since| time_arg("--since", since, FromNow::Back))
            .transpose()?,
    };
    let services: &[(Service, &str)] = match service {
        Trail::All => &[
            (Service::DistributionManager, "distribution-manager"),
            (Service::Monitoring, "monitoring"),
        ],
        Trail::DistributionManager => &[(Service::DistributionManager, "distribution-manager")],
        Trail::Monitoring => &[(Service::Monitoring, "monitoring")],
    };
    let mut events: Vec<(&str, pb::AuditEvent)> = Vec::new();
    for (service, label) in services {
        let answer = AuditServiceClient::new(endpoints.channel(*service)?)
            .list_audit_events(request.clone())
            .await
            .map_err(|status| endpoints.failure(*service, &status))?
            .into_inner();
        events.extend(answer.events.into_iter().map(|event| (*label, event)));
    }
    events.sort_by_key(|(_, event)| {
        std::cmp::Reverse(
            event
                .time
                .as_ref()
                .map(|time| (time.seconds, time.nanos))
                .unwrap_or_default(),
        )
    });
    match output {
        OutputFormat::Json => print_json(&json!({
            "events": events.iter().map(|(service, event)| json!({
                "service": service,
                "sequence": event.sequence,
                "time": time_text(event.time.as_ref()),
                "principal": event.principal,
                "roles": event.roles,
                "rpc": event.rpc,
                "target": event.target,
                "code": event.code,
                "trace_id": event.trace_id,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut rows = table(&["TIME", "SERVICE", "PRINCIPAL", "RPC", "TARGET", "CODE"]);
            for (service, event) in &events {
                rows.add_row(vec![
                    time_text(event.time.as_ref()),
                    (*service).to_owned(),
                    event.principal.clone(),
                    event.rpc.clone(),
                    event.target.clone(),
                    event.code.clone(),
                ]);
            }
            out!("{rows}");
            out!("{} event(s)", events.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
