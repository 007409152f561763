//! A throwaway PKI for TLS tests: a CA, and server and client certificates it issues, written as PEM files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and key written to files.
#[derive(Debug, Clone)]
pub struct PemFiles {
    /// The certificate (PEM).
    pub certificate: PathBuf,
    /// The private key (PEM, mode 0600).
    pub private_key: PathBuf,
}

/// A CA that issues certificates into a folder.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestCa")
            .field("name", &self.name)
            .finish()
    }
}

impl TestCa {
    /// A new CA named `name`, writing files under `dir`.
    pub fn new(name: &str, dir: &Path) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{name}.crt")), issuer.pem())?;
        Ok(Self {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        })
    }

    /// The CA certificate file.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, file_stem: &str, names: &[&str]) -> anyhow::Result<PemFiles> {
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or(file_stem),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file_stem, params)
    }

    /// Issues a client certificate with common name `common_name`.
    pub fn client(&self, file_stem: &str, common_name: &str) -> anyhow::Result<PemFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file_stem, params)
    }

    fn issue(&self, file_stem: &str, params: CertificateParams) -> anyhow::Result<PemFiles> {
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let files = PemFiles {
            certificate: self.dir.join(format!("{file_stem}.crt")),
            private_key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&files.certificate, certificate.pem())?;
        std::fs::write(&files.private_key, key.serialize_pem())?;
        std::fs::set_permissions(&files.private_key, std::fs::Permissions::from_mode(0o600))?;
        Ok(files)
    }
}
