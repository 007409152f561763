//! `clouddp status`: the health of both services.

use std::process::ExitCode;

use clouddp_proto::v1::ListFollowedDistributionPointsRequest;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::connect::{CliError, CliResult, Endpoints, Service};
use crate::output::out;
use crate::output::{OutputFormat, print_json, table};

struct ServiceStatus {
    service: Service,
    url: String,
    status: String,
    detail: String,
    healthy: bool,
}

async fn check(endpoints: &Endpoints, service: Service) -> CliResult<ServiceStatus> {
    let url = endpoints.url(service).to_owned();
    let mut client = HealthClient::new(endpoints.channel(service)?);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    let (status, healthy, mut detail) = match answer {
        Ok(response) => {
            let serving = response.into_inner().status();
            (
                serving.as_str_name().to_owned(),
                serving == ServingStatus::Serving,
                String::new(),
            )
        }
        Err(status) => match endpoints.failure(service, &status) {
            CliError::Unreachable { detail, .. } => ("UNREACHABLE".to_owned(), false, detail),
            other => ("ERROR".to_owned(), false, other.to_string()),
        },
    };
    if healthy && service == Service::Monitoring {
        let mut monitoring = MonitoringServiceClient::new(endpoints.channel(service)?);
        if let Ok(followed) = monitoring
            .list_followed_distribution_points(ListFollowedDistributionPointsRequest {})
            .await
        {
            let followed = followed.into_inner();
            detail = format!(
                "follows {} distribution point(s); {} the distribution manager at {}",
                followed.distribution_points.len(),
                if followed.connected {
                    "connected to"
                } else {
                    "NOT connected to"
                },
                followed.distribution_manager
            );
        }
    }
    Ok(ServiceStatus {
        service,
        url,
        status,
        detail,
        healthy,
    })
}

/// Checks both services; exits 3 when either is not serving.
pub async fn run(endpoints: &Endpoints, output: OutputFormat) -> CliResult<ExitCode> {
    let (manager, monitoring) = tokio::join!(
        check(endpoints, Service::DistributionManager),
        check(endpoints, Service::Monitoring)
    );
    let statuses = [manager?, monitoring?];
    match output {
        OutputFormat::Json => print_json(&json!(
            statuses
                .iter()
                .map(|status| json!({
                    "service": status.service.label(),
                    "endpoint": status.url,
                    "status": status.status,
                    "healthy": status.healthy,
                    "detail": status.detail,
                }))
                .collect::<Vec<_>>()
        )),
        OutputFormat::Table => {
            let mut rows = table(&["SERVICE", "ENDPOINT", "STATUS", "DETAIL"]);
            for status in &statuses {
                rows.add_row(vec![
                    status.service.label(),
                    status.url.as_str(),
                    status.status.as_str(),
                    status.detail.as_str(),
                ]);
            }
            out!("{rows}");
        }
    }
    if statuses.iter().all(|status| status.healthy) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(crate::EXIT_UNREACHABLE))
    }
}
