"""The pure contract of issue 12: source identity, status records, the chunk MAC."""

from __future__ import annotations

import pytest

from kube_audit.model import chain
from kube_audit.model.source import BadStatus, GapReport, SourceId, Status, identity, parse_status

KEY = b"k" * 32


def test_status_round_trips_through_its_record() -> None:
    status = Status(SourceId("prod", "apiserver-0"), "1.0", "2026-12-01T00:00:00Z", "2026-12-01T00:00:10Z",
                    file="/var/log/audit.log", inode=7, offset=100, lag_bytes=5, rotations=2, read=10, sent=9,
                    acked=8, bad_lines={"not_json": 1},
                    gaps=(GapReport("g1", "/var/log/audit-1.log", 9, 4096, "rotated_unread", True,
                                    "2026-12-01T00:00:01Z", None),))
    assert parse_status(status.to_record()) == status


@pytest.mark.parametrize("bad", [None, {}, {"kind": "Other"}, {"kind": "ForwarderStatus", "source": ""},
                                 {"kind": "ForwarderStatus", "source": "a", "offset": -1},
                                 {"kind": "ForwarderStatus", "source": "a", "gaps": [1]},
                                 {"kind": "ForwarderStatus", "source": "a", "events": {"read": "x"}},
                                 {"kind": "ForwarderStatus", "source": "a" * 300}])
def test_bad_status_records_are_refused(bad: object) -> None:
    with pytest.raises(BadStatus):
        parse_status(bad)


def test_identity_falls_back_to_the_ping_hostname_then_the_tag() -> None:
    assert identity({"source": "s", "cluster": "c"}) == SourceId("c", "s")
    assert identity({"source": 5}, "host", "tag") == SourceId("", "host")
    assert identity(None, "", "audit") == SourceId("", "audit")
    assert str(SourceId("c", "s")) == "c/s" and str(SourceId("", "s")) == "s"


def test_the_mac_covers_every_field() -> None:
    base = dict(cluster="c", source="s", tag="t", seq=1, prev=chain.GENESIS, entries=b"entries")
    mac = chain.chunk_mac(KEY, **base)  # type: ignore[arg-type]
    assert chain.verify(KEY, mac=mac, **base)  # type: ignore[arg-type]
    for field, other in (("cluster", "d"), ("source", "x"), ("tag", "u"), ("seq", 2), ("prev", b"\1" * 32),
                         ("entries", b"entrieS")):
        assert not chain.verify(KEY, mac=mac, **{**base, field: other})  # type: ignore[arg-type]
    assert not chain.verify(b"other", mac=mac, **base)  # type: ignore[arg-type]
    assert not chain.verify(KEY, mac=mac, **{**base, "prev": b"short"})  # type: ignore[arg-type]


def test_store_mac_depends_on_each_digest() -> None:
    digests = chain.body_digest(b"{}") + chain.body_digest(b'{"a":1}')
    assert len(digests) == 2 * chain.DIGEST_BYTES
    mac = chain.store_mac(KEY, b"m" * 32, digests)
    assert mac != chain.store_mac(KEY, b"m" * 32, digests[::-1])
