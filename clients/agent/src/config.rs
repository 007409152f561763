//! The agent's configuration: a TOML file, overridden by `CLOUDDP_AGENT__KEY` variables and flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override the file, for example `CLOUDDP_AGENT__DEVICE_ID`.
pub const ENV_PREFIX: &str = "CLOUDDP_AGENT__";

/// A configuration the agent cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read agent config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file or a variable does not parse.
    #[error("invalid agent config: {0}")]
    Parse(String),
    /// A value is not allowed.
    #[error("invalid agent config: {0}")]
    Invalid(String),
}

/// Where the device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// On the organisation's network.
    #[default]
    Intranet,
    /// On the internet.
    Internet,
}

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The distribution manager's gRPC URL, where content is located.
    pub endpoint: String,
    /// PEM CA certificate that issued the distribution manager's and the DPs' certificates.
    pub ca_certificate: Option<PathBuf>,
    /// This device's id, as the site knows it.
    pub device_id: String,
    /// The signed-in user's id, if any.
    pub user_id: Option<String>,
    /// Intranet or internet.
    pub network: Network,
    /// This device's IP address as the site should see it (boundary groups); detected when unset.
    pub ip_address: Option<String>,
    /// The Azure region nearest to the device, for nearest-cloud-DP selection.
    pub region: Option<String>,
    /// Where partial downloads and their resume state are kept.
    pub cache_dir: PathBuf,
    /// Where the device's enrolled identity is kept (`clouddp-agent enroll`): its key, certificate, the site CA.
    /// When it holds one, the agent authenticates with it and its device id is the certificate's.
    pub identity_dir: PathBuf,
    /// Parallel range requests per download (1 to 32): each on its own connection and thread, which also opens,
    /// writes and hashes what it receives.
    pub parallel_downloads: u32,
    /// Days before its certificate expires that the agent renews it (on `get`, or `clouddp-agent renew`), 1 to
    /// 398.
    pub renew_before_days: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:7400".to_owned(),
            ca_certificate: None,
            device_id: String::new(),
            user_id: None,
            network: Network::Intranet,
            ip_address: None,
            region: None,
            cache_dir: PathBuf::from("clouddp-agent-cache"),
            identity_dir: PathBuf::from("clouddp-agent-identity"),
            parallel_downloads: 4,
            renew_before_days: 30,
        }
    }
}

impl AgentConfig {
    /// Loads `file` (if any), then applies `CLOUDDP_AGENT__*` variables from `env`, then checks the values.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .parse::<toml::Table>()
                .map_err(|error| ConfigError::Parse(format!("{}: {error}", path.display())))?,
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                let key = key.to_ascii_lowercase();
                let parsed = match key.as_str() {
                    "parallel_downloads" | "renew_before_days" => value
                        .parse::<i64>()
                        .map(toml::Value::Integer)
                        .map_err(|_| {
                            ConfigError::Parse(format!("{name}: {value:?} is not a whole number"))
                        })?,
                    _ => toml::Value::String(value.clone()),
                };
                table.insert(key, parsed);
            }
        }
        let config = Self::deserialize(toml::Value::Table(table))
            .map_err(|error| ConfigError::Parse(error.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that parse but are not allowed.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("https://") {
            return Err(ConfigError::Invalid(format!(
                "endpoint {:?} must start with http:// or https://",
                self.endpoint
            )));
        }
        if !(1..=398).contains(&self.renew_before_days) {
            return Err(ConfigError::Invalid(format!(
                "renew_before_days {} is out of range; use 1 to 398",
                self.renew_before_days
            )));
        }
        if !(1..=32).contains(&self.parallel_downloads) {
            return Err(ConfigError::Invalid(format!(
                "parallel_downloads {} is out of range; use 1 to 32",
                self.parallel_downloads
            )));
        }
        if let Some(ip) = &self.ip_address
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "ip_address {ip:?} is not an IPv4 or IPv6 address"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "device_id = \"pc-1\"\nnetwork = \"internet\"\nparallel_downloads = 8\n",
        )
        .unwrap();
        let env = [("CLOUDDP_AGENT__DEVICE_ID".to_owned(), "pc-2".to_owned())].into();
        let config = AgentConfig::load(Some(&path), &env).unwrap();
        assert_eq!(config.device_id, "pc-2");
        assert_eq!(config.network, Network::Internet);
        assert_eq!(config.parallel_downloads, 8);
    }

    #[test]
    fn bad_values_are_refused() {
        let env = [(
            "CLOUDDP_AGENT__PARALLEL_DOWNLOADS".to_owned(),
            "0".to_owned(),
        )]
        .into();
        assert!(
            AgentConfig::load(None, &env)
                .unwrap_err()
                .to_string()
                .contains("1 to 32")
        );
        let env = [("CLOUDDP_AGENT__IP_ADDRESS".to_owned(), "nope".to_owned())].into();
        assert!(AgentConfig::load(None, &env).is_err());
        let env = [("CLOUDDP_AGENT__COLOUR".to_owned(), "red".to_owned())].into();
        assert!(
            AgentConfig::load(None, &env)
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }

    #[test]
    fn example_config_under_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/agent.toml");
        let config = AgentConfig::load(Some(&path), &BTreeMap::new()).unwrap();
        assert!(!config.device_id.is_empty());
    }
}
