"""The API in a process of its own (``--api-process``, the default with an HTTPS API port): real processes,
SIGKILLed. The API process is restarted and ingest goes on meanwhile; a killed tailer leaves no API process
behind; watchers are woken by the commit, not by their poll; /metrics carries the API's families."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kube_audit.contract import PREFIX
from tests.conftest import TailerProcess, free_port, live_children, wait_for
from tests.helpers.auditlog import event
from tests.helpers.sender import Sender


def children(pid: int) -> list[int]:
    """The tailer's API process: its child that runs python (spawn's resource tracker runs ``-c``, too)."""
    found = []
    for child, _ in live_children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmd and b"spawn_main" in cmd:
            found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1].split()[0] != "Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def tailer(request: pytest.FixtureRequest, start_tailer: Any, pki: Any) -> Iterator[Any]:
    api_port = free_port()
    store = [] if request.param == "sqlite" else ["--store", request.getfixturevalue("postgres").new_database()]
    t = start_tailer(*store, "--stdout", "false", "--configmaps", "false", "--api-auth", "none", "--watch-poll", "60s",
                     "--api-listen", f"127.0.0.1:{api_port}", "--api-tls-cert", str(pki.server.cert),
                     "--api-tls-key", str(pki.server.key))
    t.api = httpx.Client(base_url=f"https://127.0.0.1:{api_port}", verify=ssl.create_default_context(cafile=str(pki.ca)),
                         timeout=10)
    yield t
    t.api.close()


def listed(t: Any) -> list[str] | None:
    try:
        response = t.api.get(f"{PREFIX}/auditevents")
    except httpx.HTTPError:
        return None
    return [e["auditID"] for e in response.json()["items"]] if response.status_code == 200 else None


def send(t: TailerProcess, records: list[dict[str, object]]) -> None:
    with Sender("127.0.0.1", t.port) as s:
        s.send_chunk(records)


def test_a_sigkilled_api_process_is_restarted_and_ingest_goes_on(tailer: Any) -> None:
    assert tailer.proc is not None
    [api] = children(tailer.proc.pid)
    send(tailer, [event(1)])
    wait_for(lambda: listed(tailer) == [event(1)["auditID"]], what="the first event listed")
    os.kill(api, signal.SIGKILL)
    wait_for(lambda: not alive(api), what="the API process gone")
    send(tailer, [event(2)])  # acked while the API is down or starting again: ingest does not wait for it
    wait_for(lambda: listed(tailer) == [event(1)["auditID"], event(2)["auditID"]], what="the API back")
    [again] = children(tailer.proc.pid)
    assert again != api
    assert tailer.metric("tailer_api_process_restarts_total") == 1
    exited = [r for r in tailer.logs() if r.get("event") == "api_process_exited"]
    assert len(exited) == 1 and exited[0]["exit_code"] == -signal.SIGKILL and exited[0]["level"] == "error"


def test_a_sigkilled_tailer_leaves_no_api_process(tailer: Any) -> None:
    assert tailer.proc is not None
    [api] = children(tailer.proc.pid)
    tailer.kill()
    wait_for(lambda: not alive(api), what="the API process to notice its tailer is gone")


def test_sigterm_stops_the_api_process_without_a_restart(tailer: Any) -> None:
    assert tailer.proc is not None
    [api] = children(tailer.proc.pid)
    assert tailer.stop() == 0
    assert not alive(api)
    events = [r.get("event") for r in tailer.logs()]
    assert "api_process_exited" not in events and "api_process_killed" not in events


def test_a_watch_is_woken_by_the_commit_not_by_its_poll(tailer: Any) -> None:
    """--watch-poll is 60 s here: only the wake from the tailer's commit can deliver within the wait."""
    seen: list[str] = []

    def watch() -> None:
        with tailer.api.stream("GET", f"{PREFIX}/auditevents", params={"watch": "true", "timeoutSeconds": "30"},
                               timeout=40) as response:
            for line in response.iter_lines():
                if line:
                    seen.append(line)
                    return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    wait_for(lambda: tailer.metric("tailer_api_watchers") == 1, what="the watch open (its metric from the API process)")
    send(tailer, [event(7)])
    wait_for(lambda: bool(seen), timeout=10, what="the watch event")
    assert event(7)["auditID"] in seen[0]
    reader.join(10)


def test_metrics_carry_both_processes_families_once(tailer: Any) -> None:
    send(tailer, [event(1)])
    wait_for(lambda: listed(tailer) is not None, what="the API")
    text = httpx.get(f"http://127.0.0.1:{tailer.http_port}/metrics", timeout=5).text
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families)), "a family shown twice"
    assert 'tailer_api_requests_total{code="200",route="events"} 1.0' in text  # counted in the API process
    assert "tailer_store_events_inserted_total 1.0" in text  # counted in the tailer's
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


def test_a_bad_certificate_fails_the_tailer_at_start_up(tmp_path: Path, pki: Any) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    t = TailerProcess(tmp_path, "--configmaps", "false", "--api-listen", f"127.0.0.1:{free_port()}",
                      "--api-tls-cert", str(bad), "--api-tls-key", str(pki.server.key)).start(wait=False)
    assert t.proc is not None
    assert t.proc.wait(60) == 1
    failed = [r for r in t.logs() if r.get("event") == "tailer_failed"]
    assert len(failed) == 1 and "API process failed to start" in failed[0]["error"], t.stderr()[-2000:]


def test_an_api_process_that_cannot_start_again_is_retried_while_ingest_goes_on(start_tailer: Any, pki: Any,
                                                                                tmp_path: Path) -> None:
    """A certificate gone bad (a rotation that went wrong) while the API process is down: the tailer keeps
    acking, says so, retries with backoff, and the API is back once the certificate is good again."""
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    cert.write_bytes(Path(pki.server.cert).read_bytes())
    key.write_bytes(Path(pki.server.key).read_bytes())
    api_port = free_port()
    t = start_tailer("--stdout", "false", "--configmaps", "false", "--api-auth", "none", "--api-listen",
                     f"127.0.0.1:{api_port}", "--api-tls-cert", str(cert), "--api-tls-key", str(key))
    t.api = httpx.Client(base_url=f"https://127.0.0.1:{api_port}", verify=ssl.create_default_context(cafile=str(pki.ca)),
                         timeout=10)
    try:
        assert t.proc is not None
        [api] = children(t.proc.pid)
        good = cert.read_bytes()
        cert.write_text("not a certificate\n")
        os.kill(api, signal.SIGKILL)
        wait_for(lambda: any(r.get("event") == "api_process_start_failed" for r in t.logs()),
                 what="the failed restart said")
        send(t, [event(3)])  # acked: ingest does not wait for the API
        assert listed(t) is None
        cert.write_bytes(good)
        wait_for(lambda: listed(t) == [event(3)["auditID"]], timeout=60, what="the API back with a good certificate")
        failures = [r for r in t.logs() if r.get("event") == "api_process_start_failed"]
        assert failures and all(r["level"] == "error" and "API process failed to start" in r["error"] for r in failures)
    finally:
        t.api.close()
