//! Unit tests: rows named by a deletion disappear from search, whether indexed and committed,
//! added but not committed, or not reached by the indexer yet.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tw_pipeline::Consumer;

use crate::tests::{T0, batch, events, users};
use crate::{HOUR_MS, SearchConfig, SearchDeletion, SearchIndexes};

#[test]
fn deleted_rows_are_not_found_wherever_the_indexer_had_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = SearchConfig::new(dir.path().join("search"));
    let indexes = SearchIndexes::open(config.clone()).unwrap();
    let stream = tw_core::StreamName::new("cloudtrail").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    // Offsets 0..5 committed (alice at 0 and 3, in two hours); 5 added, not committed.
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    indexer.commit_all().unwrap();
    let alice = json!({"eventName": "ListBuckets", "userIdentity": {"userName": "alice"}});
    indexer
        .write(&batch(&stream, 0, 5, &[(T0 + 4000, alice.clone())]))
        .unwrap();
    assert_eq!(
        users(&indexes, &stream, "alice").0,
        2,
        "5 is not committed yet"
    );

    // Alice's rows, and 7: past what the indexer has handled.
    let named = [
        (T0 + 1000, 0, 0),
        (T0 + HOUR_MS + 5, 0, 3),
        (T0 + 4000, 0, 5),
        (T0 + 9000, 0, 7),
    ];
    let ticket = indexes.delete_rows(&stream, named);
    indexer.tick(tw_core::now_ms()).unwrap();
    let report = ticket.wait(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        report,
        SearchDeletion {
            docs_deleted: 3,
            rows_not_indexed_yet: 1,
        }
    );
    assert_eq!(users(&indexes, &stream, "alice").0, 0);
    assert_eq!(users(&indexes, &stream, "bob").0, 1, "other rows stay");

    // 7 arrives later and is skipped; 6 is indexed.
    let dave = json!({"eventName": "ListBuckets", "userIdentity": {"userName": "erin"}});
    indexer
        .write(&batch(
            &stream,
            0,
            6,
            &[(T0 + 8000, dave), (T0 + 9000, alice)],
        ))
        .unwrap();
    indexer.commit_all().unwrap();
    assert_eq!(users(&indexes, &stream, "alice").0, 0);
    assert_eq!(users(&indexes, &stream, "erin").0, 1);
    assert_eq!(indexer.safe_offsets()[&(stream.clone(), 0)], 8);
    drop(indexer);

    // The deletion is committed: reopened indexes do not find the rows either.
    let reopened = SearchIndexes::open(config).unwrap();
    assert_eq!(users(&reopened, &stream, "alice").0, 0);
    assert_eq!(users(&reopened, &stream, "accessdenied").0, 0);
    assert_eq!(
        users(&reopened, &stream, "consolelogin").0,
        1,
        "carol's stays"
    );
}

#[test]
fn a_deletion_of_rows_never_indexed_changes_nothing() {
    let (_dir, indexes, stream) = crate::tests::indexed();
    let mut indexer = indexes.indexer();
    let committed = BTreeMap::from([((stream.clone(), 0), 5)]);
    indexer.start_at(&committed).unwrap();
    // An hour without an index, and offsets of a partition with no documents.
    let ticket = indexes.delete_rows(&stream, [(T0 - 10 * HOUR_MS, 0, 1), (T0 + 1000, 3, 0)]);
    indexer.tick(tw_core::now_ms()).unwrap();
    let report = ticket.wait(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(report.docs_deleted, 0);
    assert_eq!(
        report.rows_not_indexed_yet, 1,
        "partition 3 was never reached"
    );
    assert_eq!(users(&indexes, &stream, "alice").0, 2);
}

#[test]
fn a_ticket_nobody_answers_times_out() {
    let (_dir, indexes, stream) = crate::tests::indexed();
    let ticket = indexes.delete_rows(&stream, [(T0 + 1000, 0, 0)]);
    assert!(ticket.wait(Duration::from_millis(50)).is_none());
}
