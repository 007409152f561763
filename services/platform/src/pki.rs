//! The site's own certificate authority: created on the first start of the distribution manager, it issues the
//! certificates every listener presents and every caller authenticates with (a `spiffe://` URI SAN names the
//! principal). Keys are written 0600; a credential is a folder holding `ca.pem`, `cert.pem` and `key.pem`.

use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::ServerTlsConfig;

use crate::access::Principal;

/// A failure to create, read or use the site's certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A certificate or key could not be made or parsed.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> Self {
        Self::Certificate(error.to_string())
    }
}

/// Result of the PKI.
pub type PkiResult<T> = Result<T, PkiError>;

/// The files of a credential folder.
pub const CA_FILE: &str = "ca.pem";
/// The certificate of a credential folder.
pub const CERT_FILE: &str = "cert.pem";
/// The private key of a credential folder (0600).
pub const KEY_FILE: &str = "key.pem";

/// How long issued certificates are valid.
pub const CERTIFICATE_DAYS: i64 = 397;
/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` with `mode`, through a temporary file renamed into place (never half-written).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> PkiResult<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
            .map_err(io(parent))?;
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io(&temporary))?;
        file.write_all(data).map_err(io(&temporary))?;
        file.sync_all().map_err(io(&temporary))?;
    }
    std::fs::rename(&temporary, path).map_err(io(path))
}

/// The site CA.
pub struct SiteCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    trust_domain: String,
}

impl std::fmt::Debug for SiteCa {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SiteCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn ca_params(trust_domain: &str) -> PkiResult<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("clouddp site CA {trust_domain}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    Ok(params)
}

impl SiteCa {
    /// The CA in `dir` (`ca.pem`, `ca.key`), created there when missing.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> PkiResult<Self> {
        let certificate_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            crate::config::refuse_world_readable(&key_path)
                .map_err(|error| PkiError::Certificate(error.to_string()))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let certificate_pem =
                std::fs::read_to_string(&certificate_path).map_err(io(&certificate_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            // Signing needs the CA's name and key only; the name is the one it was created with.
            let issuer = Issuer::new(ca_params(trust_domain)?, key);
            return Ok(Self {
                issuer,
                certificate_pem,
                trust_domain: trust_domain.to_owned(),
            });
        }
        let key = KeyPair::generate()?;
        let params = ca_params(trust_domain)?;
        let certificate = params.self_signed(&key)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&certificate_path, certificate.pem().as_bytes(), 0o644)?;
        tracing::info!(path = %certificate_path.display(), %trust_domain, "created the site CA");
        Ok(Self {
            issuer: Issuer::new(params, key),
            certificate_pem: certificate.pem(),
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// The CA certificate (PEM).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The site's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a certificate for `principal` (its SPIFFE id as a URI SAN), valid for client and server
    /// authentication on `dns` names and `ips`; returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        principal: Option<&Principal>,
        dns: &[&str],
        ips: &[IpAddr],
    ) -> PkiResult<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let common_name = principal.map_or_else(
            || dns.first().copied().unwrap_or("clouddp").to_owned(),
            ToString::to_string,
        );
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(principal) = principal {
            let uri = principal.spiffe_id(&self.trust_domain);
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().map_err(
                    |error: rcgen::Error| PkiError::Certificate(error.to_string()),
                )?));
        }
        for name in dns {
            params.subject_alt_names.push(SanType::DnsName(
                (*name)
                    .try_into()
                    .map_err(|error: rcgen::Error| PkiError::Certificate(error.to_string()))?,
            ));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CERTIFICATE_DAYS);
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// Signs the certificate request `csr_pem` (its signature checked) for `principal`: the request's key, the
    /// site's names (the SPIFFE id only), client and server authentication, [`CERTIFICATE_DAYS`] of validity.
    /// Returns the certificate (PEM) and when it expires (ms since the epoch).
    pub fn sign_request(&self, csr_pem: &str, principal: &Principal) -> PkiResult<(String, i64)> {
        let mut request =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|error| {
                PkiError::Certificate(format!("not a valid certificate request: {error}"))
            })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, principal.to_string());
        params.subject_alt_names = vec![SanType::URI(
            principal
                .spiffe_id(&self.trust_domain)
                .try_into()
                .map_err(|error: rcgen::Error| PkiError::Certificate(error.to_string()))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CERTIFICATE_DAYS);
        let expire_ms =
            i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        request.params = params;
        let certificate = request.signed_by(&self.issuer)?;
        Ok((certificate.pem(), expire_ms))
    }

    /// Writes a credential folder for `principal` into `dir` unless one issued by this CA is there already (a
    /// site restored with its backed-up CA re-issues its own credentials); true when written.
    pub fn ensure_credential(
        &self,
        dir: &Path,
        principal: &Principal,
        dns: &[&str],
        ips: &[IpAddr],
    ) -> PkiResult<bool> {
        let issued_here =
            std::fs::read_to_string(dir.join(CA_FILE)).is_ok_and(|ca| ca == self.certificate_pem);
        if issued_here && dir.join(KEY_FILE).exists() && dir.join(CERT_FILE).exists() {
            return Ok(false);
        }
        let (certificate, key) = self.issue(Some(principal), dns, ips)?;
        write_file(&dir.join(KEY_FILE), key.as_bytes(), 0o600)?;
        write_file(&dir.join(CERT_FILE), certificate.as_bytes(), 0o644)?;
        write_file(&dir.join(CA_FILE), self.certificate_pem.as_bytes(), 0o644)?;
        Ok(true)
    }
}

/// The serial (lower-case hex, as [`crate::authorize::serial_hex`] writes it) of the first certificate in
/// `certificate_pem`.
pub fn serial_of(certificate_pem: &str) -> PkiResult<String> {
    let der = rustls_pemfile::certs(&mut certificate_pem.as_bytes())
        .next()
        .ok_or_else(|| PkiError::Certificate("no certificate in the PEM text".to_owned()))?
        .map_err(|error| PkiError::Certificate(error.to_string()))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der)
        .map_err(|error| PkiError::Certificate(error.to_string()))?;
    Ok(crate::authorize::serial_hex(certificate.raw_serial()))
}

/// The names a loopback listener's certificate carries.
pub const LOCAL_NAMES: &[&str] = &["localhost"];

/// The addresses a listener's certificate carries: loopback, and `listen` when it is a specific address.
pub fn listener_ips(listen: IpAddr) -> Vec<IpAddr> {
    let mut ips = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    if !listen.is_unspecified() && !ips.contains(&listen) {
        ips.push(listen);
    }
    ips
}

/// Server TLS: the operator's files when given, else the certificate and key of the credential folder `dir`;
/// clients are verified against the files' client CA, else the site CA of the folder.
pub fn server_tls(
    files: Option<&crate::config::TlsSettings>,
    dir: &Path,
) -> crate::tls::TlsResult<ServerTlsConfig> {
    let site = crate::config::TlsSettings {
        certificate: dir.join(CERT_FILE),
        private_key: dir.join(KEY_FILE),
        client_ca: None,
    };
    crate::tls::server_config(files.unwrap_or(&site), &dir.join(CA_FILE))
}

/// The trust domain of the credential in `dir`, read from its certificate's `spiffe://` id.
pub fn trust_domain_of_credential(dir: &Path) -> PkiResult<String> {
    let path = dir.join(CERT_FILE);
    let pem = std::fs::read(&path).map_err(io(&path))?;
    let not_ours = |why: &str| PkiError::Certificate(format!("{}: {why}", path.display()));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|error| not_ours(&error.to_string()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|error| not_ours(&error.to_string()))?;
    crate::authorize::uri_names(&certificate)
        .into_iter()
        .find_map(|uri| {
            uri.strip_prefix("spiffe://")
                .and_then(|rest| rest.split_once('/'))
                .map(|(domain, _)| domain.to_owned())
        })
        .ok_or_else(|| not_ours("carries no spiffe:// id"))
}

/// Client TLS files of a credential folder, for calls to another service of the site.
pub fn client_settings(dir: &Path) -> crate::tls::ClientTlsSettings {
    crate::tls::ClientTlsSettings {
        ca_certificate: Some(dir.join(CA_FILE)),
        client_certificate: Some(dir.join(CERT_FILE)),
        client_key: Some(dir.join(KEY_FILE)),
        server_name: None,
    }
}
