"""./run demo: the tailer on loopback, fed the shipped sample audit log; its stdout is shown here.

A tiny sender stands in for the forwarder until the forwarder lands.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fluent_forward as ff

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "audit-sample.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(port: int, lines: list[bytes]) -> None:
    import orjson

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        decoder = ff.Decoder()
        for i in range(0, len(lines), 100):
            batch = [orjson.loads(line) for line in lines[i : i + 100]]
            packed = b"".join(ff.encode_entry(ff.EventTime.now(), record) for record in batch)
            chunk = uuid.uuid4().hex
            sock.sendall(ff.encode_packed_forward("audit", packed, chunk=chunk, size=len(batch), compress=True))
            acks: list[ff.Message] = []
            while not acks:
                acks = decoder.feed(sock.recv(4096))
            assert acks == [ff.Ack(chunk)], acks


def main() -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    parser.add_argument("--file", type=Path, default=SAMPLE, help="audit log to send (JSON lines)")
    args = parser.parse_args()
    port, http_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tailer = subprocess.Popen(
        [sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}", "--http-listen",
         f"127.0.0.1:{http_port}", "--data-dir", str(ROOT / "demo-data"), "--api-auth", "none"], env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or tailer.poll() is not None:
                    print("demo: the tailer did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        lines = [line for line in args.file.read_bytes().splitlines() if line.strip()]
        send(port, lines)
        print(f"demo: {len(lines)} audit events sent and acked; metrics at http://127.0.0.1:{http_port}/metrics",
              file=sys.stderr)
    finally:
        tailer.terminate()
        tailer.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
