//! File and row-group pruning: partition columns, `_time` bounds, statistics.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use serde_json::json;

use super::fixture::*;
use crate::QueryConfig;

#[tokio::test]
async fn partition_filters_prune_files() {
    let mut lake = FixtureLake::new();
    let schema = Arc::new(Schema::new(system_fields()));
    let files = [
        (2024, 1, 1, 9),
        (2024, 1, 1, 10),
        (2024, 1, 2, 10),
        (2023, 12, 31, 10),
    ];
    for (i, ymdh) in files.iter().enumerate() {
        let (y, m, d, h) = *ymdh;
        let offset = i as i64;
        lake.write_file(
            "ct",
            *ymdh,
            &format!("p000-{offset:020}-{offset:020}.parquet"),
            &batch(&[ms(y, m, d, h)], 0, &[offset], vec![]),
            16,
        );
    }
    lake.stream("ct", Some(Arc::clone(&schema)), empty_hot(schema));
    let engine = lake.engine(QueryConfig::default());

    assert_eq!(
        rows(
            &engine,
            "SELECT _offset FROM ct WHERE year = 2024 AND hour = 10 ORDER BY _offset"
        )
        .await,
        vec![json!({"_offset": 1}), json!({"_offset": 2})]
    );
    let plan = crate::to_pretty_table(
        &run(
            &engine,
            "EXPLAIN SELECT _offset FROM ct WHERE year = 2024 AND hour = 10",
        )
        .await
        .batches,
    )
    .expect("plan");
    assert!(
        plan.contains("p000-00000000000000000001-00000000000000000001.parquet"),
        "{plan}"
    );
    assert!(
        plan.contains("p000-00000000000000000002-00000000000000000002.parquet"),
        "{plan}"
    );
    assert!(
        !plan.contains("p000-00000000000000000000-00000000000000000000.parquet"),
        "hour 9 scanned: {plan}"
    );
    assert!(
        !plan.contains("p000-00000000000000000003-00000000000000000003.parquet"),
        "year 2023 scanned: {plan}"
    );
    // Zero-padded directories (`month=01/day=02`) match unpadded literals.
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset FROM ct WHERE year = 2024 AND month = 1 AND day = 2 AND hour = 10"
        )
        .await,
        vec![json!({"_offset": 2})]
    );
}

#[tokio::test]
async fn time_predicates_prune_row_groups() {
    let mut lake = FixtureLake::new();
    let schema = Arc::new(Schema::new(system_fields()));
    let t = ms(2024, 1, 1, 10);
    let times: Vec<i64> = (0..8).map(|i| t + i * 60_000).collect();
    let offsets: Vec<i64> = (0..8).collect();
    // Four row groups of two rows each, in time order.
    lake.write_file(
        "ct",
        (2024, 1, 1, 10),
        "p000-00000000000000000000-00000000000000000007.parquet",
        &batch(&times, 0, &offsets, vec![]),
        2,
    );
    lake.stream("ct", Some(Arc::clone(&schema)), empty_hot(schema));
    let engine = lake.engine(QueryConfig::default());
    let sql = format!(
        "SELECT _offset FROM ct WHERE _time >= to_timestamp_millis({}) ORDER BY _offset",
        t + 6 * 60_000
    );
    assert_eq!(
        rows(&engine, &sql).await,
        vec![json!({"_offset": 6}), json!({"_offset": 7})]
    );
    let analyzed = crate::to_pretty_table(
        &run(&engine, &format!("EXPLAIN ANALYZE {sql}"))
            .await
            .batches,
    )
    .expect("plan");
    assert!(
        analyzed.contains("row_groups_pruned_statistics=4 total \u{2192} 1 matched"),
        "{analyzed}"
    );
}

#[tokio::test]
async fn time_bounds_prune_hour_directories() {
    let mut lake = FixtureLake::new();
    let schema = Arc::new(Schema::new(system_fields()));
    let hours = [
        (2023, 12, 31, 23),
        (2024, 1, 1, 9),
        (2024, 1, 1, 10),
        (2024, 1, 1, 11),
    ];
    for (i, ymdh) in hours.iter().enumerate() {
        let (y, m, d, h) = *ymdh;
        let start = ms(y, m, d, h);
        let offsets = [2 * i as i64, 2 * i as i64 + 1];
        let file = format!("p000-{:020}-{:020}.parquet", offsets[0], offsets[1]);
        // One row at the top of the hour, one at :45.
        let rows = batch(&[start, start + 45 * 60_000], 0, &offsets, vec![]);
        lake.write_file("ct", *ymdh, &file, &rows, 16);
    }
    lake.stream("ct", Some(Arc::clone(&schema)), empty_hot(schema));
    let engine = lake.engine(QueryConfig::default());
    let file = |i: i64| format!("p000-{:020}-{:020}.parquet", 2 * i, 2 * i + 1);
    let cases: [(&str, &[i64], &[i64]); 5] = [
        (
            "_time >= '2024-01-01T10:30:00Z' AND _time < '2024-01-01T11:00:00Z'",
            &[5],
            &[2],
        ),
        // Hour 9 may hold rows after 09:45 and hour 11 rows at 11:00: both are scanned.
        (
            "_time > '2024-01-01T09:45:00Z' AND _time <= '2024-01-01T11:00:00Z'",
            &[4, 5, 6],
            &[1, 2, 3],
        ),
        (
            "_time > '2024-01-01T09:59:59.999Z' AND _time < '2024-01-01T11:00:00Z'",
            &[4, 5],
            &[2],
        ),
        (
            "_time BETWEEN '2023-12-31T23:50:00Z' AND '2024-01-01T09:00:00Z'",
            &[2],
            &[0, 1],
        ),
        ("'2024-01-01T11:00:00Z' <= _time", &[6, 7], &[3]),
    ];
    for (predicate, expected_offsets, scanned_files) in cases {
        let sql = format!("SELECT _offset FROM ct WHERE {predicate} ORDER BY _offset");
        let expected: Vec<_> = expected_offsets
            .iter()
            .map(|o| json!({"_offset": o}))
            .collect();
        assert_eq!(rows(&engine, &sql).await, expected, "{predicate}");
        let plan = crate::to_pretty_table(&run(&engine, &format!("EXPLAIN {sql}")).await.batches)
            .expect("plan");
        for i in 0..4 {
            let scanned = plan.contains(&file(i));
            assert_eq!(
                scanned,
                scanned_files.contains(&i),
                "{predicate}: file {i} in {plan}"
            );
        }
    }
}
