//! Asking an external token issuer for a token on a user's behalf: the web UI's sign-in
//! when Berth verifies an issuer's tokens (`auth.token.public_key` or `jwks`) and holds no
//! passwords. The request is the one a registry client makes after a `Bearer` challenge:
//! `GET {realm}?service={service}&scope=registry:catalog:*` with the user's Basic
//! credentials. The password goes to the issuer only; neither it nor the token is kept or
//! logged. The caller verifies the token with the configured keys.

use std::time::Duration;

use super::AuthError;
use super::token::Claims;
use crate::config::Token as TokenConfig;

/// How long the issuer has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (a token response is a few KiB).
const MAX_BODY: usize = 64 * 1024;
/// The scope asked for: it names no repository, and an issuer grants it to any user whose
/// credentials it accepts.
const SCOPE: &str = "registry:catalog:*";

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The token the issuer of `config` gives `user` for `password`. A refusal (401, 403) is
/// `BadCredentials`; an issuer that cannot be reached or answers otherwise is `Internal`.
pub async fn fetch_token(config: &TokenConfig, user: &str, password: &str) -> Result<String, AuthError> {
    let realm = config
        .realm
        .as_deref()
        .ok_or_else(|| AuthError::Internal("auth.token.realm is not set".into()))?;
    let mut url = reqwest::Url::parse(realm).map_err(|e| AuthError::Internal(format!("auth.token.realm: {e}")))?;
    url.query_pairs_mut()
        .append_pair("service", &config.service)
        .append_pair("scope", SCOPE);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| unreachable_issuer(&e))?;
    let response = client
        .get(url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .map_err(|e| unreachable_issuer(&e.without_url()))?;
    match response.status().as_u16() {
        200 => {}
        401 | 403 => return Err(AuthError::BadCredentials),
        other => return Err(AuthError::Internal(format!("the token issuer answered {other}"))),
    }
    let body = read_limited(response).await?;
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|_| AuthError::Internal("the token issuer's answer is not a token response".into()))?;
    answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::Internal("the token issuer's answer holds no token".into()))
}

fn unreachable_issuer(e: &dyn std::fmt::Display) -> AuthError {
    AuthError::Internal(format!("the token issuer cannot be reached: {e}"))
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, AuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable_issuer(&e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(AuthError::Internal("the token issuer's answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The claims of a verified sign-in token, if it names a user: an anonymous token (no `sub`)
/// signs nobody in.
pub fn signed_in(claims: Claims, user: &str) -> Result<Claims, AuthError> {
    if claims.sub.is_empty() {
        tracing::warn!(target: "berth::auth", %user, "the token issuer answered with an anonymous token");
        return Err(AuthError::BadCredentials);
    }
    Ok(claims)
}
