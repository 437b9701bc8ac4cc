//! The web UI, over real HTTP and in a real browser: Debian's Chromium driven through
//! chromedriver (the `WebDriver` protocol, with the `fantoccini` client). Images are pushed over the API
//! (an image with layers, a multi-arch index, an image with a referrer), by the Docker engine
//! (`docker build` and `docker push`) and by skopeo (the index copied with `--all`); the browser then signs
//! in, walks repository, tag, manifest and referrer, checks digests and sizes, deletes a tag
//! (and the API agrees), runs a garbage-collection dry run and reads its report, and a user
//! without rights sees neither the repository nor the admin pages. Each browser test saves
//! screenshots under `target/ui-screenshots/`.
//!
//! In the browser too: an admin reads the audit log (filters, pages, escaping) and others
//! cannot; users of an external token issuer (a second Berth issuing tokens) sign in and see
//! what the rules grant them; the main pages pass an accessibility check (labels, alt text,
//! contrast in both colour schemes, heading order) and signing in works by keyboard alone.
//!
//! Plain-HTTP tests check what needs no browser: everything a manifest carries is escaped,
//! a POST without its session's CSRF token is refused, `/` leads to the UI and the API is
//! undisturbed, a password change signs the user out, and the cookie is `Secure` as
//! `ui.secure_cookie` says.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::auth::{Site, password};
use crate::clients::{docker_build_and_push, skopeo};
use crate::harness::{Berth, client, push_blob_with, push_manifest_with, sha256};
use crate::tls::start_with;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "install them with `apt-get install chromium chromium-driver` (.ci/run does)";
/// How long the browser waits for a page to show what a step expects.
const WAIT: Duration = Duration::from_secs(20);

/// alice may pull, push and delete under team/, push under other/, and is an admin; bob may
/// pull only other/.
const RULES: &str = r#"  admins:
    users: [alice]
  rules:
    - repositories: ["team/**"]
      users: [alice]
      actions: [pull, push, delete]
    - repositories: ["other/**"]
      users: [bob]
      actions: [pull]
    - repositories: ["other/**"]
      users: [alice]
      actions: [pull, push]
"#;

/// A client sending `user`'s Basic credentials with every request (`None`: anonymous).
fn api_client(user: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(user) = user {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password(user)));
        headers.insert("authorization", format!("Basic {token}").parse().unwrap());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The body of a GET of `url`, which must answer 200.
async fn fetch(c: &reqwest::Client, url: &str) -> String {
    let resp = c.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.unwrap()
}

/// An image: (manifest digest, manifest bytes, config + layer bytes), pushed under `tag`.
async fn push_image(
    c: &reqwest::Client,
    berth: &Berth,
    repo: &str,
    tag: &str,
    arch: &str,
    config_extra: &Value,
    annotations: &Value,
) -> (String, Vec<u8>, u64) {
    let layer = format!("layer of {repo}:{tag} for {arch}").repeat(100).into_bytes();
    let mut config = json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        "config": {"Entrypoint": ["/bin/app"], "Env": ["MODE=test"]},
        "history": [{"created_by": "COPY app /bin/app"}],
    });
    if let (Some(run), Some(extra)) = (config["config"].as_object_mut(), config_extra.as_object()) {
        run.extend(extra.clone());
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = push_blob_with(c, berth, repo, &config).await;
    let layer_digest = push_blob_with(c, berth, repo, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        "annotations": annotations,
    }))
    .unwrap();
    let digest = push_manifest_with(c, berth, repo, tag, OCI_MANIFEST, &manifest).await;
    (digest, manifest, (config.len() + layer.len()) as u64)
}

/// A multi-arch index of two images under `tag`; returns (index digest, amd64 image digest).
async fn push_index(c: &reqwest::Client, berth: &Berth, repo: &str, tag: &str) -> (String, String) {
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (digest, body, _) =
            push_image(c, berth, repo, &format!("{tag}-{arch}"), arch, &json!({}), &json!({})).await;
        children.push(json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch}}));
    }
    let amd64 = children[0]["digest"].as_str().unwrap().to_owned();
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})).unwrap();
    (push_manifest_with(c, berth, repo, tag, OCI_INDEX, &index).await, amd64)
}

/// An SBOM-like artifact whose subject is `subject`; returns its digest.
async fn push_referrer(c: &reqwest::Client, berth: &Berth, repo: &str, subject: &str, subject_size: usize) -> String {
    let empty = b"{}";
    let config = push_blob_with(c, berth, repo, empty).await;
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let layer = push_blob_with(c, berth, repo, sbom).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": layer, "size": sbom.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    }))
    .unwrap();
    let digest = sha256(&manifest);
    push_manifest_with(c, berth, repo, &digest, OCI_MANIFEST, &manifest).await
}

/// `docker login` as `user` into a configuration directory of its own, returned.
fn docker_login(host: &str, user: &str) -> tempfile::TempDir {
    use std::io::Write as _;
    let config = tempfile::tempdir().unwrap();
    let mut child = Command::new("docker")
        .args(["login", host, "-u", user, "--password-stdin"])
        .env("DOCKER_CONFIG", config.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Docker engine must be installed and running");
    writeln!(child.stdin.take().unwrap(), "{}", password(user)).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    config
}

/// Chromium under chromedriver, on a free port, headless.
struct Browser {
    driver: Child,
    client: Client,
    test: &'static str,
}

impl Browser {
    async fn start(test: &'static str) -> Browser {
        Browser::start_with(test, &[]).await
    }

    /// Chromium with `extra` command-line arguments.
    async fn start_with(test: &'static str, extra: &[&str]) -> Browser {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                PathBuf::from(tool).exists(),
                "{tool} is required for the UI tests; {INSTALL}"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that Chromium goes with it even when a test fails before
        // closing its session.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} did not start ({e}); {INSTALL}"));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + WAIT;
        while client().get(format!("{url}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ];
        args.extend(extra);
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": CHROMIUM, "args": args}));
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        Browser { driver, client, test }
    }

    /// Save a screenshot as `target/ui-screenshots/<test>-<step>.png`.
    async fn shot(&self, step: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{}-{step}.png", self.test)), png).unwrap();
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element `css`, once the page shows it.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(element) => element,
            Err(e) => panic!("no {css} on {:?}: {e}", self.client.current_url().await.ok()),
        }
    }

    /// The text of `css`. A page that reloads itself (a running job's) may replace the
    /// element between finding and reading it: then it is found again.
    async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(e) => assert!(Instant::now() < deadline, "{css} kept going stale: {e}"),
            }
        }
    }

    /// Wait until the page's text contains `expected`.
    async fn wait_text(&self, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = self.text("body").await;
            if body.contains(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {expected:?}; it shows:\n{body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until a job's status `css` says `done` (its page reloads itself meanwhile).
    async fn wait_until_done(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        while self.text(css).await != "done" {
            assert!(Instant::now() < deadline, "the run of {css} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click_link(&self, text: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("no link {text:?}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn sign_in(&self, berth: &Berth, user: &str) {
        self.goto(&berth.url("/ui/login")).await;
        self.find("#user").await.send_keys(user).await.unwrap();
        self.find("#password").await.send_keys(password(user)).await.unwrap();
        self.find("form.login button").await.click().await.unwrap();
        self.wait_text(&format!("Signed in as {user}")).await;
    }

    async fn sign_out(&self) {
        self.find("header form button").await.click().await.unwrap();
        self.wait_text("Sign in").await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The Docker engine builds and pushes `team/app:docker` as alice; skopeo copies the index
/// `team/app:multi` to `team/mirror:multi`. Returns the digest docker pushed.
fn push_with_real_clients(berth: &Berth) -> String {
    let docker_tag = format!("{}/team/app:docker", berth.host);
    let docker_config = docker_login(&berth.host, "alice");
    let docker_image = docker_build_and_push(
        &docker_tag,
        &[("DOCKER_CONFIG", &docker_config.path().to_string_lossy())],
    );
    let creds = format!("alice:{}", password("alice"));
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        &creds,
        "--dest-creds",
        &creds,
        &format!("docker://{}/team/app:multi", berth.host),
        &format!("docker://{}/team/mirror:multi", berth.host),
    ]);
    docker_image
}

/// What docker pushed, and the index as skopeo copied it; ends on the repository page.
async fn browse_what_real_clients_pushed(b: &Browser, berth: &Berth, docker_image: &str, index: &str) {
    b.goto(&berth.url("/ui/r/team/app/-/m/docker")).await;
    assert_eq!(b.text("#digest").await, docker_image);
    b.wait_text("application/vnd.docker.distribution.manifest.v2+json")
        .await;
    assert!(b.text("#config").await.contains("hello.txt"));
    b.goto(&berth.url("/ui/r/team/mirror")).await;
    let mirrored = b.text("table.tags").await;
    assert!(
        mirrored.contains("multi") && mirrored.contains("linux/amd64, linux/arm64"),
        "{mirrored}"
    );
    b.click_link("multi").await;
    b.wait_text("Platforms").await;
    assert_eq!(b.text("#digest").await, index, "skopeo kept the index's digest");
    b.goto(&berth.url("/ui/r/team/app")).await;
}

#[tokio::test]
async fn in_chromium_a_user_browses_deletes_a_tag_and_runs_a_gc_dry_run() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let alice = api_client(Some("alice"));
    let (image, image_body, image_size) =
        push_image(&alice, &berth, "team/app", "v1", "amd64", &json!({}), &json!({})).await;
    push_manifest_with(&alice, &berth, "team/app", "old", OCI_MANIFEST, &image_body).await;
    let (index, amd64) = push_index(&alice, &berth, "team/app", "multi").await;
    let referrer = push_referrer(&alice, &berth, "team/app", &image, image_body.len()).await;
    let docker_image = push_with_real_clients(&berth);

    let b = Browser::start("browse").await;
    // Signed out, nothing of team/ shows.
    b.goto(&berth.url("/")).await;
    b.wait_text("No repositories").await;
    b.sign_in(&berth, "alice").await;
    b.click_link("team/app").await;
    b.wait_text("Sorted by push time").await;
    let table = b.text("table.tags").await;
    for tag in ["v1", "old", "multi", "multi-amd64", "multi-arm64", "docker"] {
        assert!(table.contains(tag), "{table}");
    }
    assert!(table.contains("linux/amd64, linux/arm64"), "{table}");
    b.shot("repository").await;

    browse_what_real_clients_pushed(&b, &berth, &docker_image, &index).await;

    // The index, its amd64 child.
    b.click_link("multi").await;
    b.wait_text("Platforms").await;
    assert_eq!(b.text("#digest").await, index);
    let platforms = b.text("#children").await;
    assert!(
        platforms.contains("linux/amd64") && platforms.contains("linux/arm64"),
        "{platforms}"
    );
    b.find(&format!("#children a[title='{amd64}']"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_text(&amd64).await;
    assert_eq!(b.text("#digest").await, amd64);

    // The image: digest, size, config, and its referrer.
    b.goto(&berth.url("/ui/r/team/app/-/m/v1")).await;
    assert_eq!(b.text("#digest").await, image);
    let shown_size = b.find("#size").await.attr("data-bytes").await.unwrap();
    assert_eq!(shown_size.as_deref(), Some(image_size.to_string().as_str()));
    let config = b.text("#config").await;
    assert!(
        config.contains("linux/amd64") && config.contains("/bin/app") && config.contains("MODE=test"),
        "{config}"
    );
    assert!(b.text("#referrers").await.contains("application/spdx+json"));
    b.shot("manifest").await;
    b.find(&format!("#referrers a[title='{referrer}']"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("Subject").await;
    assert_eq!(b.text("#digest").await, referrer);

    // Delete the tag `old`, after its confirmation; the API agrees.
    b.goto(&berth.url("/ui/r/team/app/-/delete/old")).await;
    b.wait_text("It stays tagged as v1").await;
    b.shot("confirm").await;
    b.find("main form button.danger").await.click().await.unwrap();
    b.wait_text("Sorted by push time").await;
    let tags: Value = serde_json::from_str(&fetch(&alice, &berth.url("/v2/team/app/tags/list")).await).unwrap();
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(!tags.contains(&"old") && tags.contains(&"v1"), "{tags:?}");

    // A garbage-collection dry run, followed until its report shows.
    b.click_link("Admin").await;
    b.find("#gc-dry-run").await.click().await.unwrap();
    b.wait_text("(dry run)").await;
    b.wait_until_done("#gc-status").await;
    let report = b.text("#gc-report").await;
    assert!(
        report.contains("dry run") && report.contains("manifests deleted"),
        "{report}"
    );
    b.shot("gc-dry-run").await;
    b.sign_out().await;
    b.client.clone().close().await.unwrap();
}

#[tokio::test]
async fn in_chromium_a_user_without_rights_sees_neither_the_repository_nor_admin_pages() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let alice = api_client(Some("alice"));
    push_image(&alice, &berth, "team/secret", "v1", "amd64", &json!({}), &json!({})).await;
    push_image(&alice, &berth, "other/visible", "v1", "amd64", &json!({}), &json!({})).await;

    let b = Browser::start("unauthorised").await;
    b.sign_in(&berth, "bob").await;
    let list = b.text("main").await;
    assert!(
        list.contains("other/visible") && !list.contains("team/secret"),
        "{list}"
    );
    assert!(!b.text("header").await.contains("Admin"));
    b.goto(&berth.url("/ui/r/team/secret")).await;
    b.wait_text("no such repository").await;
    b.goto(&berth.url("/ui/r/team/secret/-/m/v1")).await;
    b.wait_text("no such repository").await;
    b.goto(&berth.url("/ui/admin")).await;
    b.wait_text("no such page").await;
    b.shot("admin-refused").await;
    b.goto(&berth.url("/ui/admin/usage")).await;
    b.wait_text("no such page").await;
    b.goto(&berth.url("/ui/admin/fsck/0123/status")).await;
    b.wait_text("no such page").await;
    b.client.clone().close().await.unwrap();
}

/// The session cookie a response sets, as a `Cookie` header value.
fn session_cookie(resp: &reqwest::Response) -> String {
    let set = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_post_without_its_sessions_csrf_token_is_refused() {
    let berth = Berth::start();
    let c = api_client(None);
    push_image(&c, &berth, "c/app", "v1", "amd64", &json!({}), &json!({})).await;
    let confirm = berth.url("/ui/r/c/app/-/delete/v1");
    let resp = c.get(&confirm).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = session_cookie(&resp);
    let token = csrf_of(&resp.text().await.unwrap());
    let post = |cookie: Option<&str>, csrf: Option<&str>| {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if let Some(csrf) = csrf {
            form.append_pair("csrf", csrf);
        }
        let body = form.finish();
        let mut req = c
            .post(&confirm)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    let tag_exists = || c.head(berth.url("/v2/c/app/manifests/v1")).send();
    // No token; a wrong token; the right token without its session's cookie.
    assert_eq!(post(Some(&cookie), None).await.unwrap().status(), 403);
    assert_eq!(post(Some(&cookie), Some("0123")).await.unwrap().status(), 403);
    assert_eq!(post(None, Some(&token)).await.unwrap().status(), 403);
    assert_eq!(tag_exists().await.unwrap().status(), 200);
    // With both, the tag goes.
    let done = post(Some(&cookie), Some(&token)).await.unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/ui/r/c/app");
    assert_eq!(tag_exists().await.unwrap().status(), 404);
}

#[tokio::test]
async fn everything_a_manifest_carries_is_escaped() {
    let berth = Berth::start();
    let c = api_client(None);
    let evil = "<script>alert(\"x\")</script>";
    push_image(
        &c,
        &berth,
        "esc/app",
        "v1",
        "amd64",
        &json!({"Labels": {"evil": evil, evil: "key"}, "Env": [format!("E={evil}")], "Cmd": [evil]}),
        &json!({"org.opencontainers.image.description": evil}),
    )
    .await;
    for path in [
        "/ui/r/esc/app/-/m/v1",
        "/ui/r/esc/app",
        "/ui/?q=%3Cscript%3E",
        "/ui/r/esc/app?q=%3Cscript%3E",
    ] {
        let resp = c.get(berth.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let page = resp.text().await.unwrap();
        assert!(
            !page.contains("<script>"),
            "{path} carries markup from a manifest:\n{page}"
        );
    }
    let page = fetch(&c, &berth.url("/ui/r/esc/app/-/m/v1")).await;
    assert!(
        page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
        "{page}"
    );
}

#[tokio::test]
async fn the_root_leads_to_the_ui_and_the_api_is_undisturbed() {
    let berth = Berth::start();
    let c = api_client(None);
    let resp = c.get(berth.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/");
    assert_eq!(c.get(berth.url("/ui")).send().await.unwrap().status(), 303);
    let list = c.get(berth.url("/ui/")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    assert!(
        list.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(c.get(berth.url("/v2/")).send().await.unwrap().status(), 200);
    let unknown = c.get(berth.url("/ui/r/no/such")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    // Turned off, the UI's paths are the API's unknown routes.
    let off = Berth::builder().env("BERTH_UI_ENABLED", "false").start();
    let resp = c.get(off.url("/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers()["content-type"].to_str().unwrap().contains("json"));
}

#[tokio::test]
async fn tags_are_paginated_filtered_and_sorted() {
    // Re-pushing one manifest under each tag: the order is each tag's own last push.
    let berth = Berth::start();
    let c = api_client(None);
    let (_, body, _) = push_image(&c, &berth, "p/app", "t00", "amd64", &json!({}), &json!({})).await;
    for n in 1..60 {
        crate::harness::next_millisecond().await;
        push_manifest_with(&c, &berth, "p/app", &format!("t{n:02}"), OCI_MANIFEST, &body).await;
    }
    let rows = |page: &str| page.matches("<th scope=\"row\">").count();
    let first = fetch(&c, &berth.url("/ui/r/p/app")).await;
    assert!(first.contains("60 tags, page 1 of 2"), "{first}");
    assert_eq!(rows(&first), 50);
    // Newest push first: t59 leads the first page, t00 ends the second.
    assert!(first.find(">t59<").unwrap() < first.find(">t58<").unwrap());
    let second = fetch(&c, &berth.url("/ui/r/p/app?page=2")).await;
    assert_eq!(rows(&second), 10);
    assert!(second.contains(">t00<") && !second.contains(">t59<"));
    // By name, a page follows a cursor: the first ends at t49 and links to the rest.
    let by_name = fetch(&c, &berth.url("/ui/r/p/app?sort=name")).await;
    assert_eq!(rows(&by_name), 50);
    assert!(by_name.find(">t00<").unwrap() < by_name.find(">t01<").unwrap());
    assert!(by_name.contains("sort=name&amp;after=t49"), "{by_name}");
    let rest = fetch(&c, &berth.url("/ui/r/p/app?sort=name&after=t49")).await;
    assert_eq!(rows(&rest), 10);
    assert!(rest.find(">t50<").unwrap() < rest.find(">t59<").unwrap() && !rest.contains(">t49<"));
    assert!(!rest.contains("rel=\"next\""), "{rest}");
    // A page past the last in push order is the last.
    let past = fetch(&c, &berth.url("/ui/r/p/app?page=9")).await;
    assert!(past.contains("page 2 of 2") && past.contains(">t00<"), "{past}");
    let filtered = fetch(&c, &berth.url("/ui/r/p/app?q=t5")).await;
    assert_eq!(rows(&filtered), 10, "{filtered}");
    assert!(filtered.contains("10 tags"));
}

#[tokio::test]
async fn in_chromium_an_admin_runs_fsck_and_sees_the_largest_repositories() {
    let berth = Berth::start();
    let c = api_client(None);
    let (_, manifest, _) = push_image(&c, &berth, "f/app", "v1", "amd64", &json!({}), &json!({})).await;
    push_image(&c, &berth, "f/other", "v1", "amd64", &json!({}), &json!({})).await;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    std::fs::remove_file(berth.blob_file(&layer)).unwrap();
    // Without its session's CSRF token, no check starts.
    let refused = c
        .post(berth.url("/ui/admin/fsck"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("quick=true")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(fetch(&c, &berth.url("/admin/fsck")).await, "[]");

    let b = Browser::start("fsck").await;
    b.goto(&berth.url("/ui/admin")).await;
    b.find("#fsck-run").await.click().await.unwrap();
    b.wait_text("Consistency check").await;
    b.wait_until_done("#fsck-status").await;
    assert!(b.text("#fsck-verdict").await.contains("problems found"));
    let problems = b.text("#fsck-problems").await;
    assert!(problems.contains(&layer), "{problems}");
    assert!(b.text("#fsck-damaged").await.contains("f/app@"));
    b.shot("fsck").await;
    b.click_link("Admin").await;
    assert!(b.text("main").await.contains("Consistency check"));
    // Usage: the largest repositories as a chart, each bar linking to its repository.
    b.click_link("Storage usage").await;
    let labels = b.text("#largest").await;
    assert!(labels.contains("f/app") && labels.contains("f/other"), "{labels}");
    b.shot("usage").await;
    b.find("#largest a[href='/ui/r/f/other']").await.click().await.unwrap();
    b.wait_text("Sorted by push time").await;
    b.client.clone().close().await.unwrap();
}

/// A running collection's page follows it live: with script, `ui.js` polls the run's status
/// (the page carries no active refresh then) and reloads once it ends; without script, the
/// `noscript` refresh reloads it. The collection waits at a test pause point meanwhile.
#[tokio::test]
async fn in_chromium_a_running_gc_is_followed_live() {
    let berth = Berth::builder().env("BERTH_TEST_PAUSE_AT", "gc.after_mark").start();
    let c = api_client(None);
    push_image(&c, &berth, "g/app", "v1", "amd64", &json!({}), &json!({})).await;
    let b = Browser::start("gc-live").await;
    b.goto(&berth.url("/ui/admin")).await;
    b.find("#gc-dry-run").await.click().await.unwrap();
    b.find("#gc-state[data-live='on']").await;
    let deadline = Instant::now() + WAIT;
    while b.text("#gc-phase").await != "paused" {
        assert!(Instant::now() < deadline, "the page never showed the pause");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the script polls, and the page as a client without script reads it.
    let run_url = b.client.current_url().await.unwrap().to_string();
    let status: Value = serde_json::from_str(&fetch(&c, &format!("{run_url}/status")).await).unwrap();
    assert_eq!(
        (status["state"].as_str(), status["phase"].as_str()),
        (Some("running"), Some("paused"))
    );
    let page = fetch(&c, &run_url).await;
    assert!(
        page.contains("<noscript><meta http-equiv=\"refresh\" content=\"1\"></noscript>"),
        "{page}"
    );
    b.shot("running").await;
    berth.resume("gc.after_mark").await;
    b.wait_until_done("#gc-status").await;
    assert!(b.text("#gc-report").await.contains("dry run"));
    b.client.clone().close().await.unwrap();
}

/// The (user, address, action, repository) of every row the audit page shows.
async fn audit_rows(b: &Browser) -> Vec<Vec<String>> {
    let rows = b
        .client
        .execute(
            "return [...document.querySelectorAll('#audit tbody tr')].map(r => [1, 2, 3, 4].map(i => r.cells[i].textContent.trim()));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(rows).unwrap()
}

/// The audit log in the browser: alice's push shows at the top, newest first; filters narrow
/// it; pages follow the log's cursor; a user name carrying markup is shown as text; bob, no
/// admin, neither sees the link nor reaches the page, and neither does an anonymous client.
#[tokio::test]
async fn in_chromium_an_admin_reads_the_audit_log_and_nobody_else_can() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let alice = api_client(Some("alice"));
    // 55 accepted logins (GET /v2/ with a password), then a refused one named with markup,
    // then a push: the push is the newest event.
    for _ in 0..55 {
        assert_eq!(alice.get(berth.url("/v2/")).send().await.unwrap().status(), 200);
    }
    let evil = "<script>alert(1)</script>";
    let refused = client()
        .get(berth.url("/v2/"))
        .basic_auth(evil, Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let (pushed, _, _) = push_image(&alice, &berth, "team/audited", "v1", "amd64", &json!({}), &json!({})).await;
    let anonymous = api_client(None).get(berth.url("/ui/admin/audit")).send().await.unwrap();
    assert_eq!(anonymous.status(), 404);

    let b = Browser::start("audit").await;
    b.sign_in(&berth, "alice").await;
    b.click_link("Admin").await;
    b.click_link("Audit log").await;
    b.wait_text("Newest first").await;
    let rows = audit_rows(&b).await;
    assert_eq!(rows.len(), 50, "one page: {rows:?}");
    // Newest first: alice's sign-in in the browser, her push, the refused login.
    assert_eq!(rows[0], ["alice", "127.0.0.1", "login", "-"], "{rows:?}");
    assert_eq!(rows[1], ["alice", "127.0.0.1", "push", "team/audited"], "{rows:?}");
    assert_eq!(rows[2], [evil, "127.0.0.1", "login", "-"], "{rows:?}");
    assert!(b.text("#audit tbody tr:nth-child(2)").await.contains(&pushed[..19]));
    b.shot("audit").await;
    // The page's source carries the user name escaped; the page shows it as text.
    assert!(!b.client.source().await.unwrap().contains(evil));
    b.find("#audit-action").await.select_by_value("login").await.unwrap();
    b.find("#audit-user").await.send_keys(evil).await.unwrap();
    b.find("form.search button").await.click().await.unwrap();
    b.wait_text("refused: invalid credentials").await;
    assert_eq!(audit_rows(&b).await, [[evil, "127.0.0.1", "login", "-"]]);
    // Filtered by action and repository.
    b.goto(&berth.url("/ui/admin/audit?action=push&repository=team/audited"))
        .await;
    assert_eq!(audit_rows(&b).await, [["alice", "127.0.0.1", "push", "team/audited"]]);
    b.goto(&berth.url("/ui/admin/audit?user=bob")).await;
    b.find("#audit-empty").await;
    // Older pages: 57 events in all (55 logins, the refused one, the push; alice's sign-in in
    // the browser makes 58), 50 then 8.
    b.goto(&berth.url("/ui/admin/audit")).await;
    b.click_link("Older events →").await;
    b.wait_text("before event").await;
    let older = audit_rows(&b).await;
    assert_eq!(older.len(), 8, "{older:?}");
    assert!(older.iter().all(|r| r[2] == "login"), "{older:?}");
    b.click_link("← Newest events").await;
    b.wait_text("Newest first").await;
    assert_eq!(audit_rows(&b).await.len(), 50);
    b.goto(&berth.url("/ui/admin/audit?action=nonsense")).await;
    b.wait_text("is not one of").await;

    b.sign_out().await;
    b.sign_in(&berth, "bob").await;
    assert!(!b.text("header").await.contains("Admin"));
    b.goto(&berth.url("/ui/admin")).await;
    b.wait_text("no such page").await;
    b.goto(&berth.url("/ui/admin/audit")).await;
    b.wait_text("no such page").await;
    assert!(!b.text("main").await.contains("team/audited"));
    b.client.clone().close().await.unwrap();
}

/// Sign in over plain HTTP as `user` with `password`: the login form's cookie and CSRF token,
/// then the form. The response to the form.
async fn http_sign_in(c: &reqwest::Client, berth: &Berth, user: &str, password: &str) -> reqwest::Response {
    let form = c.get(berth.url("/ui/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let cookie = session_cookie(&form);
    let csrf = csrf_of(&form.text().await.unwrap());
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("user", user)
        .append_pair("password", password)
        .finish();
    c.post(berth.url("/ui/login"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The session cookie of a successful sign-in.
async fn signed_in_cookie(c: &reqwest::Client, berth: &Berth, user: &str, password: &str) -> String {
    let resp = http_sign_in(c, berth, user, password).await;
    assert_eq!(resp.status(), 303, "{user} signs in");
    session_cookie(&resp)
}

/// The session a cookie carries, decoded: the signed jar puts the signature (base64 of 32
/// bytes, so ending in one `=`, which may be percent-encoded) before the value, base64 of
/// JSON without padding.
fn session_json(cookie: &str) -> String {
    use base64::Engine as _;
    let value = cookie.split_once('=').unwrap().1;
    let value = value.rsplit_once("%3D").or_else(|| value.rsplit_once('=')).unwrap().1;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).unwrap();
    String::from_utf8(json).unwrap()
}

/// The repository list as the session of `cookie` sees it.
async fn list_page(c: &reqwest::Client, berth: &Berth, cookie: &str) -> String {
    let resp = c.get(berth.url("/ui/")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// A session holds a keyed fingerprint of its user's htpasswd entry: once alice's password
/// changes in the file and the file is reloaded (SIGHUP), her next page is signed out, while
/// bob, whose entry did not change, stays signed in. The cookie carries neither the hash nor
/// the password.
#[tokio::test]
async fn a_password_change_ends_the_users_sessions() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let c = api_client(None);
    let alice = signed_in_cookie(&c, &berth, "alice", password("alice")).await;
    let bob = signed_in_cookie(&c, &berth, "bob", password("bob")).await;
    assert!(
        list_page(&c, &berth, &alice)
            .await
            .contains("Signed in as <strong>alice</strong>")
    );
    let session = session_json(&alice);
    assert!(session.contains("\"entry\":\""), "{session}");
    let htpasswd = std::fs::read_to_string(&site.htpasswd).unwrap();
    let alice_line = htpasswd.lines().find(|l| l.starts_with("alice:")).unwrap();
    for secret in [&alice_line[6..], password("alice")] {
        assert!(!session.contains(secret), "{session}");
    }

    let changed = htpasswd.replace(alice_line, crate::auth::entry("alice", "new-alice-pw").trim_end());
    std::fs::write(&site.htpasswd, changed).unwrap();
    berth.signal("HUP");
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let page = list_page(&c, &berth, &alice).await;
        if !page.contains("Signed in as") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !page.contains("Signed in as") && page.contains(">Sign in</a>"),
        "{page}"
    );
    assert!(
        list_page(&c, &berth, &bob)
            .await
            .contains("Signed in as <strong>bob</strong>")
    );
    // The old password is refused; the new one signs in.
    let old = http_sign_in(&c, &berth, "alice", password("alice")).await;
    assert_eq!(old.status(), 401);
    let again = signed_in_cookie(&c, &berth, "alice", "new-alice-pw").await;
    assert!(
        list_page(&c, &berth, &again)
            .await
            .contains("Signed in as <strong>alice</strong>")
    );
}

/// `ui.secure_cookie`: by default (`auto`) the cookie is `Secure` under TLS only; `true`
/// marks it over plain HTTP too (TLS ends at a proxy); `false` never marks it.
#[tokio::test]
async fn the_session_cookie_is_secure_as_configured() {
    let secure = |resp: &reqwest::Response| {
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
        set.split(';').any(|a| a.trim().eq_ignore_ascii_case("secure"))
    };
    let c = api_client(None);
    let plain = Berth::start();
    assert!(!secure(&c.get(plain.url("/ui/")).send().await.unwrap()));
    let forced = Berth::builder().env("BERTH_UI_SECURE_COOKIE", "true").start();
    assert!(secure(&c.get(forced.url("/ui/")).send().await.unwrap()));

    let ca = crate::pki::Ca::new("Berth UI test CA");
    let setup = crate::tls::Setup::new(&ca);
    let https = crate::pki::https_client(&ca.pem, None, &[]);
    let tls = start_with(&setup.config("", ""));
    assert!(secure(&https.get(tls.url("/ui/")).send().await.unwrap()));
    drop(tls);
    let never = start_with(&setup.config("", "ui:\n  secure_cookie: false\n"));
    assert!(!secure(&https.get(never.url("/ui/")).send().await.unwrap()));
}

/// A real token issuer and a Berth that only verifies its tokens: the issuer is a second Berth
/// (htpasswd, the rules, `auth.token` with an Ed25519 signing key); the Berth under test has
/// `auth.token.realm` pointing at it and its public key, and no passwords.
struct IssuerPair {
    _dir: tempfile::TempDir,
    _site: Site,
    issuer: Berth,
    berth: Berth,
}

const ISSUED_FOR: &str = "    service: registry.test\n    issuer: issuer.test\n";

impl IssuerPair {
    fn start() -> IssuerPair {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let (private, public) = (dir.path().join("issuer-key.pem"), dir.path().join("issuer.pem"));
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let site = Site::new();
        let token = format!(
            "  token:\n    enabled: true\n    signing_key: {}\n{ISSUED_FOR}",
            private.display()
        );
        let issuer = start_with(&site.config(&format!("{token}{RULES}")));
        let config = dir.path().join("berth.yml");
        let yaml = format!(
            "auth:\n  token:\n    realm: {}/auth/token\n    public_key: {}\n{ISSUED_FOR}{RULES}",
            issuer.base,
            public.display()
        );
        std::fs::write(&config, yaml).unwrap();
        let berth = start_with(&config);
        IssuerPair {
            _dir: dir,
            _site: site,
            issuer,
            berth,
        }
    }

    /// A client carrying the issuer's token for `user` with `scope`, as a registry client
    /// gets it.
    async fn client_for(&self, user: &str, scope: &str) -> reqwest::Client {
        let url = format!("{}/auth/token?service=registry.test&scope={scope}", self.issuer.base);
        let resp = client()
            .get(url)
            .basic_auth(user, Some(password(user)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let token: Value = resp.json().await.unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
        headers.insert("authorization", bearer.parse().unwrap());
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }
}

/// Users of an external issuer sign in: the form's credentials go to the issuer as a registry
/// client's would, its token is verified with the configured public key, and the session
/// follows the rules for the token's subject. alice sees team/ and other/, bob other/ only;
/// neither may delete (the sign-in token grants no repository); a wrong password is refused;
/// the cookie holds neither the password nor the token.
#[tokio::test]
async fn in_chromium_users_of_an_external_token_issuer_sign_in() {
    let pair = IssuerPair::start();
    let berth = &pair.berth;
    let pusher = pair.client_for("alice", "repository:team/app:pull,push").await;
    push_image(&pusher, berth, "team/app", "v1", "amd64", &json!({}), &json!({})).await;
    let pusher = pair.client_for("alice", "repository:other/app:pull,push").await;
    push_image(&pusher, berth, "other/app", "v1", "amd64", &json!({}), &json!({})).await;

    let c = api_client(None);
    let wrong = http_sign_in(&c, berth, "alice", "not-her-password").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("wrong user name or password"));
    let bob = signed_in_cookie(&c, berth, "bob", password("bob")).await;
    let session = session_json(&bob);
    assert!(session.contains("\"kind\":\"issuer\""), "{session}");
    assert!(
        !session.contains(password("bob")) && !session.contains("eyJ"),
        "{session}"
    );
    let list = list_page(&c, berth, &bob).await;
    assert!(list.contains("Signed in as <strong>bob</strong>"), "{list}");
    assert!(list.contains("other/app") && !list.contains("team/app"), "{list}");
    let hidden = c
        .get(berth.url("/ui/r/team/app"))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);

    let b = Browser::start("issuer").await;
    b.sign_in(berth, "alice").await;
    let list = b.text("main").await;
    assert!(list.contains("team/app") && list.contains("other/app"), "{list}");
    b.click_link("team/app").await;
    b.wait_text("Sorted by push time").await;
    assert!(!b.text("table.tags").await.contains("Delete"));
    b.shot("issuer-repository").await;
    b.goto(&berth.url("/ui/r/team/app/-/delete/v1")).await;
    b.wait_text("you may not delete from team/app").await;
    b.client.clone().close().await.unwrap();
}

/// Checks a page the way an accessibility audit would, returning what fails: every form
/// control has a label (`label for`, an enclosing label, `aria-label` or `aria-labelledby`);
/// every image has `alt`; headings start at one `h1` and never skip a level going down; the
/// text of every visible element (and of form controls) has a contrast of at least 4.5:1
/// (3:1 for large text: 24px, or 18.66px bold) against its effective background, the
/// backgrounds of its ancestors composed over the white canvas.
const A11Y_CHECK: &str = r#"
const problems = [];
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.getAttribute('class') ? '.' + e.getAttribute('class').trim().split(/\s+/).join('.') : '');
for (const e of document.querySelectorAll('input, select, textarea')) {
  if (e.type === 'hidden') continue;
  const labelled = (e.id && document.querySelector('label[for="' + CSS.escape(e.id) + '"]'))
    || e.closest('label') || (e.getAttribute('aria-label') || '').trim()
    || (e.getAttribute('aria-labelledby') && document.getElementById(e.getAttribute('aria-labelledby')));
  if (!labelled) problems.push('no label: ' + name(e));
}
for (const img of document.querySelectorAll('img')) {
  if (!img.hasAttribute('alt')) problems.push('no alt: ' + img.src);
}
const headings = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')];
if (document.querySelectorAll('h1').length !== 1) problems.push('h1 count: ' + document.querySelectorAll('h1').length);
let level = 0;
for (const h of headings) {
  const n = Number(h.tagName[1]);
  if (n > level + 1) problems.push('heading ' + h.tagName + ' after level ' + level + ': ' + h.textContent.trim());
  level = n;
}
const rgba = c => {
  const m = c.match(/^rgba?\(([^)]*)\)$/);
  if (!m) { problems.push('unparsed colour ' + c); return [0, 0, 0, 0]; }
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3]));
const background = e => {
  const chain = [];
  for (let a = e; a; a = a.parentElement) chain.push(rgba(getComputedStyle(a).backgroundColor));
  return chain.reverse().reduce((acc, c) => over(c, acc), [255, 255, 255]);
};
const luminance = rgb => {
  const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const contrast = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const visible = e => {
  const r = e.getBoundingClientRect(), s = getComputedStyle(e);
  return r.width > 1 && r.height > 1 && r.right > 0 && r.bottom > 0 && s.visibility !== 'hidden' && s.display !== 'none';
};
const ownText = e => [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
const control = e => e.matches('input:not([type=hidden]), select, textarea, button');
let checked = 0;
for (const e of document.body.querySelectorAll('*')) {
  if (e.closest('svg, option, script, noscript') || !(ownText(e) || control(e)) || !visible(e)) continue;
  checked++;
  const s = getComputedStyle(e);
  const bg = background(e);
  const fg = over(rgba(s.color), bg);
  const size = parseFloat(s.fontSize), bold = Number(s.fontWeight) >= 700;
  const needed = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
  const ratio = contrast(fg, bg);
  if (ratio < needed) problems.push('contrast ' + ratio.toFixed(2) + ' < ' + needed + ': ' + name(e) + ' ' + JSON.stringify(e.textContent.trim().slice(0, 40)));
}
if (checked === 0) problems.push('no text checked');
return problems;
"#;

impl Browser {
    /// What `A11Y_CHECK` finds on the current page.
    async fn accessibility_problems(&self) -> Vec<String> {
        let found = self.client.execute(A11Y_CHECK, vec![]).await.unwrap();
        serde_json::from_value(found).unwrap()
    }

    /// Press `keys` (characters, or `fantoccini::key::Key`s as chars) on the keyboard.
    async fn press(&self, keys: &str) {
        use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            actions = actions.then(KeyAction::Down { value }).then(KeyAction::Up { value });
        }
        self.client.perform_actions(actions).await.unwrap();
    }

    /// The element that has the focus: its id, or for the sign-in form's button `submit`,
    /// else its tag and text.
    async fn focused(&self) -> String {
        let script = "const e = document.activeElement; if (e.id) return e.id; \
            if (e.matches('form.login button[type=submit]')) return 'submit'; \
            return e.tagName.toLowerCase() + ':' + e.textContent.trim();";
        self.client
            .execute(script, vec![])
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sign in with the keyboard only: from the top of the sign-in page, Tab until the user
    /// field, type, Tab to the password, type, Tab to the button, Enter. Returns the focus
    /// stops on the way.
    async fn sign_in_by_keyboard(&self, berth: &Berth, user: &str) -> Vec<String> {
        use fantoccini::key::Key;
        self.goto(&berth.url("/ui/login")).await;
        self.find("#user").await;
        // Start from the page's first focusable element (the sign-in form's autofocus would
        // skip the way there).
        let first = "document.querySelector('a[href], button, input:not([type=hidden]), select, textarea').focus(); return null;";
        self.client.execute(first, vec![]).await.unwrap();
        let mut stops = vec![self.focused().await];
        while stops.last().map(String::as_str) != Some("user") {
            assert!(stops.len() < 10, "Tab never reached the user field: {stops:?}");
            self.press(&char::from(Key::Tab).to_string()).await;
            stops.push(self.focused().await);
        }
        self.press(user).await;
        self.press(&char::from(Key::Tab).to_string()).await;
        stops.push(self.focused().await);
        self.press(password(user)).await;
        self.press(&char::from(Key::Tab).to_string()).await;
        stops.push(self.focused().await);
        self.press(&char::from(Key::Enter).to_string()).await;
        self.wait_text(&format!("Signed in as {user}")).await;
        stops
    }
}

/// The main pages pass the accessibility check (labels, alt text, contrast, heading order),
/// signed out and in, and signing in works from the keyboard alone: Tab reaches the user
/// field, the password and the button, in that order, and Enter submits.
#[tokio::test]
async fn in_chromium_the_main_pages_are_accessible_and_sign_in_works_by_keyboard() {
    let site = Site::new();
    let berth = start_with(&site.config(RULES));
    let alice = api_client(Some("alice"));
    push_image(
        &alice,
        &berth,
        "team/app",
        "v1",
        "amd64",
        &json!({"Labels": {"a": "b"}}),
        &json!({}),
    )
    .await;
    push_index(&alice, &berth, "team/app", "multi").await;

    for (test, args) in [("a11y", &[][..]), ("a11y-dark", &["--force-dark-mode"][..])] {
        check_accessibility(&berth, test, args).await;
    }
}

/// The accessibility check of the main pages, in a browser started with `args`.
async fn check_accessibility(berth: &Berth, test: &'static str, args: &[&str]) {
    let b = Browser::start_with(test, args).await;
    let dark: bool = serde_json::from_value(
        b.client
            .execute("return matchMedia('(prefers-color-scheme: dark)').matches;", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(dark, test.ends_with("dark"), "{test}: {args:?}");
    let check = |page: &'static str| {
        let b = &b;
        let url = berth.url(page);
        async move {
            b.goto(&url).await;
            b.find("main h1").await;
            let problems = b.accessibility_problems().await;
            assert!(problems.is_empty(), "{page}: {problems:#?}");
        }
    };
    check("/ui/login").await;
    check("/ui/").await;
    let stops = b.sign_in_by_keyboard(berth, "alice").await;
    let expected = [
        "a:Skip to content",
        "a:Berth",
        "a:Repositories",
        "a:Sign in",
        "user",
        "password",
        "submit",
    ];
    assert_eq!(stops, expected);
    b.shot("keyboard-signed-in").await;
    for page in [
        "/ui/",
        "/ui/r/team/app",
        "/ui/r/team/app/-/m/v1",
        "/ui/r/team/app/-/m/multi",
        "/ui/r/team/app/-/delete/v1",
        "/ui/admin",
        "/ui/admin/usage",
        "/ui/admin/audit",
    ] {
        check(page).await;
    }
    // The check finds what it looks for: an unlabelled field, an image without alt, faint
    // text (coloured through the CSSOM: the CSP refuses style attributes) and a skipped
    // heading level, added to the page.
    let spoil = "const m = document.querySelector('main'); \
        m.insertAdjacentHTML('beforeend', '<input id=spoil><img src=x.png width=5 height=5><p id=faint>faint</p><h4>deep</h4>'); \
        const f = document.getElementById('faint'); f.style.color = '#999'; f.style.backgroundColor = '#bbb'; \
        return null;";
    b.client.execute(spoil, vec![]).await.unwrap();
    let problems = b.accessibility_problems().await;
    for needle in [
        "no label: input#spoil",
        "no alt",
        "< 4.5: p#faint",
        "heading H4 after level",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle} not in {problems:#?}"
        );
    }
    b.client.clone().close().await.unwrap();
}
