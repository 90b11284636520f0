"""The forwarder and the tailer as real processes on loopback, following real files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import orjson

from tests.conftest import SAMPLE, sample_events, wait_for
from tests.helpers.auditlog import event


def append(path: Path, *events: dict | bytes, newline: bytes = b"\n") -> None:
    with path.open("ab") as fh:
        for e in events:
            fh.write(e if isinstance(e, bytes) else orjson.dumps(e) + newline)


def seqs(tailer) -> list[int]:
    return [r["seq"] for r in tailer.records()]


def test_read_from_head_then_restart_sends_nothing_twice(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    shutil.copy(SAMPLE, log)
    fwd = start_forwarder(tailer.port, log, "--read-from-head", "true")
    wait_for(lambda: len(tailer.records()) == len(sample_events()), what="sample delivered")
    assert tailer.records() == sample_events()
    assert fwd.stop() == 0
    pos = json.loads((tmp_path / "audit-forwarder.pos").read_text())
    assert pos["offset"] == log.stat().st_size and pos["inode"] == log.stat().st_ino
    append(log, event(1))
    start_forwarder(tailer.port, log)
    wait_for(lambda: len(tailer.records()) == len(sample_events()) + 1, what="the new line")
    assert tailer.records()[-1] == event(1)


def test_default_starts_at_the_end_of_the_live_file(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    append(log, event(0), event(1))
    append(log, b'{"kind":"Event","half')  # an unterminated line the apiserver is still writing
    start_forwarder(tailer.port, log)
    append(log, b'":1}\n')
    append(log, event(2))
    wait_for(lambda: len(tailer.records()) == 2, what="two records")
    assert tailer.records() == [{"kind": "Event", "half": 1}, event(2)]


def test_partial_lines_and_crlf(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--flush-interval", "10ms")
    line = orjson.dumps(event(1))
    append(log, event(0, pad=5), newline=b"\r\n")
    append(log, line[:40])
    wait_for(lambda: len(tailer.records()) == 1, what="the complete line")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked")
    assert seqs(tailer) == [0]  # the half line was not sent
    append(log, line[40:] + b"\n")
    wait_for(lambda: len(tailer.records()) == 2, what="the completed line")
    assert tailer.records() == [event(0, pad=5), event(1)]


def test_copy_truncate(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    start_forwarder(tailer.port, log)
    append(log, *[event(i) for i in range(100)])
    wait_for(lambda: len(tailer.records()) == 100, what="first 100")
    shutil.copy(log, tmp_path / "audit.log.1")
    os.truncate(log, 0)
    append(log, *[event(i) for i in range(100, 150)])
    wait_for(lambda: len(tailer.records()) == 150, what="50 after the truncation")
    assert seqs(tailer) == list(range(150))


def test_delete_and_recreate(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    start_forwarder(tailer.port, log)
    append(log, *[event(i) for i in range(10)])
    wait_for(lambda: len(tailer.records()) == 10, what="first 10")
    log.unlink()
    append(log, *[event(i) for i in range(10, 20)])
    wait_for(lambda: len(tailer.records()) == 20, what="10 in the new file")
    assert seqs(tailer) == list(range(20))


def test_rotation_by_rename_with_lines_written_before_the_rename(start_tailer, start_forwarder, tmp_path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log)
    append(log, *[event(i) for i in range(5)])
    wait_for(lambda: len(tailer.records()) == 5, what="first 5")
    fwd.kill()  # lines written while we are down, then rotated away, must still arrive
    append(log, *[event(i) for i in range(5, 8)])
    os.rename(log, tmp_path / "audit-2026-11-20T09-00-00.000.log")
    append(log, *[event(i) for i in range(8, 10)])
    start_forwarder(tailer.port, log)
    wait_for(lambda: len(tailer.records()) == 10, what="all 10")
    assert seqs(tailer) == list(range(10))


def test_compressed_backups_are_read_after_a_restart(start_tailer, start_forwarder, tmp_path: Path) -> None:
    import gzip

    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log)
    append(log, *[event(i) for i in range(3)])
    wait_for(lambda: len(tailer.records()) == 3, what="first 3")
    fwd.kill()
    append(log, *[event(i) for i in range(3, 6)])
    backup = tmp_path / "audit-2026-11-20T09-00-00.000.log.gz"
    backup.write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    append(log, *[event(i) for i in range(6, 8)])
    start_forwarder(tailer.port, log)
    wait_for(lambda: len(tailer.records()) == 8, what="all 8")
    assert seqs(tailer) == list(range(8))


def test_a_5mb_event_and_1000_garbage_lines(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    dead = tmp_path / "dead.jsonl"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--dead-letter-file", str(dead), "--max-event-bytes", "8Mi")
    big = event(0, pad=5 * 1024 * 1024)
    garbage = [b"not json at all", b"[1,2,3]", b'{"truncated": ', b"\x00\xff\xfe binary"]
    with log.open("ab") as fh:
        fh.write(orjson.dumps(big) + b"\n")
        for i in range(1, 1001):
            fh.write(garbage[i % 4] + b"\n")
            fh.write(orjson.dumps(event(i)) + b"\n")
        fh.write(b'{"pad": "' + b"y" * (9 * 1024 * 1024) + b'"}\n')  # over --max-event-bytes
        fh.write(orjson.dumps(event(1001)) + b"\n")
    wait_for(lambda: len(tailer.records()) == 1002, timeout=60, what="1002 good events")
    assert tailer.records()[0] == big
    assert seqs(tailer) == list(range(1002))
    wait_for(lambda: fwd.metric("forwarder_bad_lines_total", kind="too_large") == 1, what="too_large counted")
    assert fwd.metric("forwarder_bad_lines_total", kind="invalid_json") == 750
    assert fwd.metric("forwarder_bad_lines_total", kind="not_an_object") == 250
    dead_lines = [json.loads(x) for x in dead.read_text().splitlines()]
    assert len(dead_lines) == 1001 and dead_lines[0]["line"] == "[1,2,3]" and dead_lines[0]["kind"] == "not_an_object"
    logged = [e for e in fwd.logs() if e["event"] == "bad_line"]
    assert sorted(e["kind"] for e in logged) == ["invalid_json", "not_an_object", "too_large"]  # once per kind
    assert all(e["file"] == str(log) and isinstance(e["offset"], int) for e in logged)


def test_shared_key_and_tls_to_the_tailer(start_tailer, start_forwarder, tmp_path: Path, pki) -> None:
    tailer = start_tailer("--shared-key", "k3y", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                          "--tls-ca", str(pki.ca), "--tls-verify-client", "true")
    log = tmp_path / "audit.log"
    append(log, event(0))
    start_forwarder(tailer.port, log, "--read-from-head", "true", "--shared-key", "k3y", "--tls-ca", str(pki.ca),
                    "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key),
                    "--tls-server-name", "kube-audit-tailer")
    wait_for(lambda: len(tailer.records()) == 1, what="one record over TLS")


def test_wrong_shared_key_is_retried_and_reported_not_lost(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer("--shared-key", "right")
    log = tmp_path / "audit.log"
    append(log, event(0))
    fwd = start_forwarder(tailer.port, log, "--read-from-head", "true", "--shared-key", "wrong",
                          "--backoff-max", "200ms")
    wait_for(lambda: fwd.metric("forwarder_reconnects_total") >= 3, what="retries")
    failures = [e for e in fwd.logs() if e["event"] == "tailer_unavailable"]
    assert len(failures) == 1 and "shared_key mismatch" in failures[0]["error"]  # one line per state change
    assert tailer.records() == []


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import python_env

    for args in (["--tailer", "x"], [], ["--tailer", "h:1", "--proxy", "socks5://p:1"],
                 ["--tailer", "h:1", "--tls-ca", "/missing.crt"], ["--tailer", "h:1", "--chunk-events", "0"]):
        proc = subprocess.run([sys.executable, "-m", "forwarder.cli", *args], capture_output=True, text=True,
                              env=python_env(), timeout=30)
        assert proc.returncode == 2, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("audit-forwarder: error: "), proc.stderr


def test_gaps_are_reported_with_bytes_lost(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--flush-interval", "10ms")
    append(log, *[event(i) for i in range(3)])
    wait_for(lambda: len(tailer.records()) == 3, what="first 3")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked")
    fwd.kill()
    append(log, *[event(i) for i in range(3, 6)])
    lost = log.stat().st_size - json.loads((tmp_path / "audit-forwarder.pos").read_text())["offset"]
    log.unlink()  # rotated and deleted while the forwarder was down: really lost
    append(log, *[event(i) for i in range(6, 8)])
    fwd = start_forwarder(tailer.port, log)
    wait_for(lambda: len(tailer.records()) == 5, what="the events of the new file")
    assert seqs(tailer) == [0, 1, 2, 6, 7]
    assert fwd.metric("forwarder_gaps_total") == 1
    gap = next(e for e in fwd.logs() if e["event"] == "gap")
    assert gap["level"] == "error" and gap["bytes_lost"] >= 0 and gap["file"] == str(log)
    assert lost > 0


def test_held_file_limit_closes_backups_and_reopens_them_only_a_deleted_one_is_a_gap(
        start_tailer, start_forwarder, tmp_path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--max-held-files", "2", "--max-inflight-chunks", "1",
                          "--chunk-events", "1", "--flush-interval", "10ms", "--backoff-max", "200ms")
    append(log, event(0))
    wait_for(lambda: len(tailer.records()) == 1, what="first event")
    tailer.stop()
    append(log, event(1), event(2))  # one chunk waits for its ack, the next blocks the reader
    wait_for(lambda: fwd.metric("forwarder_events_read_total") >= 2, what="reader blocked on the window")

    def opened() -> int:
        return sum(1 for e in fwd.logs() if e["event"] == "file_opened")

    sizes = []
    for i in range(4):  # four rotations while the tailer is away and the reader is paused
        before = opened()
        os.rename(log, tmp_path / f"audit-2026-11-20T09-00-0{i}.000.log")
        append(log, event(3 + i))
        sizes.append(log.stat().st_size)
        wait_for(lambda b=before: opened() > b, what="the new live file held open")
    held = [p for p in Path(f"/proc/{fwd.proc.pid}/fd").iterdir() if "audit" in os.path.realpath(p)]
    assert len(held) <= 2  # descriptors are bounded ...
    (tmp_path / "audit-2026-11-20T09-00-01.000.log").unlink()  # ... data is not: only this backup is lost
    tailer.start()
    wait_for(lambda: 6 in seqs(tailer), timeout=30, what="the last event")
    gaps = [e for e in fwd.logs() if e["event"] == "gap"]
    assert [g["bytes_lost"] for g in gaps] == [sizes[0]]  # the deleted backup, exactly its bytes, once
    assert fwd.metric("forwarder_gap_bytes_total") == sizes[0]
    assert sorted(set(seqs(tailer))) == [0, 1, 2, 4, 5, 6]


def test_quiet_restart_resumes_where_it_started_not_at_the_new_end(start_tailer, start_forwarder, tmp_path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    append(log, *[event(i) for i in range(3)])  # already there: not sent (no --read-from-head)
    fwd = start_forwarder(tailer.port, log)  # ready: the start position is already on disk
    fwd.kill()  # read nothing, acked nothing
    append(log, *[event(i) for i in range(3, 6)])  # written while it was down
    start_forwarder(tailer.port, log)
    wait_for(lambda: len(tailer.records()) == 3, what="the lines written while it was down")
    assert seqs(tailer) == [3, 4, 5]


def test_missing_log_folder_is_reported_once_and_followed_once_it_appears(start_tailer, start_forwarder,
                                                                          tmp_path) -> None:
    import httpx

    tailer = start_tailer()
    log = tmp_path / "not-yet" / "audit.log"
    fwd = start_forwarder(tailer.port, log, "--stat-interval", "50ms", "--position-file", str(tmp_path / "pos"),
                          wait=False)

    def health() -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{fwd.http_port}/healthz", timeout=1).status_code
        except httpx.HTTPError:
            return 0

    wait_for(lambda: health() == 503, what="/healthz says the folder is missing")
    wait_for(lambda: fwd.metric("forwarder_audit_log_folder_missing") == 1, what="the gauge")
    polls = fwd.metric("forwarder_audit_log_folder_missing")
    assert polls == 1 and not log.parent.exists()  # we do not create the apiserver's folder
    log.parent.mkdir()
    append(log, event(0), event(1))
    wait_for(lambda: health() == 200, what="/healthz fine once the folder exists")
    append(log, event(2))
    wait_for(lambda: 2 in seqs(tailer), what="events of the new folder")
    assert [e["event"] for e in fwd.logs()].count("audit_log_folder_missing") == 1  # said once


def test_dead_letter_write_error_is_counted_and_forwarding_goes_on(start_tailer, start_forwarder, tmp_path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--dead-letter-file", "/dev/full")  # every write: ENOSPC
    for i in range(5):
        append(log, b"not json " + str(i).encode() + b"\n", event(i))
    wait_for(lambda: len(tailer.records()) == 5, what="the good lines after bad ones")
    assert seqs(tailer) == list(range(5))
    assert fwd.metric("forwarder_dead_letter_errors_total") == 5
    assert fwd.metric("forwarder_bad_lines_total", kind="invalid_json") == 5
    assert [e["event"] for e in fwd.logs()].count("dead_letter_write_failed") == 1
    assert fwd.proc is not None and fwd.proc.poll() is None


def test_a_gap_is_reported_once_across_sigkill_restarts(start_tailer, start_forwarder, tmp_path: Path) -> None:
    tailer = start_tailer()
    log = tmp_path / "audit.log"
    log.touch()
    fwd = start_forwarder(tailer.port, log, "--flush-interval", "10ms")
    append(log, *[event(i) for i in range(3)])
    wait_for(lambda: len(tailer.records()) == 3, what="first 3")
    wait_for(lambda: fwd.metric("forwarder_inflight_chunks") == 0, what="acked")
    fwd.kill()
    append(log, *[event(i) for i in range(3, 6)])
    log.unlink()  # rotated and deleted while the forwarder was down: really lost
    append(log, *[event(i) for i in range(6, 8)])
    tailer.stop()  # nothing is acked after the restart: the checkpoint cannot move past the gap
    fwd = start_forwarder(tailer.port, log, "--backoff-max", "200ms")
    assert fwd.metric("forwarder_gaps_total") == 1
    fwd.kill()
    fwd = start_forwarder(tailer.port, log, "--backoff-max", "200ms")
    assert fwd.metric("forwarder_gaps_total") == 0  # reported by the previous process already
    tailer.start()
    wait_for(lambda: 7 in seqs(tailer), what="the new file")
    assert seqs(tailer) == [0, 1, 2, 6, 7]
