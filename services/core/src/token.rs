//! Access tokens: Ed25519-signed, short-lived, bound to one DP, one content version and one client.
//!
//! A token is `cdp1.<claims>.<signature>`, both parts base64url without padding. The claims are a small JSON
//! object; the signature covers `cdp1.<claims>`. There is no algorithm field to confuse: the prefix fixes the
//! format and Ed25519, and anything else (a JWT, `alg: none`, another prefix) is refused before any parsing.
//! The content endpoint verifies tokens offline with the site's public keys, chosen by the `kid` claim, so a
//! rotated key keeps verifying the tokens it signed until they expire.
//!
//! Tokens issued together (several clients asking at the same moment) share one signature:
//! `cdp2.<claims>.<index>.<proof>.<signature>`. The claims of the batch are the leaves of a Merkle tree
//! (SHA-256, leaves and nodes domain-separated, padded to a power of two); the signature covers `cdp2`, the tree's
//! depth and its root; the proof is the token's sibling hashes from leaf to root. A verifier rebuilds the root from
//! the token's own claims, index and proof, then checks the one signature: changing the claims, the index or any
//! proof hash changes the root. The Ed25519 signature, a third of an answer's CPU, is paid once per batch.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The token format prefix.
pub const PREFIX: &str = "cdp1";
/// The prefix of tokens signed in a batch.
pub const BATCH_PREFIX: &str = "cdp2";
/// Deepest batch tree accepted (2^16 tokens under one signature).
const MAX_DEPTH: usize = 16;
const LEAF_TAG: &[u8] = b"clouddp token leaf\0";
const NODE_TAG: &[u8] = b"clouddp token node\0";
const PAD_TAG: &[u8] = b"clouddp token pad\0";

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0_u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// What the signature of a batch covers: the format, the tree's depth and its root.
fn batch_message(depth: usize, root: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(BATCH_PREFIX.len() + 1 + 32);
    message.extend_from_slice(BATCH_PREFIX.as_bytes());
    message.push(u8::try_from(depth).unwrap_or(u8::MAX));
    message.extend_from_slice(root);
    message
}
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
    /// The client certificate the token is bound to (RFC 8705): only a client that presents that certificate on
    /// its connection may use it. Absent only on tokens of a site that runs without authentication (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The confirmation claim of a certificate-bound token (RFC 8705, section 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The certificate's SHA-256 thumbprint, base64url without padding.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

impl Confirmation {
    /// The confirmation of the certificate `der`.
    pub fn of_certificate(der: &[u8]) -> Self {
        Self {
            x5t_s256: thumbprint(der),
        }
    }
}

/// The SHA-256 thumbprint of a DER certificate, base64url without padding (`x5t#S256`).
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hash(&[der]))
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
    /// Bound to a client certificate that the connection does not present, or bound to none where binding is
    /// required.
    #[error("not bound to the client certificate of this connection")]
    Unbound,
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

    /// Signs a batch of claims (each `kid` set to this key's id) with one signature; one token per claims, in
    /// order. A batch of one is an ordinary `cdp1` token.
    pub fn sign_batch(&self, batch: Vec<Claims>) -> Result<Vec<String>, TokenError> {
        if batch.len() <= 1 {
            return batch.into_iter().map(|claims| self.sign(claims)).collect();
        }
        let bodies = batch
            .into_iter()
            .map(|claims| self.body(claims))
            .collect::<Result<Vec<_>, _>>()?;
        let depth = usize::try_from(bodies.len().next_power_of_two().trailing_zeros())
            .unwrap_or(usize::MAX);
        if depth > MAX_DEPTH {
            return Err(TokenError::Malformed);
        }
        // levels[0] are the leaves (padded), the last level the root.
        let pad = hash(&[PAD_TAG]);
        let mut level: Vec<[u8; 32]> = bodies
            .iter()
            .map(|body| hash(&[LEAF_TAG, body.as_bytes()]))
            .collect();
        level.resize(1 << depth, pad);
        let mut levels = vec![level];
        while levels.last().is_some_and(|level| level.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| hash(&[NODE_TAG, &pair[0], &pair[1]]))
                .collect();
            levels.push(above);
        }
        let root = levels
            .last()
            .and_then(|level| level.first())
            .copied()
            .unwrap_or(pad);
        let signature =
            URL_SAFE_NO_PAD.encode(self.pair.sign(&batch_message(depth, &root)).as_ref());
        Ok(bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                let mut proof = Vec::with_capacity(depth * 32);
                for (height, level) in levels.iter().take(depth).enumerate() {
                    proof.extend_from_slice(&level[(index >> height) ^ 1]);
                }
                format!(
                    "{BATCH_PREFIX}.{body}.{index}.{}.{signature}",
                    URL_SAFE_NO_PAD.encode(proof)
                )
            })
            .collect())
    }

    /// The claims part of a token: checked lifetime, this key's id as `kid`, JSON in base64url.
    fn body(&self, mut claims: Claims) -> Result<String, TokenError> {
        if claims.exp - claims.iat > MAX_LIFETIME_MS || claims.exp <= claims.iat {
            return Err(TokenError::TooLong);
        }
        claims.kid = self.id.clone();
        Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?))
    }

    /// Signs `claims` (whose `kid` is set to this key's id).
    pub fn sign(&self, claims: Claims) -> Result<String, TokenError> {
        let body = self.body(claims)?;
        let signed = format!("{PREFIX}.{body}");
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
    /// The thumbprint ([`thumbprint`]) of the client certificate on the connection, if it presented one.
    pub certificate: Option<&'a str>,
    /// What a token bound to no certificate needs: the device id the client names. `None` refuses such tokens,
    /// as every site that authenticates its callers does; only a site run without authentication (tests) issues
    /// them.
    pub named_client: Option<&'a str>,
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
    let parts: Vec<&str> = token.split('.').collect();
    let (body, signature, signed) = match parts.as_slice() {
        [PREFIX, body, signature] => {
            let signed_len = PREFIX.len() + 1 + body.len();
            (*body, *signature, token.as_bytes()[..signed_len].to_vec())
        }
        [BATCH_PREFIX, body, index, proof, signature] => {
            // The root from this token's own claims, index and proof; the signature must cover it.
            if index.is_empty()
                || index.len() > 6
                || !index.bytes().all(|byte| byte.is_ascii_digit())
            {
                return Err(TokenError::Malformed);
            }
            let index: usize = index.parse().map_err(|_| TokenError::Malformed)?;
            let proof = URL_SAFE_NO_PAD
                .decode(proof)
                .map_err(|_| TokenError::Malformed)?;
            let depth = proof.len() / 32;
            if proof.len() % 32 != 0 || depth == 0 || depth > MAX_DEPTH || index >> depth != 0 {
                return Err(TokenError::Malformed);
            }
            let mut node = hash(&[LEAF_TAG, body.as_bytes()]);
            for (height, sibling) in proof.chunks(32).enumerate() {
                node = if (index >> height) & 1 == 0 {
                    hash(&[NODE_TAG, &node, sibling])
                } else {
                    hash(&[NODE_TAG, sibling, &node])
                };
            }
            (*body, *signature, batch_message(depth, &node))
        }
        _ => return Err(TokenError::Malformed),
    };
    let body_bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body_bytes).map_err(|_| TokenError::Malformed)?;
    let public = key_for(&claims.kid).ok_or(TokenError::UnknownKey)?;
    UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(&signed, &signature)
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
    match (&claims.cnf, scope.named_client) {
        (Some(cnf), _) if scope.certificate == Some(cnf.x5t_s256.as_str()) => {}
        (None, Some(named)) if named == claims.sub => {}
        (None, Some(_)) => return Err(TokenError::WrongScope("client")),
        _ => return Err(TokenError::Unbound),
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
            cnf: None,
        }
    }

    fn scope() -> Scope<'static> {
        Scope {
            dp: "dp-1",
            cv: "cnt-1@1",
            certificate: None,
            named_client: Some("laptop-7"),
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
                    certificate: None,
                    named_client: Some("laptop-7")
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
                    certificate: None,
                    named_client: Some("laptop-7")
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
                    certificate: None,
                    named_client: Some("desktop-9")
                }
            ),
            Err(TokenError::WrongScope("client"))
        );
    }

    #[test]
    fn bound_tokens_verify_only_with_their_certificate() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let public = key.public_key();
        let lookup = |kid: &str| (kid == "k1").then_some(public.as_slice());
        let mine = thumbprint(b"the device's certificate");
        let other = thumbprint(b"another certificate");
        let bound = key
            .sign(Claims {
                cnf: Some(Confirmation::of_certificate(b"the device's certificate")),
                ..claims()
            })
            .unwrap();
        let presenting = |certificate: Option<&'static str>, named: Option<&'static str>| Scope {
            dp: "dp-1",
            cv: "cnt-1@1",
            certificate,
            named_client: named,
        };
        let mine: &'static str = Box::leak(mine.into_boxed_str());
        let other: &'static str = Box::leak(other.into_boxed_str());
        assert_eq!(
            verify(&bound, lookup, NOW, presenting(Some(mine), None))
                .unwrap()
                .sub,
            "laptop-7"
        );
        // The header a client writes does not replace the certificate.
        for scope in [
            presenting(Some(other), Some("laptop-7")),
            presenting(None, Some("laptop-7")),
            presenting(None, None),
        ] {
            assert_eq!(verify(&bound, lookup, NOW, scope), Err(TokenError::Unbound));
        }
        // A token bound to nothing is refused where binding is required, even with a certificate.
        let unbound = key.sign(claims()).unwrap();
        assert_eq!(
            verify(&unbound, lookup, NOW, presenting(Some(mine), None)),
            Err(TokenError::Unbound)
        );
        // The claim is in the signed part: removing it breaks the signature.
        let body = bound.split('.').nth(1).unwrap();
        let mut decoded: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        assert_eq!(decoded["cnf"]["x5t#S256"], mine);
        decoded.as_object_mut().unwrap().remove("cnf");
        let stripped = bound.replace(
            body,
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&decoded).unwrap()),
        );
        assert_eq!(
            verify(&stripped, lookup, NOW, presenting(None, Some("laptop-7"))),
            Err(TokenError::BadSignature)
        );
    }

    fn claims_for(client: &str) -> Claims {
        Claims {
            sub: client.to_owned(),
            ..claims()
        }
    }

    fn scope_for(client: &str) -> Scope<'_> {
        Scope {
            dp: "dp-1",
            cv: "cnt-1@1",
            certificate: None,
            named_client: Some(client),
        }
    }

    #[test]
    fn batch_tokens_verify_each_for_its_own_client_only() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let public = key.public_key();
        let lookup = |kid: &str| (kid == "k1").then_some(public.as_slice());
        for size in 1..=9 {
            let clients: Vec<String> = (0..size).map(|index| format!("pc-{index}")).collect();
            let tokens = key
                .sign_batch(clients.iter().map(|client| claims_for(client)).collect())
                .unwrap();
            assert_eq!(tokens.len(), size);
            let signatures: std::collections::HashSet<&str> = tokens
                .iter()
                .map(|token| token.rsplit('.').next().unwrap())
                .collect();
            assert_eq!(signatures.len(), 1, "one signature per batch");
            for (token, client) in tokens.iter().zip(&clients) {
                assert!(token.starts_with(if size == 1 { "cdp1." } else { "cdp2." }));
                assert_eq!(
                    verify(token, lookup, NOW, scope_for(client)).unwrap().sub,
                    *client
                );
                if size > 1 {
                    assert_eq!(
                        verify(token, lookup, NOW, scope_for("someone-else")),
                        Err(TokenError::WrongScope("client"))
                    );
                }
            }
        }
    }

    #[test]
    fn batch_tokens_refuse_tampered_claims_index_proof_and_mixing() {
        let (key, _) = SigningKey::generate("k1").unwrap();
        let (other, _) = SigningKey::generate("k1").unwrap();
        let public = key.public_key();
        let lookup = |kid: &str| (kid == "k1").then_some(public.as_slice());
        let clients = ["pc-0", "pc-1", "pc-2", "pc-3", "pc-4"];
        let tokens = key
            .sign_batch(clients.iter().map(|client| claims_for(client)).collect())
            .unwrap();
        let token = &tokens[2];
        // Every single-character change is refused.
        for index in 5..token.len() {
            let mut bytes = token.clone().into_bytes();
            if bytes[index] == b'.' {
                continue;
            }
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != *token {
                assert!(
                    verify(&tampered, lookup, NOW, scope_for("pc-2")).is_err(),
                    "index {index} accepted"
                );
            }
        }
        let parts: Vec<&str> = token.split('.').collect();
        let sibling: Vec<&str> = tokens[3].split('.').collect();
        // Another member's claims with this token's index and proof; this member's claims at another index; the
        // proof of another member; the signature of another batch or key.
        let others = key
            .sign_batch(clients.iter().map(|client| claims_for(client)).collect())
            .unwrap();
        let forged = other
            .sign_batch(clients.iter().map(|client| claims_for(client)).collect())
            .unwrap();
        let mut changed = claims_for("pc-2");
        changed.kid = "k1".to_owned();
        changed.dp = "dp-2".to_owned();
        let rewritten = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&changed).unwrap());
        for bad in [
            format!("cdp2.{}.{}.{}.{}", sibling[1], parts[2], parts[3], parts[4]),
            format!("cdp2.{}.3.{}.{}", parts[1], parts[3], parts[4]),
            format!("cdp2.{}.{}.{}.{}", parts[1], parts[2], sibling[3], parts[4]),
            format!("cdp2.{rewritten}.{}.{}.{}", parts[2], parts[3], parts[4]),
            format!(
                "cdp2.{}.{}.{}.{}",
                parts[1],
                parts[2],
                parts[3],
                forged[2].rsplit('.').next().unwrap()
            ),
            format!("cdp2.{}.{}..{}", parts[1], parts[2], parts[4]),
            format!("cdp2.{}.+2.{}.{}", parts[1], parts[3], parts[4]),
            format!("cdp2.{}.10.{}.{}", parts[1], parts[3], parts[4]),
            format!("cdp1.{}.{}", parts[1], parts[4]),
            format!("{token}.x"),
        ] {
            let client = if bad.contains(sibling[1]) {
                "pc-3"
            } else {
                "pc-2"
            };
            assert!(
                verify(&bad, lookup, NOW, scope_for(client)).is_err(),
                "{bad:?} accepted"
            );
        }
        // Another batch of the same claims verifies with its own signature.
        assert!(verify(&others[2], lookup, NOW, scope_for("pc-2")).is_ok());
        // Refused lifetimes refuse the whole batch.
        let mut long = claims_for("pc-9");
        long.exp = long.iat + MAX_LIFETIME_MS + 1;
        assert_eq!(
            key.sign_batch(vec![claims_for("pc-8"), long]),
            Err(TokenError::TooLong)
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
                    certificate: None,
                    named_client: Some("laptop-7")
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
