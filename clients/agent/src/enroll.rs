//! Enrollment: the device makes its key here, sends a certificate request with a bulk registration token, and
//! keeps the certificate the site signs in its identity folder (`key.pem` 0600, `cert.pem`, `ca.pem`,
//! `device-id`). Later calls present that certificate: the site knows the device from it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clouddp_proto::v1 as pb;
use clouddp_proto::v1::device_service_client::DeviceServiceClient;

use crate::AgentConfig;

/// The files of an identity folder.
pub const KEY_FILE: &str = "key.pem";
/// The device certificate.
pub const CERT_FILE: &str = "cert.pem";
/// The site CA.
pub const CA_FILE: &str = "ca.pem";
/// The device id the certificate names.
pub const DEVICE_ID_FILE: &str = "device-id";

/// An enrollment that failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Local input or files.
    #[error("{0}")]
    Local(String),
    /// The distribution manager could not be reached.
    #[error("cannot reach the distribution manager at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The site refused.
    #[error("the site refused ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
}

impl EnrollError {
    /// The process exit code: 1 local, 3 unreachable, 4 refused (as `get`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Local(_) => 1,
            Self::Unreachable { .. } => 3,
            Self::Refused { .. } => 4,
        }
    }
}

/// A certificate chain and its private key.
pub type RustlsCredential = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The device's enrolled identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its folder.
    pub dir: PathBuf,
    /// The device id its certificate names.
    pub device_id: String,
}

impl Identity {
    /// The identity in `dir`, when the device has enrolled. A renewal cut short is finished or undone first.
    pub fn load(dir: &Path) -> Option<Self> {
        finish_renewal(dir);
        let device_id = std::fs::read_to_string(dir.join(DEVICE_ID_FILE)).ok()?;
        (dir.join(CERT_FILE).is_file() && dir.join(KEY_FILE).is_file()).then(|| Self {
            dir: dir.to_path_buf(),
            device_id: device_id.trim().to_owned(),
        })
    }

    /// The certificate and key, for TLS client authentication.
    pub fn tls_identity(&self) -> std::io::Result<tonic::transport::Identity> {
        Ok(tonic::transport::Identity::from_pem(
            std::fs::read(self.dir.join(CERT_FILE))?,
            std::fs::read(self.dir.join(KEY_FILE))?,
        ))
    }

    /// The certificate chain and key, for rustls.
    pub fn rustls_credential(&self) -> std::io::Result<RustlsCredential> {
        let chain = rustls_pemfile::certs(&mut std::fs::read(self.dir.join(CERT_FILE))?.as_slice())
            .collect::<Result<Vec<_>, _>>()?;
        let key =
            rustls_pemfile::private_key(&mut std::fs::read(self.dir.join(KEY_FILE))?.as_slice())?
                .ok_or_else(|| std::io::Error::other(format!("{KEY_FILE} holds no private key")))?;
        Ok((chain, key))
    }

    /// `base` TLS to the site's services as this device: the site CA trusted too, the device certificate
    /// presented.
    pub fn client_tls(
        &self,
        base: tonic::transport::ClientTlsConfig,
    ) -> std::io::Result<tonic::transport::ClientTlsConfig> {
        Ok(base
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca_pem()?))
            .identity(self.tls_identity()?))
    }

    /// The site CA.
    pub fn ca_pem(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(CA_FILE))
    }
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), EnrollError> {
    let local = |error: std::io::Error| {
        EnrollError::Local(format!("cannot write {}: {error}", path.display()))
    };
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(local)?;
    file.write_all(data).map_err(local)?;
    file.sync_all().map_err(local)?;
    std::fs::rename(&temporary, path).map_err(local)
}

/// The suffix of a renewed key and certificate before they replace the current ones.
const NEXT: &str = "next";

/// A renewal writes `key.pem.next` and `cert.pem.next`, then renames the key, then the certificate. Both still
/// there: nothing was replaced, so they go. Only the certificate there: the key was replaced, so the certificate
/// follows.
fn finish_renewal(dir: &Path) {
    let (key, certificate) = (
        dir.join(format!("{KEY_FILE}.{NEXT}")),
        dir.join(format!("{CERT_FILE}.{NEXT}")),
    );
    if key.exists() {
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(&certificate);
    } else if certificate.exists() {
        let _ = std::fs::rename(&certificate, dir.join(CERT_FILE));
    }
}

/// When the certificate in `dir` expires, ms since the epoch.
fn certificate_expiry(dir: &Path) -> Result<i64, EnrollError> {
    let pem = std::fs::read(dir.join(CERT_FILE))
        .map_err(|error| EnrollError::Local(format!("cannot read {CERT_FILE}: {error}")))?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|error| EnrollError::Local(format!("{CERT_FILE}: {error}")))?;
    let certificate = parsed
        .parse_x509()
        .map_err(|error| EnrollError::Local(format!("{CERT_FILE}: {error}")))?;
    Ok(certificate.validity().not_after.timestamp() * 1000)
}

/// A new key and a certificate request for it (PEM).
fn key_and_request(common_name: &str) -> Result<(rcgen::KeyPair, String), EnrollError> {
    let key =
        rcgen::KeyPair::generate().map_err(|error| EnrollError::Local(format!("key: {error}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|error| EnrollError::Local(error.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let request = params
        .serialize_request(&key)
        .and_then(|request| request.pem())
        .map_err(|error| EnrollError::Local(format!("certificate request: {error}")))?;
    Ok((key, request))
}

fn refused(config: &AgentConfig, status: tonic::Status) -> EnrollError {
    if status.code() == tonic::Code::Unavailable && std::error::Error::source(&status).is_some() {
        EnrollError::Unreachable {
            endpoint: config.endpoint.clone(),
            detail: status.message().to_owned(),
        }
    } else {
        EnrollError::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Renews the device's certificate with a new key when it expires within `renew_before_days` (or always, with
/// `force`); true when renewed. The current certificate authenticates the request; the new key and certificate
/// replace the old ones so that a crash leaves one whole pair.
pub async fn renew(
    config: &AgentConfig,
    identity: &Identity,
    force: bool,
) -> Result<bool, EnrollError> {
    let expires = certificate_expiry(&identity.dir)?;
    let margin = i64::from(config.renew_before_days) * 86_400_000;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    if !force && expires - now > margin {
        return Ok(false);
    }
    let unreadable = |error: std::io::Error| {
        EnrollError::Local(format!(
            "cannot read the identity in {}: {error}",
            identity.dir.display()
        ))
    };
    let tls = identity
        .client_tls(tonic::transport::ClientTlsConfig::new())
        .map_err(unreadable)?;
    let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|error| EnrollError::Local(format!("endpoint {:?}: {error}", config.endpoint)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tls_config(tls)
        .map_err(|error| EnrollError::Local(error.to_string()))?;
    let (key, request) = key_and_request(&identity.device_id)?;
    let answer = DeviceServiceClient::new(endpoint.connect_lazy())
        .renew_device_certificate(pb::RenewDeviceCertificateRequest {
            certificate_request_pem: request,
        })
        .await
        .map_err(|status| refused(config, status))?
        .into_inner();
    let dir = &identity.dir;
    let (next_key, next_certificate) = (
        dir.join(format!("{KEY_FILE}.{NEXT}")),
        dir.join(format!("{CERT_FILE}.{NEXT}")),
    );
    write(&next_key, key.serialize_pem().as_bytes(), 0o600)?;
    write(&next_certificate, answer.certificate_pem.as_bytes(), 0o644)?;
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|error| {
            EnrollError::Local(format!("cannot replace {}: {error}", to.display()))
        })
    };
    moved(&next_key, &dir.join(KEY_FILE))?;
    moved(&next_certificate, &dir.join(CERT_FILE))?;
    write(
        &dir.join(CA_FILE),
        answer.ca_certificate_pem.as_bytes(),
        0o644,
    )?;
    Ok(true)
}

/// Enrolls this device as `device_id` with `token`, trusting `ca_certificate` for the distribution manager's
/// certificate, and writes the identity into `config.identity_dir`.
pub async fn enroll(
    config: &AgentConfig,
    token: &str,
    device_id: &str,
    ca_certificate: Option<&Path>,
) -> Result<Identity, EnrollError> {
    if !config.endpoint.starts_with("https://") {
        return Err(EnrollError::Local(format!(
            "endpoint {:?}: enrollment needs the distribution manager's https:// URL",
            config.endpoint
        )));
    }
    let (key, request) = key_and_request(device_id)?;
    let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = ca_certificate.or(config.ca_certificate.as_deref()) {
        let pem = std::fs::read(ca).map_err(|error| {
            EnrollError::Local(format!("cannot read {}: {error}", ca.display()))
        })?;
        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
        .map_err(|error| EnrollError::Local(format!("endpoint {:?}: {error}", config.endpoint)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tls_config(tls)
        .map_err(|error| EnrollError::Local(error.to_string()))?;
    let answer = DeviceServiceClient::new(endpoint.connect_lazy())
        .enroll_device(pb::EnrollDeviceRequest {
            token: token.trim().to_owned(),
            device_id: device_id.to_owned(),
            certificate_request_pem: request,
        })
        .await
        .map_err(|status| refused(config, status))?
        .into_inner();
    let dir = &config.identity_dir;
    std::fs::create_dir_all(dir)
        .map_err(|error| EnrollError::Local(format!("cannot create {}: {error}", dir.display())))?;
    write(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    write(
        &dir.join(CERT_FILE),
        answer.certificate_pem.as_bytes(),
        0o644,
    )?;
    write(
        &dir.join(CA_FILE),
        answer.ca_certificate_pem.as_bytes(),
        0o644,
    )?;
    write(
        &dir.join(DEVICE_ID_FILE),
        answer.device_id.as_bytes(),
        0o644,
    )?;
    Ok(Identity {
        dir: dir.clone(),
        device_id: answer.device_id,
    })
}
