//! The bucket lister against a bucket that pages like S3 and converts a page like
//! `object_store`'s S3 client (a key it cannot represent fails the whole page). The directory
//! lister is tested through the watcher in `files_tests`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use object_store::ListResult;
use object_store::list::PaginatedListResult;

use super::*;

/// Keys in S3 order, served in pages of at most `page_keys`; the `fail_request`-th request
/// (1-based) fails like a network error.
struct FakeBucket {
    keys: Vec<String>,
    page_keys: usize,
    fail_request: Option<usize>,
    requests: AtomicUsize,
}

impl FakeBucket {
    fn new(mut keys: Vec<String>, page_keys: usize) -> Self {
        keys.sort();
        Self {
            keys,
            page_keys,
            fail_request: None,
            requests: AtomicUsize::new(0),
        }
    }

    fn page(
        &self,
        prefix: Option<&str>,
        options: PaginatedListOptions,
    ) -> object_store::Result<PaginatedListResult> {
        let request = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_request == Some(request) {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: "connection reset".into(),
            });
        }
        // The fake's continuation token is the last key returned, as moto's.
        let after = options.page_token.or(options.offset);
        let mut keys = self
            .keys
            .iter()
            .filter(|key| key.starts_with(prefix.unwrap_or("")))
            .filter(|key| after.as_ref().is_none_or(|after| *key > after));
        let max_keys = options.max_keys.unwrap_or(1000).min(self.page_keys);
        let page: Vec<&String> = keys.by_ref().take(max_keys).collect();
        let more = keys.next().is_some();
        let objects = page
            .iter()
            .map(|key| {
                Ok(ObjectMeta {
                    location: ObjectPath::parse(key)?,
                    last_modified: Default::default(),
                    size: 1,
                    e_tag: None,
                    version: None,
                })
            })
            .collect::<object_store::Result<Vec<_>>>()?;
        Ok(PaginatedListResult {
            result: ListResult {
                common_prefixes: Vec::new(),
                objects,
            },
            page_token: more.then(|| page.last().unwrap().to_string()),
        })
    }
}

// `PaginatedListStore` is an `async_trait`: this is its expanded signature.
impl PaginatedListStore for FakeBucket {
    fn list_paginated<'life0, 'life1, 'async_trait>(
        &'life0 self,
        prefix: Option<&'life1 str>,
        options: PaginatedListOptions,
    ) -> Pin<
        Box<dyn Future<Output = object_store::Result<PaginatedListResult>> + Send + 'async_trait>,
    >
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(self.page(prefix, options)))
    }
}

fn keys(listed: &Listed) -> Vec<String> {
    listed
        .objects
        .iter()
        .map(|meta| meta.location.to_string())
        .collect()
}

fn problem_paths(listed: &Listed) -> Vec<&str> {
    listed.problems.iter().map(|p| p.path.as_str()).collect()
}

#[tokio::test]
async fn keys_object_store_cannot_represent_are_reported_and_the_rest_is_listed() {
    let good: Vec<String> = (0..2500).map(|i| format!("logs/k{i:04}.json")).collect();
    let bad = [
        // First of all ('/' sorts before letters), in the middle of a page, two in a row,
        // and the very last key.
        "logs//first.json",
        "logs/k0999/./x.json",
        "logs/k1500//y.json",
        "logs/k1500//z.json",
        "logs/zz//last.json",
    ];
    let mut all = good.clone();
    all.extend(bad.iter().map(|k| k.to_string()));
    all.push("other/k.json".into());
    let bucket = Arc::new(FakeBucket::new(all, 1000));
    let lister = Lister::Bucket(bucket.clone());

    let listed = lister.list(Some(&ObjectPath::from("logs"))).await;

    assert_eq!(
        keys(&listed),
        good,
        "every representable key once, in order"
    );
    assert_eq!(problem_paths(&listed), bad);
    assert!(
        listed.problems[0].reason.contains("empty path segment"),
        "{:?}",
        listed.problems[0]
    );
    // 3 pages, and about two requests per halving for each bad key.
    let requests = bucket.requests.load(Ordering::SeqCst);
    assert!(requests <= 3 + bad.len() * 2 * 11, "{requests} requests");
}

#[tokio::test]
async fn small_pages_and_a_bad_key_at_a_page_boundary() {
    // Pages of 4 keys: the bad key is the first of the second page.
    let keys_in = [
        "p/a.json",
        "p/b.json",
        "p/c.json",
        "p/d.json",
        "p/e//x.json",
        "p/f.json",
    ];
    let bucket = Arc::new(FakeBucket::new(
        keys_in.iter().map(|k| k.to_string()).collect(),
        4,
    ));
    let listed = Lister::Bucket(bucket)
        .list(Some(&ObjectPath::from("p")))
        .await;
    assert_eq!(
        keys(&listed),
        ["p/a.json", "p/b.json", "p/c.json", "p/d.json", "p/f.json"]
    );
    assert_eq!(problem_paths(&listed), ["p/e//x.json"]);
}

#[tokio::test]
async fn another_listing_error_keeps_what_was_listed_and_reports_the_prefix() {
    let keys_in: Vec<String> = (0..10).map(|i| format!("p/{i}.json")).collect();
    let mut bucket = FakeBucket::new(keys_in.clone(), 4);
    bucket.fail_request = Some(2);
    let listed = Lister::Bucket(Arc::new(bucket))
        .list(Some(&ObjectPath::from("p")))
        .await;
    assert_eq!(keys(&listed), keys_in[..4]);
    assert_eq!(problem_paths(&listed), ["p/"]);
    assert!(listed.problems[0].reason.contains("connection reset"));
}
