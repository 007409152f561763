//! A clouddp service process under test.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// `clouddp-distribution-manager`.
    DistributionManager,
    /// `clouddp-monitoring`.
    Monitoring,
}

impl ServiceKind {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::DistributionManager => "clouddp-distribution-manager",
            Self::Monitoring => "clouddp-monitoring",
        }
    }
}

/// How to start a service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Which binary.
    pub kind: ServiceKind,
    /// Extra flags after `--listen` and `--data-dir`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Substrings of ERROR lines the test expects; any other ERROR line fails the test.
    pub allowed_errors: Vec<String>,
    /// True when the service serves TLS (health is then awaited by its log line and a TCP connect).
    pub tls: bool,
    /// True when listening is enough to count as started (health may still say NOT_SERVING).
    pub listening_is_ready: bool,
    /// The data directory, when not a fresh one of the test's.
    pub data_dir: Option<PathBuf>,
    /// The soft limit on open files the process starts with, when not the test's own.
    pub file_limit: Option<u64>,
}

impl ServiceSpec {
    /// A plaintext service with no extra flags.
    pub fn new(kind: ServiceKind) -> Self {
        Self {
            kind,
            args: Vec::new(),
            env: Vec::new(),
            allowed_errors: Vec::new(),
            tls: false,
            listening_is_ready: false,
            data_dir: None,
            file_limit: None,
        }
    }

    /// Starts the process with a soft limit of `limit` open files, as a default systemd or login limit gives.
    pub fn file_limit(mut self, limit: u64) -> Self {
        self.file_limit = Some(limit);
        self
    }

    /// Adds flags.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Expects ERROR lines (and panics) containing `text`: they do not fail the test.
    pub fn allow_error(mut self, text: &str) -> Self {
        self.allowed_errors.push(text.to_owned());
        self
    }

    /// Keeps the data in `dir` (a small file system, say).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Marks the service as serving TLS.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// A running service: its process, address, data directory and log.
#[derive(Debug)]
pub struct ServiceProcess {
    spec: ServiceSpec,
    child: Option<Child>,
    addr: SocketAddr,
    content_addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    _dir: TempDir,
}

/// How long a service may take to become healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

impl ServiceProcess {
    /// Starts the service like [`Self::start`] but waits only until it listens: its health may say NOT_SERVING.
    pub async fn start_unready(mut spec: ServiceSpec) -> anyhow::Result<Self> {
        spec.listening_is_ready = true;
        Self::start(spec).await
    }

    /// Starts the service on a free loopback port with a fresh data directory and waits until it serves.
    pub async fn start(spec: ServiceSpec) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", spec.kind.binary()))
            .tempdir()?;
        let mut service = Self {
            data_dir: spec
                .data_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("data")),
            log_path: dir.path().join("service.log"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            content_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            spec,
            _dir: dir,
        };
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            service.addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
            service.content_addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
            match service.launch().await {
                Ok(()) => return Ok(service),
                Err(error) => {
                    service.kill9();
                    let log = service.log();
                    // Another process may have taken the free port in between: try another one.
                    if attempt == ATTEMPTS || !log.contains("cannot listen") {
                        return Err(
                            error.context(format!("log of {}:\n{log}", service.spec.kind.binary()))
                        );
                    }
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let binary = crate::bin(self.spec.kind.binary());
        let mut command = match self.spec.file_limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -S -n {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.spec.args)
            .args(if self.spec.tls {
                None
            } else {
                // Plaintext without authentication, as the tests of features other than access ask.
                Some("--plaintext")
            })
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.spec.kind == ServiceKind::DistributionManager {
            // Every manager serves its content endpoint on its own free port.
            command.env(
                "CLOUDDP_DM__CONTENT_ENDPOINT__LISTEN",
                self.content_addr.to_string(),
            );
        }
        if self.spec.kind == ServiceKind::DistributionManager && !self.spec.tls {
            // Tests of other features register content from, and keep folder stores in, their temporary
            // directories; a test of access (TLS) gives the roots it means.
            let temp = format!("[{:?}]", std::env::temp_dir().display().to_string());
            command
                .env("CLOUDDP_DM__CONTENT__SOURCE_ROOTS", &temp)
                .env("CLOUDDP_DM__STORAGE__STORE_ROOTS", &temp);
        }
        for (name, value) in &self.spec.env {
            command.env(name, value);
        }
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("spawn {}", self.spec.kind.binary()))?,
        );
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.spawn()?;
        self.wait_ready(START_TIMEOUT).await
    }

    /// Waits until the service answers: a SERVING health check (plaintext) or its listening log line and a TCP
    /// connect (TLS).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let listening_lines_before = self.log().matches("gRPC server listening").count();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited with {status} before it was ready",
                    self.spec.kind.binary()
                );
            }
            let ready = if self.spec.tls || self.spec.listening_is_ready {
                self.log().matches("gRPC server listening").count() > listening_lines_before
                    && tokio::net::TcpStream::connect(self.addr).await.is_ok()
            } else {
                self.health().await.is_ok_and(|serving| serving)
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {timeout:?}",
                    self.spec.kind.binary()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// True when the plaintext health check answers SERVING.
    pub async fn health(&self) -> anyhow::Result<bool> {
        use tonic_health::pb::health_client::HealthClient;
        let channel = tonic::transport::Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        let answer = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok(answer.into_inner().status()
            == tonic_health::pb::health_check_response::ServingStatus::Serving)
    }

    /// `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (or `https://localhost:port` for TLS services).
    pub fn url(&self) -> String {
        if self.spec.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// A lazily connecting plaintext channel.
    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("valid url")
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    /// The address of a distribution manager's HTTPS content endpoint.
    pub fn content_addr(&self) -> SocketAddr {
        self.content_addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit; returns how long it took and the exit status.
    pub fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, std::process::ExitStatus)> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running", self.spec.kind.binary());
        };
        let started = Instant::now();
        kill(Pid::from_raw(i32::try_from(child.id())?), Signal::SIGTERM)?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((started.elapsed(), status));
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM",
                    self.spec.kind.binary()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets an environment variable for the next (re)start.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.spec.env.retain(|(existing, _)| existing != name);
        self.spec.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts the stopped (or killed) service again on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.spawn()?;
            match self.wait_ready(START_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(error)
                    if self.log().contains("Address already in use")
                        && Instant::now() < deadline =>
                {
                    self.kill9();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(error);
                }
                Err(error) => return Err(error.context(format!("restart; log:\n{}", self.log()))),
            }
        }
    }

    /// The ERROR lines of the log not matched by an allowed substring, and every panic.
    pub fn unexpected_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains(" ERROR ") || line.contains("panicked at"))
            .filter(|line| {
                !self
                    .spec
                    .allowed_errors
                    .iter()
                    .any(|allowed| line.contains(allowed.as_str()))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.spec.kind.binary(), self.log());
            return;
        }
        let unexpected = self.unexpected_errors();
        assert!(
            unexpected.is_empty(),
            "{} logged unexpected ERROR lines:\n{}",
            self.spec.kind.binary(),
            unexpected.join("\n")
        );
    }
}
