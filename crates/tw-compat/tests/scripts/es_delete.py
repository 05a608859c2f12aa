# Deletes templates and policies with the real elasticsearch-py client, the way agents and
# scripts do. argv: URL, API key, phase ("delete", then "after_restart" on a restarted server).
# A failed assert fails the Rust test that runs it; the last line printed is a JSON summary.
import json, sys
from elasticsearch import AuthenticationException, Elasticsearch, NotFoundError

url, api_key, phase = sys.argv[1:4]
es = Elasticsearch(url, api_key=api_key, request_timeout=30)
TEMPLATE = {"index_patterns": ["logs-*"], "template": {"settings": {"number_of_shards": 1}}}


def not_found(call, error_type, reason):
    try:
        call()
    except NotFoundError as e:
        assert e.meta.status == 404, e.meta.status
        assert e.body["error"]["type"] == error_type, e.body
        assert e.body["error"]["reason"] == reason, e.body
        return
    raise AssertionError(f"expected a 404 {error_type}")


def index_templates():
    return sorted(t["name"] for t in es.indices.get_index_template()["index_templates"])


if phase == "delete":
    for name in ["gone", "a", "b", "c", "logs-x", "logs-y", "keep"]:
        es.indices.put_index_template(name=name, **TEMPLATE)
    for name in ["old-gone", "old-x", "old-y", "old-keep"]:
        es.indices.put_template(name=name, index_patterns=["old-*"], order=1)
    for name in ["gone-policy", "keep-policy"]:
        es.ilm.put_lifecycle(name=name, policy={"phases": {"hot": {"actions": {}}}})
    # The guard of every setup call: without the API key nothing is deleted (checked below)
    # or listed.
    anonymous = Elasticsearch(url, request_timeout=30)
    for call in (lambda: anonymous.indices.delete_index_template(name="*"),
                 lambda: anonymous.indices.delete_template(name="*"),
                 lambda: anonymous.ilm.delete_lifecycle(name="keep-policy"),
                 lambda: anonymous.indices.get_data_stream()):
        try:
            call()
            raise AssertionError("a call without the API key must be refused")
        except AuthenticationException as e:
            assert e.meta.status == 401, e.meta.status
    assert index_templates() == ["a", "b", "c", "gone", "keep", "logs-x", "logs-y"]
    assert sorted(es.indices.get_template()) == ["old-gone", "old-keep", "old-x", "old-y"]
    assert sorted(es.ilm.get_lifecycle()) == ["gone-policy", "keep-policy"]

    # Index templates: one name, then its GET, HEAD and a second DELETE are 404s.
    assert es.indices.delete_index_template(name="gone").body == {"acknowledged": True}
    assert not es.indices.exists_index_template(name="gone")
    not_found(lambda: es.indices.get_index_template(name="gone"),
              "resource_not_found_exception", "index template matching [gone] not found")
    not_found(lambda: es.indices.delete_index_template(name="gone"),
              "index_template_missing_exception", "index_template [gone] missing")
    # A list deletes all or nothing, names every missing name, and takes no wildcards.
    not_found(lambda: es.indices.delete_index_template(name="a,nope,b,never"),
              "index_template_missing_exception", "index_template [nope,never] missing")
    not_found(lambda: es.indices.delete_index_template(name=["a", "logs-*"]),
              "index_template_missing_exception", "index_template [logs-*] missing")
    assert index_templates() == ["a", "b", "c", "keep", "logs-x", "logs-y"], index_templates()
    assert es.indices.delete_index_template(name=["a", "b"]).body == {"acknowledged": True}
    # One pattern deletes what it matches; a pattern matching nothing is a 404.
    assert es.indices.delete_index_template(name="logs-*").body == {"acknowledged": True}
    not_found(lambda: es.indices.delete_index_template(name="logs-*"),
              "index_template_missing_exception", "index_template [logs-*] missing")
    assert index_templates() == ["c", "keep"], index_templates()
    assert es.indices.delete_index_template(name="c").body == {"acknowledged": True}

    # Legacy templates: one name or one pattern.
    assert es.indices.delete_template(name="old-gone").body == {"acknowledged": True}
    assert not es.indices.exists_template(name="old-gone")
    not_found(lambda: es.indices.get_template(name="old-gone"),
              "resource_not_found_exception", "index_template matching [old-gone] not found")
    not_found(lambda: es.indices.delete_template(name="old-gone"),
              "index_template_missing_exception", "index_template [old-gone] missing")
    # A legacy DELETE takes no list: the comma is part of the one name.
    not_found(lambda: es.indices.delete_template(name="old-x,old-keep"),
              "index_template_missing_exception", "index_template [old-x,old-keep] missing")
    assert es.indices.delete_template(name="old-x").body == {"acknowledged": True}
    assert es.indices.delete_template(name="old-y*").body == {"acknowledged": True}
    assert sorted(es.indices.get_template()) == ["old-keep"], es.indices.get_template().body

    # Policies: one name, no pattern; a missing one is ES's resource_not_found_exception.
    assert es.ilm.delete_lifecycle(name="gone-policy").body == {"acknowledged": True}
    not_found(lambda: es.ilm.get_lifecycle(name="gone-policy"),
              "resource_not_found_exception", "Lifecycle policy not found: gone-policy")
    not_found(lambda: es.ilm.delete_lifecycle(name="gone-policy"),
              "resource_not_found_exception", "Lifecycle policy not found: gone-policy")
    not_found(lambda: es.ilm.delete_lifecycle(name="keep-*"),
              "resource_not_found_exception", "Lifecycle policy not found: keep-*")
    assert sorted(es.ilm.get_lifecycle()) == ["keep-policy"]

elif phase == "after_restart":
    # What was deleted stays deleted; what was kept is kept.
    assert index_templates() == ["keep"], index_templates()
    assert not es.indices.exists_index_template(name="gone")
    assert sorted(es.indices.get_template()) == ["old-keep"], es.indices.get_template().body
    assert sorted(es.ilm.get_lifecycle()) == ["keep-policy"]
    not_found(lambda: es.ilm.delete_lifecycle(name="gone-policy"),
              "resource_not_found_exception", "Lifecycle policy not found: gone-policy")
    # A deleted policy PUT again starts over at version 1, as in ES.
    es.ilm.put_lifecycle(name="gone-policy", policy={"phases": {"hot": {"actions": {}}}})
    assert es.ilm.get_lifecycle(name="gone-policy")["gone-policy"]["version"] == 1
    # `*` deletes everything, and then succeeds with nothing left to delete.
    for _ in range(2):
        assert es.indices.delete_index_template(name="*").body == {"acknowledged": True}
        assert es.indices.delete_template(name="*").body == {"acknowledged": True}
    assert index_templates() == []
    assert es.indices.get_template().body == {}

else:
    raise SystemExit(f"unknown phase {phase}")

print(json.dumps({
    "index_templates": index_templates(),
    "templates": sorted(es.indices.get_template()),
    "policies": sorted(es.ilm.get_lifecycle()),
}))
