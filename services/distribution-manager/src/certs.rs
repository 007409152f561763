//! Certificates: parsing and validating what an admin imports (.pfx with its password, PEM pairs, .publishsettings
//! v1), and their repository. Private keys are stored only sealed by the site key; passwords are used once and
//! dropped; nothing here ever returns a private key to a caller outside the process.

use std::sync::Arc;

use base64::Engine as _;
use clouddp_core::ValidationError;
use clouddp_platform::clock::now_ms;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use sqlx::{Row, SqlitePool};

use crate::error::{DmError, DmResult};
use crate::keys::SiteKey;

/// What a certificate is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// Authenticates the site to the subscription's management API.
    Management,
    /// Secures clients' HTTPS downloads; its CN is the DP's service FQDN.
    Service,
}

impl CertKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Management => "management",
            Self::Service => "service",
        }
    }

    /// From the stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "management" => Some(Self::Management),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// The public details of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// `cert-<uuid>` once stored; empty before.
    pub id: String,
    /// Use.
    pub kind: CertKind,
    /// Subject DN.
    pub subject: String,
    /// Subject CN (empty when it has none).
    pub common_name: String,
    /// Issuer DN.
    pub issuer: String,
    /// SHA-1 of the DER, uppercase hex.
    pub thumbprint: String,
    /// Validity start, ms since the epoch.
    pub not_before_ms: i64,
    /// Validity end, ms since the epoch.
    pub not_after_ms: i64,
    /// True when the site holds its (sealed) private key.
    pub has_private_key: bool,
    /// The subscription a .publishsettings file named.
    pub subscription_id: String,
    /// DPs that use it.
    pub dp_ids: Vec<String>,
}

/// A private key in one of the encodings rustls reads.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDer {
    format: u8,
    der: Vec<u8>,
}

impl std::fmt::Debug for KeyDer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("KeyDer(<private key>)")
    }
}

const KEY_PKCS8: u8 = 1;
const KEY_SEC1: u8 = 2;
const KEY_PKCS1: u8 = 3;

impl KeyDer {
    fn from_rustls(key: &PrivateKeyDer<'_>) -> Option<Self> {
        let (format, der) = match key {
            PrivateKeyDer::Pkcs8(key) => (KEY_PKCS8, key.secret_pkcs8_der()),
            PrivateKeyDer::Sec1(key) => (KEY_SEC1, key.secret_sec1_der()),
            PrivateKeyDer::Pkcs1(key) => (KEY_PKCS1, key.secret_pkcs1_der()),
            _ => return None,
        };
        Some(Self {
            format,
            der: der.to_vec(),
        })
    }

    /// The key for rustls.
    pub fn to_rustls(&self) -> PrivateKeyDer<'static> {
        match self.format {
            KEY_SEC1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(self.der.clone())),
            KEY_PKCS1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(self.der.clone())),
            _ => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.der.clone())),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.der.len() + 1);
        bytes.push(self.format);
        bytes.extend_from_slice(&self.der);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> DmResult<Self> {
        match bytes.split_first() {
            Some((&format, der)) if (KEY_PKCS8..=KEY_PKCS1).contains(&format) => Ok(Self {
                format,
                der: der.to_vec(),
            }),
            _ => Err(DmError::Internal(
                "stored private key is damaged".to_owned(),
            )),
        }
    }
}

/// A certificate chain and its private key, parsed and checked, ready to store.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// Public details (id empty).
    pub info: CertInfo,
    /// The chain, leaf first, DER.
    pub chain: Vec<Vec<u8>>,
    /// The private key.
    pub key: KeyDer,
}

fn invalid(field: &'static str, message: impl Into<String>) -> DmError {
    ValidationError::new(field, message).into()
}

/// Reads the public details of a DER certificate.
pub fn describe(kind: CertKind, der: &[u8]) -> Result<CertInfo, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| format!("not an X.509 certificate: {error}"))?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    Ok(CertInfo {
        id: String::new(),
        kind,
        subject: certificate.subject().to_string(),
        common_name,
        issuer: certificate.issuer().to_string(),
        thumbprint: hex::encode_upper(digest.as_ref()),
        not_before_ms: certificate
            .validity()
            .not_before
            .timestamp()
            .saturating_mul(1000),
        not_after_ms: certificate
            .validity()
            .not_after
            .timestamp()
            .saturating_mul(1000),
        has_private_key: false,
        subscription_id: String::new(),
        dp_ids: Vec::new(),
    })
}

/// Why a certificate cannot serve TLS for a content endpoint, if it cannot: a CA certificate (clients refuse it
/// as a server's), one whose extended key usage leaves out server authentication, or one without a common name.
fn unfit_for_serving(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    if let Ok(Some(constraints)) = certificate.basic_constraints()
        && constraints.value.ca
    {
        return Some("it is a CA certificate (basic constraints CA:TRUE)".to_owned());
    }
    if let Ok(Some(usage)) = certificate.extended_key_usage()
        && !usage.value.server_auth
        && !usage.value.any
    {
        return Some(
            "its extended key usage does not include TLS server authentication".to_owned(),
        );
    }
    let has_common_name = certificate.subject().iter_common_name().next().is_some();
    (!has_common_name).then(|| "its subject has no common name (the service FQDN)".to_owned())
}

/// Checks a chain and key: the leaf parses, is valid at `now_ms`, and the key is the leaf's key.
fn check(
    kind: CertKind,
    field: &'static str,
    chain: Vec<Vec<u8>>,
    key: Option<KeyDer>,
    now: i64,
) -> DmResult<ParsedCertificate> {
    let leaf = chain
        .first()
        .ok_or_else(|| invalid(field, "the file holds no certificate"))?;
    let mut info = describe(kind, leaf).map_err(|message| invalid(field, message))?;
    let key = key.ok_or_else(|| {
        invalid(
            field,
            format!(
                "the certificate {:?} comes without its private key; export it again with the private key",
                info.subject
            ),
        )
    })?;
    if now < info.not_before_ms {
        return Err(invalid(
            field,
            format!(
                "the certificate {:?} is not valid yet (valid from {})",
                info.subject,
                clouddp_platform::clock::rfc3339(info.not_before_ms)
            ),
        ));
    }
    if now > info.not_after_ms {
        return Err(invalid(
            field,
            format!(
                "the certificate {:?} expired on {}; import a current one",
                info.subject,
                clouddp_platform::clock::rfc3339(info.not_after_ms)
            ),
        ));
    }
    if kind == CertKind::Service
        && let Some(problem) = unfit_for_serving(leaf)
    {
        return Err(invalid(
            field,
            format!(
                "the certificate {:?} cannot be a service certificate: {problem}; use a TLS server certificate issued for the service FQDN",
                info.subject
            ),
        ));
    }
    let certified = certified_key(&chain, &key.to_rustls())
        .map_err(|error| invalid(field, format!("the private key cannot be used: {error}")))?;
    certified.keys_match().map_err(|_| {
        invalid(
            field,
            format!(
                "the private key does not belong to the certificate {:?}",
                info.subject
            ),
        )
    })?;
    info.has_private_key = true;
    Ok(ParsedCertificate { info, chain, key })
}

/// A chain (leaf first, DER) and its private key as rustls serves them.
pub fn certified_key(
    chain: &[Vec<u8>],
    key: &PrivateKeyDer<'_>,
) -> Result<rustls::sign::CertifiedKey, rustls::Error> {
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(key)?;
    Ok(rustls::sign::CertifiedKey::new(
        chain
            .iter()
            .map(|der| CertificateDer::from(der.clone()))
            .collect(),
        signing,
    ))
}

/// Parses a .pfx file with its password.
pub fn parse_pkcs12(
    kind: CertKind,
    field: &'static str,
    data: &[u8],
    password: &str,
    now: i64,
) -> DmResult<ParsedCertificate> {
    if data.is_empty() {
        return Err(invalid(field, "the .pfx file is empty"));
    }
    let store = p12_keystore::KeyStore::from_pkcs12(data, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
        .map_err(|error| match error {
            p12_keystore::error::Error::MacError(_) => invalid(
                field,
                "the .pfx password is wrong (the file's integrity check failed); give the password it was exported with",
            ),
            other => invalid(field, format!("not a readable .pfx (PKCS#12) file: {other}")),
        })?;
    match store.private_key_chain() {
        Some((_, chain)) if !chain.certs().is_empty() => {
            let certs = chain
                .certs()
                .iter()
                .map(|cert| cert.as_der().to_vec())
                .collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
            check(kind, field, certs, KeyDer::from_rustls(&key), now)
        }
        _ => {
            let certs: Vec<Vec<u8>> = store
                .entries()
                .filter_map(|(_, entry)| match entry {
                    p12_keystore::KeyStoreEntry::Certificate(cert) => Some(cert.as_der().to_vec()),
                    _ => None,
                })
                .collect();
            check(kind, field, certs, None, now)
        }
    }
}

/// Parses a PEM certificate chain and its PEM private key.
pub fn parse_pem(
    kind: CertKind,
    field: &'static str,
    certificate_pem: &str,
    key_pem: &str,
    now: i64,
) -> DmResult<ParsedCertificate> {
    let chain = rustls_pemfile::certs(&mut certificate_pem.as_bytes())
        .map(|cert| cert.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            invalid(
                field,
                format!("the certificate PEM is not readable: {error}"),
            )
        })?;
    if chain.is_empty() {
        return Err(invalid(
            field,
            "no CERTIFICATE block in the certificate PEM",
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).map_err(|error| {
        invalid(
            field,
            format!("the private key PEM is not readable: {error}"),
        )
    })?;
    check(
        kind,
        field,
        chain,
        key.as_ref().and_then(KeyDer::from_rustls),
        now,
    )
}

/// Parses a .publishsettings file of schema version 1: its management certificate (a password-less PKCS#12 in
/// the `PublishProfile` element) and the subscription it names.
pub fn parse_publish_settings(
    field: &'static str,
    xml: &[u8],
    now: i64,
) -> DmResult<ParsedCertificate> {
    let text = std::str::from_utf8(xml)
        .map_err(|_| invalid(field, "a .publishsettings file is UTF-8 XML"))?;
    let document = roxmltree::Document::parse(text).map_err(|error| {
        invalid(
            field,
            format!("not a readable .publishsettings file: {error}"),
        )
    })?;
    let profile = document
        .descendants()
        .find(|node| node.has_tag_name("PublishProfile"))
        .ok_or_else(|| {
            invalid(
                field,
                "no PublishProfile element: not a .publishsettings file",
            )
        })?;
    if let Some(version) = profile.attribute("SchemaVersion")
        && !version.starts_with('1')
    {
        return Err(invalid(
            field,
            format!(
                "schema version {version} is not supported; download a version 1 .publishsettings file"
            ),
        ));
    }
    let encoded = profile.attribute("ManagementCertificate").ok_or_else(|| {
        invalid(
            field,
            "the PublishProfile has no ManagementCertificate attribute (a version 2 file keeps it per subscription; use a version 1 file or the .pfx)",
        )
    })?;
    let subscription_id = profile
        .descendants()
        .find(|node| node.has_tag_name("Subscription"))
        .and_then(|node| node.attribute("Id"))
        .ok_or_else(|| invalid(field, "the PublishProfile names no Subscription Id"))?;
    let subscription_id = clouddp_core::validate::guid(field, subscription_id)?;
    let pfx = base64::engine::general_purpose::STANDARD
        .decode(encoded.split_whitespace().collect::<String>())
        .map_err(|_| invalid(field, "the ManagementCertificate attribute is not base64"))?;
    let mut parsed = parse_pkcs12(CertKind::Management, field, &pfx, "", now)?;
    parsed.info.subscription_id = subscription_id;
    Ok(parsed)
}

/// True when `common_name` names the device `device` (its full name or its first label, case-insensitively).
pub fn matches_device(common_name: &str, device: &str) -> bool {
    let host = common_name.split('.').next().unwrap_or_default();
    common_name.eq_ignore_ascii_case(device)
        || (!host.is_empty() && host.eq_ignore_ascii_case(device))
}

/// The columns of a certificate's public details, with the DPs that use it.
macro_rules! select_info {
    () => {
        "SELECT c.*, group_concat(d.id) AS dp_ids FROM certificates c LEFT JOIN distribution_points d \
         ON d.management_certificate_id = c.id OR d.service_certificate_id = c.id"
    };
}

/// Stores certificates with their keys sealed by the site key.
#[derive(Debug, Clone)]
pub struct CertificateStore {
    pool: SqlitePool,
    site_key: Arc<SiteKey>,
}

impl CertificateStore {
    /// A store over `pool`.
    pub fn new(pool: SqlitePool, site_key: Arc<SiteKey>) -> Self {
        Self { pool, site_key }
    }

    /// Stores `parsed` in `transaction`, or returns the id of the same certificate (same thumbprint and kind)
    /// already stored.
    pub async fn insert(
        &self,
        transaction: &mut sqlx::SqliteConnection,
        parsed: &ParsedCertificate,
    ) -> DmResult<String> {
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM certificates WHERE thumbprint = ?1 AND kind = ?2")
                .bind(&parsed.info.thumbprint)
                .bind(parsed.info.kind.as_str())
                .fetch_optional(&mut *transaction)
                .await?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = format!("cert-{}", uuid::Uuid::new_v4());
        let chain: Vec<String> = parsed
            .chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect();
        let sealed = self.site_key.wrap(&parsed.key.to_bytes(), &id)?;
        sqlx::query(
            "INSERT INTO certificates (id, kind, subject, common_name, issuer, thumbprint, not_before_ms, not_after_ms, \
             chain, sealed_key, subscription_id, create_time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(&id)
        .bind(parsed.info.kind.as_str())
        .bind(&parsed.info.subject)
        .bind(&parsed.info.common_name)
        .bind(&parsed.info.issuer)
        .bind(&parsed.info.thumbprint)
        .bind(parsed.info.not_before_ms)
        .bind(parsed.info.not_after_ms)
        .bind(serde_json::to_string(&chain).map_err(|error| DmError::Internal(error.to_string()))?)
        .bind(sealed)
        .bind(&parsed.info.subscription_id)
        .bind(now_ms())
        .execute(&mut *transaction)
        .await?;
        tracing::info!(certificate.id = %id, kind = parsed.info.kind.as_str(), subject = %parsed.info.subject, thumbprint = %parsed.info.thumbprint, "certificate imported");
        Ok(id)
    }

    /// One certificate by id or thumbprint.
    pub async fn get(&self, id_or_thumbprint: &str) -> DmResult<CertInfo> {
        let row = sqlx::query(concat!(select_info!(), " WHERE c.id = ?1 OR c.thumbprint = upper(?1) GROUP BY c.id"))
            .bind(id_or_thumbprint.trim())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                DmError::NotFound(format!(
                    "no certificate has the id or thumbprint {id_or_thumbprint:?}; list them with `clouddp cert show`"
                ))
            })?;
        decode_info(&row)
    }

    /// Certificates, optionally of one DP and of one kind, ordered by kind then subject.
    pub async fn list(
        &self,
        dp_id: Option<&str>,
        kind: Option<CertKind>,
    ) -> DmResult<Vec<CertInfo>> {
        let rows = sqlx::query(concat!(
            select_info!(),
            " WHERE (?1 IS NULL OR c.id IN (SELECT management_certificate_id FROM distribution_points WHERE id = ?1 \
             UNION SELECT service_certificate_id FROM distribution_points WHERE id = ?1)) AND (?2 IS NULL OR c.kind = ?2) \
             GROUP BY c.id ORDER BY c.kind, c.subject"
        ))
        .bind(dp_id)
        .bind(kind.map(CertKind::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_info).collect()
    }

    /// The leaf certificate's DER.
    pub async fn leaf_der(&self, id: &str) -> DmResult<Vec<u8>> {
        Ok(self.chain_and_key(id).await?.0.swap_remove(0))
    }

    /// The chain (leaf first) and the unsealed private key, for serving TLS.
    pub async fn chain_and_key(&self, id: &str) -> DmResult<(Vec<Vec<u8>>, KeyDer)> {
        let row = sqlx::query("SELECT chain, sealed_key FROM certificates WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| DmError::NotFound(format!("no certificate has the id {id:?}")))?;
        let chain: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("chain")?)
            .map_err(|_| DmError::Internal("stored certificate chain is damaged".to_owned()))?;
        let chain = chain
            .iter()
            .map(|text| base64::engine::general_purpose::STANDARD.decode(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| DmError::Internal("stored certificate chain is damaged".to_owned()))?;
        let key = KeyDer::from_bytes(
            &self
                .site_key
                .unwrap(&row.try_get::<Vec<u8>, _>("sealed_key")?, id)?,
        )?;
        Ok((chain, key))
    }
}

fn decode_info(row: &sqlx::sqlite::SqliteRow) -> DmResult<CertInfo> {
    let kind: String = row.try_get("kind")?;
    let dp_ids: Option<String> = row.try_get("dp_ids")?;
    Ok(CertInfo {
        id: row.try_get("id")?,
        kind: CertKind::parse(&kind).ok_or_else(|| {
            DmError::Internal("stored certificate has an invalid kind".to_owned())
        })?,
        subject: row.try_get("subject")?,
        common_name: row.try_get("common_name")?,
        issuer: row.try_get("issuer")?,
        thumbprint: row.try_get("thumbprint")?,
        not_before_ms: row.try_get("not_before_ms")?,
        not_after_ms: row.try_get("not_after_ms")?,
        has_private_key: true,
        subscription_id: row.try_get("subscription_id")?,
        dp_ids: dp_ids
            .map(|ids| ids.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_certificate_or_a_client_only_one_is_no_service_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["cdp.contoso.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cdp.contoso.com");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let problem = unfit_for_serving(ca.der()).unwrap();
        assert!(problem.contains("CA:TRUE"), "{problem}");

        params.is_ca = rcgen::IsCa::NoCa;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = params.self_signed(&key).unwrap();
        let problem = unfit_for_serving(client.der()).unwrap();
        assert!(problem.contains("server authentication"), "{problem}");

        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.self_signed(&key).unwrap();
        assert_eq!(unfit_for_serving(server.der()), None);
    }

    fn self_signed(common_name: &str, not_after_days: i64) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![common_name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(86_400 * 2)).into();
        params.not_after = if not_after_days >= 0 {
            now + std::time::Duration::from_secs(86_400 * not_after_days.unsigned_abs())
        } else {
            now - std::time::Duration::from_secs(86_400)
        }
        .into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pem_pairs_are_checked_for_key_validity_and_match() {
        let now = now_ms();
        let (cert, key) = self_signed("cdp.contoso.com", 30);
        let parsed = parse_pem(CertKind::Service, "service_certificate", &cert, &key, now).unwrap();
        assert_eq!(parsed.info.common_name, "cdp.contoso.com");
        assert_eq!(parsed.info.thumbprint.len(), 40);
        assert!(parsed.info.has_private_key);

        let error =
            parse_pem(CertKind::Service, "service_certificate", &cert, "", now).unwrap_err();
        assert!(
            error.to_string().contains("without its private key"),
            "{error}"
        );
        let (_, other_key) = self_signed("other", 30);
        let error = parse_pem(
            CertKind::Service,
            "service_certificate",
            &cert,
            &other_key,
            now,
        )
        .unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
        let (expired, expired_key) = self_signed("old.contoso.com", -1);
        let error = parse_pem(
            CertKind::Service,
            "service_certificate",
            &expired,
            &expired_key,
            now,
        )
        .unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        let error = parse_pem(
            CertKind::Service,
            "service_certificate",
            "garbage",
            &key,
            now,
        )
        .unwrap_err();
        assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
    }

    fn pfx(cert_pem: &str, key_pem: Option<&str>, password: &str) -> Vec<u8> {
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec();
        let certificate = p12_keystore::Certificate::from_der(&der).unwrap();
        let mut store = p12_keystore::KeyStore::new();
        match key_pem {
            Some(key_pem) => {
                let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                    .unwrap()
                    .unwrap();
                let key = p12_keystore::PrivateKey::from_der(key.secret_der()).unwrap();
                let chain = p12_keystore::PrivateKeyChain::new(vec![1_u8; 20], key, [certificate]);
                store.add_entry("cdp", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
            }
            None => store.add_entry("cdp", p12_keystore::KeyStoreEntry::Certificate(certificate)),
        }
        store.writer(password).write().unwrap()
    }

    #[test]
    fn pfx_files_need_the_right_password_and_a_key() {
        let now = now_ms();
        let (cert, key) = self_signed("mgmt.contoso.com", 30);
        let data = pfx(&cert, Some(&key), "s3cret!");
        let parsed = parse_pkcs12(CertKind::Management, "source", &data, "s3cret!", now).unwrap();
        assert_eq!(parsed.info.common_name, "mgmt.contoso.com");
        let error = parse_pkcs12(CertKind::Management, "source", &data, "wrong", now).unwrap_err();
        assert!(error.to_string().contains("password is wrong"), "{error}");
        let cert_only = pfx(&cert, None, "pw");
        let error =
            parse_pkcs12(CertKind::Management, "source", &cert_only, "pw", now).unwrap_err();
        assert!(
            error.to_string().contains("without its private key"),
            "{error}"
        );
        let error =
            parse_pkcs12(CertKind::Management, "source", b"not a pfx", "pw", now).unwrap_err();
        assert!(error.to_string().contains("not a readable .pfx"), "{error}");
    }

    #[test]
    fn publish_settings_v1_give_the_certificate_and_subscription() {
        let now = now_ms();
        let (cert, key) = self_signed("Windows Azure Tools", 30);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pfx(&cert, Some(&key), ""));
        let xml = format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<PublishData><PublishProfile PublishMethod="AzureServiceManagementAPI" Url="https://management.core.windows.net/"
 ManagementCertificate="{encoded}"><Subscription Id="0b7c5a7e-3a1d-4c55-9a0f-2f3c0d9e8b11" Name="Pay-As-You-Go" />
</PublishProfile></PublishData>"#
        );
        let parsed = parse_publish_settings("source", xml.as_bytes(), now).unwrap();
        assert_eq!(
            parsed.info.subscription_id,
            "0b7c5a7e-3a1d-4c55-9a0f-2f3c0d9e8b11"
        );
        assert_eq!(parsed.info.kind, CertKind::Management);
        let v2 = r#"<PublishData><PublishProfile SchemaVersion="2.0" PublishMethod="AzureServiceManagementAPI">
<Subscription Id="0b7c5a7e-3a1d-4c55-9a0f-2f3c0d9e8b11" ManagementCertificate="AAAA" /></PublishProfile></PublishData>"#;
        let error = parse_publish_settings("source", v2.as_bytes(), now).unwrap_err();
        assert!(error.to_string().contains("version 1"), "{error}");
        let error = parse_publish_settings("source", b"<nope/>", now).unwrap_err();
        assert!(error.to_string().contains("PublishProfile"), "{error}");
    }

    #[test]
    fn device_names_match_the_full_name_or_first_label() {
        assert!(matches_device("cdp1.contoso.com", "CDP1"));
        assert!(matches_device("cdp1.contoso.com", "cdp1.contoso.com"));
        assert!(!matches_device("cdp1.contoso.com", "cdp"));
        assert!(!matches_device("cdp1.contoso.com", "contoso"));
    }
}
