//! Elasticsearch `_bulk` with the real elasticsearch-py 9 client, unmodified: it connects (the
//! product header and compatible media types), makes the setup calls agents make (license,
//! index template, ILM policy, index creation and existence; templates and policies survive a
//! restart), `helpers.bulk` reports per-item errors for invalid documents while the valid ones
//! are stored, `_id` makes a retried bulk a no-op, and SQL finds every document the client was
//! told was created exactly once.

mod common;
#[path = "common/python.rs"]
mod python;

use std::collections::BTreeSet;

use common::{Server, write};
use serde_json::json;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 200
flush_max_age_ms = 300
"#;

const SCRIPT: &str = r#"
import json, sys
from elasticsearch import BadRequestError, Elasticsearch, helpers

es = Elasticsearch(sys.argv[1], request_timeout=60)
assert es.ping()
info = es.info()
assert info["version"]["number"].startswith("9."), info

# The setup calls agents make before writing.
lic = es.license.get()
assert lic["license"]["type"] == "basic" and lic["license"]["status"] == "active", lic
assert not es.indices.exists_index_template(name="weblogs-template")
es.indices.put_index_template(name="weblogs-template", index_patterns=["weblogs*"], priority=100,
                              template={"mappings": {"properties": {"status": {"type": "integer"}}}})
assert es.indices.exists_index_template(name="weblogs-template")
got = es.indices.get_index_template(name="weblogs-template")["index_templates"]
assert [t["name"] for t in got] == ["weblogs-template"], got
assert got[0]["index_template"]["index_patterns"] == ["weblogs*"], got
assert got[0]["index_template"]["template"]["mappings"]["properties"]["status"] == {"type": "integer"}, got
try:
    es.indices.put_index_template(name="broken", template={})
    raise AssertionError("a template without index patterns must be refused")
except BadRequestError as e:
    assert e.body["error"]["type"] == "action_request_validation_exception", e.body
    assert "index patterns are missing" in e.body["error"]["reason"], e.body
assert not es.indices.exists_index_template(name="broken")
es.ilm.put_lifecycle(name="weblogs-policy", policy={"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}})
policy = es.ilm.get_lifecycle(name="weblogs-policy")["weblogs-policy"]
assert policy["policy"]["phases"]["hot"]["actions"]["rollover"] == {"max_age": "1d"}, policy
assert policy["version"] == 1, policy
# `weblogs` was created (with its schema) before the script ran; `audit` is created here.
assert es.indices.exists(index="weblogs")
assert not es.indices.exists(index="audit")
created = es.indices.create(index="audit", settings={"number_of_shards": 2})
assert created["acknowledged"] and created["index"] == "audit", created
assert es.indices.exists(index="audit")
try:
    es.indices.create(index="audit")
    raise AssertionError("creating an existing index must fail")
except BadRequestError as e:
    assert e.body["error"]["type"] == "resource_already_exists_exception", e.body

def docs():
    for i in range(300):
        yield {"_index": "weblogs", "_id": f"d{i}", "_source": {"n": i, "status": 200 + i % 5, "path": f"/p/{i % 17}"}}
    # Not JSON, and a JSON document that violates the stream's schema (status must be an integer).
    for i in range(300, 305):
        yield {"_index": "weblogs", "_id": f"d{i}", "_source": "this is not json"}
    for i in range(305, 308):
        yield {"_index": "weblogs", "_id": f"d{i}", "_source": {"n": i, "status": "oops"}}

ok, errors = helpers.bulk(es, docs(), chunk_size=100, raise_on_error=False, stats_only=False)
assert ok == 300, (ok, errors[:3])
assert len(errors) == 8, errors
for e in errors:
    item = e["index"]
    assert item["status"] == 400 and "dead-letter" in item["error"]["reason"], item

# A retry of the same bulk stores nothing again: known _ids are no-ops for `index`...
ok2, errors2 = helpers.bulk(es, docs(), chunk_size=100, raise_on_error=False)
assert ok2 == 300 and len(errors2) == 8, (ok2, errors2[:3])
# ... and conflicts for `create`; a new _id with `create` is stored.
actions = [{"_op_type": "create", "_index": "weblogs", "_id": "d0", "_source": {"n": 0, "status": 200}},
           {"_op_type": "create", "_index": "weblogs", "_id": "d999", "_source": {"n": 999, "status": 201}},
           {"_op_type": "delete", "_index": "weblogs", "_id": "d1"}]
ok3, errors3 = helpers.bulk(es, actions, raise_on_error=False)
assert ok3 == 1, (ok3, errors3)
statuses = sorted(list(e.values())[0]["status"] for e in errors3)
assert statuses == [400, 409], errors3

# Documents without _id (auto ids) on the index-in-path endpoint.
resp = es.bulk(index="weblogs", operations=[{"index": {}}, {"n": 1000, "status": 204}, {"index": {}}, {"n": 1001, "status": 204}])
assert resp["errors"] is False and [it["index"]["status"] for it in resp["items"]] == [201, 201], resp
print(json.dumps({"created": list(range(300)) + [999, 1000, 1001]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_py_bulk_stores_valid_docs_once_and_reports_the_rest() {
    let python = python::require(&["elasticsearch"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    let schema = json!({"partitions": 2, "schema": {"fields": [
        {"name": "status", "type": "integer", "required": true}
    ]}});
    let response = server
        .client
        .put(format!("{}/api/v1/streams/weblogs", server.url))
        .json(&schema)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The raw protocol: product header and the client's media type echoed back.
    let root = server
        .client
        .get(format!("{}/", server.url))
        .header(
            "accept",
            "application/vnd.elasticsearch+json; compatible-with=8",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(root.headers()["x-elastic-product"], "Elasticsearch");
    assert_eq!(
        root.headers()["content-type"],
        "application/vnd.elasticsearch+json;compatible-with=8"
    );
    let body: serde_json::Value = root.json().await.unwrap();
    assert!(
        body["version"]["number"]
            .as_str()
            .unwrap()
            .starts_with("8.")
    );
    let malformed = server
        .client
        .post(format!("{}/_bulk", server.url))
        .header("content-type", "application/x-ndjson")
        .body("{\"index\":{\"_index\":\"weblogs\"}}\n{\"n\":1}\nnot an action\n")
        .send()
        .await
        .unwrap();
    assert_eq!(
        malformed.status(),
        400,
        "a malformed action fails the request"
    );

    let result = python::run(
        &python,
        dir.path(),
        "bulk.py",
        SCRIPT,
        std::slice::from_ref(&server.url),
        &[],
    )
    .await;
    let created: BTreeSet<u64> = result["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let rows = server
        .sql("SELECT n, count(*) AS c FROM weblogs GROUP BY n ORDER BY n")
        .await;
    let mut found = BTreeSet::new();
    for row in &rows {
        assert_eq!(row["c"], 1, "stored more than once: {row}");
        found.insert(row["n"].as_u64().unwrap());
    }
    assert_eq!(found, created);
    let (_, dlq) = server.get("/api/v1/dlq?stream=weblogs&limit=1000").await;
    // 8 refused documents, twice (the retried bulk sends them again).
    assert_eq!(dlq["entries"].as_array().unwrap().len(), 16, "{dlq}");

    // `_id`s are remembered across a restart: the retry after it is still a no-op.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    // So are the index template and the ILM policy; `audit` has the partitions it asked for.
    let (status, templates) = server.get("/_index_template/weblogs-template").await;
    assert_eq!(status, 200, "{templates}");
    assert_eq!(
        templates["index_templates"][0]["index_template"]["index_patterns"],
        json!(["weblogs*"])
    );
    let (status, policy) = server.get("/_ilm/policy/weblogs-policy").await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["weblogs-policy"]["version"], 1);
    let (status, audit) = server.get("/audit").await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["audit"]["settings"]["index"]["number_of_shards"], "2");
    let retry = server
        .client
        .post(format!("{}/weblogs/_bulk", server.url))
        .header("content-type", "application/x-ndjson")
        .body("{\"create\":{\"_id\":\"d5\"}}\n{\"n\":5,\"status\":200}\n")
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(answer["errors"], true, "{answer}");
    assert_eq!(answer["items"][0]["create"]["status"], 409, "{answer}");
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM weblogs WHERE n = 5")
            .await,
        1
    );
}
