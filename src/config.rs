//! Configuration: the YAML file, then `BERTH_*` environment variables, then command-line flags,
//! become one validated `Config` with every default filled in.
//!
//! Order of work, as in zot: parse strictly (an unknown key is an error that names it), apply
//! overrides, fill defaults, validate. Every key is documented, with its default, in
//! `config.example.yml`; a test keeps that file and this one in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The prefix of every environment override; `BERTH_HTTP_ADDR` sets `http.addr`.
pub const ENV_PREFIX: &str = "BERTH_";
/// Names the config file; read by the CLI, not an override of a key.
pub const ENV_CONFIG_FILE: &str = "BERTH_CONFIG";

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub root: PathBuf,
    pub fsync: bool,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    root: Option<PathBuf>,
    fsync: Option<bool>,
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
    ("storage.root", |r, v| set(&mut r.storage.root, v)),
    ("storage.fsync", |r, v| set(&mut r.storage.fsync, v)),
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
    ("log.level", |r, v| set(&mut r.log.level, v)),
    ("log.format", |r, v| set(&mut r.log.format, v)),
    ("gc.grace_period", |r, v| set_duration(&mut r.gc.grace_period, v)),
    ("gc.delete_untagged", |r, v| set(&mut r.gc.delete_untagged, v)),
    ("gc.interval", |r, v| {
        r.gc.interval = Some(v.to_owned());
        Ok(())
    }),
    ("gc.upload_max_age", |r, v| set_duration(&mut r.gc.upload_max_age, v)),
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
    apply_env(&mut raw, env)?;
    if let Some(addr) = flags.addr {
        raw.http.addr = Some(addr);
    }
    if let Some(root) = flags.root {
        raw.storage.root = Some(root);
    }
    validate(raw)
}

fn parse_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn apply_env(raw: &mut RawConfig, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (var, value) in env {
        if !var.starts_with(ENV_PREFIX) || var == ENV_CONFIG_FILE || var == crate::crashpoint::ENV {
            continue;
        }
        let Some((_, setter)) = ENV_KEYS.iter().find(|(key, _)| env_var_for(key) == var) else {
            let known = ENV_KEYS
                .iter()
                .map(|(k, _)| env_var_for(k))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::UnknownEnv {
                var,
                known: format!("{ENV_CONFIG_FILE}, {known}"),
            });
        };
        setter(raw, &value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    Ok(())
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let addr = raw.http.addr.as_deref().unwrap_or("127.0.0.1:5000");
    let addr = addr.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
        key: "http.addr",
        message: format!("{addr:?} is not an IP:port address ({e})"),
    })?;
    let root = raw.storage.root.unwrap_or_else(|| PathBuf::from("./data"));
    if root.as_os_str().is_empty() {
        return Err(ConfigError::Invalid {
            key: "storage.root",
            message: "must not be empty".into(),
        });
    }
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
    let interval = match raw.gc.interval.as_deref().map(str::trim) {
        None | Some("off" | "0" | "0s") => None,
        Some(text) => Some(humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
            key: "gc.interval",
            message: format!("{text:?} is neither a duration nor off ({e})"),
        })?),
    };
    let gc = Gc {
        grace_period: raw.gc.grace_period.unwrap_or(Duration::from_secs(3600)),
        delete_untagged: raw.gc.delete_untagged.unwrap_or(true),
        interval,
        upload_max_age: raw.gc.upload_max_age.unwrap_or(Duration::from_secs(24 * 3600)),
    };
    Ok(Config {
        gc,
        http: Http {
            addr,
            drain_timeout: raw.http.drain_timeout.unwrap_or(Duration::from_secs(30)),
            shutdown_delay: raw.http.shutdown_delay.unwrap_or(Duration::ZERO),
            debug_addr,
        },
        storage: Storage {
            root,
            fsync: raw.storage.fsync.unwrap_or(true),
        },
        limits: Limits {
            manifest_max_size,
            blob_max_size,
            upload_sessions: raw.limits.upload_sessions.unwrap_or(1024),
            upload_sessions_per_client: raw.limits.upload_sessions_per_client.unwrap_or(64),
            body_idle_timeout: raw.limits.body_idle_timeout.unwrap_or(Duration::from_secs(60)),
        },
        log: Log {
            level,
            format: raw.log.format.unwrap_or(LogFormat::Text),
        },
    })
}

impl Config {
    /// The effective configuration as YAML, every key set, in the layout of
    /// `config.example.yml`. (No key holds a secret yet; those will print as `<redacted>`.)
    pub fn to_yaml(&self) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let interval = self.gc.interval.map_or_else(|| "off".to_owned(), d);
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        format!(
            "http:\n  addr: {}\n  drain_timeout: {}\n  shutdown_delay: {}\n  debug_addr: {}\nstorage:\n  root: {}\n  fsync: {}\nlimits:\n  \
             manifest_max_size: {}\n  blob_max_size: {}\n  upload_sessions: {}\n  \
             upload_sessions_per_client: {}\n  body_idle_timeout: {}\nlog:\n  level: {}\n  format: {format}\ngc:\n  \
             grace_period: {}\n  delete_untagged: {}\n  interval: {interval}\n  upload_max_age: {}\n",
            self.http.addr,
            d(self.http.drain_timeout),
            d(self.http.shutdown_delay),
            self.http.debug_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            self.storage.root.display(),
            self.storage.fsync,
            self.limits.manifest_max_size,
            self.limits.blob_max_size,
            self.limits.upload_sessions,
            self.limits.upload_sessions_per_client,
            d(self.limits.body_idle_timeout),
            self.log.level,
            d(self.gc.grace_period),
            self.gc.delete_untagged,
            d(self.gc.upload_max_age),
        )
    }
}

/// Every key the file accepts, for documentation checks.
pub fn keys() -> impl Iterator<Item = &'static str> {
    ENV_KEYS.iter().map(|(k, _)| *k)
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
    fn defaults() {
        let c = load(None, [], Flags::default()).unwrap();
        assert_eq!(c.http.addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(c.storage.root, PathBuf::from("./data"));
        assert!(c.storage.fsync);
        assert_eq!(c.limits.manifest_max_size, 4 << 20);
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
        for key in keys() {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                text.contains(&format!("{leaf}:")),
                "config.example.yml does not document {key}"
            );
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
}
