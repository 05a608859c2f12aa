# Lists data streams with the real elasticsearch-py client after they were created by
# PUT _data_stream, by a first _bulk document and by the native API (with its own event-time
# field). argv: URL, API key. A failed assert fails the Rust test that runs it; the last line
# printed is the answer of GET _data_stream.
import json, sys
from elasticsearch import Elasticsearch, NotFoundError, helpers

url, api_key = sys.argv[1:3]
es = Elasticsearch(url, api_key=api_key, request_timeout=30)


def names(**kwargs):
    return [d["name"] for d in es.indices.get_data_stream(**kwargs)["data_streams"]]


def no_such_index(name, missing):
    try:
        es.indices.get_data_stream(name=name)
    except NotFoundError as e:
        assert e.body["error"]["type"] == "index_not_found_exception", e.body
        assert e.body["error"]["reason"] == f"no such index [{missing}]", e.body
        return
    raise AssertionError(f"GET _data_stream/{name} must be a 404")


# Only `audit` exists yet (created through the native API before the script ran).
assert names() == ["audit"], names()
no_such_index("logs-app-default", "logs-app-default")

es.indices.put_index_template(name="logs", index_patterns=["logs-*"], data_stream={}, priority=100)
es.indices.put_index_template(name="logs-fallback", index_patterns=["logs-*"], priority=1)
assert es.indices.create_data_stream(name="logs-app-default").body == {"acknowledged": True}
stream = es.indices.get_data_stream(name="logs-app-default")["data_streams"]
assert len(stream) == 1, stream
assert stream[0] == {
    "name": "logs-app-default",
    "timestamp_field": {"name": "@timestamp"},
    "indices": [{"index_name": "logs-app-default"}],
    "generation": 1,
    "status": "GREEN",
    "template": "logs",
    "hidden": False,
    "system": False,
    "allow_custom_routing": False,
    "replicated": False,
    "rollover_on_write": False,
}, stream

# A first _bulk document into a new index makes a stream, and so a data stream.
no_such_index("clicks", "clicks")
docs = ({"_index": "clicks", "_id": f"c{i}", "_source": {"@timestamp": "2026-01-01T00:00:00Z", "n": i}}
        for i in range(20))
ok, errors = helpers.bulk(es, docs, raise_on_error=False)
assert (ok, errors) == (20, []), (ok, errors)
clicks = es.indices.get_data_stream(name="clicks")["data_streams"]
assert [c["name"] for c in clicks] == ["clicks"], clicks
assert "template" not in clicks[0], "no template matches clicks: the field is left out"

assert names() == ["audit", "clicks", "logs-app-default"], names()
assert names(name="_all") == ["audit", "clicks", "logs-app-default"]
assert names(name="logs-*") == ["logs-app-default"]
assert names(name="nothing-*") == [], "a pattern may match nothing"
assert names(name=["logs-app-default", "clicks", "clicks"]) == ["clicks", "logs-app-default"]
no_such_index("clicks,nope", "nope")
no_such_index("logs-*,nope", "nope")

print(json.dumps(es.indices.get_data_stream().body))
