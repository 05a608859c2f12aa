//! Unit tests of the query language on event fields: negation, wildcards, regexes, ranges,
//! IP/CIDR, per-stream field selection, raw text, hostile queries, and the layout marker.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Record, StreamName};
use tw_pipeline::{Consumer, EventBatch};

use crate::tests::{T0, batch, events, indexed, request, users};
use crate::{HOUR_MS, SearchConfig, SearchError, SearchIndexes, SearchRequest};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn total(indexes: &SearchIndexes, stream: &StreamName, query: &str) -> u64 {
    match indexes.search(stream, &request(query)) {
        Ok(result) => result.total,
        Err(error) => panic!("{query}: {error}"),
    }
}

fn bad(indexes: &SearchIndexes, stream: &StreamName, query: &str) -> String {
    let error = indexes.search(stream, &request(query)).unwrap_err();
    assert!(error.is_bad_request(), "{query}: {error}");
    error.to_string()
}

/// An index of `events` (each `(time, event)`), committed once per slice (one segment each).
fn index_of(slices: &[Vec<Value>]) -> (tempfile::TempDir, SearchIndexes, StreamName) {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path().join("search"))).unwrap();
    let stream = StreamName::new("s").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    let mut offset = 0;
    for slice in slices {
        let timed: Vec<(i64, Value)> = slice
            .iter()
            .enumerate()
            .map(|(i, e)| (T0 + offset as i64 * 1000 + i as i64, e.clone()))
            .collect();
        indexer.write(&batch(&stream, 0, offset, &timed)).unwrap();
        indexer.commit_all().unwrap();
        offset += slice.len() as u64;
    }
    (dir, indexes, stream)
}

#[test]
fn not_and_minus_exclude_and_a_purely_negative_query_means_everything_else() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    assert_eq!(
        users(&indexes, s, "NOT errorCode:AccessDenied"),
        (3, names(&["dave", "carol", "bob"]))
    );
    assert_eq!(
        users(&indexes, s, "-accessdenied").1,
        names(&["dave", "carol", "bob"])
    );
    assert_eq!(
        users(
            &indexes,
            s,
            "eventName:ConsoleLogin AND NOT userIdentity.userName:alice"
        )
        .1,
        names(&["carol"])
    );
    assert_eq!(
        users(&indexes, s, "consolelogin -alice").1,
        names(&["carol"])
    );
    assert_eq!(
        users(&indexes, s, "alice OR (NOT eventName:ConsoleLogin)").1,
        names(&["dave", "alice", "bob", "alice"])
    );
    assert_eq!(users(&indexes, s, "NOT (NOT alice)").0, 2);
    // With a time range: everything in range except the excluded.
    let ranged = SearchRequest {
        from_ms: Some(T0 + HOUR_MS),
        ..request("NOT alice")
    };
    let result = indexes.search(s, &ranged).unwrap();
    assert_eq!(result.total, 1);
    assert_eq!(result.hits[0].event["userIdentity"]["userName"], "dave");
}

#[test]
fn wildcards_match_within_a_word_and_a_trailing_one_after_words() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    assert_eq!(users(&indexes, s, "eventName:Get*").1, names(&["bob"]));
    assert_eq!(
        users(&indexes, s, "_event.eventName:get*").1,
        names(&["bob"])
    );
    assert_eq!(
        users(&indexes, s, "eventName:*object").1,
        names(&["dave", "bob"])
    );
    assert_eq!(users(&indexes, s, "eventName:?etObject").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "eventName:Get*Obj*").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "userAgent:*pyth*").1, names(&["bob"]));
    assert_eq!(
        users(&indexes, s, "consolel*").1,
        names(&["carol", "alice"])
    );
    assert_eq!(users(&indexes, s, "userIdentity.userName:a*").0, 2);
    assert_eq!(users(&indexes, s, "tags:pay*").1, names(&["carol"]));
    // Words then a prefix: a phrase prefix.
    assert_eq!(users(&indexes, s, "userAgent:aws-cli*").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "userAgent:aws-python*").0, 0);
    assert_eq!(users(&indexes, s, "eventName:Nope*").0, 0);
    let error = bad(&indexes, s, "userAgent:*aws-cli*");
    assert!(error.contains("spans several words"), "{error}");
}

#[test]
fn regexes_match_the_lowercased_words_of_a_field() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    assert_eq!(users(&indexes, s, "eventName:/get.*/").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "eventName:/Get.*/").0, 0);
    assert_eq!(users(&indexes, s, "/console.*/").0, 2);
    assert_eq!(
        users(&indexes, s, "userIdentity.userName:/(alice|bob)/").0,
        3
    );
    // The pattern is one group: an alternation cannot escape the field.
    assert_eq!(users(&indexes, s, "eventName:/x|.*/").0, 5);
    assert_eq!(users(&indexes, s, "userIdentity.userName:/x|.*/").0, 5);
    assert!(bad(&indexes, s, "eventName:/(/").contains("invalid regex"));
    assert!(bad(&indexes, s, "_time:/1/").contains("_time"));
}

#[test]
fn ranges_on_numbers_time_and_text() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    assert_eq!(
        users(&indexes, s, "bytes:[10 TO 100]").1,
        names(&["carol", "alice"])
    );
    assert_eq!(users(&indexes, s, "bytes:{10 TO 100]").1, names(&["carol"]));
    assert_eq!(users(&indexes, s, "bytes:>=300").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "bytes:>50").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "bytes:<10").1, names(&["dave", "alice"]));
    assert_eq!(users(&indexes, s, "bytes:<=10").0, 3);
    assert_eq!(users(&indexes, s, "bytes:[* TO 9]").0, 2);
    assert_eq!(users(&indexes, s, "bytes:[* TO *]").0, 5);
    assert_eq!(
        users(&indexes, s, "bytes:[9.5 TO 10.5]").1,
        names(&["alice"])
    );
    assert_eq!(users(&indexes, s, "bytes:300").1, names(&["bob"]));
    assert_eq!(users(&indexes, s, "bytes:[1000 TO *]").0, 0);
    assert_eq!(users(&indexes, s, "bytes:>=10 AND NOT bytes:>=300").0, 2);
    // Event time: Unix ms or RFC 3339.
    assert_eq!(
        total(&indexes, s, &format!("_time:[{} TO {}]", T0, T0 + 2500)),
        2
    );
    assert_eq!(total(&indexes, s, "_time:>=2025-12-02T07:00:00Z"), 2);
    assert_eq!(
        total(&indexes, s, &format!("_time:{{{} TO *}}", T0 + 1000)),
        4
    );
    assert_eq!(total(&indexes, s, &format!("_time:{}", T0 + 2000)), 1);
    // Text bounds: the whole value, case-sensitive.
    assert_eq!(
        users(&indexes, s, "eventName:[DeleteBucket TO GetObject]").1,
        names(&["alice", "bob"])
    );
    assert!(bad(&indexes, s, "bytes:[1 TO abc]").contains("both be numbers"));
    assert!(bad(&indexes, s, "[1 TO 5]").contains("needs a field"));
    assert!(bad(&indexes, s, "_time:[yesterday TO *]").contains("_time"));
}

#[test]
fn numeric_ranges_across_integer_float_and_large_values_and_segments() {
    let first = vec![
        json!({"n": 1}),
        json!({"n": 2.5}),
        json!({"n": -3}),
        json!({"n": u64::MAX}),
    ];
    let second = vec![json!({"n": 4}), json!({"n": 0.5}), json!({"n": "text"})];
    let (_dir, indexes, s) = index_of(&[first, second]);
    assert_eq!(total(&indexes, &s, "n:[2 TO 3]"), 1);
    assert_eq!(total(&indexes, &s, "n:<0"), 1);
    assert_eq!(total(&indexes, &s, "n:>=1"), 4);
    assert_eq!(total(&indexes, &s, "n:[0.4 TO 0.6]"), 1);
    assert_eq!(total(&indexes, &s, "n:2.5"), 1);
    assert_eq!(total(&indexes, &s, "n:4"), 1);
    assert_eq!(total(&indexes, &s, "n:text"), 1);
}

#[test]
fn ip_addresses_and_cidr_blocks_v4_and_v6() {
    let events = vec![
        json!({"src": "10.1.2.3", "msg": "login"}),
        json!({"src": "10.200.0.1"}),
        json!({"src": "192.168.1.1"}),
        json!({"src": "2001:db8::1"}),
        json!({"src": "2001:db9::1"}),
        json!({"msg": "connection from 10.1.2.3 refused"}),
        json!({"dst": {"ip": ["10.9.9.9", "8.8.8.8"]}}),
    ];
    let (_dir, indexes, s) = index_of(&[events]);
    let t = |q: &str| total(&indexes, &s, q);
    assert_eq!(t("src:10.0.0.0/8"), 2);
    assert_eq!(t("src:10.1.2.3/8"), 2, "host bits are ignored");
    assert_eq!(t("src:\"10.1.2.3\""), 1);
    assert_eq!(t("src:10.1.2.3"), 1);
    assert_eq!(t("src:10.1.2.4"), 0);
    assert_eq!(t("src:\"2001:db8::/32\""), 1);
    assert_eq!(t("src:\"2001:db8::1\""), 1);
    assert_eq!(t("src:\"2001:DB8:0::1\""), 1, "any spelling of the address");
    assert_eq!(t("src:0.0.0.0/0"), 3);
    assert_eq!(t("src:\"::/0\""), 5);
    assert_eq!(t("src:[10.0.0.0 TO 10.100.0.0]"), 1);
    assert_eq!(t("NOT src:10.0.0.0/8"), 5);
    assert_eq!(t("dst.ip:10.9.0.0/16"), 1);
    assert_eq!(t("dst.ip:8.8.8.8"), 1);
    // Bare: any field holding the address (or the words, in text).
    assert_eq!(t("10.0.0.0/8"), 3);
    assert_eq!(t("\"10.1.2.3\""), 2);
    let error = bad(&indexes, &s, "src:10.0.0.0/33");
    assert!(error.contains("prefix length"), "{error}");
}

#[test]
fn only_the_configured_fields_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path())).unwrap();
    let stream = StreamName::new("cloudtrail").unwrap();
    let other = StreamName::new("other").unwrap();
    let selected = stream.clone();
    let mut indexer = indexes
        .indexer()
        .with_fields(Arc::new(move |s: &StreamName| {
            (*s == selected).then(|| vec!["eventName".to_string(), "userIdentity".to_string()])
        }));
    indexer.start_at(&BTreeMap::new()).unwrap();
    indexer.write(&batch(&stream, 0, 0, &events())).unwrap();
    indexer.write(&batch(&other, 0, 0, &events())).unwrap();
    indexer.commit_all().unwrap();
    let s = &stream;
    assert_eq!(total(&indexes, s, "eventName:ConsoleLogin"), 2);
    assert_eq!(total(&indexes, s, "userIdentity.userName:alice"), 2);
    assert_eq!(total(&indexes, s, "alice"), 2);
    for unselected in [
        "errorCode:AccessDenied",
        "accessdenied",
        "bytes:>0",
        "\"10.1.2.3\"",
    ] {
        assert_eq!(total(&indexes, s, unselected), 0, "{unselected}");
    }
    // Hits are still the whole event; other streams index every field.
    let hit = &indexes.search(s, &request("alice")).unwrap().hits[0];
    assert_eq!(hit.event["errorCode"], "AccessDenied");
    assert_eq!(total(&indexes, &other, "errorCode:AccessDenied"), 2);

    let selection = crate::indexer::Selection::new(&names(&["a.b", "d", "x.y.z"]));
    let event = json!({"a": [{"b": 1, "c": 2}, {"c": 3}], "d": {"e": "x"}, "f": 1, "x": {"y": 2}});
    assert_eq!(
        selection.apply(&event),
        json!({"a": [{"b": 1}], "d": {"e": "x"}})
    );
}

#[test]
fn raw_text_records_are_searchable_by_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let indexes = SearchIndexes::open(SearchConfig::new(dir.path())).unwrap();
    let stream = StreamName::new("syslog").unwrap();
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).unwrap();
    let payloads: [&[u8]; 3] = [
        b"Dec  2 06:00:01 host sshd[12]: Failed password for root from 10.9.8.7",
        b"{\"msg\": \"ok\"}",
        b"[1, 2]",
    ];
    let records: Vec<Record> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Record {
            offset: i as u64,
            ingest_time_ms: T0,
            event_time_ms: T0 + i as i64,
            key: Bytes::new(),
            payload: Bytes::copy_from_slice(p),
        })
        .collect();
    let events = records
        .iter()
        .map(|r| indexer.parse(&r.payload).unwrap().event)
        .collect();
    let batch = EventBatch {
        stream: stream.clone(),
        partition: 0,
        records,
        events,
        checked: Vec::new(),
        fields: Vec::new(),
    };
    indexer.write(&batch).unwrap();
    indexer.commit_all().unwrap();
    let result = indexes
        .search(&stream, &request("\"failed password\" root"))
        .unwrap();
    assert_eq!(result.total, 1);
    assert!(result.hits[0].event.as_str().unwrap().starts_with("Dec  2"));
    assert_eq!(total(&indexes, &stream, "msg:ok"), 1);
    assert_eq!(total(&indexes, &stream, "ok"), 1);
    assert_eq!(total(&indexes, &stream, "\"1 2\""), 1);
    assert_eq!(total(&indexes, &stream, ""), 3);
}

/// SplitMix64: deterministic, so a failure names a reproducible query.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn hostile_queries_are_answered_or_refused_never_a_panic() {
    let (_dir, indexes, stream) = indexed();
    let check = |query: &str| {
        if let Err(error) = indexes.search(&stream, &request(query)) {
            assert!(error.is_bad_request(), "{query:?}: {error}");
            assert!(
                error.to_string().starts_with("invalid search query"),
                "{error}"
            );
        }
    };
    let fragments = [
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "\\",
        ":",
        "*",
        "?",
        "/",
        "~",
        "^",
        "+",
        "-",
        "!",
        " ",
        "AND ",
        "OR ",
        "NOT ",
        " TO ",
        "eventName",
        "bytes",
        "_time",
        "_event",
        "_ip",
        "_raw",
        "10.0.0.0/8",
        "::",
        "a",
        "1",
        "-2.5",
        "é",
        "\u{0}",
        "\u{1}",
        ">=",
        "<",
        "IN ",
        ".",
        "..",
        "2001:db8::/200",
        "*boto*",
        "/.*/",
        "[1 TO *]",
        "\"x y\"~2",
        "\"x y\"*",
        "^2",
    ];
    let mut state = 7u64;
    for _ in 0..3000 {
        let count = 1 + next(&mut state) % 24;
        let query: String = (0..count)
            .map(|_| fragments[(next(&mut state) % fragments.len() as u64) as usize])
            .collect();
        check(&query);
    }
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(total(&indexes, &stream, &deep), 0);
    for hostile in [
        "(".repeat(100_000),
        format!("{}a", "NOT ".repeat(10_000)),
        format!("{}alice{}", "(".repeat(60), ")".repeat(60)),
        "a".repeat(1 << 20),
        "\"".repeat(3),
        "\"unclosed".into(),
        "eventName:\"".into(),
        "bytes:[1 TO".into(),
        "a:/[/".into(),
        "a:/(a*)*b{1000}/".into(),
        "bytes:[1e400 TO *]".into(),
        "_time:[99999999999999999999 TO *]".into(),
    ] {
        let error = indexes.search(&stream, &request(&hostile));
        match error {
            Err(error) => assert!(error.is_bad_request(), "{error}"),
            Ok(result) => assert!(hostile.len() < 100, "{} hits", result.total),
        }
    }
    let long = bad(&indexes, &stream, &"a ".repeat(10_000));
    assert!(long.contains("bytes long"), "{long}");
    let nested = bad(&indexes, &stream, &"(".repeat(100));
    assert!(nested.contains("levels"), "{nested}");
}

#[test]
fn indexes_of_an_older_layout_are_replaced_not_misread() {
    let (dir, indexes, stream) = indexed();
    let root = indexes.config().root.clone();
    drop(indexes);
    assert!(
        !SearchIndexes::open(SearchConfig::new(&root))
            .unwrap()
            .needs_rebuild()
    );
    std::fs::write(root.join("LAYOUT"), "1\n").unwrap();
    let mut old = SearchIndexes::open(SearchConfig::new(&root)).unwrap();
    assert!(old.needs_rebuild());
    let error = old.search(&stream, &request("")).unwrap_err();
    assert!(matches!(error, SearchError::OldLayout { .. }), "{error}");
    assert!(!error.is_bad_request());
    old.finish_rebuild().unwrap();
    assert_eq!(old.search(&stream, &request("")).unwrap().total, 0);
    let reopened = SearchIndexes::open(SearchConfig::new(&root)).unwrap();
    assert!(!reopened.needs_rebuild());
    assert_eq!(
        std::fs::read_to_string(root.join("LAYOUT")).unwrap().trim(),
        crate::LAYOUT_VERSION.to_string()
    );
    drop(dir);
}

#[test]
fn bare_words_search_every_string_field_of_every_segment() {
    // Three segments, each with other fields; `n` holds a number in one and a string in another.
    let (_dir, indexes, stream) = index_of(&[
        vec![
            json!({"user": {"name": "Alice Smith"}, "n": 1}),
            json!({"tags": ["red", "blue sky"]}),
        ],
        vec![
            json!({"a.b": "dotted key"}),
            json!({"città": "Roma Nord"}),
            json!({"n": "one two"}),
        ],
        vec![
            json!({"msg": "alpha"}),
            json!({"other": {"deep": ["beta alpha"]}}),
            json!({"first": "grace", "last": "hopper"}),
        ],
    ]);
    let s = &stream;
    for (query, expected) in [
        ("alice", 1),
        ("\"alice smith\"", 1),
        ("alice-smi*", 1),
        // Only paths holding every whole word of a phrase are searched (`any_field`).
        ("beta-alp*", 1),
        ("\"beta alpha\"", 1),
        ("\"alpha beta\"", 0),
        ("sky", 1),
        ("dotted", 1),
        ("roma", 1),
        ("two", 1),
        ("alpha", 2),
        ("/alph.*/", 2),
        ("alph*", 2),
        ("*ky", 1),
        ("*ey", 1),
        ("r?ma", 1),
        ("-alpha", 6),
        ("alpha AND beta", 1),
        ("grace hopper", 1),
        // A phrase is within one field: the words of two fields are not next to each other.
        ("\"grace hopper\"", 0),
        // Numbers are not words of a bare search (`n:1` finds them).
        ("1", 0),
        ("nothing", 0),
    ] {
        assert_eq!(total(&indexes, s, query), expected, "{query}");
    }
    assert_eq!(total(&indexes, s, "n:1"), 1);
}

#[test]
fn grammar_shapes_the_or_grouping_relies_on() {
    // `lang::or_groups` reads these shapes of tantivy's grammar (`*` no operator, `+` AND,
    // `?` OR); if a tantivy upgrade changes them, the grouping must be revisited.
    let shape = |query: &str| format!("{:?}", tantivy::query_grammar::parse_query(query).unwrap());
    assert_eq!(shape("x a OR b"), "(*x ?a ?b)");
    assert_eq!(shape("a OR b x"), "(?a ?b *x)");
    assert_eq!(shape("a AND b OR c"), "(?(+a +b) ?c)");
    assert_eq!(shape("x -a OR b"), "(*x ?(-a) ?b)");
    assert_eq!(shape("a OR b -x c OR d"), "(?a ?b -x ?c ?d)");
    // The ambiguities: a space between two OR-joined terms, and an AND chain that is `Should`
    // whether an OR or a space is next to it.
    assert_eq!(shape("x a OR b c OR d"), shape("x a OR b OR c OR d"));
    assert_eq!(shape("x a AND b c AND d"), shape("x a AND b OR c AND d"));
    assert_eq!(shape("x a AND b c OR d"), shape("x a AND b OR c OR d"));
}

#[test]
fn or_next_to_a_bare_term_is_an_or_group_that_is_required() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    let u = |query: &str| users(&indexes, s, query).1;
    // `x a OR b` is `x AND (a OR b)`: ConsoleLogin by alice, not every ConsoleLogin.
    let login_by =
        "eventName:ConsoleLogin userIdentity.userName:alice OR userIdentity.userName:bob";
    assert_eq!(u(login_by), names(&["alice"]));
    assert_eq!(
        u("userIdentity.userName:alice OR userIdentity.userName:bob eventName:ConsoleLogin"),
        names(&["alice"])
    );
    assert_eq!(
        u("eventName:ConsoleLogin alice OR bob OR dave"),
        names(&["alice"])
    );
    // Two groups apart: `(a OR b) x (c OR d)`.
    assert_eq!(
        u("alice OR carol consolelogin accessdenied OR bytes:7"),
        names(&["alice"])
    );
    // An AND chain next to a bare term is required too.
    assert_eq!(
        u("eventName:ConsoleLogin AND accessdenied alice"),
        names(&["alice"])
    );
    // A negative term joined by OR: ConsoleLogin AND (NOT carol OR bytes:300).
    assert_eq!(
        u("eventName:ConsoleLogin -carol OR bytes:300"),
        names(&["alice"])
    );
    // `a OR b -x c OR d` is `(a OR b) AND NOT x AND (c OR d)`.
    assert_eq!(
        u("alice OR bob -getobject deletebucket OR consolelogin"),
        names(&["alice", "alice"])
    );
    assert_eq!(
        u("alice OR bob -deletebucket bytes:10 OR bytes:300"),
        names(&["bob", "alice"])
    );
    // A parenthesized AND group joined by OR is one alternative.
    assert_eq!(
        u("consolelogin (alice AND accessdenied) OR bytes:50"),
        names(&["carol", "alice"])
    );
    // What did not mix a space with OR is unchanged.
    assert_eq!(
        u("eventName:ConsoleLogin AND alice OR dave"),
        names(&["dave", "alice"])
    );
    assert_eq!(users(&indexes, s, "alice OR bob OR carol OR dave").0, 5);
    assert_eq!(u("consolelogin (alice OR bob OR carol OR dave)").len(), 2);
    assert_eq!(
        u("consolelogin AND (alice OR bob OR carol OR dave)").len(),
        2
    );
    assert_eq!(u("accessdenied -deletebucket"), names(&["alice"]));
    assert_eq!(u("alice OR -consolelogin").len(), 4);
}

#[test]
fn or_next_to_a_bare_term_is_refused_when_the_grouping_is_ambiguous() {
    let (_dir, indexes, stream) = indexed();
    let s = &stream;
    // `x a OR b c OR d` and `x a OR b OR c OR d` parse alike: refuse rather than guess.
    let error = bad(
        &indexes,
        s,
        "eventName:ConsoleLogin alice OR bob OR carol OR dave",
    );
    assert!(error.contains("ambiguous"), "{error}");
    assert!(error.contains("alice, bob, carol, dave"), "{error}");
    assert!(
        error.contains("AND (alice OR bob OR carol OR dave)"),
        "{error}"
    );
    assert!(bad(&indexes, s, "consolelogin alice OR bob carol OR dave").contains("ambiguous"));
    // AND chains: `x a AND b c AND d` and `x a AND b OR c AND d` parse alike.
    let chains = bad(
        &indexes,
        s,
        "alice consolelogin AND accessdenied deletebucket AND bytes:7",
    );
    assert!(
        chains.contains("(consolelogin AND accessdenied)"),
        "{chains}"
    );
    bad(
        &indexes,
        s,
        "alice consolelogin AND accessdenied deletebucket OR bytes:7",
    );
    // Written out, both meanings are accepted.
    assert_eq!(
        users(
            &indexes,
            s,
            "eventName:ConsoleLogin AND (alice OR bob OR carol OR dave)"
        )
        .0,
        2
    );
    assert_eq!(
        users(
            &indexes,
            s,
            "alice AND ((consolelogin AND accessdenied) OR (deletebucket AND bytes:7))"
        )
        .0,
        2
    );
}
