//! Logging in to an upstream: the challenge in `WWW-Authenticate` says how. `Basic` gets the
//! configured credentials on every request; `Bearer` (the Docker token flow) sends them once to
//! the realm for a token scoped to `repository:<name>:pull`, kept until it expires. Anonymous
//! tokens (no credentials configured) are fetched the same way, as Docker Hub wants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens are renewed this long before the upstream said they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// A token response without `expires_in` is good for this long (the token spec's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scheme {
    /// No challenge seen yet: requests go out bare.
    Unknown,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct State {
    scheme: Scheme,
    /// Token per scope, with when to stop using it.
    tokens: HashMap<String, (String, Instant)>,
}

/// The login state of one upstream.
pub(super) struct Login {
    username: Option<String>,
    password: Option<String>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Login {
    pub(super) fn new(username: Option<String>, password: Option<String>) -> Self {
        Login {
            username,
            password,
            state: Mutex::new(State {
                scheme: Scheme::Unknown,
                tokens: HashMap::new(),
            }),
        }
    }

    /// Add what the upstream last asked for: Basic credentials, or a live token for `repo`.
    pub(super) fn authorize(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        let state = self.state.lock().expect("login state");
        match &state.scheme {
            Scheme::Unknown => request,
            Scheme::Basic => match (&self.username, &self.password) {
                (Some(user), password) => request.basic_auth(user, password.as_ref()),
                _ => request,
            },
            Scheme::Bearer { .. } => match state.tokens.get(&scope(repo)) {
                Some((token, until)) if Instant::now() < *until => request.bearer_auth(token),
                _ => request,
            },
        }
    }

    /// Answer a 401's challenge: remember the scheme and, for Bearer, fetch a token for `repo`.
    /// The error says what failed, never with which credentials.
    pub(super) async fn login(&self, client: &reqwest::Client, challenge: &str, repo: &str) -> Result<(), String> {
        let scheme = parse_challenge(challenge)
            .ok_or_else(|| format!("asked for a login Berth does not speak ({challenge:.80})"))?;
        self.state.lock().expect("login state").scheme = scheme.clone();
        match scheme {
            Scheme::Basic if self.username.is_none() => {
                Err("wants a login; set username and password for this proxy".into())
            }
            Scheme::Basic | Scheme::Unknown => Ok(()),
            Scheme::Bearer { realm, service } => {
                let (token, lifetime) = self.fetch_token(client, &realm, service.as_deref(), repo).await?;
                let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN).max(Duration::from_secs(1));
                self.state
                    .lock()
                    .expect("login state")
                    .tokens
                    .insert(scope(repo), (token, until));
                Ok(())
            }
        }
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        repo: &str,
    ) -> Result<(String, Duration), String> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(format!("named a token realm that is not an http(s) URL ({realm:.80})"));
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("scope", &scope(repo));
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.finish()
        };
        let separator = if realm.contains('?') { '&' } else { '?' };
        let mut request = client.get(format!("{realm}{separator}{query}"));
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_ref());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("has a token service at {realm} that is unreachable ({e})"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "token service at {realm} refused a token for {repo} ({status}); check the proxy's username and password"
            ));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| format!("token service at {realm} sent an unreadable answer ({e})"))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| format!("token service at {realm} sent no token"))?;
        let lifetime = body.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Ok((token, lifetime))
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// `Basic realm="..."` or `Bearer realm="...",service="...",scope="..."`.
fn parse_challenge(challenge: &str) -> Option<Scheme> {
    let (scheme, params) = challenge.trim().split_once(' ').unwrap_or((challenge.trim(), ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Scheme::Basic),
        "bearer" => {
            let params = parse_params(params);
            let realm = params.get("realm")?.clone();
            Some(Scheme::Bearer {
                realm,
                service: params.get("service").cloned(),
            })
        }
        _ => None,
    }
}

/// `key="value", key=token, ...` (RFC 9110 auth-params; quoted strings may hold commas and
/// backslash escapes).
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .clone_into(&mut value);
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"berth\""), Some(Scheme::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/busybox:pull,push\""
            ),
            Some(Scheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:5000/auth/token"),
            Some(Scheme::Bearer {
                realm: "http://127.0.0.1:5000/auth/token".into(),
                service: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn quoted_params_keep_commas_and_escapes() {
        let p = parse_params(r#"realm="a,b", scope="x\"y",service=plain "#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["scope"], "x\"y");
        assert_eq!(p["service"], "plain");
    }
}
