//! Index and data stream creation and existence: `PUT /{index}`, `PUT /_data_stream/{name}`,
//! `HEAD /{index}`, `GET /{index}`. An index (or data stream) is a stream.
//!
//! Creating one creates the stream, with `settings.number_of_shards` as its partition count
//! when given (else the stream defaults); mappings and aliases are accepted and not kept (the
//! schema is inferred from the events). Creating one that exists answers ES's
//! `resource_already_exists_exception`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tw_core::{MAX_PARTITIONS, StreamName};

use super::{Answer, SetupError, SetupState, check_field, guarded, json_object};

fn stream_name(index: &str) -> Result<StreamName, SetupError> {
    StreamName::new(index)
        .map_err(|e| SetupError::InvalidIndexName(format!("Invalid index name [{index}]: {e}")))
}

/// `HEAD /{index}`: 200 when the stream exists, else 404.
pub(super) async fn head_index(
    State(state): State<Arc<SetupState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = describe(&state, &index);
    guarded(&state, &headers, "exists_index", true, call).await
}

/// `GET /{index}`: the stream as an index (its partitions as shards).
pub(super) async fn get_index(
    State(state): State<Arc<SetupState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = describe(&state, &index);
    guarded(&state, &headers, "get_index", false, call).await
}

async fn describe(state: &SetupState, index: &str) -> Answer {
    let name = stream_name(index)?;
    let stream = state
        .compat
        .ingestor
        .registry()
        .get(&name)
        .ok_or_else(|| SetupError::NoSuchIndex(index.to_string()))?;
    // ES answers settings as strings.
    let settings = json!({ "index": {
        "number_of_shards": stream.config.partitions.to_string(),
        "number_of_replicas": "0",
        "provided_name": index,
    }});
    Ok((
        StatusCode::OK,
        json!({ index: { "aliases": {}, "mappings": {}, "settings": settings } }),
    ))
}

/// `PUT /{index}`: creates the stream.
pub(super) async fn put_index(
    State(state): State<Arc<SetupState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async {
        let name = stream_name(&index)?;
        let request = json_object(&state, &headers, body)?.unwrap_or_default();
        if let Some(unknown) = request
            .keys()
            .find(|key| !matches!(key.as_str(), "settings" | "mappings" | "aliases"))
        {
            return Err(SetupError::IllegalArgument(format!(
                "unknown key [{unknown}] for create index"
            )));
        }
        check_field(&request, "mappings", "an object", Value::is_object)?;
        check_field(&request, "aliases", "an object", Value::is_object)?;
        let partitions = shard_count(request.get("settings"))?;
        create_stream(&state, &name, partitions, "index").await?;
        Ok((
            StatusCode::OK,
            json!({ "acknowledged": true, "shards_acknowledged": true, "index": index }),
        ))
    };
    guarded(&state, &headers, "create_index", false, call).await
}

/// `PUT /_data_stream/{name}`: creates the stream.
pub(super) async fn put_data_stream(
    State(state): State<Arc<SetupState>>,
    Path(data_stream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = async {
        let name = stream_name(&data_stream)?;
        create_stream(&state, &name, None, "data_stream").await?;
        Ok((StatusCode::OK, json!({ "acknowledged": true })))
    };
    guarded(&state, &headers, "create_data_stream", false, call).await
}

/// The partition count `settings` asks for (`number_of_shards`, `index.number_of_shards` or
/// `{"index": {"number_of_shards"}}`, as a number or a numeric string like ES accepts).
fn shard_count(settings: Option<&Value>) -> Result<Option<u32>, SetupError> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let settings: &Map<String, Value> = settings.as_object().ok_or_else(|| {
        SetupError::BadBody(format!("[settings] must be an object, got {settings}"))
    })?;
    let value = settings
        .get("number_of_shards")
        .or_else(|| settings.get("index.number_of_shards"))
        .or_else(|| settings.get("index")?.get("number_of_shards"));
    let Some(value) = value else {
        return Ok(None);
    };
    let count = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    };
    match count {
        Some(count @ 1..) if count <= u64::from(MAX_PARTITIONS) => Ok(Some(count as u32)),
        _ => Err(SetupError::IllegalArgument(format!(
            "Failed to parse value [{value}] for setting [index.number_of_shards]: must be an \
             integer from 1 to {MAX_PARTITIONS} (a shard is a Tidewatch partition)"
        ))),
    }
}

async fn create_stream(
    state: &SetupState,
    name: &StreamName,
    partitions: Option<u32>,
    what: &str,
) -> Result<(), SetupError> {
    let _creating = state.creating.lock().await;
    let registry = state.compat.ingestor.registry().clone();
    // A first event may still create the stream between this check and the creation below;
    // the creation then finds it and succeeds, which is what the agent wanted anyway.
    if registry.get(name).is_some() {
        return Err(SetupError::AlreadyExists(format!(
            "{what} [{name}] already exists"
        )));
    }
    let mut config = registry.default_config(name);
    if let Some(partitions) = partitions {
        config.partitions = partitions;
    }
    let name = name.clone();
    // The registry writes and fsyncs the stream's configuration file.
    tokio::task::spawn_blocking(move || registry.put(&name, config, false))
        .await
        .map_err(|e| SetupError::Stopped {
            what: "creating the stream",
            reason: e.to_string(),
        })??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_counts_read_like_elasticsearch_settings() {
        let count = |settings: Value| shard_count(Some(&settings));
        assert_eq!(count(json!({"number_of_shards": 3})).unwrap(), Some(3));
        assert_eq!(
            count(json!({"index.number_of_shards": "2"})).unwrap(),
            Some(2)
        );
        assert_eq!(
            count(json!({"index": {"number_of_shards": 5, "refresh_interval": "1s"}})).unwrap(),
            Some(5)
        );
        assert_eq!(
            count(json!({"index": {"refresh_interval": "1s"}})).unwrap(),
            None
        );
        assert_eq!(shard_count(None).unwrap(), None);
        for bad in [
            json!({"number_of_shards": 0}),
            json!({"number_of_shards": 1000}),
            json!({"number_of_shards": "x"}),
        ] {
            let error = count(bad).unwrap_err();
            assert!(error.to_string().contains("number_of_shards"), "{error}");
        }
        assert!(matches!(count(json!([1])), Err(SetupError::BadBody(_))));
    }
}
