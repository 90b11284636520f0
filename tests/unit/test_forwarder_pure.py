"""The forwarder's pure parts: lines, entries, batching, checkpoints, settings."""

from __future__ import annotations

import json
import os

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fluent_forward as ff
from forwarder import checkpoint
from forwarder.batcher import Batcher, chunk_id
from forwarder.chain import Chain
from forwarder.cli import parse
from forwarder.lines import BadLine, Splitter, event_time, to_entry
from kube_audit.model.source import SourceId


def split_all(data: bytes, step: int, max_bytes: int = 1 << 20) -> tuple[list, list, Splitter]:
    s = Splitter(0, max_bytes, keep=8)
    lines, big = [], []
    for i in range(0, len(data), step):
        a, b = s.feed(data[i : i + step])
        lines += a
        big += b
    return lines, big, s


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20), st.integers(1, 17))
def test_splitter_yields_exactly_the_complete_lines_with_offsets(parts: list[bytes], step: int) -> None:
    data = b"".join(p + b"\n" for p in parts) + b"tail-without-newline"
    lines, big, s = split_all(data, step)
    assert [x.data for x in lines] == [p.removesuffix(b"\r") for p in parts] and big == []
    assert all(data[x.start : x.end].removesuffix(b"\n").removesuffix(b"\r") == x.data for x in lines)
    assert s.pending() == len(b"tail-without-newline")
    last = s.finish()
    assert last is not None and last.data == b"tail-without-newline" and last.end == len(data)


def test_crlf_is_stripped() -> None:
    lines, _, _ = split_all(b'{"a":1}\r\n{"b":2}\n', 3)
    assert [x.data for x in lines] == [b'{"a":1}', b'{"b":2}']


def test_overlong_lines_are_reported_not_buffered_byte_by_byte() -> None:
    data = b"short\n" + b"x" * 100 + b"\nafter\n"
    lines, big, s = split_all(data, 1, max_bytes=50)
    assert [x.data for x in lines] == [b"short", b"after"]
    assert len(big) == 1 and big[0].data == b"x" * 8 and (big[0].start, big[0].end) == (6, 107)
    assert s.offset == len(data)


def test_entry_uses_stage_timestamp_with_nanoseconds() -> None:
    line = b'{"auditID":"a","stageTimestamp":"2026-11-20T09:00:00.123456Z"}'
    t, record = msgpack.unpackb(to_entry(line, ff.EventTime(1, 0)), ext_hook=lambda c, d: ff.EventTime.from_bytes(d))
    assert t == ff.EventTime(1_795_165_200, 123_456_000) and record["auditID"] == "a"
    assert event_time({"stageTimestamp": "2026-11-20T09:00:00.123456789Z"}, ff.EventTime(0)).nanoseconds == 123456789
    assert event_time({"stageTimestamp": "garbage"}, ff.EventTime(5)) == ff.EventTime(5)


@pytest.mark.parametrize(("line", "kind"), [(b"{not json", "invalid_json"), (b"[1]", "not_an_object"),
                                            (b"   ", "empty"), (b'"str"', "not_an_object")])
def test_bad_lines_have_a_kind(line: bytes, kind: str) -> None:
    with pytest.raises(BadLine) as err:
        to_entry(line, ff.EventTime(0))
    assert err.value.kind == kind


def test_batcher_cuts_by_events_bytes_and_file_and_ids_are_stable() -> None:
    b = Batcher("audit", max_events=3, max_bytes=1000, compress=False)
    a, other = object(), object()
    e = ff.encode_entry(ff.EventTime(1), {"x": 1})
    out = []
    for i in range(4):
        out += b.add(a, "id-a", e, i * 10, i * 10 + 10)
    out += b.add(other, "id-b", e, 0, 10)  # a new file closes the chunk of the old one
    assert [c.events for c in out] == [3, 1]
    assert out[0].end == 30 and out[1].end == 40 and out[1].source is a
    assert out[0].chunk_id == chunk_id("id-a", 0, 30) and out[0].chunk_id != out[1].chunk_id
    assert out[0].message == b"" and out[0].payload  # the chain seals it (test_forwarder_chain.py)
    Chain(SourceId("", "h"), None).seal(out[0])
    batch = ff.Decoder().feed(out[0].message)[0]
    assert isinstance(batch, ff.EventBatch) and batch.options.chunk == out[0].chunk_id and len(batch.entries) == 3
    last = b.flush()
    assert last is not None and last.source is other and b.flush() is None


def test_checkpoint_round_trip_atomic_and_versioned(tmp_path) -> None:
    path = str(tmp_path / "pos")
    assert checkpoint.load(path) is None
    cp = checkpoint.Checkpoint("/var/log/audit/audit.log", 1, 2, "ab" * 32, 1024, 99)
    checkpoint.save(path, cp)
    loaded = checkpoint.load(path)
    assert loaded is not None and loaded.offset == 99 and loaded.written_at > 0
    assert os.listdir(tmp_path) == ["pos"]  # no temp file left behind
    (tmp_path / "pos").write_text(json.dumps({"version": 99}))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)
    (tmp_path / "pos").write_text("{broken")
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(path)


def test_settings_from_flags_and_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUDIT_FORWARDER_CHUNK_EVENTS", "250")
    monkeypatch.setenv("AUDIT_FORWARDER_TAILER", "tailer.kube-audit.svc:24224")
    s = parse(["--audit-log-path", str(tmp_path / "audit.log"), "--proxy", "unix:///run/konnectivity.sock"])
    assert s.batch.chunk_events == 250
    assert (s.client.route.tailer_host, s.client.route.tailer_port) == ("tailer.kube-audit.svc", 24224)
    assert s.client.route.proxy_kind == "unix" and s.client.route.proxy_path == "/run/konnectivity.sock"
    assert s.follow.position_file == str(tmp_path / "audit-forwarder.pos")
    s = parse(["--tailer", "10.0.0.1:24224", "--proxy", "http-connect://vpn-seed-server:9443"])
    assert (s.client.route.proxy_host, s.client.route.proxy_port) == ("vpn-seed-server", 9443)


def test_checkpoint_keeps_rotation_order_and_reported_gaps_and_reads_version_1(tmp_path) -> None:
    path = str(tmp_path / "pos")
    cp = checkpoint.Checkpoint("/a/audit.log", 1, 2, "ab" * 32, 1024, 99, after="2026-11-20T09-00-00.000",
                               after_copy="cd" * 32, live=True, reported_gaps=("ef" * 32,))
    checkpoint.save(path, cp)
    loaded = checkpoint.load(path)
    assert loaded is not None and loaded.after == cp.after and loaded.reported_gaps == cp.reported_gaps
    old = {"path": "/a/audit.log", "device": 1, "inode": 2, "fingerprint": "ab" * 32, "fingerprint_bytes": 1024,
           "offset": 5, "compressed": False, "size": 9, "finished": False, "written_at": 1.0, "version": 1}
    (tmp_path / "old").write_text(json.dumps(old))
    v1 = checkpoint.load(str(tmp_path / "old"))
    assert v1 is not None and v1.offset == 5 and v1.after == ""  # no order known: a lost file reads all backups
