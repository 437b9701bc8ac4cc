//! An htpasswd file of bcrypt entries (`user:$2y$...`, as `htpasswd -B` writes), reloaded when
//! it changes. Entries of other hash types are refused at load (and logged): they are not
//! safe to accept.
//!
//! Checking a bcrypt hash costs milliseconds by design, and Basic clients send credentials on
//! every request, so a success is remembered (by a SHA-256 of user and password) until the
//! file changes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::AuthError;

/// How often, at most, the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);
/// Remembered successes before the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    users: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
    remembered: HashSet<[u8; 32]>,
}

impl Htpasswd {
    /// Load `path`; a missing or unreadable file is an error that names it.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let (users, stamp) = read(path)?;
        tracing::info!(path = %path.display(), users = users.len(), "htpasswd loaded");
        Ok(Htpasswd {
            path: path.to_owned(),
            state: Mutex::new(State {
                users,
                stamp,
                checked: Instant::now(),
                remembered: HashSet::new(),
            }),
        })
    }

    /// Re-read the file if it changed (keeping the old entries if it cannot be read).
    pub fn reload_if_changed(&self, force: bool) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && state.checked.elapsed() < RECHECK {
            return;
        }
        state.checked = Instant::now();
        if !force && stamp(&self.path) == state.stamp {
            return;
        }
        match read(&self.path) {
            Ok((users, stamp)) => {
                tracing::info!(path = %self.path.display(), users = users.len(), "htpasswd reloaded");
                state.users = users;
                state.stamp = stamp;
                state.remembered.clear();
            }
            Err(e) => tracing::error!(error = %e, "htpasswd reload failed; keeping the previous entries"),
        }
    }

    /// Whether the file (as last read) has an entry for `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.reload_if_changed(false);
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.users.contains_key(user)
    }

    /// `user`'s entry (its bcrypt hash) as last read, for a keyed fingerprint that ends a web
    /// session when the entry changes. The hash itself never leaves `auth`.
    pub fn hash_of(&self, user: &str) -> Option<String> {
        self.reload_if_changed(false);
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.users.get(user).cloned()
    }

    /// Whether `password` is `user`'s. Blocking: bcrypt is slow on purpose.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        self.reload_if_changed(false);
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let hash = {
            let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(hash) = state.users.get(user) else {
                return false;
            };
            if state.remembered.contains(&key) {
                return true;
            }
            hash.clone()
        };
        let ok = bcrypt::verify(password, &hash).unwrap_or(false);
        if ok {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.remembered.len() >= MAX_REMEMBERED {
                state.remembered.clear();
            }
            // Only if the entry is still the one checked (the file may have been reloaded).
            if state.users.get(user) == Some(&hash) {
                state.remembered.insert(key);
            }
        }
        ok
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

type Users = HashMap<String, String>;

fn read(path: &Path) -> Result<(Users, Option<(SystemTime, u64)>), AuthError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let (users, skipped) = parse(&text, path);
    if users.is_empty() {
        let why = if skipped.is_empty() {
            "it has no entries".to_owned()
        } else {
            let lines: Vec<String> = skipped.iter().map(|(n, kind)| format!("line {n}: {kind}")).collect();
            format!("none of its entries is usable ({})", lines.join(", "))
        };
        return Err(AuthError::File {
            path: path.display().to_string(),
            message: format!("{why}; Berth accepts user:bcrypt entries only, as `htpasswd -B` writes them"),
        });
    }
    Ok((users, stamp))
}

/// The bcrypt entries of an htpasswd file, and the lines skipped (with a warning each): their
/// numbers and what they hold.
fn parse(text: &str, path: &Path) -> (Users, Vec<(usize, &'static str)>) {
    let mut users = HashMap::new();
    let mut skipped = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() && is_bcrypt(hash) => {
                users.insert(user.to_owned(), hash.to_owned());
            }
            entry => {
                let kind = entry.map_or("not user:hash", |(_, hash)| scheme(hash));
                tracing::warn!(
                    path = %path.display(),
                    line = n + 1,
                    kind,
                    "htpasswd line skipped: only user:bcrypt entries (htpasswd -B) are accepted"
                );
                skipped.push((n + 1, kind));
            }
        }
    }
    (users, skipped)
}

/// What a hash that is not bcrypt is, for the message that refuses it.
fn scheme(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") || hash.starts_with("$1$") {
        "an MD5 hash (htpasswd -m)"
    } else if hash.starts_with("{SHA}") {
        "a SHA-1 hash (htpasswd -s)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-256/512 crypt hash"
    } else if hash.starts_with("$2") {
        "a malformed bcrypt hash"
    } else {
        "plain text or an unknown hash (htpasswd -p)"
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, password: &str) -> String {
        let hash = bcrypt::hash_with_result(password, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        format!("{user}:{hash}\n")
    }

    #[test]
    fn verifies_bcrypt_entries_and_skips_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let text = entry("alice", "s3cret") + "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n# comment\n";
        std::fs::write(&path, text).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(h.verify("alice", "s3cret"), "remembered success");
        assert!(!h.verify("alice", "wrong"));
        assert!(!h.verify("bob", "password"));
        assert!(!h.verify("carol", "s3cret"));
    }

    #[test]
    fn reload_replaces_entries_and_forgets_successes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, entry("alice", "one")).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.verify("alice", "one"));
        std::fs::write(&path, entry("alice", "two") + &entry("bob", "three")).unwrap();
        h.reload_if_changed(true);
        assert!(!h.verify("alice", "one"));
        assert!(h.verify("alice", "two"));
        assert!(h.verify("bob", "three"));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = Htpasswd::open(Path::new("/nonexistent/htpasswd")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/htpasswd"), "{e}");
    }

    #[test]
    fn a_file_without_a_usable_entry_is_refused_naming_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            "# only old hashes\nbob:$apr1$abc$def\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
        )
        .unwrap();
        let e = Htpasswd::open(&path).unwrap_err().to_string();
        for part in [
            "line 2: an MD5 hash (htpasswd -m)",
            "line 3: a SHA-1 hash (htpasswd -s)",
            "htpasswd -B",
        ] {
            assert!(e.contains(part), "{e}");
        }
        std::fs::write(&path, "\n").unwrap();
        let e = Htpasswd::open(&path).unwrap_err().to_string();
        assert!(e.contains("no entries"), "{e}");
    }
}
