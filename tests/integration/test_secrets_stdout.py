"""Secret values and credentials never leave the tailer in clear by default (issue 15).

Before, stdout printed every event as received: Secret values in all 11 forms below, and TokenReview
``spec.token`` / TokenRequest ``status.token`` reached stdout, the store and the API.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kube_audit.contract import PREFIX
from tests.helpers.sender import Sender

VALUE = "c2VjcmV0LXZhbHVl"  # what must never be seen
TOKEN = "eyJhbGciOiJSUzI1NiJ9.bearer-token"
APPLIED = '{"apiVersion":"v1","data":{"password":"' + VALUE + '"},"kind":"Secret"}'


def secret(**kw: Any) -> dict[str, Any]:
    return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db", "namespace": "shop"}, **kw}


def ev(i: int, verb: str, request: Any = None, response: Any = None, ref: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": f"s-{i}",
        "stage": "ResponseComplete", "verb": verb, "user": {"username": "alice"},
        "objectRef": ref or {"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"code": 200}, "stageTimestamp": f"2026-11-20T09:00:{i:02d}.000000Z"}
    if request is not None:
        out["requestObject"] = request
    if response is not None:
        out["responseObject"] = response
    return out


FORMS = [
    ev(1, "create", request=secret(data={"password": VALUE})),
    ev(2, "create", response=secret(data={"password": VALUE})),
    ev(3, "update", request=secret(data={"password": VALUE})),
    ev(4, "update", response=secret(data={"password": VALUE})),
    ev(5, "create", request=secret(stringData={"password": VALUE})),
    ev(6, "patch", request={"data": {"password": VALUE}}),
    ev(7, "patch", response=secret(data={"password": VALUE})),
    ev(8, "patch", request=[{"op": "add", "path": "/data/password", "value": VALUE}]),
    ev(9, "list", response={"kind": "SecretList", "items": [secret(data={"password": VALUE})]}),
    ev(10, "list", response={"kind": "Table", "rows": [{"cells": ["db"], "object": secret(data={"password": VALUE})}]}),
    ev(11, "patch", request={"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": APPLIED}}}),
]
CREDENTIALS = [
    ev(12, "create", request={"kind": "TokenReview", "spec": {"token": TOKEN}},
       response={"kind": "TokenReview", "spec": {"token": TOKEN}, "status": {"authenticated": True}},
       ref={"resource": "tokenreviews", "apiGroup": "authentication.k8s.io", "apiVersion": "v1"}),
    ev(13, "create", request={"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
       response={"kind": "TokenRequest", "status": {"token": TOKEN, "expirationTimestamp": "2026-11-20T10:00:00Z"}},
       ref={"resource": "serviceaccounts", "namespace": "shop", "name": "app", "subresource": "token",
            "apiVersion": "v1"}),
]


@pytest.mark.parametrize("redact", [True, False])
def test_stdout_store_and_api_keep_no_secret_values(start_tailer, redact: bool) -> None:
    flags = [] if redact else ["--stdout-redact", "false"]
    tailer = start_tailer("--api-auth", "none", *flags)
    with Sender("127.0.0.1", tailer.port) as sender:
        sender.send_chunk(FORMS + CREDENTIALS)
    out = tailer.stdout_path.read_bytes()
    assert len(out.splitlines()) == len(FORMS) + len(CREDENTIALS)
    api = httpx.get(f"http://127.0.0.1:{tailer.http_port}{PREFIX}/events", params={"limit": 100}, timeout=10)
    assert len(api.json()["items"]) == len(FORMS) + len(CREDENTIALS)
    assert VALUE not in api.text and TOKEN not in api.text  # the store and the API: always redacted
    if redact:
        for line in out.splitlines():
            assert VALUE.encode() not in line and TOKEN.encode() not in line, line
        assert out.count(b"<redacted>") >= len(FORMS) + 3
    else:  # one flag prints events unchanged
        assert out.count(VALUE.encode()) == len(FORMS) and out.count(TOKEN.encode()) == 3
