//! `docker search`: `GET /v1/_ping` and `GET /v1/search` over HTTP (substring matching, the `n`
//! limit and its refusals, descriptions from the newest tagged manifest's annotation or its
//! config's label, empty results, results filtered to what the caller may pull, anonymous
//! callers as the rules have them, the challenges of 401s), the catalog's `q`, and the real
//! Docker CLI searching with authentication off, after `docker login` with htpasswd (over TLS),
//! and through Berth's token flow.
//!
//! What the Docker engine does, as these tests observe it: it pings `/v1/_ping` (over HTTPS
//! first, then plain HTTP for an insecure registry) without credentials and ignores the status,
//! then sends `/v1/search?q=<term>&n=<limit>` with the logged-in user's Basic credentials, even
//! when the registry's challenge is Bearer: it asks a token service for
//! `registry:catalog:search` only when `docker login` left an identity token (a refresh
//! token), which Berth's token endpoint does not hand out.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::api_fixtures::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, assert_error, desc, header, to_bytes};
use crate::auth::{Site, password, token};
use crate::clients::docker_env;
use crate::harness::{Berth, client, next_millisecond, push_blob, sha256};
use crate::pki::{Ca, https_client};
use crate::tls::{DockerTrust, Setup, start_with};

const DESCRIPTION: &str = "org.opencontainers.image.description";

/// carol pushes anywhere; team-a (alice, bob) pulls team-a/**; anyone pulls public/**.
const RULES: &str = r#"  groups:
    team-a: [alice, bob]
  rules:
    - repositories: ["**"]
      users: [carol]
      actions: [pull, push]
    - repositories: ["team-a/**"]
      groups: [team-a]
      actions: [pull]
    - repositories: ["public/**"]
      anonymous: true
      actions: [pull]
"#;

/// Where, and as whom, the helpers below push and search.
struct Conn {
    client: reqwest::Client,
    base: String,
    user: Option<&'static str>,
}

impl Conn {
    fn new(berth: &Berth, user: Option<&'static str>) -> Conn {
        Conn {
            client: client(),
            base: berth.base.clone(),
            user,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match self.user {
            Some(user) => req.basic_auth(user, Some(password(user))),
            None => req,
        }
    }

    /// Push `bytes` to `repo`; its descriptor, as `media_type`.
    async fn blob(&self, repo: &str, media_type: &str, bytes: &[u8]) -> Value {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes));
        let resp = self
            .request(reqwest::Method::POST, &path)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push blob: {}", resp.text().await.unwrap());
        desc(media_type, &sha256(bytes), bytes.len())
    }

    /// PUT a manifest under `reference`, or under its digest when `None`.
    async fn manifest(&self, repo: &str, reference: Option<&str>, media_type: &str, body: &[u8]) {
        let digest = sha256(body);
        let path = format!("/v2/{repo}/manifests/{}", reference.unwrap_or(&digest));
        let resp = self
            .request(reqwest::Method::PUT, &path)
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push manifest: {}", resp.text().await.unwrap());
    }

    /// Push an image to `repo` (under `reference`, or by digest) whose manifest has the
    /// description `annotation` and whose config has the description label `label`; the
    /// manifest bytes.
    async fn image(
        &self,
        repo: &str,
        reference: Option<&str>,
        annotation: Option<&str>,
        label: Option<&str>,
    ) -> Vec<u8> {
        let labels = label.map(|l| json!({DESCRIPTION: l}));
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []}, "repo": repo,
            "annotation": annotation,
        });
        let config = self.blob(repo, OCI_CONFIG, &to_bytes(&config)).await;
        let layer = self.blob(repo, OCI_LAYER, format!("layer of {repo}").as_bytes()).await;
        let mut manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        if let Some(a) = annotation {
            manifest["annotations"] = json!({DESCRIPTION: a});
        }
        let body = to_bytes(&manifest);
        self.manifest(repo, reference, OCI_MANIFEST, &body).await;
        body
    }

    /// `GET <path>` (a search or a catalog page); the response.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path).send().await.unwrap()
    }

    /// `GET /v1/search?<query>`, which must answer 200; the body.
    async fn search(&self, query: &str) -> Value {
        let resp = self.get(&format!("/v1/search?{query}")).await;
        assert_eq!(resp.status(), 200, "search {query}: {}", resp.text().await.unwrap());
        assert_eq!(header(&resp, "content-type"), "application/json");
        resp.json().await.unwrap()
    }

    /// The names a search for `query` returns.
    async fn names(&self, query: &str) -> Vec<String> {
        names(&self.search(query).await)
    }
}

fn names(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// One search result as Berth writes it.
fn result(name: &str, description: &str) -> Value {
    json!({"name": name, "description": description, "star_count": 0, "is_official": false, "is_automated": false})
}

#[tokio::test]
async fn search_matches_name_substrings_case_insensitively_with_descriptions() {
    let berth = Berth::start();
    let c = Conn::new(&berth, None);
    c.image("team/web-app", Some("v1"), Some("The web app"), None).await;
    c.image("apps/store", Some("latest"), None, Some("A store, from its label"))
        .await;
    c.image("tools/map", Some("1.0"), None, None).await;
    push_blob(&berth, "unrelated/db", b"a blob, no tag").await;
    let body = c.search("q=APP&n=10").await;
    assert_eq!(
        body,
        json!({"num_results": 2, "query": "APP", "results": [
            result("apps/store", "A store, from its label"),
            result("team/web-app", "The web app"),
        ]})
    );
    // A term may span components; no term lists every repository, untagged ones without a
    // description.
    assert_eq!(c.names("q=m%2Fweb").await, ["team/web-app"]);
    assert_eq!(
        c.names("q=").await,
        ["apps/store", "team/web-app", "tools/map", "unrelated/db"]
    );
    let body = c.search("q=unrelated").await;
    assert_eq!(body["results"], json!([result("unrelated/db", "")]));
    // Nothing matches: an empty list, still a 200.
    assert_eq!(
        c.search("q=nothing-like-it&n=5").await,
        json!({"num_results": 0, "query": "nothing-like-it", "results": []})
    );
    assert_eq!(
        Conn::new(&Berth::start(), None).search("q=a").await["results"],
        json!([])
    );
}

#[tokio::test]
async fn search_returns_at_most_n_results_and_refuses_n_outside_1_to_100() {
    let berth = Berth::start();
    for i in 0..30 {
        push_blob(&berth, &format!("many/r{i:02}"), b"blob").await;
    }
    let c = Conn::new(&berth, None);
    let expected: Vec<String> = (0..30).map(|i| format!("many/r{i:02}")).collect();
    assert_eq!(
        c.names("q=many").await,
        expected[..25],
        "25 without n, as Docker's default"
    );
    assert_eq!(c.names("q=many&n=1").await, ["many/r00"], "the first in lexical order");
    assert_eq!(c.names("q=r1&n=3").await, expected[10..13]);
    assert_eq!(c.names("q=many&n=100").await, expected);
    assert_eq!(c.search("q=many&n=7").await["num_results"], 7);
    for n in ["0", "101", "-1", "abc", ""] {
        let resp = c.get(&format!("/v1/search?q=many&n={n}")).await;
        let detail = format!("n={n:?}: a search returns 1 to 100 results");
        assert_error(resp, 400, "PAGINATION_NUMBER_INVALID", &detail).await;
    }
    let long = "a".repeat(256);
    let resp = c.get(&format!("/v1/search?q={long}")).await;
    assert_error(resp, 400, "NAME_INVALID", "q: a search term is at most 255 characters").await;
    assert_eq!(c.search(&format!("q={}", &long[..255])).await["num_results"], 0);
}

#[tokio::test]
async fn the_description_is_that_of_the_most_recently_pushed_tagged_manifest() {
    let berth = Berth::start();
    let c = Conn::new(&berth, None);
    let description = |repo: &'static str| {
        let c = &c;
        async move {
            let body = c.search(&format!("q={repo}&n=1")).await;
            assert_eq!(names(&body), [repo]);
            body["results"][0]["description"].as_str().unwrap().to_owned()
        }
    };
    let first = c.image("d/evolving", Some("v1"), Some("first"), None).await;
    next_millisecond().await;
    c.image("d/evolving", Some("v2"), None, Some("second, as a label"))
        .await;
    assert_eq!(description("d/evolving").await, "second, as a label");
    // Pushed again, the first manifest is the newest once more.
    next_millisecond().await;
    c.manifest("d/evolving", Some("v1"), OCI_MANIFEST, &first).await;
    assert_eq!(description("d/evolving").await, "first");
    // An untagged push does not count.
    next_millisecond().await;
    c.image("d/evolving", None, Some("untagged"), None).await;
    assert_eq!(description("d/evolving").await, "first");
    // The annotation wins over the label.
    c.image("d/both", Some("v1"), Some("annotation"), Some("label")).await;
    assert_eq!(description("d/both").await, "annotation");
    // A config larger than 64 KiB is not read.
    let large = "x".repeat(70 * 1024);
    c.image("d/large-config", Some("v1"), None, Some(&large)).await;
    assert_eq!(description("d/large-config").await, "");
    // Long descriptions are cut to 1 KiB.
    let long = "y".repeat(5000);
    c.image("d/long", Some("v1"), Some(&long), None).await;
    assert_eq!(description("d/long").await, "y".repeat(1024));
}

#[tokio::test]
async fn an_index_describes_itself_or_by_its_first_image() {
    let berth = Berth::start();
    let c = Conn::new(&berth, None);
    let index = |children: &[&[u8]], annotation: Option<&str>| {
        let manifests: Vec<Value> = children
            .iter()
            .map(|body| {
                let mut d = desc(OCI_MANIFEST, &sha256(body), body.len());
                d["platform"] = json!({"architecture": "amd64", "os": "linux"});
                d
            })
            .collect();
        let mut index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        if let Some(a) = annotation {
            index["annotations"] = json!({DESCRIPTION: a});
        }
        to_bytes(&index)
    };
    // An attestation (as buildx pushes one, platform unknown/unknown) comes first and is
    // skipped; the first image's config label describes the index.
    let repo = "i/multi";
    let attestation = c.image(repo, None, Some("an attestation"), None).await;
    let amd = c.image(repo, None, None, Some("the amd64 image")).await;
    let arm = c.image(repo, None, Some("the arm64 image"), None).await;
    let mut body: Value = serde_json::from_slice(&index(&[&attestation, &amd, &arm], None)).unwrap();
    body["manifests"][0]["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    c.manifest(repo, Some("latest"), OCI_INDEX, &to_bytes(&body)).await;
    let found = c.search("q=i/multi").await;
    assert_eq!(found["results"], json!([result(repo, "the amd64 image")]));
    // The index's own annotation comes first.
    let described = index(&[&amd, &arm], Some("the index"));
    next_millisecond().await;
    c.manifest(repo, Some("annotated"), OCI_INDEX, &described).await;
    let found = c.search("q=i/multi").await;
    assert_eq!(found["results"], json!([result(repo, "the index")]));
}

#[tokio::test]
async fn the_ping_answers_everyone_and_tells_docker_to_send_credentials_only_when_logged_in() {
    let site = Site::new();
    for berth in [Berth::start(), start_with(&site.config(""))] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let resp = client()
                .request(method.clone(), berth.url("/v1/_ping"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{method}");
            assert_eq!(header(&resp, "x-docker-registry-standalone"), "false");
            assert_eq!(header(&resp, "content-type"), "application/json");
            if method == reqwest::Method::GET {
                assert_eq!(resp.text().await.unwrap(), "{}");
            }
        }
    }
}

#[tokio::test]
async fn search_lists_only_what_the_caller_may_pull() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let carol = Conn::new(&berth, Some("carol"));
    for repo in ["team-a/app", "public/app", "private/app", "public/tool"] {
        carol.image(repo, Some("v1"), Some(repo), None).await;
    }
    assert_eq!(carol.names("q=app").await, ["private/app", "public/app", "team-a/app"]);
    assert_eq!(
        Conn::new(&berth, Some("bob")).names("q=app").await,
        ["public/app", "team-a/app"]
    );
    assert_eq!(Conn::new(&berth, Some("dave")).names("q=app").await, ["public/app"]);
    // The rules let anonymous callers pull public/**: they search, and see that.
    let anonymous = Conn::new(&berth, None);
    assert_eq!(anonymous.names("q=").await, ["public/app", "public/tool"]);
    // The filter applies before `n`: a page is filled with visible repositories.
    assert_eq!(Conn::new(&berth, Some("dave")).names("q=p&n=1").await, ["public/app"]);
    // Wrong credentials are refused, as everywhere.
    let resp = client()
        .get(berth.url("/v1/search?q=app"))
        .basic_auth("bob", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"berth\"");
    // Requests are counted under their own route group.
    let metrics = client()
        .get(berth.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("group=\"search\""), "{metrics}");
}

#[tokio::test]
async fn anonymous_callers_log_in_to_search_when_no_rule_lets_them_pull() {
    let site = Site::new();
    // No rules: users may pull everything, anonymous callers nothing.
    let berth = start_with(&site.config(""));
    Conn::new(&berth, Some("dave"))
        .image("any/app", Some("v1"), None, None)
        .await;
    let resp = client().get(berth.url("/v1/search?q=app")).send().await.unwrap();
    assert_eq!(header(&resp, "www-authenticate"), "Basic realm=\"berth\"");
    assert_error(resp, 401, "UNAUTHORIZED", "authentication required").await;
    assert_eq!(Conn::new(&berth, Some("alice")).names("q=app").await, ["any/app"]);
    drop(berth);
    // With tokens, the challenge names the scope the Docker engine asks for.
    let berth = start_with(&site.config("  token:\n    enabled: true\n"));
    let resp = client().get(berth.url("/v1/search?q=app")).send().await.unwrap();
    let realm = format!("Bearer realm=\"{}/auth/token\",service=\"berth\"", berth.base);
    assert_eq!(
        header(&resp, "www-authenticate"),
        format!("{realm},scope=\"registry:catalog:search\"")
    );
    assert_error(resp, 401, "UNAUTHORIZED", "authentication required").await;
}

#[tokio::test]
async fn a_token_for_registry_catalog_search_searches_what_its_user_may_pull() {
    let site = Site::new();
    let berth = start_with(&site.config(&format!("  token:\n    enabled: true\n{RULES}")));
    let carol = Conn::new(&berth, Some("carol"));
    for repo in ["team-a/app", "public/app", "private/app"] {
        carol.image(repo, Some("v1"), None, None).await;
    }
    let search = |t: String| {
        let berth = &berth;
        async move {
            let resp = client()
                .get(berth.url("/v1/search?q=app"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            names(&resp.json().await.unwrap())
        }
    };
    let bob = token(&berth, Some("bob"), &["registry:catalog:search"]).await;
    assert_eq!(search(bob).await, ["public/app", "team-a/app"]);
    let anonymous = token(&berth, None, &["registry:catalog:search"]).await;
    assert_eq!(search(anonymous).await, ["public/app"]);
    // Basic credentials work beside tokens: that is what the Docker engine sends.
    assert_eq!(
        Conn::new(&berth, Some("bob")).names("q=app").await,
        ["public/app", "team-a/app"]
    );
}

#[tokio::test]
async fn the_catalog_filters_by_q_and_keeps_its_pagination() {
    let berth = Berth::start();
    for repo in ["a/app", "a/lib", "b/app-x", "b/web", "c/my-app", "c/zapp"] {
        push_blob(&berth, repo, b"blob").await;
    }
    let c = Conn::new(&berth, None);
    let page = |path: String| {
        let c = &c;
        async move {
            let resp = c.get(&path).await;
            assert_eq!(resp.status(), 200);
            let link = resp.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
            let body: Value = resp.json().await.unwrap();
            (body["repositories"].clone(), link)
        }
    };
    let (repos, link) = page("/v2/_catalog?q=APP".into()).await;
    assert_eq!(repos, json!(["a/app", "b/app-x", "c/my-app", "c/zapp"]));
    assert_eq!(link, None);
    let (repos, link) = page("/v2/_catalog?q=app&n=2".into()).await;
    assert_eq!(repos, json!(["a/app", "b/app-x"]));
    let link = link.expect("a next page");
    assert_eq!(link, r#"</v2/_catalog?q=app&n=2&last=b%2Fapp-x>; rel="next""#);
    let next = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    let (repos, link) = page(next).await;
    assert_eq!(repos, json!(["c/my-app", "c/zapp"]));
    assert_eq!(link, None);
    let (repos, _) = page("/v2/_catalog?q=app&last=b%2Fweb".into()).await;
    assert_eq!(repos, json!(["c/my-app", "c/zapp"]), "last need not match q");
    let (repos, _) = page("/v2/_catalog?q=".into()).await;
    assert_eq!(repos.as_array().unwrap().len(), 6, "an empty q filters nothing");
    let resp = c.get(&format!("/v2/_catalog?q={}", "a".repeat(256))).await;
    assert_error(resp, 400, "NAME_INVALID", "q: a search term is at most 255 characters").await;
}

#[tokio::test]
async fn the_catalog_q_combines_with_the_pull_filter() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let carol = Conn::new(&berth, Some("carol"));
    for repo in ["team-a/app", "public/app", "private/app", "public/web"] {
        carol.image(repo, Some("v1"), None, None).await;
    }
    let resp = Conn::new(&berth, Some("bob")).get("/v2/_catalog?q=app&n=1").await;
    assert_eq!(
        header(&resp, "link"),
        r#"</v2/_catalog?q=app&n=1&last=public%2Fapp>; rel="next""#
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["repositories"], json!(["public/app"]));
    let body: Value = Conn::new(&berth, Some("bob"))
        .get("/v2/_catalog?q=app&n=1&last=public%2Fapp")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["repositories"], json!(["team-a/app"]));
}

// The Docker CLI.

/// A Docker client configuration of its own (`DOCKER_CONFIG`), so that logins stay out of the
/// machine's; logged out and removed on drop.
struct DockerConfig {
    dir: tempfile::TempDir,
    logged_in: Option<String>,
}

impl DockerConfig {
    fn new() -> DockerConfig {
        DockerConfig {
            dir: tempfile::tempdir().unwrap(),
            logged_in: None,
        }
    }

    fn env(&self) -> [(&'static str, &str); 1] {
        [("DOCKER_CONFIG", self.dir.path().to_str().unwrap())]
    }

    /// `docker login host` as `user`, the password on stdin.
    fn login(&mut self, host: &str, user: &str) {
        let out = Command::new("docker")
            .args(["login", host, "-u", user, "--password-stdin"])
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{}\n", password(user)).as_bytes())?;
                child.wait_with_output()
            })
            .expect("the Docker engine must be installed and running (CI machines have it)");
        assert!(
            out.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.logged_in = Some(host.to_owned());
    }

    /// `docker search host/term`: (name, description) of each result, in the order given.
    fn search(&self, host: &str, term: &str, extra: &[&str]) -> Vec<(String, String)> {
        let target = format!("{host}/{term}");
        let mut args = vec!["search", "--no-trunc", "--format", "{{.Name}}\t{{.Description}}"];
        args.extend_from_slice(extra);
        args.push(&target);
        let out = docker_env(&args, &self.env());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let (name, description) = line.split_once('\t').unwrap_or((line, ""));
                (name.to_owned(), description.to_owned())
            })
            .collect()
    }

    fn search_names(&self, host: &str, term: &str) -> Vec<String> {
        self.search(host, term, &[]).into_iter().map(|(name, _)| name).collect()
    }
}

impl Drop for DockerConfig {
    fn drop(&mut self) {
        if let Some(host) = self.logged_in.take() {
            let _ = Command::new("docker").args(["logout", &host]).envs(self.env()).output();
        }
    }
}

/// `docker build` a `FROM scratch` image tagged `tag` with the description label `label`
/// (the classic builder, which writes it into the config's `Labels`), push it, remove it.
fn docker_build_labelled(tag: &str, label: &str) {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("hello.txt"), format!("hello from {tag}\n")).unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nLABEL {DESCRIPTION}=\"{label}\"\nCOPY hello.txt /hello.txt\n"),
    )
    .unwrap();
    let ctx = context.path().to_str().unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag, ctx])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("the Docker engine must be installed and running (CI machines have it)");
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    docker_env(&["push", tag], &[]);
    docker_env(&["rmi", "-f", tag], &[]);
}

#[tokio::test]
async fn docker_search_finds_repositories_with_their_descriptions() {
    let berth = Berth::start();
    let c = Conn::new(&berth, None);
    c.image("cli/web-app", Some("v1"), Some("The web app"), None).await;
    c.image("cli/worker", Some("v1"), None, Some("Background worker")).await;
    c.image("other/app-tools", Some("v1"), None, None).await;
    c.image("other/db", Some("v1"), None, None).await;
    docker_build_labelled(&format!("{}/cli/built:v1", berth.host), "Built by docker");
    let docker = DockerConfig::new();
    let found = docker.search(&berth.host, "APP", &[]);
    let expected = [("cli/web-app", "The web app"), ("other/app-tools", "")];
    assert_eq!(found, expected.map(|(n, d)| (n.to_owned(), d.to_owned())));
    assert_eq!(
        docker.search(&berth.host, "built", &[]),
        [("cli/built".to_owned(), "Built by docker".to_owned())]
    );
    assert_eq!(
        docker.search(&berth.host, "worker", &[]),
        [("cli/worker".to_owned(), "Background worker".to_owned())]
    );
    let limited = docker.search(&berth.host, "cli", &["--limit", "2"]);
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert!(docker.search(&berth.host, "nothing-here", &[]).is_empty());
    let log = berth.log();
    assert!(log.contains("path=/v1/_ping"), "docker pinged first:\n{log}");
}

#[tokio::test]
async fn docker_search_after_docker_login_with_htpasswd_over_tls() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let site = Site::new();
    let auth = format!("auth:\n  htpasswd:\n    path: {}\n{RULES}", site.htpasswd.display());
    let berth = start_with(&setup.config("", &auth));
    let carol = Conn {
        client: https_client(&ca.pem, None, &[]),
        base: berth.base.clone(),
        user: Some("carol"),
    };
    for repo in ["team-a/app", "public/app", "private/app"] {
        carol.image(repo, Some("v1"), Some(&format!("{repo} here")), None).await;
    }
    let _trust = DockerTrust::new(&berth.host, &ca.pem);
    // Not logged in: what anonymous callers may pull.
    let anonymous = DockerConfig::new();
    assert_eq!(anonymous.search_names(&berth.host, "app"), ["public/app"]);
    let mut bob = DockerConfig::new();
    bob.login(&berth.host, "bob");
    assert_eq!(
        bob.search(&berth.host, "app", &[]),
        [
            ("public/app".to_owned(), "public/app here".to_owned()),
            ("team-a/app".to_owned(), "team-a/app here".to_owned()),
        ]
    );
    let mut dave = DockerConfig::new();
    dave.login(&berth.host, "dave");
    assert_eq!(dave.search_names(&berth.host, "app"), ["public/app"]);
    let mut carol_cli = DockerConfig::new();
    carol_cli.login(&berth.host, "carol");
    assert_eq!(
        carol_cli.search_names(&berth.host, "app"),
        ["private/app", "public/app", "team-a/app"]
    );
}

#[tokio::test]
async fn docker_search_after_docker_login_through_berths_token_flow() {
    let site = Site::new();
    let berth = start_with(&site.config(&format!("  token:\n    enabled: true\n{RULES}")));
    let carol = Conn::new(&berth, Some("carol"));
    for repo in ["team-a/app", "public/app", "private/app"] {
        carol.image(repo, Some("v1"), None, None).await;
    }
    let anonymous = DockerConfig::new();
    assert_eq!(anonymous.search_names(&berth.host, "app"), ["public/app"]);
    let mut bob = DockerConfig::new();
    bob.login(&berth.host, "bob");
    assert!(
        berth.log().contains("path=/auth/token"),
        "docker login used the token flow"
    );
    let tokens_before = berth.log().matches("path=/auth/token").count();
    assert_eq!(bob.search_names(&berth.host, "app"), ["public/app", "team-a/app"]);
    // The engine sent bob's Basic credentials with the search and asked for no token.
    let log = berth.log();
    let searches: Vec<&str> = log.lines().filter(|l| l.contains("path=/v1/search")).collect();
    assert!(
        searches.last().is_some_and(|l| l.contains("user=\"bob\"")),
        "{searches:#?}"
    );
    assert_eq!(log.matches("path=/auth/token").count(), tokens_before, "{log}");
}
