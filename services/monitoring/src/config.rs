//! The monitoring service's configuration: file, then `CLOUDDP_MON__SECTION__KEY` variables, then flags.

use std::path::PathBuf;
use std::time::Duration;

use clouddp_platform::config::{LogSettings, ServerSettings};
use clouddp_platform::tls::ClientTlsSettings;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the config file.
pub const ENV_PREFIX: &str = "CLOUDDP_MON";

/// The default gRPC port of the monitoring service.
pub const DEFAULT_PORT: u16 = 7401;

/// Configuration of the monitoring service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonConfig {
    /// The gRPC listener.
    #[serde(default = "default_server")]
    pub server: ServerSettings,
    /// Where the database and the CloudDP logs live.
    #[serde(default)]
    pub storage: StorageSettings,
    /// The distribution manager this service follows.
    #[serde(default)]
    pub distribution_manager: UpstreamSettings,
    /// The usage pull.
    #[serde(default)]
    pub pull: PullSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// The service's credential.
    #[serde(default)]
    pub identity: IdentitySettings,
    /// The audit trail.
    #[serde(default)]
    pub audit: clouddp_platform::config::AuditSettings,
}

/// The monitoring service's credential: a folder the distribution manager's first start writes
/// (`services/monitoring` in its data dir) holding `ca.pem`, `cert.pem` and `key.pem`. Monitoring serves with it
/// and calls the distribution manager with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// The credential folder.
    pub credentials: PathBuf,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            credentials: PathBuf::from("clouddp-data/distribution-manager/services/monitoring"),
        }
    }
}

impl Default for MonConfig {
    fn default() -> Self {
        Self {
            server: default_server(),
            storage: StorageSettings::default(),
            distribution_manager: UpstreamSettings::default(),
            pull: PullSettings::default(),
            log: LogSettings::default(),
            identity: IdentitySettings::default(),
            audit: clouddp_platform::config::AuditSettings::default(),
        }
    }
}

fn default_server() -> ServerSettings {
    ServerSettings::site_tls(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

/// Where the monitoring service keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the SQLite database (`monitoring.db`); created if missing.
    pub data_dir: PathBuf,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("clouddp-data/monitoring"),
        }
    }
}

/// How to reach the distribution manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Its gRPC URL: `https://` (with the service credential unless TLS files are given), or `http://` when both
    /// services run in plaintext for a test.
    pub url: String,
    /// TLS for an `https://` URL.
    #[serde(default)]
    pub tls: ClientTlsSettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:7400".to_owned(),
            tls: ClientTlsSettings::default(),
        }
    }
}

/// The usage pull.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PullSettings {
    /// Interval between pulls, for example `1h` (the default, as the reference) or `1s` in tests.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub interval: Duration,
    /// Where the `CloudDP-<ServiceName>.log` files go; `logs` in the data dir when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// A log file is rotated (kept as `.1` … `.5`) when it grows past this many bytes.
    pub log_max_bytes: u64,
    /// Moves the service's clock forward, for tests of the sliding 30-day window (`0s` in production).
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub clock_offset: Duration,
    /// Probe each cloud DP's content endpoint (`https://<service FQDN>:<port>/healthz`) on every pull and raise
    /// "service not active" when it fails. Off by default: it needs the FQDNs to resolve from this host.
    pub probe_content_endpoints: bool,
    /// The port the content endpoints answer on.
    pub content_endpoint_port: u16,
    /// Extra PEM CA certificates that issued the DPs' service certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_endpoint_ca: Option<PathBuf>,
    /// Address overrides for the probe, `host=ip,host=ip` (split DNS, tests).
    pub content_endpoint_resolve: String,
    /// How long a DP's store must keep failing before the subscription alert is raised (as Alertmanager's
    /// `for:`): one failed read, a restart of the distribution manager or a container that an install or delete
    /// is creating or removing raises nothing. `15m` by default.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub alert_after: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            log_dir: None,
            log_max_bytes: 1 << 20,
            clock_offset: Duration::ZERO,
            probe_content_endpoints: false,
            content_endpoint_port: 443,
            content_endpoint_ca: None,
            content_endpoint_resolve: String::new(),
            alert_after: Duration::from_secs(15 * 60),
        }
    }
}

impl MonConfig {
    /// Checks values that parse but are not allowed.
    pub fn check(&self) -> clouddp_platform::ConfigResult<()> {
        self.server.check()?;
        self.audit.check()?;
        if self.pull.interval < Duration::from_secs(1) {
            return Err(clouddp_platform::ConfigError::Invalid(format!(
                "[pull] interval {} is below the minimum of 1s",
                humantime::format_duration(self.pull.interval)
            )));
        }
        let url = &self.distribution_manager.url;
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(clouddp_platform::ConfigError::Invalid(format!(
                "[distribution_manager] url {url:?} must start with http:// or https://"
            )));
        }
        Ok(())
    }
}

impl clouddp_platform::cli::ServiceConfig for MonConfig {
    fn server(&self) -> &ServerSettings {
        &self.server
    }

    fn log(&self) -> &LogSettings {
        &self.log
    }

    fn check(&self) -> clouddp_platform::ConfigResult<()> {
        Self::check(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_under_deploy_parse() {
        let examples =
            clouddp_platform::config::deploy_examples::<MonConfig>("monitoring", ENV_PREFIX);
        assert!(
            !examples.is_empty(),
            "deploy/config has no monitoring*.toml"
        );
        for (path, loaded) in examples {
            let config = loaded.unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            config
                .check()
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        }
    }

    #[test]
    fn interval_below_one_second_is_refused() {
        let env = [("CLOUDDP_MON__PULL__INTERVAL".to_owned(), "500ms".to_owned())].into();
        let config: MonConfig = clouddp_platform::config::load(None, &env, ENV_PREFIX).unwrap();
        assert!(config.check().unwrap_err().to_string().contains("minimum"));
    }
}
