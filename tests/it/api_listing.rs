//! Tag and catalog listings: lexical order, `n`/`last` pagination, the `Link` header exactly
//! when a next page exists (followed here until the end), names with many components.

use serde_json::{Value, json};

use crate::harness::{Berth, client, error_codes, get_json, push_image};

/// Follow `Link` headers from `first`; every page's `key` items, and the pages' sizes.
async fn walk(berth: &Berth, first: &str, key: &str) -> (Vec<String>, Vec<usize>) {
    let (mut items, mut sizes) = (Vec::new(), Vec::new());
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        let resp = client().get(berth.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        next = resp.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link.trim_start_matches('<').split('>').next().unwrap().to_owned()
        });
        let v: Value = resp.json().await.unwrap();
        let page: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        sizes.push(page.len());
        items.extend(page);
        assert!(sizes.len() < 100, "pagination does not end");
    }
    (items, sizes)
}

#[tokio::test]
async fn tags_list_in_lexical_order_and_paginate_with_link() {
    let berth = Berth::start();
    let tags = ["v2", "v10", "latest", "Alpha", "_x", "1.0", "v1.0-rc.1"];
    for tag in tags {
        push_image(&berth, "list/tags", tag, &[b"layer"]).await;
    }
    let mut sorted: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    sorted.sort();
    let all: Value = get_json(berth.url("/v2/list/tags/tags/list")).await;
    assert_eq!(all, json!({"name": "list/tags", "tags": sorted}));
    let (walked, sizes) = walk(&berth, "/v2/list/tags/tags/list?n=3", "tags").await;
    assert_eq!(walked, sorted);
    assert_eq!(sizes, [3, 3, 1]);
    // Exactly n=7: one full page, no Link.
    let resp = client()
        .get(berth.url("/v2/list/tags/tags/list?n=7"))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("link"));
    // `last` starts after the given tag, even one that is not there.
    let after: Value = get_json(berth.url("/v2/list/tags/tags/list?last=v1")).await;
    assert_eq!(after["tags"], json!(["v1.0-rc.1", "v10", "v2"]));
    // n=0: an empty page.
    let zero: Value = get_json(berth.url("/v2/list/tags/tags/list?n=0")).await;
    assert_eq!(zero["tags"], json!([]));
}

#[tokio::test]
async fn the_catalog_lists_every_repository_in_order_and_paginates() {
    let berth = Berth::start();
    let repos = ["b", "a/b/c/d/e", "a", "a-b", "a.b", "a_b", "a/b", "z9/0"];
    for repo in repos {
        push_image(&berth, repo, "t", &[repo.as_bytes()]).await;
    }
    let mut sorted: Vec<String> = repos.iter().map(|r| (*r).to_owned()).collect();
    sorted.sort();
    let (all, sizes) = walk(&berth, "/v2/_catalog", "repositories").await;
    assert_eq!(all, sorted);
    assert_eq!(sizes, [8]);
    let (walked, sizes) = walk(&berth, "/v2/_catalog?n=3", "repositories").await;
    assert_eq!(walked, sorted);
    assert_eq!(sizes, [3, 3, 2]);
    // Byte order puts `-` < `.` < `/` < `_`; a `last` holding `/` is escaped in the Link.
    let resp = client().get(berth.url("/v2/_catalog?n=4")).send().await.unwrap();
    let link = resp.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, "</v2/_catalog?n=4&last=a%2Fb>; rel=\"next\"");
}

#[tokio::test]
async fn listing_errors() {
    let berth = Berth::start();
    let resp = client()
        .get(berth.url("/v2/nobody/here/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["NAME_UNKNOWN"]);
    for query in ["n=abc", "n=-1", "n=1.5"] {
        let resp = client()
            .get(berth.url(&format!("/v2/_catalog?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(error_codes(resp).await, ["PAGINATION_NUMBER_INVALID"], "{query}");
    }
}
