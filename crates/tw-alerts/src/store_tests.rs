//! Tests of the alert store: every oracle is exact.

use std::io::Write;

use tw_core::{Alert, Severity};

use super::*;

fn alert(key: &str, rule: &str, severity: Severity, stream: &str, created_at_ms: i64) -> Alert {
    Alert {
        id: Alert::id_for(key),
        dedup_key: key.to_owned(),
        rule_id: rule.to_owned(),
        rule_title: format!("title of {rule}"),
        rule_version: 1,
        severity,
        stream: stream.to_owned(),
        event_time_ms: created_at_ms - 500,
        created_at_ms,
        group: None,
        window: None,
        value: None,
        events: vec![serde_json::json!({"key": key}).into()],
        event_refs: vec![tw_core::EventLocation {
            partition: 0,
            offset: 7,
        }],
        tags: vec![],
    }
}

fn simple(key: &str, created_at_ms: i64) -> Alert {
    alert(key, "r1", Severity::Medium, "s1", created_at_ms)
}

fn keys(alerts: &[Alert]) -> Vec<&str> {
    alerts
        .iter()
        .map(|alert| alert.dedup_key.as_str())
        .collect()
}

#[test]
fn insert_drops_known_and_repeated_keys_and_announces_only_new_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AlertStore::open(dir.path()).expect("open");
    let mut receiver = store.subscribe();
    let stored = store
        .insert(vec![simple("a", 1), simple("b", 2), simple("a", 3)])
        .expect("insert");
    assert_eq!(stored, vec![simple("a", 1), simple("b", 2)]);
    let stored = store
        .insert(vec![simple("b", 9), simple("c", 4)])
        .expect("insert");
    assert_eq!(stored, vec![simple("c", 4)]);
    assert_eq!(store.insert(vec![simple("a", 1)]).expect("insert"), vec![]);
    assert_eq!(store.len(), 3);
    for expected in [simple("a", 1), simple("b", 2), simple("c", 4)] {
        assert_eq!(receiver.try_recv().expect("announced"), expected);
    }
    assert!(matches!(
        receiver.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    assert_eq!(store.get(&Alert::id_for("b")), Some(simple("b", 2)));
    assert_eq!(store.get("nope"), None);
    assert!(store.contains_dedup_key("c") && !store.contains_dedup_key("d"));
}

#[test]
fn insert_pending_moves_the_stored_alerts_out_and_empties_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AlertStore::open(dir.path()).expect("open");
    let mut pending = vec![simple("a", 1), simple("b", 2), simple("a", 3)];
    let stored = store.insert_pending(&mut pending).expect("insert");
    assert_eq!(stored, vec![simple("a", 1), simple("b", 2)]);
    assert!(pending.is_empty());
    let mut known = vec![simple("b", 5)];
    assert_eq!(store.insert_pending(&mut known).expect("insert"), vec![]);
    assert!(known.is_empty(), "a batch of known keys is done with too");
    drop(store);
    let reopened = AlertStore::open(dir.path()).expect("reopen");
    assert_eq!(reopened.len(), 2);
    assert_eq!(reopened.get(&Alert::id_for("b")), Some(simple("b", 2)));
}

#[test]
fn list_filters_and_orders_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AlertStore::open(dir.path()).expect("open");
    // Inserted out of created_at order on purpose: list must sort by created_at_ms.
    store
        .insert(vec![
            alert("k3", "r1", Severity::High, "s1", 300),
            alert("k1", "r1", Severity::Low, "s1", 100),
            alert("k5", "r2", Severity::Critical, "s2", 500),
            alert("k2", "r2", Severity::Medium, "s1", 200),
            alert("k4", "r1", Severity::Info, "s2", 400),
        ])
        .expect("insert");
    let list = |filter: AlertFilter| {
        keys(&store.list(&filter))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(list(AlertFilter::default()), ["k5", "k4", "k3", "k2", "k1"]);
    assert_eq!(
        list(AlertFilter {
            limit: 2,
            ..Default::default()
        }),
        ["k5", "k4"]
    );
    assert_eq!(
        list(AlertFilter {
            since_ms: Some(300),
            ..Default::default()
        }),
        ["k5", "k4", "k3"]
    );
    assert_eq!(
        list(AlertFilter {
            rule_id: Some("r2".into()),
            ..Default::default()
        }),
        ["k5", "k2"]
    );
    assert_eq!(
        list(AlertFilter {
            min_severity: Some(Severity::Medium),
            ..Default::default()
        }),
        ["k5", "k3", "k2"]
    );
    assert_eq!(
        list(AlertFilter {
            stream: Some("s2".into()),
            ..Default::default()
        }),
        ["k5", "k4"]
    );
    assert_eq!(
        list(AlertFilter {
            since_ms: Some(150),
            rule_id: Some("r1".into()),
            min_severity: Some(Severity::Low),
            stream: Some("s1".into()),
            limit: 10
        }),
        ["k3"]
    );
}

#[test]
fn reopen_restores_alerts_and_dedup_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inserted = vec![
        simple("a", 10),
        alert("b", "r2", Severity::Critical, "s2", 20),
    ];
    {
        let store = AlertStore::open(dir.path()).expect("open");
        store.insert(inserted.clone()).expect("insert");
    }
    let text = std::fs::read_to_string(dir.path().join(ALERTS_FILE)).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"format":"tidewatch-alerts","version":1}"#);
    assert_eq!(
        lines[1..],
        inserted
            .iter()
            .map(|a| serde_json::to_string(a).expect("json"))
            .collect::<Vec<_>>()[..]
    );

    let store = AlertStore::open(dir.path()).expect("reopen");
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.list(&AlertFilter::default()),
        vec![inserted[1].clone(), inserted[0].clone()]
    );
    assert_eq!(
        store.insert(vec![simple("a", 99)]).expect("insert"),
        vec![],
        "replay must not page twice"
    );
}

#[test]
fn torn_last_line_is_cut_and_later_appends_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(ALERTS_FILE);
    {
        let store = AlertStore::open(dir.path()).expect("open");
        store.insert(vec![simple("a", 1)]).expect("insert");
    }
    let good_len = std::fs::metadata(&path).expect("meta").len();
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open file");
    file.write_all(br#"{"id":"0000","dedup_key":"torn","rule_"#)
        .expect("write torn tail");
    drop(file);

    let store = AlertStore::open(dir.path()).expect("torn tail is recovered");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        good_len,
        "torn bytes are cut"
    );
    assert_eq!(store.list(&AlertFilter::default()), vec![simple("a", 1)]);
    assert!(!store.contains_dedup_key("torn"));
    store
        .insert(vec![simple("b", 2)])
        .expect("insert after recovery");
    drop(store);
    let store = AlertStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.list(&AlertFilter::default()),
        vec![simple("b", 2), simple("a", 1)]
    );
}

#[test]
fn torn_header_of_a_new_store_is_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(ALERTS_FILE), br#"{"format":"tidew"#).expect("write");
    let store = AlertStore::open(dir.path()).expect("open");
    assert!(store.is_empty());
    store.insert(vec![simple("a", 1)]).expect("insert");
    drop(store);
    assert_eq!(AlertStore::open(dir.path()).expect("reopen").len(), 1);
}

#[test]
fn corrupt_middle_line_fails_open_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = AlertStore::open(dir.path()).expect("open");
        store.insert(vec![simple("a", 1)]).expect("insert");
    }
    let path = dir.path().join(ALERTS_FILE);
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open file");
    file.write_all(b"not json\n").expect("write");
    file.write_all(
        format!(
            "{}\n",
            serde_json::to_string(&simple("b", 2)).expect("json")
        )
        .as_bytes(),
    )
    .expect("write");
    drop(file);
    match AlertStore::open(dir.path()) {
        Err(AlertError::Corrupt {
            line,
            path: reported,
            ..
        }) => {
            assert_eq!(line, 3);
            assert_eq!(reported, path);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn unknown_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(ALERTS_FILE),
        b"{\"format\":\"tidewatch-alerts\",\"version\":7}\n",
    )
    .expect("write");
    match AlertStore::open(dir.path()) {
        Err(AlertError::UnsupportedVersion {
            version: 7,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn memory_keeps_newest_alerts_but_every_dedup_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { max_in_memory: 2 };
    let store = AlertStore::open_with(dir.path(), options).expect("open");
    store
        .insert((1..=5).map(|n| simple(&format!("k{n}"), n)).collect())
        .expect("insert");
    assert_eq!(store.len(), 5);
    assert_eq!(keys(&store.list(&AlertFilter::default())), ["k5", "k4"]);
    assert_eq!(store.get(&Alert::id_for("k1")), None);
    assert_eq!(store.get(&Alert::id_for("k4")), Some(simple("k4", 4)));
    assert_eq!(store.insert(vec![simple("k1", 1)]).expect("insert"), vec![]);
    drop(store);
    let store = AlertStore::open_with(dir.path(), options).expect("reopen");
    assert_eq!(store.len(), 5);
    assert_eq!(keys(&store.list(&AlertFilter::default())), ["k5", "k4"]);
    assert!(store.contains_dedup_key("k1"));
}
