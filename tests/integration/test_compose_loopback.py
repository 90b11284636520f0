"""docker-compose.yml without Docker: its services as local processes on loopback, from its own commands.

init-certs.sh, stunnel and tinyproxy with compose/'s config files, and the writer, forwarder and tailer with
the commands and environment docker-compose.yml gives them; only host names, ports and folders are mapped
to loopback and a temporary folder. Every event the writer wrote must come out of the tailer, in order.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.conftest import ROOT, free_port, python_env, wait_for

STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")
TINYPROXY = shutil.which("tinyproxy")
OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(not (STUNNEL and TINYPROXY and OPENSSL),
                                reason="needs stunnel, tinyproxy and openssl (./run test installs them)")
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
EVENTS = 300
SEQ = "demo.kube-audit-forwarder.io/seq"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tailer_options() -> set[str]:
    from tailer.cli import build_parser

    return {o for a in build_parser()._actions for o in a.option_strings}


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_compose_services_on_loopback(tmp_path: Path, processes: list[subprocess.Popen[bytes]]) -> None:
    certs, log_dir, state = tmp_path / "certs", tmp_path / "log", tmp_path / "state"
    log_dir.mkdir()
    state.mkdir()
    tailer_port, tailer_http, proxy_port, connect_port, metrics = (free_port() for _ in range(5))
    mapping = {"tailer:24224": f"127.0.0.1:{tailer_port}", "0.0.0.0:24224": f"127.0.0.1:{tailer_port}",
               "0.0.0.0:8080": f"127.0.0.1:{tailer_http}", "proxy:9443": f"127.0.0.1:{proxy_port}",
               "0.0.0.0:9880": f"127.0.0.1:{metrics}", "/certs": str(certs),
               "/var/log/audit": str(log_dir), "/var/lib/audit-forwarder": str(state),
               "/var/lib/audit-tailer": str(state)}

    def local(text: str) -> str:
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text

    def start(argv: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
        with out.open("wb") as fh, (out.with_suffix(".err")).open("wb") as err:
            proc = subprocess.Popen(argv, stdout=fh, stderr=err, env=env, cwd=tmp_path)
        processes.append(proc)
        return proc

    def service(name: str, *extra: str) -> subprocess.Popen[bytes]:
        # PostgreSQL is for the store's own tests; here the tailer keeps its default store, in tmp_path
        command = [local(arg) for arg in SERVICES[name]["command"] if not arg.startswith("--store=postgres")]
        if name == "tailer" and "--data-dir" in tailer_options():
            command.append(f"--data-dir={state}")
        if command[0] in ("audit-forwarder", "audit-tailer"):  # the console scripts, from this checkout
            command = [sys.executable, "-m", command[0].replace("audit-", "") + ".cli", *command[1:]]
        elif command[0] == "python":
            command[0] = sys.executable
        env = python_env()
        env.update({k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()})
        return start([*command, *extra], env, tmp_path / f"{name}.out")

    # init: the certificates, as the compose init service makes them
    subprocess.run(["sh", str(ROOT / "compose" / "init-certs.sh"), str(log_dir), str(state)], check=True,
                   env={**os.environ, "CERTS": str(certs), "OWNER": f"{os.getuid()}:{os.getgid()}"},
                   capture_output=True)
    assert {p.name for p in certs.iterdir()} == {"ca.crt", "proxy.crt", "proxy.key", "forwarder.crt", "forwarder.key"}

    # proxy (stunnel) and connect (tinyproxy) with compose/'s config files
    stunnel_conf = tmp_path / "stunnel.conf"
    stunnel_conf.write_text(local((ROOT / "compose" / "stunnel.conf").read_text())
                            .replace("0.0.0.0:9443", f"127.0.0.1:{proxy_port}")
                            .replace("connect:8888", f"127.0.0.1:{connect_port}"))
    tinyproxy_conf = tmp_path / "tinyproxy.conf"
    tinyproxy_conf.write_text((ROOT / "compose" / "tinyproxy.conf").read_text()
                              .replace("Port 8888", f"Port {connect_port}")
                              .replace("Listen 0.0.0.0", "Listen 127.0.0.1")
                              .replace("ConnectPort 24224", f"ConnectPort {tailer_port}"))
    start([TINYPROXY, "-d", "-c", str(tinyproxy_conf)], dict(os.environ), tmp_path / "connect.out")  # type: ignore[list-item]
    start([STUNNEL, str(stunnel_conf)], dict(os.environ), tmp_path / "proxy.out")  # type: ignore[list-item]
    wait_for(lambda: listening(connect_port) and listening(proxy_port), 20, "stunnel and tinyproxy")

    service("tailer")
    wait_for(lambda: listening(tailer_http) and httpx.get(f"http://127.0.0.1:{tailer_http}/readyz").is_success,
             30, "tailer /readyz")
    forwarder = service("forwarder")
    wait_for(lambda: listening(metrics), 30, "forwarder metrics")
    writer = service("writer", "--events", str(EVENTS), "--rate", "200", "--seed", "1")
    assert writer.wait(60) == 0

    out = tmp_path / "tailer.out"

    def received() -> list[int]:
        data = out.read_bytes()
        return [int(orjson.loads(line)["annotations"][SEQ]) for line in data[: data.rfind(b"\n") + 1].splitlines()]

    wait_for(lambda: len(received()) >= EVENTS, 60, f"{EVENTS} events on the tailer's stdout")
    assert received() == list(range(EVENTS))
    assert forwarder.poll() is None
    rotated = [p.name for p in log_dir.iterdir() if p.name.startswith("audit-")]
    assert rotated, "the writer should have rotated (compose's --rotate-bytes)"
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
    assert "forwarder_gaps_total 0.0" in text
