//! What a new admin meets first, with the defaults: a cloud DP on Azurite at the default thresholds, one
//! ordinary download, then the monitoring clock moved an hour, a day and 31 days on. Monitoring keeps pulling
//! and alerting, nothing panics, and no ERROR is logged; a postponement far in the future is refused, and the
//! console piped into a reader that stops early ends quietly.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clouddp_e2e::azurite::Azurite;
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::console;
use clouddp_e2e::content::write_random_file;
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient;

fn ok(manager: &ServiceProcess, monitoring: &ServiceProcess, args: &[&str]) -> serde_json::Value {
    console::json(&manager.url(), &monitoring.url(), args).unwrap()
}

/// Waits (30 s at most) until monitoring has pulled `dp` at a time of its clock at or after `since_ms`.
async fn pulled_since(
    manager: &ServiceProcess,
    monitoring: &ServiceProcess,
    dp: &str,
    since_ms: i64,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let usage = ok(manager, monitoring, &["usage", "show", dp]);
        let last = usage["last_pull_time"].as_str().unwrap_or_default();
        if let Ok(time) = humantime::parse_rfc3339(last) {
            let ms = time
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            if ms >= since_ms {
                return usage;
            }
        }
        assert!(
            Instant::now() < deadline,
            "monitoring stopped pulling {dp}: {usage}\n{}",
            monitoring.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registers the application in `source` as `name` and distributes it to `walk-cdp`, waiting until it is there.
fn add_and_distribute(
    manager: &ServiceProcess,
    monitoring: &ServiceProcess,
    name: &str,
    source: &std::path::Path,
) {
    let source = source.to_str().unwrap();
    ok(
        manager,
        monitoring,
        &[
            "content",
            "add",
            "--name",
            name,
            "--type",
            "application",
            "--source",
            source,
        ],
    );
    ok(
        manager,
        monitoring,
        &["content", "distribute", name, "--dp", "walk-cdp", "--wait"],
    );
}

/// Now, in ms since the epoch, `offset` ahead.
fn now_plus(offset: Duration) -> i64 {
    (std::time::SystemTime::now() + offset)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_walkthrough_keeps_monitoring_pulling_and_alerting() {
    let azurite = Azurite::start().await.unwrap();
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager).env(
        "CLOUDDP_DM__CONTENT_ENDPOINT__USAGE_FLUSH_INTERVAL",
        "300ms",
    ))
    .await
    .unwrap();
    let mut monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s"),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let files = work.path();
    let management = self_signed("clouddp management", Validity::Current).unwrap();
    let management_pfx = management
        .write_pfx(files, "management", "pw", true)
        .unwrap();
    let service = self_signed("walk-cdp.contoso.test", Validity::Current).unwrap();
    let (service_crt, service_key) = service.write_pem(files, "service").unwrap();
    // The defaults: no threshold is set.
    console::install_cloud_dp_with(
        &manager.url(),
        &monitoring.url(),
        &azurite,
        "walk-cdp",
        (&management_pfx, "pw"),
        (&service_crt, &service_key),
    )
    .unwrap();
    let source = files.join("source");
    // 8 MB: at the default thresholds its 7-day rate puts the next level some 12,000 years away.
    write_random_file(&source.join("app.bin"), 8_000_000, 7).unwrap();
    add_and_distribute(&manager, &monitoring, "walk-app", &source);
    let deployment =
        clouddp_e2e::content::allow_cloud_and_deploy(manager.channel(), "pc-1", "walk-app")
            .await
            .unwrap();

    // One ordinary download.
    let to = files.join("got");
    let output = Command::new(clouddp_e2e::bin("clouddp-agent"))
        .args(["get", &deployment.id, "--to", to.to_str().unwrap()])
        .args(["--device", "pc-1", "-o", "json"])
        .args(["--ca-cert", service_crt.to_str().unwrap()])
        .args([
            "--resolve",
            &format!(
                "walk-cdp.contoso.test:{}:127.0.0.1",
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

    // The download is pulled and evaluated at the default thresholds (the forecast is millennia away).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let usage = ok(&manager, &monitoring, &["usage", "show", "walk-cdp"]);
        if usage["transferred_bytes_30d"].as_u64().unwrap_or(0) >= 8_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the download was never pulled: {usage}\n{}",
            monitoring.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pulled_since(&manager, &monitoring, "walk-cdp", now_plus(Duration::ZERO)).await;

    // The monitoring clock an hour, a day and 31 days on: it goes on pulling every time.
    for (offset, text) in [
        (Duration::from_secs(3600), "1h"),
        (Duration::from_secs(86_400), "1day"),
        (Duration::from_secs(31 * 86_400), "31days"),
    ] {
        monitoring.set_env("CLOUDDP_MON__PULL__CLOCK_OFFSET", text);
        monitoring.restart().await.unwrap();
        let usage = pulled_since(&manager, &monitoring, "walk-cdp", now_plus(offset)).await;
        assert!(monitoring.health().await.unwrap(), "health after {text}");
        if text == "31days" {
            assert_eq!(
                usage["transferred_bytes_30d"], 0,
                "the window slid: {usage}"
            );
        }
    }

    // And it still alerts: with a second content stored, a storage threshold of 1 GB warning at 1 % (10 MB) is
    // crossed.
    let second = files.join("second");
    write_random_file(&second.join("app.bin"), 8_000_000, 8).unwrap();
    add_and_distribute(&manager, &monitoring, "walk-second", &second);
    ok(
        &manager,
        &monitoring,
        &[
            "dp",
            "set",
            "walk-cdp",
            "--storage-threshold-gb",
            "1",
            "--storage-warning-percent",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let alerts = ok(&manager, &monitoring, &["alerts", "list"]);
        if let Some(alert) = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["kind"] == "storage_threshold")
        {
            break alert.clone();
        }
        assert!(Instant::now() < deadline, "no storage alert: {alerts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = alert["id"].as_str().unwrap().to_owned();
    // As the reference words it: the remaining free space of the threshold.
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("GB of the threshold free"),
        "{alert}"
    );

    // A postponement to year 292,278,994 is refused, and the alert stays as it was.
    let absurd = console::run(
        &manager.url(),
        &monitoring.url(),
        &[
            "alerts",
            "postpone",
            &id,
            "--until",
            "292278994-08-17T07:12:55Z",
        ],
    )
    .unwrap();
    assert_ne!(absurd.code, 0, "{absurd:?}");
    assert!(!absurd.stderr.contains("panicked"), "{absurd:?}");
    let far = console::run(
        &manager.url(),
        &monitoring.url(),
        &["alerts", "postpone", &id, "--until", "400days"],
    )
    .unwrap();
    assert_eq!(far.code, 1, "{far:?}");
    assert!(far.stderr.contains("365 days"), "{far:?}");
    ok(
        &manager,
        &monitoring,
        &["alerts", "postpone", &id, "--until", "300days"],
    );
    let shown = console::run(&manager.url(), &monitoring.url(), &["alerts", "show", &id]).unwrap();
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("postponed"), "{shown:?}");

    // The console writing into a pipe whose reader is gone (`| head` that stopped) ends quietly with 0.
    let mut piped = Command::new(clouddp_e2e::bin("clouddp"))
        .args(["--endpoint", &manager.url()])
        .args(["--monitoring-endpoint", &monitoring.url()])
        .args(["alerts", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let status = piped.wait().unwrap();
    let mut stderr = String::new();
    piped
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");

    assert!(
        monitoring.unexpected_errors().is_empty(),
        "{:?}",
        monitoring.unexpected_errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_alert_needs_a_failure_that_lasts() {
    let mut azurite = Azurite::start().await.unwrap();
    let mut manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s")
            .env("CLOUDDP_MON__PULL__ALERT_AFTER", "4s"),
    )
    .await
    .unwrap();
    console::install_cloud_dp(&manager.url(), &monitoring.url(), &azurite, "evidence-cdp").unwrap();
    let subscription_alerts = |monitoring: &ServiceProcess, manager: &ServiceProcess| {
        console::json(
            &manager.url(),
            &monitoring.url(),
            &["alerts", "list", "--all"],
        )
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["kind"] == "subscription")
        .cloned()
        .collect::<Vec<_>>()
    };
    // Restarts of the distribution manager: reads fail for a moment, no alert.
    for _ in 0..3 {
        manager.restart().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let raised = subscription_alerts(&monitoring, &manager);
    assert!(raised.is_empty(), "a restart raised {raised:?}");

    // The store goes away for good: the alert comes once the failure lasted 4 s, and says since when.
    let stopped = Instant::now();
    azurite.stop();
    let alert = loop {
        if let Some(alert) = subscription_alerts(&monitoring, &manager).pop() {
            break alert;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "no subscription alert"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        stopped.elapsed() >= Duration::from_secs(4),
        "raised after {:?}",
        stopped.elapsed()
    );
    assert!(
        alert["message"].as_str().unwrap().contains(" since "),
        "{alert}"
    );
    azurite.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscription_alerts(&monitoring, &manager)
        .iter()
        .any(|alert| alert["state"] != "resolved")
    {
        assert!(Instant::now() < deadline, "never resolved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_settings_take_the_documented_100000_devices_quickly() {
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager))
        .await
        .unwrap();
    let devices: Vec<String> = (0..100_000)
        .map(|index| format!("PC-{index:06}.corp.contoso.com"))
        .collect();
    let mut policy = ClientPolicyServiceClient::new(manager.channel())
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    // Another writer meanwhile (boundary groups, in the same database): how long its writes wait shows how long
    // the save blocks them.
    let writer = {
        let mut other = ClientPolicyServiceClient::new(manager.channel());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for index in 0..40 {
                let started = Instant::now();
                other
                    .create_boundary_group(pb::CreateBoundaryGroupRequest {
                        boundary_group: Some(pb::BoundaryGroup {
                            name: format!("site-{index}"),
                            subnets: vec![format!("10.{index}.0.0/16")],
                            ..Default::default()
                        }),
                    })
                    .await
                    .unwrap();
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            slowest
        })
    };
    let started = Instant::now();
    let saved = policy
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Everyone".to_owned(),
                priority: 1,
                allow_cloud_distribution_points_for_devices: true,
                device_ids: devices.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    let slowest_other = writer.await.unwrap();
    eprintln!(
        "100,000 device ids saved in {took:?}; the slowest other write took {slowest_other:?}"
    );
    let saved_line = manager
        .log()
        .lines()
        .find(|line| line.contains("assignments=100000"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("{saved_line}");
    // Written a chunk per transaction: the save never holds the write lock for 100 ms.
    let longest_lock_ms: u64 = saved_line
        .split("longest_lock_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("the save logs how long it held the lock");
    assert!(
        longest_lock_ms < 100,
        "held the write lock {longest_lock_ms} ms"
    );
    // End to end another write also waits for the CPU the save uses (2 cores, a debug build): a looser bound.
    assert!(
        slowest_other < Duration::from_millis(500),
        "another write waited {slowest_other:?}"
    );
    assert_eq!(saved.device_ids.len(), 100_000);
    assert!(took < Duration::from_secs(3), "saving took {took:?}");
    // One more than the documented maximum is refused before any work.
    let mut too_many = devices;
    too_many.push("one-more".to_owned());
    let refused = policy
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Too many".to_owned(),
                priority: 2,
                device_ids: too_many,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("100,000"), "{refused:?}");
}
