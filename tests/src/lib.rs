//! The end-to-end harness: starts the real clouddp binaries on free loopback ports with temporary data
//! directories, waits for them to be healthy, keeps their logs, fails a test on unexpected ERROR lines, and stops
//! them. Fixtures for Azurite, grpcurl and a test PKI live beside it.
#![forbid(unsafe_code)]

pub mod azurite;
pub mod bench;
pub mod certs;
pub mod console;
pub mod content;
pub mod grpcurl;
pub mod identity;
pub mod otlp;
pub mod pki;
pub mod service;

use std::path::PathBuf;

pub use service::{ServiceKind, ServiceProcess, ServiceSpec};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// Where the built binaries are: `CLOUDDP_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else `target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLOUDDP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug")
}

/// The path of one of our binaries; panics with the command to run when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (or run ./tests/run)",
        path.display()
    );
    path
}

/// Where the test tools (Azurite, grpcurl) are installed: `CLOUDDP_TOOLS_DIR`, else `.tools` in the repository.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("CLOUDDP_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"))
}

/// A folder for a folder DP of `manager`, in its data dir's `stores/` (always a store root).
pub fn store_folder(manager: &ServiceProcess, name: &str) -> String {
    manager
        .data_dir()
        .join("stores")
        .join(name)
        .display()
        .to_string()
}

/// Starts a distribution manager and a monitoring service that follows it, both plaintext on loopback.
pub async fn start_both() -> anyhow::Result<(ServiceProcess, ServiceProcess)> {
    let manager = ServiceProcess::start(ServiceSpec::new(ServiceKind::DistributionManager)).await?;
    let monitoring = ServiceProcess::start(
        ServiceSpec::new(ServiceKind::Monitoring).args(["--distribution-manager", &manager.url()]),
    )
    .await?;
    Ok((manager, monitoring))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral loopback port")
}
