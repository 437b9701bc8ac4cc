//! The web UI: server-rendered HTML pages over `registry` and `auth`, mounted at `ui.path`
//! on the main listener next to the API. It never touches storage: every read and change is
//! a `registry` use case, every permission an `auth` question, the same ones the API asks.
//!
//! - `route`: the paths under `{ui.path}/r/` (repository names contain `/`);
//! - `session`: the signed session cookie and CSRF tokens;
//! - `browse`: the repository list, repository and manifest pages;
//! - `actions`: sign-in and out, tag and manifest deletion;
//! - `admin`: garbage collection, fsck, storage usage and the audit log, for admins;
//! - `views`: the templates (maud: checked at compile time, escaping every interpolation);
//! - `model`: what the pages show of a manifest's and an image config's JSON.
//!
//! Who sees what (`Viewer`): with authentication on, a page shows only repositories the rules
//! let the session's user (or, signed out, anonymous callers) pull; deleting needs the delete
//! action, admin pages the admin role. A user signed in through an external token issuer is
//! judged as the registry judges their sign-in token (`Auth::session_may_list`): the rules for
//! its subject and groups when rules exist, plus the token's own grants, which carry no
//! delete. With authentication off, everyone reads; deleting and
//! the admin pages need a loopback client, as the admin API does, unless
//! `ui.allow_anonymous_admin`. Pages work without JavaScript; the one script only adds copy
//! buttons and follows a running job live.

mod actions;
mod admin;
mod browse;
mod model;
mod route;
mod session;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::cookie::Key;

use crate::api::{App, Peer};
use crate::auth::Caller;
use crate::config::Action;

pub use session::Session;

/// Shared state of the UI's handlers.
#[derive(Clone)]
pub struct Ui {
    app: App,
    settings: Arc<crate::config::Ui>,
    /// Signs session cookies (`session_key`).
    key: Key,
}

impl FromRef<Ui> for Key {
    fn from_ref(ui: &Ui) -> Key {
        ui.key.clone()
    }
}

impl Ui {
    /// A link to `rest` under the UI's path (`rest` starts with `/`).
    fn link(&self, rest: &str) -> String {
        format!("{}{rest}", self.settings.path)
    }
}

/// The key that signs session cookies: made at start-up on one node; with several, the one
/// the first node stored in the shared database, so that a session opened through one node is
/// valid on every other (a load balancer sends each request where it likes).
pub async fn session_key(member: Option<&crate::meta::cluster::Member>) -> Result<Key, crate::meta::MetaError> {
    let fresh = Key::generate();
    let Some(member) = member else {
        return Ok(fresh);
    };
    let stored = member.cluster.shared_secret(SESSION_KEY, fresh.master()).await?;
    Key::try_from(stored.as_slice())
        .map_err(|e| crate::meta::MetaError::Corrupt(format!("the stored {SESSION_KEY}: {e}")))
}

/// The name of the session key among the cluster's shared secrets.
const SESSION_KEY: &str = "ui.session_key";

/// The UI's routes, to be merged into the API's router (which adds the access log and the
/// shared state). `/` redirects to the UI. `key` signs the session cookies (`session_key`).
pub fn router(app: App, settings: &crate::config::Ui, key: Key) -> Router<App> {
    let ui = Ui {
        app,
        settings: Arc::new(settings.clone()),
        key,
    };
    let base = settings.path.as_str();
    let at = |rest: &str| format!("{base}{rest}");
    let home = at("/");
    let root = home.clone();
    Router::new()
        .route(base, get(move || async move { Redirect::to(&home) }))
        .route(&at("/"), get(browse::repositories))
        .route(&at("/r/{*rest}"), get(browse::repository_path).post(actions::delete))
        .route(&at("/login"), get(actions::login_form).post(actions::login))
        .route(&at("/logout"), axum::routing::post(actions::logout))
        .route(&at("/admin"), get(admin::overview))
        .route(&at("/admin/gc"), axum::routing::post(admin::gc_start))
        .route(&at("/admin/gc/{id}"), get(admin::gc_run))
        .route(&at("/admin/fsck"), axum::routing::post(admin::fsck_start))
        .route(&at("/admin/fsck/{id}"), get(admin::fsck_run))
        .route(&at("/admin/gc/{id}/status"), get(admin::gc_status))
        .route(&at("/admin/fsck/{id}/status"), get(admin::fsck_status))
        .route(&at("/admin/usage"), get(admin::usage))
        .route(&at("/admin/audit"), get(admin::audit))
        .route(&at("/static/style.css"), get(style))
        .route(&at("/static/ui.js"), get(script))
        .route(&at("/{*rest}"), get(not_found))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn_with_state(ui.clone(), session::ensure))
        .with_state(ui)
        .route("/", get(move || async move { Redirect::to(&root) }))
}

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("ui.js");

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn not_found(viewer: Viewer) -> Response {
    UiError::NotFound("no such page".into()).page(&viewer)
}

/// Pages are not framed, sniffed or sent to other sites, and run no script but the UI's own.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Who is looking, and what they may do. Extracted from every UI request (after `session`).
pub struct Viewer {
    ui: Ui,
    pub session: Session,
    peer: Peer,
    /// The caller the rules judge, with authentication on.
    caller: Option<Caller>,
}

impl Viewer {
    /// The signed-in user (or none) as the audit log records them.
    pub(crate) fn actor(&self, headers: &axum::http::HeaderMap) -> crate::meta::Actor {
        crate::api::actor(
            self.session.user.as_deref(),
            &axum::http::Method::POST,
            headers,
            &self.peer,
        )
    }
}

impl FromRequestParts<Ui> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Response> {
        let session = parts.extensions.get::<Session>().cloned();
        let peer = parts.extensions.get::<Peer>().cloned();
        let (Some(session), Some(peer)) = (session, peer) else {
            tracing::error!("a UI request without its session or peer");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let caller = ui.app.auth.as_ref().map(|auth| session.caller(auth));
        Ok(Viewer {
            ui: ui.clone(),
            session,
            peer,
            caller,
        })
    }
}

impl Viewer {
    /// Without authentication: may this client change things? (Loopback, or everyone when
    /// `ui.allow_anonymous_admin`.)
    fn trusted_without_auth(&self) -> bool {
        self.ui.settings.allow_anonymous_admin || self.peer.addr.ip().is_loopback()
    }

    pub fn may_pull(&self, repo: &str) -> bool {
        match (&self.ui.app.auth, &self.caller) {
            (Some(auth), Some(caller)) => auth.session_may_list(caller, repo),
            _ => true,
        }
    }

    pub fn may_delete(&self, repo: &str) -> bool {
        match (&self.ui.app.auth, &self.caller) {
            (Some(auth), Some(caller)) => auth.allowed(caller, repo).contains(&Action::Delete),
            _ => self.trusted_without_auth(),
        }
    }

    pub fn is_admin(&self) -> bool {
        match (&self.ui.app.auth, &self.caller) {
            (Some(auth), Some(caller)) => auth.is_admin(caller),
            _ => self.trusted_without_auth(),
        }
    }

    /// Whether signing in is possible (and so offered).
    pub fn can_sign_in(&self) -> bool {
        self.ui.app.auth.as_ref().is_some_and(|a| a.can_sign_in())
    }

    /// The repositories this viewer may see, as a filter for listings.
    fn visible(&self) -> impl Fn(&str) -> bool + Send + 'static {
        let judge = self.ui.app.auth.clone().zip(self.caller.clone());
        move |repo: &str| {
            judge
                .as_ref()
                .is_none_or(|(auth, caller)| auth.session_may_list(caller, repo))
        }
    }

    /// The host clients pull from, as this request reached the server, for `docker pull` lines.
    fn registry_host(&self, headers: &axum::http::HeaderMap) -> String {
        let base = crate::api::public_base(headers, &self.peer);
        base.split_once("://").map_or(base.clone(), |(_, host)| host.to_owned())
    }
}

/// Why a page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// The metadata database or the blob store is unreachable for now (logged once).
    #[error("the registry's storage is unavailable; retry in a moment")]
    Unavailable,
    /// The real error is logged once; the page says only that something failed.
    #[error("internal error")]
    Internal,
}

impl From<crate::registry::Error> for UiError {
    fn from(e: crate::registry::Error) -> Self {
        use crate::registry::Error as E;
        match e {
            E::NameUnknown(_) => UiError::NotFound("no such repository".into()),
            E::ManifestUnknown | E::BlobUnknown => UiError::NotFound("no such manifest".into()),
            E::NameInvalid(e) => UiError::BadRequest(e.to_string()),
            E::DigestInvalid(e) => UiError::BadRequest(e.to_string()),
            E::Unsupported(why) => UiError::BadRequest(why),
            e @ E::TagImmutable { .. } => UiError::Forbidden(e.to_string()),
            e @ (E::MetadataUnavailable(_) | E::StorageUnavailable(_)) => {
                tracing::error!(error = %e, "UI page: storage unavailable");
                UiError::Unavailable
            }
            other => {
                tracing::error!(error = %other, "UI page failed");
                UiError::Internal
            }
        }
    }
}

impl UiError {
    fn status(&self) -> StatusCode {
        match self {
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Forbidden(_) => StatusCode::FORBIDDEN,
            UiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as a page.
    pub fn page(&self, viewer: &Viewer) -> Response {
        (self.status(), views::error(viewer, &self.to_string())).into_response()
    }
}

/// Answer `result`, rendering an error with the viewer's layout.
fn respond(viewer: &Viewer, result: Result<Response, UiError>) -> Response {
    result.unwrap_or_else(|e| e.page(viewer))
}
