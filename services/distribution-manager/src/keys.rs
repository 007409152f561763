//! The site key: a 256-bit key in a file of the data dir (created 0600 on first start, or given by path), which
//! wraps every data key and stored secret with AES-256-GCM. It never leaves the site and is never logged.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use clouddp_core::content::sha256;

use crate::error::{DmError, DmResult};

/// The file name of the site key in the data dir.
pub const SITE_KEY_FILE: &str = "site.key";
const NONCE_LEN: usize = 12;

/// The site key.
pub struct SiteKey {
    key: LessSafeKey,
    fingerprint: String,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SiteKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SiteKey {
    /// Loads the key at `path`, creating it (mode 0600) when `create` and it does not exist. Refuses a key file
    /// readable by others or of the wrong length.
    pub fn load_or_create(path: &Path, create: bool) -> DmResult<Self> {
        if !path.exists() {
            if !create {
                return Err(DmError::Precondition(format!(
                    "site key {} does not exist",
                    path.display()
                )));
            }
            let mut bytes = [0_u8; 32];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| DmError::Internal("random generator failed".to_owned()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|error| {
                    DmError::Internal(format!(
                        "cannot create site key {}: {error}",
                        path.display()
                    ))
                })?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|error| {
                    DmError::Internal(format!("cannot write site key {}: {error}", path.display()))
                })?;
            tracing::info!(path = %path.display(), "created a new site key; back it up: restores need it");
        }
        let mode = std::fs::metadata(path)
            .map_err(|error| {
                DmError::Internal(format!("cannot read site key {}: {error}", path.display()))
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(DmError::Precondition(format!(
                "site key {} is readable by others (mode {:o}); run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|error| {
            DmError::Internal(format!("cannot read site key {}: {error}", path.display()))
        })?;
        Self::from_bytes(&bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> DmResult<Self> {
        if bytes.len() != 32 {
            return Err(DmError::Precondition(format!(
                "a site key has 32 bytes, this one {}",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| DmError::Internal("bad site key".to_owned()))?;
        let fingerprint: String = sha256(bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Self {
            key: LessSafeKey::new(unbound),
            fingerprint,
        })
    }

    /// SHA-256 of the key, hex: equal fingerprints mean equal keys.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `secret`, bound to `context` (for example the content version id): nonce ‖ ciphertext ‖ tag.
    pub fn wrap(&self, secret: &[u8], context: &str) -> DmResult<Vec<u8>> {
        let mut nonce = [0_u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| DmError::Internal("random generator failed".to_owned()))?;
        let mut sealed = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| DmError::Internal("wrapping failed".to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`SiteKey::wrap`] sealed for `context`.
    pub fn unwrap(&self, wrapped: &[u8], context: &str) -> DmResult<Vec<u8>> {
        if wrapped.len() < NONCE_LEN + 16 {
            return Err(DmError::Internal(format!(
                "wrapped secret for {context} is truncated"
            )));
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let mut buffer = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| {
                DmError::Precondition(format!(
                    "the secret of {context} does not open with this site key: was the data restored with another key?"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_0600_wraps_and_refuses_other_contexts_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SITE_KEY_FILE);
        let key = SiteKey::load_or_create(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SiteKey::load_or_create(&path, false).unwrap();
        assert_eq!(key.fingerprint(), again.fingerprint());
        let wrapped = key.wrap(b"data key bytes", "cnt-1@1").unwrap();
        assert_eq!(
            again.unwrap(&wrapped, "cnt-1@1").unwrap(),
            b"data key bytes"
        );
        assert!(key.unwrap(&wrapped, "cnt-1@2").is_err());
        let other = SiteKey::from_bytes(&[7_u8; 32]).unwrap();
        assert!(other.unwrap(&wrapped, "cnt-1@1").is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            SiteKey::load_or_create(&path, false)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        assert!(format!("{key:?}").contains("fingerprint"));
    }
}
