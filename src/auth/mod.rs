//! Authentication and authorization: who a request comes from (HTTP Basic against htpasswd,
//! a Bearer token, or a client certificate) and what it may do (the config's rules).
//!
//! Knows nothing of HTTP beyond the `Authorization` header's text: `api` asks, and maps the
//! answers (`AuthError`) to 401 `UNAUTHORIZED` with a challenge, 403 `DENIED` or 429. The one
//! request it makes itself is `issuer`'s, on a web sign-in through an external token issuer.
//! Credentials never reach a log line: failed logins log the user name and source only.

mod htpasswd;
mod issuer;
mod rules;
pub mod token;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

pub use self::htpasswd::Htpasswd;
pub use self::rules::{Rules, Subject};
use self::token::{Access, Issued, Tokens};
use crate::config::{self, Action};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("authentication required")]
    Missing,
    #[error("invalid credentials")]
    BadCredentials,
    /// Past `auth.login_failures_per_minute`: refused until the source's minute is over.
    #[error("too many failed logins from this address; try again in {} s", retry_after.as_secs())]
    TooManyFailures { retry_after: Duration },
    #[error("requested access to the resource is denied")]
    Denied,
    #[error("{0}")]
    Internal(String),
}

/// Who a request comes from, and for a Bearer token, what the token grants.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Subject,
    /// `Some` for a Bearer token: its `access` claim.
    pub token_access: Option<Vec<Access>>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            subject: Subject::Anonymous,
            token_access: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.subject == Subject::Anonymous
    }
}

/// What a request needs, for the challenge of a 401.
#[derive(Debug, Clone)]
pub enum Scope {
    /// `repository:<name>:<actions>`
    Repository { name: String, actions: Vec<Action> },
    /// `registry:catalog:search`, which the Docker engine asks for before `docker search`.
    CatalogSearch,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Repository { name, actions } => {
                let actions: Vec<&str> = actions.iter().map(|a| action_name(*a)).collect();
                write!(f, "repository:{name}:{}", actions.join(","))
            }
            Scope::CatalogSearch => f.write_str("registry:catalog:search"),
        }
    }
}

#[derive(Debug)]
pub struct Auth {
    realm: String,
    htpasswd: Option<Arc<Htpasswd>>,
    tokens: Option<Tokens>,
    rules: Rules,
    failures: Failures,
}

impl Auth {
    /// Load the htpasswd file and the token keys the config names.
    pub fn open(config: &config::Auth) -> Result<Self, AuthError> {
        let htpasswd = config
            .htpasswd
            .as_deref()
            .map(Htpasswd::open)
            .transpose()?
            .map(Arc::new);
        let tokens = config.token.as_ref().map(Tokens::open).transpose()?;
        Ok(Auth {
            realm: config.realm.clone(),
            htpasswd,
            tokens,
            rules: Rules::new(&config.rules, config.groups.clone(), config.admins.clone()),
            failures: Failures::new(config.login_failures_per_minute),
        })
    }

    /// Re-read the htpasswd file (on SIGHUP).
    pub fn reload(&self) {
        if let Some(h) = &self.htpasswd {
            h.reload_if_changed(true);
        }
    }

    /// Who sent a request with this `Authorization` header, over a connection whose client
    /// certificate (if any) names `cert_user`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        cert_user: Option<&str>,
        source: IpAddr,
    ) -> Result<Caller, AuthError> {
        match authorization.map(parse_authorization).transpose()? {
            None => Ok(cert_user.map_or_else(Caller::anonymous, |user| self.user(user))),
            Some(Credentials::Basic { user, password }) => {
                self.check_password(&user, password, source).await?;
                Ok(self.user(&user))
            }
            Some(Credentials::Bearer(token)) => {
                let tokens = self.tokens.as_ref().ok_or(AuthError::BadCredentials)?;
                let claims = tokens.verify(&token).inspect_err(|_| {
                    tracing::warn!(target: "berth::auth", %source, "invalid or expired bearer token");
                })?;
                let subject = if claims.sub.is_empty() {
                    Subject::Anonymous
                } else {
                    self.rules.user(&claims.sub, &claims.groups)
                };
                Ok(Caller {
                    subject,
                    token_access: Some(claims.access),
                })
            }
        }
    }

    /// A sign-in with a user name and password (the web UI's form): the htpasswd users, with
    /// the same per-source limit on failures as Basic credentials.
    pub async fn login(&self, user: &str, password: String, source: IpAddr) -> Result<Caller, AuthError> {
        self.check_password(user, password, source).await?;
        Ok(self.user(user))
    }

    /// The caller a signed-in session names (its user signed in with `login`; the session's
    /// signature vouches for that). Groups and the admin role are the rules' of now, and a
    /// user no longer in the htpasswd file (removed, then the file reloaded) is anonymous.
    pub fn session_caller(&self, user: &str) -> Caller {
        match &self.htpasswd {
            Some(htpasswd) if htpasswd.has_user(user) => self.user(user),
            _ => Caller::anonymous(),
        }
    }

    /// Whether users can sign in with a password (an htpasswd file is configured).
    pub fn has_passwords(&self) -> bool {
        self.htpasswd.is_some()
    }

    /// Whether a sign-in form can check credentials: against htpasswd, or by asking the
    /// external token issuer (`issuer_login`).
    pub fn can_sign_in(&self) -> bool {
        self.has_passwords() || self.external_issuer().is_some()
    }

    /// The token configuration of an external issuer (tokens verified, not issued, here).
    fn external_issuer(&self) -> Option<&Tokens> {
        self.tokens.as_ref().filter(|t| !t.issues())
    }

    /// Whether the web sign-in asks the external issuer: it verifies an issuer's tokens and
    /// has no htpasswd file.
    pub fn signs_in_through_issuer(&self) -> bool {
        !self.has_passwords() && self.external_issuer().is_some()
    }

    /// A keyed fingerprint (HMAC-SHA256 under `key`) of `user`'s htpasswd entry as now, or
    /// `None` without one. A web session keeps the fingerprint of sign-in time and ends when
    /// it no longer matches: the password changed, or the user was removed.
    pub fn entry_fingerprint(&self, user: &str, key: &[u8]) -> Option<String> {
        use hmac::{KeyInit, Mac};
        let hash = self.htpasswd.as_ref()?.hash_of(user)?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        for part in [b"berth-ui-entry".as_slice(), user.as_bytes(), hash.as_bytes()] {
            mac.update(part);
            mac.update(&[0]);
        }
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// A sign-in through the external issuer: ask it for a token with `user`'s credentials,
    /// as a registry client would (`registry:catalog:*`), and verify the answer with the
    /// configured keys. The claims (never the token) if both pass; the same per-source limit
    /// on failures as passwords.
    pub async fn issuer_login(&self, user: &str, password: &str, source: IpAddr) -> Result<token::Claims, AuthError> {
        let tokens = self.external_issuer().ok_or(AuthError::BadCredentials)?;
        if let Some(retry_after) = self.failures.blocked(source) {
            tracing::warn!(target: "berth::auth", %user, %source, "login refused: too many failures from this address");
            return Err(AuthError::TooManyFailures { retry_after });
        }
        let claims = match issuer::fetch_token(tokens.config(), user, password).await {
            Ok(token) => tokens.verify(&token).and_then(|c| issuer::signed_in(c, user)),
            Err(e) => Err(e),
        };
        if let Err(e) = &claims {
            if matches!(e, AuthError::BadCredentials) {
                self.failures.record(source);
            }
            tracing::warn!(target: "berth::auth", %user, %source, error = %e, "failed login through the token issuer");
        }
        claims
    }

    /// The caller a session signed in through the external issuer names: the token's subject
    /// and groups under the rules of now, with the sign-in token's repository grants.
    pub fn issuer_caller(&self, user: &str, groups: &[String], access: Vec<Access>) -> Caller {
        Caller {
            subject: self.rules.user(user, groups),
            token_access: Some(access),
        }
    }

    /// Whether a web session's `caller` may see `repo`. A password user: the rules, as the
    /// catalog filters. An issuer's user (`token_access` set): the rules for the token's
    /// subject and groups when rules are configured, plus the sign-in token's own grants;
    /// with no rules the registry leaves every grant to the issuer, which the UI cannot ask
    /// repository by repository, so only the sign-in token's grants count.
    pub fn session_may_list(&self, caller: &Caller, repo: &str) -> bool {
        match &caller.token_access {
            Some(access) if self.rules.is_empty() => granted(access, repo).contains(&Action::Pull),
            _ => self.may_list(caller, repo),
        }
    }

    fn user(&self, name: &str) -> Caller {
        Caller {
            subject: self.rules.user(name, &[]),
            token_access: None,
        }
    }

    async fn check_password(&self, user: &str, password: String, source: IpAddr) -> Result<(), AuthError> {
        if let Some(retry_after) = self.failures.blocked(source) {
            tracing::warn!(target: "berth::auth", %user, %source, "login refused: too many failures from this address");
            return Err(AuthError::TooManyFailures { retry_after });
        }
        let Some(htpasswd) = self.htpasswd.clone() else {
            return Err(AuthError::BadCredentials);
        };
        let u = user.to_owned();
        let ok = tokio::task::spawn_blocking(move || htpasswd.verify(&u, &password))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        if ok {
            return Ok(());
        }
        self.failures.record(source);
        tracing::warn!(target: "berth::auth", %user, %source, "failed login");
        Err(AuthError::BadCredentials)
    }

    /// What `caller` may do on `repo`: a token's grants, else the rules.
    pub fn allowed(&self, caller: &Caller, repo: &str) -> BTreeSet<Action> {
        match &caller.token_access {
            Some(access) => granted(access, repo),
            None => self.rules.allowed(&caller.subject, repo),
        }
    }

    /// Whether the rules let `caller` pull `repo` (the catalog's filter).
    pub fn may_list(&self, caller: &Caller, repo: &str) -> bool {
        self.rules.allowed(&caller.subject, repo).contains(&Action::Pull)
            || self.allowed(caller, repo).contains(&Action::Pull)
    }

    /// Whether a rule lets anonymous callers pull some repository (so that `docker search`
    /// answers them, with what they may pull, rather than asking them to log in).
    pub fn anonymous_may_pull(&self) -> bool {
        self.rules.anonymous_may_pull()
    }

    pub fn is_admin(&self, caller: &Caller) -> bool {
        self.rules.is_admin(&caller.subject)
    }

    /// Refuse `caller` `action` on `repo`: 401 (log in, or fetch a token with the scope) when
    /// that could help, else 403.
    pub fn refusal(&self, caller: &Caller, repo: &str, action: Action) -> AuthError {
        if caller.is_anonymous() {
            return AuthError::Missing;
        }
        if caller.token_access.is_some() {
            // A fresh token could carry the action: an external issuer decides; Berth grants
            // what the rules allow.
            if !self.issues_tokens() || self.rules.allowed(&caller.subject, repo).contains(&action) {
                return AuthError::Missing;
            }
        }
        AuthError::Denied
    }

    /// The `WWW-Authenticate` value for a wrong password at `/auth/token`.
    pub fn basic_challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm)
    }

    /// The `WWW-Authenticate` value of a 401 asking for `scopes` (space-separated in one
    /// `scope` parameter, as the token specification has it); `base` is how the client reaches
    /// this server.
    pub fn challenge(&self, scopes: &[Scope], base: &str) -> String {
        let Some(tokens) = &self.tokens else {
            return format!("Basic realm=\"{}\"", self.realm);
        };
        let realm = tokens
            .config()
            .realm
            .clone()
            .unwrap_or_else(|| format!("{base}/auth/token"));
        let mut value = format!("Bearer realm=\"{realm}\",service=\"{}\"", tokens.config().service);
        if !scopes.is_empty() {
            let scopes: Vec<String> = scopes.iter().map(Scope::to_string).collect();
            let _ = write!(value, ",scope=\"{}\"", scopes.join(" "));
        }
        value
    }

    /// Whether Berth issues tokens at `/auth/token`.
    pub fn issues_tokens(&self) -> bool {
        self.tokens.as_ref().is_some_and(Tokens::issues)
    }

    /// `GET /auth/token`: a token for `caller` granting what it asks in `scopes` and the rules
    /// allow (`repository:<name>:<actions>`; `registry:catalog:*` for authenticated callers).
    pub fn issue(&self, caller: &Caller, scopes: &[String]) -> Result<Issued, AuthError> {
        let tokens = self.tokens.as_ref().filter(|t| t.issues()).ok_or(AuthError::Denied)?;
        let access = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|scope| self.grant(caller, scope))
            .collect();
        let sub = match &caller.subject {
            Subject::Anonymous => "",
            Subject::User { name, .. } => name,
        };
        tokens.issue(sub, access)
    }

    fn grant(&self, caller: &Caller, scope: &str) -> Option<Access> {
        let mut parts = scope.splitn(3, ':');
        let (kind, rest) = (parts.next()?, parts.next()?);
        // A name may hold a port-like `:`? No: repository names have no `:`; the last field
        // is the action list.
        let actions = parts.next()?;
        match kind {
            "repository" => {
                let allowed = self.rules.allowed(&caller.subject, rest);
                let actions: Vec<String> = actions
                    .split(',')
                    .filter(|a| parse_action(a).is_some_and(|a| allowed.contains(&a)))
                    .map(str::to_owned)
                    .collect();
                Some(Access {
                    kind: kind.into(),
                    name: rest.into(),
                    actions,
                })
            }
            "registry" if rest == "catalog" && !caller.is_anonymous() => Some(Access {
                kind: kind.into(),
                name: rest.into(),
                actions: vec!["*".into()],
            }),
            _ => None,
        }
    }
}

fn granted(access: &[Access], repo: &str) -> BTreeSet<Action> {
    access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == repo)
        .flat_map(|a| a.actions.iter())
        .flat_map(|a| match a.as_str() {
            "*" => vec![Action::Pull, Action::Push, Action::Delete],
            other => parse_action(other).into_iter().collect(),
        })
        .collect()
}

fn parse_action(a: &str) -> Option<Action> {
    match a {
        "pull" => Some(Action::Pull),
        "push" => Some(Action::Push),
        "delete" => Some(Action::Delete),
        _ => None,
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Delete => "delete",
    }
}

enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The user name of Basic credentials, if that is what `authorization` holds (for the audit
/// log of a refused login; the password is dropped here).
pub fn basic_user(authorization: &str) -> Option<String> {
    match parse_authorization(authorization) {
        Ok(Credentials::Basic { user, .. }) => Some(user),
        _ => None,
    }
}

fn parse_authorization(value: &str) -> Result<Credentials, AuthError> {
    let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::BadCredentials)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::BadCredentials)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthError::BadCredentials)?;
        let (user, password) = text.split_once(':').ok_or(AuthError::BadCredentials)?;
        return Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    Err(AuthError::BadCredentials)
}

/// Failed logins per source address in the current minute.
#[derive(Debug)]
struct Failures {
    per_minute: u32,
    counts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Sources remembered before the stale ones are dropped.
const MAX_SOURCES: usize = 100_000;

impl Failures {
    fn new(per_minute: u32) -> Self {
        Failures {
            per_minute,
            counts: Mutex::default(),
        }
    }

    /// While `source` is refused, the rest of its window in whole seconds, rounded up.
    fn blocked(&self, source: IpAddr) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, n) = counts.get(&source)?;
        let left = WINDOW.checked_sub(start.elapsed()).filter(|d| !d.is_zero())?;
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        (*n >= self.per_minute).then_some(Duration::from_secs(secs))
    }

    fn record(&self, source: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= MAX_SOURCES {
            counts.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = counts.entry(source).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_parse_and_never_print_secrets() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pa:ss")
        );
        let c = parse_authorization(&basic).unwrap();
        assert!(matches!(&c, Credentials::Basic { user, password } if user == "alice" && password == "pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"));
        let c = parse_authorization("Bearer abc.def.ghi").unwrap();
        assert!(!format!("{c:?}").contains("abc"));
        assert!(parse_authorization("Basic !!!").is_err());
        assert!(parse_authorization("Digest x").is_err());
        assert!(parse_authorization("Basic").is_err());
    }

    /// An `Auth` over an htpasswd file of `entries` in `dir`, with `more` config under `auth:`.
    fn auth_with(dir: &std::path::Path, entries: &str, more: &str) -> Auth {
        let path = dir.join("htpasswd");
        std::fs::write(&path, entries).unwrap();
        let yaml = format!("auth:\n  htpasswd:\n    path: {}\n{more}", path.display());
        Auth::open(&crate::config::from_yaml(&yaml).unwrap().auth.unwrap()).unwrap()
    }

    fn entry(user: &str, password: &str) -> String {
        let hash = bcrypt::hash_with_result(password, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        format!("{user}:{hash}\n")
    }

    #[test]
    fn an_entry_fingerprint_is_keyed_and_follows_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let first = entry("alice", "one");
        let auth = auth_with(dir.path(), &first, "");
        let fp = auth.entry_fingerprint("alice", b"key one").unwrap();
        assert_eq!(fp.len(), 64);
        assert!(!first.contains(&fp));
        assert_eq!(auth.entry_fingerprint("alice", b"key one").as_ref(), Some(&fp));
        assert_ne!(auth.entry_fingerprint("alice", b"key two").as_ref(), Some(&fp));
        assert_eq!(auth.entry_fingerprint("bob", b"key one"), None);
        std::fs::write(dir.path().join("htpasswd"), entry("alice", "two")).unwrap();
        auth.reload();
        assert_ne!(auth.entry_fingerprint("alice", b"key one").as_ref(), Some(&fp));
    }

    #[test]
    fn an_issuer_session_sees_by_the_rules_or_else_by_its_tokens_grants_only() {
        let dir = tempfile::tempdir().unwrap();
        let grant = vec![Access {
            kind: "repository".into(),
            name: "granted/app".into(),
            actions: vec!["pull".into()],
        }];
        // No rules: a password user sees everything; an issuer's user what the token grants.
        let open = auth_with(dir.path(), &entry("alice", "pw"), "");
        assert!(open.session_may_list(&open.session_caller("alice"), "any/app"));
        let issued = open.issuer_caller("robot", &[], grant.clone());
        assert!(open.session_may_list(&issued, "granted/app"));
        assert!(!open.session_may_list(&issued, "any/app"));
        assert!(open.allowed(&issued, "granted/app").contains(&Action::Pull));
        assert!(!open.allowed(&issued, "granted/app").contains(&Action::Delete));
        // Rules: they count for the token's subject and groups, as do the token's grants.
        let rules = "  rules:\n    - repositories: [\"team/**\"]\n      groups: [team]\n      actions: [pull]\n";
        let with_rules = auth_with(dir.path(), &entry("alice", "pw"), rules);
        let member = with_rules.issuer_caller("robot", &["team".to_owned()], grant.clone());
        assert!(with_rules.session_may_list(&member, "team/app"));
        assert!(with_rules.session_may_list(&member, "granted/app"));
        let outsider = with_rules.issuer_caller("robot", &[], Vec::new());
        assert!(!with_rules.session_may_list(&outsider, "team/app"));
    }

    #[test]
    fn failures_block_a_source_past_the_limit_only() {
        let f = Failures::new(2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        f.record(a);
        assert!(f.blocked(a).is_none());
        f.record(a);
        let left = f.blocked(a).expect("blocked past the limit");
        assert!(left <= WINDOW && left >= Duration::from_secs(55), "{left:?}");
        assert_eq!(left.subsec_nanos(), 0, "whole seconds");
        assert!(f.blocked(b).is_none());
    }
}
