//! `bench`: the distribution throughput of clouddp, side by side in one run with the peers timed by the
//! project's shared peer scripts (rclone crypt to Azurite and to a local folder, Microsoft's Python SDK uploading
//! the plain file to Azurite, and the disk's fsync write limit). Prints MB/s (10^6 B/s), ratios and peak RSS.
//!
//! Run it with `./tests/bench` (release binaries). Environment: `SIZE_MB` (1024), `N` (3 runs each),
//! `BENCH_DIR` (/tmp/clouddp-bench, shared with the peer scripts), `PEERS_DIR` (../shared/bench),
//! `SKIP_PEERS=1` to time clouddp alone.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clouddp_e2e::azurite::Azurite;
use clouddp_e2e::bench::{ensure_source, env_or, median};
use clouddp_e2e::{ServiceKind, ServiceProcess, ServiceSpec};
use clouddp_proto::v1 as pb;
use clouddp_proto::v1::content_service_client::ContentServiceClient;
use clouddp_proto::v1::distribution_point_service_client::DistributionPointServiceClient;

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks_per_second = 100.0;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks_per_second)
        })
        .unwrap_or(f64::NAN)
}

/// Distributes `content` to `dp` `runs` times (removing it in between); returns MB/s of plaintext per run.
async fn time_distribution(
    channel: &tonic::transport::Channel,
    content: &pb::ContentVersion,
    dp: &str,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut client = ContentServiceClient::new(channel.clone());
    let mut rates = Vec::new();
    for _ in 0..runs {
        // Start each run with no dirty pages of earlier runs still being written back.
        let _ = Command::new("sync").status();
        let started = Instant::now();
        client
            .distribute_content(pb::DistributeContentRequest {
                content_id: content.id.clone(),
                distribution_point_ids: vec![dp.to_owned()],
                group_ids: Vec::new(),
            })
            .await?;
        loop {
            let jobs = client
                .get_distribution_status(pb::GetDistributionStatusRequest {
                    content_id: content.id.clone(),
                    distribution_point_id: dp.to_owned(),
                })
                .await?
                .into_inner()
                .jobs;
            let state = jobs.first().map(|job| job.state()).unwrap_or_default();
            if state == pb::DistributionState::Success {
                break;
            }
            if state == pb::DistributionState::Failed {
                bail!(
                    "distribution to {dp} failed: {:?}",
                    jobs.first().map(|job| job.error.clone())
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        rates.push(content.size_bytes as f64 / seconds / 1e6);
        client
            .remove_content(pb::RemoveContentRequest {
                content_id: content.id.clone(),
                distribution_point_id: dp.to_owned(),
            })
            .await?;
    }
    Ok(rates)
}

/// Runs a peer script and returns its result line.
fn peer(
    peers: &Path,
    script: &str,
    args: &[&str],
    size_mb: u64,
    runs: usize,
    bench_dir: &Path,
) -> anyhow::Result<String> {
    eprintln!("bench: running peer {script} {}", args.join(" "));
    let output = Command::new("bash")
        .arg(peers.join(script))
        .args(args)
        .env("SIZE_MB", size_mb.to_string())
        .env("N", runs.to_string())
        .env("BENCH_DIR", bench_dir)
        .output()
        .with_context(|| format!("run {script}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if !output.status.success() {
        bail!(
            "{script} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
        .lines()
        .last()
        .map(str::to_owned)
        .context("peer printed nothing")
}

/// The median after `label` in a peer's result line (`upload median 148 (…`, or `MB/s: median 812` for disk).
fn peer_median(line: &str, label: &str) -> Option<f64> {
    let rest = line.split(label).nth(1)?;
    rest.split("median")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size_mb: u64 = env_or("SIZE_MB", "1024").parse()?;
    let runs: usize = env_or("N", "3").parse()?;
    let bench_dir = PathBuf::from(env_or("BENCH_DIR", "/tmp/clouddp-bench"));
    let peers = PathBuf::from(env_or(
        "PEERS_DIR",
        &clouddp_e2e::repo_root()
            .join("../shared/bench")
            .display()
            .to_string(),
    ));
    let work = bench_dir.join("work");
    let source = ensure_source(&work, size_mb)?;
    let folder = work.join("clouddp-folder-dp");
    let _ = std::fs::remove_dir_all(&folder);

    let azurite = Azurite::start().await?;
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager)).await?;
    let channel = manager.channel();
    let mut dps = DistributionPointServiceClient::new(channel.clone());
    clouddp_e2e::console::install_cloud_dp(
        &manager.url(),
        clouddp_e2e::console::NO_MONITORING,
        &azurite,
        "bench-cdp",
    )?;
    dps.register_distribution_point(pb::RegisterDistributionPointRequest {
        name: "bench-folder".to_owned(),
        kind: pb::DistributionPointKind::OnPremises.into(),
        folder_path: folder.display().to_string(),
        address: "https://bench-folder.example".to_owned(),
        ..Default::default()
    })
    .await?;
    let registered = Instant::now();
    let content = ContentServiceClient::new(channel.clone())
        .register_content(pb::RegisterContentRequest {
            name: "bench".to_owned(),
            r#type: pb::ContentType::Package.into(),
            source_path: source.display().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let register_rate = content.size_bytes as f64 / registered.elapsed().as_secs_f64() / 1e6;
    let pid = manager.pid().unwrap_or_default();
    let rss_registered = clouddp_e2e::bench::proc_status_kib(pid, "VmHWM")
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0);

    // The folder first: Azurite collects the extents of removed blobs in the background afterwards, which
    // would take CPU from the folder runs.
    let cpu_before = cpu_seconds(pid);
    let mut to_folder = time_distribution(&channel, &content, "bench-folder", runs).await?;
    let cpu_folder = cpu_seconds(pid) - cpu_before;
    let rss_folder = clouddp_e2e::bench::proc_status_kib(pid, "VmHWM")
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    let mut to_azurite = time_distribution(&channel, &content, "bench-cdp", runs).await?;
    let cpu_azurite = cpu_seconds(pid) - cpu_before - cpu_folder;
    let per_gib = |cpu: f64| cpu / runs as f64 / (content.size_bytes as f64 / 1_073_741_824.0);
    eprintln!(
        "bench: distribution manager CPU per GiB distributed: to Azurite {:.2} s, to a folder {:.2} s",
        per_gib(cpu_azurite),
        per_gib(cpu_folder)
    );
    let rss = clouddp_e2e::bench::proc_status_kib(pid, "VmHWM")
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    eprintln!(
        "bench: peak RSS after registration {rss_registered:.1} MiB, after folder runs {rss_folder:.1} MiB, after Azurite runs {rss:.1} MiB"
    );
    let ours_azurite = median(&mut to_azurite);
    let ours_folder = median(&mut to_folder);
    drop(manager);
    drop(azurite);

    println!(
        "clouddp {size_mb} MiB, n={runs}: register (hash) {register_rate:.0} MB/s; distribute sealed to Azurite median {ours_azurite:.0} MB/s {to_azurite:.0?}; to a local folder median {ours_folder:.0} MB/s {to_folder:.0?}; distribution manager peak RSS {rss:.1} MiB"
    );
    if std::env::var("SKIP_PEERS").is_ok() {
        return Ok(());
    }
    let rclone_crypt = peer(
        &peers,
        "10_rclone_azurite.sh",
        &["crypt"],
        size_mb,
        runs,
        &bench_dir,
    )?;
    let rclone_local = peer(
        &peers,
        "10_rclone_azurite.sh",
        &["local-crypt"],
        size_mb,
        runs,
        &bench_dir,
    )?;
    let python = peer(&peers, "13_azsdk_python.sh", &[], size_mb, runs, &bench_dir)?;
    let disk = peer(&peers, "05_disk_fsync.sh", &[], size_mb, runs, &bench_dir)?;
    for line in [&rclone_crypt, &rclone_local, &python, &disk] {
        println!("peer: {line}");
    }
    let rows = [
        (
            "to Azurite, encrypted vs Python SDK plain (conc 4)",
            ours_azurite,
            peer_median(&python, "upload"),
            1.0,
        ),
        (
            "to Azurite, encrypted vs rclone crypt",
            ours_azurite,
            peer_median(&rclone_crypt, "upload"),
            1.6,
        ),
        (
            "to a folder, encrypted vs rclone crypt local",
            ours_folder,
            peer_median(&rclone_local, "upload"),
            3.0,
        ),
        (
            "to a folder vs the disk's fsync write limit",
            ours_folder,
            peer_median(&disk, "MB/s:"),
            0.0,
        ),
    ];
    println!(
        "{:<52} {:>9} {:>9} {:>7} {:>7}",
        "comparison", "clouddp", "peer", "ratio", "target"
    );
    for (label, ours, theirs, target) in rows {
        let theirs = theirs.unwrap_or(f64::NAN);
        let ratio = ours / theirs;
        let verdict = if target == 0.0 {
            "-".to_owned()
        } else if ratio >= target {
            format!("≥{target} ok")
        } else {
            format!("≥{target} MISSED")
        };
        println!("{label:<52} {ours:>9.0} {theirs:>9.0} {ratio:>7.2} {verdict:>7}");
    }
    println!(
        "peak RSS of the distribution manager over the whole run: {rss:.1} MiB (target ≤ 64 MiB)"
    );
    Ok(())
}
