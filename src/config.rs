//! Configuration: the YAML file, then `BERTH_*` environment variables, then command-line flags,
//! become one validated `Config` with every default filled in.
//!
//! Order of work, as in zot: parse strictly (an unknown key is an error that names it), apply
//! overrides, fill defaults, validate. Every key is documented, with its default, in
//! `config.example.yml`; a test keeps that file and this one in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The prefix of every environment override; `BERTH_HTTP_ADDR` sets `http.addr`.
pub const ENV_PREFIX: &str = "BERTH_";
/// Names the config file; read by the CLI, not an override of a key.
pub const ENV_CONFIG_FILE: &str = "BERTH_CONFIG";
/// Credentials `berth gc --url` and `berth fsck --url` send; read by the CLI, not keys.
pub const ENV_ADMIN_USER: &str = "BERTH_ADMIN_USER";
pub const ENV_ADMIN_PASSWORD: &str = "BERTH_ADMIN_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("unknown environment variable {var}; the BERTH_* variables are: {known}")]
    UnknownEnv { var: String, known: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub http: Http,
    pub storage: Storage,
    pub limits: Limits,
    pub log: Log,
    pub gc: Gc,
    /// `None`: no authentication; every client may do everything (admin: loopback only).
    pub auth: Option<Auth>,
    /// Pull-through caches (`proxy:`), each under its own repository prefix, in file order.
    pub proxy: Vec<crate::upstream::Settings>,
    pub validation: Validation,
    /// Tags that, once they exist, never move and are never deleted (`immutable_tags:`).
    pub immutable_tags: Vec<ImmutableTags>,
    /// Which tags and untagged manifests retention removes (`retention:`), first match wins.
    pub retention: Vec<Retention>,
    /// Storage quotas on groups of repositories (`quotas:`), in file order.
    pub quotas: Vec<Quota>,
    pub ui: Ui,
    pub audit: Audit,
    /// Webhook endpoints (`notifications:`), in file order.
    pub notifications: Vec<Notification>,
    /// Where the metadata lives (`metadata:`): `None`, the redb file under `storage.root`.
    pub metadata: Option<Postgres>,
}

/// The PostgreSQL metadata backend (`metadata.postgres:`), shared by every node. Its `Debug`
/// leaves the URL out: it may carry a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Postgres {
    /// A libpq connection URL (`postgres://user:password@host:port/database`).
    pub url: String,
    /// Pooled connections at most.
    pub connections: usize,
    /// How long a node holds a lease (garbage collection, retention, fsck, the webhook
    /// sender) without renewing it: how soon another node takes over from one that died.
    pub lease: Duration,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &"<redacted>")
            .field("connections", &self.connections)
            .field("lease", &self.lease)
            .finish()
    }
}

/// The audit log (`audit:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Events older than this are pruned by garbage collection.
    pub max_age: Duration,
}

/// One `notifications:` entry: a webhook that receives events as CNCF Distribution's
/// notification envelope. Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    pub url: String,
    /// Which events: `push`, `delete`, `mount`.
    #[serde(default = "default_notification_events")]
    pub events: Vec<String>,
    /// Globs over repository names (one, or a list); events without a repository never match.
    #[serde(default = "default_notification_repositories", deserialize_with = "one_or_many")]
    pub repositories: Vec<String>,
    /// Signs each body: `X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// One delivery attempt's limit.
    #[serde(default = "default_notification_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Undelivered events older than this are dropped (and counted as failed).
    #[serde(default = "default_notification_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("repositories", &self.repositories)
            .field("secret", &self.secret.as_ref().map(|_| REDACTED))
            .field("timeout", &self.timeout)
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// The events a notification endpoint may ask for.
pub const NOTIFICATION_EVENTS: [&str; 3] = ["push", "delete", "mount"];

fn default_notification_events() -> Vec<String> {
    vec!["push".into(), "delete".into()]
}

fn default_notification_repositories() -> Vec<String> {
    vec!["**".into()]
}

fn default_notification_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_notification_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// One `retention:` rule for the repositories matching `repositories`. A tag goes when
/// nothing keeps it: it is not among the `keep_last` most recently pushed, matches no
/// `keep_tags` glob, is not immutable, and (when `older_than` is set) was pushed longer ago
/// than that. Untagged manifests pushed longer ago than `untagged_after` go too, unless an
/// index or subject that stays needs them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(deserialize_with = "one_or_many")]
    pub repositories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    #[serde(default, deserialize_with = "humantime_serde::deserialize")]
    #[serde(serialize_with = "duration_yaml", skip_serializing_if = "Option::is_none")]
    pub untagged_after: Option<Duration>,
    #[serde(default, deserialize_with = "humantime_serde::deserialize")]
    #[serde(serialize_with = "duration_yaml", skip_serializing_if = "Option::is_none")]
    pub older_than: Option<Duration>,
}

/// A duration as `config.example.yml` writes it (`90d`), for `config check`. (serde hands a
/// `serialize_with` function a reference to the field.)
#[allow(clippy::ref_option)]
fn duration_yaml<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration_text(*d)),
        None => s.serialize_none(),
    }
}

/// One `quotas:` rule: the repositories matching one of `repositories` together may reference
/// at most `max_bytes` of blobs, each blob counted once. Globs as for `immutable_tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub repositories: Vec<String>,
    pub max_bytes: u64,
}

/// One `quotas:` rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    #[serde(deserialize_with = "one_or_many")]
    repositories: Vec<String>,
    max_bytes: ByteSize,
}

/// One `immutable_tags:` rule: in repositories matching one of `repositories`, tags matching
/// one of `tags` are immutable. Globs: `*` within a path component, `**` across several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImmutableTags {
    #[serde(deserialize_with = "one_or_many")]
    pub repositories: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub tags: Vec<String>,
}

/// A list, or one item standing for a list of one (`repositories: "prod/*"`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// The web UI (`src/ui/`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ui {
    pub enabled: bool,
    /// Where it is mounted: `/` and then path components, no trailing slash (`/ui`).
    pub path: String,
    /// With authentication off, let every client (not only loopback ones) delete and run
    /// garbage collection from the UI.
    pub allow_anonymous_admin: bool,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// When the session cookie carries `Secure`.
    pub secure_cookie: SecureCookie,
}

/// `ui.secure_cookie`: when the session cookie is marked `Secure` (sent over HTTPS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureCookie {
    /// On TLS connections (the default). Behind a TLS-terminating proxy Berth sees plain
    /// HTTP, so `Always` is then the setting.
    Auto,
    Always,
    Never,
}

impl SecureCookie {
    /// Whether a cookie sent over a connection that is (`tls`) or is not TLS carries `Secure`.
    pub fn applies(self, tls: bool) -> bool {
        match self {
            SecureCookie::Auto => tls,
            SecureCookie::Always => true,
            SecureCookie::Never => false,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SecureCookie::Auto => "auto",
            SecureCookie::Always => "true",
            SecureCookie::Never => "false",
        }
    }
}

/// What a manifest push must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validation {
    /// Accept manifests whose blobs or child manifests are not (yet) in the repository, as
    /// mirrors and platform-filtered copies push them. Off: a manifest never dangles.
    pub sparse: bool,
}

/// HTTPS with rustls (TLS 1.2 and 1.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// PEM: the server certificate, then its chain.
    pub certificate: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs client certificates must chain to; set, a client certificate is required
    /// and its subject common name is the client's user name.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes (SIGHUP reloads at once).
    pub reload_interval: Duration,
}

/// Who may do what. Authentication comes from htpasswd (Basic, or Bearer tokens Berth issues),
/// tokens of an external issuer, or client certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The realm of Basic challenges.
    pub realm: String,
    /// An htpasswd file of bcrypt entries (`htpasswd -B`), reloaded when it changes.
    pub htpasswd: Option<PathBuf>,
    pub token: Option<Token>,
    /// Group name -> its members' user names.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Who holds the admin role (the `/admin` endpoints).
    pub admins: Subjects,
    /// Access rules; none means every authenticated user may pull, push and delete everything.
    pub rules: Vec<Rule>,
    /// Failed logins a source address may make per minute; past it, 429.
    pub login_failures_per_minute: u32,
}

/// Bearer tokens (the Docker registry token specification).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Where clients get tokens; `None` (Berth issues them): this server's `/auth/token`.
    pub realm: Option<String>,
    /// The `service` of challenges and the audience of tokens.
    pub service: String,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// Lifetime of the tokens Berth issues.
    pub expiry: Duration,
    pub keys: TokenKeys,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenKeys {
    /// Berth issues tokens, signed with this Ed25519 PKCS#8 PEM key, or with a key made at
    /// start-up (tokens then end with the process).
    Issue { signing_key: Option<PathBuf> },
    /// An external issuer's public key (PEM) verifies tokens.
    PublicKey(PathBuf),
    /// An external issuer's JWKS file verifies tokens (by `kid`).
    Jwks(PathBuf),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Subjects {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// Grants `actions` on the repositories matching any of `repositories` (globs: `*` within a
/// path component, `**` across them) to `users`, members of `groups`, and, when `anonymous`,
/// to everyone (pull only).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub repositories: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub anonymous: bool,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gc {
    pub grace_period: Duration,
    pub delete_untagged: bool,
    /// Run garbage collection this often; `None` (`off`) runs it only on request.
    pub interval: Option<Duration>,
    pub upload_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub addr: SocketAddr,
    /// How long a shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// After a shutdown signal, how long to keep accepting requests while `/readyz` answers 503,
    /// so that a load balancer can stop routing here first.
    pub shutdown_delay: Duration,
    /// A second listener serving only `/metrics`, `/healthz` and `/readyz`.
    pub debug_addr: Option<SocketAddr>,
    /// How long a client may take to send a request's headers (and a TLS handshake).
    pub header_timeout: Duration,
    /// Send blob bodies on plain connections with `sendfile(2)` (no userspace copy).
    pub sendfile: bool,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub root: PathBuf,
    pub fsync: bool,
    /// Write the bulk of large uploads with `O_DIRECT`, around the page cache.
    pub direct_io: bool,
    /// Bytes of metadata pages redb keeps in memory (read cache and write buffer together).
    pub meta_cache: u64,
    /// Keep blobs in an S3-compatible bucket instead of under `root` (metadata stays in
    /// `root/meta.redb`).
    pub s3: Option<crate::blobs::s3::Options>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub manifest_max_size: u64,
    pub blob_max_size: u64,
    /// Upload sessions open at once, in total and per client address.
    pub upload_sessions: u64,
    pub upload_sessions_per_client: u64,
    /// An upload whose body sends nothing for this long is abandoned.
    pub body_idle_timeout: Duration,
    /// At a session limit, sessions no request used for this long are closed to make room.
    pub upload_idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Values given on the command line; they override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub addr: Option<String>,
    pub root: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    http: RawHttp,
    storage: RawStorage,
    limits: RawLimits,
    log: RawLog,
    gc: RawGc,
    auth: RawAuth,
    proxy: Vec<RawProxy>,
    validation: RawValidation,
    immutable_tags: Vec<ImmutableTags>,
    retention: Vec<Retention>,
    quotas: Vec<RawQuota>,
    ui: RawUi,
    audit: RawAudit,
    notifications: Vec<Notification>,
    metadata: RawMetadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetadata {
    postgres: RawPostgres,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPostgres {
    url: Option<String>,
    connections: Option<usize>,
    #[serde(with = "humantime_serde")]
    lease: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    #[serde(with = "humantime_serde")]
    max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUi {
    enabled: Option<bool>,
    path: Option<String>,
    allow_anonymous_admin: Option<bool>,
    #[serde(with = "humantime_serde")]
    session_ttl: Option<Duration>,
    secure_cookie: Option<RawSecureCookie>,
}

/// `ui.secure_cookie` as written: `true`, `false` or `auto`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecureCookie {
    Flag(bool),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawValidation {
    sparse: Option<bool>,
}

/// One `proxy:` entry as written. Its `Debug` leaves the password out.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawProxy {
    prefix: Option<String>,
    url: Option<String>,
    namespace: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    tag_ttl: Option<Duration>,
    max_bytes: Option<ByteSize>,
    serve_stale: Option<bool>,
    serve_unprefixed: Option<bool>,
}

impl std::fmt::Debug for RawProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProxy")
            .field("prefix", &self.prefix)
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("password_file", &self.password_file)
            .field("tag_ttl", &self.tag_ttl)
            .field("max_bytes", &self.max_bytes)
            .field("serve_stale", &self.serve_stale)
            .field("serve_unprefixed", &self.serve_unprefixed)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    reload_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    realm: Option<String>,
    htpasswd: RawHtpasswd,
    token: RawToken,
    groups: BTreeMap<String, Vec<String>>,
    admins: Subjects,
    rules: Vec<Rule>,
    login_failures_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHtpasswd {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawToken {
    enabled: Option<bool>,
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    #[serde(with = "humantime_serde")]
    expiry: Option<Duration>,
    signing_key: Option<PathBuf>,
    public_key: Option<PathBuf>,
    jwks: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGc {
    #[serde(with = "humantime_serde")]
    grace_period: Option<Duration>,
    delete_untagged: Option<bool>,
    /// A duration, or `off`.
    interval: Option<String>,
    #[serde(with = "humantime_serde")]
    upload_max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    addr: Option<String>,
    #[serde(with = "humantime_serde")]
    drain_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    shutdown_delay: Option<Duration>,
    /// IP:PORT, or `off`.
    debug_addr: Option<String>,
    #[serde(with = "humantime_serde")]
    header_timeout: Option<Duration>,
    sendfile: Option<bool>,
    tls: RawTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    root: Option<PathBuf>,
    fsync: Option<bool>,
    direct_io: Option<bool>,
    meta_cache: Option<ByteSize>,
    s3: RawS3,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawS3 {
    endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    path_style: Option<bool>,
    redirect: Option<bool>,
    part_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    manifest_max_size: Option<ByteSize>,
    blob_max_size: Option<ByteSize>,
    upload_sessions: Option<u64>,
    upload_sessions_per_client: Option<u64>,
    #[serde(with = "humantime_serde")]
    body_idle_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    upload_idle_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Option<String>,
    format: Option<LogFormat>,
}

type Setter = fn(&mut RawConfig, &str) -> Result<(), String>;

/// Every key that an environment variable can set.
const ENV_KEYS: &[(&str, Setter)] = &[
    ("http.addr", |r, v| set(&mut r.http.addr, v)),
    ("http.drain_timeout", |r, v| set_duration(&mut r.http.drain_timeout, v)),
    ("http.shutdown_delay", |r, v| {
        set_duration(&mut r.http.shutdown_delay, v)
    }),
    ("http.debug_addr", |r, v| {
        r.http.debug_addr = Some(v.to_owned());
        Ok(())
    }),
    ("http.header_timeout", |r, v| {
        set_duration(&mut r.http.header_timeout, v)
    }),
    ("http.sendfile", |r, v| set(&mut r.http.sendfile, v)),
    ("http.tls.certificate", |r, v| set(&mut r.http.tls.certificate, v)),
    ("http.tls.key", |r, v| set(&mut r.http.tls.key, v)),
    ("http.tls.client_ca", |r, v| set(&mut r.http.tls.client_ca, v)),
    ("http.tls.reload_interval", |r, v| {
        set_duration(&mut r.http.tls.reload_interval, v)
    }),
    ("storage.root", |r, v| set(&mut r.storage.root, v)),
    ("storage.fsync", |r, v| set(&mut r.storage.fsync, v)),
    ("storage.direct_io", |r, v| set(&mut r.storage.direct_io, v)),
    ("storage.meta_cache", |r, v| set(&mut r.storage.meta_cache, v)),
    ("storage.s3.endpoint", |r, v| set(&mut r.storage.s3.endpoint, v)),
    ("storage.s3.region", |r, v| set(&mut r.storage.s3.region, v)),
    ("storage.s3.bucket", |r, v| set(&mut r.storage.s3.bucket, v)),
    ("storage.s3.prefix", |r, v| set(&mut r.storage.s3.prefix, v)),
    ("storage.s3.access_key", |r, v| set(&mut r.storage.s3.access_key, v)),
    ("storage.s3.secret_key", |r, v| set(&mut r.storage.s3.secret_key, v)),
    ("storage.s3.path_style", |r, v| set(&mut r.storage.s3.path_style, v)),
    ("storage.s3.redirect", |r, v| set(&mut r.storage.s3.redirect, v)),
    ("storage.s3.part_size", |r, v| set(&mut r.storage.s3.part_size, v)),
    ("limits.manifest_max_size", |r, v| {
        set(&mut r.limits.manifest_max_size, v)
    }),
    ("limits.blob_max_size", |r, v| set(&mut r.limits.blob_max_size, v)),
    ("limits.upload_sessions", |r, v| set(&mut r.limits.upload_sessions, v)),
    ("limits.upload_sessions_per_client", |r, v| {
        set(&mut r.limits.upload_sessions_per_client, v)
    }),
    ("limits.body_idle_timeout", |r, v| {
        set_duration(&mut r.limits.body_idle_timeout, v)
    }),
    ("limits.upload_idle_timeout", |r, v| {
        set_duration(&mut r.limits.upload_idle_timeout, v)
    }),
    ("log.level", |r, v| set(&mut r.log.level, v)),
    ("log.format", |r, v| set(&mut r.log.format, v)),
    ("gc.grace_period", |r, v| set_duration(&mut r.gc.grace_period, v)),
    ("gc.delete_untagged", |r, v| set(&mut r.gc.delete_untagged, v)),
    ("gc.interval", |r, v| {
        r.gc.interval = Some(v.to_owned());
        Ok(())
    }),
    ("gc.upload_max_age", |r, v| set_duration(&mut r.gc.upload_max_age, v)),
    ("audit.max_age", |r, v| set_duration(&mut r.audit.max_age, v)),
    ("metadata.postgres.url", |r, v| set(&mut r.metadata.postgres.url, v)),
    ("metadata.postgres.connections", |r, v| {
        set(&mut r.metadata.postgres.connections, v)
    }),
    ("metadata.postgres.lease", |r, v| {
        set_duration(&mut r.metadata.postgres.lease, v)
    }),
    ("auth.realm", |r, v| set(&mut r.auth.realm, v)),
    ("auth.htpasswd.path", |r, v| set(&mut r.auth.htpasswd.path, v)),
    ("auth.login_failures_per_minute", |r, v| {
        set(&mut r.auth.login_failures_per_minute, v)
    }),
    ("auth.token.enabled", |r, v| set(&mut r.auth.token.enabled, v)),
    ("auth.token.realm", |r, v| set(&mut r.auth.token.realm, v)),
    ("auth.token.service", |r, v| set(&mut r.auth.token.service, v)),
    ("auth.token.issuer", |r, v| set(&mut r.auth.token.issuer, v)),
    ("auth.token.expiry", |r, v| set_duration(&mut r.auth.token.expiry, v)),
    ("auth.token.signing_key", |r, v| set(&mut r.auth.token.signing_key, v)),
    ("validation.sparse", |r, v| set(&mut r.validation.sparse, v)),
    ("auth.token.public_key", |r, v| set(&mut r.auth.token.public_key, v)),
    ("auth.token.jwks", |r, v| set(&mut r.auth.token.jwks, v)),
    ("ui.enabled", |r, v| set(&mut r.ui.enabled, v)),
    ("ui.path", |r, v| set(&mut r.ui.path, v)),
    ("ui.allow_anonymous_admin", |r, v| {
        set(&mut r.ui.allow_anonymous_admin, v)
    }),
    ("ui.session_ttl", |r, v| set_duration(&mut r.ui.session_ttl, v)),
    ("ui.secure_cookie", |r, v| set(&mut r.ui.secure_cookie, v)),
];

fn set_duration(field: &mut Option<Duration>, value: &str) -> Result<(), String> {
    *field = Some(humantime::parse_duration(value).map_err(|e| e.to_string())?);
    Ok(())
}

/// Parse `value` as a YAML scalar of the field's type.
fn set<T: DeserializeOwned>(field: &mut Option<T>, value: &str) -> Result<(), String> {
    *field = Some(serde_saphyr::from_str(value).map_err(|e| e.to_string())?);
    Ok(())
}

/// The environment variable that overrides `key`.
pub fn env_var_for(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "_"))
}

/// Load the configuration: `file` (if any), then the `BERTH_*` variables in `env`, then `flags`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Flags,
) -> Result<Config, ConfigError> {
    let mut raw = match file {
        Some(path) => parse_file(path)?,
        None => RawConfig::default(),
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    apply_distribution_env(&mut raw, &env)?;
    apply_env(&mut raw, env.iter().cloned())?;
    apply_proxy_env(&mut raw, &env)?;
    if raw.storage.s3.bucket.is_some() {
        apply_aws_env(&mut raw, &env);
    }
    if let Some(addr) = flags.addr {
        raw.http.addr = Some(addr);
    }
    if let Some(root) = flags.root {
        raw.storage.root = Some(root);
    }
    validate(raw)
}

/// Load a configuration from YAML text alone (no environment, no flags); what `load` does
/// with a file's contents. The fuzz target's entry point.
pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
    validate(parse_text(text, Path::new("<text>"))?)
}

fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_text(&text, path)
}

fn parse_text(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn apply_env(raw: &mut RawConfig, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (var, value) in env {
        let not_a_key = [
            ENV_CONFIG_FILE,
            ENV_ADMIN_USER,
            ENV_ADMIN_PASSWORD,
            crate::crashpoint::ENV,
            crate::testhook::ENV_ENABLE,
            crate::testhook::ENV_PAUSE_AT,
        ];
        // `BERTH_PROXY_*` name `proxy:` entries; `apply_proxy_env` checks them.
        if !var.starts_with(ENV_PREFIX) || var.starts_with(ENV_PROXY_PREFIX) || not_a_key.contains(&var.as_str()) {
            continue;
        }
        let Some((_, setter)) = ENV_KEYS.iter().find(|(key, _)| env_var_for(key) == var) else {
            return Err(ConfigError::UnknownEnv {
                var,
                known: known_env(raw),
            });
        };
        setter(raw, &value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    Ok(())
}

/// The start of the variables that override a `proxy:` entry's credentials.
const ENV_PROXY_PREFIX: &str = "BERTH_PROXY_";

/// The variables that override the credentials of the `proxy:` entry with this prefix
/// (username, password): the prefix upper-cased, every character but a letter or digit as `_`
/// (`docker-hub`: `BERTH_PROXY_DOCKER_HUB_USERNAME`, `BERTH_PROXY_DOCKER_HUB_PASSWORD`).
fn proxy_env_vars(prefix: &str) -> [String; 2] {
    let name: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    [
        format!("{ENV_PROXY_PREFIX}{name}_USERNAME"),
        format!("{ENV_PROXY_PREFIX}{name}_PASSWORD"),
    ]
}

/// Every `BERTH_*` variable that sets something in `raw`, for the error naming an unknown one.
fn known_env(raw: &RawConfig) -> String {
    let mut known = vec![ENV_CONFIG_FILE.to_owned()];
    known.extend(ENV_KEYS.iter().map(|(k, _)| env_var_for(k)));
    let proxy: Vec<String> = raw
        .proxy
        .iter()
        .filter_map(|p| p.prefix.as_deref())
        .flat_map(proxy_env_vars)
        .collect();
    if proxy.is_empty() {
        known.push(format!(
            "{ENV_PROXY_PREFIX}<PREFIX>_USERNAME and _PASSWORD for a proxy entry (none is configured)"
        ));
    }
    known.extend(proxy);
    known.join(", ")
}

/// CNCF Distribution's environment variables that existing `docker run ... registry:2` guides
/// pass, and the Berth keys they set (below the `BERTH_*` variables, above the file).
const DISTRIBUTION_ENV: &[(&str, &str)] = &[
    ("REGISTRY_HTTP_ADDR", "http.addr"),
    ("REGISTRY_HTTP_TLS_CERTIFICATE", "http.tls.certificate"),
    ("REGISTRY_HTTP_TLS_KEY", "http.tls.key"),
    ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "storage.root"),
    ("REGISTRY_AUTH_HTPASSWD_PATH", "auth.htpasswd.path"),
    ("REGISTRY_AUTH_HTPASSWD_REALM", "auth.realm"),
    ("REGISTRY_LOG_LEVEL", "log.level"),
];

/// Distribution variables Berth has no use for: what they configure it does anyway (or never
/// needs). Accepted, and said so.
const DISTRIBUTION_ENV_UNNEEDED: &[(&str, &str)] = &[
    (
        "REGISTRY_HTTP_SECRET",
        "Berth keeps upload state server-side and needs no secret",
    ),
    ("REGISTRY_AUTH", "htpasswd is what REGISTRY_AUTH_HTPASSWD_PATH turns on"),
    ("REGISTRY_STORAGE", "filesystem is Berth's default storage"),
    (
        "REGISTRY_STORAGE_DELETE_ENABLED",
        "Berth always accepts deletes (authorised by auth.rules)",
    ),
];

/// The `REGISTRY_*` variables in `env` that Berth honours, as (variable, what it did), in
/// order: to log one line each at start-up. Fails on one it knows of but cannot honour.
pub fn distribution_env(env: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut used = Vec::new();
    for (var, value) in env.iter().filter(|(v, _)| v.starts_with("REGISTRY_")) {
        if let Some((_, key)) = DISTRIBUTION_ENV.iter().find(|(v, _)| v == var) {
            used.push((var.clone(), format!("sets {key}")));
        } else if let Some((_, why)) = DISTRIBUTION_ENV_UNNEEDED.iter().find(|(v, _)| v == var) {
            let refused = (var == "REGISTRY_STORAGE" && value.trim() != "filesystem")
                || (var == "REGISTRY_AUTH" && value.trim() != "htpasswd")
                || (var == "REGISTRY_STORAGE_DELETE_ENABLED" && value.trim() == "false");
            if refused {
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!(
                        "{value:?} is a Distribution setting Berth cannot honour; use storage.s3 for object storage, auth.token for tokens, and auth.rules to restrict deletes"
                    ),
                });
            }
            used.push((var.clone(), format!("not needed: {why}")));
        } else {
            let known: Vec<&str> = DISTRIBUTION_ENV.iter().map(|(v, _)| *v).collect();
            return Err(ConfigError::Env {
                var: var.clone(),
                message: format!(
                    "a CNCF Distribution setting Berth does not take from the environment; it honours {}; \
                     set the matching key in Berth's config file (config.example.yml) instead",
                    known.join(", ")
                ),
            });
        }
    }
    Ok(used)
}

/// Apply the Distribution variables that set Berth keys.
fn apply_distribution_env(raw: &mut RawConfig, env: &[(String, String)]) -> Result<(), ConfigError> {
    distribution_env(env)?;
    for (var, value) in env {
        let Some((_, key)) = DISTRIBUTION_ENV.iter().find(|(v, _)| v == var) else {
            continue;
        };
        let env_error = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        match *key {
            "auth.htpasswd.path" => set(&mut raw.auth.htpasswd.path, value).map_err(env_error)?,
            "auth.realm" => set(&mut raw.auth.realm, value).map_err(env_error)?,
            _ => {
                let (_, setter) = ENV_KEYS
                    .iter()
                    .find(|(k, _)| k == key)
                    .expect("mapped keys are settable");
                setter(raw, value).map_err(env_error)?;
            }
        }
    }
    Ok(())
}

/// `BERTH_PROXY_<PREFIX>_USERNAME` and `_PASSWORD` override the credentials of the file's
/// `proxy:` entry with that prefix; the password replaces a `password_file` too. A
/// `BERTH_PROXY_*` variable that names no entry is unknown.
fn apply_proxy_env(raw: &mut RawConfig, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, value) in env.iter().filter(|(var, _)| var.starts_with(ENV_PROXY_PREFIX)) {
        let named: Vec<usize> = (0..raw.proxy.len())
            .filter(|&i| {
                raw.proxy[i]
                    .prefix
                    .as_deref()
                    .is_some_and(|prefix| proxy_env_vars(prefix).contains(var))
            })
            .collect();
        let entry = match named[..] {
            [i] => &mut raw.proxy[i],
            [] => {
                return Err(ConfigError::UnknownEnv {
                    var: var.clone(),
                    known: known_env(raw),
                });
            }
            _ => {
                let prefixes: Vec<String> = named
                    .iter()
                    .filter_map(|&i| raw.proxy[i].prefix.as_ref().map(|p| format!("{p:?}")))
                    .collect();
                return Err(ConfigError::Env {
                    var: var.clone(),
                    message: format!(
                        "names more than one proxy entry (prefixes {}); give them prefixes that differ in a letter or digit",
                        prefixes.join(", ")
                    ),
                });
            }
        };
        if var.ends_with("_USERNAME") {
            entry.username = Some(value.clone());
        } else {
            entry.password = Some(value.clone());
            entry.password_file = None;
        }
    }
    Ok(())
}

/// Every rule names repositories and tags, and every glob compiles.
fn validate_immutable_tags(rules: &[ImmutableTags]) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "immutable_tags",
        message,
    };
    for rule in rules {
        if rule.repositories.is_empty() || rule.tags.is_empty() {
            return Err(invalid("each rule needs repositories and tags".into()));
        }
        check_globs("immutable_tags", rule.repositories.iter().chain(&rule.tags))?;
    }
    Ok(())
}

/// Every rule names repositories and removes something, and every glob compiles.
fn validate_retention(rules: &[Retention]) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        key: "retention",
        message,
    };
    for rule in rules {
        if rule.repositories.is_empty() {
            return Err(invalid("each rule needs repositories".into()));
        }
        if rule.keep_last.is_none() && rule.older_than.is_none() && rule.untagged_after.is_none() {
            return Err(invalid(format!(
                "the rule for {:?} removes nothing: give it keep_last, older_than or untagged_after",
                rule.repositories
            )));
        }
        check_globs("retention", rule.repositories.iter().chain(&rule.keep_tags))?;
    }
    Ok(())
}

/// Each glob compiles (`*` within a path component, `**` across several).
fn check_globs<'a>(key: &'static str, globs: impl IntoIterator<Item = &'a String>) -> Result<(), ConfigError> {
    for glob in globs {
        globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| ConfigError::Invalid {
                key,
                message: format!("glob {glob:?}: {e}"),
            })?;
    }
    Ok(())
}

/// Every quota names repositories whose globs compile.
fn validate_quotas(rules: Vec<RawQuota>) -> Result<Vec<Quota>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { key: "quotas", message };
    rules
        .into_iter()
        .map(|rule| {
            if rule.repositories.is_empty() {
                return Err(invalid("each quota needs repositories".into()));
            }
            check_globs("quotas", &rule.repositories)?;
            Ok(Quota {
                repositories: rule.repositories,
                max_bytes: rule.max_bytes.as_u64(),
            })
        })
        .collect()
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let addr = raw.http.addr.as_deref().unwrap_or("127.0.0.1:5000");
    let addr = listen_addr(addr).map_err(|e| ConfigError::Invalid {
        key: "http.addr",
        message: format!("{addr:?} is not an IP:port address, :port or localhost:port ({e})"),
    })?;
    let root = raw.storage.root.unwrap_or_else(|| PathBuf::from("./data"));
    if root.as_os_str().is_empty() {
        return Err(ConfigError::Invalid {
            key: "storage.root",
            message: "must not be empty".into(),
        });
    }
    let meta_cache = validate_meta_cache(raw.storage.meta_cache)?;
    let manifest_max_size = raw.limits.manifest_max_size.unwrap_or(ByteSize::mib(4)).as_u64();
    if !(1..=64 << 20).contains(&manifest_max_size) {
        return Err(ConfigError::Invalid {
            key: "limits.manifest_max_size",
            message: "must be 1 byte to 64MiB".into(),
        });
    }
    let blob_max_size = raw.limits.blob_max_size.unwrap_or(ByteSize::gib(64)).as_u64();
    if blob_max_size == 0 {
        return Err(ConfigError::Invalid {
            key: "limits.blob_max_size",
            message: "must be positive".into(),
        });
    }
    let level = raw.log.level.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| ConfigError::Invalid {
        key: "log.level",
        message: format!("{level:?}: {e}"),
    })?;
    let debug_addr = match raw.http.debug_addr.as_deref().map(str::trim) {
        None | Some("off" | "") => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
            key: "http.debug_addr",
            message: format!("{text:?} is neither an IP:port address nor off ({e})"),
        })?),
    };
    let s3 = validate_s3(raw.storage.s3)?;
    let tls = validate_tls(raw.http.tls)?;
    let auth = validate_auth(raw.auth, tls.as_ref().is_some_and(|t| t.client_ca.is_some()))?;
    let proxy = validate_proxy(raw.proxy)?;
    let gc = validate_gc(&raw.gc)?;
    let policies = validate_policies(raw.immutable_tags, raw.retention, raw.quotas, raw.notifications)?;
    let ui = validate_ui(raw.ui)?;
    let metadata = validate_metadata(raw.metadata)?;
    Ok(Config {
        metadata,
        audit: Audit {
            max_age: raw.audit.max_age.unwrap_or(Duration::from_secs(90 * 24 * 3600)),
        },
        notifications: policies.3,
        gc,
        ui,
        immutable_tags: policies.0,
        retention: policies.1,
        quotas: policies.2,
        validation: Validation {
            sparse: raw.validation.sparse.unwrap_or(false),
        },
        http: Http {
            addr,
            drain_timeout: raw.http.drain_timeout.unwrap_or(Duration::from_secs(30)),
            shutdown_delay: raw.http.shutdown_delay.unwrap_or(Duration::ZERO),
            debug_addr,
            header_timeout: raw.http.header_timeout.unwrap_or(Duration::from_secs(30)),
            sendfile: raw.http.sendfile.unwrap_or(true),
            tls,
        },
        auth,
        storage: Storage {
            root,
            fsync: raw.storage.fsync.unwrap_or(true),
            direct_io: raw.storage.direct_io.unwrap_or(true),
            meta_cache,
            s3,
        },
        limits: Limits {
            manifest_max_size,
            blob_max_size,
            upload_sessions: raw.limits.upload_sessions.unwrap_or(1024),
            upload_sessions_per_client: raw.limits.upload_sessions_per_client.unwrap_or(64),
            body_idle_timeout: raw.limits.body_idle_timeout.unwrap_or(Duration::from_secs(60)),
            upload_idle_timeout: raw.limits.upload_idle_timeout.unwrap_or(Duration::from_secs(15 * 60)),
        },
        log: Log {
            level,
            format: raw.log.format.unwrap_or(LogFormat::Text),
        },
        proxy,
    })
}

/// `storage.meta_cache`: 1 MiB to 1 TiB, `meta::DEFAULT_CACHE` unless set.
fn validate_meta_cache(raw: Option<ByteSize>) -> Result<u64, ConfigError> {
    let meta_cache = raw.map_or(crate::meta::DEFAULT_CACHE, |c| c.as_u64());
    if !(1 << 20..=1 << 40).contains(&meta_cache) {
        return Err(ConfigError::Invalid {
            key: "storage.meta_cache",
            message: "must be between 1MiB and 1TiB".into(),
        });
    }
    Ok(meta_cache)
}

/// The policy sections, each validated.
type PolicySections = (Vec<ImmutableTags>, Vec<Retention>, Vec<Quota>, Vec<Notification>);

fn validate_policies(
    immutable_tags: Vec<ImmutableTags>,
    retention: Vec<Retention>,
    quotas: Vec<RawQuota>,
    notifications: Vec<Notification>,
) -> Result<PolicySections, ConfigError> {
    validate_immutable_tags(&immutable_tags)?;
    validate_retention(&retention)?;
    let quotas = validate_quotas(quotas)?;
    validate_notifications(&notifications)?;
    Ok((immutable_tags, retention, quotas, notifications))
}

/// An address to listen on: `IP:port`, or the forms Distribution's `http.addr` takes too:
/// `:port` (every interface) and `localhost:port` (loopback).
fn listen_addr(text: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return format!("0.0.0.0:{port}").parse();
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return format!("127.0.0.1:{port}").parse();
    }
    text.parse()
}

/// Paths the API owns, which the UI may not be mounted on or under.
const API_PATHS: &[&str] = &["/v2", "/v1", "/admin", "/auth", "/metrics", "/healthz", "/readyz"];

fn validate_ui(raw: RawUi) -> Result<Ui, ConfigError> {
    let path = raw.path.unwrap_or_else(|| "/ui".into());
    let invalid = |message: String| ConfigError::Invalid {
        key: "ui.path",
        message,
    };
    let component = |c: &str| {
        !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) && c != "." && c != ".."
    };
    if !path.starts_with('/') || !path[1..].split('/').all(component) {
        return Err(invalid(format!(
            "{path:?} must be / followed by path components of letters, digits and -._~ (like /ui), with no trailing /"
        )));
    }
    if let Some(api) = API_PATHS
        .iter()
        .find(|a| path == **a || path.starts_with(&format!("{a}/")))
    {
        return Err(invalid(format!(
            "{path:?} is under {api}, which the registry API serves"
        )));
    }
    let session_ttl = raw.session_ttl.unwrap_or(Duration::from_secs(12 * 3600));
    if session_ttl < Duration::from_secs(60) {
        return Err(ConfigError::Invalid {
            key: "ui.session_ttl",
            message: "must be at least 1m".into(),
        });
    }
    Ok(Ui {
        enabled: raw.enabled.unwrap_or(true),
        path,
        allow_anonymous_admin: raw.allow_anonymous_admin.unwrap_or(false),
        session_ttl,
        secure_cookie: validate_secure_cookie(raw.secure_cookie)?,
    })
}

/// `metadata.postgres`: a URL tokio-postgres can parse, and a pool size within reason.
fn validate_metadata(raw: RawMetadata) -> Result<Option<Postgres>, ConfigError> {
    let RawPostgres {
        url,
        connections,
        lease,
    } = raw.postgres;
    let Some(url) = url else {
        let stray = [
            ("metadata.postgres.connections", connections.is_some()),
            ("metadata.postgres.lease", lease.is_some()),
        ];
        if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid {
                key,
                message: "set without metadata.postgres.url".into(),
            });
        }
        return Ok(None);
    };
    if let Err(e) = url.parse::<tokio_postgres::Config>() {
        return Err(ConfigError::Invalid {
            key: "metadata.postgres.url",
            message: format!("not a PostgreSQL connection URL ({e})"),
        });
    }
    let connections = connections.unwrap_or(16);
    if !(1..=1024).contains(&connections) {
        return Err(ConfigError::Invalid {
            key: "metadata.postgres.connections",
            message: format!("{connections} is not between 1 and 1024"),
        });
    }
    let lease = lease.unwrap_or(crate::meta::cluster::DEFAULT_LEASE);
    if lease < Duration::from_secs(1) {
        return Err(ConfigError::Invalid {
            key: "metadata.postgres.lease",
            message: "must be at least 1s".into(),
        });
    }
    Ok(Some(Postgres {
        url,
        connections,
        lease,
    }))
}

fn validate_secure_cookie(raw: Option<RawSecureCookie>) -> Result<SecureCookie, ConfigError> {
    match raw {
        None => Ok(SecureCookie::Auto),
        Some(RawSecureCookie::Flag(true)) => Ok(SecureCookie::Always),
        Some(RawSecureCookie::Flag(false)) => Ok(SecureCookie::Never),
        Some(RawSecureCookie::Word(w)) if w == "auto" => Ok(SecureCookie::Auto),
        Some(RawSecureCookie::Word(w)) => Err(ConfigError::Invalid {
            key: "ui.secure_cookie",
            message: format!("{w:?} is not auto, true or false"),
        }),
    }
}

fn validate_gc(raw: &RawGc) -> Result<Gc, ConfigError> {
    let interval = match raw.interval.as_deref().map(str::trim) {
        None | Some("off" | "0" | "0s") => None,
        Some(text) => Some(humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
            key: "gc.interval",
            message: format!("{text:?} is neither a duration nor off ({e})"),
        })?),
    };
    Ok(Gc {
        grace_period: raw.grace_period.unwrap_or(Duration::from_secs(3600)),
        delete_untagged: raw.delete_untagged.unwrap_or(true),
        interval,
        upload_max_age: raw.upload_max_age.unwrap_or(Duration::from_secs(24 * 3600)),
    })
}

/// Every endpoint has an http(s) URL (none twice: the URL keys its queue), known events, globs
/// that compile and a positive timeout.
fn validate_notifications(endpoints: &[Notification]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for n in endpoints {
        // The URL is not echoed: it may carry credentials.
        let url = reqwest::Url::parse(&n.url).map_err(|e| invalid("notifications.url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "notifications.url",
                format!("{} is not http or https", url.scheme()),
            ));
        }
        if !seen.insert(n.url.as_str()) {
            return Err(invalid("notifications.url", "an endpoint is listed twice"));
        }
        if let Some(e) = n.events.iter().find(|e| !NOTIFICATION_EVENTS.contains(&e.as_str())) {
            return Err(invalid(
                "notifications.events",
                format!("{e:?} is not one of {}", NOTIFICATION_EVENTS.join(", ")),
            ));
        }
        for glob in &n.repositories {
            globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .build()
                .map_err(|e| invalid("notifications.repositories", format!("glob {glob:?}: {e}")))?;
        }
        if n.timeout.is_zero() || n.max_age.is_zero() {
            return Err(invalid("notifications.timeout", "timeout and max_age must be positive"));
        }
    }
    Ok(())
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn validate_tls(raw: RawTls) -> Result<Option<Tls>, ConfigError> {
    let reload_interval = raw.reload_interval.unwrap_or(Duration::from_secs(10));
    if reload_interval.is_zero() {
        return Err(invalid("http.tls.reload_interval", "must be positive"));
    }
    match (raw.certificate, raw.key) {
        (None, None) if raw.client_ca.is_some() => Err(invalid(
            "http.tls.client_ca",
            "needs http.tls.certificate and http.tls.key",
        )),
        (None, None) => Ok(None),
        (Some(certificate), Some(key)) => Ok(Some(Tls {
            certificate,
            key,
            client_ca: raw.client_ca,
            reload_interval,
        })),
        (Some(_), None) => Err(invalid("http.tls.key", "must be set with http.tls.certificate")),
        (None, Some(_)) => Err(invalid("http.tls.certificate", "must be set with http.tls.key")),
    }
}

/// `None` when nothing authenticates clients; rules without a way to authenticate are an error.
fn validate_auth(raw: RawAuth, client_certificates: bool) -> Result<Option<Auth>, ConfigError> {
    let token = validate_token(raw.token, raw.htpasswd.path.is_some())?;
    if raw.htpasswd.path.is_none() && token.is_none() && !client_certificates {
        let configured = !raw.rules.is_empty() || !raw.groups.is_empty() || raw.admins != Subjects::default();
        if configured {
            return Err(invalid(
                "auth",
                "rules, groups and admins need a way to authenticate: auth.htpasswd.path, auth.token or http.tls.client_ca",
            ));
        }
        return Ok(None);
    }
    for rule in &raw.rules {
        validate_rule(rule)?;
    }
    let login_failures_per_minute = raw.login_failures_per_minute.unwrap_or(10);
    if login_failures_per_minute == 0 {
        return Err(invalid("auth.login_failures_per_minute", "must be positive"));
    }
    Ok(Some(Auth {
        realm: raw.realm.unwrap_or_else(|| "berth".into()),
        htpasswd: raw.htpasswd.path,
        token,
        groups: raw.groups,
        admins: raw.admins,
        rules: raw.rules,
        login_failures_per_minute,
    }))
}

fn validate_token(raw: RawToken, htpasswd: bool) -> Result<Option<Token>, ConfigError> {
    let external = raw.public_key.is_some() || raw.jwks.is_some();
    if !raw.enabled.unwrap_or(external) {
        return Ok(None);
    }
    let keys = match (raw.public_key, raw.jwks) {
        (Some(_), Some(_)) => return Err(invalid("auth.token.jwks", "set public_key or jwks, not both")),
        (Some(path), None) => TokenKeys::PublicKey(path),
        (None, Some(path)) => TokenKeys::Jwks(path),
        (None, None) if htpasswd => TokenKeys::Issue {
            signing_key: raw.signing_key,
        },
        (None, None) => {
            return Err(invalid(
                "auth.token",
                "Berth issues tokens to htpasswd users: set auth.htpasswd.path, or an external issuer's public_key or jwks",
            ));
        }
    };
    if external && raw.realm.is_none() {
        return Err(invalid(
            "auth.token.realm",
            "an external issuer needs its token URL here",
        ));
    }
    let expiry = raw.expiry.unwrap_or(Duration::from_secs(300));
    if expiry < Duration::from_secs(10) || expiry > Duration::from_secs(24 * 3600) {
        return Err(invalid("auth.token.expiry", "must be 10s to 24h"));
    }
    Ok(Some(Token {
        realm: raw.realm,
        service: raw.service.unwrap_or_else(|| "berth".into()),
        issuer: raw.issuer.unwrap_or_else(|| "berth".into()),
        expiry,
        keys,
    }))
}

fn validate_rule(rule: &Rule) -> Result<(), ConfigError> {
    if rule.repositories.is_empty() || rule.actions.is_empty() {
        return Err(invalid("auth.rules", "each rule needs repositories and actions"));
    }
    if rule.users.is_empty() && rule.groups.is_empty() && !rule.anonymous {
        return Err(invalid(
            "auth.rules",
            "each rule needs users, groups or anonymous: true",
        ));
    }
    if rule.anonymous && rule.actions.iter().any(|a| *a != Action::Pull) {
        return Err(invalid("auth.rules", "anonymous rules may only grant pull"));
    }
    for glob in &rule.repositories {
        globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| invalid("auth.rules", format!("repository glob {glob:?}: {e}")))?;
    }
    Ok(())
}

/// `storage.s3`: off unless a bucket is named; then the credentials are required (from the
/// file, `BERTH_STORAGE_S3_*` or the standard `AWS_*` variables).
fn validate_s3(raw: RawS3) -> Result<Option<crate::blobs::s3::Options>, ConfigError> {
    let Some(bucket) = raw.bucket.filter(|b| !b.is_empty()) else {
        let set = raw.endpoint.is_some() || raw.access_key.is_some() || raw.prefix.is_some();
        if set {
            return Err(ConfigError::Invalid {
                key: "storage.s3.bucket",
                message: "is required when any storage.s3 key is set".into(),
            });
        }
        return Ok(None);
    };
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(ConfigError::Invalid {
            key: "storage.s3.bucket",
            message: format!("{bucket:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')"),
        });
    }
    let prefix = raw.prefix.unwrap_or_default().trim_matches('/').to_owned();
    let prefix_ok = prefix.is_empty()
        || prefix.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
            && prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix_ok {
        return Err(ConfigError::Invalid {
            key: "storage.s3.prefix",
            message: format!("{prefix:?}: use path components of printable ASCII, without . or .."),
        });
    }
    if let Some(endpoint) = &raw.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        return Err(ConfigError::Invalid {
            key: "storage.s3.endpoint",
            message: format!("{endpoint:?} is not an http:// or https:// URL"),
        });
    }
    let (Some(access_key), Some(secret_key)) = (raw.access_key, raw.secret_key) else {
        return Err(ConfigError::Invalid {
            key: "storage.s3.access_key",
            message: "storage.s3 needs access_key and secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                .into(),
        });
    };
    let part_size = raw.part_size.unwrap_or(ByteSize::mib(8)).as_u64();
    if !(crate::blobs::s3::MIN_PART..=crate::blobs::s3::MAX_PART).contains(&part_size) {
        return Err(ConfigError::Invalid {
            key: "storage.s3.part_size",
            message: "must be between 5MiB and 5GiB (S3's part sizes)".into(),
        });
    }
    Ok(Some(crate::blobs::s3::Options {
        endpoint: raw.endpoint,
        region: raw.region.unwrap_or_else(|| "us-east-1".to_owned()),
        bucket,
        prefix,
        access_key,
        secret_key,
        path_style: raw.path_style.unwrap_or(false),
        redirect: raw.redirect.unwrap_or(false),
        part_size,
    }))
}

/// The most of a `password_file` that is read: the file holds one password.
const PASSWORD_FILE_MAX: u64 = 64 << 10;

/// `proxy`: each entry on its own, then the entries against each other (prefixes must not
/// overlap, namespaces must differ).
fn validate_proxy(raw: Vec<RawProxy>) -> Result<Vec<crate::upstream::Settings>, ConfigError> {
    let proxy = raw
        .into_iter()
        .enumerate()
        .map(|(i, entry)| validate_proxy_entry(i + 1, entry))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in proxy.iter().enumerate() {
        for b in &proxy[i + 1..] {
            if a.prefix == b.prefix {
                return Err(invalid(
                    "proxy",
                    format!(
                        "two entries have the prefix {:?}: give each upstream a prefix of its own",
                        a.prefix
                    ),
                ));
            }
            let (outer, inner) = if a.prefix.len() < b.prefix.len() {
                (a, b)
            } else {
                (b, a)
            };
            if inner
                .prefix
                .strip_prefix(outer.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
            {
                return Err(invalid(
                    "proxy",
                    format!(
                        "the prefixes {:?} and {:?} overlap: repositories under {}/ would belong to both upstreams; \
                         use prefixes where neither is the other plus more path components",
                        outer.prefix, inner.prefix, inner.prefix
                    ),
                ));
            }
            if a.serve_unprefixed && b.serve_unprefixed {
                return Err(invalid(
                    "proxy",
                    format!(
                        "entries {:?} and {:?} both set serve_unprefixed: names without a prefix can come from one upstream only",
                        a.prefix, b.prefix
                    ),
                ));
            }
            if a.namespace == b.namespace {
                return Err(invalid(
                    "proxy",
                    format!(
                        "entries {:?} and {:?} both have the namespace {:?}: set namespace on one of them, \
                         so that each ns value selects one upstream",
                        a.prefix, b.prefix, a.namespace
                    ),
                ));
            }
        }
    }
    Ok(proxy)
}

/// One `proxy` entry, the `n`th (from 1), with its defaults filled in and its `password_file`
/// read.
fn validate_proxy_entry(n: usize, raw: RawProxy) -> Result<crate::upstream::Settings, ConfigError> {
    let Some(prefix) = raw.prefix else {
        return Err(invalid(
            "proxy",
            format!(
                "entry {n} has no prefix: set prefix to the repository path the upstream is served under \
                 (with prefix: dockerhub, /v2/dockerhub/library/busybox is the upstream's library/busybox)"
            ),
        ));
    };
    let bad = |what: String| invalid("proxy", format!("entry {prefix:?}: {what}"));
    if let Err(e) = crate::oci::RepoName::parse(&prefix) {
        return Err(bad(format!(
            "prefix is not a repository name ({e}); use lowercase path components such as dockerhub or mirrors/ghcr"
        )));
    }
    let Some(url) = raw.url else {
        return Err(bad("no url: set url to the upstream's https://host[:port]".into()));
    };
    let (url, authority) = proxy_url(&url).map_err(&bad)?;
    let namespace = match raw.namespace {
        Some(namespace) if namespace.trim().is_empty() => {
            return Err(bad(
                "namespace is empty: leave it out to use the url's host[:port]".into()
            ));
        }
        Some(namespace) => namespace,
        None if authority.eq_ignore_ascii_case("registry-1.docker.io") => "docker.io".to_owned(),
        None => authority.to_ascii_lowercase(),
    };
    let [username_var, password_var] = proxy_env_vars(&prefix);
    let from_file = raw.password_file.is_some();
    let password = match (raw.password, raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(bad("password and password_file are both set: keep one of them".into()));
        }
        (password, None) => password,
        (None, Some(path)) => Some(read_password_file(&path).map_err(&bad)?),
    };
    let source = if from_file { "password_file" } else { "password" };
    match (&raw.username, &password) {
        (Some(_), None) => {
            return Err(bad(format!(
                "username without a password: set password or password_file (or {password_var}), \
                 or remove username to pull anonymously"
            )));
        }
        (None, Some(_)) => {
            return Err(bad(format!(
                "{source} without a username: set username (or {username_var}) too, \
                 or remove {source} to pull anonymously"
            )));
        }
        _ => {}
    }
    let max_bytes = match raw.max_bytes.map(|b| b.as_u64()) {
        Some(0) => {
            return Err(bad(
                "max_bytes must be positive: leave it out for a cache without a bound".into(),
            ));
        }
        max_bytes => max_bytes,
    };
    Ok(crate::upstream::Settings {
        prefix,
        url,
        namespace,
        username: raw.username,
        password,
        tag_ttl: raw.tag_ttl.unwrap_or(Duration::from_secs(300)),
        max_bytes,
        serve_stale: raw.serve_stale.unwrap_or(true),
        serve_unprefixed: raw.serve_unprefixed.unwrap_or(false),
    })
}

/// A `proxy` url as `scheme://host[:port]` (a trailing `/` dropped) and its `host[:port]`.
/// The errors repeat no URL that might carry credentials.
fn proxy_url(url: &str) -> Result<(String, String), String> {
    if url.contains('@') {
        return Err(
            "url must not carry credentials (user:password@): put them in username and password (or password_file)"
                .into(),
        );
    }
    let Some((scheme, rest)) = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
    else {
        return Err(format!("url {url:?} must start with http:// or https://"));
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if tail.contains(['?', '#']) {
        return Err(format!(
            "url {url:?} has a query or fragment: give only scheme://host[:port]"
        ));
    }
    if !matches!(tail, "" | "/") {
        return Err(format!(
            "url {url:?} has a path: give only scheme://host[:port] (Berth asks the upstream for /v2/...)"
        ));
    }
    // host[:port], or [IPv6 address][:port].
    let (host_ok, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or(("", ""));
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        match after.strip_prefix(':') {
            Some(port) => (host_ok, Some(port)),
            None => (host_ok && after.is_empty(), None),
        }
    } else {
        let (host, port) = authority
            .split_once(':')
            .map_or((authority, None), |(host, port)| (host, Some(port)));
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        (host_ok, port)
    };
    if !host_ok {
        return Err(format!("url {url:?} has no valid host name or address"));
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(format!("url {url:?}: port {port:?} is not a number from 1 to 65535"));
    }
    Ok((format!("{scheme}://{authority}"), authority.to_owned()))
}

/// A `password_file`'s password: its contents without trailing line ends. The error names the
/// file, never what it holds.
fn read_password_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(PASSWORD_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
    if text.len() as u64 > PASSWORD_FILE_MAX {
        return Err(format!(
            "password_file {} is larger than 64KiB: it should hold the password alone",
            path.display()
        ));
    }
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// The standard `AWS_*` variables fill what `storage.s3` leaves unset: credentials, region
/// and endpoint.
fn apply_aws_env(raw: &mut RawConfig, env: &[(String, String)]) {
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let s3 = &mut raw.storage.s3;
    s3.access_key = s3.access_key.take().or_else(|| get("AWS_ACCESS_KEY_ID"));
    s3.secret_key = s3.secret_key.take().or_else(|| get("AWS_SECRET_ACCESS_KEY"));
    s3.region = s3
        .region
        .take()
        .or_else(|| get("AWS_REGION"))
        .or_else(|| get("AWS_DEFAULT_REGION"));
    s3.endpoint = s3
        .endpoint
        .take()
        .or_else(|| get("AWS_ENDPOINT_URL_S3"))
        .or_else(|| get("AWS_ENDPOINT_URL"));
}

/// A duration as `config.example.yml` writes them: `90d` (beyond a day), `24h`, `15m`,
/// `60s`, `250ms`.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms > 86_400_000 && ms.is_multiple_of(86_400_000) => format!("{}d", ms / 86_400_000),
        ms if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        ms if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        ms if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        ms if d.subsec_nanos().is_multiple_of(1_000_000) => format!("{ms}ms"),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// A size as `config.example.yml` writes them, exactly: `64GiB`, `4MiB`, `1000B`.
fn size_text(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n != 0 && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

/// What `to_yaml` prints in place of a secret.
pub const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective configuration as YAML, every key set, in the layout of
    /// `config.example.yml`. Secrets (`storage.s3.secret_key`, `proxy` passwords, a password in
    /// `metadata.postgres.url`) print as `<redacted>`.
    pub fn to_yaml(&self) -> String {
        let d = duration_text;
        let b = size_text;
        let interval = self.gc.interval.map_or_else(|| "off".to_owned(), d);
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        format!(
            "http:\n  addr: {}\n  drain_timeout: {}\n  shutdown_delay: {}\n  debug_addr: {}\n  header_timeout: {}\n  sendfile: {}\n{}storage:\n  root: {}\n  fsync: {}\n  direct_io: {}\n  meta_cache: {}\n{}limits:\n  \
             manifest_max_size: {}\n  blob_max_size: {}\n  upload_sessions: {}\n  \
             upload_sessions_per_client: {}\n  body_idle_timeout: {}\n  upload_idle_timeout: {}\nlog:\n  level: {}\n  format: {format}\ngc:\n  \
             grace_period: {}\n  delete_untagged: {}\n  interval: {interval}\n  upload_max_age: {}\nvalidation:\n  \
             sparse: {}\nui:\n  enabled: {}\n  path: {}\n  allow_anonymous_admin: {}\n  session_ttl: {}\n  secure_cookie: {}\naudit:\n  max_age: {}\n{}",
            self.http.addr,
            d(self.http.drain_timeout),
            d(self.http.shutdown_delay),
            self.http.debug_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            d(self.http.header_timeout),
            self.http.sendfile,
            self.tls_yaml(),
            self.storage.root.display(),
            self.storage.fsync,
            self.storage.direct_io,
            b(self.storage.meta_cache),
            self.s3_yaml(),
            b(self.limits.manifest_max_size),
            b(self.limits.blob_max_size),
            self.limits.upload_sessions,
            self.limits.upload_sessions_per_client,
            d(self.limits.body_idle_timeout),
            d(self.limits.upload_idle_timeout),
            self.log.level,
            d(self.gc.grace_period),
            self.gc.delete_untagged,
            d(self.gc.upload_max_age),
            self.validation.sparse,
            self.ui.enabled,
            self.ui.path,
            self.ui.allow_anonymous_admin,
            d(self.ui.session_ttl),
            self.ui.secure_cookie.as_str(),
            d(self.audit.max_age),
            self.metadata_yaml(),
        ) + &self.auth_yaml()
            + &self.proxy_yaml()
            + &Self::list_yaml("immutable_tags", &self.immutable_tags)
            + &Self::list_yaml("retention", &self.retention)
            + &self.quotas_yaml()
            + &self.notifications_yaml()
    }

    /// `notifications`, secrets redacted.
    fn notifications_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            url: &'a str,
            events: &'a [String],
            repositories: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: Option<&'static str>,
            timeout: String,
            max_age: String,
        }
        #[derive(Serialize)]
        struct Section<'a> {
            notifications: Vec<Entry<'a>>,
        }
        if self.notifications.is_empty() {
            return String::new();
        }
        let notifications = self
            .notifications
            .iter()
            .map(|n| Entry {
                url: &n.url,
                events: &n.events,
                repositories: &n.repositories,
                secret: n.secret.as_ref().map(|_| REDACTED),
                timeout: duration_text(n.timeout),
                max_age: duration_text(n.max_age),
            })
            .collect();
        serde_saphyr::to_string(&Section { notifications }).unwrap_or_default()
    }

    /// `proxy`, passwords redacted. `password_file` is not printed: the password it held is
    /// (redacted).
    fn proxy_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            prefix: &'a str,
            url: &'a str,
            namespace: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            username: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<&'static str>,
            tag_ttl: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_bytes: Option<u64>,
            serve_stale: bool,
            serve_unprefixed: bool,
        }
        #[derive(Serialize)]
        struct Section<'a> {
            proxy: Vec<Entry<'a>>,
        }
        if self.proxy.is_empty() {
            return String::new();
        }
        let proxy = self
            .proxy
            .iter()
            .map(|p| Entry {
                prefix: &p.prefix,
                url: &p.url,
                namespace: &p.namespace,
                username: p.username.as_deref(),
                password: p.password.as_ref().map(|_| REDACTED),
                tag_ttl: humantime::format_duration(p.tag_ttl).to_string(),
                max_bytes: p.max_bytes,
                serve_stale: p.serve_stale,
                serve_unprefixed: p.serve_unprefixed,
            })
            .collect();
        serde_saphyr::to_string(&Section { proxy }).unwrap_or_default()
    }

    /// A top-level list section (`immutable_tags`, `retention`), when it has entries.
    fn list_yaml<T: Serialize>(key: &str, items: &[T]) -> String {
        if items.is_empty() {
            return String::new();
        }
        let section = std::collections::BTreeMap::from([(key, items)]);
        serde_saphyr::to_string(&section).unwrap_or_default()
    }

    /// `quotas`, when there are any, sizes as the example writes them.
    fn quotas_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            repositories: &'a [String],
            max_bytes: String,
        }
        #[derive(Serialize)]
        struct Section<'a> {
            quotas: Vec<Entry<'a>>,
        }
        if self.quotas.is_empty() {
            return String::new();
        }
        let quotas = self
            .quotas
            .iter()
            .map(|q| Entry {
                repositories: &q.repositories,
                max_bytes: size_text(q.max_bytes),
            })
            .collect();
        serde_saphyr::to_string(&Section { quotas }).unwrap_or_default()
    }

    /// `storage.s3`, the secret key redacted.
    fn s3_yaml(&self) -> String {
        let Some(s3) = &self.storage.s3 else {
            return String::new();
        };
        let value = serde_json::json!({
            "endpoint": s3.endpoint, "region": s3.region, "bucket": s3.bucket, "prefix": s3.prefix,
            "access_key": s3.access_key, "secret_key": REDACTED, "path_style": s3.path_style,
            "redirect": s3.redirect, "part_size": s3.part_size,
        });
        let yaml = serde_saphyr::to_string(&value).unwrap_or_default();
        let indented: String = yaml.lines().fold(String::new(), |mut out, line| {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
            out
        });
        format!("  s3:\n{indented}")
    }

    /// The `metadata:` section (the URL redacted whole when it carries a password); empty for
    /// redb.
    fn metadata_yaml(&self) -> String {
        let Some(pg) = &self.metadata else {
            return String::new();
        };
        let secret = pg
            .url
            .parse::<tokio_postgres::Config>()
            .map_or(true, |c| c.get_password().is_some());
        let url = if secret { REDACTED } else { pg.url.as_str() };
        let lease = humantime::format_duration(pg.lease).to_string();
        let value = serde_json::json!({ "postgres": { "url": url, "connections": pg.connections, "lease": lease } });
        let yaml = serde_saphyr::to_string(&value).unwrap_or_default();
        let indented: String = yaml.lines().fold(String::new(), |mut out, line| {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
            out
        });
        format!("metadata:\n{indented}")
    }

    fn tls_yaml(&self) -> String {
        let Some(tls) = &self.http.tls else {
            return "  # tls: off (plain HTTP; set http.tls.certificate and http.tls.key)\n".to_owned();
        };
        let ca = tls
            .client_ca
            .as_ref()
            .map(|p| format!("    client_ca: {}\n", p.display()))
            .unwrap_or_default();
        format!(
            "  tls:\n    certificate: {}\n    key: {}\n{ca}    reload_interval: {}\n",
            tls.certificate.display(),
            tls.key.display(),
            humantime::format_duration(tls.reload_interval)
        )
    }

    fn auth_yaml(&self) -> String {
        let Some(auth) = &self.auth else {
            return "# auth: off (every client may push, pull and delete; /admin answers loopback only)\n".to_owned();
        };
        let token = auth.token.as_ref().map(|t| {
            let (signing_key, public_key, jwks) = match &t.keys {
                TokenKeys::Issue { signing_key } => (signing_key.clone(), None, None),
                TokenKeys::PublicKey(p) => (None, Some(p.clone()), None),
                TokenKeys::Jwks(p) => (None, None, Some(p.clone())),
            };
            serde_json::json!({
                "enabled": true, "realm": t.realm, "service": t.service, "issuer": t.issuer,
                "expiry": humantime::format_duration(t.expiry).to_string(),
                "signing_key": signing_key, "public_key": public_key, "jwks": jwks,
            })
        });
        let value = serde_json::json!({"auth": {
            "realm": auth.realm,
            "htpasswd": {"path": auth.htpasswd},
            "token": token.unwrap_or_else(|| serde_json::json!({"enabled": false})),
            "groups": auth.groups,
            "admins": auth.admins,
            "rules": auth.rules,
            "login_failures_per_minute": auth.login_failures_per_minute,
        }});
        serde_saphyr::to_string(&value).unwrap_or_default()
    }
}

/// The keys of each `proxy` entry (a list, so not in `ENV_KEYS`).
const PROXY_KEYS: &[&str] = &[
    "proxy.prefix",
    "proxy.url",
    "proxy.namespace",
    "proxy.username",
    "proxy.password",
    "proxy.password_file",
    "proxy.tag_ttl",
    "proxy.max_bytes",
    "proxy.serve_stale",
    "proxy.serve_unprefixed",
];

/// Every key the file accepts, for documentation checks. A `proxy` key names the key of each
/// entry of that list.
pub fn keys() -> impl Iterator<Item = &'static str> {
    ENV_KEYS.iter().map(|(k, _)| *k).chain(PROXY_KEYS.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, yaml).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        load(Some(&path), env, Flags::default())
    }

    #[test]
    fn config_check_prints_sizes_and_durations_as_the_example_does() {
        let c = load_str("", &[]).unwrap();
        let y = c.to_yaml();
        for line in [
            "manifest_max_size: 4MiB",
            "blob_max_size: 64GiB",
            "upload_max_age: 24h",
            "grace_period: 1h",
            "upload_idle_timeout: 15m",
            "body_idle_timeout: 1m",
            "# auth: off",
            "# tls: off",
        ] {
            assert!(y.contains(line), "{line} in:\n{y}");
        }
        assert_eq!(size_text(1000), "1000B");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
        assert_eq!(load_str(&y, &[]).unwrap(), c);
    }

    #[test]
    fn distributions_variables_set_their_berth_keys_and_the_rest_are_refused() {
        let env = [
            ("REGISTRY_HTTP_ADDR", ":5001"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/var/lib/registry"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_HTTP_SECRET", "s3cret"),
        ];
        let c = load_str("", &env).unwrap();
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:5001");
        assert_eq!(c.storage.root, PathBuf::from("/var/lib/registry"));
        // BERTH_* wins over REGISTRY_*.
        let c = load_str(
            "",
            &[("REGISTRY_HTTP_ADDR", ":5001"), ("BERTH_HTTP_ADDR", "127.0.0.1:5002")],
        )
        .unwrap();
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:5002");
        let owned: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let said = distribution_env(&owned).unwrap();
        assert_eq!(said.len(), 4);
        assert!(said[3].1.starts_with("not needed"), "{said:?}");
        for (var, value, needle) in [
            ("REGISTRY_STORAGE", "s3", "storage.s3"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "false", "auth.rules"),
            ("REGISTRY_NOTIFICATIONS_ENDPOINTS", "x", "config file"),
        ] {
            let e = load_str("", &[(var, value)]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(needle), "{e}");
        }
    }

    #[test]
    fn ui_secure_cookie_is_auto_true_or_false() {
        let secure = |yaml: &str, env: &[(&str, &str)]| load_str(yaml, env).map(|c| c.ui.secure_cookie);
        assert_eq!(secure("", &[]).unwrap(), SecureCookie::Auto);
        assert_eq!(secure("ui:\n  secure_cookie: auto\n", &[]).unwrap(), SecureCookie::Auto);
        assert_eq!(
            secure("ui:\n  secure_cookie: true\n", &[]).unwrap(),
            SecureCookie::Always
        );
        assert_eq!(
            secure("", &[("BERTH_UI_SECURE_COOKIE", "false")]).unwrap(),
            SecureCookie::Never
        );
        let e = secure("ui:\n  secure_cookie: sometimes\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ui.secure_cookie") && e.contains("sometimes"), "{e}");
        assert!(SecureCookie::Auto.applies(true) && !SecureCookie::Auto.applies(false));
        assert!(SecureCookie::Always.applies(false) && !SecureCookie::Never.applies(true));
    }

    #[test]
    fn listen_addresses_take_distributions_forms_too() {
        let addr = |a: &str| load_str(&format!("http:\n  addr: \"{a}\"\n"), &[]).map(|c| c.http.addr.to_string());
        assert_eq!(addr(":5000").unwrap(), "0.0.0.0:5000");
        assert_eq!(addr("localhost:5001").unwrap(), "127.0.0.1:5001");
        assert_eq!(addr("[::1]:5002").unwrap(), "[::1]:5002");
        assert_eq!(addr("10.0.0.1:80").unwrap(), "10.0.0.1:80");
        let err = addr("example.com:5000").unwrap_err().to_string();
        assert!(err.contains(":port or localhost:port"), "{err}");
        assert!(addr(":http").is_err());
    }

    #[test]
    fn defaults() {
        let c = load(None, [], Flags::default()).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.storage.root, PathBuf::from("./data"));
        assert!(c.storage.fsync);
        assert_eq!(c.limits.manifest_max_size, 4 << 20);
        assert_eq!(c.storage.meta_cache, crate::meta::DEFAULT_CACHE);
    }

    #[test]
    fn postgres_metadata_is_chosen_by_url_and_its_password_never_shown() {
        assert_eq!(load_str("", &[]).unwrap().metadata, None, "redb by default");
        let url = "postgres://berth:s3cret@db.example:5432/berth";
        let c = load_str("", &[("BERTH_METADATA_POSTGRES_URL", url)]).unwrap();
        let pg = c.metadata.clone().unwrap();
        assert_eq!((pg.url.as_str(), pg.connections), (url, 16));
        for shown in [c.to_yaml(), format!("{c:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let c = load_str(
            "metadata:\n  postgres:\n    url: postgres://berth@db/berth\n    connections: 4\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.metadata.as_ref().unwrap().connections, 4);
        assert_eq!(
            load_str(&c.to_yaml(), &[]).unwrap().metadata,
            c.metadata,
            "to_yaml loads back"
        );
        for (yaml, key) in [
            ("metadata:\n  postgres:\n    url: not a url\n", "metadata.postgres.url"),
            (
                "metadata:\n  postgres:\n    connections: 3\n",
                "metadata.postgres.connections",
            ),
            (
                "metadata:\n  postgres:\n    url: postgres://db/b\n    connections: 0\n",
                "metadata.postgres.connections",
            ),
        ] {
            let e = load_str(yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn the_lease_of_several_nodes_is_a_duration_of_a_second_or_more() {
        let url = ("BERTH_METADATA_POSTGRES_URL", "postgres://db/b");
        let lease = |c: Config| c.metadata.unwrap().lease;
        assert_eq!(lease(load_str("", &[url]).unwrap()), Duration::from_secs(30));
        let c = load_str("", &[url, ("BERTH_METADATA_POSTGRES_LEASE", "2s")]).unwrap();
        assert_eq!(lease(c), Duration::from_secs(2));
        for (yaml, env) in [
            ("metadata:\n  postgres:\n    lease: 10s\n", vec![]),
            ("", vec![url, ("BERTH_METADATA_POSTGRES_LEASE", "500ms")]),
        ] {
            let e = load_str(yaml, &env).unwrap_err().to_string();
            assert!(e.contains("metadata.postgres.lease"), "{yaml} {env:?}: {e}");
        }
    }

    #[test]
    fn meta_cache_is_a_size_within_bounds() {
        let c = load_str("storage:\n  meta_cache: 256MiB\n", &[]).unwrap();
        assert_eq!(c.storage.meta_cache, 256 << 20);
        let c = load_str("", &[("BERTH_STORAGE_META_CACHE", "8MiB")]).unwrap();
        assert_eq!(c.storage.meta_cache, 8 << 20);
        let e = load_str("storage:\n  meta_cache: 1KiB\n", &[]).unwrap_err().to_string();
        assert!(e.contains("storage.meta_cache"), "{e}");
    }

    #[test]
    fn file_env_flags_precedence() {
        let yaml = "http:\n  addr: 127.0.0.1:6000\n  drain_timeout: 1m\nlimits:\n  manifest_max_size: 1MiB\n";
        let c = load_str(
            yaml,
            &[("BERTH_STORAGE_FSYNC", "false"), ("BERTH_HTTP_ADDR", "127.0.0.1:7000")],
        )
        .unwrap();
        assert_eq!(c.http.addr.port(), 7000);
        assert_eq!(c.http.drain_timeout, Duration::from_secs(60));
        assert!(!c.storage.fsync);
        assert_eq!(c.limits.manifest_max_size, 1 << 20);
    }

    /// `config.example.yml` must load, set every key to its default, and mention every key.
    #[test]
    fn example_documents_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yml");
        let example = load(Some(&path), [], Flags::default()).unwrap();
        assert_eq!(example, load(None, [], Flags::default()).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        // `proxy` is a list with no entry by default: the file shows a commented example,
        // which must load and document each proxy key.
        let proxy = example_proxy_block(&text);
        let example_proxy = from_yaml(&proxy).unwrap_or_else(|e| panic!("{proxy}\n{e}"));
        assert!(!example_proxy.proxy.is_empty(), "{proxy}");
        for key in keys() {
            let leaf = key.rsplit('.').next().unwrap();
            let documented_in = if key.starts_with("proxy.") { &proxy } else { &text };
            assert!(
                documented_in.contains(&format!("{leaf}:")),
                "config.example.yml does not document {key}"
            );
        }
        // The example's keys that have a default are set to it: without them, nothing changes.
        for leaf in ["namespace", "tag_ttl", "serve_stale", "serve_unprefixed"] {
            let without: String = proxy
                .lines()
                .filter(|line| !line.trim_start().starts_with(&format!("{leaf}:")))
                .flat_map(|line| [line, "\n"])
                .collect();
            assert_eq!(
                from_yaml(&without).unwrap(),
                example_proxy,
                "config.example.yml's proxy.{leaf} is not its default"
            );
        }
    }

    /// The commented `proxy:` block at the end of `config.example.yml`, uncommented.
    fn example_proxy_block(text: &str) -> String {
        text.lines()
            .skip_while(|line| *line != "# proxy:")
            .map_while(|line| line.strip_prefix("# "))
            .flat_map(|line| [line, "\n"])
            .collect()
    }

    #[test]
    fn s3_takes_keys_from_the_file_then_aws_variables_and_never_prints_the_secret() {
        let yaml = "storage:\n  s3:\n    bucket: registry\n    endpoint: http://127.0.0.1:3900\n    path_style: true\n";
        let env = [
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-very-secret"),
            ("AWS_REGION", "garage"),
        ];
        let c = load_str(yaml, &env).unwrap();
        let s3 = c.storage.s3.as_ref().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("registry", "garage"));
        assert_eq!(s3.access_key, "AKIDEXAMPLE");
        assert_eq!(s3.secret_key, "wJalrXUtnFEMI-very-secret");
        assert_eq!(s3.part_size, 8 << 20);
        assert!(s3.path_style && !s3.redirect);
        for shown in [c.to_yaml(), format!("{c:?}")] {
            assert!(!shown.contains("very-secret"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        // What config check prints loads back the same, but for the secret it hides.
        let again = load_str(&c.to_yaml(), &env).unwrap();
        assert_eq!(again.storage.s3.unwrap().bucket, "registry");
        // The file wins over AWS_*; BERTH_* over the file.
        let c = load_str(
            "storage:\n  s3:\n    bucket: registry\n    access_key: FROMFILE\n    secret_key: s\n",
            &[
                ("AWS_ACCESS_KEY_ID", "FROMENV"),
                ("BERTH_STORAGE_S3_PART_SIZE", "16MiB"),
            ],
        )
        .unwrap();
        let s3 = c.storage.s3.unwrap();
        assert_eq!((s3.access_key.as_str(), s3.part_size), ("FROMFILE", 16 << 20));
    }

    #[test]
    fn notifications_take_defaults_hide_their_secret_and_refuse_mistakes() {
        let yaml = "notifications:\n  - url: https://ci.example/hook\n    secret: hook-very-secret\n";
        let c = load_str(yaml, &[]).unwrap();
        let n = &c.notifications[0];
        assert_eq!(n.events, ["push", "delete"]);
        assert_eq!(n.repositories, ["**"]);
        assert_eq!(
            (n.timeout, n.max_age),
            (Duration::from_secs(5), Duration::from_secs(24 * 3600))
        );
        assert_eq!(c.audit.max_age, Duration::from_secs(90 * 24 * 3600));
        for shown in [c.to_yaml(), format!("{c:?}")] {
            assert!(!shown.contains("very-secret"), "{shown}");
        }
        assert_eq!(load_str(&c.to_yaml(), &[]).unwrap().notifications[0].url, n.url);
        for (bad, key) in [
            ("  - url: ftp://x/\n", "notifications.url"),
            ("  - url: https://x/\n    events: [pull]\n", "notifications.events"),
            ("  - url: https://x/\n  - url: https://x/\n", "notifications.url"),
            ("  - url: https://x/\n    timeout: 0s\n", "notifications.timeout"),
        ] {
            let e = load_str(&format!("notifications:\n{bad}"), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn s3_mistakes_name_their_key() {
        let creds = "    access_key: a\n    secret_key: s\n";
        for (yaml, key) in [
            (
                format!("storage:\n  s3:\n    bucket: Bad_Name\n{creds}"),
                "storage.s3.bucket",
            ),
            (
                format!("storage:\n  s3:\n    bucket: ok-name\n    part_size: 1MiB\n{creds}"),
                "storage.s3.part_size",
            ),
            (
                format!("storage:\n  s3:\n    bucket: ok-name\n    prefix: a/../b\n{creds}"),
                "storage.s3.prefix",
            ),
            (
                format!("storage:\n  s3:\n    bucket: ok-name\n    endpoint: ftp://x\n{creds}"),
                "storage.s3.endpoint",
            ),
            (
                "storage:\n  s3:\n    bucket: ok-name\n".to_owned(),
                "storage.s3.access_key",
            ),
            (
                format!("storage:\n  s3:\n    endpoint: http://x\n{creds}"),
                "storage.s3.bucket",
            ),
        ] {
            let e = load_str(&yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    /// What `config check` prints loads back as the same configuration.
    #[test]
    fn effective_yaml_round_trips() {
        let yaml = "http:\n  addr: 127.0.0.1:6000\ngc:\n  interval: 6h\n  grace_period: 90s\nlog:\n  format: json\n";
        let c = load_str(yaml, &[]).unwrap();
        let again = load_str(&c.to_yaml(), &[]).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str("http:\n  adr: x\n", &[]).unwrap_err().to_string();
        assert!(e.contains("adr"), "{e}");
        let e = load_str("http:\n  addr: nope\n", &[]).unwrap_err().to_string();
        assert!(e.contains("http.addr"), "{e}");
        let e = load_str("log:\n  format: xml\n", &[]).unwrap_err().to_string();
        assert!(e.contains("xml"), "{e}");
        let e = load_str("", &[("BERTH_NOPE", "1")]).unwrap_err().to_string();
        assert!(e.contains("BERTH_NOPE"), "{e}");
        let e = load_str("", &[("BERTH_STORAGE_FSYNC", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("BERTH_STORAGE_FSYNC"), "{e}");
    }

    #[test]
    fn tls_and_auth_errors_name_the_key() {
        let e = load_str("http:\n  tls:\n    certificate: c.pem\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.tls.key"), "{e}");
        let e = load_str("http:\n  tls:\n    client_ca: ca.pem\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.tls.client_ca"), "{e}");
        let rule = "auth:\n  rules:\n    - repositories: [\"a/**\"]\n      users: [x]\n      actions: [pull]\n";
        let e = load_str(rule, &[]).unwrap_err().to_string();
        assert!(e.contains("auth") && e.contains("authenticate"), "{e}");
        let htpasswd = "auth:\n  htpasswd:\n    path: /h\n";
        let anon_push =
            format!("{htpasswd}  rules:\n    - repositories: [\"a\"]\n      anonymous: true\n      actions: [push]\n");
        let e = load_str(&anon_push, &[]).unwrap_err().to_string();
        assert!(e.contains("auth.rules") && e.contains("anonymous"), "{e}");
        let bad_glob =
            format!("{htpasswd}  rules:\n    - repositories: [\"a[\"]\n      users: [x]\n      actions: [pull]\n");
        let e = load_str(&bad_glob, &[]).unwrap_err().to_string();
        assert!(e.contains("a["), "{e}");
        let e = load_str(
            &format!("{htpasswd}  rules:\n    - repositories: [a]\n      users: [x]\n      actions: [fly]\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("fly"), "{e}");
        let e = load_str("auth:\n  token:\n    enabled: true\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.token"), "{e}");
        let e = load_str("auth:\n  token:\n    public_key: /k.pem\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.token.realm"), "{e}");
    }

    /// `config check` prints TLS and auth too, and they load back the same.
    #[test]
    fn effective_yaml_round_trips_with_tls_and_auth() {
        let yaml = "http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    client_ca: /ca.pem\nauth:\n  htpasswd:\n    path: /h\n  token:\n    enabled: true\n    expiry: 2m\n  groups:\n    g: [a, b]\n  admins:\n    users: [a]\n  rules:\n    - repositories: [\"x/**\", \"y\"]\n      groups: [g]\n      actions: [pull, push]\n    - repositories: [\"pub/**\"]\n      anonymous: true\n      actions: [pull]\n";
        let c = load_str(yaml, &[]).unwrap();
        assert_eq!(c.auth.as_ref().unwrap().rules.len(), 2);
        assert_eq!(
            c.auth.as_ref().unwrap().token.as_ref().unwrap().expiry,
            Duration::from_secs(120)
        );
        let again = load_str(&c.to_yaml(), &[]).unwrap();
        assert_eq!(again, c);
    }

    fn proxy_of(yaml: &str, env: &[(&str, &str)]) -> Vec<crate::upstream::Settings> {
        load_str(yaml, env).unwrap_or_else(|e| panic!("{yaml}\n{e}")).proxy
    }

    #[test]
    fn proxy_entry_with_every_key() {
        let yaml = "proxy:\n  - prefix: docker-hub\n    url: https://registry-1.docker.io/\n    namespace: hub.example\n    username: berth\n    password: hunter2-secret\n    tag_ttl: 0s\n    max_bytes: 50GiB\n    serve_stale: false\n    serve_unprefixed: true\n  - prefix: mirrors/ghcr\n    url: https://ghcr.io\n";
        let proxy = proxy_of(yaml, &[]);
        assert_eq!(
            proxy[0],
            crate::upstream::Settings {
                prefix: "docker-hub".into(),
                url: "https://registry-1.docker.io".into(),
                namespace: "hub.example".into(),
                username: Some("berth".into()),
                password: Some("hunter2-secret".into()),
                tag_ttl: Duration::ZERO,
                max_bytes: Some(50 << 30),
                serve_stale: false,
                serve_unprefixed: true,
            }
        );
        assert_eq!((proxy.len(), proxy[1].prefix.as_str()), (2, "mirrors/ghcr"));
    }

    #[test]
    fn proxy_defaults() {
        let yaml = "proxy:\n  - prefix: dockerhub\n    url: https://registry-1.docker.io\n  - prefix: local\n    url: http://127.0.0.1:5001/\n  - prefix: quay\n    url: https://Quay.io\n  - prefix: v6\n    url: http://[::1]:5002\n  - prefix: ab\n    url: https://a.example\n  - prefix: a\n    url: https://b.example\n";
        let proxy = proxy_of(yaml, &[]);
        let namespaces: Vec<&str> = proxy.iter().map(|p| p.namespace.as_str()).collect();
        assert_eq!(
            namespaces,
            [
                "docker.io",
                "127.0.0.1:5001",
                "quay.io",
                "[::1]:5002",
                "a.example",
                "b.example"
            ]
        );
        assert_eq!(proxy[1].url, "http://127.0.0.1:5001");
        for p in &proxy {
            assert_eq!(p.tag_ttl, Duration::from_secs(300));
            assert!(p.serve_stale);
            assert_eq!((&p.username, &p.password, p.max_bytes), (&None, &None, None));
        }
        assert!(load(None, [], Flags::default()).unwrap().proxy.is_empty());
    }

    #[test]
    fn proxy_mistakes_name_the_entry_and_what_to_do() {
        let entry = |prefix: &str, url: &str, rest: &str| format!("  - prefix: {prefix}\n    url: {url}\n{rest}");
        let one = |url: &str, rest: &str| format!("proxy:\n{}", entry("hub", url, rest));
        let ok = "https://hub.example";
        for (yaml, wanted) in [
            (
                "proxy:\n  - url: https://x.io\n".to_owned(),
                &["entry 1", "no prefix", "prefix: dockerhub"][..],
            ),
            (
                format!("proxy:\n{}", entry("Hub", ok, "")),
                &["\"Hub\"", "not a repository name", "lowercase"],
            ),
            (
                format!(
                    "proxy:\n{}{}",
                    entry("a", ok, ""),
                    entry("a", "https://other.example", "")
                ),
                &["\"a\"", "two entries", "its own"],
            ),
            (
                format!(
                    "proxy:\n{}{}",
                    entry("a/b", ok, ""),
                    entry("a", "https://other.example", "")
                ),
                &["\"a\"", "\"a/b\"", "overlap"],
            ),
            (
                format!(
                    "proxy:\n{}{}",
                    entry("a", ok, "    serve_unprefixed: true\n"),
                    entry("b", "https://other.example", "    serve_unprefixed: true\n")
                ),
                &["\"a\"", "\"b\"", "serve_unprefixed", "one upstream"],
            ),
            (
                "proxy:\n  - prefix: hub\n".to_owned(),
                &["\"hub\"", "no url", "https://"],
            ),
            (one("ftp://hub.example", ""), &["\"hub\"", "http:// or https://"]),
            (one("hub.example", ""), &["http:// or https://"]),
            (one("https://", ""), &["host"]),
            (one("https://:5000", ""), &["host"]),
            (one("https://hub example", ""), &["host"]),
            (one("https://hub.example:99999", ""), &["port", "99999"]),
            (one("\"https://hub.example:\"", ""), &["port"]),
            (one("https://hub.example/v2", ""), &["path", "scheme://host[:port]"]),
            (one("https://hub.example/?x=1", ""), &["query"]),
            (one("https://hub.example?x=1", ""), &["query"]),
            (
                one("https://berth:topsecret@hub.example", ""),
                &["\"hub\"", "credentials", "username and password"],
            ),
            (
                format!(
                    "proxy:\n{}{}",
                    entry("a", ok, ""),
                    entry("b", "https://hub.example/", "")
                ),
                &["\"a\"", "\"b\"", "namespace", "\"hub.example\""],
            ),
            (
                format!(
                    "proxy:\n{}{}",
                    entry("a", ok, ""),
                    entry("b", "https://other.example", "    namespace: hub.example\n")
                ),
                &["namespace", "\"hub.example\""],
            ),
            (one(ok, "    namespace: \"\"\n"), &["namespace", "leave it out"]),
            (
                one(ok, "    username: berth\n"),
                &["\"hub\"", "username without a password", "BERTH_PROXY_HUB_PASSWORD"],
            ),
            (
                one(ok, "    password: topsecret\n"),
                &["\"hub\"", "password without a username", "BERTH_PROXY_HUB_USERNAME"],
            ),
            (
                one(ok, "    username: u\n    password: topsecret\n    password_file: /p\n"),
                &["\"hub\"", "both"],
            ),
            (one(ok, "    max_bytes: 0\n"), &["\"hub\"", "max_bytes", "leave it out"]),
            (one(ok, "    passwrd: topsecret\n"), &["passwrd"]),
            (one(ok, "    tag_ttl: soon\n"), &["tag_ttl"]),
        ] {
            let e = load_str(&yaml, &[]).unwrap_err().to_string();
            for w in wanted {
                assert!(e.contains(w), "{yaml}: {w:?} not in: {e}");
            }
            if !yaml.contains("passwrd") {
                assert!(!e.contains("topsecret"), "{yaml}: {e}");
            }
        }
    }

    #[test]
    fn proxy_password_file_is_read_and_its_contents_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret-from-file\n").unwrap();
        let yaml = |path: &Path| {
            format!(
                "proxy:\n  - prefix: hub\n    url: https://hub.example\n    username: berth\n    password_file: {}\n",
                path.display()
            )
        };
        let proxy = proxy_of(&yaml(&file), &[]);
        assert_eq!(proxy[0].password.as_deref(), Some("s3cret-from-file"));
        let missing = dir.path().join("missing");
        let e = load_str(&yaml(&missing), &[]).unwrap_err().to_string();
        assert!(
            e.contains("\"hub\"") && e.contains(&missing.display().to_string()),
            "{e}"
        );
        // A password file without a username is a mistake too.
        let e = load_str(&yaml(&file).replace("    username: berth\n", ""), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("password_file without a username"), "{e}");
        std::fs::write(&file, "s3cret".repeat(20_000)).unwrap();
        let e = load_str(&yaml(&file), &[]).unwrap_err().to_string();
        assert!(e.contains("password_file") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn proxy_credentials_from_the_environment() {
        let yaml = "proxy:\n  - prefix: docker-hub\n    url: https://registry-1.docker.io\n    username: fromfile\n    password_file: /nonexistent/berth-password\n  - prefix: ghcr\n    url: https://ghcr.io\n";
        let env = [
            ("BERTH_PROXY_DOCKER_HUB_PASSWORD", "from-env"),
            ("BERTH_PROXY_GHCR_USERNAME", "u"),
            ("BERTH_PROXY_GHCR_PASSWORD", "p"),
            ("BERTH_HTTP_ADDR", "127.0.0.1:7000"),
        ];
        let proxy = proxy_of(yaml, &env);
        // The variable's password replaces the password_file (which is then not read).
        assert_eq!(
            (proxy[0].username.as_deref(), proxy[0].password.as_deref()),
            (Some("fromfile"), Some("from-env"))
        );
        assert_eq!(
            (proxy[1].username.as_deref(), proxy[1].password.as_deref()),
            (Some("u"), Some("p"))
        );
        let proxy = proxy_of(yaml, &[("BERTH_PROXY_DOCKER_HUB_USERNAME", "env-user"), env[0]]);
        assert_eq!(proxy[0].username.as_deref(), Some("env-user"));
    }

    #[test]
    fn proxy_variables_must_name_an_entry() {
        let yaml = "proxy:\n  - prefix: dockerhub\n    url: https://registry-1.docker.io\n";
        let e = load_str(yaml, &[("BERTH_PROXY_NOPE_PASSWORD", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown environment variable BERTH_PROXY_NOPE_PASSWORD"),
            "{e}"
        );
        assert!(
            e.contains("BERTH_PROXY_DOCKERHUB_PASSWORD") && e.contains("BERTH_HTTP_ADDR"),
            "{e}"
        );
        let e = load_str(yaml, &[("BERTH_NOPE", "x")]).unwrap_err().to_string();
        assert!(e.contains("BERTH_PROXY_DOCKERHUB_USERNAME"), "{e}");
        let e = load_str("", &[("BERTH_PROXY_DOCKERHUB_PASSWORD", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BERTH_PROXY_DOCKERHUB_PASSWORD") && e.contains("none is configured"),
            "{e}"
        );
        // Two prefixes that differ only in punctuation share their variables.
        let two = "proxy:\n  - prefix: a-b\n    url: https://a.example\n  - prefix: a.b\n    url: https://b.example\n";
        let e = load_str(two, &[("BERTH_PROXY_A_B_PASSWORD", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BERTH_PROXY_A_B_PASSWORD") && e.contains("\"a-b\", \"a.b\""),
            "{e}"
        );
    }

    #[test]
    fn proxy_prints_with_its_password_redacted() {
        let yaml = "proxy:\n  - prefix: dockerhub\n    url: https://registry-1.docker.io\n    username: berth\n    password: hunter2-secret\n    max_bytes: 1GiB\n  - prefix: ghcr\n    url: https://ghcr.io\n    namespace: ghcr.example\n    tag_ttl: 0s\n    serve_stale: false\n";
        let c = load_str(yaml, &[]).unwrap();
        let printed = c.to_yaml();
        for shown in [&printed, &format!("{c:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        assert!(!printed.contains("password_file"), "{printed}");
        // It loads back the same, but for the password it hides.
        let mut again = load_str(&printed, &[]).unwrap();
        assert_eq!(again.proxy[0].password.as_deref(), Some(REDACTED));
        again.proxy[0].password = Some("hunter2-secret".into());
        assert_eq!(again, c, "{printed}");
        // No proxy entries: no proxy section.
        assert!(!load(None, [], Flags::default()).unwrap().to_yaml().contains("proxy"));
    }

    #[test]
    fn quotas_load_with_sizes_print_back_and_refuse_bad_globs() {
        let yaml = "quotas:\n  - repositories: \"team-a/*\"\n    max_bytes: 20GiB\n  - repositories: [\"b/**\", c]\n    max_bytes: 1000\n";
        let c = load_str(yaml, &[]).unwrap();
        assert_eq!(
            c.quotas,
            [
                Quota {
                    repositories: vec!["team-a/*".into()],
                    max_bytes: 20 << 30,
                },
                Quota {
                    repositories: vec!["b/**".into(), "c".into()],
                    max_bytes: 1000,
                },
            ]
        );
        let printed = c.to_yaml();
        assert!(printed.contains("max_bytes: 20GiB"), "{printed}");
        assert_eq!(load_str(&printed, &[]).unwrap(), c, "{printed}");
        for (bad, says) in [
            ("quotas:\n  - repositories: \"a/[\"\n    max_bytes: 1\n", "glob"),
            (
                "quotas:\n  - repositories: []\n    max_bytes: 1\n",
                "needs repositories",
            ),
            ("quotas:\n  - repositories: a\n", "max_bytes"),
            ("quotas:\n  - repositories: a\n    max_bytes: 1\n    tags: x\n", "tags"),
        ] {
            let e = load_str(bad, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
