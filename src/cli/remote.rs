//! Running an admin job (`gc`, `fsck`) through a running server: start it, follow its phases
//! on a terminal, and return its report. With authentication on, the server wants the admin
//! role: `BERTH_ADMIN_USER` and `BERTH_ADMIN_PASSWORD` give the credentials (environment, not
//! flags, so that the password never shows in a process listing).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use berth::api::admin::jobs::{JobState, JobView};
use serde::de::DeserializeOwned;

/// `POST {url}/admin/{kind}?{query}`, then poll `GET {url}/admin/{kind}/{id}` until it ends.
pub async fn run_job<R: DeserializeOwned>(url: &str, kind: &str, query: &str) -> anyhow::Result<R> {
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let credentials = admin_credentials();
    let with_auth = |req: reqwest::RequestBuilder| match &credentials {
        Some((user, password)) => req.basic_auth(user, Some(password)),
        None => req,
    };
    let start = with_auth(client.post(format!("{base}/admin/{kind}?{query}")))
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    if !start.status().is_success() {
        bail!(
            "the server refused to start {kind}: {} {}",
            start.status(),
            start.text().await?
        );
    }
    let mut job: JobView = start.json().await?;
    let show = std::io::stderr().is_terminal();
    let mut last_phase = String::new();
    while job.state == JobState::Running {
        if show && job.phase != last_phase {
            eprintln!("{kind}: {}", job.phase.replace('_', " "));
            last_phase.clone_from(&job.phase);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let url = format!("{base}/admin/{kind}/{}", job.id);
        job = with_auth(client.get(url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
    }
    match (job.state, job.report) {
        (JobState::Done, Some(report)) => Ok(serde_json::from_value(report)?),
        _ => bail!("{kind} failed: {}", job.error.unwrap_or_default()),
    }
}

/// `GET {url}{path}` of an admin endpoint, with the admin credentials when they are set; the
/// JSON body. A refusal says how to give credentials.
pub async fn get_admin<R: DeserializeOwned>(url: &str, path: &str) -> anyhow::Result<R> {
    call_admin(reqwest::Method::GET, url, path).await
}

/// `POST {url}{path}` of an admin endpoint that answers at once; as `get_admin`.
pub async fn post_admin<R: DeserializeOwned>(url: &str, path: &str) -> anyhow::Result<R> {
    call_admin(reqwest::Method::POST, url, path).await
}

async fn call_admin<R: DeserializeOwned>(method: reqwest::Method, url: &str, path: &str) -> anyhow::Result<R> {
    let url = format!("{}{path}", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().request(method, url);
    if let Some((user, password)) = admin_credentials() {
        request = request.basic_auth(user, Some(password));
    }
    let resp = request.send().await.map_err(|e| unreachable(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "the server refused {path} ({status}): with authentication on it wants a user with the admin role \
             (auth.admins), whose name and password go in {} and {}",
            berth::config::ENV_ADMIN_USER,
            berth::config::ENV_ADMIN_PASSWORD
        );
    }
    Ok(resp.error_for_status()?.json().await?)
}

/// The server could not be reached: say why, and for a certificate the client does not trust
/// (a private CA), how to trust it.
fn unreachable(e: &reqwest::Error) -> anyhow::Error {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain = format!("{chain}: {s}");
        source = s.source();
    }
    let untrusted = ["certificate", "UnknownIssuer", "invalid peer"]
        .iter()
        .any(|w| chain.contains(w));
    if untrusted {
        anyhow::anyhow!(
            "contacting the server: {chain}; if its certificate comes from a private CA, point SSL_CERT_FILE at the CA's PEM file"
        )
    } else {
        anyhow::anyhow!("contacting the server: {chain}")
    }
}

/// `BERTH_ADMIN_USER` and `BERTH_ADMIN_PASSWORD`, if both are set.
fn admin_credentials() -> Option<(String, String)> {
    let user = std::env::var(berth::config::ENV_ADMIN_USER).ok()?;
    let password = std::env::var(berth::config::ENV_ADMIN_PASSWORD).ok()?;
    Some((user, password))
}
