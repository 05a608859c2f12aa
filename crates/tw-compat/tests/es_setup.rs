//! The calls Elasticsearch agents make at startup: templates and ILM policies are stored
//! durably, answered back and deleted durably, indexes and data streams are streams (and
//! `GET _data_stream` lists them), the license is a basic one, bad bodies get ES-shaped 400s,
//! and every answer carries the ES headers. Deletions and data streams are also driven with
//! the real elasticsearch-py client (`tests/scripts/`).

mod common;
#[path = "common/python.rs"]
mod python;

use common::{Answer, Server};
use serde_json::{Value, json};
use tw_compat::AuthConfig;
use tw_core::{StreamConfig, StreamName};

fn assert_es(answer: &Answer, status: u16) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("x-elastic-product"), Some("Elasticsearch"));
    assert_eq!(answer.header("content-type"), Some("application/json"));
}

/// The error type and reason of an ES error answer.
fn error_of(answer: &Answer) -> (String, String) {
    let body = answer.json();
    assert_eq!(body["status"], answer.status, "{body}");
    (
        body["error"]["type"].as_str().unwrap().to_string(),
        body["error"]["reason"].as_str().unwrap().to_string(),
    )
}

/// What the templates test stored, as GET answers it.
async fn check_stored(server: &Server, template: &Value, legacy: &Value, changed: &Value) {
    let got = server.json("GET", "/_index_template/logs", None).await;
    assert_es(&got, 200);
    let got = got.json();
    assert_eq!(got["index_templates"][0]["name"], "logs", "{got}");
    let stored = &got["index_templates"][0]["index_template"];
    assert_eq!(
        stored["index_patterns"],
        json!(["logs-*"]),
        "a list, as ES answers"
    );
    assert_eq!(stored["template"], template["template"]);
    assert_eq!(stored["priority"], 200);
    let wildcard = server
        .json("GET", "/_index_template/lo*", None)
        .await
        .json();
    assert_eq!(wildcard["index_templates"].as_array().unwrap().len(), 1);
    let none = server.json("GET", "/_index_template/zz*", None).await;
    assert_es(&none, 200);
    assert_eq!(none.json(), json!({"index_templates": []}));
    let got = server.json("GET", "/_template/old", None).await;
    assert_es(&got, 200);
    let got = got.json();
    assert_eq!(got["old"]["index_patterns"], legacy["index_patterns"]);
    assert_eq!(got["old"]["order"], 1);
    assert_eq!(got["old"]["mappings"], json!({}));
    assert_es(&server.json("HEAD", "/_template/old", None).await, 200);
    assert_es(&server.json("HEAD", "/_template/nope", None).await, 404);
    let got = server.json("GET", "/_ilm/policy/hot", None).await;
    assert_es(&got, 200);
    let got = got.json();
    assert_eq!(got["hot"]["policy"], changed["policy"], "the last PUT wins");
    assert_eq!(got["hot"]["version"], 2);
    assert!(got["hot"]["modified_date"].as_str().unwrap().ends_with('Z'));
    let all = server.json("GET", "/_ilm/policy", None).await.json();
    assert_eq!(all.as_object().unwrap().len(), 1, "{all}");
}

#[tokio::test]
async fn templates_and_policies_are_stored_durably_and_answered_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    let missing = server.json("HEAD", "/_index_template/logs", None).await;
    assert_es(&missing, 404);
    assert!(missing.body.is_empty(), "HEAD answers no body");
    let template = json!({
        "index_patterns": "logs-*",
        "priority": 200,
        "data_stream": {},
        "template": {"mappings": {"properties": {"@timestamp": {"type": "date"}}}},
    });
    let put = server
        .json("PUT", "/_index_template/logs", Some(&template.to_string()))
        .await;
    assert_es(&put, 200);
    assert_eq!(put.json(), json!({"acknowledged": true}));
    assert_es(
        &server.json("HEAD", "/_index_template/logs", None).await,
        200,
    );
    let legacy =
        json!({"index_patterns": ["old-*"], "order": 1, "settings": {"number_of_shards": 1}});
    let put = server
        .json("PUT", "/_template/old", Some(&legacy.to_string()))
        .await;
    assert_es(&put, 200);
    let policy =
        json!({"policy": {"phases": {"hot": {"actions": {"rollover": {"max_age": "1d"}}}}}});
    let put = server
        .json("PUT", "/_ilm/policy/hot", Some(&policy.to_string()))
        .await;
    assert_es(&put, 200);
    assert_eq!(put.json(), json!({"acknowledged": true}));
    let changed =
        json!({"policy": {"phases": {"delete": {"min_age": "30d", "actions": {"delete": {}}}}}});
    server
        .json("PUT", "/_ilm/policy/hot", Some(&changed.to_string()))
        .await;

    // Answered back, and again after a restart.
    check_stored(&server, &template, &legacy, &changed).await;
    server.stop().await;
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    check_stored(&server, &template, &legacy, &changed).await;

    // Missing names are ES's 404s; `create=true` does not replace.
    let missing = server.json("GET", "/_index_template/nope", None).await;
    assert_es(&missing, 404);
    assert_eq!(
        error_of(&missing),
        (
            "resource_not_found_exception".into(),
            "index template matching [nope] not found".into()
        )
    );
    let missing = server.json("GET", "/_ilm/policy/nope", None).await;
    assert_es(&missing, 404);
    assert!(error_of(&missing).1.contains("nope"));
    let again = server
        .json(
            "PUT",
            "/_index_template/logs?create=true",
            Some(r#"{"index_patterns": ["x-*"]}"#),
        )
        .await;
    assert_es(&again, 400);
    assert_eq!(error_of(&again).0, "illegal_argument_exception");
    let kept = server
        .json("GET", "/_index_template/logs", None)
        .await
        .json();
    assert_eq!(
        kept["index_templates"][0]["index_template"]["index_patterns"],
        json!(["logs-*"])
    );
}

#[tokio::test]
async fn bad_setup_bodies_get_a_400_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    let cases: &[(&str, &str, Option<&str>, &str, &str)] = &[
        (
            "PUT",
            "/_index_template/t",
            None,
            "x_content_parse_exception",
            "request body is required",
        ),
        (
            "PUT",
            "/_index_template/t",
            Some("{\"index_patterns\": "),
            "x_content_parse_exception",
            "not valid JSON",
        ),
        (
            "PUT",
            "/_index_template/t",
            Some("[1]"),
            "x_content_parse_exception",
            "JSON object",
        ),
        (
            "PUT",
            "/_index_template/t",
            Some("{\"template\": {}}"),
            "action_request_validation_exception",
            "index patterns are missing",
        ),
        (
            "PUT",
            "/_index_template/t",
            Some("{\"index_patterns\": [1]}"),
            "x_content_parse_exception",
            "[index_patterns]",
        ),
        (
            "PUT",
            "/_index_template/t",
            Some("{\"index_patterns\": \"a\", \"priority\": -1}"),
            "x_content_parse_exception",
            "[priority]",
        ),
        (
            "PUT",
            "/_index_template/t*",
            Some("{\"index_patterns\": \"a\"}"),
            "illegal_argument_exception",
            "'*'",
        ),
        (
            "PUT",
            "/_template/t",
            Some("{\"index_patterns\": \"a\", \"mappings\": []}"),
            "x_content_parse_exception",
            "[mappings]",
        ),
        (
            "PUT",
            "/_ilm/policy/p",
            Some("{\"phases\": {}}"),
            "x_content_parse_exception",
            "unknown field [phases]",
        ),
        (
            "PUT",
            "/_ilm/policy/p",
            Some("{\"policy\": 1}"),
            "x_content_parse_exception",
            "[policy]",
        ),
        (
            "PUT",
            "/_ilm/policy/p",
            Some("{\"policy\": {\"phases\": []}}"),
            "x_content_parse_exception",
            "[phases]",
        ),
        (
            "PUT",
            "/web",
            Some("{\"setings\": {}}"),
            "illegal_argument_exception",
            "unknown key [setings]",
        ),
        (
            "PUT",
            "/web",
            Some("{\"settings\": {\"number_of_shards\": 0}}"),
            "illegal_argument_exception",
            "number_of_shards",
        ),
        (
            "PUT",
            "/_web",
            None,
            "invalid_index_name_exception",
            "[_web]",
        ),
        (
            "PUT",
            "/_data_stream/_web",
            None,
            "invalid_index_name_exception",
            "[_web]",
        ),
    ];
    for (method, path, body, kind, reason) in cases {
        let answer = server.json(method, path, *body).await;
        assert_es(&answer, 400);
        let (got_kind, got_reason) = error_of(&answer);
        assert_eq!(got_kind, *kind, "{method} {path} {body:?}: {got_reason}");
        assert!(
            got_reason.contains(reason),
            "{method} {path} {body:?}: {got_reason:?} does not name {reason:?}"
        );
    }
    // Nothing was stored or created by any of them.
    let all = server.json("GET", "/_index_template", None).await.json();
    assert_eq!(all, json!({"index_templates": []}));
    assert_eq!(
        server.json("GET", "/_ilm/policy", None).await.json(),
        json!({})
    );
    assert_es(&server.json("HEAD", "/web", None).await, 404);
}

#[tokio::test]
async fn indexes_and_data_streams_are_streams() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    assert_es(&server.json("HEAD", "/web", None).await, 404);
    let missing = server.json("GET", "/web", None).await;
    assert_es(&missing, 404);
    assert_eq!(error_of(&missing).0, "index_not_found_exception");
    let body = r#"{"settings": {"index": {"number_of_shards": "3"}}, "mappings": {"properties": {"n": {"type": "long"}}}}"#;
    let created = server.json("PUT", "/web", Some(body)).await;
    assert_es(&created, 200);
    assert_eq!(
        created.json(),
        json!({"acknowledged": true, "shards_acknowledged": true, "index": "web"})
    );
    let registry = server.ingestor.registry();
    let web = registry.get(&StreamName::new("web").unwrap()).unwrap();
    assert_eq!(web.config.partitions, 3, "shards are partitions");
    assert_es(&server.json("HEAD", "/web", None).await, 200);
    let described = server.json("GET", "/web", None).await.json();
    assert_eq!(
        described["web"]["settings"]["index"]["number_of_shards"],
        "3"
    );
    let again = server.json("PUT", "/web", None).await;
    assert_es(&again, 400);
    assert_eq!(
        error_of(&again),
        (
            "resource_already_exists_exception".into(),
            "index [web] already exists".into()
        )
    );

    let created = server
        .json("PUT", "/_data_stream/logs-app-default", None)
        .await;
    assert_es(&created, 200);
    assert_eq!(created.json(), json!({"acknowledged": true}));
    assert!(
        registry
            .get(&StreamName::new("logs-app-default").unwrap())
            .is_some()
    );
    assert_es(&server.json("HEAD", "/logs-app-default", None).await, 200);
    let again = server
        .json("PUT", "/_data_stream/logs-app-default", None)
        .await;
    assert_es(&again, 400);
    assert_eq!(error_of(&again).0, "resource_already_exists_exception");

    // A stream created by its first document exists as an index too.
    let bulk = server
        .request(
            "POST",
            "/clicks/_bulk",
            &[("content-type", "application/x-ndjson")],
            b"{\"index\":{}}\n{\"n\":1}\n",
        )
        .await;
    assert_eq!(bulk.status, 200);
    assert_es(&server.json("HEAD", "/clicks", None).await, 200);
    assert_eq!(server.json("PUT", "/clicks", None).await.status, 400);

    // Each of them is a data stream; a name that is no stream is ES's 404.
    let listed = server.json("GET", "/_data_stream", None).await;
    assert_es(&listed, 200);
    let names: Vec<Value> = listed.json()["data_streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("clicks"), json!("logs-app-default"), json!("web")]
    );
    let missing = server.json("GET", "/_data_stream/nope", None).await;
    assert_es(&missing, 404);
    assert_eq!(
        error_of(&missing),
        (
            "index_not_found_exception".into(),
            "no such index [nope]".into()
        )
    );
}

/// The API key the servers of the client tests require.
const KEY: &str = "k1";

fn with_key() -> AuthConfig {
    AuthConfig {
        api_keys: vec![KEY.into()],
        ..AuthConfig::default()
    }
}

fn url(server: &Server) -> String {
    format!("http://{}", server.address)
}

#[tokio::test]
async fn deletes_of_templates_and_policies_survive_a_restart_with_elasticsearch_py() {
    let python = python::require("elasticsearch");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), with_key()).await;
    let left = python::run(&python, "es_delete.py", &[&url(&server), KEY, "delete"]).await;
    assert_eq!(
        left,
        json!({"index_templates": ["keep"], "templates": ["old-keep"], "policies": ["keep-policy"]})
    );
    server.stop().await;
    let server = Server::start(dir.path(), with_key()).await;
    let left = python::run(
        &python,
        "es_delete.py",
        &[&url(&server), KEY, "after_restart"],
    )
    .await;
    assert_eq!(
        left,
        json!({"index_templates": [], "templates": [], "policies": ["gone-policy", "keep-policy"]})
    );
}

#[tokio::test]
async fn a_delete_whose_record_cannot_be_written_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    let template = r#"{"index_patterns": ["t-*"]}"#;
    assert_es(
        &server
            .json("PUT", "/_index_template/t", Some(template))
            .await,
        200,
    );
    let policy = r#"{"policy": {"phases": {}}}"#;
    assert_es(
        &server.json("PUT", "/_ilm/policy/p", Some(policy)).await,
        200,
    );
    server
        .log
        .fail_appends_when(|stream, _| stream.as_str() == tw_compat::es_setup::store::SETUP_STREAM);
    for path in ["/_index_template/t", "/_ilm/policy/p"] {
        let refused = server.json("DELETE", path, None).await;
        assert_es(&refused, 503);
        assert_eq!(error_of(&refused).0, "tidewatch_exception");
        assert_es(&server.json("GET", path, None).await, 200);
    }
    server.log.heal();
    server.stop().await;
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    for path in ["/_index_template/t", "/_ilm/policy/p"] {
        assert_es(&server.json("GET", path, None).await, 200);
        let deleted = server.json("DELETE", path, None).await;
        assert_es(&deleted, 200);
        assert_eq!(deleted.json(), json!({"acknowledged": true}));
    }
    server.stop().await;
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    assert_es(&server.json("GET", "/_index_template/t", None).await, 404);
    let missing = server.json("DELETE", "/_ilm/policy/p", None).await;
    assert_es(&missing, 404);
    assert_eq!(
        error_of(&missing),
        (
            "resource_not_found_exception".into(),
            "Lifecycle policy not found: p".into()
        )
    );
}

#[tokio::test]
async fn data_streams_are_the_streams_with_elasticsearch_py() {
    let python = python::require("elasticsearch");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), with_key()).await;
    // A stream of the native API, with its own event-time field.
    let registry = server.ingestor.registry();
    let audit = StreamName::new("audit").unwrap();
    let config = StreamConfig {
        event_time_field: Some("ts".into()),
        ..registry.default_config(&audit)
    };
    registry.put(&audit, config, false).unwrap();
    let listed = python::run(&python, "es_data_streams.py", &[&url(&server), KEY]).await;
    let listed = listed["data_streams"].as_array().unwrap();
    let names: Vec<&str> = listed.iter().map(|d| d["name"].as_str().unwrap()).collect();
    let streams: Vec<String> = registry
        .list()
        .iter()
        .filter(|stream| !stream.name.is_internal())
        .map(|stream| stream.name.to_string())
        .collect();
    assert_eq!(names, streams, "exactly the user streams");
    assert_eq!(names, ["audit", "clicks", "logs-app-default"]);
    assert_eq!(
        listed[0]["timestamp_field"],
        json!({"name": "ts"}),
        "the stream's own event-time field"
    );
    assert_eq!(server.records("clicks").len(), 20, "what _bulk stored");
}

#[tokio::test]
async fn license_and_xpack_answer_like_a_basic_cluster_behind_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthConfig {
        api_keys: vec!["k1".into()],
        ..AuthConfig::default()
    };
    let server = Server::start(dir.path(), auth).await;
    let denied = server.json("GET", "/_license", None).await;
    assert_es(&denied, 401);
    assert_eq!(error_of(&denied).0, "security_exception");
    let denied = server
        .request(
            "HEAD",
            "/_index_template/x",
            &[("authorization", "ApiKey wrong")],
            b"",
        )
        .await;
    assert_es(&denied, 403);
    assert!(denied.body.is_empty());
    let denied = server
        .request(
            "PUT",
            "/_ilm/policy/p",
            &[("content-type", "application/json")],
            br#"{"policy": {}}"#,
        )
        .await;
    assert_eq!(denied.status, 401);
    let key = [("authorization", "ApiKey k1")];
    let policies = server.request("GET", "/_ilm/policy", &key, b"").await;
    assert_eq!(policies.json(), json!({}), "the refused PUT stored nothing");

    let compat = [
        ("authorization", "ApiKey k1"),
        (
            "accept",
            "application/vnd.elasticsearch+json; compatible-with=8",
        ),
    ];
    let license = server.request("GET", "/_license", &compat, b"").await;
    assert_eq!(license.status, 200);
    assert_eq!(
        license.header("content-type"),
        Some("application/vnd.elasticsearch+json;compatible-with=8")
    );
    assert_eq!(license.header("x-elastic-product"), Some("Elasticsearch"));
    let license: Value = license.json();
    assert_eq!(license["license"]["type"], "basic");
    assert_eq!(license["license"]["status"], "active");
    assert!(license["license"]["issue_date_in_millis"].as_i64().unwrap() > 0);
    let xpack = server.request("GET", "/_xpack", &key, b"").await;
    assert_es(&xpack, 200);
    let xpack = xpack.json();
    assert_eq!(xpack["license"]["mode"], "basic");
    assert_eq!(
        xpack["features"]["ilm"]["enabled"], false,
        "policies are kept, not run"
    );
}
