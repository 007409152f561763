//! Runs the real `clouddp` console against services under test.

use std::process::Command;

use anyhow::Context as _;

/// What the console printed and its exit code.
#[derive(Debug)]
pub struct ConsoleOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl ConsoleOutput {
    /// Standard output parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("console output is not JSON: {}", self.stdout))
    }
}

/// Runs `clouddp --endpoint DM --monitoring-endpoint MON ARGS…`.
pub fn run(dm_url: &str, monitoring_url: &str, args: &[&str]) -> anyhow::Result<ConsoleOutput> {
    let output = Command::new(crate::bin("clouddp"))
        .args([
            "--endpoint",
            dm_url,
            "--monitoring-endpoint",
            monitoring_url,
        ])
        .args(args)
        .env_remove("CLOUDDP_ENDPOINT")
        .env_remove("CLOUDDP_MONITORING_ENDPOINT")
        .env_remove("CLOUDDP_CONFIG")
        .output()
        .context("run clouddp")?;
    Ok(ConsoleOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A monitoring URL for tests that run no monitoring service (nothing listens there).
pub const NO_MONITORING: &str = "http://127.0.0.1:9";

/// Runs `clouddp … ARGS -o json` and returns what it printed, parsed; an error carrying the whole output unless
/// it exits 0.
pub fn json(
    dm_url: &str,
    monitoring_url: &str,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let mut with_json = args.to_vec();
    with_json.extend(["-o", "json"]);
    let output = run(dm_url, monitoring_url, &with_json)?;
    anyhow::ensure!(output.code == 0, "clouddp {args:?}: {output:?}");
    output.json()
}

/// Where `install_cloud_dp` keeps the self-signed certificates it makes (one pair per service name).
pub fn dev_certificates_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "clouddp-e2e-dev-certificates-{}",
        std::process::id()
    ))
}

/// The subscription id the tests install cloud DPs under.
pub const TEST_SUBSCRIPTION: &str = "0f4d3a1e-5b6c-4d7e-8f90-a1b2c3d4e5f6";

/// Installs a cloud DP `service_name` in `northeurope` on `azurite`'s development account through the console,
/// and returns the DP as JSON; fails unless the install succeeds.
pub fn install_cloud_dp(
    dm_url: &str,
    monitoring_url: &str,
    azurite: &crate::azurite::Azurite,
    service_name: &str,
) -> anyhow::Result<serde_json::Value> {
    let endpoint = azurite.blob_endpoint();
    let output = run(
        dm_url,
        monitoring_url,
        &[
            "dp",
            "install",
            "--service-name",
            service_name,
            "--subscription",
            TEST_SUBSCRIPTION,
            "--region",
            "northeurope",
            "--account",
            crate::azurite::ACCOUNT,
            "--blob-endpoint",
            &endpoint,
            "--emulator",
            "--dev-certificates",
            &dev_certificates_dir().to_string_lossy(),
            "-o",
            "json",
        ],
    )?;
    anyhow::ensure!(
        output.code == 0,
        "installing {service_name} failed: {output:?}"
    );
    output.json()
}

/// Installs a cloud DP `service_name` in `westeurope` on `azurite`'s development account with given certificates:
/// a management .pfx (and its password) and a PEM service certificate and key; fails unless the install succeeds.
pub fn install_cloud_dp_with(
    dm_url: &str,
    monitoring_url: &str,
    azurite: &crate::azurite::Azurite,
    service_name: &str,
    management: (&std::path::Path, &str),
    service: (&std::path::Path, &std::path::Path),
) -> anyhow::Result<serde_json::Value> {
    let endpoint = azurite.blob_endpoint();
    let text = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let (management_pfx, service_crt, service_key) =
        (text(management.0), text(service.0), text(service.1));
    json(
        dm_url,
        monitoring_url,
        &[
            "dp",
            "install",
            "--service-name",
            service_name,
            "--subscription",
            TEST_SUBSCRIPTION,
            "--region",
            "westeurope",
            "--account",
            crate::azurite::ACCOUNT,
            "--blob-endpoint",
            &endpoint,
            "--emulator",
            "--management-cert",
            &management_pfx,
            "--management-password",
            management.1,
            "--service-cert",
            &service_crt,
            "--service-key",
            &service_key,
        ],
    )
}
