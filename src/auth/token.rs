//! Bearer tokens, as the Docker registry token specification has them: a JWT whose `access`
//! claim lists what it grants, `[{"type":"repository","name":"a/b","actions":["pull"]}]`.
//!
//! Berth either issues them (signed with an Ed25519 key from the config, or one made at
//! start-up) and verifies its own, or only verifies those of an external issuer, with its
//! public key (RSA, EC or Ed25519 PEM) or its JWKS (keys chosen by `kid`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::config::{Token as TokenConfig, TokenKeys};

/// Allowed clock difference between Berth and an issuer.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// Groups an external issuer may add; matched against the rules' groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// A token issued to a client, as `/auth/token` answers it.
#[derive(Debug, Serialize)]
pub struct Issued {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

pub struct Tokens {
    config: TokenConfig,
    verify: Verify,
    sign: Option<EncodingKey>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.config.issuer)
            .field("issues", &self.sign.is_some())
            .finish_non_exhaustive()
    }
}

enum Verify {
    Key(DecodingKey, AlgorithmFamily),
    Jwks(JwkSet),
}

impl Tokens {
    pub fn open(config: &TokenConfig) -> Result<Self, AuthError> {
        let (verify, sign) = match &config.keys {
            TokenKeys::Issue { signing_key } => {
                let pkcs8 = match signing_key {
                    Some(path) => read_ed25519(path)?,
                    None => Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                        .map_err(|_| AuthError::Internal("cannot make a token signing key".into()))?
                        .as_ref()
                        .to_vec(),
                };
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|e| AuthError::File {
                    path: signing_key
                        .as_deref()
                        .map_or("(generated key)".into(), |p| p.display().to_string()),
                    message: format!("not an Ed25519 PKCS#8 key: {e}"),
                })?;
                let public = DecodingKey::from_ed_der(pair.public_key().as_ref());
                (
                    Verify::Key(public, AlgorithmFamily::Ed),
                    Some(EncodingKey::from_ed_der(&pkcs8)),
                )
            }
            TokenKeys::PublicKey(path) => {
                let (key, family) = read_public_key(path)?;
                (Verify::Key(key, family), None)
            }
            TokenKeys::Jwks(path) => {
                let text = std::fs::read(path).map_err(|e| file_error(path, &e))?;
                let set: JwkSet = serde_json::from_slice(&text).map_err(|e| file_error(path, &e))?;
                (Verify::Jwks(set), None)
            }
        };
        Ok(Tokens {
            config: config.clone(),
            verify,
            sign,
        })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// Whether Berth issues tokens (rather than an external issuer).
    pub fn issues(&self) -> bool {
        self.sign.is_some()
    }

    /// Check a token's signature, issuer, audience and times; its claims if it passes.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::BadCredentials)?;
        let (key, family) = match &self.verify {
            Verify::Key(key, family) => (key.clone(), *family),
            Verify::Jwks(set) => {
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None if set.keys.len() == 1 => set.keys.first(),
                    None => None,
                }
                .ok_or(AuthError::BadCredentials)?;
                let family = key_family(jwk).ok_or(AuthError::BadCredentials)?;
                let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::BadCredentials)?;
                (key, family)
            }
        };
        if header.alg.family() != family {
            return Err(AuthError::BadCredentials);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            tracing::debug!(error = %e, "bearer token refused");
            AuthError::BadCredentials
        })?;
        Ok(data.claims)
    }

    /// Issue a token to `subject` (empty: anonymous) granting `access`.
    pub fn issue(&self, subject: &str, access: Vec<Access>) -> Result<Issued, AuthError> {
        let key = self
            .sign
            .as_ref()
            .ok_or_else(|| AuthError::Internal("this server does not issue tokens".into()))?;
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: subject.to_owned(),
            aud: serde_json::Value::String(self.config.service.clone()),
            exp: secs + self.config.expiry.as_secs(),
            nbf: secs.saturating_sub(1),
            iat: secs,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            groups: Vec::new(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, key)
            .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))?;
        Ok(Issued {
            access_token: token.clone(),
            token,
            expires_in: self.config.expiry.as_secs(),
            issued_at: humantime::format_rfc3339_seconds(now).to_string(),
        })
    }
}

/// The family of a JWKS key; `None` for kinds Berth does not accept (symmetric keys).
fn key_family(jwk: &jsonwebtoken::jwk::Jwk) -> Option<AlgorithmFamily> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    match jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(_) => Some(AlgorithmFamily::Ec),
        AlgorithmParameters::OctetKeyPair(_) => Some(AlgorithmFamily::Ed),
        _ => None,
    }
}

fn file_error(path: &Path, e: &dyn std::fmt::Display) -> AuthError {
    AuthError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn read_ed25519(path: &Path) -> Result<Vec<u8>, AuthError> {
    match PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, &e))? {
        PrivateKeyDer::Pkcs8(der) => Ok(der.secret_pkcs8_der().to_vec()),
        _ => Err(file_error(
            path,
            &"not a PKCS#8 key (make one with: openssl genpkey -algorithm ed25519)",
        )),
    }
}

fn read_public_key(path: &Path) -> Result<(DecodingKey, AlgorithmFamily), AuthError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, &e))?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((k, AlgorithmFamily::Rsa));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((k, AlgorithmFamily::Ec));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok((k, AlgorithmFamily::Ed));
    }
    Err(file_error(path, &"not an RSA, EC or Ed25519 public key in PEM"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: TokenKeys) -> TokenConfig {
        TokenConfig {
            realm: None,
            service: "berth".into(),
            issuer: "berth".into(),
            expiry: Duration::from_secs(60),
            keys,
        }
    }

    #[test]
    fn issued_tokens_verify_and_tampered_ones_do_not() {
        let t = Tokens::open(&config(TokenKeys::Issue { signing_key: None })).unwrap();
        let access = vec![Access {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let issued = t.issue("alice", access.clone()).unwrap();
        let claims = t.verify(&issued.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.access), ("alice", access));
        // Change a character well inside the signature: the last one carries padding bits that
        // decode to the same bytes for some pairs (B -> A), which made this test flaky.
        let mut forged = issued.token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_ne!(forged, issued.token);
        assert!(t.verify(&forged).is_err());
        // Another key (another server, or a restart with a generated key) does not verify it.
        let other = Tokens::open(&config(TokenKeys::Issue { signing_key: None })).unwrap();
        assert!(other.verify(&issued.token).is_err());
    }
}
