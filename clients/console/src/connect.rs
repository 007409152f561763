//! Endpoints, channels and the mapping of gRPC failures to messages a person can act on.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE};

/// Where the services are and how to reach them.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// A console configuration file (endpoints, CA, client certificate and key), as the site's first start
    /// writes for its first administrator (`admin/clouddp.toml` in the distribution manager's data dir).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// The distribution manager's gRPC URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_ENDPOINT"
    )]
    pub endpoint: Option<String>,
    /// The monitoring service's gRPC URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_MONITORING_ENDPOINT"
    )]
    pub monitoring_endpoint: Option<String>,
    /// PEM CA certificate that issued the services' certificates (for https:// URLs).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_CA_CERT",
        value_name = "FILE"
    )]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, when the services require mutual TLS.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM client private key, when the services require mutual TLS.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for each request.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        hide = true,
        env = "CLOUDDP_TIMEOUT",
        default_value_t = 30
    )]
    pub timeout: u64,
}

/// The distribution manager's URL when neither a flag nor a configuration names one.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7400";
/// The monitoring service's URL when neither a flag nor a configuration names one.
pub const DEFAULT_MONITORING_ENDPOINT: &str = "https://127.0.0.1:7401";

/// A console configuration file: every key optional; flags and environment variables win over it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    endpoint: Option<String>,
    monitoring_endpoint: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// Which service a call goes to, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The distribution manager.
    DistributionManager,
    /// The monitoring service.
    Monitoring,
}

impl Service {
    /// Its name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::DistributionManager => "distribution manager",
            Self::Monitoring => "monitoring service",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::DistributionManager => "--endpoint or CLOUDDP_ENDPOINT",
            Self::Monitoring => "--monitoring-endpoint or CLOUDDP_MONITORING_ENDPOINT",
        }
    }
}

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The service could not be reached.
    #[error(
        "cannot reach the {service} at {url}: {detail}. Is it running? Point {flag} at it, or give the console its configuration: export CLOUDDP_CONFIG=<distribution manager data dir>/admin/clouddp.toml"
    )]
    Unreachable {
        service: &'static str,
        url: String,
        detail: String,
        flag: &'static str,
    },
    /// The service answered with an error.
    #[error("the {service} refused the request ({code}): {message}")]
    Refused {
        service: &'static str,
        code: String,
        message: String,
    },
    /// Local input or setup is wrong.
    #[error("{0}")]
    Local(String),
    /// The command line is incomplete (a confirmation not given): exit 2, as bad usage.
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The error as one JSON object: `{"error": {"kind", "message", …}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let detail = match self {
            Self::Unreachable { service, url, .. } => serde_json::json!({
                "kind": "unreachable", "service": service, "url": url, "message": self.to_string(),
            }),
            Self::Refused {
                service,
                code,
                message,
            } => serde_json::json!({
                "kind": "refused", "service": service, "code": code, "message": message,
            }),
            Self::Local(message) => serde_json::json!({ "kind": "local", "message": message }),
            Self::Usage(message) => serde_json::json!({ "kind": "usage", "message": message }),
        };
        serde_json::json!({ "error": detail, "exit_code": self.exit_code() })
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            Self::Refused { .. } | Self::Local(_) => EXIT_FAILED,
            Self::Usage(_) => EXIT_USAGE,
        }
    }
}

/// Result of a command.
pub type CliResult<T> = Result<T, CliError>;

fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

impl Endpoints {
    /// Fills what the flags and environment left open from the configuration file: `--config`, else
    /// `CLOUDDP_CONFIG`, else `~/.config/clouddp/config.toml` when it exists (as kubectl reads a kubeconfig).
    pub fn resolve(&mut self) -> CliResult<()> {
        let path = self.config.clone().or_else(|| {
            let home = std::env::var_os("HOME")?;
            let path = PathBuf::from(home).join(".config/clouddp/config.toml");
            path.is_file().then_some(path)
        });
        let Some(path) = path else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|error| {
            CliError::Local(format!(
                "cannot read the console configuration {}: {error}",
                path.display()
            ))
        })?;
        let file: ConfigFile = toml::from_str(&text).map_err(|error| {
            CliError::Local(format!("console configuration {}: {error}", path.display()))
        })?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().map(PathBuf::from).unwrap_or_default();
        let at = |file: Option<PathBuf>| file.map(|file| base.join(file));
        if self.endpoint.is_none() {
            self.endpoint = file.endpoint;
        }
        if self.monitoring_endpoint.is_none() {
            self.monitoring_endpoint = file.monitoring_endpoint;
        }
        if self.ca_cert.is_none() {
            self.ca_cert = at(file.ca_cert);
        }
        if self.client_cert.is_none() && self.client_key.is_none() {
            self.client_cert = at(file.client_cert);
            self.client_key = at(file.client_key);
        }
        self.config = Some(path);
        Ok(())
    }

    /// The URL of `service`.
    pub fn url(&self, service: Service) -> &str {
        match service {
            Service::DistributionManager => self.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT),
            Service::Monitoring => self
                .monitoring_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_MONITORING_ENDPOINT),
        }
    }

    /// A lazily connecting channel to `service`.
    pub fn channel(&self, service: Service) -> CliResult<Channel> {
        let url = self.url(service);
        let local = |message: String| {
            CliError::Local(format!("{} url {url:?}: {message}", service.label()))
        };
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|error| local(error.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(self.timeout));
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_cert {
                let pem = std::fs::read(ca).map_err(|error| {
                    CliError::Local(format!("cannot read --ca-cert {}: {error}", ca.display()))
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(certificate), Some(key)) = (&self.client_cert, &self.client_key) {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|error| {
                        CliError::Local(format!("cannot read {}: {error}", path.display()))
                    })
                };
                tls = tls.identity(Identity::from_pem(read(certificate)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| local(error.to_string()))?;
        } else if !url.starts_with("http://") {
            return Err(local("use an http:// or https:// url".to_owned()));
        }
        Ok(endpoint.connect_lazy())
    }

    /// Turns a failed call to `service` into a message a person can act on.
    pub fn failure(&self, service: Service, status: &tonic::Status) -> CliError {
        // A transport failure carries its cause; an UNAVAILABLE sent by the service itself does not.
        let transport_failure = status.code() == tonic::Code::Unavailable
            && std::error::Error::source(status).is_some();
        if transport_failure {
            let detail = std::error::Error::source(status)
                .map(innermost)
                .unwrap_or_else(|| status.message().to_owned());
            return CliError::Unreachable {
                service: service.label(),
                url: self.url(service).to_owned(),
                detail,
                flag: service.flag(),
            };
        }
        CliError::Refused {
            service: service.label(),
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }
    }
}
