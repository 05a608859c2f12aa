//! `GET /_data_stream` and `GET /_data_stream/{name}`: the streams, described as
//! Elasticsearch data streams.
//!
//! A data stream is a stream, as an index is ([`super::indices`]): every stream that exists is
//! listed, whether `PUT /_data_stream/{name}`, `PUT /{index}`, a first `_bulk` document or the
//! native API created it; Tidewatch's own streams (`_…`) are not. `{name}` is ES's name
//! expression: comma-separated names and `*` patterns (`_all` for every stream). A plain name
//! that is not a stream is ES's 404 `index_not_found_exception`; a pattern may match nothing.
//!
//! Only fields Tidewatch can fill truthfully are answered. ES's lifecycle fields (`ilm_policy`,
//! `lifecycle`, `managed_by`, `next_generation_managed_by`, `prefer_ilm`) are left out: a
//! stream's data is kept by the stream's own retention, which neither ILM nor ES's data stream
//! lifecycle describes, and stored ILM policies never run (see the module documentation of
//! [`super`]). Backing index UUIDs are left out too: a stream has none.

use std::cmp::Reverse;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tw_pipeline::StreamState;

use super::store::{Definition, Kind, glob_matches};
use super::{Answer, SetupError, SetupState, guarded};

/// `GET /_data_stream`: every stream.
pub(super) async fn get_all_data_streams(
    State(state): State<Arc<SetupState>>,
    headers: HeaderMap,
) -> Response {
    let call = data_streams(&state, "*");
    guarded(&state, &headers, "get_data_stream", false, call).await
}

/// `GET /_data_stream/{name}`: the streams a name expression selects.
pub(super) async fn get_data_streams(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = data_streams(&state, &name);
    guarded(&state, &headers, "get_data_stream", false, call).await
}

async fn data_streams(state: &SetupState, expression: &str) -> Answer {
    let streams: Vec<Arc<StreamState>> = state
        .compat
        .ingestor
        .registry()
        .list()
        .into_iter()
        .filter(|stream| !stream.name.is_internal())
        .collect();
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    let selected = select(expression, &names)?;
    let templates = state
        .store()
        .await?
        .matching(Kind::IndexTemplate, "*")
        .await;
    let described: Vec<Value> = streams
        .iter()
        .filter(|stream| selected.contains(&stream.name.as_str()))
        .map(|stream| describe(stream, &templates))
        .collect();
    Ok((StatusCode::OK, json!({ "data_streams": described })))
}

/// The names of `existing` that `expression` selects, in the order of `existing`; a plain name
/// that does not exist is an error.
fn select<'a>(expression: &str, existing: &[&'a str]) -> Result<Vec<&'a str>, SetupError> {
    let parts: Vec<&str> = expression
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| if part == "_all" { "*" } else { part })
        .collect();
    if let Some(missing) = parts
        .iter()
        .find(|part| !part.contains('*') && !existing.contains(part))
    {
        return Err(SetupError::NoSuchIndex((*missing).to_string()));
    }
    Ok(existing
        .iter()
        .copied()
        .filter(|name| parts.iter().any(|part| glob_matches(part, name)))
        .collect())
}

/// One stream as ES describes a data stream.
fn describe(stream: &StreamState, templates: &[(String, Definition)]) -> Value {
    let name = stream.name.as_str();
    let mut described = json!({
        "name": name,
        // ES's data streams always use `@timestamp`. A stream reads its event time from the
        // field its configuration names, else from the first of `eventTime`, `@timestamp` and
        // `timestamp` an event has: `@timestamp` for the documents of Elastic agents.
        "timestamp_field": {
            "name": stream.config.event_time_field.as_deref().unwrap_or("@timestamp"),
        },
        // The stream is its own and only backing index: `GET /{name}` describes it.
        "indices": [{ "index_name": name }],
        // A stream never rolls over to a new backing index.
        "generation": 1,
        // Every partition lives on this one node and has no replica waiting to be assigned.
        "status": "GREEN",
        // Not hidden: `GET /{name}` and the native API show every user stream; Tidewatch's own
        // streams, the only system ones, are not listed.
        "hidden": false,
        "system": false,
        // `_bulk` ignores a document's `routing`: the stream's partition key places events.
        "allow_custom_routing": false,
        "replicated": false,
        "rollover_on_write": false,
    });
    // ES reports the template that matches the name now, and leaves the field out when none
    // does (a stream, unlike an ES data stream, needs no template to exist).
    if let Some(template) = template_for(name, templates) {
        described["template"] = json!(template);
    }
    described
}

/// The composable index template ES would pick for `name`: of those whose `index_patterns`
/// match it, the one with the highest `priority`. ES refuses two overlapping templates of one
/// priority at PUT; Tidewatch stores both, and the first name wins such a tie.
fn template_for<'a>(name: &str, templates: &'a [(String, Definition)]) -> Option<&'a str> {
    templates
        .iter()
        .filter(|(_, definition)| match &definition.body["index_patterns"] {
            Value::String(pattern) => glob_matches(pattern, name),
            Value::Array(patterns) => patterns
                .iter()
                .any(|p| p.as_str().is_some_and(|p| glob_matches(p, name))),
            _ => false,
        })
        .max_by_key(|(template, definition)| {
            let priority = definition.body["priority"].as_u64().unwrap_or(0);
            (priority, Reverse(template.as_str()))
        })
        .map(|(template, _)| template.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_expressions_select_streams_like_elasticsearch() {
        let existing = ["logs-app", "logs-db", "metrics"];
        let select = |expression| select(expression, &existing);
        assert_eq!(select("*").unwrap(), existing);
        assert_eq!(select("_all").unwrap(), existing);
        assert_eq!(select("logs-*").unwrap(), ["logs-app", "logs-db"]);
        assert_eq!(
            select("metrics,logs-app,metrics").unwrap(),
            ["logs-app", "metrics"],
            "once each, sorted"
        );
        assert!(
            select("nope-*").unwrap().is_empty(),
            "a pattern may match nothing"
        );
        assert_eq!(
            select("logs-app,").unwrap(),
            ["logs-app"],
            "empty parts are ignored"
        );
        for expression in ["nope", "logs-*,nope"] {
            let result = select(expression);
            assert!(
                matches!(&result, Err(SetupError::NoSuchIndex(name)) if name == "nope"),
                "{expression}: {result:?}"
            );
        }
    }

    #[test]
    fn the_template_reported_is_the_highest_priority_match() {
        let template = |body: Value| Definition {
            body,
            version: 1,
            modified_ms: 0,
        };
        let templates = vec![
            (
                "any-logs".to_string(),
                template(json!({"index_patterns": "logs-*"})),
            ),
            (
                "app".to_string(),
                template(json!({"index_patterns": ["x", "logs-app*"], "priority": 10})),
            ),
            (
                "b-tie".to_string(),
                template(json!({"index_patterns": ["logs-app"], "priority": 10})),
            ),
            (
                "metrics".to_string(),
                template(json!({"index_patterns": ["metrics-*"], "priority": 99})),
            ),
        ];
        assert_eq!(template_for("logs-app", &templates), Some("app"));
        assert_eq!(template_for("logs-db", &templates), Some("any-logs"));
        assert_eq!(template_for("web", &templates), None);
    }
}
