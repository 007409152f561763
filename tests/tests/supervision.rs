//! Supervision of every background loop of both services, over the real binaries with failure injection points
//! (`FAILPOINTS`, compiled into the test builds only). A loop that panics or fails is logged at ERROR with its
//! cause and started again with backoff; while it cannot run, its service answers NOT_SERVING and the
//! monitoring service raises a `service_health` alert, resolved when the loop runs again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;

/// The alert events seen so far.
type Events = Arc<Mutex<Vec<pb::AlertEvent>>>;

/// Follows `monitoring`'s alert stream (service health only) from the start, into the returned list.
fn follow_alerts(monitoring: &ServiceProcess) -> Events {
    let events: Events = Arc::default();
    let seen = events.clone();
    let channel = monitoring.channel();
    tokio::spawn(async move {
        let mut cursor = 0;
        loop {
            let request = pb::SubscribeAlertsRequest {
                after_sequence: cursor,
                kinds: vec![pb::AlertKind::ServiceHealth.into()],
                heartbeat_seconds: 1,
                ..Default::default()
            };
            if let Ok(stream) = MonitoringServiceClient::new(channel.clone())
                .subscribe_alerts(request)
                .await
            {
                let mut stream = stream.into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    if let Some(pb::alert_stream_message::Message::Event(event)) = message.message {
                        cursor = event.sequence;
                        seen.lock().unwrap().push(event);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    events
}

/// Waits until `service`'s health answers `serving` (30 s at most).
async fn until_health(service: &ServiceProcess, serving: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.health().await.ok() != Some(serving) {
        assert!(
            Instant::now() < deadline,
            "{what}: health never turned {}\n{}",
            if serving { "SERVING" } else { "NOT_SERVING" },
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until an event of `event_type` for the service `service` is in `events` (40 s at most); returns it.
async fn until_event(
    events: &Events,
    event_type: pb::AlertEventType,
    service: &str,
) -> pb::AlertEvent {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let found = events
            .lock()
            .unwrap()
            .iter()
            .find(|event| {
                event.r#type() == event_type
                    && event
                        .alert
                        .as_ref()
                        .is_some_and(|alert| alert.distribution_point_name == service)
            })
            .cloned();
        if let Some(event) = found {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no {event_type:?} event for {service}: {:#?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The log lines of `service` saying loop `task` failed.
fn failure_lines(service: &ServiceProcess, task: &str) -> Vec<String> {
    service
        .log()
        .lines()
        .filter(|line| {
            line.contains(" ERROR ")
                && line.contains("a background loop failed")
                && line.contains(&format!("task=\"{task}\""))
        })
        .map(str::to_owned)
        .collect()
}

fn injected(kind: ServiceKind, failpoints: &str) -> ServiceSpec {
    ServiceSpec::new(kind)
        .env("FAILPOINTS", failpoints)
        .allow_error("a background loop failed")
        .allow_error("panicked at")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_monitoring_loop_that_fails_is_restarted_reported_and_alerted() {
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    for (task, action, cause) in [
        ("pull", "3*panic", "panicked"),
        ("follower", "3*panic", "panicked"),
        (
            "wake",
            "3*return",
            "injected failure of the alert reactivation",
        ),
        (
            "health",
            "2*return",
            "injected failure of the health alerts",
        ),
    ] {
        let monitoring = ServiceProcess::start_unready(
            injected(ServiceKind::Monitoring, &format!("{task}={action}"))
                .args(["--distribution-manager", &manager.url()])
                .env("CLOUDDP_MON__PULL__INTERVAL", "1s"),
        )
        .await
        .unwrap();
        let events = follow_alerts(&monitoring);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !monitoring.log().contains("a background loop runs again") {
            assert!(Instant::now() < deadline, "{task}: {}", monitoring.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lines = failure_lines(&monitoring, task);
        let count: usize = action[..1].parse().unwrap();
        assert_eq!(lines.len(), count, "{task}: {}", monitoring.log());
        assert!(lines[0].contains(cause), "{task}: {lines:?}");
        until_health(&monitoring, true, task).await;
        if task != "health" {
            // Raised while it was down, naming the loop and why; resolved once it ran again.
            let raised =
                until_event(&events, pb::AlertEventType::Raised, "clouddp-monitoring").await;
            let alert = raised.alert.unwrap();
            assert_eq!(alert.severity(), pb::AlertSeverity::Critical);
            assert!(
                alert.message.contains(task) && alert.message.contains(cause),
                "{alert:?}"
            );
            until_event(&events, pb::AlertEventType::Resolved, "clouddp-monitoring").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitoring_loop_that_keeps_failing_keeps_health_not_serving() {
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    // The pull fails for about 7.5 s (0.5 + 1 + 2 + 4 s of backoff): NOT_SERVING is seen meanwhile.
    let spec = injected(ServiceKind::Monitoring, "pull=5*panic")
        .args(["--distribution-manager", &manager.url()])
        .env("CLOUDDP_MON__PULL__INTERVAL", "1s");
    let monitoring = ServiceProcess::start_unready(spec).await.unwrap();
    until_health(&monitoring, false, "pull failing").await;
    until_health(&monitoring, true, "pull running again").await;
    assert!(
        failure_lines(&monitoring, "pull").len() >= 5,
        "{}",
        monitoring.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_distribution_manager_loop_that_fails_is_restarted_and_alerted_by_monitoring() {
    // The distribution workers fail for about 15 s: monitoring sees NOT_SERVING on two checks in a row.
    let manager = ServiceProcess::start_unready(injected(
        ServiceKind::DistributionManager,
        "distribution=5*return",
    ))
    .await
    .unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring).args(["--distribution-manager", &manager.url()]),
    )
    .await
    .unwrap();
    let events = follow_alerts(&monitoring);
    until_health(&manager, false, "distribution failing").await;
    let raised = until_event(
        &events,
        pb::AlertEventType::Raised,
        "clouddp-distribution-manager",
    )
    .await;
    assert!(
        raised.alert.unwrap().message.contains("NOT_SERVING"),
        "the alert says what the manager reports"
    );
    until_health(&manager, true, "distribution running again").await;
    until_event(
        &events,
        pb::AlertEventType::Resolved,
        "clouddp-distribution-manager",
    )
    .await;
    let lines = failure_lines(&manager, "distribution");
    assert!(lines.len() >= 5, "{}", manager.log());
    assert!(
        lines[0].contains("injected failure of the distribution workers"),
        "{lines:?}"
    );

    let refreshing = ServiceProcess::start_unready(injected(
        ServiceKind::DistributionManager,
        "endpoint-refresh=4*panic",
    ))
    .await
    .unwrap();
    until_health(&refreshing, false, "endpoint refresh failing").await;
    until_health(&refreshing, true, "endpoint refresh running again").await;
    let lines = failure_lines(&refreshing, "endpoint-refresh");
    assert!(
        lines.len() >= 4 && lines[0].contains("panicked"),
        "{}",
        refreshing.log()
    );
}
