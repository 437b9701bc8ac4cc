//! Serving: open the store, load TLS and authentication, bind, serve until a signal, then
//! drain in-flight requests for at most `http.drain_timeout` and close the database. SIGHUP
//! reloads the TLS files and the htpasswd file.

mod listen;
mod sendfile;
mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;

use crate::api::admin::{jobs::Jobs, start_gc};
use crate::api::{self, App};
use crate::auth::{Auth, AuthError};
use crate::blobs::BlobStore;
use crate::blobs::fs::FsStore;
use crate::blobs::s3::S3Store;
use crate::config::Config;
use crate::gc;
use crate::meta::Actor;
use crate::meta::cluster::Member;
use crate::meta::{Meta, MetaError, MetaStore, PgMeta};
use crate::registry::{self, Registry};

/// Why the server (or an offline job) could not start. Each message names what failed; the
/// cause follows as the error's source (the CLI prints the chain once, `a: b`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage root {path}")]
    Root { path: String, source: std::io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The metadata database at `path` failed to open (other than being held by another
    /// process, which `Meta(MetaError::Locked)` reports).
    #[error("metadata database {path}")]
    MetaAt { path: String, source: MetaError },
    #[error("opening the registry")]
    Registry(#[from] registry::Error),
    #[error("cannot listen on {addr}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("auth")]
    Auth(#[from] AuthError),
}

/// Open the store under `config.storage.root` as a registry, finishing whatever a crash left,
/// with the configuration's policies in force.
pub async fn open_registry(config: &Config) -> Result<Arc<Registry>, ServeError> {
    let (meta, blobs, limits) = open_parts(config).await?;
    let registry = Registry::open_with(meta, blobs, limits, config.proxy.clone()).await?;
    registry.set_policies(registry::Policies::new(
        &config.immutable_tags,
        &config.retention,
        &config.quotas,
    ));
    Ok(registry)
}

/// Open the store as it is, without start-up reconciliation (for `fsck`).
pub async fn open_registry_as_is(config: &Config) -> Result<Arc<Registry>, ServeError> {
    let (meta, blobs, limits) = open_parts(config).await?;
    Ok(Registry::open_as_is(meta, blobs, limits, config.proxy.clone())?)
}

/// The metadata store, the blob store and the limits the configuration names.
async fn open_parts(config: &Config) -> Result<(Arc<dyn MetaStore>, Arc<dyn BlobStore>, registry::Limits), ServeError> {
    let root = config.storage.root.clone();
    let root_err = |source| ServeError::Root {
        path: root.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&root).map_err(root_err)?;
    let blobs: Arc<dyn BlobStore> = if let Some(s3) = &config.storage.s3 {
        Arc::new(S3Store::new(s3.clone()))
    } else {
        let opts = crate::blobs::fs::WriteOptions {
            fsync: config.storage.fsync,
            direct_io: config.storage.direct_io,
        };
        Arc::new(FsStore::open(&root, opts).map_err(root_err)?)
    };
    let meta = open_meta(config, root).await?;
    let limits = registry::Limits {
        manifest_max_bytes: config.limits.manifest_max_size,
        blob_max_bytes: config.limits.blob_max_size,
        upload_sessions: config.limits.upload_sessions,
        upload_sessions_per_client: config.limits.upload_sessions_per_client,
        body_idle_timeout: config.limits.body_idle_timeout,
        upload_idle_timeout: config.limits.upload_idle_timeout,
        sparse_manifests: config.validation.sparse,
    };
    Ok((meta, blobs, limits))
}

/// The metadata store: PostgreSQL with `metadata.postgres`, else the redb file under the root.
async fn open_meta(config: &Config, root: std::path::PathBuf) -> Result<Arc<dyn MetaStore>, ServeError> {
    if let Some(pg) = config.metadata.clone() {
        let opened = registry::blocking(move || PgMeta::open(&pg.url, pg.connections)).await;
        return Ok(Arc::new(opened.map_err(|source| ServeError::MetaAt {
            path: "metadata.postgres.url".into(),
            source,
        })?));
    }
    let cache = config.storage.meta_cache;
    let db = root.join(crate::meta::DB_FILE).display().to_string();
    let opened = registry::blocking(move || Meta::open_observed(&root, cache, commit_metrics)).await;
    Ok(Arc::new(opened.map_err(|e| match e {
        e @ MetaError::Locked(_) => ServeError::Meta(e),
        source => ServeError::MetaAt { path: db, source },
    })?))
}

/// The metadata writer's group commits, into the metrics: `berth_meta_commit_seconds` (how
/// long each commit took) and `berth_meta_commit_operations` (how many writes it carried).
fn commit_metrics(ops: usize, took: std::time::Duration) {
    let m = crate::metrics::get();
    m.meta_commit_seconds.observe(took.as_secs_f64());
    #[allow(clippy::cast_precision_loss)] // at most a batch: 128
    m.meta_batch_ops.observe(ops as f64);
}

/// Loads the configuration again (the same file, environment and flags), on SIGHUP.
pub type Reload = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

/// Run the registry until SIGINT or SIGTERM. On SIGHUP, TLS and htpasswd files are reloaded,
/// and with `reload` the configuration too, whose policies (`immutable_tags`, `quotas`) then apply to
/// new requests; a configuration that no longer loads is logged and the old one kept.
pub async fn serve(config: Config, reload: Option<Reload>) -> Result<(), ServeError> {
    // Before anything else, and in particular before the "listening" line: a signal that
    // arrives once a client could know the address must reach the drain logic.
    let mut signalled = watch_signals()?;
    let reloads = watch_reload_signal()?;
    let tls = config
        .http
        .tls
        .as_ref()
        .map(tls::Reloadable::load)
        .transpose()?
        .map(Arc::new);
    let auth = config.auth.as_ref().map(Auth::open).transpose()?.map(Arc::new);
    if auth.is_some() && tls.is_none() && !config.http.addr.ip().is_loopback() {
        tracing::warn!("authentication without TLS: passwords and tokens cross the network in the clear");
    }
    warn_per_node_token_key(&config);
    spawn_reloader(tls.clone(), auth.clone(), reloads.clone());
    // Bind before the store is opened (or created): a busy port leaves nothing behind.
    let addr = config.http.addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let registry = open_registry(&config).await?;
    registry.set_notifications(&config.notifications);
    let source = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    let local = listener.local_addr()?;
    let member = member(&config, &registry, &local);
    let sender = crate::notify::Sender::spawn(
        Arc::clone(&registry),
        &config.notifications,
        source,
        tls.is_some(),
        member.clone(),
    );
    if let Some(reload) = reload {
        spawn_config_reloader(Arc::clone(&registry), sender, reload, reloads);
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, root = %config.storage.root.display(), blobs = %registry.describe_storage(), scheme, "berth listening");
    // The one line on stdout, for scripts and tests that bind port 0.
    println!("berth listening on {scheme}://{local}");
    if crate::testhook::enabled() {
        tracing::warn!(
            "test hooks are on ({}=1); never run a server like this",
            crate::testhook::ENV_ENABLE
        );
    }
    let gc_options = gc::Options::from_config(&config.gc).with_audit_max_age(config.audit.max_age);
    let jobs = Arc::new(Jobs::new("gc", member.clone()));
    if let Some(every) = config.gc.interval {
        spawn_periodic_gc(Arc::clone(&jobs), Arc::clone(&registry), gc_options.clone(), every);
    }
    let ready = Arc::new(AtomicBool::new(true));
    let app = App {
        registry: Arc::clone(&registry),
        gc: jobs,
        fsck: Arc::new(Jobs::new("fsck", member.clone())),
        gc_options,
        ready: Arc::clone(&ready),
        auth,
        member,
    };
    if let Some(debug_addr) = config.http.debug_addr {
        spawn_debug_listener(debug_addr, api::debug_router(app.clone())).await?;
    }
    let delay = config.http.shutdown_delay;
    let stop = async move {
        let _ = signalled.wait_for(|s| *s).await;
        ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
    };
    let router = if config.ui.enabled {
        let key = crate::ui::session_key(app.member.as_ref())
            .await
            .map_err(ServeError::Meta)?;
        let ui = crate::ui::router(app.clone(), &config.ui, key);
        api::router_with(app, ui)
    } else {
        api::router(app)
    };
    let draining = listen::serve(
        listener,
        tls,
        router,
        listen::ConnOptions {
            header_timeout: config.http.header_timeout,
            sendfile: config.http.sendfile,
        },
        stop,
    )
    .await;
    let drain = config.http.drain_timeout;
    if tokio::time::timeout(drain, draining.shutdown()).await.is_err() {
        tracing::warn!(?drain, "drain timeout reached; closing with requests still in flight");
    }
    drop(registry);
    tracing::info!("berth stopped");
    Ok(())
}

/// On each SIGHUP, load the configuration again and put its policies in force.
fn spawn_config_reloader(
    registry: Arc<Registry>,
    sender: Arc<crate::notify::Sender>,
    reload: Reload,
    mut reloads: tokio::sync::watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        while reloads.changed().await.is_ok() {
            let mut event = crate::meta::AuditEvent::new(
                crate::meta::Action::ConfigReload,
                &Actor::system(),
                crate::meta::now_ms(),
            );
            match reload() {
                Ok(config) => {
                    registry.set_policies(registry::Policies::new(
                        &config.immutable_tags,
                        &config.retention,
                        &config.quotas,
                    ));
                    registry.set_notifications(&config.notifications);
                    sender.set_endpoints(&config.notifications);
                    tracing::info!(
                        immutable_tags = config.immutable_tags.len(),
                        retention = config.retention.len(),
                        quotas = config.quotas.len(),
                        notifications = config.notifications.len(),
                        "configuration reloaded: policies in force"
                    );
                }
                Err(e) => {
                    tracing::error!("configuration reload failed, keeping the previous one: {e}");
                    // The message may quote a value of the file: the log has it, the audit log not.
                    "failed: the configuration did not load (see the server log)".clone_into(&mut event.result);
                }
            }
            registry.record(event).await;
        }
    });
}

/// SIGHUP, as a stream of ticks.
fn watch_reload_signal() -> Result<tokio::sync::watch::Receiver<u64>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration, TLS and htpasswd files");
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// Reload the TLS files when they change (checked every `http.tls.reload_interval`), and TLS and
/// htpasswd on SIGHUP. (htpasswd also notices changes by itself, when it is used.)
fn spawn_reloader(
    tls: Option<Arc<tls::Reloadable>>,
    auth: Option<Arc<Auth>>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
) {
    let every = tls
        .as_ref()
        .map_or(std::time::Duration::from_secs(3600), |t| t.interval());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            let forced = tokio::select! {
                _ = ticks.tick() => false,
                changed = reloads.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
            };
            if let Some(tls) = &tls {
                tls.reload(forced);
            }
            if forced && let Some(auth) = &auth {
                auth.reload();
            }
        }
    });
}

/// Serve `/metrics` and the probes on their own address until the process exits.
async fn spawn_debug_listener(addr: std::net::SocketAddr, router: axum::Router) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    tracing::info!(addr = %listener.local_addr()?, "debug listener (metrics, probes)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "debug listener failed");
        }
    });
    Ok(())
}

/// With several nodes (shared metadata), a token issuer whose key each node makes at start-up
/// signs tokens that only the node that issued them accepts.
fn warn_per_node_token_key(config: &Config) {
    let token = config.auth.as_ref().and_then(|a| a.token.as_ref());
    let generated = token.is_some_and(|t| matches!(t.keys, crate::config::TokenKeys::Issue { signing_key: None }));
    if generated && config.metadata.is_some() {
        tracing::warn!(
            "auth.token issues tokens with a key made at start-up, which the other nodes do not know: \
             set auth.token.signing_key to the same key file on every node"
        );
    }
}

/// This node as a member of its cluster, when the metadata is shared: named after the address
/// it listens on (the host's name when that is a wildcard address).
fn member(config: &Config, registry: &Registry, local: &std::net::SocketAddr) -> Option<Member> {
    let lease = config.metadata.as_ref()?.lease;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| local.ip().is_unspecified() && !h.is_empty());
    let name = host.map_or_else(|| local.to_string(), |h| format!("{h}:{}", local.port()));
    let member = Member::new(registry.cluster()?, &name, lease);
    tracing::info!(node = %member.node, ?lease, "one of several nodes: leases elect who runs the background jobs");
    Some(member)
}

/// Start a garbage collection every `every` (skipped while one is still running). With several
/// nodes, also skipped when any node started one within the last nine tenths of an interval
/// (a margin for the time a start takes): whichever node
/// ticks first runs it.
fn spawn_periodic_gc(jobs: Arc<Jobs>, registry: Arc<Registry>, opts: gc::Options, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await; // the first tick is immediate; wait a whole interval first
        loop {
            ticks.tick().await;
            match jobs.started_within(every.mul_f64(0.9)).await {
                Ok(false) => {}
                Ok(true) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "periodic garbage collection skipped");
                    continue;
                }
            }
            match start_gc(&jobs, Arc::clone(&registry), opts.clone(), Actor::system()).await {
                Ok((job, started)) => {
                    tracing::info!(id = %job.id, started, node = ?job.node, "periodic garbage collection");
                }
                Err(e) => tracing::warn!(error = %e, "periodic garbage collection could not start"),
            }
        }
    });
}

/// Watch SIGTERM and SIGINT from start-up on (so that none is missed): the first starts a
/// graceful shutdown (the returned receiver turns true), the second exits at once.
fn watch_signals() -> Result<tokio::sync::watch::Receiver<bool>, ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown signal received; draining");
        let _ = tx.send(true);
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second shutdown signal: exiting at once");
        std::process::exit(1);
    });
    Ok(rx)
}
