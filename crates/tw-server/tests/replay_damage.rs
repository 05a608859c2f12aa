//! A backtest over stored records that meets damage on disk (a flipped bit the log's checksums
//! catch) steps over the damaged record, evaluates every other one, and says how many it could
//! not read. Regression: the backtest failed as a whole at the damage.

use std::sync::Arc;

use bytes::Bytes;
use tw_core::{AppendRecord, StreamName};
use tw_detect::{EngineConfig, RuleFormat, parse_rule};
use tw_log::testing::damage_record;
use tw_log::{DiskLog, Log, LogConfig};
use tw_server::replay_stored;

const RECORDS: u64 = 8;
const DAMAGED: u64 = 3;

#[test]
fn a_backtest_steps_over_a_damaged_record_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    for n in 0..RECORDS {
        let record = AppendRecord {
            ingest_time_ms: 1_000 + n as i64,
            event_time_ms: 1_000 + n as i64,
            key: Bytes::new(),
            payload: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(40))),
        };
        futures::executor::block_on(log.append(&stream, 0, vec![record])).unwrap();
    }
    damage_record(&dir.path().join("log/s/0"), DAMAGED);

    let rule = "id: every\ntitle: Every event\nstream: s\nmatch: {field: n, exists: true}\n";
    let rule = Arc::new(
        parse_rule(rule, RuleFormat::Yaml)
            .unwrap()
            .compile()
            .unwrap(),
    );
    let outcome = replay_stored(
        log.as_ref(),
        None,
        rule,
        &EngineConfig::default(),
        0,
        i64::MAX,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(outcome.evaluated, RECORDS - 1);
    assert_eq!(outcome.unreadable, 1);
    let mut offsets: Vec<u64> = outcome
        .alerts
        .iter()
        .flat_map(|alert| alert.event_refs.iter().map(|e| e.offset))
        .collect();
    offsets.sort_unstable();
    let expected: Vec<u64> = (0..RECORDS).filter(|n| *n != DAMAGED).collect();
    assert_eq!(offsets, expected);
}
