//! The HTTP surface: axum wiring, route dispatch, header parsing (`range`), handlers and the
//! single error mapping.
//!
//! Every `/v2/...` request (and `/v1/_ping`, `/v1/search` of `docker search`) goes to
//! `dispatch`, which parses the raw path into an `Endpoint` and matches `(endpoint, method)` once. Handlers are short: parse headers and query, make one
//! call into `registry`, shape the response. Nothing here touches storage directly.

pub(crate) mod access;
pub mod admin;
mod counted;
mod error;
mod handlers;
mod query;
pub mod range;
pub mod route;
#[cfg(feature = "test-hooks")]
mod test_hooks;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

pub(crate) use access::base as public_base;
pub use error::{ApiError, Code};
use route::Endpoint;

use crate::registry::Registry;

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct App {
    pub registry: Arc<Registry>,
    /// Garbage collection runs.
    pub gc: Arc<admin::jobs::Jobs>,
    /// fsck runs.
    pub fsck: Arc<admin::jobs::Jobs>,
    /// Settings of a garbage collection started through the admin API.
    pub gc_options: crate::gc::Options,
    /// False once shutdown has begun: `/readyz` answers 503.
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// `None`: authentication is off.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// This node in its cluster, when several nodes share the metadata (PostgreSQL).
    pub member: Option<crate::meta::cluster::Member>,
}

/// Who is on the other end of a request's connection. The server's connection loop, which
/// depends on this module and never the reverse, puts one into every request's extensions;
/// access checks and handlers read it from there.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// The user a verified client certificate names (mutual TLS).
    pub cert_user: Option<String>,
    pub tls: bool,
}

/// The router of `http.debug_addr`: metrics and probes only.
pub fn debug_router(app: App) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz))
        .with_state(app)
}

/// Build the router.
pub fn router(app: App) -> Router {
    router_with(app, Router::new())
}

/// Build the router with `extra` routes (the web UI's) beside the API's: they share the
/// access log, the metrics and the fallback, and never shadow an API path.
pub fn router_with(app: App, extra: Router<App>) -> Router {
    let admin = Router::new()
        .route("/admin/gc", axum::routing::post(admin::gc_start).get(admin::gc_list))
        .route("/admin/gc/{id}", axum::routing::get(admin::gc_get))
        .route(
            "/admin/fsck",
            axum::routing::post(admin::fsck_start).get(admin::fsck_list),
        )
        .route("/admin/fsck/{id}", axum::routing::get(admin::fsck_get))
        .route("/admin/usage", axum::routing::get(admin::usage))
        .route("/admin/retention", axum::routing::post(admin::retention))
        .route("/admin/policies", axum::routing::get(admin::policies))
        .route("/admin/audit", axum::routing::get(admin::audit))
        .route("/admin/notifications", axum::routing::get(admin::notifications));
    #[cfg(feature = "test-hooks")]
    let admin = test_hooks::mount(admin);
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(app.clone(), access::admin_guard));
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/v1/_ping", any(dispatch))
        .route("/v1/search", any(dispatch))
        .route("/auth/token", axum::routing::get(access::token))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/metrics", axum::routing::get(metrics))
        .route("/readyz", axum::routing::get(readyz))
        .merge(admin)
        .merge(extra)
        .fallback(|| async { ApiError::not_found_route() })
        // A known path with a method it does not answer: 405 with `Allow` (set by axum) and an
        // OCI body, as every other failure.
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::Unsupported, "method not allowed on this endpoint")
        })
        .layer(axum::middleware::map_response(api_version_header))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(app)
}

/// Ready: shutdown has not begun, the shared metadata database (PostgreSQL, when configured)
/// answers a trivial query within `READY_TIMEOUT`, and storage is writable. A 503 names each
/// part that failed, one per line; the causes are logged.
async fn readyz(State(app): State<App>) -> Response {
    use axum::http::StatusCode;
    if !app.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let registry = &app.registry;
    let (metadata, storage) = tokio::join!(registry.check_metadata(READY_TIMEOUT), registry.check_writable());
    let mut failed = String::new();
    if let Err(e) = metadata {
        tracing::error!(error = %e, "the metadata database (PostgreSQL) is unreachable");
        failed.push_str("metadata database (PostgreSQL) is unreachable\n");
    }
    if let Err(e) = storage {
        tracing::error!(error = %e, "storage is not writable");
        failed.push_str("storage is not writable\n");
    }
    if failed.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, failed).into_response()
    }
}

/// How long `/readyz` waits for the metadata database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One line per request, under the `berth::access` target, and the request metrics. The
/// query string is left out: it may one day carry credentials.
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let request_id = request_id(request.headers());
    let public_base = forwarded_base(request.headers());
    let mut request = request;
    // The handlers (and the audit log) see the id the access log shows.
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert("x-request-id", id);
    }
    let start = std::time::Instant::now();
    let span = tracing::info_span!("request", id = %request_id);
    let (parts, body) = request.into_parts();
    let (body, read) = counted::CountedRequest::wrap(body);
    let request = axum::extract::Request::from_parts(parts, body);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", id);
    }
    if let Some(base) = public_base {
        absolute_location(&mut response, &base);
    }
    let status = response.status().as_u16();
    let user = response
        .extensions()
        .get::<access::LoggedUser>()
        .map_or_else(|| "-".to_owned(), |u| u.0.clone());
    let declared = (method != Method::HEAD).then(|| content_length(response.headers()));
    // Logged and counted once the body has been handed over (or dropped): the bytes really
    // read and sent, and the time to the end of the body.
    let done = move |bytes_out: u64, complete: bool| {
        let elapsed = start.elapsed();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bytes_in = read.load(std::sync::atomic::Ordering::Relaxed);
        let (group, repo) = route_group(&path);
        tracing::info!(
            target: "berth::access",
            id = %request_id, %method, %path, group, repo, status, bytes_in, bytes_out, micros, user, complete,
            "request"
        );
        crate::metrics::request(
            group,
            method.as_str(),
            status,
            elapsed.as_secs_f64(),
            bytes_in,
            bytes_out,
        );
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, counted::CountedResponse::wrap(body, declared, Box::new(done)))
}

/// The client's `X-Request-Id` when it is short visible ASCII, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    match given {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_owned(),
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// `scheme://host` as a reverse proxy reports it (`X-Forwarded-Proto`, `X-Forwarded-Host`), if
/// it does and the values are sane.
pub(crate) fn forwarded_base(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get("x-forwarded-host")?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim();
    let valid_host = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.split(',').next().unwrap_or("").trim());
    let proto = match proto {
        Some("https") => "https",
        _ => "http",
    };
    valid_host.then(|| format!("{proto}://{host}"))
}

/// Behind a proxy that says where clients reach it, make a relative `Location` absolute.
fn absolute_location(response: &mut Response, base: &str) {
    let location = response
        .headers()
        .get(axum::http::header::LOCATION)
        .and_then(|v| v.to_str().ok());
    if let Some(path) = location.filter(|l| l.starts_with('/'))
        && let Ok(value) = HeaderValue::from_str(&format!("{base}{path}"))
    {
        response.headers_mut().insert(axum::http::header::LOCATION, value);
    }
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The metrics route group of a path, and its repository if it names one.
fn route_group(path: &str) -> (&'static str, String) {
    let name = |n: &crate::oci::RepoName| n.to_string();
    match route::parse(path) {
        Ok(Endpoint::Base) => ("base", String::new()),
        Ok(Endpoint::Catalog) => ("catalog", String::new()),
        Ok(Endpoint::Tags { name: n }) => ("tags", name(&n)),
        Ok(Endpoint::Manifest { name: n, .. }) => ("manifests", name(&n)),
        Ok(Endpoint::Blob { name: n, .. }) => ("blobs", name(&n)),
        Ok(Endpoint::UploadStart { name: n } | Endpoint::Upload { name: n, .. }) => ("uploads", name(&n)),
        Ok(Endpoint::Referrers { name: n, .. }) => ("referrers", name(&n)),
        Ok(Endpoint::Ping | Endpoint::Search) => ("search", String::new()),
        Err(_) if path.starts_with("/admin/") => ("admin", String::new()),
        Err(_) if matches!(path, "/metrics" | "/healthz" | "/readyz") => ("ops", String::new()),
        Err(_) => ("other", String::new()),
    }
}

/// `GET /metrics`: refresh the store gauges, then render.
pub async fn metrics(State(app): State<App>) -> Response {
    if let Err(e) = app.registry.refresh_gauges().await {
        tracing::warn!(error = %e, "could not read store figures for /metrics");
    }
    let body = crate::metrics::get().render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn api_version_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

/// One request: route it, run it, and turn any failure into an OCI error response.
async fn dispatch(
    State(app): State<App>,
    axum::Extension(peer): axum::Extension<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = query::Query::parse(uri.query());
    let routed = route::parse(uri.path()).and_then(|e| mirror_namespace(&app, e, &query));
    let (endpoint, namespace) = match routed {
        Ok(routed) => routed,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let unprefixed = namespace
        .is_none()
        .then(|| unprefixed_fallback(&app, &endpoint, &method))
        .flatten();
    let mut response = serve(&app, endpoint, &method, &query, &headers, &peer, body).await;
    // A pull of a name under no prefix that the registry does not hold, when a cache serves
    // such names (Docker's registry-mirrors sends Docker Hub names so): ask that cache.
    if let Some(cached) = unprefixed.filter(|_| response.status() == axum::http::StatusCode::NOT_FOUND) {
        response = serve(&app, cached, &method, &query, &headers, &peer, Body::empty()).await;
    }
    if let Some(ns) = namespace.and_then(|ns| HeaderValue::from_str(&ns).ok()) {
        response.headers_mut().insert("oci-namespace", ns);
    }
    response
}

/// Check access, then run the request; the response carries the caller for the access log.
async fn serve(
    app: &App,
    endpoint: Endpoint,
    method: &Method,
    query: &query::Query,
    headers: &HeaderMap,
    peer: &Peer,
    body: Body,
) -> Response {
    let caller = match access::check(app, &endpoint, method, query, headers, peer).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let user = caller.as_ref().map(|c| access::LoggedUser(c.subject.name().to_owned()));
    let actor = actor(caller.as_ref().map(|c| c.subject.name()), method, headers, peer);
    let request = Request {
        method,
        query,
        headers,
        client: peer.addr.ip(),
        caller,
        actor,
    };
    let mut response = run(app, endpoint, request, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if let Some(user) = user {
        response.extensions_mut().insert(user);
    }
    response
}

/// For a pull (GET or HEAD of a manifest, blob or tag list) of a name under no cache's prefix,
/// the same endpoint in the cache that serves unprefixed names, if one does.
fn unprefixed_fallback(app: &App, endpoint: &Endpoint, method: &Method) -> Option<Endpoint> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    let (Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } | Endpoint::Tags { name }) = endpoint else {
        return None;
    };
    if app.registry.is_cached_repo(name.as_str()) {
        return None;
    }
    let prefix = app.registry.unprefixed_proxy_prefix()?;
    endpoint.clone().under_prefix(prefix).ok()
}

/// A mirror request (containerd sends `?ns=<registry host>` to mirrors) whose `ns` names a
/// pull-through cache's upstream is for that cache's repositories: the endpoint moves under
/// its prefix, and the response echoes the namespace served (`OCI-Namespace`). Access rules
/// then apply to the prefixed name, as for any request.
fn mirror_namespace(
    app: &App,
    endpoint: Endpoint,
    query: &query::Query,
) -> Result<(Endpoint, Option<String>), route::RouteError> {
    let Some(ns) = query.get("ns") else {
        return Ok((endpoint, None));
    };
    match app.registry.proxy_prefix_for_namespace(ns) {
        Some(prefix) if endpoint.names_a_repository() => Ok((endpoint.under_prefix(&prefix)?, Some(ns.to_owned()))),
        _ => Ok((endpoint, None)),
    }
}

/// Who is making a request, for the audit log and notifications.
pub(crate) fn actor(user: Option<&str>, method: &Method, headers: &HeaderMap, peer: &Peer) -> crate::meta::Actor {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    crate::meta::Actor {
        user: user.filter(|u| !u.is_empty()).map(str::to_owned),
        addr: Some(peer.addr.ip().to_string()),
        request_id: header("x-request-id"),
        method: Some(method.to_string()),
        host: header("host"),
        user_agent: header("user-agent"),
    }
}

/// What a handler may need of the request besides its body.
struct Request<'a> {
    method: &'a Method,
    query: &'a query::Query,
    headers: &'a HeaderMap,
    client: std::net::IpAddr,
    /// Who is calling, with authentication on.
    caller: Option<crate::auth::Caller>,
    actor: crate::meta::Actor,
}

async fn run(app: &App, endpoint: Endpoint, request: Request<'_>, body: Body) -> Result<Response, ApiError> {
    use handlers::{blobs, listing, manifests, search, uploads};
    let Request {
        method,
        query,
        headers,
        client,
        caller,
        actor,
    } = request;
    let reg = &app.registry;
    let head = method == Method::HEAD;
    let allow = endpoint.allow();
    match (endpoint, method.clone()) {
        (Endpoint::Base, Method::GET | Method::HEAD) => Ok(listing::base()),
        (Endpoint::Catalog, Method::GET) => listing::catalog(reg, query, access::catalog_filter(app, caller)).await,
        (Endpoint::Ping, Method::GET | Method::HEAD) => Ok(search::ping()),
        (Endpoint::Search, Method::GET) => search::search(reg, query, access::catalog_filter(app, caller)).await,
        (Endpoint::Tags { name }, Method::GET) => listing::tags(reg, &name, query).await,
        (Endpoint::Referrers { name, digest }, Method::GET) => listing::referrers(reg, &name, &digest, query).await,
        (Endpoint::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(reg, &name, &reference, head).await
        }
        (Endpoint::Manifest { name, reference }, Method::PUT) => {
            manifests::put(reg, &name, &reference, query, headers, body, &actor).await
        }
        (Endpoint::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(reg, &name, &reference, &actor).await
        }
        (Endpoint::Blob { name, digest }, Method::GET | Method::HEAD) => {
            blobs::get(reg, &name, &digest, headers, head).await
        }
        (Endpoint::Blob { name, digest }, Method::DELETE) => blobs::delete(reg, &name, &digest, &actor).await,
        (Endpoint::UploadStart { name }, Method::POST) => {
            let may_mount = access::may_mount(app, caller.as_ref(), query.get("from"));
            uploads::start(reg, &name, query, body, client, may_mount, &actor).await
        }
        (Endpoint::Upload { name, id }, Method::GET) => uploads::status(reg, &name, &id).await,
        (Endpoint::Upload { name, id }, Method::PATCH) => uploads::patch(reg, &name, &id, headers, body).await,
        (Endpoint::Upload { name, id }, Method::PUT) => uploads::finish(reg, &name, &id, query, headers, body).await,
        (Endpoint::Upload { name, id }, Method::DELETE) => uploads::cancel(reg, &name, &id).await,
        _ => Err(ApiError::method_not_allowed(allow)),
    }
}
