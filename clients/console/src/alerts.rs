//! `clouddp usage …` and `clouddp alerts …`: usage of cloud DPs and their alerts, from the monitoring service.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
use serde_json::json;
use tokio_stream::StreamExt as _;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{FromNow, OutputFormat, print_json, properties, table, time_arg, time_text};

/// Usage commands.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Show a cloud DP's stored bytes, 30-day transfers against its thresholds, and a chart of the last days.
    Show {
        /// The DP's id or name.
        dp: String,
        /// Days to show (1 to 35).
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

/// Alert commands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List open alerts (with --all, resolved ones too).
    List {
        /// Include resolved alerts.
        #[arg(long)]
        all: bool,
        /// Only this DP (repeatable).
        #[arg(long)]
        dp: Vec<String>,
    },
    /// Show one alert with everything it says about itself.
    Show {
        /// The alert's id.
        id: String,
    },
    /// Postpone an alert until a time (RFC 3339) or for a duration (for example 2h).
    Postpone {
        /// The alert's id.
        id: String,
        /// Until when: `2h`, `1d`, or `2026-12-01T08:00:00Z`.
        #[arg(long)]
        until: String,
    },
    /// Acknowledge an alert.
    Ack {
        /// The alert's id.
        id: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Follow alert events as they happen; reconnects and resumes after the last event it printed.
    Watch {
        /// Start after this event sequence (0: replay every event first).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this DP (repeatable).
        #[arg(long)]
        dp: Vec<String>,
        /// Only warning and critical (`warning`), or critical (`critical`).
        #[arg(long)]
        min_severity: Option<String>,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

fn gb(bytes: u64) -> String {
    format!("{:.3} GB", bytes as f64 / 1e9)
}

fn enum_label(text: &str, prefix: &str) -> String {
    text.strip_prefix(prefix)
        .unwrap_or(text)
        .to_ascii_lowercase()
}

fn alert_json(alert: &pb::Alert) -> serde_json::Value {
    json!({
        "id": alert.id,
        "distribution_point_id": alert.distribution_point_id,
        "distribution_point": alert.distribution_point_name,
        "kind": enum_label(alert.kind().as_str_name(), "ALERT_KIND_"),
        "severity": enum_label(alert.severity().as_str_name(), "ALERT_SEVERITY_"),
        "state": enum_label(alert.state().as_str_name(), "ALERT_STATE_"),
        "message": alert.message,
        "threshold_bytes": alert.threshold_bytes,
        "level_percent": alert.level_percent,
        "measured_bytes": alert.measured_bytes,
        "window_seconds": alert.window_seconds,
        "crossing_time": time_text(alert.crossing_time.as_ref()),
        "forecast_next_level_time": time_text(alert.forecast_next_level_time.as_ref()),
        "raise_time": time_text(alert.raise_time.as_ref()),
        "update_time": time_text(alert.update_time.as_ref()),
        "postponed_until": time_text(alert.postponed_until.as_ref()),
        "acknowledge_comment": alert.acknowledge_comment,
    })
}

/// Runs a `usage` command.
pub async fn run_usage(
    command: UsageCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::Monitoring;
    let mut client = MonitoringServiceClient::new(endpoints.channel(service)?);
    let UsageCommand::Show { dp, days } = command;
    let usage = client
        .get_usage(pb::GetUsageRequest {
            distribution_point_id: dp,
            days,
        })
        .await
        .map_err(|status| endpoints.failure(service, &status))?
        .into_inner();
    let thresholds = usage.thresholds.unwrap_or_default();
    // Daily totals for the chart.
    let mut daily: std::collections::BTreeMap<i64, u64> = std::collections::BTreeMap::new();
    for sample in &usage.samples {
        let day = sample
            .hour_start
            .as_ref()
            .map(|time| time.seconds / 86_400)
            .unwrap_or(0);
        *daily.entry(day).or_default() += sample.transferred_bytes;
    }
    match output {
        OutputFormat::Json => print_json(&json!({
            "distribution_point_id": usage.distribution_point_id,
            "stored_bytes": usage.stored_bytes,
            "transferred_bytes_30d": usage.transferred_bytes_30d,
            "storage_alert_gb": thresholds.storage_alert_gb,
            "transfer_alert_gb": thresholds.transfer_alert_gb,
            "last_pull_time": time_text(usage.last_pull_time.as_ref()),
            "daily_transferred_bytes": daily.iter().map(|(day, bytes)| json!({"day": day * 86_400, "bytes": bytes})).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut rows = table(&["MEASURE", "VALUE", "THRESHOLD", "USED"]);
            let percent = |value: u64, threshold_gb: u64| {
                if threshold_gb == 0 {
                    String::new()
                } else {
                    format!(
                        "{:.1} %",
                        value as f64 / (threshold_gb as f64 * 1e9) * 100.0
                    )
                }
            };
            rows.add_row(vec![
                "stored".to_owned(),
                gb(usage.stored_bytes),
                format!(
                    "{} GB (warn {} %, crit {} %)",
                    thresholds.storage_alert_gb,
                    thresholds.storage_warning_percent,
                    thresholds.storage_critical_percent
                ),
                percent(usage.stored_bytes, thresholds.storage_alert_gb),
            ]);
            rows.add_row(vec![
                "transferred, 30 days".to_owned(),
                gb(usage.transferred_bytes_30d),
                format!(
                    "{} GB (warn {} %, crit {} %)",
                    thresholds.transfer_alert_gb,
                    thresholds.transfer_warning_percent,
                    thresholds.transfer_critical_percent
                ),
                percent(usage.transferred_bytes_30d, thresholds.transfer_alert_gb),
            ]);
            out!("{rows}");
            match usage.last_pull_time.as_ref() {
                Some(time) => out!("last pull: {}", time_text(Some(time))),
                None => out!(
                    "last pull: not yet; the monitoring service pulls a cloud DP's usage every pull interval (1 h by default)"
                ),
            }
            let peak = daily.values().copied().max().unwrap_or(0).max(1);
            out!("transferred per day:");
            for (day, bytes) in &daily {
                let width = usize::try_from(bytes * 40 / peak).unwrap_or(0);
                let date = clouddp_core::time::rfc3339_seconds(day.saturating_mul(86_400));
                let date = date.get(..10).unwrap_or(&date);
                out!("  {} {:<40} {}", date, "#".repeat(width), gb(*bytes));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `alerts` command.
pub async fn run_alerts(
    command: AlertsCommand,
    endpoints: &Endpoints,
    output: OutputFormat,
) -> CliResult<ExitCode> {
    let service = Service::Monitoring;
    let mut client = MonitoringServiceClient::new(endpoints.channel(service)?);
    let fail = |status: tonic::Status| -> CliError { endpoints.failure(service, &status) };
    let print_alert = |alert: &pb::Alert| match output {
        OutputFormat::Json => print_json(&alert_json(alert)),
        OutputFormat::Table => out!("{}", properties(&alert_json(alert), &[])),
    };
    match command {
        AlertsCommand::List { all, dp } => {
            let alerts = client
                .list_alerts(pb::ListAlertsRequest {
                    distribution_point_ids: dp,
                    include_resolved: all,
                    ..Default::default()
                })
                .await
                .map_err(fail)?
                .into_inner()
                .alerts;
            match output {
                OutputFormat::Json => {
                    print_json(&json!(alerts.iter().map(alert_json).collect::<Vec<_>>()))
                }
                OutputFormat::Table if alerts.is_empty() => {
                    out!(
                        "no alerts{}",
                        if all {
                            ""
                        } else {
                            " open (--all shows resolved ones too)"
                        }
                    );
                }
                OutputFormat::Table => {
                    let mut rows = table(&[
                        "ID", "DP", "KIND", "SEVERITY", "STATE", "MEASURED", "UPDATED",
                    ]);
                    for alert in &alerts {
                        let value = alert_json(alert);
                        rows.add_row(vec![
                            alert.id.clone(),
                            alert.distribution_point_name.clone(),
                            value["kind"].as_str().unwrap_or_default().to_owned(),
                            value["severity"].as_str().unwrap_or_default().to_owned(),
                            value["state"].as_str().unwrap_or_default().to_owned(),
                            gb(alert.measured_bytes),
                            time_text(alert.update_time.as_ref()),
                        ]);
                    }
                    out!("{rows}");
                }
            }
        }
        AlertsCommand::Show { id } => {
            let alert = client
                .get_alert(pb::GetAlertRequest { id })
                .await
                .map_err(fail)?
                .into_inner();
            print_alert(&alert);
        }
        AlertsCommand::Postpone { id, until } => {
            let alert = client
                .postpone_alert(pb::PostponeAlertRequest {
                    id,
                    until: Some(time_arg("--until", &until, FromNow::Ahead)?),
                })
                .await
                .map_err(fail)?
                .into_inner();
            print_alert(&alert);
        }
        AlertsCommand::Ack { id, comment } => {
            let alert = client
                .acknowledge_alert(pb::AcknowledgeAlertRequest { id, comment })
                .await
                .map_err(fail)?
                .into_inner();
            print_alert(&alert);
        }
        AlertsCommand::Watch {
            after,
            dp,
            min_severity,
            count,
        } => {
            let min_severity = match min_severity.as_deref() {
                None | Some("info") => pb::AlertSeverity::Unspecified,
                Some("warning") => pb::AlertSeverity::Warning,
                Some("critical") => pb::AlertSeverity::Critical,
                Some(other) => {
                    return Err(CliError::Local(format!(
                        "--min-severity {other:?}: give info, warning or critical"
                    )));
                }
            };
            let mut cursor = after;
            let mut printed = 0_u64;
            let mut pause = Duration::from_millis(200);
            loop {
                let request = pb::SubscribeAlertsRequest {
                    after_sequence: cursor,
                    distribution_point_ids: dp.clone(),
                    kinds: Vec::new(),
                    min_severity: min_severity.into(),
                    heartbeat_seconds: 10,
                };
                let mut stream = match client.subscribe_alerts(request).await {
                    Ok(stream) => {
                        pause = Duration::from_millis(200);
                        stream.into_inner()
                    }
                    Err(status) => {
                        eprintln!(
                            "clouddp: {}; reconnecting in {} ms",
                            fail(status),
                            pause.as_millis()
                        );
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                while let Some(message) = stream.next().await {
                    let message = match message {
                        Ok(message) => message,
                        Err(status) => {
                            eprintln!(
                                "clouddp: the alert stream broke ({}); resuming after {cursor}",
                                status.message()
                            );
                            break;
                        }
                    };
                    let Some(pb::alert_stream_message::Message::Event(event)) = message.message
                    else {
                        continue;
                    };
                    cursor = event.sequence;
                    let alert = event.alert.clone().unwrap_or_default();
                    let kind = enum_label(event.r#type().as_str_name(), "ALERT_EVENT_TYPE_");
                    match output {
                        OutputFormat::Json => {
                            out!(
                                "{}",
                                json!({"sequence": event.sequence, "event": kind, "time": time_text(event.time.as_ref()), "alert": alert_json(&alert)})
                            );
                        }
                        OutputFormat::Table => out!(
                            "{} #{} {} {} {} {}: {}",
                            time_text(event.time.as_ref()),
                            event.sequence,
                            kind,
                            enum_label(alert.severity().as_str_name(), "ALERT_SEVERITY_"),
                            alert.distribution_point_name,
                            enum_label(alert.kind().as_str_name(), "ALERT_KIND_"),
                            alert.message
                        ),
                    }
                    let _ = std::io::stdout().flush();
                    printed += 1;
                    if count > 0 && printed >= count {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
