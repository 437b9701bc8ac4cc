//! Who may call what. Each endpoint's need is checked against `crate::auth` before its handler
//! runs; the admin routes have their own guard; `GET /auth/token` is where Berth issues
//! tokens. Without authentication configured, everything is allowed (admin: loopback only).
//! `GET /v1/_ping` needs nothing: the Docker engine sends it, without credentials, before a
//! search.

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::query::Query;
use super::route::Endpoint;
use super::{ApiError, App, Code, Peer, forwarded_base};
use crate::auth::{Auth, Caller, Scope};
use crate::config::Action;
use crate::oci::RepoName;

/// Which repositories a caller may see in the catalog and in search results.
pub(super) type Visible = Box<dyn Fn(&str) -> bool + Send>;

/// The user name the access log shows, set on responses by whoever authenticated the request.
#[derive(Debug, Clone)]
pub struct LoggedUser(pub String);

/// What a request needs.
enum Need<'a> {
    /// Nothing at all: `/v1/_ping`.
    Nothing,
    /// Any authenticated caller: `GET /v2/` (so that clients learn to log in) and the catalog.
    Login,
    /// `docker search`: an authenticated caller, or an anonymous one when some rule lets
    /// anonymous callers pull (the results then list what they may pull).
    Search,
    Repo(&'a RepoName, Action),
}

fn need<'a>(endpoint: &'a Endpoint, method: &Method) -> Need<'a> {
    let write = matches!(*method, Method::PUT | Method::POST | Method::PATCH);
    match endpoint {
        Endpoint::Ping => Need::Nothing,
        Endpoint::Search => Need::Search,
        Endpoint::Base | Endpoint::Catalog => Need::Login,
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } if *method == Method::DELETE => {
            Need::Repo(name, Action::Delete)
        }
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } if write => Need::Repo(name, Action::Push),
        Endpoint::Tags { name }
        | Endpoint::Referrers { name, .. }
        | Endpoint::Manifest { name, .. }
        | Endpoint::Blob { name, .. } => Need::Repo(name, Action::Pull),
        Endpoint::UploadStart { name } | Endpoint::Upload { name, .. } => Need::Repo(name, Action::Push),
    }
}

fn scope(need: &Need) -> Option<Scope> {
    match need {
        Need::Nothing | Need::Login => None,
        Need::Search => Some(Scope::CatalogSearch),
        Need::Repo(name, action) => Some(Scope::Repository {
            name: name.to_string(),
            actions: match action {
                Action::Push => vec![Action::Pull, Action::Push],
                other => vec![*other],
            },
        }),
    }
}

/// Authenticate and authorize a `/v2/` request; `Ok(None)` when authentication is off.
pub(super) async fn check(
    app: &App,
    endpoint: &Endpoint,
    method: &Method,
    query: &Query,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Option<Caller>, ApiError> {
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    let need = need(endpoint, method);
    if let Need::Nothing = need {
        return Ok(None);
    }
    let challenge = auth.challenge(scope(&need).as_slice(), &base(headers, peer));
    let caller = authenticate_audited(app, auth, method, headers, peer, matches!(endpoint, Endpoint::Base))
        .await
        .map_err(|e| ApiError::auth(&e, &challenge))?;
    let refusal = match need {
        Need::Nothing => return Ok(None),
        Need::Login | Need::Search if !caller.is_anonymous() => return Ok(Some(caller)),
        Need::Search if auth.anonymous_may_pull() => return Ok(Some(caller)),
        Need::Login | Need::Search => crate::auth::AuthError::Missing,
        Need::Repo(name, action) if auth.allowed(&caller, name.as_str()).contains(&action) => {
            mount_source_token(auth, &caller, endpoint, query, headers, peer)?;
            return Ok(Some(caller));
        }
        Need::Repo(name, action) => auth.refusal(&caller, name.as_str(), action),
    };
    tracing::info!(target: "berth::auth", user = caller.subject.name(), source = %peer.addr.ip(), "access refused");
    Err(ApiError::auth(&refusal, &challenge))
}

/// `authenticate`, recording in the audit log every refused credential and, when `login` (a
/// request clients send to log in: `GET /v2/`, `GET /auth/token`), an accepted password or
/// certificate. Anonymous requests and tokens presented are not logins.
async fn authenticate_audited(
    app: &App,
    auth: &Auth,
    method: &Method,
    headers: &HeaderMap,
    peer: &Peer,
    login: bool,
) -> Result<Caller, crate::auth::AuthError> {
    use crate::auth::AuthError;
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let result = authenticate(auth, headers, peer).await;
    let (user, outcome) = match &result {
        Ok(caller) if login && !caller.is_anonymous() && caller.token_access.is_none() => {
            (Some(caller.subject.name().to_owned()), "ok")
        }
        Err(AuthError::BadCredentials) => (
            authorization.and_then(crate::auth::basic_user),
            "refused: invalid credentials",
        ),
        Err(AuthError::TooManyFailures { .. }) => (
            authorization.and_then(crate::auth::basic_user),
            "refused: too many failed logins from this address",
        ),
        _ => return result,
    };
    let mut event = crate::meta::AuditEvent::new(
        crate::meta::Action::Login,
        &super::actor(user.as_deref(), method, headers, peer),
        crate::meta::now_ms(),
    );
    outcome.clone_into(&mut event.result);
    app.registry.record(event).await;
    result
}

async fn authenticate(auth: &Auth, headers: &HeaderMap, peer: &Peer) -> Result<Caller, crate::auth::AuthError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    auth.authenticate(authorization, peer.cert_user.as_deref(), peer.addr.ip())
        .await
}

/// A mount (`POST .../uploads/?mount=<digest>&from=<source>`) by a token that does not carry
/// pull on the source, when a fresh token could: 401 with a challenge naming both scopes, as
/// CNCF Distribution answers, so the client fetches that token and the mount happens. When no
/// token could carry it, the request goes on and the mount becomes an upload (`may_mount`).
fn mount_source_token(
    auth: &Auth,
    caller: &Caller,
    endpoint: &Endpoint,
    query: &Query,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<(), ApiError> {
    let Endpoint::UploadStart { name } = endpoint else {
        return Ok(());
    };
    let (Some(_), Some(from)) = (query.get("mount"), query.get("from")) else {
        return Ok(());
    };
    let Ok(from) = RepoName::parse(from) else {
        return Ok(());
    };
    if caller.token_access.is_none() || auth.allowed(caller, from.as_str()).contains(&Action::Pull) {
        return Ok(());
    }
    match auth.refusal(caller, from.as_str(), Action::Pull) {
        refusal @ crate::auth::AuthError::Missing => {
            let scopes = [
                Scope::Repository {
                    name: name.to_string(),
                    actions: vec![Action::Pull, Action::Push],
                },
                Scope::Repository {
                    name: from.to_string(),
                    actions: vec![Action::Pull],
                },
            ];
            Err(ApiError::auth(&refusal, &auth.challenge(&scopes, &base(headers, peer))))
        }
        _ => Ok(()),
    }
}

/// May `caller` mount from `from`? (Pull access to the source; a mount that names no source
/// could reach any repository, so with authentication on it becomes an ordinary upload.)
pub(super) fn may_mount(app: &App, caller: Option<&Caller>, from: Option<&str>) -> bool {
    match (&app.auth, caller) {
        (None, _) => true,
        (Some(auth), Some(caller)) => from.is_some_and(|f| auth.allowed(caller, f).contains(&Action::Pull)),
        (Some(_), None) => false,
    }
}

/// The filter of the catalog and of search results for `caller`, if authentication is on:
/// the repositories it may pull.
pub(super) fn catalog_filter(app: &App, caller: Option<Caller>) -> Option<Visible> {
    let auth = app.auth.clone()?;
    let caller = caller?;
    Some(Box::new(move |repo: &str| auth.may_list(&caller, repo)))
}

/// How the client reaches this server (`scheme://host`), for the token realm of a challenge
/// and the UI's `docker pull` lines.
pub(crate) fn base(headers: &HeaderMap, peer: &Peer) -> String {
    if let Some(base) = forwarded_base(headers) {
        return base;
    }
    let scheme = if peer.tls { "https" } else { "http" };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    match host {
        Some(host) => format!("{scheme}://{host}"),
        None => format!("{scheme}://{}", peer.addr),
    }
}

/// `GET /auth/token?service=...&scope=...`: a token for the caller (Basic credentials, a client
/// certificate, or anonymous) granting what it asks and the rules allow.
pub async fn token(State(app): State<App>, Extension(peer): Extension<Peer>, uri: Uri, headers: HeaderMap) -> Response {
    let Some(auth) = app.auth.as_ref().filter(|a| a.issues_tokens()) else {
        return ApiError::not_found_route().into_response();
    };
    let basic = auth.basic_challenge();
    let caller = match authenticate_audited(&app, auth, &Method::GET, &headers, &peer, true).await {
        Ok(caller) if caller.token_access.is_none() => caller,
        Ok(_) => return ApiError::new(Code::Unauthorized, "a token cannot buy a token").into_response(),
        Err(e) => return ApiError::auth(&e, &basic).into_response(),
    };
    let scopes: Vec<String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    let user = caller.subject.name().to_owned();
    let mut response = match auth.issue(&caller, &scopes) {
        Ok(issued) => Json(issued).into_response(),
        Err(e) => ApiError::auth(&e, &basic).into_response(),
    };
    response.extensions_mut().insert(LoggedUser(user));
    response
}

/// What an anonymous admin request is told: how to get in.
const ADMIN_LOGIN: &str = "the admin API needs a user with the admin role (auth.admins); \
    berth gc, fsck and du --url send one from BERTH_ADMIN_USER and BERTH_ADMIN_PASSWORD";

/// The admin routes: the admin role with authentication on, loopback callers without it.
pub async fn admin_guard(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let Some(auth) = &app.auth else {
        if peer.addr.ip().is_loopback() {
            return next.run(request).await;
        }
        tracing::warn!(peer = %peer.addr, "admin request from a non-loopback client refused");
        return ApiError::new(Code::Denied, "the admin API answers loopback clients only").into_response();
    };
    let challenge = auth.challenge(&[], &base(request.headers(), &peer));
    let audited = authenticate_audited(&app, auth, request.method(), request.headers(), &peer, false);
    let caller = match audited.await {
        Ok(caller) if caller.is_anonymous() => {
            let mut e = ApiError::auth(&crate::auth::AuthError::Missing, &challenge);
            ADMIN_LOGIN.clone_into(&mut e.detail);
            return e.into_response();
        }
        Ok(caller) => caller,
        Err(e) => return ApiError::auth(&e, &challenge).into_response(),
    };
    let user = LoggedUser(caller.subject.name().to_owned());
    let mut request = request;
    request.extensions_mut().insert(user.clone());
    let mut response = if auth.is_admin(&caller) {
        next.run(request).await
    } else {
        ApiError::new(
            Code::Denied,
            format!(
                "the admin API needs the admin role, which {} does not have: auth.admins (users or groups) grants it",
                caller.subject.name()
            ),
        )
        .into_response()
    };
    response.extensions_mut().insert(user);
    response
}
