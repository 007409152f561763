//! The Azurite fixture: the real Azure Blob emulator (npm `azurite`, pinned in `tests/tools.lock`), installed by
//! `./tests/run`, started on a free loopback port with its own data folder, and stopped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

/// Azurite's well-known development account name.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    /// Starts Azurite's blob service and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("azurite-").tempdir()?;
        let port = crate::free_port();
        let child = Self::spawn(dir.path(), port)?;
        let mut azurite = Self { child, port, dir };
        azurite.wait_listening().await?;
        Ok(azurite)
    }

    fn spawn(dir: &Path, port: u16) -> anyhow::Result<Child> {
        let binary = crate::tools_dir().join("node_modules/.bin/azurite-blob");
        if !binary.is_file() {
            bail!(
                "{} is missing: run ./tests/run (it installs the pinned Azurite), or set CLOUDDP_TOOLS_DIR",
                binary.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("azurite.log"))?;
        Command::new(&binary)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
            ])
            .arg(dir.join("data"))
            .args([
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start azurite")
    }

    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("azurite exited with {status}: {}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("azurite did not listen within 30 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the emulator (an outage); its data stays for [`Azurite::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the emulator again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.child = Self::spawn(self.dir.path(), self.port)?;
        self.wait_listening().await
    }

    /// Starts the emulator again on the same port with nothing in it: the blocks it had acknowledged are lost,
    /// as uncommitted Azure blocks are after a week.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.stop();
        let data = self.dir.path().join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        self.child = Self::spawn(self.dir.path(), self.port)?;
        self.wait_listening().await
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The blob service URL of the development account, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Azurite's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}
