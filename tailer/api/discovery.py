"""What kubectl and the kube-aggregator ask before anything else: /apis, the group, the resource list and
OpenAPI. Static documents, built once.

``auditevents`` is the one real resource (namespaced; list and watch). The object views are listed as
subresource-like entries ``objects/versions`` etc.: their paths are ``[namespaces/{ns}/]{resource}/{name}/
{view}`` for any resource the audit log saw, so "objects" stands for that pair (kubectl api-resources, like
the aggregator, skips entries with a slash).
"""

from __future__ import annotations

from typing import Any

from kube_audit.contract import API_GROUP, API_VERSION

VERSION = API_VERSION.rpartition("/")[2]
GROUP_VERSION = {"groupVersion": API_VERSION, "version": VERSION}


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}


def api_group() -> dict[str, Any]:
    return {"kind": "APIGroup", "apiVersion": "v1", "name": API_GROUP, "versions": [GROUP_VERSION],
            "preferredVersion": GROUP_VERSION}


def api_resource_list() -> dict[str, Any]:
    views = [{"name": f"objects/{view}", "singularName": "", "namespaced": True, "kind": kind, "verbs": ["get"]}
             for view, kind in (("versions", "ObjectVersionList"), ("spechistory", "FieldHistory"),
                                ("diff", "ObjectDiff"), ("bisect", "BisectResult"))]
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION, "resources": [
        {"name": "auditevents", "singularName": "auditevent", "namespaced": True, "kind": "AuditEvent",
         "verbs": ["list", "watch"], "shortNames": ["ae"], "categories": ["audit"]},
        *views]}


_STRING = {"type": "string"}
_SCHEMA = {
    "description": "A Kubernetes audit event (audit.k8s.io/v1 Event) as the tailer stored it, Secret values "
                   "redacted. metadata.resourceVersion is the store sequence: watch and continue from it.",
    "type": "object",
    "properties": {
        "apiVersion": _STRING, "kind": _STRING,
        "metadata": {"type": "object", "properties": {"name": _STRING, "namespace": _STRING,
                                                      "resourceVersion": _STRING, "creationTimestamp": _STRING}},
        "auditID": {"type": "string", "description": "unique per request; metadata.name"},
        "stage": _STRING, "level": _STRING, "verb": _STRING, "requestURI": _STRING,
        "stageTimestamp": {"type": "string", "format": "date-time"},
        "requestReceivedTimestamp": {"type": "string", "format": "date-time"},
        "user": {"type": "object", "properties": {"username": _STRING,
                                                  "groups": {"type": "array", "items": _STRING}}},
        "objectRef": {"type": "object", "properties": {k: _STRING for k in (
            "resource", "namespace", "name", "apiGroup", "apiVersion", "subresource", "uid", "resourceVersion")}},
        "responseStatus": {"type": "object", "properties": {"code": {"type": "integer"}}},
        "requestObject": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "responseObject": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
    "x-kubernetes-group-version-kind": [{"group": API_GROUP, "version": VERSION, "kind": "AuditEvent"}],
}
_LIST_SCHEMA = {
    "type": "object", "properties": {"apiVersion": _STRING, "kind": _STRING, "metadata": {"type": "object"},
                                     "items": {"type": "array", "items": {"$ref": "#/definitions/AuditEvent"}}},
    "x-kubernetes-group-version-kind": [{"group": API_GROUP, "version": VERSION, "kind": "AuditEventList"}],
}
_DEF = f"{API_GROUP.split('.')[0]}.{VERSION}"  # the definition name prefix kube-apiserver would use
# on each operation: what kubectl explain looks up to go from the resource to its schema
_OPERATION = {"x-kubernetes-action": "list",
              "x-kubernetes-group-version-kind": {"group": API_GROUP, "version": VERSION, "kind": "AuditEvent"}}


def openapi_v2() -> dict[str, Any]:
    definitions = {f"{_DEF}.AuditEvent": _SCHEMA,
                   f"{_DEF}.AuditEventList": _fix_refs(_LIST_SCHEMA, "#/definitions/")}
    path = {"get": {**_OPERATION, "operationId": "listAuditEvents", "produces": ["application/json"],
                    "responses": {"200": {"description": "OK",
                                          "schema": {"$ref": f"#/definitions/{_DEF}.AuditEventList"}}}}}
    return {"swagger": "2.0", "info": {"title": "kube-audit-forwarder audit API", "version": VERSION},
            "paths": {f"/apis/{API_VERSION}/auditevents": path,
                      f"/apis/{API_VERSION}/namespaces/{{namespace}}/auditevents": path},
            "definitions": definitions}


def openapi_v3_index() -> dict[str, Any]:
    return {"paths": {f"apis/{API_VERSION}": {"serverRelativeURL": f"/openapi/v3/apis/{API_VERSION}"}}}


def openapi_v3_group() -> dict[str, Any]:
    schemas = {f"{_DEF}.AuditEvent": _SCHEMA, f"{_DEF}.AuditEventList": _fix_refs(_LIST_SCHEMA, "#/components/schemas/")}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {
        "$ref": f"#/components/schemas/{_DEF}.AuditEventList"}}}}}
    return {"openapi": "3.0.0", "info": {"title": "kube-audit-forwarder audit API", "version": VERSION},
            "paths": {f"/apis/{API_VERSION}/namespaces/{{namespace}}/auditevents": {"get": {**_OPERATION,
                                                                                             "responses": ok}},
                      f"/apis/{API_VERSION}/auditevents": {"get": {**_OPERATION, "responses": ok}}},
            "components": {"schemas": schemas}}


def _fix_refs(schema: dict[str, Any], base: str) -> dict[str, Any]:
    items = {"$ref": f"{base}{_DEF}.AuditEvent"}
    return {**schema, "properties": {**schema["properties"], "items": {"type": "array", "items": items}}}
