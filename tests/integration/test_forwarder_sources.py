"""Issue 12, the forwarder's side, as real processes: the ``kube_audit`` option on every chunk, the chunk
chain (across chunks, reconnects and SIGKILL restarts), status records (interval, lag, offset) and gaps
reported once with their bytes and time range, also across restarts. A recording receiver
(tests/helpers/recorder.py) shows the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from kube_audit.model.chain import GENESIS, verify
from kube_audit.model.source import OPTION, STATUS_TAG, parse_status
from tests.conftest import python_env, wait_for
from tests.helpers.auditlog import event
from tests.helpers.recorder import Received, Recorder

KEY = b"integrity key\x00\xff"


def ev(i: int) -> dict:
    return {**event(i), "stageTimestamp": f"2026-11-20T09:{i // 60:02d}:{i % 60:02d}.000000Z"}


def stamp(i: int) -> str:
    return ev(i)["stageTimestamp"]


def append(path: Path, *seqs: int) -> None:
    with path.open("ab") as fh:
        for i in seqs:
            fh.write(orjson.dumps(ev(i)) + b"\n")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "integrity.key"
    path.write_bytes(KEY + b"\n")
    return path


def audit_seqs(rec: Recorder) -> list[int]:
    return [r["seq"] for b in rec.batches("audit") for r in b.records]


def statuses(rec: Recorder) -> list[tuple[Received, object]]:
    return [(b, parse_status(b.records[0])) for b in rec.batches(STATUS_TAG)]


def check_chain(batches: list[Received], key: bytes = KEY, cluster: str = "c1", source: str = "n1") -> None:
    """Every chunk: the option, a MAC that verifies, seq + 1 and prev = the MAC before (a resend, same
    seq and prev, may come again)."""
    prev, seq = GENESIS, 0
    seen: dict[tuple[int, bytes], bytes] = {}
    for b in batches:
        opt = b.options[OPTION]
        assert (opt["source"], opt["cluster"]) == (source, cluster)
        assert verify(key, cluster, source, b.tag, opt["seq"], opt["prev"], b.payload, opt["mac"]), opt["seq"]
        if (opt["seq"], opt["prev"]) in seen:
            continue  # a resend
        assert (opt["seq"], opt["prev"]) == (seq + 1, prev), (opt["seq"], seq)
        seen[(opt["seq"], opt["prev"])] = opt["mac"]
        seq, prev = opt["seq"], opt["mac"]


def test_every_chunk_is_chained_and_status_records_come_at_the_interval(start_forwarder, recorder, key_file,
                                                                        tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(recorder.port, log, "--source-name", "n1", "--cluster", "c1", "--integrity-key-file",
                          str(key_file), "--chunk-events", "2", "--flush-interval", "10ms",
                          "--status-interval", "200ms")
    append(log, *range(7))
    wait_for(lambda: audit_seqs(recorder) == list(range(7)), what="7 events in chunks of 2")
    assert len(recorder.batches("audit")) >= 4
    wait_for(lambda: len(statuses(recorder)) >= 3 and statuses(recorder)[-1][1].acked == 7,
             what="status records at the interval")
    check_chain(recorder.batches())  # events and status records alike, one chain
    _, last = statuses(recorder)[-1]
    assert (last.source.name, last.source.cluster) == ("n1", "c1")
    assert (last.file, last.inode, last.offset, last.lag_bytes) == (str(log), log.stat().st_ino,
                                                                    log.stat().st_size, 0)
    assert (last.read, last.sent, last.acked, last.gaps, last.version) == (7, 7, 7, (), "0.1.0")
    times = [s.time for _, s in statuses(recorder)]
    assert times == sorted(times) and len(set(times)) == len(times)
    append(log, 7)
    wait_for(lambda: statuses(recorder)[-1][1].lag_bytes == 0 and statuses(recorder)[-1][1].read == 8,
             what="the offset moves on")
    assert fwd.metric("forwarder_tamper_evidence") == 1
    assert fwd.metric("forwarder_events_acked_total") == 8  # status records are not counted as events
    pos = json.loads((tmp_path / "audit-forwarder.pos").read_text())
    assert pos["seq"] >= 5 and len(bytes.fromhex(pos["mac"])) == 32


def test_a_reconnect_resends_the_same_bytes_and_a_sigkill_restart_goes_on_with_the_chain(
        start_forwarder, recorder, key_file, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    args = ("--source-name", "n1", "--cluster", "c1", "--integrity-key-file", str(key_file), "--chunk-events", "2",
            "--flush-interval", "10ms", "--status-interval", "1h", "--backoff-max", "200ms")
    fwd = start_forwarder(recorder.port, log, *args)
    append(log, 0, 1, 2)
    wait_for(lambda: audit_seqs(recorder) == [0, 1, 2], what="first events")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked and checkpointed")
    acked = recorder.batches()
    recorder.ack = False
    append(log, 3, 4, 5)
    wait_for(lambda: audit_seqs(recorder) == list(range(6)), what="unacked chunks")
    unacked = recorder.batches()[len(acked):]
    recorder.drop_connections()  # the same chunks come again on a new connection, byte for byte
    wait_for(lambda: len(recorder.batches()) >= len(acked) + 2 * len(unacked), what="resent")
    resent = recorder.batches()[len(acked) + len(unacked):]
    assert [b.raw for b in resent[:len(unacked)]] == [b.raw for b in unacked]
    assert resent[0].connection > unacked[0].connection
    fwd.kill()  # nothing after the first three events was acked
    cp = json.loads((tmp_path / "audit-forwarder.pos").read_text())
    last = acked[-1].options[OPTION]
    assert (cp["seq"], bytes.fromhex(cp["mac"])) == (last["seq"], last["mac"])
    before = len(recorder.batches())
    recorder.ack = True
    start_forwarder(recorder.port, log, *args)
    wait_for(lambda: audit_seqs(recorder)[-3:] == [3, 4, 5] and len(audit_seqs(recorder)) > 9,
             what="the unacked events again")
    after = recorder.batches()[before:]
    first = after[0].options[OPTION]
    assert (first["seq"], first["prev"]) == (last["seq"] + 1, last["mac"])  # on from the checkpoint
    check_chain(acked + after)


def test_without_a_key_chunks_name_their_source_and_tamper_evidence_is_said_off(start_forwarder, recorder,
                                                                               tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(recorder.port, log, "--flush-interval", "10ms", "--status-interval", "0")
    append(log, 0, 1)
    wait_for(lambda: audit_seqs(recorder) == [0, 1], what="events")
    assert all(b.options[OPTION] == {"source": os.uname().nodename, "cluster": ""} for b in recorder.batches())
    assert recorder.batches(STATUS_TAG) == []  # --status-interval 0: none
    assert fwd.metric("forwarder_tamper_evidence") == 0
    assert [e["event"] for e in fwd.logs()].count("tamper_evidence_off") == 1


def lose_a_backup_unread(fwd: Any, log: Path, add: Callable[[int], None]) -> tuple[Path, int]:
    """Three rotations while the forwarder's reader is blocked (nothing acked), ``add(i)`` appending event
    3 + i to each new live file; the backup holding event 4 alone is deleted unread: (its path, its size)."""
    def opened() -> int:
        return sum(1 for e in fwd.logs() if e["event"] == "file_opened")

    for i in range(3):
        before = opened()
        os.rename(log, log.parent / f"audit-2026-11-20T09-00-0{i}.000.log")
        add(i)
        wait_for(lambda b=before: opened() > b, what="the new live file held open")
    lost = log.parent / "audit-2026-11-20T09-00-01.000.log"
    size = lost.stat().st_size
    lost.unlink()
    return lost, size


def gap_in(rec: Recorder, gid: str | None = None) -> list[tuple[str | None, object]]:
    """(status chunk id, gap) for every gap in a status record (of this id)."""
    return [(b.chunk, g) for b, s in statuses(rec) for g in s.gaps if gid is None or g.id == gid]


def test_a_backup_rotated_away_unread_is_in_one_status_record_with_its_bytes_and_times(
        start_forwarder, recorder, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    args = ("--max-held-files", "2", "--max-inflight-chunks", "1", "--chunk-events", "1", "--flush-interval", "10ms",
            "--backoff-max", "200ms", "--status-interval", "2s", "--shared-key", "k")
    recorder.shared_key = "k"
    fwd = start_forwarder(recorder.port, log, *args)
    append(log, 0)
    wait_for(lambda: audit_seqs(recorder) == [0], what="first event")
    recorder.ack = False  # the reader stops on the full window
    append(log, 1, 2)
    wait_for(lambda: fwd.metric("forwarder_events_read_total") >= 2, what="reader blocked on the window")

    lost, size = lose_a_backup_unread(fwd, log, lambda i: append(log, 3 + i))
    recorder.ack = True
    recorder.drop_connections()
    wait_for(lambda: gap_in(recorder), timeout=15, what="the gap in a status record")
    chunk, gap = gap_in(recorder)[0]
    assert (gap.file, gap.bytes, gap.exact, gap.reason) == (str(lost), size, True, "rotated_unread")
    assert (gap.start, gap.end) == (stamp(2), stamp(4))  # after the last event read, before the first after it
    wait_for(lambda: 5 in audit_seqs(recorder), what="the last event")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="all acked")
    assert {c for c, _ in gap_in(recorder)} == {chunk}  # one status record (resends keep its chunk id)
    cp = json.loads((tmp_path / "audit-forwarder.pos").read_text())
    assert cp["gaps"] == []  # acked: not sent again
    assert fwd.stop() == 0
    before = len(statuses(recorder))
    start_forwarder(recorder.port, log, *args)
    wait_for(lambda: len(statuses(recorder)) > before, what="a status record after the restart")
    assert {c for c, _ in gap_in(recorder)} == {chunk}
    assert sorted(set(audit_seqs(recorder))) == [0, 1, 2, 4, 5]


def test_a_gap_found_at_restart_is_sent_again_after_a_sigkill_before_its_ack_then_never(
        start_forwarder, recorder, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.touch()
    args = ("--flush-interval", "10ms", "--status-interval", "1h", "--backoff-max", "200ms")
    fwd = start_forwarder(recorder.port, log, *args)
    append(log, 0, 1, 2)
    wait_for(lambda: audit_seqs(recorder) == [0, 1, 2], what="first 3")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked")
    fwd.kill()
    append(log, 3, 4, 5)
    lost = log.stat().st_size - json.loads((tmp_path / "audit-forwarder.pos").read_text())["offset"]
    log.unlink()  # rotated and deleted while the forwarder was down
    append(log, 6, 7)
    recorder.ack = False
    fwd = start_forwarder(recorder.port, log, *args)
    wait_for(lambda: gap_in(recorder), what="the gap sent")
    fwd.kill()  # before its ack
    first_chunk, gap = gap_in(recorder)[0]
    assert (gap.reason, gap.start, gap.end) == ("pruned_while_down", stamp(2), stamp(6))
    assert not gap.exact and 0 <= gap.bytes <= lost  # the live file's size at the checkpoint: a lower bound
    recorder.ack = True
    fwd = start_forwarder(recorder.port, log, *args)
    wait_for(lambda: any(c != first_chunk for c, _ in gap_in(recorder, gap.id)), what="the gap sent again")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked")
    assert fwd.stop() == 0
    assert json.loads((tmp_path / "audit-forwarder.pos").read_text())["gaps"] == []
    sent = len(gap_in(recorder))
    before = len(statuses(recorder))
    start_forwarder(recorder.port, log, *args)
    wait_for(lambda: len(statuses(recorder)) > before, what="a status record after the restart")
    assert len(gap_in(recorder)) == sent  # acked once: never again
    assert sorted(set(audit_seqs(recorder))) == [0, 1, 2, 6, 7]


@pytest.mark.parametrize("args, says", [
    (["--source-name", ""], "--source-name must not be empty"),
    (["--source-name", "a" * 254], "--source-name: at most 253 characters"),
    (["--cluster", "two words"], "--cluster 'two words': no spaces"),
    (["--cluster", "line\nbreak"], "--cluster 'line\\nbreak': no spaces"),
    (["--integrity-key-file", "/no/such/key"], "--integrity-key-file /no/such/key: cannot read it"),
    (["--integrity-key-file", "EMPTY"], "is empty"),
    (["--status-interval=-1s"], "must not be negative"),
])
def test_bad_source_and_chain_flags_are_one_line_errors(args: list[str], says: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "forwarder.cli", "--tailer", "h:1", *args], capture_output=True,
                          text=True, env=python_env(), timeout=30)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("audit-forwarder: error: ") and says in lines[0], lines[0]
