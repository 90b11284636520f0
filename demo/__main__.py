"""./run demo: the real path on loopback. A writer appends the shipped sample audit events to an
audit log and rotates it the way the kube-apiserver does; audit-forwarder follows the files and
sends them to audit-tailer, whose stdout (one audit event per line) is what you see.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "audit-sample.log"
sys.path.insert(0, str(ROOT))

from kube_audit.writer import RotatingLog  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(port: int, name: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " ")), 0.0)


def wait(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    parser.add_argument("--file", type=Path, default=SAMPLE, help="audit events to replay (JSON lines)")
    parser.add_argument("--rotate-bytes", type=int, default=400_000, help="rotate the audit log at this size")
    args = parser.parse_args()
    events = [orjson.loads(line) for line in args.file.read_bytes().splitlines() if line.strip()]
    env = dict(os.environ, PYTHONPATH=str(ROOT), KUBECONFIG=os.devnull)
    port, thttp, fhttp = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="kaf-demo-") as tmp:
        log = Path(tmp) / "audit.log"
        log.touch()
        fwd_log = Path(tmp) / "forwarder.log"
        tailer = subprocess.Popen([sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}",
                                   "--http-listen", f"127.0.0.1:{thttp}", "--log-level", "warning", "--data-dir", tmp,
                                   "--api-auth", "none"], env=env)
        with fwd_log.open("wb") as err:
            forwarder = subprocess.Popen(
                [sys.executable, "-m", "forwarder.cli", "--tailer", f"127.0.0.1:{port}", "--audit-log-path", str(log),
                 "--http-listen", f"127.0.0.1:{fhttp}"], env=env, stderr=err)
        try:
            wait(lambda: metric(fhttp, "forwarder_connected") == 1, 30, "the forwarder to connect")
            writer = RotatingLog(tmp, args.rotate_bytes, max_backups=3, compress=False)
            for event in events:  # fresh IDs and times, as a live apiserver would write them
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                event = {**event, "auditID": str(uuid.uuid4()), "stageTimestamp": now}
                writer.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            writer.close()
            wait(lambda: metric(fhttp, "forwarder_events_acked_total") >= len(events), 60, "every event acked")
            print(f"demo: {len(events)} audit events written with {writer.rotations} rotations, followed by "
                  f"audit-forwarder and acked by audit-tailer (forwarder log: {fwd_log.name})", file=sys.stderr)
            print("\ndemo: who changed databases.example.com/orders in namespace shop, from the tailer's store:\n"
                  "$ kubectl audit history databases.example.com orders -n shop", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "kubectl_audit.cli", "history", "databases.example.com", "orders",
                            "-n", "shop", "--server", f"http://127.0.0.1:{thttp}"], env=env, check=False)
        finally:
            forwarder.terminate()
            forwarder.wait(20)
            tailer.terminate()
            tailer.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
