//! TLS material for gRPC servers and clients, read from PEM files.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{TlsSettings, refuse_world_readable};

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret file is readable by everyone.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Result of loading TLS material.
pub type TlsResult<T> = Result<T, TlsError>;

fn read_pem(what: &'static str, path: &Path) -> TlsResult<Vec<u8>> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The server side with the certificate and key of `settings`, verifying the certificates clients present against
/// `client_ca` when the settings name no client CA of their own. A client without a certificate still connects
/// (health stays open); the authorization layer answers its calls UNAUTHENTICATED.
pub fn server_config(settings: &TlsSettings, client_ca: &Path) -> TlsResult<ServerTlsConfig> {
    refuse_world_readable(&settings.private_key)?;
    let certificate = read_pem("TLS certificate", &settings.certificate)?;
    let private_key = read_pem("TLS private key", &settings.private_key)?;
    let ca = read_pem(
        "client CA",
        settings.client_ca.as_deref().unwrap_or(client_ca),
    )?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(certificate, private_key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(true))
}

/// Client-side TLS files.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// PEM CA certificates that issued the server's certificate.
    #[serde(default)]
    pub ca_certificate: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// PEM client private key for mutual TLS.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name to verify in the server's certificate, when it differs from the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl ClientTlsSettings {
    /// The tonic client TLS config for these files.
    pub fn client_config(&self) -> TlsResult<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_certificate {
            config = config.ca_certificate(Certificate::from_pem(read_pem("CA certificate", ca)?));
        }
        match (&self.client_certificate, &self.client_key) {
            (Some(certificate), Some(key)) => {
                refuse_world_readable(key)?;
                config = config.identity(Identity::from_pem(
                    read_pem("client certificate", certificate)?,
                    read_pem("client key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(crate::config::ConfigError::Invalid(
                    "a client certificate needs its key and a key needs its certificate".to_owned(),
                )
                .into());
            }
        }
        if let Some(server_name) = &self.server_name {
            config = config.domain_name(server_name.clone());
        }
        Ok(config)
    }
}
