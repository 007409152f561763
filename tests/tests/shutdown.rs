//! SIGTERM with open streams: health turns NOT_SERVING, streams end, the process exits within 2 s.

use std::time::Duration;

use clouddp_proto::v1::WatchDistributionPointsRequest;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn sigterm_with_open_streams_exits_within_two_seconds() {
    let (mut manager, mut monitoring) = clouddp_e2e::start_both().await.unwrap();

    let mut watch = DistributionPointServiceClient::new(manager.channel())
        .watch_distribution_points(WatchDistributionPointsRequest {
            skip_snapshot: false,
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().expect("snapshot marker");
    assert!(first.snapshot, "{first:?}");

    let mut health = HealthClient::new(manager.channel())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let serving = health.message().await.unwrap().expect("initial health");
    assert_eq!(serving.status(), ServingStatus::Serving);

    let (elapsed, status) = manager.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?} to exit");

    let mut saw_not_serving = false;
    while let Ok(Ok(Some(update))) =
        tokio::time::timeout(Duration::from_secs(2), health.message()).await
    {
        saw_not_serving |= update.status() == ServingStatus::NotServing;
    }
    assert!(
        saw_not_serving,
        "health must turn NOT_SERVING before the process goes"
    );

    let ended = tokio::time::timeout(Duration::from_secs(2), watch.message()).await;
    assert!(
        matches!(ended, Ok(Ok(None)) | Ok(Err(_))),
        "the watch stream must end with the server: {ended:?}"
    );

    let (elapsed, status) = monitoring.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        elapsed < Duration::from_secs(2),
        "monitoring took {elapsed:?} to exit"
    );
    assert!(
        monitoring
            .log()
            .contains("stopped following the distribution manager")
    );
}
