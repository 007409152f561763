//! Helpers the benchmark binaries share: settings from the environment, medians, the source file, process
//! figures from /proc.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// An environment variable, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// A file of `size_mb` MiB of random data in `work`, written once and reused by later runs and the peers.
pub fn ensure_source(work: &Path, size_mb: u64) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(work)?;
    let path = work.join(format!("src{size_mb}m.bin"));
    let wanted = size_mb * 1_048_576;
    if std::fs::metadata(&path)
        .map(|metadata| metadata.len())
        .unwrap_or(0)
        != wanted
    {
        eprintln!(
            "bench: writing {size_mb} MiB of random data to {}",
            path.display()
        );
        let status = Command::new("head")
            .args(["-c", &wanted.to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(&path)?)
            .status()?;
        if !status.success() {
            bail!("cannot write {}", path.display());
        }
    }
    Ok(path)
}

/// A `/proc/<pid>/status` figure in KiB, for example `VmRSS` or `VmHWM` (peak); `None` when unreadable.
/// CPU seconds a process has used so far (user + system, all its threads), from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux whatever the kernel's tick rate.
    Some(ticks as f64 / 100.0)
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| {
            line.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

/// Calls per second, and the server's CPU time per call.
pub struct Throughput {
    /// Calls per second.
    pub per_second: f64,
    /// The server's CPU time per call, µs.
    pub server_cpu_us: f64,
}

/// Calls `call` from `concurrency` tasks for `seconds`, measuring the CPU the process `server` spent meanwhile.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    seconds: f64,
    server: u32,
    call: F,
) -> anyhow::Result<Throughput>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Warm up.
    for worker in 0..concurrency {
        call(worker).await?;
    }
    let cpu_before = cpu_seconds(server).context("server CPU time")?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (call, done, stop) = (call.clone(), done.clone(), stop.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                call(worker).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server).context("server CPU time")? - cpu_before;
    let calls = done.load(Ordering::Relaxed) as f64;
    Ok(Throughput {
        per_second: calls / elapsed,
        server_cpu_us: cpu / calls * 1e6,
    })
}
