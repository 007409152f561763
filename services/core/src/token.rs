//! Access tokens: Ed25519-signed, short-lived, bound to one DP, one content version and one client.
//!
//! A token is `cdp1.<claims>.<signature>`, both parts base64url without padding. The claims are a small JSON
//! object; the signature covers `cdp1.<claims>`. There is no algorithm field to confuse: the prefix fixes the
//! format and Ed25519, and anything else (a JWT, `alg: none`, another prefix) is refused before any parsing.
//! The content endpoint verifies tokens offline with the site's public keys, chosen by the `kid` claim, so a
//! rotated key keeps verifying the tokens it signed until they expire.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The token format prefix.
pub const PREFIX: &str = "cdp1";
/// The longest lifetime a token may have.
pub const MAX_LIFETIME_MS: i64 = 60 * 60 * 1000;
/// Clock skew tolerated between the signer and the verifier.
pub const SKEW_MS: i64 = 60 * 1000;
/// Longest token accepted (bytes); longer ones are refused unparsed.
const MAX_TOKEN_LEN: usize = 2048;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The signing key's id.
    pub kid: String,
    /// The DP id.
    pub dp: String,
    /// The content version id, `<content_id>@<version>`.
    pub cv: String,
    /// The client (device id).
    pub sub: String,
    /// Issued at, ms since the epoch.
    pub iat: i64,
    /// Expires at, ms since the epoch.
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("not a clouddp access token")]
    Malformed,
    /// Signed by a key the verifier does not know.
    #[error("signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Expired, or not valid yet.
    #[error("expired")]
    Expired,
    /// Valid, but for another DP, content or client.
    #[error("issued for another {0}")]
    WrongScope(&'static str),
    /// A lifetime above the maximum.
    #[error("lifetime longer than allowed")]
    TooLong,
}

/// A signing key.
pub struct SigningKey {
    id: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key and its PKCS#8 document (to store sealed).
    pub fn generate(id: &str) -> Result<(Self, Vec<u8>), TokenError> {
        let document = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| TokenError::Malformed)?;
        let bytes = document.as_ref().to_vec();
        Ok((Self::from_pkcs8(id, &bytes)?, bytes))
    }

    /// A key from its PKCS#8 document.
    pub fn from_pkcs8(id: &str, pkcs8: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            id: id.to_owned(),
            pair: Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| TokenError::Malformed)?,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `claims` (whose `kid` is set to this key's id).
    pub fn sign(&self, mut claims: Claims) -> Result<String, TokenError> {
        if claims.exp - claims.iat > MAX_LIFETIME_MS || claims.exp <= claims.iat {
            return Err(TokenError::TooLong);
        }
        claims.kid = self.id.clone();
        let body = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(body));
        let signature = self.pair.sign(signed.as_bytes());
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// What a request must match.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The DP serving the request.
    pub dp: &'a str,
    /// The content version requested.
    pub cv: &'a str,
    /// The client making the request (its device id, sent with the request).
    pub client: &'a str,
}

/// Verifies `token` with the public key of its `kid` (looked up by `key_for`), at `now_ms`, for `scope`.
pub fn verify<'k>(
    token: &str,
    key_for: impl Fn(&str) -> Option<&'k [u8]>,
    now_ms: i64,
    scope: Scope<'_>,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(prefix), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if prefix != PREFIX {
        return Err(TokenError::Malformed);
    }
    let body_bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body_bytes).map_err(|_| TokenError::Malformed)?;
    let public = key_for(&claims.kid).ok_or(TokenError::UnknownKey)?;
    let signed_len = prefix.len() + 1 + body.len();
    UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(&token.as_bytes()[..signed_len], &signature)
        .map_err(|_| TokenError::BadSignature)?;
    if claims.exp - claims.iat > MAX_LIFETIME_MS {
        return Err(TokenError::TooLong);
    }
    if now_ms > claims.exp + SKEW_MS || now_ms + SKEW_MS < claims.iat {
        return Err(TokenError::Expired);
    }
    if claims.dp != scope.dp {
        return Err(TokenError::WrongScope("distribution point"));
    }
    if claims.cv != scope.cv {
        return Err(TokenError::WrongScope("content"));
    }
    if claims.sub != scope.client {
        return Err(TokenError::WrongScope("client"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn claims() -> Claims {
        Claims {
            kid: String::new(),
            dp: "dp-1".to_owned(),
            cv: "cnt-1@1".to_owned(),
            sub: "laptop-7".to_owned(),
            iat: NOW,
            exp: NOW + 15 * 60 * 1000,
        }
    }

    fn scope() -> Scope<'static> {
        Scope {
            dp: "dp-1",
            cv: "cnt-1@1",
            client: "laptop-7",
        }
    }

    #[test]
    fn signed_tokens_verify_only_for_their_scope_and_time() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let public = key.public_key();
        let lookup = |kid: &str| (kid == "k1").then_some(public.as_slice());
        let token = key.sign(claims()).unwrap();
        let verified = verify(&token, lookup, NOW + 1000, scope()).unwrap();
        assert_eq!(verified.sub, "laptop-7");
        assert_eq!(verified.kid, "k1");
        assert_eq!(
            verify(&token, lookup, NOW + 16 * 60 * 1000 + SKEW_MS, scope()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(&token, lookup, NOW - 2 * SKEW_MS, scope()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(
                &token,
                lookup,
                NOW,
                Scope {
                    dp: "dp-2",
                    cv: "cnt-1@1",
                    client: "laptop-7"
                }
            ),
            Err(TokenError::WrongScope("distribution point"))
        );
        assert_eq!(
            verify(
                &token,
                lookup,
                NOW,
                Scope {
                    dp: "dp-1",
                    cv: "cnt-1@2",
                    client: "laptop-7"
                }
            ),
            Err(TokenError::WrongScope("content"))
        );
        assert_eq!(
            verify(
                &token,
                lookup,
                NOW,
                Scope {
                    dp: "dp-1",
                    cv: "cnt-1@1",
                    client: "desktop-9"
                }
            ),
            Err(TokenError::WrongScope("client"))
        );
    }

    #[test]
    fn tampering_other_keys_and_other_formats_are_refused() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let (other, _) = SigningKey::generate("k1").unwrap();
        let public = key.public_key();
        let lookup = |kid: &str| (kid == "k1").then_some(public.as_slice());
        let token = key.sign(claims()).unwrap();
        let forged = other.sign(claims()).unwrap();
        assert_eq!(
            verify(&forged, lookup, NOW, scope()),
            Err(TokenError::BadSignature)
        );
        // Every single-character change of the claims or signature is refused.
        for index in 5..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != token {
                assert!(
                    verify(&tampered, lookup, NOW, scope()).is_err(),
                    "index {index} accepted"
                );
            }
        }
        // A client rewriting its claims (another DP) cannot keep the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let mut changed = claims();
        changed.kid = "k1".to_owned();
        changed.dp = "dp-2".to_owned();
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&changed).unwrap()),
            parts[2]
        );
        assert_eq!(
            verify(
                &swapped,
                lookup,
                NOW,
                Scope {
                    dp: "dp-2",
                    cv: "cnt-1@1",
                    client: "laptop-7"
                }
            ),
            Err(TokenError::BadSignature)
        );
        // Format confusion: a JWT with alg none, another prefix, extra parts, garbage.
        let jwt_none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        for bad in [
            jwt_none.as_str(),
            &token.replacen("cdp1", "cdp2", 1),
            &format!("{token}.x"),
            "",
            "cdp1..",
            "cdp1.e30.AAAA",
        ] {
            assert!(
                verify(bad, lookup, NOW, scope()).is_err(),
                "{bad:?} accepted"
            );
        }
        let unknown = |_: &str| None;
        assert_eq!(
            verify(&token, unknown, NOW, scope()),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn lifetimes_above_an_hour_are_neither_signed_nor_accepted() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let mut long = claims();
        long.exp = long.iat + MAX_LIFETIME_MS + 1;
        assert_eq!(key.sign(long), Err(TokenError::TooLong));
    }

    #[test]
    fn keys_reload_from_their_pkcs8_document() {
        let (key, document) = SigningKey::generate("k1").unwrap();
        let again = SigningKey::from_pkcs8("k1", &document).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.public_key().len(), 32);
    }
}
