//! The UI's session: one signed cookie carrying who signed in (if anyone) and how, the CSRF
//! token of the session's forms and when it ends. The cookie is signed (HMAC, `cookie`'s
//! signed jar) with a key made at start-up (with several nodes, one the nodes share: see
//! `ui::session_key`), so its content cannot be forged or altered, and a restart ends every
//! session (of a single node). The cookie itself lasts as long as the browser session; the
//! end it carries is checked here. It is `HttpOnly`, `SameSite=Strict`, scoped to the UI's
//! path, and `Secure` as `ui.secure_cookie` says (by default on TLS connections). It holds no
//! secret: the password is checked once, at sign-in, and an issuer's token is not kept.
//!
//! How the user signed in (`Via`) is checked on every request. A password user's session
//! carries a keyed fingerprint of their htpasswd entry (`Auth::entry_fingerprint`, keyed with
//! the session key: never the hash itself); once the entry changes (a new password, or the
//! user removed, then the file reloaded) the session is treated as a fresh anonymous one. An
//! issuer's user carries the groups and repository grants of the sign-in token (not the
//! token), judged as the registry judges that token.
//!
//! Every visit without a valid cookie gets a fresh anonymous one (`ensure`), so that every
//! form, the sign-in form included, carries a CSRF token. A POST is accepted only when its
//! `csrf` field equals its session's token (`Session::check_csrf`); a cross-site page can
//! neither read the token nor, with `SameSite=Strict`, send the cookie.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::SET_COOKIE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite, SignedCookieJar};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Ui;
use crate::api::Peer;
use crate::auth::token::Access;
use crate::auth::{Auth, Caller};

/// The cookie's name.
const COOKIE: &str = "berth_session";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The signed-in user; `None`: nobody signed in.
    pub user: Option<String>,
    /// How `user` signed in; a session with a user and no `via` is not valid.
    #[serde(default)]
    via: Option<Via>,
    /// The token every POST form of this session carries.
    pub csrf: String,
    /// Seconds since the epoch at which the session ends.
    exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Session {
    /// A new anonymous session, lasting `ttl`, with a new CSRF token.
    pub fn anonymous(ttl: Duration) -> Self {
        Session {
            user: None,
            via: None,
            csrf: uuid::Uuid::new_v4().simple().to_string(),
            exp: now_secs() + ttl.as_secs(),
        }
    }

    /// A new session for `user`, signed in `via`, lasting `ttl`, with a new CSRF token.
    pub fn signed_in(user: String, via: Via, ttl: Duration) -> Self {
        Session {
            user: Some(user),
            via: Some(via),
            ..Session::anonymous(ttl)
        }
    }

    /// Whether the sign-in still holds: nobody signed in; a password user whose htpasswd
    /// entry is still the one of sign-in time; an issuer's user while Berth still verifies
    /// the issuer's tokens.
    fn holds(&self, ui: &Ui) -> bool {
        let (Some(user), Some(auth)) = (&self.user, &ui.app.auth) else {
            return self.user.is_none();
        };
        match &self.via {
            Some(Via::Password { entry }) => auth.entry_fingerprint(user, ui.key.signing()).as_ref() == Some(entry),
            Some(Via::Issuer { .. }) => auth.signs_in_through_issuer(),
            None => false,
        }
    }

    /// The caller the rules judge for this session.
    pub fn caller(&self, auth: &Auth) -> Caller {
        match (&self.user, &self.via) {
            (Some(user), Some(Via::Password { .. })) => auth.session_caller(user),
            (Some(user), Some(Via::Issuer { groups, access })) => auth.issuer_caller(user, groups, access.clone()),
            _ => Caller::anonymous(),
        }
    }

    fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a session serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(value: &str) -> Option<Self> {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
        serde_json::from_slice::<Session>(&json)
            .ok()
            .filter(|s| s.exp > now_secs())
    }

    /// Whether a form's `csrf` field is this session's token (compared in constant time).
    pub fn check_csrf(&self, given: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The cookie that carries this session, signed into `jar`.
    pub fn store(&self, ui: &Ui, peer: &Peer, jar: SignedCookieJar) -> SignedCookieJar {
        jar.add(self.cookie(ui, peer))
    }

    fn cookie(&self, ui: &Ui, peer: &Peer) -> Cookie<'static> {
        Cookie::build((COOKIE, self.encode()))
            .path(ui.settings.path.clone())
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(ui.settings.secure_cookie.applies(peer.tls))
            .build()
    }
}

/// How a session's user signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Via {
    /// With a password of the htpasswd file: the keyed fingerprint of the user's entry then.
    Password { entry: String },
    /// Through the external token issuer: the sign-in token's groups and repository grants.
    Issuer { groups: Vec<String>, access: Vec<Access> },
}

/// The session of `jar`, if its cookie is present, correctly signed, not expired, and its
/// sign-in still holds.
fn current(ui: &Ui, jar: &SignedCookieJar) -> Option<Session> {
    let session = jar.get(COOKIE).and_then(|c| Session::decode(c.value()))?;
    if session.holds(ui) {
        return Some(session);
    }
    tracing::info!(target: "berth::auth", user = session.user.as_deref().unwrap_or("-"), "UI session ended: the sign-in no longer holds (password changed or user removed)");
    None
}

/// Middleware of every UI route: put the request's session into its extensions (a fresh
/// anonymous one when it has none), and send the fresh one's cookie with the response unless
/// the handler set a cookie of its own (signing in or out).
pub async fn ensure(State(ui): State<Ui>, jar: SignedCookieJar, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<Peer>().cloned();
    let (session, fresh) = match current(&ui, &jar) {
        Some(s) => (s, false),
        None => (Session::anonymous(ui.settings.session_ttl), true),
    };
    request.extensions_mut().insert(session.clone());
    let response = next.run(request).await;
    match peer {
        Some(peer) if fresh && !response.headers().contains_key(SET_COOKIE) => {
            (session.store(&ui, &peer, jar), response).into_response()
        }
        _ => response,
    }
}
