//! The templates. maud checks them at compile time and escapes every interpolated value, so
//! text from a manifest, an image config or a query string can never become markup; nothing
//! here uses `PreEscaped`. Each page is the shared `layout` around its own content.

use maud::{DOCTYPE, Markup, html};

use super::admin::AuditFilter;
use super::model::{ImageConfig, ManifestView, human_bytes, human_time};
use super::{Viewer, route};
use crate::api::admin::jobs::{JobState, JobView};
use crate::fsck::Report;
use crate::meta::browse::RepoSummary;
use crate::meta::usage::Usage;
use crate::registry::{AuditEntry, AuditListing};

/// One repository of the list.
pub struct RepoItem {
    pub name: String,
    pub summary: Option<RepoSummary>,
}

pub struct RepoList {
    pub q: String,
    /// Repositories grouped by namespace (`team` of `team/app`; `""` for none), in order.
    pub groups: Vec<(String, Vec<RepoItem>)>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// One tag of a repository page.
pub struct TagItem {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub platforms: Vec<String>,
    pub pushed_ms: u64,
}

pub struct RepoPage {
    pub name: String,
    pub summary: RepoSummary,
    pub tags: Vec<TagItem>,
    pub q: String,
    /// `pushed` or `name`.
    pub sort: String,
    /// Push order: the page shown, of `pages`; name order pages by cursor (`after`, `next`).
    pub page: usize,
    pub pages: Option<usize>,
    /// How many tags match, when counted (push order).
    pub matching: Option<u64>,
    /// Name order: the tag this page follows, and the cursor of the next page.
    pub after: Option<String>,
    pub next: Option<String>,
    pub host: String,
    pub may_delete: bool,
}

/// A referrer of a manifest, with its own referrers.
pub struct Referrer {
    pub digest: String,
    pub artifact_type: Option<String>,
    pub media_type: String,
    pub size: u64,
    pub annotations: Vec<(String, String)>,
    pub referrers: Vec<Referrer>,
}

pub struct ManifestPage {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub view: ManifestView,
    pub config: Option<ImageConfig>,
    pub tags: Vec<String>,
    pub referrers: Vec<Referrer>,
    pub raw: String,
    pub host: String,
    pub may_delete: bool,
}

pub struct Confirm {
    pub name: String,
    pub reference: String,
    pub what: String,
    pub consequences: Vec<String>,
}

fn href(v: &Viewer, rest: &str) -> String {
    v.ui.link(rest)
}

/// The page around `content`.
pub fn layout(v: &Viewer, title: &str, content: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Berth" }
                link rel="stylesheet" href=(href(v, "/static/style.css"));
                script src=(href(v, "/static/ui.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href=(href(v, "/")) { "Berth" }
                        a href=(href(v, "/")) { "Repositories" }
                        @if v.is_admin() {
                            a href=(href(v, "/admin")) { "Admin" }
                        }
                        span.spacer {}
                        (who(v))
                    }
                }
                main #main { (content) }
            }
        }
    }
}

fn who(v: &Viewer) -> Markup {
    html! {
        @if let Some(user) = &v.session.user {
            span.user { "Signed in as " strong { (user) } }
            form.inline method="post" action=(href(v, "/logout")) {
                (csrf(v))
                button type="submit" { "Sign out" }
            }
        } @else if v.can_sign_in() {
            a href=(href(v, "/login")) { "Sign in" }
        }
    }
}

/// The hidden CSRF field every POST form carries.
pub fn csrf(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.session.csrf); }
}

pub fn error(v: &Viewer, message: &str) -> Markup {
    let content = html! {
        h1 { "Sorry" }
        p.error role="alert" { (message) }
        @if v.session.user.is_none() && v.can_sign_in() {
            p { "Some repositories are visible only once you " a href=(href(v, "/login")) { "sign in" } "." }
        }
        p { a href=(href(v, "/")) { "Back to the repositories" } }
    };
    layout(v, "Error", &content)
}

fn query_link(v: &Viewer, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, val) in pairs.iter().filter(|(_, val)| !val.is_empty()) {
        s.append_pair(k, val);
    }
    let q = s.finish();
    if q.is_empty() {
        href(v, path)
    } else {
        format!("{}?{q}", href(v, path))
    }
}

pub fn repositories(v: &Viewer, list: &RepoList) -> Markup {
    let content = html! {
        h1 { "Repositories" }
        form.search method="get" action=(href(v, "/")) role="search" {
            label for="q" { "Search repositories" }
            input #q type="search" name="q" value=(list.q) placeholder="name contains…";
            button type="submit" { "Search" }
        }
        @if list.groups.is_empty() {
            p.empty { "No repositories" @if !list.q.is_empty() { " match " q { (list.q) } } "." }
        }
        @for (namespace, items) in &list.groups {
            section.namespace {
                h2 { @if namespace.is_empty() { "(no namespace)" } @else { (namespace) "/" } }
                table.repos {
                    thead { tr {
                        th scope="col" { "Repository" } th scope="col" { "Tags" }
                        th scope="col" { "Last push" } th scope="col" { "Size" } th scope="col" { "Only here" }
                    } }
                    tbody {
                        @for item in items { (repo_row(v, item)) }
                    }
                }
            }
        }
        @if let Some(next) = &list.next {
            nav.pager aria-label="Pages" {
                a rel="next" href=(query_link(v, "/", &[("q", &list.q), ("after", next)])) { "Next page →" }
            }
        }
    };
    layout(v, "Repositories", &content)
}

fn repo_row(v: &Viewer, item: &RepoItem) -> Markup {
    html! {
        tr {
            td { a href=(href(v, &route::repository(&item.name))) { (item.name) } }
            @if let Some(s) = &item.summary {
                td.num { (s.tags) }
                td { (human_time(s.last_push_ms)) }
                td.num { (human_bytes(s.bytes)) }
                td.num { (human_bytes(s.exclusive_bytes)) }
            } @else {
                td colspan="4" { "-" }
            }
        }
    }
}

pub fn repository(v: &Viewer, p: &RepoPage) -> Markup {
    let path = route::repository(&p.name);
    let sort_other = if p.sort == "name" { "pushed" } else { "name" };
    let content = html! {
        p.crumbs { a href=(href(v, "/")) { "Repositories" } " / " }
        h1 { (p.name) }
        p.figures {
            (p.summary.tags) " tags · " (p.summary.manifests) " manifests · "
            (human_bytes(p.summary.bytes)) " referenced, " (human_bytes(p.summary.exclusive_bytes)) " only here · last push "
            (human_time(p.summary.last_push_ms))
        }
        form.search method="get" action=(href(v, &path)) role="search" {
            label for="q" { "Filter tags" }
            input #q type="search" name="q" value=(p.q) placeholder="tag contains…";
            input type="hidden" name="sort" value=(p.sort);
            button type="submit" { "Filter" }
        }
        p {
            "Sorted by " (if p.sort == "name" { "name" } else { "push time, newest first" }) ". "
            a href=(query_link(v, &path, &[("q", &p.q), ("sort", sort_other)])) { "Sort by " (if sort_other == "name" { "name" } else { "push time" }) }
        }
        @if p.tags.is_empty() {
            p.empty { "No tags" @if !p.q.is_empty() { " match " q { (p.q) } } "." }
        } @else {
            table.tags {
                caption {
                    @match (p.matching, p.pages) {
                        (Some(matching), Some(pages)) => { (matching) " tags" @if pages > 1 { ", page " (p.page) " of " (pages) } },
                        _ => {
                            @if p.q.is_empty() { (p.summary.tags) " tags" } @else { "Tags containing " q { (p.q) } }
                            @if let Some(after) = &p.after { ", after " (after) }
                        },
                    }
                }
                thead { tr {
                    th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Type" }
                    th scope="col" { "Size" } th scope="col" { "Platforms" } th scope="col" { "Pushed" }
                    th scope="col" { "Pull" }
                    @if p.may_delete { th scope="col" { span.sr { "Actions" } } }
                } }
                tbody {
                    @for t in &p.tags { (tag_row(v, p, t)) }
                }
            }
        }
        (pager(v, &path, p))
    };
    layout(v, &p.name, &content)
}

fn tag_row(v: &Viewer, p: &RepoPage, t: &TagItem) -> Markup {
    let pull = format!("docker pull {}/{}:{}", p.host, p.name, t.tag);
    html! {
        tr {
            th scope="row" { a href=(href(v, &route::manifest(&p.name, &t.tag))) { (t.tag) } }
            td { a.digest href=(href(v, &route::manifest(&p.name, &t.digest))) title=(t.digest) { (short(&t.digest)) } }
            td.media { (short_media(&t.media_type)) }
            td.num data-bytes=(t.size) { (human_bytes(t.size)) }
            td { (t.platforms.join(", ")) }
            td { (human_time(t.pushed_ms)) }
            td.pull { (copyable(&pull, &format!("Pull command for {}", t.tag))) }
            @if p.may_delete {
                td { a.danger href=(href(v, &route::delete(&p.name, &t.tag))) { "Delete" span.sr { " tag " (t.tag) } } }
            }
        }
    }
}

fn pager(v: &Viewer, path: &str, p: &RepoPage) -> Markup {
    let link = |key: &str, value: &str| query_link(v, path, &[("q", &p.q), ("sort", &p.sort), (key, value)]);
    let pages = p.pages.unwrap_or(1);
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if p.page > 1 { a rel="prev" href=(link("page", &(p.page - 1).to_string())) { "← Previous page" } }
                @if p.page < pages { a rel="next" href=(link("page", &(p.page + 1).to_string())) { "Next page →" } }
            }
        } @else if p.after.is_some() || p.next.is_some() {
            nav.pager aria-label="Pages" {
                @if p.after.is_some() { a href=(query_link(v, path, &[("q", &p.q), ("sort", &p.sort)])) { "← First page" } }
                @if let Some(next) = &p.next { a rel="next" href=(link("after", next)) { "Next page →" } }
            }
        }
    }
}

/// A text field holding `text`, selectable without script, with a copy button the script adds.
fn copyable(text: &str, label: &str) -> Markup {
    html! {
        span.copy {
            input type="text" readonly value=(text) aria-label=(label) size="40";
        }
    }
}

/// `sha256:0123456789ab` of a digest.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// The media type without its common prefix, for narrow tables.
fn short_media(media_type: &str) -> &str {
    media_type.strip_prefix("application/vnd.").unwrap_or(media_type)
}

pub fn manifest(v: &Viewer, p: &ManifestPage) -> Markup {
    let by_digest = format!("docker pull {}/{}@{}", p.host, p.name, p.digest);
    let content = html! {
        p.crumbs {
            a href=(href(v, "/")) { "Repositories" } " / "
            a href=(href(v, &route::repository(&p.name))) { (p.name) } " / "
        }
        h1 { "Manifest" }
        dl.facts {
            dt { "Digest" } dd { code #digest { (p.digest) } }
            dt { "Media type" } dd { code { (p.media_type) } }
            @if let Some(t) = &p.view.artifact_type { dt { "Artifact type" } dd { code { (t) } } }
            dt { "Size" } dd #size data-bytes=(p.size) { (human_bytes(p.size)) " (config and layers)" }
            dt { "Tags" } dd { @if p.tags.is_empty() { "none" } @else { (p.tags.join(", ")) } }
            dt { "Pull" } dd { (copyable(&by_digest, "Pull command by digest")) }
            @if let Some(subject) = &p.view.subject {
                dt { "Subject" } dd { a href=(href(v, &route::manifest(&p.name, &subject.digest))) { code { (subject.digest) } } }
            }
        }
        @if p.may_delete {
            p { a.danger href=(href(v, &route::delete(&p.name, &p.digest))) { "Delete this manifest…" } }
        }
        @if !p.view.manifests.is_empty() { (children(v, p)) }
        @if let Some(config) = &p.config { (config_section(config)) }
        @if p.view.config.is_some() || !p.view.layers.is_empty() { (layers(p)) }
        (annotations("Annotations", &p.view.annotations))
        section #referrers {
            h2 { "Referrers" }
            @if p.referrers.is_empty() { p { "No signatures, SBOMs or attestations refer to this manifest." } }
            @else { (referrer_tree(v, &p.name, &p.referrers)) }
        }
        section {
            h2 { "Raw manifest" }
            pre.raw tabindex="0" { code { (p.raw) } }
        }
    };
    layout(v, &format!("{} manifest", p.name), &content)
}

fn children(v: &Viewer, p: &ManifestPage) -> Markup {
    html! {
        section #children {
            h2 { "Platforms" }
            table {
                thead { tr { th scope="col" { "Platform" } th scope="col" { "Digest" } th scope="col" { "Type" } th scope="col" { "Manifest size" } } }
                tbody {
                    @for c in &p.view.manifests {
                        tr {
                            td { @if c.is_attestation() { "attestation" } @else if let Some(pl) = &c.platform { (pl.to_string()) } @else { "-" } }
                            td { a.digest href=(href(v, &route::manifest(&p.name, &c.digest))) title=(c.digest) { (short(&c.digest)) } }
                            td.media { (short_media(&c.media_type)) }
                            td.num { (human_bytes(c.size)) }
                        }
                    }
                }
            }
        }
    }
}

fn layers(p: &ManifestPage) -> Markup {
    html! {
        section #layers {
            h2 { "Layers" }
            table {
                thead { tr { th scope="col" { "#" } th scope="col" { "Digest" } th scope="col" { "Type" } th scope="col" { "Size" } } }
                tbody {
                    @if let Some(c) = &p.view.config {
                        tr { td { "config" } td { code title=(c.digest) { (short(&c.digest)) } } td.media { (short_media(&c.media_type)) } td.num data-bytes=(c.size) { (human_bytes(c.size)) } }
                    }
                    @for (i, l) in p.view.layers.iter().enumerate() {
                        tr { td { (i + 1) } td { code title=(l.digest) { (short(&l.digest)) } } td.media { (short_media(&l.media_type)) } td.num data-bytes=(l.size) { (human_bytes(l.size)) } }
                    }
                }
            }
        }
    }
}

fn config_section(c: &ImageConfig) -> Markup {
    html! {
        section #config {
            h2 { "Image" }
            dl.facts {
                dt { "Platform" } dd { (c.platform) }
                @if let Some(created) = &c.created { dt { "Created" } dd { (created) } }
                dt { "Entrypoint" } dd { code { (shell_words(&c.entrypoint)) } }
                dt { "Command" } dd { code { (shell_words(&c.cmd)) } }
                @if let Some(w) = &c.working_dir { dt { "Working directory" } dd { code { (w) } } }
                @if let Some(u) = &c.user { dt { "User" } dd { code { (u) } } }
            }
            @if !c.env.is_empty() {
                h3 { "Environment" }
                ul.env { @for e in &c.env { li { code { (e) } } } }
            }
            (annotations("Labels", &c.labels))
            @if !c.history.is_empty() {
                h3 { "History" }
                table.history {
                    thead { tr { th scope="col" { "Created" } th scope="col" { "Created by" } th scope="col" { "Layer" } } }
                    tbody {
                        @for h in &c.history {
                            tr {
                                td { (h.created.as_deref().unwrap_or("-")) }
                                td { code { (h.created_by.as_deref().or(h.comment.as_deref()).unwrap_or("")) } }
                                td { @if h.empty_layer { "empty" } @else { "yes" } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn shell_words(words: &[String]) -> String {
    if words.is_empty() {
        "-".to_owned()
    } else {
        format!("{words:?}")
    }
}

fn annotations(title: &str, map: &std::collections::BTreeMap<String, String>) -> Markup {
    html! {
        @if !map.is_empty() {
            h3 { (title) }
            dl.labels {
                @for (k, val) in map { dt { code { (k) } } dd { (val) } }
            }
        }
    }
}

fn referrer_tree(v: &Viewer, name: &str, referrers: &[Referrer]) -> Markup {
    html! {
        ul.tree {
            @for r in referrers {
                li {
                    a.digest href=(href(v, &route::manifest(name, &r.digest))) title=(r.digest) { (short(&r.digest)) }
                    " "
                    span.artifact { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                    " · " (human_bytes(r.size))
                    @for (k, val) in &r.annotations { br; small { code { (k) } " = " (val) } }
                    @if !r.referrers.is_empty() { (referrer_tree(v, name, &r.referrers)) }
                }
            }
        }
    }
}

pub fn confirm(v: &Viewer, c: &Confirm) -> Markup {
    let content = html! {
        p.crumbs { a href=(href(v, "/")) { "Repositories" } " / " a href=(href(v, &route::repository(&c.name))) { (c.name) } " / " }
        h1 { "Delete " (c.what) "?" }
        ul.consequences { @for line in &c.consequences { li { (line) } } }
        form method="post" action=(href(v, &route::delete(&c.name, &c.reference))) {
            (csrf(v))
            button.danger type="submit" { "Delete " (c.what) }
            " "
            a href=(href(v, &route::repository(&c.name))) { "Cancel" }
        }
    };
    layout(v, "Confirm deletion", &content)
}

pub fn login(v: &Viewer, failed: Option<&str>) -> Markup {
    let content = html! {
        h1 { "Sign in" }
        @if let Some(why) = failed { p.error role="alert" { (why) } }
        form.login method="post" action=(href(v, "/login")) {
            (csrf(v))
            label for="user" { "User name" }
            input #user type="text" name="user" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    };
    layout(v, "Sign in", &content)
}

pub fn admin(v: &Viewer, gc_runs: &[JobView], fsck_runs: &[JobView]) -> Markup {
    let content = html! {
        h1 { "Admin" }
        ul.links {
            li { a href=(href(v, "/admin/usage")) { "Storage usage" } }
            li { a href=(href(v, "/admin/audit")) { "Audit log" } }
        }
        section {
            h2 { "Garbage collection" }
            p { "Removes what no tag reaches (as configured under gc) and frees the blobs nothing references. A dry run reports what it would remove and changes nothing." }
            form.inline method="post" action=(href(v, "/admin/gc")) {
                (csrf(v))
                input type="hidden" name="dry_run" value="true";
                button #gc-dry-run type="submit" { "Dry run" }
            }
            " "
            form.inline method="post" action=(href(v, "/admin/gc")) {
                (csrf(v))
                button.danger #gc-run type="submit" { "Collect garbage" }
            }
            (recent_runs(v, "gc", gc_runs))
        }
        section {
            h2 { "Consistency check (fsck)" }
            p { "Checks the metadata against itself and against the blob files, online, and changes nothing: a full check hashes every blob, a quick one compares sizes. Repairs are `berth fsck --repair` or the admin API's." }
            form.inline method="post" action=(href(v, "/admin/fsck")) {
                (csrf(v))
                button #fsck-run type="submit" { "Check" }
            }
            " "
            form.inline method="post" action=(href(v, "/admin/fsck")) {
                (csrf(v))
                input type="hidden" name="quick" value="true";
                button #fsck-quick type="submit" { "Quick check" }
            }
            (recent_runs(v, "fsck", fsck_runs))
        }
    };
    layout(v, "Admin", &content)
}

/// The recent runs of one kind of job (`gc`, `fsck`), linking to each one's page.
fn recent_runs(v: &Viewer, kind: &str, runs: &[JobView]) -> Markup {
    html! {
        h3 { "Recent runs" }
        @if runs.is_empty() { p { "None since the server started." } }
        @else {
            table {
                thead { tr { th scope="col" { "Started" } th scope="col" { "State" } th scope="col" { "Phase" } th scope="col" { "Run" } } }
                tbody {
                    @for r in runs {
                        tr {
                            td { (r.started_at) }
                            td { (state(r.state)) }
                            td { (r.phase) }
                            td { a href=(href(v, &format!("/admin/{kind}/{}", r.id))) { "Report" } }
                        }
                    }
                }
            }
        }
    }
}

/// A run's state, phase and times; ids start with `kind` (`gc-status`, `fsck-status`). While
/// it runs, the page follows it: without script it reloads itself every second (the refresh
/// sits in `noscript`, so it does not fire where script runs); `ui.js` polls the run's status
/// (`data-poll`) instead and reloads once, when it ends.
fn job_facts(v: &Viewer, kind: &str, run: &JobView) -> Markup {
    let running = run.state == JobState::Running;
    let poll = running.then(|| href(v, &format!("/admin/{kind}/{}/status", run.id)));
    html! {
        @if running {
            noscript { meta http-equiv="refresh" content="1"; }
        }
        dl.facts id=(format!("{kind}-state")) data-poll=[poll] {
            dt { "State" } dd.job-status id=(format!("{kind}-status")) { (state(run.state)) }
            dt { "Phase" } dd.job-phase id=(format!("{kind}-phase")) { (run.phase) }
            dt { "Started" } dd { (run.started_at) }
            @if let Some(end) = &run.finished_at { dt { "Finished" } dd { (end) } }
            @if let Some(e) = &run.error { dt { "Error" } dd.error { (e) } }
        }
    }
}

/// An fsck run: its state, then what it checked and every problem it found.
pub fn fsck_run(v: &Viewer, run: &JobView) -> Markup {
    let report: Option<Report> = run.report.clone().and_then(|r| serde_json::from_value(r).ok());
    let content = html! {
        p.crumbs { a href=(href(v, "/admin")) { "Admin" } " / " }
        h1 { "Consistency check" @if report.as_ref().is_some_and(|r| r.quick) { " (quick)" } }
        (job_facts(v, "fsck", run))
        @if let Some(r) = &report {
            h2 { "Findings" }
            p #fsck-verdict { @if r.clean { "Clean: no problems found." } @else { (r.problems.len()) " problems found." } }
            p.figures #fsck-checked {
                "Checked " (r.checked.repositories) " repositories, " (r.checked.manifests) " manifests, "
                (r.checked.tags) " tags, " (r.checked.blobs) " blobs (" (human_bytes(r.checked.blob_bytes)) "; "
                (human_bytes(r.checked.bytes_hashed)) " hashed) in " (r.duration_ms) " ms."
            }
            @if !r.problems.is_empty() {
                table #fsck-problems {
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Subject" } th scope="col" { "Detail" } } }
                    tbody {
                        @for p in &r.problems {
                            tr { td { (serde_json::to_value(p.kind).ok().and_then(|k| k.as_str().map(str::to_owned)).unwrap_or_default()) } td { (p.subject) } td { (p.detail) } }
                        }
                    }
                }
            }
            @if !r.damaged_images.is_empty() {
                h3 { "Damaged images" }
                ul #fsck-damaged { @for image in &r.damaged_images { li { (image) } } }
            }
        }
    };
    layout(v, "Consistency check", &content)
}

fn state(s: JobState) -> &'static str {
    match s {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

pub fn gc_run(v: &Viewer, run: &JobView) -> Markup {
    let dry = run
        .report
        .as_ref()
        .and_then(|r| r.get("dry_run"))
        .and_then(serde_json::Value::as_bool);
    let content = html! {
        p.crumbs { a href=(href(v, "/admin")) { "Admin" } " / " }
        h1 { "Garbage collection" @if dry == Some(true) { " (dry run)" } }
        (job_facts(v, "gc", run))
        @if let Some(serde_json::Value::Object(report)) = &run.report {
            h2 { "Report" }
            table #gc-report {
                tbody {
                    @for (k, val) in report {
                        tr { th scope="row" { (k.replace('_', " ")) } td.num { (report_value(k, val)) } }
                    }
                }
            }
        }
    };
    layout(v, "Garbage collection", &content)
}

/// A report figure: byte counts readable, amounts (`{count, bytes}`) as both.
fn report_value(key: &str, value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) if key.contains("bytes") => human_bytes(n.as_u64().unwrap_or(0)),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v.as_u64() {
                Some(n) if k.contains("bytes") => format!("{k}: {}", human_bytes(n)),
                _ => format!("{k}: {v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Repositories the chart of the largest shows.
const CHART_BARS: usize = 10;

/// The largest repositories (bytes referenced) as a bar chart: server-rendered SVG, each
/// label text (escaped like any value), each bar a link to its repository. `usage` is sorted
/// largest first.
fn largest_chart(v: &Viewer, usage: &Usage) -> Markup {
    const ROW: usize = 26;
    const LABEL: u128 = 240;
    const BAR: u128 = 420;
    let shown = &usage.repositories[..usage.repositories.len().min(CHART_BARS)];
    let largest = shown.first().map_or(1, |r| r.bytes.max(1));
    let height = (shown.len() * ROW).to_string();
    html! {
        @if !shown.is_empty() {
            figure.chart {
                figcaption #largest-title { "Largest repositories, bytes referenced" }
                svg #largest xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="largest-title"
                    viewBox=(format!("0 0 800 {height}")) width="800" height=(height) {
                    @for (i, r) in shown.iter().enumerate() {
                        @let y = i * ROW;
                        @let width = (u128::from(r.bytes) * BAR / u128::from(largest)).max(1);
                        a href=(href(v, &route::repository(&r.name))) {
                            text x="0" y=(y + 17) { (truncated(&r.name, 32)) }
                            rect.bar x=(LABEL) y=(y + 4) width=(width) height=(ROW - 8) {}
                            text x=(LABEL + width + 6) y=(y + 17) { (human_bytes(r.bytes)) }
                        }
                    }
                }
            }
        }
    }
}

/// `s`, cut to `max` characters with an ellipsis.
fn truncated(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).chain(std::iter::once('…')).collect()
    }
}

pub fn usage(v: &Viewer, usage: &Usage) -> Markup {
    let largest = usage.repositories.first().map_or(1, |r| r.bytes.max(1));
    let content = html! {
        p.crumbs { a href=(href(v, "/admin")) { "Admin" } " / " }
        h1 { "Storage usage" }
        p.figures {
            (human_bytes(usage.stored_bytes)) " stored in " (usage.blobs) " blobs; "
            (human_bytes(usage.logical_bytes)) " summed over repositories (before deduplication)."
        }
        (largest_chart(v, usage))
        table #usage {
            thead { tr {
                th scope="col" { "Repository" } th scope="col" { "Referenced" } th scope="col" { "Only here" }
                th scope="col" { "Manifests" } th scope="col" { "Tags" } th scope="col" { span.sr { "Share" } }
            } }
            tbody {
                @for r in &usage.repositories {
                    tr {
                        td { a href=(href(v, &route::repository(&r.name))) { (r.name) } }
                        td.num { (human_bytes(r.bytes)) } td.num { (human_bytes(r.exclusive_bytes)) }
                        td.num { (r.manifests) } td.num { (r.tags) }
                        td.bar { meter min="0" max=(largest) value=(r.bytes) aria-label=(format!("{} of the largest", r.name)) {} }
                    }
                }
            }
        }
    };
    layout(v, "Storage usage", &content)
}

/// The audit log: a filter form, then one page of events, newest first.
pub fn audit(v: &Viewer, f: &AuditFilter, listing: &AuditListing) -> Markup {
    let filters = [
        ("user", f.user.as_str()),
        ("repository", f.repository.as_str()),
        ("action", f.action.as_str()),
    ];
    let content = html! {
        p.crumbs { a href=(href(v, "/admin")) { "Admin" } " / " }
        h1 { "Audit log" }
        (audit_form(v, f))
        @if listing.events.is_empty() {
            p.empty #audit-empty { "No events" @if !f.before.is_empty() { " before this point" } " match." }
        } @else {
            table #audit {
                caption { "Newest first" @if !f.before.is_empty() { ", before event " (f.before) } }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "User" } th scope="col" { "Address" }
                    th scope="col" { "Action" } th scope="col" { "Repository" } th scope="col" { "Reference" }
                    th scope="col" { "Digest" } th scope="col" { "Result" }
                } }
                tbody { @for e in &listing.events { (audit_row(v, e)) } }
            }
        }
        @if !f.before.is_empty() || listing.next.is_some() {
            nav.pager aria-label="Pages" {
                @if !f.before.is_empty() { a href=(query_link(v, "/admin/audit", &filters)) { "← Newest events" } }
                @if let Some(next) = listing.next {
                    @let next = next.to_string();
                    a rel="next" href=(query_link(v, "/admin/audit", &[filters[0], filters[1], filters[2], ("before", &next)])) { "Older events →" }
                }
            }
        }
    };
    layout(v, "Audit log", &content)
}

fn audit_form(v: &Viewer, f: &AuditFilter) -> Markup {
    html! {
        form.search method="get" action=(href(v, "/admin/audit")) role="search" {
            label for="audit-user" { "User" }
            input #audit-user type="text" name="user" value=(f.user);
            label for="audit-repository" { "Repository" }
            input #audit-repository type="text" name="repository" value=(f.repository);
            label for="audit-action" { "Action" }
            select #audit-action name="action" {
                option value="" selected[f.action.is_empty()] { "any" }
                @for a in crate::meta::Action::ALL {
                    option value=(a.as_str()) selected[f.action == a.as_str()] { (a.as_str()) }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn audit_row(v: &Viewer, e: &AuditEntry) -> Markup {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    html! {
        tr {
            td { (e.time) }
            td { (dash(&e.user)) }
            td { (dash(&e.addr)) }
            td.action { (e.action) }
            td {
                @if let Some(repo) = &e.repository {
                    @if v.may_pull(repo) { a href=(href(v, &route::repository(repo))) { (repo) } } @else { (repo) }
                } @else { "-" }
            }
            td { (dash(&e.reference)) }
            td { @if let Some(d) = &e.digest { code title=(d) { (short(d)) } } @else { "-" } }
            td { (e.result) }
        }
    }
}
