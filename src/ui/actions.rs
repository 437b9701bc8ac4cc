//! The forms that change something: signing in and out, and deleting a tag or a manifest
//! (after a confirmation page saying what becomes unreachable). Every POST checks its CSRF
//! token first; a deletion then needs what the API's DELETE needs (`Viewer::may_delete`) and
//! goes through the same `registry` use case.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::SignedCookieJar;
use serde::Deserialize;

use super::browse::readable;
use super::route::{self, UiPath};
use super::session::Via;
use super::views::{self, Confirm};
use super::{Session, Ui, UiError, Viewer, respond};
use crate::oci::{Digest, Reference, RepoName};

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
}

/// A POST whose CSRF token is not its session's is refused before anything else.
pub(super) fn check_csrf(viewer: &Viewer, given: &str) -> Result<(), UiError> {
    if viewer.session.check_csrf(given) {
        Ok(())
    } else {
        tracing::warn!(target: "berth::auth", source = %viewer.peer.addr.ip(), "UI form without a valid CSRF token refused");
        Err(UiError::Forbidden(
            "this form has expired or did not come from this site; reload the page and try again".into(),
        ))
    }
}

pub async fn login_form(viewer: Viewer) -> Response {
    if !viewer.can_sign_in() {
        return not_offered(&viewer);
    }
    views::login(&viewer, None).into_response()
}

fn not_offered(viewer: &Viewer) -> Response {
    UiError::NotFound("signing in needs auth.htpasswd or an external token issuer".into()).page(viewer)
}

/// `POST {ui.path}/login`: check the credentials as the registry does (the htpasswd file, or
/// else the external token issuer), record the attempt, then start a signed-in session (with
/// a new CSRF token) and go to the repositories.
pub async fn login(
    State(ui): State<Ui>,
    viewer: Viewer,
    jar: SignedCookieJar,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(e) = check_csrf(&viewer, &form.csrf) {
        return e.page(&viewer);
    }
    let Some(auth) = ui.app.auth.as_ref().filter(|a| a.can_sign_in()) else {
        return not_offered(&viewer);
    };
    let LoginForm { user, password, .. } = form;
    let signed_in = if auth.has_passwords() {
        auth.login(&user, password, viewer.peer.addr.ip())
            .await
            .map(|_| (user.clone(), password_via(&ui, auth, &user)))
    } else {
        auth.issuer_login(&user, &password, viewer.peer.addr.ip())
            .await
            .map(issuer_via)
    };
    record_login(&ui, &viewer, &headers, &user, signed_in.is_ok()).await;
    match signed_in {
        Ok((name, via)) => {
            let jar = Session::signed_in(name, via, ui.settings.session_ttl).store(&ui, &viewer.peer, jar);
            (jar, Redirect::to(&ui.link("/"))).into_response()
        }
        Err(e) => refused(&viewer, &e),
    }
}

/// A password user's sign-in, tied to their htpasswd entry of now.
fn password_via(ui: &Ui, auth: &crate::auth::Auth, user: &str) -> Via {
    Via::Password {
        entry: auth.entry_fingerprint(user, ui.key.signing()).unwrap_or_default(),
    }
}

/// Grants the sign-in token may carry into the cookie; a cookie holds about 4 KiB.
const MAX_GRANTS: usize = 32;

/// An issuer's user: the token's subject, groups and repository grants (never the token).
fn issuer_via(claims: crate::auth::token::Claims) -> (String, Via) {
    let access = claims
        .access
        .into_iter()
        .filter(|a| a.kind == "repository")
        .take(MAX_GRANTS)
        .collect();
    let via = Via::Issuer {
        groups: claims.groups,
        access,
    };
    (claims.sub, via)
}

/// The audit event of a sign-in, accepted or refused.
async fn record_login(ui: &Ui, viewer: &Viewer, headers: &axum::http::HeaderMap, user: &str, ok: bool) {
    let mut event = crate::meta::AuditEvent::new(
        crate::meta::Action::Login,
        &viewer.actor(headers),
        crate::meta::now_ms(),
    );
    event.actor.user = Some(user.to_owned());
    if !ok {
        "refused: invalid credentials".clone_into(&mut event.result);
    }
    ui.app.registry.record(event).await;
}

/// The sign-in form again, saying why (without telling a wrong user from a wrong password).
fn refused(viewer: &Viewer, e: &crate::auth::AuthError) -> Response {
    use crate::auth::AuthError as E;
    let (status, why) = match e {
        E::TooManyFailures { .. } => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        E::Internal(_) => (
            StatusCode::BAD_GATEWAY,
            "the credentials could not be checked now; try again later".to_owned(),
        ),
        _ => (StatusCode::UNAUTHORIZED, "wrong user name or password".to_owned()),
    };
    (status, views::login(viewer, Some(&why))).into_response()
}

/// `POST {ui.path}/logout`: a new anonymous session.
pub async fn logout(
    State(ui): State<Ui>,
    viewer: Viewer,
    jar: SignedCookieJar,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_csrf(&viewer, &form.csrf) {
        return e.page(&viewer);
    }
    let jar = Session::anonymous(ui.settings.session_ttl).store(&ui, &viewer.peer, jar);
    (jar, Redirect::to(&ui.link("/"))).into_response()
}

/// The confirmation page of a deletion: what goes, and what becomes unreachable.
pub(super) async fn confirm(viewer: &Viewer, name: &RepoName, reference: &Reference) -> Result<Response, UiError> {
    may_delete(viewer, name)?;
    let c = Confirm {
        name: name.to_string(),
        reference: reference.to_string(),
        what: match reference {
            Reference::Tag(t) => format!("tag {t}"),
            Reference::Digest(d) => format!("manifest {d}"),
        },
        consequences: consequences(viewer, name, reference).await?,
    };
    Ok(views::confirm(viewer, &c).into_response())
}

fn may_delete(viewer: &Viewer, name: &RepoName) -> Result<(), UiError> {
    readable(viewer, name)?;
    if viewer.may_delete(name.as_str()) {
        Ok(())
    } else {
        Err(UiError::Forbidden(format!("you may not delete from {name}")))
    }
}

async fn consequences(viewer: &Viewer, name: &RepoName, reference: &Reference) -> Result<Vec<String>, UiError> {
    let registry = &viewer.ui.app.registry;
    let collects = viewer.ui.app.gc_options.delete_untagged;
    let gc = if collects {
        "the next garbage collection removes it, with the blobs only it uses, unless an index or a referrer's subject keeps it"
    } else {
        "garbage collection keeps untagged manifests (gc.delete_untagged is off), so it stays until deleted by digest"
    };
    let mut lines = Vec::new();
    match reference {
        Reference::Tag(tag) => {
            let target = registry
                .local_tag_target(name, tag)
                .await?
                .ok_or_else(|| UiError::NotFound(format!("no tag {tag} in {name}")))?;
            lines.push(format!("The tag {tag} goes; the manifest {target} stays, by digest."));
            let tags = match Digest::parse(&target) {
                Ok(digest) => registry.manifest_tags(name, &digest).await?,
                Err(_) => Vec::new(),
            };
            let others: Vec<&str> = tags.iter().map(String::as_str).filter(|t| *t != tag.as_str()).collect();
            if others.is_empty() {
                lines.push(format!("No other tag points at it: it becomes untagged, and {gc}."));
            } else {
                lines.push(format!("It stays tagged as {}.", others.join(", ")));
            }
        }
        Reference::Digest(digest) => {
            registry.get_manifest(name, reference).await?;
            let own = registry.manifest_tags(name, digest).await?;
            lines.push(format!(
                "The manifest goes, and with it its tags: {}.",
                if own.is_empty() {
                    "none".to_owned()
                } else {
                    own.join(", ")
                }
            ));
            let referrers = registry.referrers(name, digest, None).await?;
            if !referrers.is_empty() {
                lines.push(format!(
                    "{} referrer(s) (signatures, SBOMs, attestations) lose their subject; untagged, {gc}.",
                    referrers.len()
                ));
            }
            lines.push(
                "Blobs no other manifest uses become unreachable; the next garbage collection frees them.".into(),
            );
        }
    }
    Ok(lines)
}

/// `POST {ui.path}/r/<name>/-/delete/<reference>`: delete, then back to the repository.
pub async fn delete(
    viewer: Viewer,
    Path(rest): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let result = async {
        check_csrf(&viewer, &form.csrf)?;
        let UiPath::Delete(name, reference) = route::parse(&rest).map_err(UiError::BadRequest)? else {
            return Err(UiError::NotFound("no such form".into()));
        };
        may_delete(&viewer, &name)?;
        let actor = viewer.actor(&headers);
        viewer.ui.app.registry.delete_manifest(&name, &reference, &actor).await?;
        tracing::info!(target: "berth::audit", user = viewer.session.user.as_deref().unwrap_or("-"), repo = %name, %reference, "deleted from the UI");
        Ok(Redirect::to(&viewer.ui.link(&route::repository(name.as_str()))).into_response())
    }
    .await;
    respond(&viewer, result)
}
