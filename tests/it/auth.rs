//! Authentication and authorization over real HTTP: htpasswd with Basic, failed-login limits,
//! every kind of rule and its denials (401 `UNAUTHORIZED` for unknown callers, 403 `DENIED`
//! for known ones), the catalog filter, mounts, the admin role, Bearer tokens Berth issues
//! and tokens of an external issuer, and `docker login` with both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::clients::{docker_env, docker_round_trip};
use crate::harness::{Berth, client, error_codes, random_bytes, sha256};
use crate::pki::Ca;
use crate::tls::{DockerTrust, Setup, start_with};

/// An htpasswd line as `htpasswd -B` writes it (cost 4 to keep tests fast).
pub fn entry(user: &str, password: &str) -> String {
    let hash = bcrypt::hash_with_result(password, 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    format!("{user}:{hash}\n")
}

const USERS: &[(&str, &str)] = &[
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("carol", "carol-pw"),
    ("dave", "dave-pw"),
];

const RULES: &str = r#"  groups:
    team-a: [alice, bob]
    ops: [carol]
  admins:
    groups: [ops]
  rules:
    - repositories: ["team-a/**"]
      groups: [team-a]
      actions: [pull, push]
    - repositories: ["team-a/**"]
      users: [alice]
      actions: [delete]
    - repositories: ["public/**"]
      anonymous: true
      actions: [pull]
    - repositories: ["public/**"]
      users: [carol]
      actions: [push]
"#;

pub struct Site {
    dir: tempfile::TempDir,
    pub htpasswd: PathBuf,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        let text: String = USERS.iter().map(|(u, p)| entry(u, p)).collect();
        std::fs::write(&htpasswd, text).unwrap();
        Site { dir, htpasswd }
    }

    /// A config with htpasswd and `more` under `auth:`.
    pub fn config(&self, more: &str) -> PathBuf {
        let path = self.dir.path().join("config.yml");
        let yaml = format!("auth:\n  htpasswd:\n    path: {}\n{more}", self.htpasswd.display());
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

pub fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

/// A request builder with `user`'s Basic credentials (None: anonymous).
fn as_user(req: reqwest::RequestBuilder, user: Option<&str>) -> reqwest::RequestBuilder {
    match user {
        Some(u) => req.basic_auth(u, Some(password(u))),
        None => req,
    }
}

async fn status(berth: &Berth, method: reqwest::Method, path: &str, user: Option<&str>) -> u16 {
    let req = client().request(method, berth.url(path));
    as_user(req, user).send().await.unwrap().status().as_u16()
}

/// Push a blob as `user`; the status.
async fn push_as(berth: &Berth, repo: &str, bytes: &[u8], user: Option<&str>) -> reqwest::Response {
    let url = berth.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes)));
    as_user(client().post(url), user)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

/// Push a one-layer image as `user`; the manifest digest.
async fn image_as(berth: &Berth, repo: &str, tag: &str, user: &str) -> String {
    let layer = random_bytes(2000, repo.len() as u64);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    for blob in [&layer[..], &config[..]] {
        assert_eq!(push_as(berth, repo, blob, Some(user)).await.status(), 201);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    let resp = as_user(
        client().put(berth.url(&format!("/v2/{repo}/manifests/{tag}"))),
        Some(user),
    )
    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
    .body(manifest.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    sha256(&manifest)
}

#[tokio::test]
async fn basic_auth_challenges_checks_passwords_and_never_logs_them() {
    let site = Site::new();
    let berth = start_with(&site.config(""));
    let resp = client().get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"berth\"");
    assert_eq!(error_codes(resp).await, ["UNAUTHORIZED"]);
    let wrong = client()
        .get(berth.url("/v2/"))
        .basic_auth("alice", Some("hunter2-wrong-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    let unknown = client()
        .get(berth.url("/v2/"))
        .basic_auth("mallory", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert_eq!(status(&berth, reqwest::Method::GET, "/v2/", Some("alice")).await, 200);
    // With no rules, every user may do everything, and anonymous callers nothing.
    let resp = push_as(&berth, "any/repo", b"layer", Some("dave")).await;
    assert_eq!(resp.status(), 201);
    let digest = sha256(b"layer");
    let path = format!("/v2/any/repo/blobs/{digest}");
    assert_eq!(status(&berth, reqwest::Method::GET, &path, None).await, 401);
    assert_eq!(status(&berth, reqwest::Method::GET, &path, Some("bob")).await, 200);
    assert_eq!(status(&berth, reqwest::Method::DELETE, &path, Some("bob")).await, 202);
    // Failed logins are logged with user and source; passwords never are.
    let log = berth.log();
    assert!(log.contains("failed login"), "{log}");
    assert!(log.contains("mallory") && log.contains("127.0.0.1"), "{log}");
    for (_, pw) in USERS {
        assert!(!log.contains(pw), "a password reached the log");
    }
    assert!(!log.contains("hunter2-wrong-secret"), "a password reached the log");
}

#[tokio::test]
async fn failed_logins_are_limited_per_source() {
    let site = Site::new();
    let berth = start_with(&site.config("  login_failures_per_minute: 3\n  token:\n    enabled: true\n"));
    for _ in 0..3 {
        let resp = client()
            .get(berth.url("/v2/"))
            .basic_auth("alice", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    // Past the limit even the right password is refused until the minute is over, and the
    // answer says how long that is: the rest of the source's minute.
    let resp = client()
        .get(berth.url("/v2/"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    let detail = format!("too many failed logins from this address; try again in {retry} s");
    assert_eq!(body["errors"][0]["detail"], detail.as_str());
    // So does the token endpoint, which checks the same passwords.
    let resp = client()
        .get(berth.url("/auth/token?service=berth"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(error_codes(resp).await, ["TOOMANYREQUESTS"]);
}

#[tokio::test]
async fn rules_grant_by_user_group_and_glob_and_deny_the_rest() {
    use reqwest::Method;
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    // team-a members push; others are denied (403 for known users, 401 for anonymous).
    let web = image_as(&berth, "team-a/app/web", "v1", "bob").await;
    let resp = push_as(&berth, "team-a/app/web", b"x", Some("dave")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_codes(resp).await, ["DENIED"]);
    let resp = push_as(&berth, "team-a/app/web", b"x", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_codes(resp).await, ["UNAUTHORIZED"]);
    // carol may push to public/**; anyone, logged in or not, may pull from it.
    let public = image_as(&berth, "public/tools", "latest", "carol").await;
    let path = "/v2/public/tools/manifests/latest";
    assert_eq!(status(&berth, Method::GET, path, None).await, 200);
    assert_eq!(status(&berth, Method::GET, path, Some("dave")).await, 200);
    assert_eq!(
        status(
            &berth,
            Method::DELETE,
            &format!("/v2/public/tools/manifests/{public}"),
            Some("carol")
        )
        .await,
        403
    );
    assert_eq!(
        status(&berth, Method::GET, "/v2/team-a/app/web/manifests/v1", None).await,
        401
    );
    assert_eq!(
        status(&berth, Method::GET, "/v2/team-a/app/web/manifests/v1", Some("carol")).await,
        403
    );
    assert_eq!(
        status(&berth, Method::GET, "/v2/team-a/app/web/tags/list", Some("bob")).await,
        200
    );
    // `*` stays within one path component.
    let resp = push_as(&berth, "public-not/x", b"x", Some("carol")).await;
    assert_eq!(resp.status(), 403);
    // Delete: alice only.
    let web_path = format!("/v2/team-a/app/web/manifests/{web}");
    assert_eq!(status(&berth, Method::DELETE, &web_path, Some("bob")).await, 403);
    assert_eq!(status(&berth, Method::DELETE, &web_path, Some("alice")).await, 202);
    // The catalog lists what the caller may pull; anonymous callers must log in.
    let catalog = |user: Option<&'static str>| {
        let berth = &berth;
        async move {
            let v: Value = as_user(client().get(berth.url("/v2/_catalog")), user)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["repositories"].clone()
        }
    };
    assert_eq!(catalog(Some("bob")).await, json!(["public/tools", "team-a/app/web"]));
    assert_eq!(catalog(Some("dave")).await, json!(["public/tools"]));
    assert_eq!(status(&berth, Method::GET, "/v2/_catalog", None).await, 401);
    let paged = as_user(client().get(berth.url("/v2/_catalog?n=1")), Some("dave"))
        .send()
        .await
        .unwrap();
    assert_eq!(paged.status(), 200);
    // A mount needs pull on the source: carol cannot mount team-a's layer into public (the
    // mount becomes an ordinary upload), bob can mount it within team-a.
    let layer = sha256(&random_bytes(2000, "team-a/app/web".len() as u64));
    let mount = |repo: &str, from: &str, user: &'static str| {
        let url = berth.url(&format!("/v2/{repo}/blobs/uploads/?mount={layer}&from={from}"));
        as_user(client().post(url), Some(user)).send()
    };
    assert_eq!(
        mount("public/stolen", "team-a/app/web", "carol")
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        status(
            &berth,
            Method::GET,
            &format!("/v2/public/stolen/blobs/{layer}"),
            Some("carol")
        )
        .await,
        404
    );
    assert_eq!(
        mount("team-a/app/api", "team-a/app/web", "bob").await.unwrap().status(),
        201
    );
    // A mount without `from` could reach any repository: with authentication on, it uploads.
    let url = berth.url(&format!("/v2/team-a/other/blobs/uploads/?mount={layer}"));
    let resp = as_user(client().post(url), Some("bob")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn the_admin_api_needs_the_admin_role() {
    use reqwest::Method;
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    // Refusals say which setting grants the role, and how the CLI sends credentials.
    let resp = client().post(berth.url("/admin/gc?dry_run=true")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    let detail = body["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("auth.admins") && detail.contains("BERTH_ADMIN_USER"),
        "{detail}"
    );
    let resp = as_user(client().post(berth.url("/admin/gc?dry_run=true")), Some("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    let detail = body["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("alice") && detail.contains("auth.admins"), "{detail}");
    assert_eq!(
        status(&berth, Method::POST, "/admin/gc?dry_run=true", Some("carol")).await,
        202
    );
    assert_eq!(status(&berth, Method::GET, "/admin/usage", Some("carol")).await, 200);
    assert_eq!(status(&berth, Method::GET, "/admin/usage", Some("bob")).await, 403);

    // `berth du --url` sends the admin credentials from the environment, as gc and fsck do,
    // and without them says which variables to set.
    let du = |creds: Option<(&str, &str)>| {
        let mut cmd = berth.cli();
        cmd.args(["du", "--json", "--url", &berth.base]);
        if let Some((user, pw)) = creds {
            cmd.env("BERTH_ADMIN_USER", user).env("BERTH_ADMIN_PASSWORD", pw);
        }
        cmd.output().unwrap()
    };
    let refused = du(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("BERTH_ADMIN_USER") && stderr.contains("auth.admins"),
        "{stderr}"
    );
    let ok = du(Some(("carol", password("carol"))));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let usage: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(usage["repositories"].is_array(), "{usage}");
}

#[tokio::test]
async fn the_htpasswd_file_is_reloaded_when_it_changes() {
    let site = Site::new();
    let berth = start_with(&site.config(""));
    let eve = || client().get(berth.url("/v2/")).basic_auth("eve", Some("eve-pw")).send();
    assert_eq!(eve().await.unwrap().status(), 401);
    let mut text = std::fs::read_to_string(&site.htpasswd).unwrap();
    text.push_str(&entry("eve", "eve-pw"));
    crate::pki::write_atomically(&site.htpasswd, &text);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while eve().await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < deadline, "eve never became a user");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /auth/token` as `user` for `scopes`; the token.
pub async fn token(berth: &Berth, user: Option<&str>, scopes: &[&str]) -> String {
    let scopes = scopes.join("&scope=");
    let url = berth.url(&format!("/auth/token?service=berth&scope={scopes}"));
    let resp = as_user(client().get(url), user).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["token"], v["access_token"]);
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    v["token"].as_str().unwrap().to_owned()
}

async fn bearer(berth: &Berth, method: reqwest::Method, path: &str, token: &str) -> reqwest::Response {
    client()
        .request(method, berth.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn berth_issues_tokens_that_grant_what_the_rules_allow() {
    use reqwest::Method;
    let site = Site::new();
    let berth = start_with(&site.config(&format!("  token:\n    enabled: true\n{RULES}")));
    let resp = client().get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let realm = format!("Bearer realm=\"{}/auth/token\",service=\"berth\"", berth.base);
    assert_eq!(resp.headers()["www-authenticate"], realm.as_str());
    // A push without a token: the challenge names the scope it needs.
    let resp = client()
        .post(berth.url("/v2/team-a/x/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        format!("{realm},scope=\"repository:team-a/x:pull,push\"").as_str()
    );
    // bob asks for pull,push on team-a/x and gets both.
    let t = token(&berth, Some("bob"), &["repository:team-a/x:pull,push"]).await;
    let blob = random_bytes(500, 1);
    let url = format!("/v2/team-a/x/blobs/uploads/?digest={}", sha256(&blob));
    let resp = client()
        .post(berth.url(&url))
        .bearer_auth(&t)
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(bearer(&berth, Method::GET, "/v2/", &t).await.status(), 200);
    // The token grants only its repository.
    let resp = bearer(&berth, Method::GET, "/v2/team-a/y/tags/list", &t).await;
    assert_eq!(resp.status(), 401, "a new token could grant it");
    // A pull-only token cannot push: 401 with the scope to ask for.
    let pull = token(&berth, Some("bob"), &["repository:team-a/x:pull"]).await;
    let resp = client()
        .post(berth.url("/v2/team-a/x/blobs/uploads/"))
        .bearer_auth(&pull)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("repository:team-a/x:pull,push")
    );
    // dave asks for team-a and is granted nothing: denied, since no token could help.
    let d = token(&berth, Some("dave"), &["repository:team-a/x:pull"]).await;
    let resp = bearer(
        &berth,
        Method::GET,
        &format!("/v2/team-a/x/blobs/{}", sha256(&blob)),
        &d,
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(error_codes(resp).await, ["DENIED"]);
    // Anonymous tokens carry the anonymous grants.
    image_as_token(&berth, "carol").await;
    let anon = token(&berth, None, &["repository:public/t:pull", "repository:team-a/x:pull"]).await;
    assert_eq!(
        bearer(&berth, Method::GET, "/v2/public/t/tags/list", &anon)
            .await
            .status(),
        200
    );
    assert_eq!(
        bearer(&berth, Method::GET, "/v2/team-a/x/tags/list", &anon)
            .await
            .status(),
        401
    );
    // Wrong password at the token endpoint; forged and garbage tokens.
    let resp = client()
        .get(berth.url("/auth/token?service=berth&scope=repository:team-a/x:pull"))
        .basic_auth("bob", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let mut forged = t.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert_eq!(bearer(&berth, Method::GET, "/v2/", &forged).await.status(), 401);
    assert_eq!(bearer(&berth, Method::GET, "/v2/", "garbage").await.status(), 401);
    assert!(!berth.log().contains(&t), "a token reached the log");
}

/// A mount with a token that lacks pull on the source: when the rules would grant it, 401 with
/// a challenge naming both scopes (so a client fetches the token that lets the mount happen,
/// as with CNCF Distribution); when they would not, the mount quietly becomes an upload.
#[tokio::test]
async fn a_mount_asks_for_a_token_with_the_source_scope_when_one_could_carry_it() {
    let site = Site::new();
    let berth = start_with(&site.config(&format!("  token:\n    enabled: true\n{RULES}")));
    let realm = format!("Bearer realm=\"{}/auth/token\",service=\"berth\"", berth.base);
    let layer = random_bytes(300, 77);
    let digest = sha256(&layer);
    let t = token(&berth, Some("bob"), &["repository:team-a/src:pull,push"]).await;
    let url = berth.url(&format!("/v2/team-a/src/blobs/uploads/?digest={digest}"));
    let resp = client()
        .post(url)
        .bearer_auth(&t)
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let mount = |user_token: String, to: &'static str| {
        let url = berth.url(&format!("/v2/{to}/blobs/uploads/?mount={digest}&from=team-a/src"));
        async move { client().post(url).bearer_auth(user_token).send().await.unwrap() }
    };
    // bob's token for the target only: 401, asking for both scopes.
    let narrow = token(&berth, Some("bob"), &["repository:team-a/dst:pull,push"]).await;
    let resp = mount(narrow, "team-a/dst").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        format!("{realm},scope=\"repository:team-a/dst:pull,push repository:team-a/src:pull\"").as_str()
    );
    // The token that challenge asks for mounts.
    let both = token(
        &berth,
        Some("bob"),
        &["repository:team-a/dst:pull,push repository:team-a/src:pull"],
    )
    .await;
    let resp = mount(both, "team-a/dst").await;
    assert_eq!(resp.status(), 201, "mounted with the wider token");
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    // carol may push to public but never pull team-a: no token could carry the source, so the
    // mount becomes an upload, revealing nothing about team-a.
    let carol = token(
        &berth,
        Some("carol"),
        &["repository:public/x:pull,push repository:team-a/src:pull"],
    )
    .await;
    let resp = mount(carol, "public/x").await;
    assert_eq!(resp.status(), 202, "an upload instead");
}

/// carol pushes a tag to public/t with Basic credentials (accepted beside tokens).
async fn image_as_token(berth: &Berth, user: &str) {
    image_as(berth, "public/t", "v1", user).await;
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(aud: &str, exp: u64, repo: &str, actions: &[&str]) -> Value {
    json!({
        "iss": "https://issuer.example", "sub": "robot", "aud": aud, "exp": exp, "nbf": now() - 5,
        "iat": now(), "jti": "1",
        "access": [{"type": "repository", "name": repo, "actions": actions}],
    })
}

fn external_config(dir: &Path, key_line: &str) -> PathBuf {
    let path = dir.join("config.yml");
    let yaml = format!(
        "auth:\n  token:\n    realm: https://issuer.example/token\n    service: registry.example\n    issuer: https://issuer.example\n    {key_line}\n"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn tokens_of_an_external_issuer_are_verified_by_public_key_and_by_jwks() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    // An EC P-256 issuer, by public key.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = dir.path().join("issuer.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let berth = start_with(&external_config(
        dir.path(),
        &format!("public_key: {}", public.display()),
    ));
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let mint = |claims: &Value| jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &signing).unwrap();
    let resp = client().get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"https://issuer.example/token\",service=\"registry.example\""
    );
    let good = mint(&claims("registry.example", now() + 300, "robots/r", &["pull", "push"]));
    let blob = random_bytes(300, 3);
    let url = format!("/v2/robots/r/blobs/uploads/?digest={}", sha256(&blob));
    let resp = client()
        .post(berth.url(&url))
        .bearer_auth(&good)
        .body(blob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let elsewhere = mint(&claims("other.example", now() + 300, "robots/r", &["pull"]));
    assert_eq!(
        bearer(&berth, Method::GET, "/v2/robots/r/tags/list", &elsewhere)
            .await
            .status(),
        401
    );
    let expired = mint(&claims("registry.example", now() - 120, "robots/r", &["pull"]));
    assert_eq!(
        bearer(&berth, Method::GET, "/v2/robots/r/tags/list", &expired)
            .await
            .status(),
        401
    );
    // The issuer's grants rule: pull-only cannot delete, and the answer is a 401 so that the
    // client can ask the issuer for more.
    let pull = mint(&claims("registry.example", now() + 300, "robots/r", &["pull"]));
    let resp = bearer(
        &berth,
        Method::DELETE,
        "/v2/robots/r/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        &pull,
    )
    .await;
    assert_eq!(resp.status(), 401);
    // Berth does not issue tokens here.
    assert_eq!(
        client().get(berth.url("/auth/token")).send().await.unwrap().status(),
        404
    );
    drop(berth);

    // An Ed25519 issuer, by JWKS (key chosen by kid).
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let berth = start_with(&external_config(dir.path(), &format!("jwks: {}", jwks_path.display())));
    let signing = EncodingKey::from_ed_der(pkcs8.as_ref());
    let mint = |kid: &str| {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &claims("registry.example", now() + 300, "robots/r", &["pull"]),
            &signing,
        )
        .unwrap()
    };
    let resp = bearer(&berth, Method::GET, "/v2/robots/r/tags/list", &mint("k1")).await;
    assert_eq!(resp.status(), 404, "authorized; the repository does not exist here");
    assert_eq!(error_codes(resp).await, ["NAME_UNKNOWN"]);
    assert_eq!(
        bearer(&berth, Method::GET, "/v2/robots/r/tags/list", &mint("k2"))
            .await
            .status(),
        401
    );
}

/// Log in with `docker login` (its own config directory), push and pull, log out.
fn docker_login_round_trip(host: &str, repo: &str) {
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().to_str().unwrap();
    let env = [("DOCKER_CONFIG", dir)];
    let wrong = std::process::Command::new("docker")
        .args(["login", host, "-u", "alice", "--password-stdin"])
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"not-her-password\n")?;
            child.wait_with_output()
        })
        .expect("the Docker engine must be installed and running");
    assert!(!wrong.status.success(), "docker login with a wrong password succeeded");
    let login = std::process::Command::new("docker")
        .args(["login", host, "-u", "alice", "--password-stdin"])
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"alice-pw\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        login.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    docker_round_trip(&format!("{host}/{repo}:v1"), &env);
    docker_env(&["logout", host], &env);
}

#[tokio::test]
async fn docker_login_push_and_pull_with_htpasswd_over_tls() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let site = Site::new();
    let auth = format!("auth:\n  htpasswd:\n    path: {}\n{RULES}", site.htpasswd.display());
    let berth = start_with(&setup.config("", &auth));
    let _trust = DockerTrust::new(&berth.host, &ca.pem);
    docker_login_round_trip(&berth.host, "team-a/docker-basic");
}

#[tokio::test]
async fn docker_login_push_and_pull_through_berths_token_flow() {
    let site = Site::new();
    let berth = start_with(&site.config(&format!("  token:\n    enabled: true\n{RULES}")));
    docker_login_round_trip(&berth.host, "team-a/docker-token");
    assert!(berth.log().contains("/auth/token"), "docker used the token endpoint");
}

/// `berth gc --url <berth> --dry-run` with the admin credentials `user` (None: none).
fn remote_gc(berth: &Berth, user: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["gc", "--dry-run", "--url", &berth.base]);
    cmd.env_remove("BERTH_ADMIN_USER").env_remove("BERTH_ADMIN_PASSWORD");
    if let Some(user) = user {
        cmd.env("BERTH_ADMIN_USER", user)
            .env("BERTH_ADMIN_PASSWORD", password(user));
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn the_cli_runs_admin_jobs_with_credentials_from_the_environment() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let out = remote_gc(&berth, Some("carol"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = remote_gc(&berth, Some("bob"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = remote_gc(&berth, None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!berth.log().contains("carol-pw"), "a password reached the log");
}
