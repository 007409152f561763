//! The distribution manager's configuration: file, then `CLOUDDP_DM__SECTION__KEY` variables, then flags.

use std::path::PathBuf;

use clouddp_platform::config::{LogSettings, ServerSettings};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the config file.
pub const ENV_PREFIX: &str = "CLOUDDP_DM";

/// The default gRPC port of the distribution manager.
pub const DEFAULT_PORT: u16 = 7400;

/// The default HTTPS port of the content endpoint.
pub const DEFAULT_CONTENT_PORT: u16 = 7443;

/// Configuration of the distribution manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DmConfig {
    /// The gRPC listener.
    #[serde(default = "default_server")]
    pub server: ServerSettings,
    /// Where the database and the site key live.
    #[serde(default)]
    pub storage: StorageSettings,
    /// The site this distribution manager runs.
    #[serde(default)]
    pub site: SiteSettings,
    /// How content is transferred to distribution points.
    #[serde(default)]
    pub distribution: DistributionSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// What this process runs: everything (`all`), or only the HTTPS content endpoint (`content-endpoint`) over
    /// the same data dir and site key.
    #[serde(default)]
    pub role: Role,
    /// The HTTPS content endpoint clients download from.
    #[serde(default)]
    pub content_endpoint: ContentEndpointSettings,
    /// Access tokens.
    #[serde(default)]
    pub tokens: TokenSettings,
    /// Where content is registered from.
    #[serde(default)]
    pub content: ContentSettings,
    /// The audit trail.
    #[serde(default)]
    pub audit: clouddp_platform::config::AuditSettings,
}

/// Where content is registered from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContentSettings {
    /// The directories content may be registered from (absolute; files and folders strictly below them, no
    /// symbolic links below them). None by default: the server reads no source until an administrator of the
    /// server names these.
    pub source_roots: Vec<PathBuf>,
}

/// What a distribution manager process runs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The control plane (gRPC) and the content endpoint.
    #[default]
    All,
    /// Only the content endpoint, scaled apart from the control plane.
    ContentEndpoint,
}

/// The HTTPS content endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContentEndpointSettings {
    /// Serve it (with role `all`).
    pub enabled: bool,
    /// HTTPS listener.
    pub listen: std::net::SocketAddr,
    /// The port in the URLs given to clients for cloud DPs (behind a load balancer, 443); 0 for the listener's.
    pub public_port: u16,
    /// PEM certificate for on-premises and internet-facing DPs' hostnames (cloud DPs use their service
    /// certificates, chosen by SNI). A self-signed one for `localhost` is made when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// Its PEM private key (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// How often served bytes are appended to the DPs' stores as usage logs.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub usage_flush_interval: std::time::Duration,
    /// How often DP states, certificates and keys are re-read (a stop takes effect within this).
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub refresh_interval: std::time::Duration,
    /// Only these DPs (comma-separated ids or names); all when empty.
    pub distribution_points: String,
    /// Connections open at once (idle keep-alive ones included); more wait in the listen queue. Lowered at start
    /// to the open file limit less 1,024 kept for the rest of the process, so connections never starve gRPC.
    pub max_connections: usize,
    /// How long a new connection may take to finish its TLS handshake.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub handshake_timeout: std::time::Duration,
    /// How long a request's headers may take to arrive (HTTP/1.1), after which the connection is closed.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub header_read_timeout: std::time::Duration,
}

impl Default for ContentEndpointSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_CONTENT_PORT)),
            public_port: 0,
            certificate: None,
            private_key: None,
            usage_flush_interval: std::time::Duration::from_secs(60),
            refresh_interval: std::time::Duration::from_millis(200),
            distribution_points: String::new(),
            max_connections: 16_384,
            handshake_timeout: std::time::Duration::from_secs(10),
            header_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Access tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Lifetime of an access token, at most 1h.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub lifetime: std::time::Duration,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            lifetime: std::time::Duration::from_secs(15 * 60),
        }
    }
}

/// How content is transferred to distribution points.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistributionSettings {
    /// 1 MiB chunks per staged part (an Azure block), 1 to 64.
    pub part_chunks: u64,
    /// Parts staged at once per distribution job, 1 to 64.
    pub part_concurrency: usize,
    /// Distribution jobs run at once, 1 to 64.
    pub job_concurrency: usize,
    /// First retry delay after a transient error, doubled per attempt, for example `1s`.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub retry_base: std::time::Duration,
    /// The longest delay between retries (`5m`): a job is retried until it succeeds or an admin cancels it.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub retry_max: std::time::Duration,
}

impl Default for DistributionSettings {
    fn default() -> Self {
        let defaults = crate::distribution::DistributorSettings::default();
        Self {
            part_chunks: defaults.part_chunks,
            part_concurrency: defaults.part_concurrency,
            job_concurrency: defaults.job_concurrency,
            retry_base: defaults.retry_base,
            retry_max: defaults.retry_max,
        }
    }
}

impl DistributionSettings {
    /// The distributor's settings.
    pub fn to_settings(&self) -> crate::distribution::DistributorSettings {
        crate::distribution::DistributorSettings {
            part_chunks: self.part_chunks,
            part_concurrency: self.part_concurrency,
            job_concurrency: self.job_concurrency,
            retry_base: self.retry_base,
            retry_max: self.retry_max,
        }
    }
}

impl Default for DmConfig {
    fn default() -> Self {
        Self {
            server: default_server(),
            storage: StorageSettings::default(),
            site: SiteSettings::default(),
            distribution: DistributionSettings::default(),
            log: LogSettings::default(),
            role: Role::default(),
            content_endpoint: ContentEndpointSettings::default(),
            tokens: TokenSettings::default(),
            content: ContentSettings::default(),
            audit: clouddp_platform::config::AuditSettings::default(),
        }
    }
}

fn default_server() -> ServerSettings {
    ServerSettings::site_tls(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

/// Where the distribution manager keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the SQLite database (`distribution-manager.db`); created if missing.
    pub data_dir: PathBuf,
    /// The directories on-premises folder stores may live in (absolute; a DP's folder lies strictly below one,
    /// with no symbolic link below it). `stores/` in the data dir is always one of them.
    #[serde(default)]
    pub store_roots: Vec<PathBuf>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("clouddp-data/distribution-manager"),
            store_roots: Vec::new(),
        }
    }
}

/// The folder inside the data dir that is always a store root.
pub const DATA_DIR_STORES: &str = "stores";

/// The site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    /// The three-character code of the primary site, the default for DPs registered without one.
    pub code: String,
    /// The site key file (32 bytes, mode 0600). Default: `site.key` in the data dir, created on first start.
    /// When set, the file must exist: it is never created at a configured path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            code: "CDP".to_owned(),
            key_file: None,
        }
    }
}

impl DmConfig {
    /// Checks values that parse but are not allowed.
    pub fn check(&self) -> clouddp_platform::ConfigResult<()> {
        if self.role == Role::All {
            self.server.check()?;
        }
        self.audit.check()?;
        let distribution = &self.distribution;
        let in_range = (1..=64).contains(&distribution.part_chunks)
            && (1..=64).contains(&distribution.part_concurrency)
            && (1..=64).contains(&distribution.job_concurrency)
            && !distribution.retry_base.is_zero()
            && distribution.retry_base <= distribution.retry_max
            && distribution.retry_max <= std::time::Duration::from_secs(24 * 3600);
        if !in_range {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[distribution] part_chunks, part_concurrency and job_concurrency must be 1 to 64; retry_base more than 0s and at most retry_max; retry_max at most 24h"
                    .to_owned(),
            ));
        }
        if self.tokens.lifetime.is_zero()
            || self.tokens.lifetime > std::time::Duration::from_secs(3600)
        {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[tokens] lifetime must be more than 0 and at most 1h".to_owned(),
            ));
        }
        let endpoint = &self.content_endpoint;
        if endpoint.refresh_interval < std::time::Duration::from_millis(10)
            || endpoint.refresh_interval > std::time::Duration::from_secs(1)
            || endpoint.usage_flush_interval < std::time::Duration::from_millis(100)
        {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[content_endpoint] refresh_interval must be 10ms to 1s (a stop must take effect within 1s), usage_flush_interval at least 100ms"
                    .to_owned(),
            ));
        }
        let second = std::time::Duration::from_secs(1);
        let minute = std::time::Duration::from_secs(60);
        if endpoint.max_connections == 0
            || !(second..=minute).contains(&endpoint.handshake_timeout)
            || !(second..=minute).contains(&endpoint.header_read_timeout)
        {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[content_endpoint] max_connections must be at least 1, handshake_timeout and header_read_timeout 1s to 60s"
                    .to_owned(),
            ));
        }
        if endpoint.certificate.is_some() != endpoint.private_key.is_some() {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[content_endpoint] certificate and private_key go together".to_owned(),
            ));
        }
        clouddp_core::validate::site_code(&self.site.code).map_err(|error| {
            clouddp_platform::ConfigError::Invalid(format!("[site] code: {}", error.message))
        })?;
        Ok(())
    }
}

impl clouddp_platform::cli::ServiceConfig for DmConfig {
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
        let examples = clouddp_platform::config::deploy_examples::<DmConfig>(
            "distribution-manager",
            ENV_PREFIX,
        );
        assert!(
            !examples.is_empty(),
            "deploy/config has no distribution-manager*.toml"
        );
        for (path, loaded) in examples {
            let config = loaded.unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            config
                .check()
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        }
    }
}
