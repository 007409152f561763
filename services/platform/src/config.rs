//! Layered configuration: a TOML file, then environment variables, then command-line flags.
//!
//! Environment variables are read from a map handed in by the caller (never from the process environment
//! directly), so tests can load configs without mutating global state. A variable `PREFIX__SECTION__KEY=value`
//! sets `[section] key = value`; the value is parsed as a TOML value when it is one (numbers, booleans, arrays)
//! and taken as a string otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Exit code for a configuration error (EX_USAGE of sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// A configuration that cannot be used, with a message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file or the environment is not valid TOML, or a value has the wrong type.
    #[error("invalid configuration{origin}: {message}")]
    Parse { origin: String, message: String },
    /// A value is well-formed but not allowed.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Result of loading or checking configuration.
pub type ConfigResult<T> = Result<T, ConfigError>;

/// Loads a config of type `T`: its defaults, then `file` (if any), then the variables of `env` that start with
/// `env_prefix` followed by `__`. Each layer overrides single keys, at any depth, so setting one key of a section
/// keeps the defaults of the others.
pub fn load<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    env_prefix: &str,
) -> ConfigResult<T> {
    let mut table = toml::Table::try_from(T::default()).map_err(|error| ConfigError::Parse {
        origin: " defaults".to_owned(),
        message: error.to_string(),
    })?;
    let file_table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|error| ConfigError::Parse {
                    origin: format!(" in {}", path.display()),
                    message: error.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    merge(&mut table, file_table);
    overlay_env(&mut table, env, env_prefix)?;
    T::deserialize(toml::Value::Table(table)).map_err(|error| ConfigError::Parse {
        origin: match file {
            Some(path) => format!(" in {} or {env_prefix}__* variables", path.display()),
            None => format!(" in {env_prefix}__* variables"),
        },
        message: error.to_string(),
    })
}

/// Overrides `base` with `overlay`, key by key; tables merge recursively, other values replace.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `PREFIX__SECTION__KEY=value` variables onto `table`.
fn overlay_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    env_prefix: &str,
) -> ConfigResult<()> {
    let marker = format!("{env_prefix}__");
    for (name, raw_value) in env {
        let Some(path) = name.strip_prefix(&marker) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid(format!(
                "environment variable {name} has an empty path segment"
            )));
        }
        let value = parse_env_value(raw_value);
        let (last_key, parents) = keys.split_last().expect("split yields at least one key");
        let mut current = &mut *table;
        for key in parents {
            let entry = current
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = match entry {
                toml::Value::Table(inner) => inner,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "environment variable {name}: `{key}` is a value, not a section"
                    )));
                }
            };
        }
        current.insert(last_key.clone(), value);
    }
    Ok(())
}

/// A TOML value when the text is one (`42`, `true`, `["a"]`), else the text as a string.
fn parse_env_value(raw_value: &str) -> toml::Value {
    let document = format!("value = {raw_value}");
    match document.parse::<toml::Table>() {
        Ok(mut parsed) => parsed
            .remove("value")
            .unwrap_or_else(|| toml::Value::String(raw_value.to_owned())),
        Err(_) => toml::Value::String(raw_value.to_owned()),
    }
}

/// Every example config `deploy/config/<name_prefix>*.toml` of the repository, loaded as `T` with no
/// environment; for the unit tests that keep the examples in step with the code.
pub fn deploy_examples<T: DeserializeOwned + Serialize + Default>(
    name_prefix: &str,
    env_prefix: &str,
) -> Vec<(PathBuf, ConfigResult<T>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect()
        })
        .unwrap_or_default();
    paths.retain(|path| {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_string())
            .unwrap_or_default();
        name.starts_with(name_prefix) && name.ends_with(".toml")
    });
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let loaded = load(Some(&path), &BTreeMap::new(), env_prefix);
            (path, loaded)
        })
        .collect()
}

/// Serde of a [`std::time::Duration`] as human text (`1h`, `30s`, `500ms`), for config fields:
/// `#[serde(with = "clouddp_platform::config::duration_text")]`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `1h 30m`-style text.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `1h`, `30s`, `500ms`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|error| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like 1h or 30s: {error}"
            ))
        })
    }
}

/// The process environment as a map, for [`load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Where and how a gRPC server listens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Allow listening on a non-loopback address without TLS.
    #[serde(default)]
    pub insecure: bool,
    /// Serve plaintext gRPC with no authentication: every caller may call every RPC. Only for tests on a
    /// loopback address; by default a server speaks mutual TLS with the site's certificates.
    #[serde(default)]
    pub plaintext: bool,
    /// TLS files; when absent the site's own certificates are used.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
}

impl ServerSettings {
    /// Settings listening on `listen` with the site's certificates.
    pub fn site_tls(listen: SocketAddr) -> Self {
        Self {
            listen,
            insecure: false,
            plaintext: false,
            tls: None,
        }
    }

    /// Refuses plaintext on a non-loopback listen address unless `insecure` is set, and plaintext with TLS files.
    pub fn check(&self) -> ConfigResult<()> {
        if self.plaintext && self.tls.is_some() {
            return Err(ConfigError::Invalid(
                "plaintext and TLS files exclude each other: drop --plaintext or the TLS files"
                    .to_owned(),
            ));
        }
        if self.plaintext && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} in plaintext: drop --plaintext (the site's certificates are used), \
                 listen on a loopback address, or pass --insecure",
                self.listen
            )));
        }
        if let Some(tls) = &self.tls {
            tls.check()?;
        }
        Ok(())
    }
}

/// TLS files of a server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key. Refused when readable by others than its owner.
    pub private_key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate issued by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl TlsSettings {
    fn check(&self) -> ConfigResult<()> {
        for path in [
            Some(&self.certificate),
            Some(&self.private_key),
            self.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "TLS file {} does not exist or is not a file",
                    path.display()
                )));
            }
        }
        refuse_world_readable(&self.private_key)
    }
}

/// Refuses a secret file that others than its owner can read.
pub fn refuse_world_readable(path: &Path) -> ConfigResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(ConfigError::Invalid(format!(
            "secret file {} is readable by everyone (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// The audit trail of a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// How long events are kept (`90d` by default; at least `1h`).
    #[serde(with = "duration_text")]
    pub retention: std::time::Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: std::time::Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl AuditSettings {
    /// Refuses a retention below an hour.
    pub fn check(&self) -> ConfigResult<()> {
        if self.retention < std::time::Duration::from_secs(3600) {
            return Err(ConfigError::Invalid(
                "[audit] retention must be at least 1h".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Logging of a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter, for example `info` or `info,clouddp_monitoring=debug`. `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Sample {
        server: ServerSettings,
        #[serde(default)]
        name: String,
        #[serde(default)]
        count: u32,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                server: ServerSettings::site_tls("127.0.0.1:7400".parse().unwrap()),
                name: "default".to_owned(),
                count: 0,
            }
        }
    }

    #[test]
    fn one_env_key_keeps_the_sections_other_defaults() {
        let loaded: Sample = load(None, &env(&[("X__SERVER__INSECURE", "true")]), "X").unwrap();
        assert!(loaded.server.insecure);
        assert_eq!(loaded.server.listen, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(loaded.name, "default");
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_parses_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "name = \"file\"\n[server]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let loaded: Sample = load(
            Some(&path),
            &env(&[
                ("X__SERVER__LISTEN", "127.0.0.1:2"),
                ("X__COUNT", "7"),
                ("OTHER__NAME", "ignored"),
            ]),
            "X",
        )
        .unwrap();
        assert_eq!(loaded.server.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(loaded.name, "file");
        assert_eq!(loaded.count, 7);
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        let error = load::<Sample>(
            None,
            &env(&[
                ("X__SERVER__LISTEN", "127.0.0.1:2"),
                ("X__SERVER__LISTNE", "x"),
            ]),
            "X",
        )
        .unwrap_err();
        assert!(error.to_string().contains("listne"), "{error}");
    }

    #[test]
    fn non_loopback_without_tls_is_refused_unless_insecure() {
        let mut settings = ServerSettings::site_tls("0.0.0.0:7400".parse().unwrap());
        settings.check().unwrap();
        settings.plaintext = true;
        assert!(
            settings
                .check()
                .unwrap_err()
                .to_string()
                .contains("--insecure")
        );
        settings.insecure = true;
        settings.check().unwrap();
        let mut loopback = ServerSettings::site_tls("127.0.0.1:7400".parse().unwrap());
        loopback.plaintext = true;
        loopback.check().unwrap();
    }

    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(refuse_world_readable(&key).is_err());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        refuse_world_readable(&key).unwrap();
    }
}
