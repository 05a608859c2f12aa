//! Unit tests: indexing, the query language, time pruning, errors, restart.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Record, StreamName};
use tw_pipeline::EventBatch;

use crate::{HOUR_MS, SearchConfig, SearchError, SearchIndexes, SearchRequest};

pub(crate) const T0: i64 = 1_764_655_200_000; // 2025-12-02T06:00:00Z, an hour boundary

pub(crate) fn batch(
    stream: &StreamName,
    partition: u32,
    first_offset: u64,
    events: &[(i64, Value)],
) -> EventBatch {
    let records = events
        .iter()
        .enumerate()
        .map(|(i, (time, event))| Record {
            offset: first_offset + i as u64,
            ingest_time_ms: *time,
            event_time_ms: *time,
            key: Bytes::new(),
            payload: Bytes::from(event.to_string()),
        })
        .collect();
    EventBatch {
        stream: stream.clone(),
        partition,
        records,
        events: events.iter().map(|(_, e)| e.clone()).collect(),
        checked: Vec::new(),
        fields: Vec::new(),
    }
}

pub(crate) fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        from_ms: None,
        to_ms: None,
        limit: 100,
    }
}

pub(crate) fn events() -> Vec<(i64, Value)> {
    vec![
        (
            T0 + 1000,
            json!({"eventName": "ConsoleLogin", "userIdentity": {"userName": "alice"}, "errorCode": "AccessDenied", "bytes": 10}),
        ),
        (
            T0 + 2000,
            json!({"eventName": "GetObject", "userIdentity": {"userName": "bob"}, "userAgent": "aws-cli/2.15 Python/3.11", "bytes": 300}),
        ),
        (
            T0 + 3000,
            json!({"eventName": "ConsoleLogin", "userIdentity": {"userName": "carol"}, "tags": ["prod", "payments"], "bytes": 50}),
        ),
        (
            T0 + HOUR_MS + 5,
            json!({"eventName": "DeleteBucket", "userIdentity": {"userName": "alice"}, "errorCode": "AccessDenied", "bytes": 7}),
        ),
        (
            T0 + 2 * HOUR_MS + 9,
            json!({"eventName": "PutObject", "userIdentity": {"userName": "dave"}, "sourceIPAddress": "10.1.2.3", "bytes": 1}),
        ),
    ]
}

pub(crate) fn indexed() -> (tempfile::TempDir, SearchIndexes, StreamName) {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path().join("search"))).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    indexer.commit_all().unwrap();
    (dir, indexes, stream)
}

pub(crate) fn users(
    indexes: &SearchIndexes,
    stream: &StreamName,
    query: &str,
) -> (u64, Vec<String>) {
    let result = indexes.search(stream, &request(query)).unwrap();
    let names = result
        .hits
        .iter()
        .map(|hit| {
            hit.event["userIdentity"]["userName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    (result.total, names)
}

#[test]
fn query_language_terms_fields_phrases_booleans_wildcards_ranges() {
    let (_dir, indexes, stream) = indexed();
    // Bare term over every string value, newest first.
    assert_eq!(
        users(&indexes, &stream, "accessdenied"),
        (2, vec!["alice".into(), "alice".into()])
    );
    assert_eq!(users(&indexes, &stream, "alice").0, 2);
    // field:value on nested paths; case-insensitive like the default analyzer.
    assert_eq!(
        users(&indexes, &stream, "userIdentity.userName:bob").1,
        vec!["bob"]
    );
    assert_eq!(
        users(&indexes, &stream, "eventName:consolelogin").1,
        vec!["carol", "alice"]
    );
    // Phrase, boolean operators, NOT, prefix wildcard, arrays, numeric ranges.
    assert_eq!(users(&indexes, &stream, "\"aws-cli/2.15\"").1, vec!["bob"]);
    // NOT, `-`, wildcards, regexes, numeric ranges and IPs: see `tests_lang`.
    assert_eq!(
        users(
            &indexes,
            &stream,
            "userIdentity.userName:bob OR userIdentity.userName:dave"
        )
        .0,
        2
    );
    assert_eq!(users(&indexes, &stream, "tags:payments").1, vec!["carol"]);
    assert_eq!(
        users(
            &indexes,
            &stream,
            &format!("_time:[{} TO {}]", T0, T0 + 2500)
        )
        .0,
        2
    );
    assert_eq!(users(&indexes, &stream, "\"10.1.2.3\"").1, vec!["dave"]);
    assert_eq!(users(&indexes, &stream, "nosuchterm").0, 0);
    // Exists, with or without the `_event.` prefix, and its negation.
    assert_eq!(users(&indexes, &stream, "_event.errorCode:*").0, 2);
    assert_eq!(users(&indexes, &stream, "errorCode:*").0, 2);
    assert_eq!(users(&indexes, &stream, "NOT errorCode:*").0, 3);
    // Everything, newest first; the total counts past the limit.
    let all = indexes
        .search(
            &stream,
            &SearchRequest {
                limit: 2,
                ..request("")
            },
        )
        .unwrap();
    assert_eq!(all.total, 5);
    let offsets: Vec<u64> = all.hits.iter().map(|h| h.offset).collect();
    assert_eq!(offsets, vec![4, 3]);
    assert_eq!(all.hits[0].time, "2025-12-02T08:00:00.009Z");
}

#[test]
fn time_range_opens_only_overlapping_hours() {
    let (_dir, indexes, stream) = indexed();
    assert_eq!(indexes.hours(&stream).unwrap().len(), 3);
    let one_hour = SearchRequest {
        from_ms: Some(T0 + HOUR_MS),
        to_ms: Some(T0 + 2 * HOUR_MS),
        ..request("alice")
    };
    let result = indexes.search(&stream, &one_hour).unwrap();
    assert_eq!((result.total, result.indexes_searched), (1, 1));
    assert_eq!(result.hits[0].event["eventName"], "DeleteBucket");
    // Bounds inside an hour filter by exact event time too.
    let inside = SearchRequest {
        from_ms: Some(T0 + 1500),
        to_ms: Some(T0 + 3000),
        ..request("")
    };
    let result = indexes.search(&stream, &inside).unwrap();
    assert_eq!((result.total, result.indexes_searched), (1, 1));
    assert_eq!(result.hits[0].event["userIdentity"]["userName"], "bob");
    let none = SearchRequest {
        from_ms: Some(T0 + 10 * HOUR_MS),
        ..request("")
    };
    assert_eq!(indexes.search(&stream, &none).unwrap().indexes_searched, 0);
}

#[test]
fn bad_query_is_a_clear_client_error() {
    let (_dir, indexes, stream) = indexed();
    for bad in ["eventName:(", "\"unclosed", "bytes:[1 TO"] {
        let error = indexes.search(&stream, &request(bad)).unwrap_err();
        assert!(error.is_bad_request(), "{bad}: {error}");
        assert!(
            error.to_string().starts_with("invalid search query"),
            "{error}"
        );
    }
    let error = crate::parse_time_bound("yesterday", 0).unwrap_err();
    assert!(matches!(error, SearchError::BadTime { .. }));
    assert_eq!(
        crate::parse_time_bound("now-2h", 10 * HOUR_MS).unwrap(),
        8 * HOUR_MS
    );
    assert_eq!(
        crate::parse_time_bound("2025-12-02T06:00:00Z", 0).unwrap(),
        T0
    );
    assert_eq!(crate::parse_time_bound("123", 0).unwrap(), 123);
}

#[test]
fn unknown_stream_has_no_hits() {
    let (_dir, indexes, _) = indexed();
    let other = StreamName::new("other").unwrap();
    let result = indexes.search(&other, &request("alice")).unwrap();
    assert_eq!((result.total, result.indexes_searched), (0, 0));
}

#[test]
fn restart_replays_without_duplicates_and_resumes() {
    let (dir, indexes, stream) = indexed();
    let root = indexes.config().root.clone();
    drop(indexes);
    // Offsets were never committed (a crash right after the index commit): the whole batch is
    // replayed, and the commit payloads make the replay add nothing twice.
    let reopened = SearchIndexes::open(SearchConfig::new(&root)).unwrap();
    let mut indexer = reopened.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    let more = [(
        T0 + 2 * HOUR_MS + 10,
        json!({"eventName": "PutObject", "userIdentity": {"userName": "erin"}}),
    )];
    indexer.write(&batch(&stream, 0, 5, &more)).unwrap();
    // Nothing is safe before the commit round.
    assert!(tw_pipeline::Consumer::safe_offsets(&indexer).is_empty());
    indexer.commit_all().unwrap();
    let safe = tw_pipeline::Consumer::safe_offsets(&indexer);
    assert_eq!(safe.get(&(stream.clone(), 0)), Some(&6));
    assert_eq!(reopened.search(&stream, &request("")).unwrap().total, 6);
    assert_eq!(users(&reopened, &stream, "erin").0, 1);
    // A retried batch (same records again in this run) is skipped too.
    indexer.write(&batch(&stream, 0, 5, &more)).unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(reopened.search(&stream, &request("")).unwrap().total, 6);
    drop(dir);
}

#[test]
fn writers_beyond_the_limit_are_committed_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = SearchConfig {
        max_open_writers: 1,
        ..SearchConfig::new(dir.path())
    };
    let indexes = SearchIndexes::open(config).unwrap();
    let stream = StreamName::new("s").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    // Alternating hours force an eviction per event; each event is indexed once.
    let alternating: Vec<(i64, Value)> = (0..6)
        .map(|i| (T0 + (i % 2) * HOUR_MS, json!({"n": format!("e{i}")})))
        .collect();
    indexer.write(&batch(&stream, 0, 0, &alternating)).unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(indexes.search(&stream, &request("")).unwrap().total, 6);
}

#[test]
fn new_hours_store_events_with_zstd_and_lz4_hours_stay_readable() {
    use tantivy::store::Compressor;

    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path().join("search"))).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    // The first hour as an earlier version made it: tantivy's default store (lz4).
    let old_hour = indexes.stream_dir(&stream).join(crate::hour_dir_name(T0));
    std::fs::create_dir_all(&old_hour).unwrap();
    tantivy::Index::create_in_dir(&old_hour, crate::schema().0).unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    indexer.commit_all().unwrap();
    let store_of = |hour_ms: i64| {
        let path = indexes
            .stream_dir(&stream)
            .join(crate::hour_dir_name(hour_ms));
        tantivy::Index::open_in_dir(path)
            .unwrap()
            .settings()
            .docstore_compression
    };
    assert_eq!(store_of(T0), Compressor::Lz4);
    assert!(matches!(store_of(T0 + HOUR_MS), Compressor::Zstd(_)));
    // Events come back whole from both kinds of store.
    let (total, mut names) = users(&indexes, &stream, "");
    names.sort();
    assert_eq!(total, 5);
    assert_eq!(names, ["alice", "alice", "bob", "carol", "dave"]);
}

#[test]
fn merged_segments_are_searched_and_the_replaced_ones_released() {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path().join("search"))).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    // A segment per commit; the 16th makes the merge policy merge all 16 (through
    // `on_demand`) in the background, after the commit.
    let commits = 16u64;
    for i in 0..commits {
        let events: Vec<(i64, Value)> = (0..3)
            .map(|j| {
                let user = format!("user{i}x{j}");
                (
                    T0 + 1000,
                    json!({"userIdentity": {"userName": user}, "n": i}),
                )
            })
            .collect();
        indexer.write(&batch(&stream, 0, i * 3, &events)).unwrap();
        indexer.commit_all().unwrap();
    }
    let hour = indexes.hour(&stream, T0, false).unwrap().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hour.index.searchable_segment_ids().unwrap().len() > 1 {
        assert!(std::time::Instant::now() < deadline, "no merge within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Nothing more is committed: the reload after merges shows searches the merged index
    // (and lets go of the 16 merged-away segments).
    indexer.reload_after_merges().unwrap();
    assert_eq!(hour.reader.searcher().segment_readers().len(), 1);
    let (total, mut names) = users(&indexes, &stream, "");
    assert_eq!(total, commits * 3);
    names.sort();
    let mut expected: Vec<String> = (0..commits)
        .flat_map(|i| (0..3).map(move |j| format!("user{i}x{j}")))
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(users(&indexes, &stream, "user7x2").0, 1);
}

#[test]
fn retention_deletes_the_hours_past_it_and_their_writers() {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path().join("search"))).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    let kept = StreamName::new("kept").unwrap();
    let retention: crate::RetentionOf = std::sync::Arc::new(|stream: &StreamName| {
        (stream.as_str() == "cloudtrail").then_some(90 * 60_000)
    });
    let mut indexer = indexes.indexer().with_retention(retention);
    indexer.start_at(&BTreeMap::new()).unwrap();
    // Hours T0, T0+1h and T0+2h of both streams; the writers stay open (uncommitted events
    // in the first hour).
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    indexer.write(&batch(&kept, 0, 0, &events())).unwrap();
    indexer.commit_all().unwrap();
    let late = [(T0 + 10, json!({"userIdentity": {"userName": "late"}}))];
    indexer.write(&batch(&stream, 0, 5, &late)).unwrap();

    // 90 minutes after T0+2h30: the hours ending at or before T0+2h (T0 and T0+1h) are past it.
    let deleted = indexer
        .apply_retention(T0 + 2 * HOUR_MS + 30 * 60_000 + 90 * 60_000)
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(indexes.hours(&stream).unwrap(), [T0 + 2 * HOUR_MS]);
    indexer.commit_all().unwrap();
    assert_eq!(users(&indexes, &stream, "").1, ["dave"]);
    // A stream without retention keeps everything.
    assert_eq!(indexes.search(&kept, &request("")).unwrap().total, 5);
    // Nothing more to delete; a late event of a deleted hour makes a new index.
    assert_eq!(indexer.apply_retention(T0 + 4 * HOUR_MS).unwrap(), 0);
    indexer.write(&batch(&stream, 0, 6, &late)).unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(users(&indexes, &stream, "late").1, ["late"]);
}

#[test]
fn searches_keep_at_most_max_open_hours_open_but_never_a_writers() {
    let dir = tempfile::tempdir().unwrap();
    let config = SearchConfig {
        max_open_hours: 2,
        ..SearchConfig::new(dir.path().join("search"))
    };
    let indexes = SearchIndexes::open(config).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    let user = |name: &str| json!({"userIdentity": {"userName": name}});
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    let hourly: Vec<(i64, Value)> = (0..5)
        .map(|i| (T0 + i * HOUR_MS, user(&format!("u{i}"))))
        .collect();
    indexer.write(&batch(&stream, 0, 0, &hourly)).unwrap();
    indexer.commit_all().unwrap();
    drop(indexer);
    let open = || indexes.lock().hours.len();
    // A search over every hour opens them one after the other and keeps the last two.
    assert_eq!(indexes.search(&stream, &request("")).unwrap().total, 5);
    assert_eq!(open(), 2);
    assert_eq!(indexes.search(&stream, &request("u4")).unwrap().total, 1);
    assert_eq!(open(), 2);

    // The index a writer holds is never forgotten, even when searches open more hours than
    // the limit: the writer's commits reload that reader, and only that one.
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    let newest = T0 + 4 * HOUR_MS + 1;
    indexer
        .write(&batch(&stream, 0, 5, &[(newest, user("late"))]))
        .unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(indexes.search(&stream, &request("")).unwrap().total, 6);
    indexer
        .write(&batch(&stream, 0, 6, &[(newest, user("later"))]))
        .unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(users(&indexes, &stream, "later").1, ["later"]);
    assert_eq!(indexes.search(&stream, &request("")).unwrap().total, 7);
}

#[test]
fn an_hour_cached_after_its_removal_is_not_handed_out() {
    let (_dir, indexes, stream) = indexed();
    let stale = indexes.hour(&stream, T0, false).unwrap().unwrap();
    // Retention removes the hour, then a search that was opening it puts it back.
    indexes.remove_hours(&stream, |hour| hour == T0).unwrap();
    let max_open = indexes.config().max_open_hours;
    indexes.lock().insert((stream.clone(), T0), stale, max_open);
    assert!(indexes.hour(&stream, T0, false).unwrap().is_none());
    // A late event of that hour gets a new index.
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    let late = [(T0 + 5, json!({"userIdentity": {"userName": "late"}}))];
    indexer.write(&batch(&stream, 0, 100, &late)).unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(users(&indexes, &stream, "").1, ["dave", "alice", "late"]);
}
