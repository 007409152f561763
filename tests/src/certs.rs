//! Certificates for the certificate tests: self-signed ones with rcgen, written as PEM pairs, .pfx files and
//! .publishsettings v1 files, the way an admin would hand them to the console.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// How long a test certificate is valid around now.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a day ago for a year.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts tomorrow.
    NotYet,
}

/// A self-signed certificate with subject CN `common_name`.
pub fn self_signed(common_name: &str, validity: Validity) -> anyhow::Result<TestCert> {
    let mut params = rcgen::CertificateParams::new(vec![common_name.replace(' ', "-")])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "clouddp tests");
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let (not_before, not_after) = match validity {
        Validity::Current => (now - day, now + day * 365),
        Validity::Expired => (now - day * 30, now - day),
        Validity::NotYet => (now + day, now + day * 30),
    };
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

impl TestCert {
    /// The .pfx bytes, with the key unless `with_key` is false.
    pub fn pfx(&self, password: &str, with_key: bool) -> anyhow::Result<Vec<u8>> {
        let certificate = p12_keystore::Certificate::from_der(&self.der)?;
        let mut store = p12_keystore::KeyStore::new();
        if with_key {
            let key = p12_keystore::PrivateKey::from_der(&self.key_der)?;
            let chain =
                p12_keystore::PrivateKeyChain::new(self.der[..20].to_vec(), key, [certificate]);
            store.add_entry("cert", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        } else {
            store.add_entry(
                "cert",
                p12_keystore::KeyStoreEntry::Certificate(certificate),
            );
        }
        Ok(store.writer(password).write()?)
    }

    /// Writes `DIR/NAME.pfx`.
    pub fn write_pfx(
        &self,
        dir: &Path,
        name: &str,
        password: &str,
        with_key: bool,
    ) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{name}.pfx"));
        std::fs::write(&path, self.pfx(password, with_key)?)
            .with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }

    /// Writes `DIR/NAME.crt` and `DIR/NAME.key` (PEM).
    pub fn write_pem(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }

    /// Writes `DIR/NAME.publishsettings` (schema version 1) naming `subscription`.
    pub fn write_publish_settings(
        &self,
        dir: &Path,
        name: &str,
        subscription: &str,
    ) -> anyhow::Result<PathBuf> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(self.pfx("", true)?);
        let path = dir.join(format!("{name}.publishsettings"));
        std::fs::write(
            &path,
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<PublishData>\n  <PublishProfile PublishMethod=\"AzureServiceManagementAPI\" \
                 Url=\"https://management.core.windows.net/\" ManagementCertificate=\"{encoded}\">\n    \
                 <Subscription Id=\"{subscription}\" Name=\"Test subscription\" />\n  </PublishProfile>\n</PublishData>\n"
            ),
        )?;
        Ok(path)
    }

    /// SHA-1 of the DER, uppercase hex: the thumbprint Windows shows.
    pub fn thumbprint(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &self.der);
        digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect()
    }
}
