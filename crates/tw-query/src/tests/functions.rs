//! The security SQL functions through the engine: files and hot rows, literals and
//! columns, planning errors and EXPLAIN.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde_json::json;

use super::fixture::*;
use crate::{QueryConfig, QueryEngine};

fn utf8(name: &str, values: &[Option<&str>]) -> (Field, ArrayRef) {
    (
        Field::new(name, DataType::Utf8, true),
        Arc::new(StringArray::from(values.to_vec())),
    )
}

fn schema() -> Arc<Schema> {
    let mut fields = system_fields();
    fields.push(Field::new("src", DataType::Utf8, true));
    fields.push(Field::new("net", DataType::Utf8, true));
    fields.push(Field::new("_overflow", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Offsets 0..=4 in a Parquet file, 5..=6 hot.
fn flows() -> QueryEngine {
    let mut lake = FixtureLake::new();
    let t = ms(2024, 6, 1, 12);
    let file = batch(
        &[t; 5],
        0,
        &[0, 1, 2, 3, 4],
        vec![
            utf8(
                "src",
                &[
                    Some("10.1.2.3"),
                    Some("203.0.113.9"),
                    Some("2001:db8::7"),
                    Some("not-an-ip"),
                    None,
                ],
            ),
            utf8(
                "net",
                &[
                    Some("10.0.0.0/8"),
                    Some("203.0.113.0/25"),
                    Some("2001:db8::/32"),
                    Some("10.0.0.0/8"),
                    Some("bogus"),
                ],
            ),
            utf8(
                "_overflow",
                &[
                    Some(r#"{"user":{"name":"alice","id":7},"tags":["a","b"]}"#),
                    Some(r#"{"user":{"name":"bob","id":"8"},"ok":true,"score":1.5}"#),
                    Some("not json"),
                    Some(r#"{"user":null}"#),
                    None,
                ],
            ),
        ],
    );
    lake.write_file(
        "flows",
        (2024, 6, 1, 12),
        "p000-00000000000000000000-00000000000000000004.parquet",
        &file,
        1024,
    );
    let hot_rows = batch(
        &[t; 2],
        0,
        &[5, 6],
        vec![
            utf8("src", &[Some("::ffff:192.168.0.5"), Some("fe80::1%eth0")]),
            utf8("net", &[Some("192.168.0.0/16"), None]),
            utf8(
                "_overflow",
                &[Some(r#"{"user":{"name":"carol"}}"#), Some("{}")],
            ),
        ],
    );
    lake.stream("flows", Some(schema()), hot(vec![hot_rows], &[(0, 5)]));
    lake.engine(QueryConfig::default())
}

#[tokio::test]
async fn ip_functions_over_files_and_hot_rows() {
    let engine = flows();
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset, cidr_match(src, '10.0.0.0/8') AS in10, ip_is_private(src) AS private, \
             ip_version(src) AS v FROM flows ORDER BY _offset"
        )
        .await,
        vec![
            json!({"_offset": 0, "in10": true, "private": true, "v": 4}),
            json!({"_offset": 1, "in10": false, "private": false, "v": 4}),
            json!({"_offset": 2, "in10": false, "private": false, "v": 6}),
            json!({"_offset": 3, "in10": false, "private": false, "v": null}),
            json!({"_offset": 4, "in10": null, "private": null, "v": null}),
            json!({"_offset": 5, "in10": false, "private": true, "v": 4}),
            json!({"_offset": 6, "in10": false, "private": true, "v": 6}),
        ]
    );
    // IPv6 networks, in WHERE (the filter the hunts use).
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset FROM flows WHERE cidr_match(src, '2001:db8::/32') OR cidr_match(src, '192.168.0.0/16') ORDER BY _offset"
        )
        .await,
        vec![json!({"_offset": 2}), json!({"_offset": 5})]
    );
    // The network from a column, per row: a bad one there is NULL, not an error.
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset, cidr_match(src, net) AS m FROM flows ORDER BY _offset"
        )
        .await,
        vec![
            json!({"_offset": 0, "m": true}),
            json!({"_offset": 1, "m": true}),
            json!({"_offset": 2, "m": true}),
            json!({"_offset": 3, "m": false}),
            json!({"_offset": 4, "m": null}),
            json!({"_offset": 5, "m": true}),
            json!({"_offset": 6, "m": null}),
        ]
    );
    // Constant arguments fold.
    assert_eq!(
        rows(
            &engine,
            "SELECT cidr_match('203.0.113.200', '203.0.113.0/25') AS m, ip_version(NULL) AS v"
        )
        .await,
        vec![json!({"m": false, "v": null})]
    );
}

#[tokio::test]
async fn json_functions_read_paths_from_text() {
    let engine = flows();
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset, json_get(_overflow, 'user.name') AS name, json_get(_overflow, 'user.id') AS id, \
             json_get_int(_overflow, 'user.id') AS id_int, json_get(_overflow, 'tags[1]') AS tag, \
             json_get(_overflow, 'user') AS user_json FROM flows ORDER BY _offset"
        )
        .await,
        vec![
            json!({"_offset": 0, "name": "alice", "id": "7", "id_int": 7, "tag": "b", "user_json": r#"{"id":7,"name":"alice"}"#}),
            json!({"_offset": 1, "name": "bob", "id": "8", "id_int": null, "tag": null, "user_json": r#"{"id":"8","name":"bob"}"#}),
            json!({"_offset": 2, "name": null, "id": null, "id_int": null, "tag": null, "user_json": null}),
            json!({"_offset": 3, "name": null, "id": null, "id_int": null, "tag": null, "user_json": null}),
            json!({"_offset": 4, "name": null, "id": null, "id_int": null, "tag": null, "user_json": null}),
            json!({"_offset": 5, "name": "carol", "id": null, "id_int": null, "tag": null, "user_json": r#"{"name":"carol"}"#}),
            json!({"_offset": 6, "name": null, "id": null, "id_int": null, "tag": null, "user_json": null}),
        ]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT json_get_str(_overflow, '$.user.id') AS s, json_get_bool(_overflow, 'ok') AS ok, \
             json_get_float(_overflow, 'score') AS score FROM flows WHERE _offset = 1"
        )
        .await,
        vec![json!({"s": "8", "ok": true, "score": 1.5})]
    );
    assert_eq!(
        rows(
            &engine,
            "SELECT json_get_str(_overflow, 'user.name') AS who, count(*) AS n FROM flows \
             WHERE json_get_str(_overflow, 'user.name') IS NOT NULL GROUP BY who ORDER BY who"
        )
        .await,
        vec![
            json!({"who": "alice", "n": 1}),
            json!({"who": "bob", "n": 1}),
            json!({"who": "carol", "n": 1}),
        ]
    );
}

#[tokio::test]
async fn regex_builtins_are_available() {
    let engine = flows();
    assert_eq!(
        rows(
            &engine,
            "SELECT _offset, regexp_match(src, '^([0-9]+)\\.')[1] AS first_octet FROM flows \
             WHERE regexp_like(src, '^(10|203)\\.') ORDER BY _offset"
        )
        .await,
        vec![
            json!({"_offset": 0, "first_octet": "10"}),
            json!({"_offset": 1, "first_octet": "203"}),
        ]
    );
}

#[tokio::test]
async fn bad_literals_are_query_errors_and_explain_works() {
    let engine = flows();
    for (sql, says) in [
        (
            "SELECT cidr_match(src, '10.0.0.0/33') FROM flows",
            "cidr_match: '10.0.0.0/33' is not a CIDR: the prefix length must be 0 to 32",
        ),
        (
            "SELECT _offset FROM flows WHERE cidr_match(src, '10.0.0/8')",
            "is not an IP address",
        ),
        (
            "SELECT json_get(_overflow, 'a..b') FROM flows",
            "json_get: invalid JSON path 'a..b': empty key",
        ),
        // Checked while planning, so also when no row reaches the function.
        (
            "SELECT cidr_match(src, 'nope') FROM flows WHERE 1 = 0",
            "'nope' is not a CIDR",
        ),
        ("SELECT cidr_match(src) FROM flows", "cidr_match"),
        ("SELECT ip_version(_offset) FROM flows", "ip_version"),
    ] {
        let error = engine.query(sql).await.expect_err(sql);
        assert!(error.is_user_error(), "{sql}: {error}");
        assert!(error.to_string().contains(says), "{sql}: {error}");
    }
    // EXPLAIN reports a failed optimizer rule as a row of the plan rather than failing.
    let failed = run(&engine, "EXPLAIN SELECT cidr_match(src, 'nope') FROM flows").await;
    let text = crate::to_pretty_table(&failed.batches).expect("plan as text");
    assert!(text.contains("'nope' is not a CIDR"), "{text}");
    let plan = run(
        &engine,
        "EXPLAIN SELECT _offset FROM flows WHERE cidr_match(src, '10.0.0.0/8') AND json_get_str(_overflow, 'user.name') = 'alice'",
    )
    .await;
    let text = crate::to_pretty_table(&plan.batches).expect("plan as text");
    assert!(
        text.contains("cidr_match(") && text.contains("json_get_str("),
        "{text}"
    );
}

/// A file of 1,000 rows repeating five values: the functions run per distinct value of each
/// batch (`per_value/`) and give every row its own answer.
#[tokio::test]
async fn functions_over_repeating_values() {
    let sources = [
        Some("10.1.2.3"),
        Some("203.0.113.9"),
        Some("2001:db8::7"),
        Some("not-an-ip"),
        None,
    ];
    let documents = [
        Some(r#"{"user":{"name":"alice","id":7}}"#),
        Some(r#"{"user":{"name":"bob"}}"#),
        Some("not json"),
        Some(r#"{"user":null}"#),
        None,
    ];
    let total = 1000;
    let src: Vec<Option<&str>> = (0..total).map(|i| sources[i % 5]).collect();
    let overflow: Vec<Option<&str>> = (0..total).map(|i| documents[i % 5]).collect();
    let t = ms(2024, 6, 1, 12);
    let file = batch(
        &vec![t; total],
        0,
        &(0..total as i64).collect::<Vec<_>>(),
        vec![
            utf8("src", &src),
            utf8("net", &vec![None; total]),
            utf8("_overflow", &overflow),
        ],
    );
    let mut lake = FixtureLake::new();
    lake.write_file(
        "flows",
        (2024, 6, 1, 12),
        "p000-00000000000000000000-00000000000000000999.parquet",
        &file,
        total,
    );
    lake.stream("flows", Some(schema()), empty_hot(schema()));
    let engine = lake.engine(QueryConfig::default());
    assert_eq!(
        rows(&engine, "SELECT count(*) FILTER (WHERE cidr_match(src, '10.0.0.0/8')) AS ten, sum(ip_version(src)) AS versions, count(ip_version(src)) AS ips FROM flows").await,
        vec![json!({"ten": 200, "versions": 200 * (4 + 4 + 6), "ips": 600})]
    );
    assert_eq!(
        rows(&engine, "SELECT json_get_str(_overflow, 'user.name') AS who, count(*) AS n FROM flows GROUP BY who ORDER BY who NULLS LAST").await,
        vec![
            json!({"who": "alice", "n": 200}),
            json!({"who": "bob", "n": 200}),
            json!({"who": null, "n": 600}),
        ]
    );
}
