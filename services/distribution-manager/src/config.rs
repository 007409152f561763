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
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
}

impl Default for DmConfig {
    fn default() -> Self {
        Self {
            server: default_server(),
            storage: StorageSettings::default(),
            site: SiteSettings::default(),
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
