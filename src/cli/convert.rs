//! `berth config convert`: a CNCF Distribution `config.yml` as a Berth configuration.
//!
//! Each setting of the Distribution file is looked up in one table (`RULES`, by dotted key):
//! it becomes a Berth key, is not needed by Berth (said why), or cannot be translated (said
//! what to do instead). Keys the table does not know are reported too, never dropped
//! silently. The result is loaded with Berth's own validation before it is printed, so what
//! comes out either loads as it is or says why not.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The CNCF Distribution configuration (for example /etc/docker/registry/config.yml).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Write Berth's configuration here instead of to standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print {"config": <YAML text>, "notes": [{"key", "outcome", "why"}]} instead.
    #[arg(long)]
    pub json: bool,
}

/// What became of one Distribution setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Written as a Berth key.
    Translated,
    /// Berth does not need it.
    NotNeeded,
    /// Berth cannot honour it.
    NotTranslated,
}

#[derive(Debug, serde::Serialize)]
pub struct Note {
    pub key: String,
    pub outcome: Outcome,
    pub why: String,
}

/// How one Distribution key (or every key below a prefix) is handled.
enum Rule {
    /// The Berth key it sets, with the value as it is.
    To(&'static str),
    /// Handled by a function of the whole file (values that change shape or depend on others).
    Special,
    NotNeeded(&'static str),
    Cannot(&'static str),
}

/// Distribution keys (dotted; a key ending in `.` covers everything below it), in the order
/// Distribution's documentation lists them.
const RULES: &[(&str, Rule)] = &[
    ("version", Rule::NotNeeded("Berth's configuration has no version")),
    ("log.level", Rule::To("log.level")),
    ("loglevel", Rule::To("log.level")),
    ("log.formatter", Rule::Special),
    (
        "log.fields.",
        Rule::NotNeeded("Berth's log lines name their own fields"),
    ),
    (
        "log.accesslog.disabled",
        Rule::Cannot(
            "Berth always writes the access log (at info, target berth::access); filter it with log.level, for example info,berth::access=warn",
        ),
    ),
    (
        "log.hooks",
        Rule::Cannot("Berth has no log hooks; ship its stderr (log.format: json) instead"),
    ),
    ("storage.filesystem.rootdirectory", Rule::To("storage.root")),
    (
        "storage.filesystem.maxthreads",
        Rule::NotNeeded("Berth sizes its own blocking pool"),
    ),
    ("storage.s3.accesskey", Rule::To("storage.s3.access_key")),
    ("storage.s3.secretkey", Rule::To("storage.s3.secret_key")),
    ("storage.s3.region", Rule::To("storage.s3.region")),
    ("storage.s3.regionendpoint", Rule::To("storage.s3.endpoint")),
    ("storage.s3.bucket", Rule::To("storage.s3.bucket")),
    ("storage.s3.rootdirectory", Rule::Special),
    ("storage.s3.forcepathstyle", Rule::To("storage.s3.path_style")),
    ("storage.s3.chunksize", Rule::To("storage.s3.part_size")),
    ("storage.s3.secure", Rule::Special),
    (
        "storage.s3.v4auth",
        Rule::NotNeeded("Berth always signs with AWS Signature Version 4"),
    ),
    (
        "storage.s3.multipartcopychunksize",
        Rule::NotNeeded("Berth joins parts by server-side copies of part_size"),
    ),
    (
        "storage.s3.multipartcopymaxconcurrency",
        Rule::NotNeeded("Berth joins parts by server-side copies of part_size"),
    ),
    (
        "storage.s3.multipartcopythresholdsize",
        Rule::NotNeeded("Berth joins parts by server-side copies of part_size"),
    ),
    (
        "storage.s3.",
        Rule::Cannot("no Berth equivalent; see storage.s3 in config.example.yml"),
    ),
    ("storage.delete.enabled", Rule::Special),
    ("storage.redirect.disable", Rule::Special),
    (
        "storage.cache.",
        Rule::NotNeeded("Berth's metadata is in redb, read without a cache"),
    ),
    ("storage.maintenance.uploadpurging.age", Rule::To("gc.upload_max_age")),
    (
        "storage.maintenance.uploadpurging.enabled",
        Rule::NotNeeded("every garbage collection purges uploads older than gc.upload_max_age"),
    ),
    (
        "storage.maintenance.uploadpurging.interval",
        Rule::NotNeeded("set gc.interval to collect garbage (uploads included) on a schedule"),
    ),
    (
        "storage.maintenance.uploadpurging.dryrun",
        Rule::NotNeeded("POST /admin/gc?dry_run=true reports without removing"),
    ),
    (
        "storage.maintenance.readonly.enabled",
        Rule::NotNeeded("Berth collects garbage online; no read-only mode is needed"),
    ),
    (
        "storage.tag.concurrencylimit",
        Rule::NotNeeded("tag lookups are metadata reads"),
    ),
    (
        "storage.",
        Rule::Cannot("only the filesystem and s3 drivers have Berth equivalents"),
    ),
    ("http.addr", Rule::To("http.addr")),
    ("http.net", Rule::Special),
    ("http.draintimeout", Rule::To("http.drain_timeout")),
    (
        "http.secret",
        Rule::NotNeeded("upload state is in the metadata, not in signed URLs"),
    ),
    (
        "http.relativeurls",
        Rule::NotNeeded("Berth's Location headers are relative"),
    ),
    (
        "http.host",
        Rule::NotNeeded("Berth builds its URLs from the request (Host, X-Forwarded-Proto and X-Forwarded-Host)"),
    ),
    (
        "http.prefix",
        Rule::Cannot("Berth serves /v2/ at the root; strip the prefix in the reverse proxy"),
    ),
    ("http.tls.certificate", Rule::To("http.tls.certificate")),
    ("http.tls.key", Rule::To("http.tls.key")),
    ("http.tls.clientcas", Rule::Special),
    (
        "http.tls.minimumversion",
        Rule::NotNeeded("Berth speaks TLS 1.2 and 1.3 only"),
    ),
    (
        "http.tls.ciphersuites",
        Rule::NotNeeded("Berth uses rustls' modern cipher suites"),
    ),
    (
        "http.tls.letsencrypt.",
        Rule::Cannot("Berth does not fetch certificates; use a certificate manager (Berth reloads changed files)"),
    ),
    ("http.debug.addr", Rule::To("http.debug_addr")),
    (
        "http.debug.prometheus.",
        Rule::NotNeeded("Berth serves Prometheus metrics at /metrics"),
    ),
    (
        "http.headers.",
        Rule::Cannot("Berth sets its own headers; add others in a reverse proxy"),
    ),
    (
        "http.http2.",
        Rule::NotNeeded("Berth speaks HTTP/2 over TLS (ALPN) and HTTP/1.1"),
    ),
    ("auth.htpasswd.realm", Rule::To("auth.realm")),
    ("auth.htpasswd.path", Rule::To("auth.htpasswd.path")),
    ("auth.token.realm", Rule::Special),
    ("auth.token.service", Rule::To("auth.token.service")),
    ("auth.token.issuer", Rule::To("auth.token.issuer")),
    ("auth.token.jwks", Rule::To("auth.token.jwks")),
    (
        "auth.token.rootcertbundle",
        Rule::Cannot(
            "Berth takes the issuer's public key: `openssl x509 -pubkey -noout -in <bundle> > issuer.pem`, then auth.token.public_key: issuer.pem",
        ),
    ),
    (
        "auth.token.autoredirect",
        Rule::NotNeeded("the token realm is this server's /auth/token unless auth.token.realm says otherwise"),
    ),
    (
        "auth.token.signingalgorithms",
        Rule::NotNeeded("Berth accepts RS*, ES* and EdDSA tokens by the key's type"),
    ),
    (
        "auth.silly.",
        Rule::Cannot("a development-only scheme; use auth.htpasswd"),
    ),
    (
        "auth.none.",
        Rule::NotNeeded("leave auth out: Berth then needs no credentials"),
    ),
    ("proxy.remoteurl", Rule::Special),
    ("proxy.username", Rule::Special),
    ("proxy.password", Rule::Special),
    (
        "proxy.ttl",
        Rule::Cannot(
            "Berth revalidates tags after the entry's tag_ttl (5m) and keeps content until max_bytes evicts it",
        ),
    ),
    ("notifications.", Rule::Cannot("Berth does not send webhooks yet")),
    (
        "redis.",
        Rule::NotNeeded("Berth's metadata is in redb, read without a cache"),
    ),
    ("health.", Rule::NotNeeded("Berth serves /healthz and /readyz")),
    ("reporting.", Rule::Cannot("no Berth equivalent; errors are in its log")),
    (
        "middleware.",
        Rule::Cannot("no Berth equivalent (storage.s3.redirect presigns blob downloads)"),
    ),
    (
        "validation.",
        Rule::NotNeeded("Berth checks every reference of a manifest; validation.sparse relaxes that"),
    ),
    (
        "compatibility.",
        Rule::NotNeeded("Berth never accepts schema 1 manifests"),
    ),
];

/// The result of a conversion.
pub struct Conversion {
    /// Berth's configuration, YAML with a comment naming each key's source.
    pub yaml: String,
    pub notes: Vec<Note>,
}

/// Exit status 0 when the result loads as Berth's configuration, 1 when it is written but
/// does not load yet (the reason is printed last), 2 when the input cannot be read.
pub fn run(args: &ConvertArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let conversion = convert(&text, &args.file)?;
    let loads = berth::config::from_yaml(&conversion.yaml).map(|_| ());
    if args.json {
        let error = loads.as_ref().err().map(ToString::to_string);
        let out = serde_json::json!({"config": conversion.yaml, "notes": conversion.notes, "load_error": error});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(path) = &args.output {
            write_private(path, &conversion.yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        } else {
            print!("{}", conversion.yaml);
            std::io::Write::flush(&mut std::io::stdout())?;
        }
        print_notes(&conversion.notes);
        if let Err(e) = &loads {
            eprintln!("the converted configuration does not load yet: {e}");
        }
    }
    Ok(u8::from(loads.is_err()))
}

/// Write `text` to `path` readable by its owner only: it may hold secrets (S3 keys, passwords).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn print_notes(notes: &[Note]) {
    let count = |o: Outcome| notes.iter().filter(|n| n.outcome == o).count() as u64;
    eprintln!(
        "{} translated, {} not needed by Berth, {} not translated",
        super::count(count(Outcome::Translated), "setting", "settings"),
        count(Outcome::NotNeeded),
        count(Outcome::NotTranslated)
    );
    for n in notes.iter().filter(|n| n.outcome != Outcome::Translated) {
        let label = if n.outcome == Outcome::NotNeeded {
            "not needed"
        } else {
            "NOT TRANSLATED"
        };
        eprintln!("  {label}: {}: {}", n.key, n.why);
    }
}

/// Convert the text of a Distribution configuration read from `source`.
pub fn convert(text: &str, source: &Path) -> anyhow::Result<Conversion> {
    let doc: Value = serde_saphyr::from_str(text).with_context(|| format!("{} is not YAML", source.display()))?;
    let mut leaves = Vec::new();
    flatten("", &doc, &mut leaves);
    let mut out = Output::default();
    for (key, value) in &leaves {
        apply(key, value, &doc, &mut out);
    }
    if doc.pointer("/storage/delete/enabled").is_none() {
        out.note(
            "storage.delete.enabled (unset)",
            Outcome::NotTranslated,
            "Distribution refuses deletes unless it is true; Berth allows them to whom auth.rules grant delete \
             (with auth off: every client): restrict delete with auth.rules",
        );
    }
    Ok(Conversion {
        yaml: out.render(source),
        notes: out.notes,
    })
}

/// Every scalar (and list) under `value` with its dotted key.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Object(_) => out.push((prefix.to_owned(), Value::Null)),
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn rule_for(key: &str) -> Option<&'static Rule> {
    RULES.iter().find_map(|(k, rule)| {
        let hit = if let Some(prefix) = k.strip_suffix('.') {
            key == prefix || key.starts_with(k)
        } else {
            key == *k
        };
        hit.then_some(rule)
    })
}

fn apply(key: &str, value: &Value, doc: &Value, out: &mut Output) {
    match rule_for(key) {
        Some(Rule::To(berth_key)) => out.set(berth_key, scalar(value), key),
        Some(Rule::Special) => special(key, value, doc, out),
        Some(Rule::NotNeeded(why)) => out.note(key, Outcome::NotNeeded, why),
        Some(Rule::Cannot(why)) => out.note(key, Outcome::NotTranslated, why),
        None => out.note(key, Outcome::NotTranslated, "not a Distribution setting Berth knows"),
    }
}

/// The settings whose value changes shape, or that depend on others.
fn special(key: &str, value: &Value, doc: &Value, out: &mut Output) {
    let text = scalar(value);
    match key {
        "log.formatter" => {
            let format = if text == "text" { "text" } else { "json" };
            out.set("log.format", format.to_owned(), key);
        }
        "storage.s3.rootdirectory" => out.set("storage.s3.prefix", text.trim_matches('/').to_owned(), key),
        "storage.s3.secure" if text == "false" => out.note(
            key,
            Outcome::NotTranslated,
            "give storage.s3.endpoint an http:// URL instead",
        ),
        "storage.s3.secure" => out.note(key, Outcome::NotNeeded, "an https:// endpoint is used as such"),
        "storage.delete.enabled" if text == "false" => out.note(
            key,
            Outcome::NotTranslated,
            "Berth always allows deletes to whom the rules grant them: restrict delete with auth.rules",
        ),
        "storage.delete.enabled" => out.note(key, Outcome::NotNeeded, "deletes are always on"),
        "storage.redirect.disable" => {
            if doc.pointer("/storage/s3").is_some() {
                out.set("storage.s3.redirect", (text != "true").to_string(), key);
            } else {
                out.note(key, Outcome::NotNeeded, "redirects apply to object storage only");
            }
        }
        "http.net" if text == "tcp" => out.note(key, Outcome::NotNeeded, "Berth listens on TCP"),
        "http.net" => out.note(key, Outcome::NotTranslated, "Berth listens on TCP only"),
        "http.tls.clientcas" => client_cas(key, value, out),
        "auth.token.realm" => {
            out.set("auth.token.enabled", "true".to_owned(), key);
            out.set("auth.token.realm", text, key);
        }
        _ => proxy(key, &text, doc, out),
    }
}

fn client_cas(key: &str, value: &Value, out: &mut Output) {
    match value.as_array().map(Vec::as_slice) {
        Some([one]) => out.set("http.tls.client_ca", scalar(one), key),
        _ => out.note(
            key,
            Outcome::NotTranslated,
            "Berth takes one PEM file of client CAs: concatenate them and set http.tls.client_ca",
        ),
    }
}

/// `proxy.remoteurl` and its credentials: one `proxy:` entry. Distribution in proxy mode
/// refuses every push; Berth takes pushes beside its caches, and a local repository wins over
/// the mirror for the same name. So names under no prefix (what Docker's registry-mirrors
/// sends) are not served from the mirror until the operator says so, with pushes restricted.
fn proxy(key: &str, text: &str, doc: &Value, out: &mut Output) {
    let field = match key {
        "proxy.remoteurl" => "url",
        "proxy.username" => "username",
        _ => "password",
    };
    if !out.proxy.iter().any(|(k, _, _)| *k == "prefix") {
        let url = doc.pointer("/proxy/remoteurl").map(scalar).unwrap_or_default();
        let prefix = if url.contains("docker.io") {
            "dockerhub"
        } else {
            "mirror"
        };
        out.proxy
            .push(("prefix", prefix.to_owned(), "proxy.remoteurl".to_owned()));
        out.proxy
            .push(("serve_unprefixed", "false".to_owned(), "proxy.remoteurl".to_owned()));
        out.note(
            "proxy (read-only mirror)",
            Outcome::NotTranslated,
            &format!(
                "Distribution's proxy mode serves every name and refuses pushes; Berth serves the mirror under {prefix}/ \
                 (pushes there are refused) and takes pushes elsewhere. For Docker's registry-mirrors (names under no \
                 prefix) set serve_unprefixed: true, and first restrict push with auth (auth.htpasswd and auth.rules \
                 granting anonymous pull only): a pushed repository would otherwise win over the mirror's image of \
                 the same name"
            ),
        );
    }
    out.proxy.push((field, text.to_owned(), key.to_owned()));
    out.note(key, Outcome::Translated, "a proxy: entry");
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Berth keys as they are set, then rendered section by section.
#[derive(Default)]
struct Output {
    /// (Berth key, value, Distribution key)
    keys: Vec<(&'static str, String, String)>,
    /// (key of the one `proxy:` entry, value, Distribution key)
    proxy: Vec<(&'static str, String, String)>,
    notes: Vec<Note>,
}

impl Output {
    fn set(&mut self, berth_key: &'static str, value: String, from: &str) {
        self.keys.retain(|(k, _, _)| *k != berth_key);
        self.keys.push((berth_key, value, from.to_owned()));
        if !self.notes.iter().any(|n| n.key == from) {
            self.note(from, Outcome::Translated, &format!("as {berth_key}"));
        }
    }

    fn note(&mut self, key: &str, outcome: Outcome, why: &str) {
        self.notes.push(Note {
            key: key.to_owned(),
            outcome,
            why: why.to_owned(),
        });
    }

    fn render(&self, source: &Path) -> String {
        let mut yaml = format!(
            "# Converted by `berth config convert` from CNCF Distribution's {}.\n# Every key and its default: config.example.yml.\n",
            source.display()
        );
        let mut sorted: Vec<&(&str, String, String)> = self.keys.iter().collect();
        // Group by section and subsection, in the order the Berth keys were first set.
        sorted.sort_by_key(|(k, _, _)| section_rank(k));
        let mut open: Vec<&str> = Vec::new();
        for (key, value, from) in sorted {
            let parts: Vec<&str> = key.split('.').collect();
            let (leaf, parents) = parts.split_last().expect("keys are not empty");
            let common = open.iter().zip(parents).take_while(|(a, b)| a == b).count();
            for (depth, part) in parents.iter().enumerate().skip(common) {
                let _ = writeln!(yaml, "{}{part}:", "  ".repeat(depth));
            }
            open = parents.to_vec();
            let _ = writeln!(yaml, "{}{leaf}: {}  # {from}", "  ".repeat(parents.len()), quote(value));
        }
        if self.proxy.iter().any(|(k, _, _)| *k == "url") {
            yaml.push_str("proxy:\n");
            for (i, (key, value, from)) in self.proxy.iter().enumerate() {
                let lead = if i == 0 { "  - " } else { "    " };
                let _ = writeln!(yaml, "{lead}{key}: {}  # {from}", quote(value));
            }
        }
        if self.keys.iter().any(|(k, _, _)| k.starts_with("storage.s3"))
            && !self.keys.iter().any(|(k, _, _)| *k == "storage.root")
        {
            yaml.push_str("# storage.root (default ./data) holds meta.redb beside the bucket: set it.\n");
        }
        yaml
    }
}

/// Keys sort by the position of their section in Berth's configuration.
fn section_rank(key: &str) -> (usize, String) {
    const ORDER: [&str; 6] = ["http", "storage", "log", "gc", "auth", "validation"];
    let section = key.split('.').next().unwrap_or_default();
    let parent = key.rsplit_once('.').map_or("", |(p, _)| p).to_owned();
    (ORDER.iter().position(|s| *s == section).unwrap_or(ORDER.len()), parent)
}

/// A YAML scalar: booleans and numbers as they are, everything else double-quoted (JSON's
/// string syntax is YAML's).
fn quote(value: &str) -> String {
    if matches!(value, "true" | "false") || (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())) {
        value.to_owned()
    } else {
        serde_json::to_string(value).expect("a string serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debians_shipped_configuration_converts() {
        let text = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nauth:\n  htpasswd:\n    realm: basic-realm\n    path: /etc/docker/registry\nhealth:\n  storagedriver:\n    enabled: true\n";
        let c = convert(text, Path::new("config.yml")).unwrap();
        assert!(c.yaml.contains("http:\n  addr: \":5000\"  # http.addr\n"), "{}", c.yaml);
        assert!(
            c.yaml.contains("storage:\n  root: \"/var/lib/docker-registry\""),
            "{}",
            c.yaml
        );
        assert!(
            c.yaml
                .contains("auth:\n  realm: \"basic-realm\"  # auth.htpasswd.realm\n  htpasswd:\n    path:"),
            "{}",
            c.yaml
        );
        let headers = c.notes.iter().find(|n| n.key.starts_with("http.headers")).unwrap();
        assert_eq!(headers.outcome, Outcome::NotTranslated);
        berth::config::from_yaml(&c.yaml).unwrap();
    }

    #[test]
    fn unknown_keys_are_reported_not_dropped() {
        let c = convert("http:\n  addr: :5000\nfrobnicate: 1\n", Path::new("c.yml")).unwrap();
        let n = c.notes.iter().find(|n| n.key == "frobnicate").unwrap();
        assert_eq!(n.outcome, Outcome::NotTranslated);
    }
}
