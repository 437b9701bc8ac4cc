//! HTTPS: the rustls server configuration (TLS 1.2 and 1.3, optional client certificates),
//! reloaded without a restart when its files change or on SIGHUP.
//!
//! A reload that fails (a half-written file, a key that does not match) keeps the previous
//! configuration and logs why; start-up with a bad file fails with an error naming it.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path}: {message}")]
pub struct TlsError {
    what: &'static str,
    path: String,
    message: String,
}

fn error(what: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        what,
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// The current TLS configuration, swapped whole on reload.
#[derive(Debug)]
pub struct Reloadable {
    config: Tls,
    current: RwLock<(Arc<ServerConfig>, Stamps)>,
}

type Stamps = Vec<Option<(SystemTime, u64)>>;

impl Reloadable {
    pub fn load(config: &Tls) -> Result<Self, TlsError> {
        let server = build(config)?;
        Ok(Reloadable {
            config: config.clone(),
            current: RwLock::new((server, stamps(config))),
        })
    }

    /// An acceptor for one connection, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current.0))
    }

    /// Reload if a file changed (or always, if `force`); the previous configuration stays when
    /// the new one does not load.
    pub fn reload(&self, force: bool) {
        let now = stamps(&self.config);
        if !force && now == self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1 {
            return;
        }
        match build(&self.config) {
            Ok(server) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (server, now);
                tracing::info!(certificate = %self.config.certificate.display(), "TLS configuration reloaded");
            }
            Err(e) => tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate"),
        }
    }

    pub fn interval(&self) -> std::time::Duration {
        self.config.reload_interval
    }
}

fn stamps(config: &Tls) -> Stamps {
    [Some(&config.certificate), Some(&config.key), config.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(config: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&config.certificate, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| error("key", &config.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error("certificate", &config.certificate, e))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path, "client_ca")? {
                roots.add(cert).map_err(|e| error("client_ca", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| error("client_ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| error("key", &config.key, format!("does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(what, path, e))?;
    if certs.is_empty() {
        return Err(error(what, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The user name a client certificate gives: its subject's common name, else the whole subject.
pub fn certificate_user(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok());
    Some(cn.map_or_else(|| subject.to_string(), str::to_owned))
}
