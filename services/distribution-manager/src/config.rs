//! The distribution manager's configuration: file, then `CLOUDDP_DM__SECTION__KEY` variables, then flags.

use std::path::PathBuf;

use clouddp_platform::config::{LogSettings, ServerSettings};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the config file.
pub const ENV_PREFIX: &str = "CLOUDDP_DM";

/// The default gRPC port of the distribution manager.
pub const DEFAULT_PORT: u16 = 7400;

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
    /// Attempts before a job fails for good (transient errors only), 1 to 100.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt, for example `1s`.
    #[serde(with = "clouddp_platform::config::duration_text")]
    pub retry_base: std::time::Duration,
}

impl Default for DistributionSettings {
    fn default() -> Self {
        let defaults = crate::distribution::DistributorSettings::default();
        Self {
            part_chunks: defaults.part_chunks,
            part_concurrency: defaults.part_concurrency,
            job_concurrency: defaults.job_concurrency,
            max_attempts: defaults.max_attempts,
            retry_base: defaults.retry_base,
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
            max_attempts: self.max_attempts,
            retry_base: self.retry_base,
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
        }
    }
}

fn default_server() -> ServerSettings {
    ServerSettings::plaintext(std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
}

/// Where the distribution manager keeps its state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory of the SQLite database (`distribution-manager.db`); created if missing.
    pub data_dir: PathBuf,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("clouddp-data/distribution-manager"),
        }
    }
}

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
        self.server.check()?;
        let distribution = &self.distribution;
        let in_range = (1..=64).contains(&distribution.part_chunks)
            && (1..=64).contains(&distribution.part_concurrency)
            && (1..=64).contains(&distribution.job_concurrency)
            && (1..=100).contains(&distribution.max_attempts);
        if !in_range {
            return Err(clouddp_platform::ConfigError::Invalid(
                "[distribution] part_chunks, part_concurrency and job_concurrency must be 1 to 64, max_attempts 1 to 100"
                    .to_owned(),
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
