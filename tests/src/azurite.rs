//! The Azurite fixture: the real Azure Blob emulator (npm `azurite`, pinned in `tests/tools.lock`), installed by
//! `./tests/run`, started on a free loopback port with its own data folder, and stopped on drop.

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
        let binary = crate::tools_dir().join("node_modules/.bin/azurite-blob");
        if !binary.is_file() {
            bail!(
                "{} is missing: run ./tests/run (it installs the pinned Azurite), or set CLOUDDP_TOOLS_DIR",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("azurite-").tempdir()?;
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("azurite.log"))?;
        let child = Command::new(&binary)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
            ])
            .arg(dir.path().join("data"))
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
            .context("start azurite")?;
        let mut azurite = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = azurite.child.try_wait()? {
                bail!("azurite exited with {status}: {}", azurite.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(azurite);
            }
            if Instant::now() > deadline {
                bail!("azurite did not listen within 30 s: {}", azurite.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
