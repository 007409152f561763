//! `bench-monitoring`: the monitoring service's own figures.
//!
//! 1. Transfer → alert: with a 1 s pull interval, the time from a download finishing at the content endpoint to
//!    its alert reaching a subscriber (median of `N`).
//! 2. Fan-out: one alert delivered to `SUBSCRIBERS` (10,000) subscribers of `SubscribeAlerts` over 100
//!    connections: time to the last delivery, and the monitoring service's memory per subscriber.
//! 3. Evaluation: the 30-day window and both thresholds of 10,000 DPs × 720 hourly samples.
//!
//! Run it with `./tests/bench-monitoring` (release binaries). Environment: `N` (5), `SUBSCRIBERS` (10000).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clouddp_core::dp::Thresholds;
use clouddp_core::usage::{self, HOUR_MS, Limit};
use clouddp_e2e::azurite::{ACCOUNT, Azurite};
use clouddp_e2e::bench::{env_or, median};
use clouddp_e2e::certs::{Validity, self_signed};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::client_policy_service_client::ClientPolicyServiceClient;
use clouddp_proto::v1::content_location_service_client::ContentLocationServiceClient;
use clouddp_proto::v1::monitoring_service_client::MonitoringServiceClient;

fn console(manager: &ServiceProcess, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    clouddp_e2e::console::json(&manager.url(), clouddp_e2e::console::NO_MONITORING, args)
}

/// The newest alert event sequence, from a heartbeat.
async fn latest_sequence(monitoring: &ServiceProcess) -> anyhow::Result<u64> {
    let mut stream = MonitoringServiceClient::new(monitoring.channel())
        .subscribe_alerts(pb::SubscribeAlertsRequest {
            after_sequence: u64::MAX / 2,
            heartbeat_seconds: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    loop {
        let message = stream.message().await?.context("stream ended")?;
        if let Some(pb::alert_stream_message::Message::Heartbeat(beat)) = message.message {
            return Ok(beat.latest_sequence);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = env_or("N", "5").parse()?;
    let subscribers: usize = env_or("SUBSCRIBERS", "10000").parse()?;

    // 3. Evaluation, pure: 10,000 DPs × 720 hourly samples.
    let now = 720 * HOUR_MS;
    let samples: Vec<Vec<(i64, u64)>> = (0..10_000_u64)
        .map(|dp| {
            (0..720_i64)
                .map(|hour| {
                    (
                        hour * HOUR_MS,
                        (dp * 7919 + hour as u64 * 104_729) % 50_000_000,
                    )
                })
                .collect()
        })
        .collect();
    let limit = Limit::transfer(&Thresholds::default());
    let storage = Limit::storage(&Thresholds::default());
    let started = Instant::now();
    let mut levels = 0_usize;
    for series in &samples {
        let total = usage::window_total(series, now);
        let rate = usage::seven_day_rate(series, now);
        levels += limit.level(total) as usize + storage.level(total) as usize;
        std::hint::black_box(usage::forecast(
            total,
            limit.level_bytes(usage::Level::Warning),
            rate,
            now,
        ));
    }
    let evaluation = started.elapsed();
    println!(
        "evaluate 10,000 DPs x 720 hourly samples (window, 7-day rate, forecast, both levels): {:.1} ms ({levels})",
        evaluation.as_secs_f64() * 1000.0
    );

    // A site with one cloud DP whose transfer warning is 10 MB.
    let azurite = Azurite::start().await?;
    let work = tempfile::tempdir()?;
    let manager = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::DistributionManager)
            .env(
                "CLOUDDP_DM__CONTENT_ENDPOINT__USAGE_FLUSH_INTERVAL",
                "100ms",
            )
            .env("RUST_LOG", "warn"),
    )
    .await?;
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring)
            .args(["--distribution-manager", &manager.url()])
            .env("CLOUDDP_MON__PULL__INTERVAL", "1s")
            .env("RUST_LOG", "warn"),
    )
    .await?;
    let management = self_signed("bench management", Validity::Current)?;
    let management_pfx = management.write_pfx(work.path(), "management", "pw", true)?;
    let service = self_signed("bench-cdp.contoso.test", Validity::Current)?;
    let (service_crt, service_key) = service.write_pem(work.path(), "service")?;
    let endpoint = azurite.blob_endpoint();
    console(
        &manager,
        &[
            "dp",
            "install",
            "--service-name",
            "bench-cdp",
            "--subscription",
            clouddp_e2e::console::TEST_SUBSCRIPTION,
            "--region",
            "westeurope",
            "--account",
            ACCOUNT,
            "--blob-endpoint",
            &endpoint,
            "--emulator",
            "--management-cert",
            &management_pfx.display().to_string(),
            "--management-password",
            "pw",
            "--service-cert",
            &service_crt.display().to_string(),
            "--service-key",
            &service_key.display().to_string(),
        ],
    )?;
    console(
        &manager,
        &[
            "dp",
            "set",
            "bench-cdp",
            "--transfer-warning-percent",
            "1",
            "--transfer-critical-percent",
            "90",
            "--storage-alerts",
            "false",
        ],
    )?;
    let source = work.path().join("source");
    clouddp_e2e::content::write_random_file(&source.join("app.bin"), 16 << 20, 0)?;
    console(
        &manager,
        &[
            "content",
            "add",
            "--name",
            "bench-app",
            "--type",
            "application",
            "--source",
            &source.display().to_string(),
        ],
    )?;
    console(
        &manager,
        &[
            "content",
            "distribute",
            "bench-app",
            "--dp",
            "bench-cdp",
            "--wait",
        ],
    )?;
    let mut policy = ClientPolicyServiceClient::new(manager.channel());
    policy
        .create_client_settings(pb::CreateClientSettingsRequest {
            settings: Some(pb::ClientSettings {
                name: "Cloud".to_owned(),
                priority: 1,
                allow_cloud_distribution_points_for_devices: true,
                device_ids: vec!["pc-1".to_owned()],
                ..Default::default()
            }),
        })
        .await?;
    let deployment = policy
        .create_deployment(pb::CreateDeploymentRequest {
            deployment: Some(pb::Deployment {
                content_id: "bench-app".to_owned(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let answer = ContentLocationServiceClient::new(manager.channel())
        .locate_content(pb::LocateContentRequest {
            device_id: "pc-1".to_owned(),
            deployment_id: deployment.id,
            ..Default::default()
        })
        .await?
        .into_inner();
    let location = answer.locations.first().context("no location")?.clone();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(service.cert_pem.as_bytes())?])
        .resolve("bench-cdp.contoso.test", manager.content_addr())
        .build()?;

    // 1. Transfer → alert at a subscriber. Run k sets the transfer threshold to k GB (warning at 1 % = 10k MB):
    //    the previous runs' transfers are below it, so the open alert resolves at the next pull, and a download
    //    of just over the difference raises it again.
    let mut latencies = Vec::new();
    for run in 0..runs {
        let gb = 1 + run as u64;
        console(
            &manager,
            &[
                "dp",
                "set",
                "bench-cdp",
                "--transfer-threshold-gb",
                &gb.to_string(),
            ],
        )?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let after = latest_sequence(&monitoring).await?;
        let mut stream = MonitoringServiceClient::new(monitoring.channel())
            .subscribe_alerts(pb::SubscribeAlertsRequest {
                after_sequence: after,
                heartbeat_seconds: 30,
                ..Default::default()
            })
            .await?
            .into_inner();
        // Enough bytes to cross 1 % of the threshold over what was transferred before.
        let usage = MonitoringServiceClient::new(monitoring.channel())
            .get_usage(pb::GetUsageRequest {
                distribution_point_id: "bench-cdp".to_owned(),
                days: 30,
            })
            .await?
            .into_inner();
        let warning = gb * 1_000_000_000 / 100;
        let mut needed = warning.saturating_sub(usage.transferred_bytes_30d) + 1;
        let sealed = answer
            .manifest
            .as_ref()
            .map(|manifest| manifest.sealed_length)
            .unwrap_or(0);
        while needed > 0 {
            let take = needed.min(sealed);
            let response = clouddp_e2e::content::ranged_get(
                &http,
                &location.url,
                &location.access_token,
                "pc-1",
                &format!("bytes=0-{}", take - 1),
            )
            .await?;
            response.bytes().await?;
            needed -= take;
        }
        let finished = Instant::now();
        // The stream starts with a heartbeat-free catch-up of nothing; wait for the raise.
        let latency = loop {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await??
                .context("stream ended")?;
            if let Some(pb::alert_stream_message::Message::Event(event)) = message.message
                && event.r#type() == pb::AlertEventType::Raised
                && event
                    .alert
                    .as_ref()
                    .is_some_and(|alert| alert.kind() == pb::AlertKind::TransferThreshold)
            {
                break finished.elapsed();
            }
        };
        latencies.push(latency.as_secs_f64());
    }
    let transfer_to_alert = median(&mut latencies);
    println!(
        "transfer -> alert at a subscriber (1 s pull, 100 ms usage flush), n={runs}: median {transfer_to_alert:.2} s {latencies:.2?}"
    );

    // 2. Fan-out to many subscribers.
    let pid = monitoring.pid().unwrap_or_default();
    let rss_before = clouddp_e2e::bench::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let connections: Vec<tonic::transport::Channel> = (0..100)
        .map(|_| {
            tonic::transport::Endpoint::from_shared(monitoring.url())
                .map(|endpoint| endpoint.connect_lazy())
        })
        .collect::<Result<_, _>>()?;
    let after = latest_sequence(&monitoring).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel::<(Instant, f64)>();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..subscribers {
        let channel = connections[index % connections.len()].clone();
        let (ready, delivered, done_sender) =
            (ready.clone(), delivered.clone(), done_sender.clone());
        tasks.spawn(async move {
            let mut stream = MonitoringServiceClient::new(channel)
                .subscribe_alerts(pb::SubscribeAlertsRequest {
                    after_sequence: after,
                    heartbeat_seconds: 300,
                    ..Default::default()
                })
                .await?
                .into_inner();
            ready.fetch_add(1, Ordering::SeqCst);
            while let Some(message) = stream.message().await? {
                if let Some(pb::alert_stream_message::Message::Event(event)) = message.message {
                    delivered.fetch_add(1, Ordering::SeqCst);
                    // How long after the event was committed it arrived here.
                    let committed = event
                        .time
                        .map(|time| time.seconds as f64 + f64::from(time.nanos) / 1e9)
                        .unwrap_or(0.0);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    let _ = done_sender.send((Instant::now(), now - committed));
                    break;
                }
            }
            anyhow::Ok(())
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready.load(Ordering::SeqCst) < subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {subscribers} subscribers connected",
                ready.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_subscribed = clouddp_e2e::bench::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    // One alert: raise the threshold so the open transfer alert resolves at the next pull.
    console(
        &manager,
        &[
            "dp",
            "set",
            "bench-cdp",
            "--transfer-threshold-gb",
            "100000",
        ],
    )?;
    let (first, mut slowest) = tokio::time::timeout(Duration::from_secs(30), done.recv())
        .await?
        .context("no delivery")?;
    let mut last = first;
    while delivered.load(Ordering::SeqCst) < subscribers || !done.is_empty() {
        match tokio::time::timeout(Duration::from_secs(30), done.recv()).await {
            Ok(Some((at, after_commit))) => {
                last = last.max(at);
                slowest = slowest.max(after_commit);
            }
            _ => bail!(
                "only {} of {subscribers} subscribers got the alert",
                delivered.load(Ordering::SeqCst)
            ),
        }
    }
    let spread = last.duration_since(first);
    let per_subscriber = (rss_subscribed.saturating_sub(rss_before)) as f64 / subscribers as f64;
    println!(
        "fan-out of one alert to {subscribers} subscribers over 100 connections: commit to last delivery {:.0} ms (first to last {:.0} ms); monitoring RSS {} -> {} KiB, {per_subscriber:.1} KiB per subscriber",
        slowest * 1000.0,
        spread.as_secs_f64() * 1000.0,
        rss_before,
        rss_subscribed
    );
    tasks.abort_all();

    println!("{:<60} {:>10} {:>12}", "measure", "clouddp", "target");
    println!(
        "{:<60} {:>9.2}s {:>12}",
        "transfer -> alert at a subscriber (1 s interval)", transfer_to_alert, "< 2 s"
    );
    println!(
        "{:<60} {:>8.0}ms {:>12}",
        "one alert to all subscribers, commit to last delivery",
        slowest * 1000.0,
        "< 1 s"
    );
    println!(
        "{:<60} {:>7.1}KiB {:>12}",
        "memory per subscriber", per_subscriber, "< 64 KiB"
    );
    println!(
        "{:<60} {:>8.1}ms {:>12}",
        "evaluate 10,000 DPs x 720 samples",
        evaluation.as_secs_f64() * 1000.0,
        "-"
    );
    Ok(())
}
