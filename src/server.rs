//! Serving: open the store, bind, serve until a signal, then drain in-flight requests for at
//! most `http.drain_timeout` and close the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::api::{self, App};
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::gc;
use crate::jobs::Jobs;
use crate::meta::{Meta, MetaError};
use crate::registry::{self, Registry};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("storage root {path}: {source}")]
    Root { path: String, source: std::io::Error },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("opening the registry: {0}")]
    Registry(#[from] registry::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Open the store under `config.storage.root` as a registry, finishing whatever a crash left.
pub async fn open_registry(config: &Config) -> Result<Arc<Registry>, ServeError> {
    let (meta, blobs, limits) = open_parts(config).await?;
    Ok(Registry::open(meta, blobs, limits).await?)
}

/// Open the store as it is, without start-up reconciliation (for `fsck`).
pub async fn open_registry_as_is(config: &Config) -> Result<Arc<Registry>, ServeError> {
    let (meta, blobs, limits) = open_parts(config).await?;
    Ok(Registry::open_as_is(meta, blobs, limits))
}

async fn open_parts(config: &Config) -> Result<(Meta, BlobStore, registry::Limits), ServeError> {
    let root = config.storage.root.clone();
    let root_err = |source| ServeError::Root {
        path: root.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&root).map_err(root_err)?;
    let blobs = BlobStore::open(&root, config.storage.fsync).map_err(root_err)?;
    let meta = registry::blocking(move || Meta::open(&root)).await?;
    let limits = registry::Limits {
        manifest_max_bytes: config.limits.manifest_max_size,
        blob_max_bytes: config.limits.blob_max_size,
        upload_sessions: config.limits.upload_sessions,
        upload_sessions_per_client: config.limits.upload_sessions_per_client,
        body_idle_timeout: config.limits.body_idle_timeout,
    };
    Ok((meta, blobs, limits))
}

/// Run the registry until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    // Before anything else, and in particular before the "listening" line: a signal that
    // arrives once a client could know the address must reach the drain logic.
    let mut signalled = watch_signals()?;
    let registry = open_registry(&config).await?;
    let addr = config.http.addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, root = %config.storage.root.display(), "berth listening");
    // The one line on stdout, for scripts and tests that bind port 0.
    println!("berth listening on http://{local}");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let gc_options = gc::Options {
        grace_period: config.gc.grace_period,
        delete_untagged: config.gc.delete_untagged,
        upload_max_age: config.gc.upload_max_age,
        dry_run: false,
        pause_before_unlink: None,
        pause_after_mark: None,
    };
    let jobs = Arc::new(Jobs::default());
    if let Some(every) = config.gc.interval {
        spawn_periodic_gc(Arc::clone(&jobs), Arc::clone(&registry), gc_options.clone(), every);
    }
    let ready = Arc::new(AtomicBool::new(true));
    let app = App {
        registry: Arc::clone(&registry),
        gc: jobs,
        fsck: Arc::default(),
        gc_options,
        ready: Arc::clone(&ready),
    };
    if let Some(debug_addr) = config.http.debug_addr {
        spawn_debug_listener(debug_addr, api::debug_router(app.clone())).await?;
    }
    let router = api::router(app).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let delay = config.http.shutdown_delay;
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = signalled.wait_for(|s| *s).await;
        ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        let _ = stop_tx.send(true);
    });
    let drain = config.http.drain_timeout;
    tokio::select! {
        result = server => result?,
        () = async { let _ = stop_rx.wait_for(|s| *s).await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "drain timeout reached; closing with requests still in flight");
        }
    }
    drop(registry);
    tracing::info!("berth stopped");
    Ok(())
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

/// Start a garbage collection every `every` (skipped while one is still running).
fn spawn_periodic_gc(jobs: Arc<Jobs>, registry: Arc<Registry>, opts: gc::Options, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await; // the first tick is immediate; wait a whole interval first
        loop {
            ticks.tick().await;
            let (job, started) = gc::start_job(&jobs, Arc::clone(&registry), opts.clone());
            tracing::info!(id = %job.id, started, "periodic garbage collection");
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
