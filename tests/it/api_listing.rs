//! The listing endpoints over HTTP: `GET /v2/<name>/tags/list` and `GET /v2/_catalog` in
//! lexical (byte, or "ASCII-betical") order, `n`/`last` pagination with a `Link: <...>; rel="next"` header
//! exactly when another page follows, `n=0` (an empty list and no `Link`, as the spec requires),
//! malformed `n`, the tag list of an unknown repository (404 `NAME_UNKNOWN`), and repository
//! names of many `/` components, up to the 255-character limit.

use serde_json::{Value, json};

use crate::api_fixtures::{OCI_MANIFEST, assert_error, header, put_manifest};
use crate::harness::{Berth, client, push_blob, push_image};

#[tokio::test]
async fn tags_are_listed_in_lexical_order() {
    let berth = Berth::start();
    // Pushed out of order; byte order puts digits before uppercase before `_` before lowercase,
    // which the spec allows: lexical or "ASCIIbetical" (Go's sort.Strings) order.
    let pushed = [
        "v2", "latest", "V1", "1.0", "10", "1.0-rc.1", "_private", "a.b", "a-b", "a_b", "2", "Latest",
    ];
    push_tags(&berth, "l/order", &pushed).await;
    let (status, link, body) = list(&berth, "/v2/l/order/tags/list").await;
    assert_eq!(status, 200);
    assert_eq!(link, None, "no n: everything at once");
    let mut sorted = pushed.to_vec();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "1.0", "1.0-rc.1", "10", "2", "Latest", "V1", "_private", "a-b", "a.b", "a_b", "latest", "v2"
        ]
    );
    assert_eq!(body, json!({"name": "l/order", "tags": sorted}));
    let resp = client().get(berth.url("/v2/l/order/tags/list")).send().await.unwrap();
    assert_eq!(header(&resp, "content-type"), "application/json");
}

#[tokio::test]
async fn tags_paginate_with_n_and_last_and_link_exactly_when_more_follow() {
    let berth = Berth::start();
    push_tags(&berth, "l/pages", &["e", "c", "a", "d", "b"]).await;
    let page = |path: &str| {
        let path = path.to_owned();
        let berth = &berth;
        async move { list(berth, &path).await }
    };
    // Walk the pages by following `Link`.
    let (status, link, body) = page("/v2/l/pages/tags/list?n=2").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"name": "l/pages", "tags": ["a", "b"]}));
    assert_eq!(
        link.as_deref(),
        Some(r#"</v2/l/pages/tags/list?n=2&last=b>; rel="next""#)
    );
    let (_, link, body) = page(&next_path(&link.unwrap())).await;
    assert_eq!(body["tags"], json!(["c", "d"]));
    assert_eq!(
        link.as_deref(),
        Some(r#"</v2/l/pages/tags/list?n=2&last=d>; rel="next""#)
    );
    let (_, link, body) = page(&next_path(&link.unwrap())).await;
    assert_eq!(body["tags"], json!(["e"]));
    assert_eq!(link, None, "the last page has no Link");

    // (query, tags, whether a Link follows)
    let cases: [(&str, &[&str], Option<&str>); 10] = [
        ("n=4", &["a", "b", "c", "d"], Some("n=4&last=d")),
        ("n=5", &["a", "b", "c", "d", "e"], None),
        ("n=6", &["a", "b", "c", "d", "e"], None),
        ("n=1&last=a", &["b"], Some("n=1&last=b")),
        ("n=3&last=b", &["c", "d", "e"], None),
        ("last=b", &["c", "d", "e"], None),
        ("last=bb", &["c", "d", "e"], None),
        ("last=e", &[], None),
        ("last=zzz", &[], None),
        ("n=2&last=0", &["a", "b"], Some("n=2&last=b")),
    ];
    for (query, tags, next) in cases {
        let (status, link, body) = page(&format!("/v2/l/pages/tags/list?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(body, json!({"name": "l/pages", "tags": tags}), "{query}");
        let want = next.map(|q| format!(r#"</v2/l/pages/tags/list?{q}>; rel="next""#));
        assert_eq!(link, want, "{query}");
    }
}

#[tokio::test]
async fn n_zero_is_an_empty_list_without_link() {
    let berth = Berth::start();
    push_tags(&berth, "l/zero", &["a", "b"]).await;
    for query in ["n=0", "n=0&last=a"] {
        let (status, link, body) = list(&berth, &format!("/v2/l/zero/tags/list?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(body, json!({"name": "l/zero", "tags": []}), "{query}");
        assert_eq!(link, None, "{query}");
        let (status, link, body) = list(&berth, &format!("/v2/_catalog?{query}")).await;
        assert_eq!(status, 200, "{query}");
        assert_eq!(body, json!({"repositories": []}), "{query}");
        assert_eq!(link, None, "{query}");
    }
}

#[tokio::test]
async fn a_malformed_n_is_400_pagination_number_invalid() {
    let berth = Berth::start();
    push_tags(&berth, "l/badn", &["a"]).await;
    let c = client();
    for n in ["abc", "-1", "1.5", "", "0x10", "99999999999999999999999"] {
        for path in [format!("/v2/l/badn/tags/list?n={n}"), format!("/v2/_catalog?n={n}")] {
            let resp = c.get(berth.url(&path)).send().await.unwrap();
            let detail = format!("n={n:?} is not a number");
            assert_error(resp, 400, "PAGINATION_NUMBER_INVALID", &detail).await;
        }
    }
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_404_name_unknown() {
    let berth = Berth::start();
    push_tags(&berth, "l/known", &["a"]).await;
    let c = client();
    for repo in ["l/unknown", "l", "l/known/deeper", "l/know"] {
        let resp = c.get(berth.url(&format!("/v2/{repo}/tags/list"))).send().await.unwrap();
        assert_error(resp, 404, "NAME_UNKNOWN", &format!("repository {repo} is not known")).await;
    }
}

#[tokio::test]
async fn a_repository_without_tags_lists_none() {
    let berth = Berth::start();
    // A repository holding only a blob, and one whose only manifest is untagged.
    push_blob(&berth, "l/blob-only", b"some blob").await;
    let (digest, _) = push_image(&berth, "l/untagged", "t", &[b"layer"]).await;
    let resp = client()
        .delete(berth.url("/v2/l/untagged/manifests/t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    for repo in ["l/blob-only", "l/untagged"] {
        let (status, link, body) = list(&berth, &format!("/v2/{repo}/tags/list")).await;
        assert_eq!(status, 200, "{repo}");
        assert_eq!(body, json!({"name": repo, "tags": []}));
        assert_eq!(link, None);
    }
    let resp = client()
        .get(berth.url(&format!("/v2/l/untagged/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_catalog_lists_repositories_in_lexical_order_and_paginates() {
    let berth = Berth::start();
    let (status, link, body) = list(&berth, "/v2/_catalog").await;
    assert_eq!((status, link, body), (200, None, json!({"repositories": []})));
    // `-` < `.` < `/` < `_` < letters in byte order.
    let repos = ["b", "a/b/c", "a", "a_b", "a/b", "z/y/x/w/v", "a.b", "a-b", "a0"];
    for repo in repos {
        push_blob(&berth, repo, repo.as_bytes()).await;
    }
    let all = ["a", "a-b", "a.b", "a/b", "a/b/c", "a0", "a_b", "b", "z/y/x/w/v"];
    let (status, link, body) = list(&berth, "/v2/_catalog").await;
    assert_eq!(status, 200);
    assert_eq!(link, None);
    assert_eq!(body, json!({"repositories": all}));
    let resp = client().get(berth.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(header(&resp, "content-type"), "application/json");

    // Pages of two, following `Link`; a name with `/` is escaped in it.
    let (_, link, body) = list(&berth, "/v2/_catalog?n=2").await;
    assert_eq!(body, json!({"repositories": ["a", "a-b"]}));
    assert_eq!(link.as_deref(), Some(r#"</v2/_catalog?n=2&last=a-b>; rel="next""#));
    let (_, link, body) = list(&berth, &next_path(&link.unwrap())).await;
    assert_eq!(body, json!({"repositories": ["a.b", "a/b"]}));
    assert_eq!(link.as_deref(), Some(r#"</v2/_catalog?n=2&last=a%2Fb>; rel="next""#));
    let mut seen: Vec<String> = vec!["a".into(), "a-b".into(), "a.b".into(), "a/b".into()];
    let mut link = link;
    let mut pages = 2;
    while let Some(l) = link {
        let (status, next, body) = list(&berth, &next_path(&l)).await;
        assert_eq!(status, 200);
        let names = body["repositories"].as_array().unwrap();
        assert!(!names.is_empty(), "a Link never leads to an empty page");
        seen.extend(names.iter().map(|v| v.as_str().unwrap().to_owned()));
        link = next;
        pages += 1;
    }
    assert_eq!(seen, all, "the pages add up to the catalog");
    assert_eq!(pages, 5);
    // `last` alone, and `last` naming no repository.
    let (_, link, body) = list(&berth, "/v2/_catalog?last=a%2Fb").await;
    assert_eq!(body, json!({"repositories": ["a/b/c", "a0", "a_b", "b", "z/y/x/w/v"]}));
    assert_eq!(link, None);
    let (_, link, body) = list(&berth, "/v2/_catalog?n=3&last=a1").await;
    assert_eq!(body, json!({"repositories": ["a_b", "b", "z/y/x/w/v"]}));
    assert_eq!(link, None, "exactly the last three: no next page");
}

#[tokio::test]
async fn repository_names_may_have_many_components() {
    let berth = Berth::start();
    // Twenty components; one that spells out API words; and 255 characters, the longest.
    let twenty = (b'a'..=b't')
        .map(|c| (c as char).to_string())
        .collect::<Vec<_>>()
        .join("/");
    let keywords = "v2/blobs/uploads/manifests/tags/list/referrers/catalog".to_owned();
    let longest = format!("{}/{}", "x".repeat(127), "y".repeat(127));
    assert_eq!(longest.len(), 255);
    for repo in [twenty.as_str(), keywords.as_str(), longest.as_str()] {
        let (digest, body) = push_image(&berth, repo, "v1", &[repo.as_bytes()]).await;
        let (status, _, tags) = list(&berth, &format!("/v2/{repo}/tags/list")).await;
        assert_eq!(status, 200, "{repo}");
        assert_eq!(tags, json!({"name": repo, "tags": ["v1"]}));
        let resp = client()
            .get(berth.url(&format!("/v2/{repo}/manifests/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{repo}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
        // Paged tag lists link back to the same long name.
        let resp = put_manifest(&berth, repo, "v2", Some(OCI_MANIFEST), &body).await;
        assert_eq!(resp.status(), 201);
        let (_, link, _) = list(&berth, &format!("/v2/{repo}/tags/list?n=1")).await;
        assert_eq!(link, Some(format!(r#"</v2/{repo}/tags/list?n=1&last=v1>; rel="next""#)));
    }
    let (_, _, catalog) = list(&berth, "/v2/_catalog").await;
    let mut expected = vec![twenty.clone(), keywords.clone(), longest.clone()];
    expected.sort();
    assert_eq!(catalog, json!({"repositories": expected}));
}

/// Push one small image to `repo` under every tag of `tags`.
async fn push_tags(berth: &Berth, repo: &str, tags: &[&str]) {
    let (_, body) = push_image(berth, repo, tags[0], &[b"layer"]).await;
    for tag in &tags[1..] {
        let resp = put_manifest(berth, repo, tag, Some(OCI_MANIFEST), &body).await;
        assert_eq!(resp.status(), 201, "{tag}");
    }
}

/// GET `path`: the status, the `Link` header if any, and the JSON body.
async fn list(berth: &Berth, path: &str) -> (u16, Option<String>, Value) {
    let resp = client().get(berth.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let link = resp.headers().get("link").map(|v| v.to_str().unwrap().to_owned());
    (status, link, resp.json().await.unwrap())
}

/// The path a `Link: <path>; rel="next"` header points at.
fn next_path(link: &str) -> String {
    let (target, rel) = link.split_once(">; ").expect("<target>; rel");
    assert_eq!(rel, r#"rel="next""#);
    target.strip_prefix('<').expect("<target>").to_owned()
}
