//! OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT set, both services export spans over OTLP, and W3C trace
//! context crosses every gRPC hop (a caller's `traceparent` is honoured; monitoring → manager shares a trace).

use std::time::{Duration, Instant};

use clouddp_e2e::otlp::Collector;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

// The collector runs in this test's runtime: it needs a worker while the test thread waits for the exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_trace_context_crosses_grpc_hops() {
    let collector = Collector::start().await.unwrap();
    let mut manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
    )
    .await
    .unwrap();
    let mut monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !MonitoringServiceClient::new(monitoring.channel())
        .list_followed_distribution_points(pb::ListFollowedDistributionPointsRequest {})
        .await
        .unwrap()
        .into_inner()
        .connected
    {
        assert!(Instant::now() < deadline, "monitoring never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut request = tonic::Request::new(pb::RegisterDistributionPointRequest {
        name: "traced".to_owned(),
        kind: pb::DistributionPointKind::OnPremises.into(),
        folder_path: clouddp_e2e::store_folder(&manager, "traced"),
        address: "https://traced.example".to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_ID}-01").parse().unwrap(),
    );
    DistributionPointServiceClient::new(manager.channel())
        .register_distribution_point(request)
        .await
        .unwrap();

    // Stopping flushes the exporters.
    monitoring.terminate(Duration::from_secs(5)).unwrap();
    manager.terminate(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = collector.spans();
        let both = spans
            .iter()
            .any(|span| span.service == "clouddp-monitoring")
            && spans
                .iter()
                .any(|span| span.name.ends_with("/RegisterDistributionPoint"));
        if both || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let register = spans
        .iter()
        .find(|span| span.name.ends_with("/RegisterDistributionPoint"))
        .unwrap_or_else(|| panic!("no RegisterDistributionPoint span in {spans:#?}"));
    assert_eq!(register.service, "clouddp-distribution-manager");
    assert_eq!(
        register.trace_id, TRACE_ID,
        "the caller's traceparent must be continued"
    );
    assert_eq!(register.parent_span_id, PARENT_ID);

    let follow = spans
        .iter()
        .find(|span| {
            span.service == "clouddp-monitoring" && span.name == "follow_distribution_manager"
        })
        .unwrap_or_else(|| panic!("no follow span from monitoring in {spans:#?}"));
    let watch = spans
        .iter()
        .find(|span| {
            span.name.ends_with("/WatchDistributionPoints") && span.trace_id == follow.trace_id
        })
        .unwrap_or_else(|| {
            panic!("no WatchDistributionPoints span in monitoring's trace {follow:?}: {spans:#?}")
        });
    assert_eq!(watch.service, "clouddp-distribution-manager");
    assert_eq!(
        watch.parent_span_id, follow.span_id,
        "monitoring's span is the parent of the manager's"
    );
}
