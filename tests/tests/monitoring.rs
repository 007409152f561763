//! The monitoring service end to end: downloads from an Azurite-backed cloud DP are logged by the content
//! endpoint, pulled every second, written to `CloudDP-<ServiceName>.log`, and push the 30-day transfer past
//! warning then critical (thresholds set low); `clouddp alerts watch` sees raised → escalated, and, across a
//! restart of the monitoring service, resumes with its cursor; the window sliding (the monitoring clock moved
//! 31 days on) resolves the transfer alert; removing the content resolves the storage alert.

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clouddp_e2e::azurite::Azurite;
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::console::{self, ConsoleOutput};
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient;

fn run(manager: &ServiceProcess, monitoring: &ServiceProcess, args: &[&str]) -> ConsoleOutput {
    console::run(&manager.url(), &monitoring.url(), args).unwrap()
}

fn ok(manager: &ServiceProcess, monitoring: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), &monitoring.url(), args).unwrap()
}

/// Polls `alerts list` (20 s at most) until an alert of `kind` is there; returns it.
async fn open_alert(
    manager: &ServiceProcess,
    monitoring: &ServiceProcess,
    kind: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = ok(manager, monitoring, &["alerts", "list"]);
        if let Some(alert) = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["kind"] == kind)
        {
            return alert.clone();
        }
        assert!(Instant::now() < deadline, "no {kind} alert: {alerts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events `alerts watch` printed so far.
type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

async fn wait_for(seen: &Seen, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if check(&seen.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}: {:#?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(events: &[serde_json::Value], event: &str, kind: &str, severity: &str) -> bool {
    events.iter().any(|item| {
        item["event"] == event
            && item["alert"]["kind"] == kind
            && item["alert"]["severity"] == severity
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_storage_raise_escalate_and_resolve_alerts() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager).env(
        "CLOUDDP_DM__CONTENT_ENDPOINT__USAGE_FLUSH_INTERVAL",
        "300ms",
    ))
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let files = work.path();
    let management = self_signed("clouddp management", Validity::Current).unwrap();
    let management_pfx = management
        .write_pfx(files, "management", "pw", true)
        .unwrap();
    let service = self_signed("mon-cdp.contoso.test", Validity::Current).unwrap();
    let (service_crt, service_key) = service.write_pem(files, "service").unwrap();
    // The monitoring service also probes the DP's content endpoint, trusting its service certificate.
    let probing = |port: u16| {
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s")
            .env("CLOUDDP_MON__PULL__LOG_MAX_BYTES", "600")
            .env("CLOUDDP_MON__PULL__PROBE_CONTENT_ENDPOINTS", "true")
            .env(
                "CLOUDDP_MON__PULL__CONTENT_ENDPOINT_PORT",
                &port.to_string(),
            )
            .env(
                "CLOUDDP_MON__PULL__CONTENT_ENDPOINT_CA",
                service_crt.to_str().unwrap(),
            )
            .env(
                "CLOUDDP_MON__PULL__CONTENT_ENDPOINT_RESOLVE",
                "mon-cdp.contoso.test=127.0.0.1",
            )
    };
    let mut monitoring = ServiceProcess::start(probing(manager.content_addr().port()))
        .await
        .unwrap();

    // A cloud DP with low thresholds: transfer 1 GB (warning 1 % = 10 MB, critical 3 % = 30 MB), storage 1 GB
    // (warning 2 % = 20 MB).
    console::install_cloud_dp_with(
        &manager.url(),
        &monitoring.url(),
        &azurite,
        "mon-cdp",
        (&management_pfx, "pw"),
        (&service_crt, &service_key),
    )
    .unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "set",
            "mon-cdp",
            "--transfer-threshold-gb",
            "1",
            "--transfer-warning-percent",
            "1",
            "--transfer-critical-percent",
            "3",
            "--storage-threshold-gb",
            "1",
            "--storage-warning-percent",
            "2",
        ],
    );
    let source = files.join("source");
    write_random_file(&source.join("app.bin"), 24 << 20, 0).unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "content",
            "add",
            "--name",
            "mon-app",
            "--type",
            "application",
            "--source",
            source.to_str().unwrap(),
        ],
    );
    ok(
        &manager,
        &monitoring,
        &[
            "content",
            "distribute",
            "mon-app",
            "--dp",
            "mon-cdp",
            "--wait",
        ],
    );

    // The monitoring service reads the store with a read-and-list SAS, never the account key.
    let access =
        clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient::new(
            manager.channel(),
        )
        .get_store_access(pb::GetStoreAccessRequest {
            id: "mon-cdp".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    match access
        .credential
        .and_then(|credential| credential.credential)
    {
        Some(pb::storage_credential::Credential::SasToken(token)) => {
            assert!(
                token.contains("sp=rl") && token.contains("sr=c") && token.contains("sig="),
                "{token}"
            );
        }
        other => panic!("expected a read-only SAS, got {other:?}"),
    }

    // Follow the alert stream from the start, as an admin would.
    let seen: Seen = Arc::default();
    let mut watcher = Command::new(clouddp_e2e::bin("clouddp"))
        .args([
            "--endpoint",
            &manager.url(),
            "--monitoring-endpoint",
            &monitoring.url(),
            "alerts",
            "watch",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let stdout = watcher.stdout.take().unwrap();
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                    seen.lock().unwrap().push(value);
                }
            }
        });
    }
    wait_for(&seen, "the storage warning", |events| {
        has(events, "raised", "storage_threshold", "warning")
    })
    .await;

    // Downloads through the content endpoint.
    let deployment =
        clouddp_e2e::content::allow_cloud_and_deploy(manager.channel(), "pc-1", "mon-app")
            .await
            .unwrap();
    let answer = ContentLocationServiceClient::new(manager.channel())
        .locate_content(pb::LocateContentRequest {
            device_id: "pc-1".to_owned(),
            deployment_id: deployment.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let location = answer.locations[0].clone();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(service.cert_pem.as_bytes()).unwrap()])
        .resolve("mon-cdp.contoso.test", manager.content_addr())
        .build()
        .unwrap();
    // The device downloads with the agent: one full download (25.2 MB sealed) passes the warning (10 MB), the
    // second the critical level (30 MB).
    let agent_get = |run: usize| {
        let to = files.join(format!("got-{run}"));
        let output = Command::new(clouddp_e2e::bin("clouddp-agent"))
            .args([
                "get",
                &deployment.id,
                "--to",
                to.to_str().unwrap(),
                "--device",
                "pc-1",
                "-o",
                "json",
            ])
            .args(["--ca-cert", service_crt.to_str().unwrap()])
            .args([
                "--resolve",
                &format!(
                    "mon-cdp.contoso.test:{}:127.0.0.1",
                    manager.content_addr().port()
                ),
            ])
            .env("CLOUDDP_AGENT__ENDPOINT", manager.url())
            .env("CLOUDDP_AGENT__CACHE_DIR", files.join("agent-cache"))
            .env_remove("CLOUDDP_AGENT_CONFIG")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "agent: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["served_by"], "mon-cdp", "{report}");
        assert_eq!(
            std::fs::read(to.join("app.bin")).unwrap(),
            std::fs::read(source.join("app.bin")).unwrap()
        );
    };
    agent_get(1);
    wait_for(&seen, "the transfer warning", |events| {
        has(events, "raised", "transfer_threshold", "warning")
    })
    .await;
    assert!(
        !has(
            &seen.lock().unwrap(),
            "escalated",
            "transfer_threshold",
            "critical"
        ),
        "one download stays below critical"
    );
    agent_get(2);
    wait_for(&seen, "the transfer escalation", |events| {
        has(events, "escalated", "transfer_threshold", "critical")
    })
    .await;

    let alerts = ok(&manager, &monitoring, &["alerts", "list"]);
    let transfer = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["kind"] == "transfer_threshold")
        .unwrap()
        .clone();
    assert_eq!(transfer["severity"], "critical");
    assert_eq!(transfer["threshold_bytes"], 1_000_000_000_u64);
    assert_eq!(transfer["level_percent"], 3);
    assert!(
        transfer["measured_bytes"].as_u64().unwrap() >= 32_000_000,
        "{transfer}"
    );
    assert_eq!(transfer["window_seconds"], 30 * 86_400);
    assert!(
        transfer["message"].as_str().unwrap().contains("30 days"),
        "{transfer}"
    );
    let usage = ok(&manager, &monitoring, &["usage", "show", "mon-cdp"]);
    assert!(
        usage["transferred_bytes_30d"].as_u64().unwrap() >= 32_000_000,
        "{usage}"
    );
    assert!(
        usage["stored_bytes"].as_u64().unwrap() > 24 << 20,
        "{usage}"
    );
    let chart = run(&manager, &monitoring, &["usage", "show", "mon-cdp"]);
    assert!(
        chart.stdout.contains("transferred per day") && chart.stdout.contains('#'),
        "{chart:?}"
    );

    // Enforcement (off by default): once on, crossing critical stops the DP; downloads are refused; content stays.
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "set",
            "mon-cdp",
            "--stop-on-transfer-critical",
            "true",
        ],
    );
    wait_for(&seen, "the enforcement alert", |events| {
        events.iter().any(|event| {
            event["event"] == "raised" && event["alert"]["kind"] == "service_stopped_by_enforcement"
        })
    })
    .await;
    let stopped = ok(&manager, &monitoring, &["dp", "show", "mon-cdp"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        stopped["state_reason"]
            .as_str()
            .unwrap()
            .contains("enforcement"),
        "{stopped}"
    );
    assert_eq!(stopped["content_count"], 1, "content stays");
    clouddp_e2e::content::until_unavailable(
        &http,
        &location.url,
        &location.access_token,
        "pc-1",
        Instant::now(),
        Duration::from_secs(2),
    )
    .await;
    wait_for(&seen, "the service-not-active alert", |events| {
        has(events, "raised", "service_not_active", "warning")
    })
    .await;
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "set",
            "mon-cdp",
            "--stop-on-transfer-critical",
            "false",
        ],
    );
    ok(&manager, &monitoring, &["dp", "start", "mon-cdp"]);
    wait_for(&seen, "the service active again", |events| {
        has(events, "resolved", "service_not_active", "warning")
    })
    .await;

    // Acknowledge and postpone go through the event stream too.
    let id = transfer["id"].as_str().unwrap().to_owned();
    ok(
        &manager,
        &monitoring,
        &["alerts", "ack", &id, "--comment", "budget owner told"],
    );
    wait_for(&seen, "the acknowledgement", |events| {
        events.iter().any(|event| event["event"] == "acknowledged")
    })
    .await;
    let storage_id = ok(&manager, &monitoring, &["alerts", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|alert| alert["kind"] == "storage_threshold")
        .map(|alert| alert["id"].as_str().unwrap().to_owned())
        .unwrap();
    let postponed = ok(
        &manager,
        &monitoring,
        &["alerts", "postpone", &storage_id, "--until", "2s"],
    );
    assert_eq!(postponed["state"], "postponed");
    wait_for(&seen, "the postponed alert active again", |events| {
        events.iter().any(|event| {
            event["event"] == "reactivated" && event["alert"]["id"] == storage_id.as_str()
        })
    })
    .await;
    let postpone_past = run(
        &manager,
        &monitoring,
        &["alerts", "postpone", &id, "--until", "2001-01-01T00:00:00Z"],
    );
    assert_eq!(postpone_past.code, 1);
    assert!(
        postpone_past.stderr.contains("in the future"),
        "{postpone_past:?}"
    );

    // The window slides: 31 days later the transfers are out of it; the watcher resumes across the restart.
    monitoring.set_env("CLOUDDP_MON__PULL__CLOCK_OFFSET", "31days");
    monitoring.restart().await.unwrap();
    wait_for(&seen, "the transfer alert resolved", |events| {
        has(events, "resolved", "transfer_threshold", "critical")
    })
    .await;
    ok(
        &manager,
        &monitoring,
        &["content", "remove", "mon-app", "--dp", "mon-cdp", "--yes"],
    );
    wait_for(&seen, "the storage alert resolved", |events| {
        has(events, "resolved", "storage_threshold", "warning")
    })
    .await;

    // The CloudDP log: one line per pull with the evaluation, rotated by size (600 bytes here, 5 kept).
    let logs = monitoring.data_dir().join("logs");
    let log: String = [
        "CloudDP-mon-cdp.log.5",
        "CloudDP-mon-cdp.log.4",
        "CloudDP-mon-cdp.log.3",
        "CloudDP-mon-cdp.log.2",
        "CloudDP-mon-cdp.log.1",
        "CloudDP-mon-cdp.log",
    ]
    .iter()
    .filter_map(|name| std::fs::read_to_string(logs.join(name)).ok())
    .collect();
    assert!(
        logs.join("CloudDP-mon-cdp.log.1").exists(),
        "rotated by size"
    );
    assert!(
        std::fs::metadata(logs.join("CloudDP-mon-cdp.log"))
            .unwrap()
            .len()
            < 600 + 400
    );
    assert!(log.lines().count() >= 3, "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains("transfer=critical")
                && line.contains("transfer_threshold_gb=1")),
        "{log}"
    );

    // A content endpoint that does not answer: "service not active", critical, saying why.
    let closed_port = clouddp_e2e::free_port();
    let blind = ServiceProcess::start(probing(closed_port)).await.unwrap();
    let alert = open_alert(&manager, &blind, "service_not_active").await;
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("fails its health check"),
        "{alert}"
    );
    let healthy = ok(&manager, &monitoring, &["alerts", "list"]);
    assert!(
        !healthy
            .as_array()
            .unwrap()
            .iter()
            .any(|alert| alert["kind"] == "service_not_active"),
        "the answering endpoint raises nothing: {healthy}"
    );

    // Every event once, in order, across the reconnect.
    let sequences: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|event| event["sequence"].as_u64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "{sequences:?}"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        monitoring.unexpected_errors().is_empty(),
        "{:?}",
        monitoring.unexpected_errors()
    );
}

/// Reads the alert stream from `cursor`, reconnecting after every break, until it has seen `until` (or the
/// deadline passes); returns every sequence received, in order.
async fn subscriber(url: String, until: Arc<std::sync::atomic::AtomicU64>) -> Vec<u64> {
    use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
    let mut received = Vec::new();
    let mut cursor = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let wanted = until.load(std::sync::atomic::Ordering::SeqCst);
        if wanted > 0 && cursor >= wanted {
            break;
        }
        let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let request = pb::SubscribeAlertsRequest {
            after_sequence: cursor,
            heartbeat_seconds: 1,
            ..Default::default()
        };
        let Ok(stream) = MonitoringServiceClient::new(channel)
            .subscribe_alerts(request)
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        // A heartbeat comes every second: three silent seconds mean the stream broke.
        while let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_secs(3), stream.message()).await
        {
            if let Some(pb::alert_stream_message::Message::Event(event)) = message.message {
                received.push(event.sequence);
                cursor = event.sequence;
            }
            let wanted = until.load(std::sync::atomic::Ordering::SeqCst);
            if wanted > 0 && cursor >= wanted {
                return received;
            }
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_subscriber_sees_every_event_once_across_ten_kills() {
    use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;
    let mut azurite = Azurite::start().await.unwrap();
    let (manager, mut monitoring) = {
        let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
            .await
            .unwrap();
        let monitoring = ServiceProcess::start(
            ServiceSpec::new(ServiceKind::Monitoring)
                .args(["--distribution-manager", &manager.url()])
                .env("CLOUDDP_MON__PULL__INTERVAL", "1s")
                .env("CLOUDDP_MON__PULL__ALERT_AFTER", "1s"),
        )
        .await
        .unwrap();
        (manager, monitoring)
    };
    console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "burst-cdp").unwrap();
    // The store goes away: the pull raises a subscription alert.
    azurite.stop();
    let alert = open_alert(&manager, &monitoring, "subscription").await;
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("cannot read the usage"),
        "{alert}"
    );
    let alert_id = alert["id"].as_str().unwrap().to_owned();

    let until = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = tokio::spawn(subscriber(monitoring.url(), until.clone()));
    // A burst of 1,000 events (acknowledgements), with the monitoring service killed -9 ten times during it.
    let mut acknowledged = 0;
    let mut kills = 0;
    while acknowledged < 1000 {
        if acknowledged % 100 == 50 && kills < 10 {
            monitoring.kill9();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            monitoring.restart().await.unwrap();
        }
        let Ok(channel) = tonic::transport::Endpoint::from_shared(monitoring.url())
            .unwrap()
            .connect()
            .await
        else {
            continue;
        };
        let outcome = MonitoringServiceClient::new(channel)
            .acknowledge_alert(pb::AcknowledgeAlertRequest {
                id: alert_id.clone(),
                comment: format!("ack {acknowledged}"),
            })
            .await;
        if outcome.is_ok() {
            acknowledged += 1;
        }
    }
    assert_eq!(kills, 10);
    // The newest sequence, from a heartbeat of a stream that matches no DP: the subscriber must reach it.
    let newest = {
        let channel = monitoring.channel();
        let mut stream = MonitoringServiceClient::new(channel)
            .subscribe_alerts(pb::SubscribeAlertsRequest {
                distribution_point_ids: vec!["no-such-dp".to_owned()],
                heartbeat_seconds: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            if let Some(pb::alert_stream_message::Message::Heartbeat(beat)) =
                stream.message().await.unwrap().unwrap().message
            {
                break beat.latest_sequence;
            }
        }
    };
    until.store(newest, std::sync::atomic::Ordering::SeqCst);
    let received = reader.await.unwrap();
    assert!(
        newest >= 1001,
        "1,000 acknowledgements after the raise: {newest}"
    );
    let expected: Vec<u64> = (1..=newest).collect();
    assert_eq!(
        received.len(),
        expected.len(),
        "every sequence exactly once"
    );
    assert_eq!(received, expected, "in order, none skipped, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_of_a_deleted_dp_are_resolved() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s"),
    )
    .await
    .unwrap();
    console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "gone-cdp").unwrap();
    ok(
        &manager,
        &monitoring,
        &["dp", "stop", "gone-cdp", "--reason", "maintenance"],
    );
    let alert = open_alert(&manager, &monitoring, "service_not_active").await;
    assert!(
        alert["message"].as_str().unwrap().contains("maintenance"),
        "{alert}"
    );
    let id = alert["id"].as_str().unwrap().to_owned();
    ok(
        &manager,
        &monitoring,
        &["dp", "delete", "gone-cdp", "--yes"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alert = ok(&manager, &monitoring, &["alerts", "show", &id]);
        if alert["state"] == "resolved" {
            assert!(
                alert["message"]
                    .as_str()
                    .unwrap()
                    .contains("no longer a distribution point"),
                "{alert}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still open after the delete: {alert}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok(&manager, &monitoring, &["alerts", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_dp_installed_with_a_sas_is_read_through_the_manager_and_its_sas_never_handed_on() {
    use clouddp_platform::store::{
        AzureCredential, AzureStore, AzureStoreConfig, BlobStore as _, container_sas, emulator_key,
    };
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s"),
    )
    .await
    .unwrap();
    // The storage admin made the container and gave the installer a read-write-delete SAS for it.
    AzureStore::new(AzureStoreConfig {
        account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
        container: "sas-cdp".to_owned(),
        endpoint: azurite.blob_endpoint(),
        credential: AzureCredential::Emulator,
    })
    .unwrap()
    .ensure_container()
    .await
    .unwrap();
    let sas = container_sas(
        clouddp_e2e::azurite::ACCOUNT,
        "sas-cdp",
        emulator_key(),
        "racwdl",
        std::time::SystemTime::now() + Duration::from_secs(3600),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let management = self_signed("clouddp management", Validity::Current).unwrap();
    let management_pfx = management
        .write_pfx(work.path(), "management", "pw", true)
        .unwrap();
    let service = self_signed("sas-cdp.contoso.test", Validity::Current).unwrap();
    let (service_crt, service_key) = service.write_pem(work.path(), "service").unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "install",
            "--service-name",
            "sas-cdp",
            "--subscription",
            console::TEST_SUBSCRIPTION,
            "--region",
            "westeurope",
            "--account",
            clouddp_e2e::azurite::ACCOUNT,
            "--blob-endpoint",
            &azurite.blob_endpoint(),
            "--sas-token",
            &sas,
            "--management-cert",
            management_pfx.to_str().unwrap(),
            "--management-password",
            "pw",
            "--service-cert",
            service_crt.to_str().unwrap(),
            "--service-key",
            service_key.to_str().unwrap(),
        ],
    );
    let source = work.path().join("source");
    write_random_file(&source.join("app.bin"), 3 << 20, 0).unwrap();
    ok(
        &manager,
        &monitoring,
        &[
            "content",
            "add",
            "--name",
            "sas-app",
            "--type",
            "application",
            "--source",
            source.to_str().unwrap(),
        ],
    );
    ok(
        &manager,
        &monitoring,
        &[
            "content",
            "distribute",
            "sas-app",
            "--dp",
            "sas-cdp",
            "--wait",
        ],
    );

    // No credential is handed on: the installer's SAS can write and delete.
    let access = pb::distribution_point_service_client::DistributionPointServiceClient::new(
        manager.channel(),
    )
    .get_store_access(pb::GetStoreAccessRequest {
        id: "sas-cdp".to_owned(),
    })
    .await
    .unwrap()
    .into_inner();
    assert!(access.credential.is_none(), "{access:?}");
    let mut dps = pb::distribution_point_service_client::DistributionPointServiceClient::new(
        manager.channel(),
    );
    let refused = dps
        .read_store_object(pb::ReadStoreObjectRequest {
            id: "sas-cdp".to_owned(),
            path: "content/x".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // Monitoring measures the store through the manager.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let usage =
            pb::monitoring_service_client::MonitoringServiceClient::new(monitoring.channel())
                .get_usage(pb::GetUsageRequest {
                    distribution_point_id: "sas-cdp".to_owned(),
                    ..Default::default()
                })
                .await;
        if let Ok(usage) = &usage
            && usage.get_ref().stored_bytes >= 3 << 20
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "monitoring never measured the store: {usage:?}\n{}",
            monitoring.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The DP can be deleted: the SAS cannot delete the container, so what clouddp wrote there goes.
    let deleted = run(&manager, &monitoring, &["dp", "delete", "sas-cdp", "--yes"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    let admin_store = AzureStore::new(AzureStoreConfig {
        account: clouddp_e2e::azurite::ACCOUNT.to_owned(),
        container: "sas-cdp".to_owned(),
        endpoint: azurite.blob_endpoint(),
        credential: AzureCredential::Emulator,
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !admin_store.list("content/").await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the content stayed after the delete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
