//! The site's identities in tests: credentials the site CA issues for any principal (the test reads the CA key
//! from the distribution manager's data dir, as only its owner can), and mutual-TLS channels that use them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clouddp_platform::access::{Principal, PrincipalKind, trust_domain};
use clouddp_platform::pki::{CA_FILE, CERT_FILE, KEY_FILE, SiteCa};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::ServiceProcess;

/// A services' site (code `CDP`) whose CA issues test credentials.
pub struct Site {
    ca: SiteCa,
    dir: TempDir,
    manager_data: PathBuf,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Site")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Site {
    /// The site of `manager` (started with its own certificates, not plaintext).
    pub fn of(manager: &ServiceProcess) -> anyhow::Result<Self> {
        let ca = SiteCa::load_or_create(&manager.data_dir().join("pki"), &trust_domain("CDP"))?;
        Ok(Self {
            ca,
            dir: tempfile::Builder::new().prefix("credentials-").tempdir()?,
            manager_data: manager.data_dir().to_owned(),
        })
    }

    /// The first administrator's credential, written by the site's first start.
    pub fn first_admin(&self) -> PathBuf {
        self.manager_data.join("admin")
    }

    /// The console configuration written for the first administrator.
    pub fn admin_config(&self) -> PathBuf {
        self.manager_data.join("admin/clouddp.toml")
    }

    /// The monitoring service's credential, written by the site's first start.
    pub fn monitoring(&self) -> PathBuf {
        self.manager_data.join("services/monitoring")
    }

    /// A credential folder for `kind`/`name`, issued now by the site CA.
    pub fn credential(&self, kind: PrincipalKind, name: &str) -> anyhow::Result<PathBuf> {
        let principal = Principal::new(kind, name);
        let dir = self.dir.path().join(format!("{kind:?}-{name}"));
        self.ca.ensure_credential(&dir, &principal, &[], &[])?;
        Ok(dir)
    }
}

/// A mutual-TLS channel to `url` (`https://localhost:PORT`) with the credential in `dir`, or with no client
/// certificate (trusting the CA of `ca_dir`).
pub async fn channel(
    url: &str,
    ca_dir: &Path,
    credential: Option<&Path>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca_dir.join(CA_FILE))?))
        .domain_name("localhost");
    if let Some(dir) = credential {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join(CERT_FILE))?,
            std::fs::read(dir.join(KEY_FILE))?,
        ));
    }
    Ok(Endpoint::from_shared(url.to_owned())?
        .timeout(Duration::from_secs(10))
        .tls_config(tls)?
        .connect()
        .await?)
}
