//! The admin pages: garbage collection (start a run or a dry run, follow it, read its report)
//! and storage usage. Admins only (`Viewer::is_admin`); runs start through the admin API's own
//! job table, so the API and the UI see the same runs and never start two at once.

use std::sync::Arc;

use axum::Form;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::views;
use super::{UiError, Viewer, respond};
use crate::api::admin::start_gc;

#[derive(Deserialize)]
pub struct GcForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dry_run: Option<String>,
}

/// Admin pages to anyone else: as if they did not exist.
fn admin_only(viewer: &Viewer) -> Result<(), UiError> {
    if viewer.is_admin() {
        Ok(())
    } else {
        Err(UiError::NotFound("no such page".into()))
    }
}

pub async fn overview(viewer: Viewer) -> Response {
    let result = admin_only(&viewer).map(|()| views::admin(&viewer, &viewer.ui.app.gc.list()).into_response());
    respond(&viewer, result)
}

/// `POST {ui.path}/admin/gc`: start a run (a dry run when the form says so), then show it.
pub async fn gc_start(viewer: Viewer, headers: axum::http::HeaderMap, Form(form): Form<GcForm>) -> Response {
    let result = super::actions::check_csrf(&viewer, &form.csrf)
        .and_then(|()| admin_only(&viewer))
        .map(|()| {
            let app = &viewer.ui.app;
            let opts = app.gc_options.clone().with_dry_run(form.dry_run.is_some());
            let (run, _) = start_gc(&app.gc, Arc::clone(&app.registry), opts, viewer.actor(&headers));
            Redirect::to(&viewer.ui.link(&format!("/admin/gc/{}", run.id))).into_response()
        });
    respond(&viewer, result)
}

/// One run: its phase while it runs (the page reloads itself), then its report.
pub async fn gc_run(viewer: Viewer, Path(id): Path<String>) -> Response {
    let result = admin_only(&viewer).and_then(|()| {
        let run = viewer
            .ui
            .app
            .gc
            .get(&id)
            .ok_or_else(|| UiError::NotFound("no such garbage collection run".into()))?;
        Ok(views::gc_run(&viewer, &run).into_response())
    });
    respond(&viewer, result)
}

pub async fn usage(viewer: Viewer) -> Response {
    let result = async {
        admin_only(&viewer)?;
        let mut usage = viewer.ui.app.registry.usage().await?;
        usage
            .repositories
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        Ok(views::usage(&viewer, &usage).into_response())
    }
    .await;
    respond(&viewer, result)
}
