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

/// A bare tonic server answering the standard health check, with `tls` when given: the baseline of what one RPC
/// costs. Prints its address, then serves on a free port with its listener set up as `Server::serve` sets up its
/// own (TCP_NODELAY on, tonic's default).
pub async fn serve_health(tls: Option<tonic::transport::ServerTlsConfig>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(service)
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

/// Runs this benchmark binary again as `echo-server` with `args` (its health server); the child and its address.
pub async fn spawn_health_server(
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("echo-server")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("echo stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    Ok((child, line.trim().to_owned()))
}

/// One health check on the channel of `worker` among `channels`.
pub fn health_check(
    channels: &Arc<Vec<tonic::transport::Channel>>,
    worker: usize,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + use<> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(
        channels[worker % channels.len()].clone(),
    );
    async move {
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        anyhow::Ok(())
    }
}

/// Calls per second and server CPU per call of every round of one side.
#[derive(Debug, Default)]
pub struct Rounds {
    /// Calls per second, by round.
    pub rates: Vec<f64>,
    /// The server's CPU per call (µs), by round.
    pub cpu_us: Vec<f64>,
}

/// `runs` rounds of `seconds` of each side in turn (`(server pid, call)`), so that a slow spell of the machine
/// weighs on both alike.
pub async fn alternating_rounds<A, FutA, B, FutB>(
    runs: usize,
    concurrency: usize,
    seconds: f64,
    first: (u32, A),
    second: (u32, B),
) -> anyhow::Result<(Rounds, Rounds)>
where
    A: Fn(usize) -> FutA + Clone + Send + Sync + 'static,
    FutA: std::future::Future<Output = anyhow::Result<()>> + Send,
    B: Fn(usize) -> FutB + Clone + Send + Sync + 'static,
    FutB: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let (mut a, mut b) = (Rounds::default(), Rounds::default());
    for _ in 0..runs {
        let round = closed_loop(concurrency, seconds, first.0, first.1.clone()).await?;
        a.rates.push(round.per_second);
        a.cpu_us.push(round.server_cpu_us);
        let round = closed_loop(concurrency, seconds, second.0, second.1.clone()).await?;
        b.rates.push(round.per_second);
        b.cpu_us.push(round.server_cpu_us);
    }
    Ok((a, b))
}
