"""Pure parts of the API: field selectors, the Accept header, query planning, the request-header ConfigMap."""

from __future__ import annotations

import pytest

from tailer.api import requestheader, resource
from tailer.api.authn import FrontProxy
from tailer.api.errors import ApiError, uint


def test_field_selector_terms() -> None:
    sel = resource.Selection()
    resource.parse_field_selector("user.username=alice, verb==patch,objectRef.namespace!=kube-system", sel)
    assert sel.equal == {"user": "alice"} and sel.verbs == {"patch"} and sel.not_equal == [("namespace", "kube-system")]
    for bad in ("verb", "spec.replicas=3", "=x"):
        with pytest.raises(ApiError):
            resource.parse_field_selector(bad, resource.Selection())


def test_plan_pushes_down_what_the_store_indexes() -> None:
    one = resource.plan(resource.selection({"verb": "get", "namespace": "shop"}, lambda k: [{"verb": "get",
                                                                                            "namespace": "shop"}[k]], None))
    assert one.keep is None and one.store.verb == "get" and one.store.namespace == "shop"
    two = resource.plan(resource.selection({"verbs": "get,list"}, lambda k: ["get,list"], None))
    assert two.store.verb is None and two.keep is not None
    assert two.keep({"verb": "list"}) and not two.keep({"verb": "patch"})
    assert not two.keep({"verb": 5})  # an odd stored shape is not a match, not a crash


def test_table_version_from_accept() -> None:
    assert resource.table_version("application/json;as=Table;v=v1;g=meta.k8s.io,application/json") == "v1"
    assert resource.table_version("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert resource.table_version("application/json") is None
    assert resource.table_version("application/json;as=Table;v=v1;g=example.com") is None


@pytest.mark.parametrize("raw", ["\u00b2", "\u0663", "1" * 5000, "-1", " 1", "9223372036854775808", ""])
def test_uint_refuses_what_is_not_a_plain_64_bit_number(raw: str) -> None:
    with pytest.raises(ApiError) as exc:
        uint(raw, "limit")
    assert exc.value.code == 400


def test_request_header_configmap() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
    ca, proxy = requestheader.parse({"data": {"requestheader-client-ca-file": pem,
                                              "requestheader-allowed-names": '["front-proxy-client"]',
                                              "requestheader-group-headers": '["X-Remote-Group"]'}})
    assert ca == pem and proxy.allowed_names == ("front-proxy-client",)
    assert proxy.username_headers == FrontProxy().username_headers  # not given: the default
    for data in ({}, {"requestheader-client-ca-file": pem, "requestheader-allowed-names": "front-proxy-client"},
                 {"requestheader-client-ca-file": pem, "requestheader-username-headers": '[1]'}):
        with pytest.raises(requestheader.RequestHeaderError):
            requestheader.parse({"data": data})
