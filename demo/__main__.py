"""./run demo: the whole path on this machine, in under a minute, with nothing lost.

An apiserver-like writer appends 40 audit events to an audit log. audit-forwarder follows the log and sends
the events to audit-tailer, which prints each one as a JSON line (the live view shows one row per event) and
stores it. Meanwhile the log is rotated twice, the forwarder is killed (-9) and started again, and the tailer
is stopped and started again. At the end the tailer's store is asked who changed shop/orders.
Everything is kept in --out DIR: the JSON lines the tailer printed, the audit log, both daemons' logs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo.story import ACTIONS, TOTAL, plan, row  # noqa: E402
from kube_audit.contract import PREFIX  # noqa: E402
from kube_audit.writer import RotatingLog  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)  # polling interval of the condition


def say(text: str) -> None:
    with View.lock:
        print(text, flush=True)


class View:
    """Reads the tailer's stdout: every line goes to events.jsonl, each new auditID becomes one row."""

    lock = threading.Lock()

    def __init__(self, out: Path) -> None:
        self.file = (out / "events.jsonl").open("ab")
        self.seen: set[str] = set()
        self.lines = 0

    def follow(self, stdout: IO[bytes]) -> threading.Thread:
        def run() -> None:
            for line in stdout:
                self.file.write(line)
                self.file.flush()
                self.lines += 1
                event = orjson.loads(line)
                if event["auditID"] in self.seen:  # resent after a restart: the store keeps it once
                    continue
                self.seen.add(event["auditID"])
                say(f"[{len(self.seen):2}/{TOTAL}] {row(event)}")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


class Demo:
    def __init__(self, out: Path, pace: float) -> None:
        self.out, self.pace = out, pace
        self.env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", KUBECONFIG=os.devnull)
        self.env.pop("KUBERNETES_SERVICE_HOST", None)
        self.port, self.thttp, self.fhttp = free_port(), free_port(), free_port()
        (out / "log").mkdir()
        self.log = RotatingLog(str(out / "log"), 1 << 40, max_backups=10, compress=False)  # rotated by the story
        self.view = View(out)
        self.tailer: subprocess.Popen[bytes] | None = None
        self.forwarder: subprocess.Popen[bytes] | None = None

    def _daemon(self, module: str, args: list[str], logname: str, stdout: int | None) -> subprocess.Popen[bytes]:
        with (self.out / logname).open("ab") as err:
            return subprocess.Popen([sys.executable, "-m", module, *args], env=self.env, stdout=stdout, stderr=err)

    def start_tailer(self) -> None:
        self.tailer = self._daemon("tailer.cli", [
            "--listen", f"127.0.0.1:{self.port}", "--http-listen", f"127.0.0.1:{self.thttp}",
            "--data-dir", str(self.out), "--api-auth", "none", "--no-configmaps", "--log-level", "warning",
        ], "tailer.log", subprocess.PIPE)
        assert self.tailer.stdout is not None
        self.view.follow(self.tailer.stdout)

    def start_forwarder(self) -> None:
        self.forwarder = self._daemon("forwarder.cli", [
            "--tailer", f"127.0.0.1:{self.port}", "--audit-log-path", str(self.out / "log" / "audit.log"),
            "--read-from-head", "--http-listen", f"127.0.0.1:{self.fhttp}", "--backoff-max", "1s",
        ], "forwarder.log", None)

    def ready(self, port: int, path: str) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def act(self, action: str) -> None:
        if action == "rotate":
            self.log.rotate()
            newest = max(p.name for p in (self.out / "log").glob("audit-*.log"))
            say(f"   -- the apiserver rotates audit.log -> {newest}")
        elif action == "kill_forwarder" and self.forwarder:
            say("   -- kill -9 audit-forwarder; the apiserver keeps writing")
            self.forwarder.send_signal(signal.SIGKILL)
            self.forwarder.wait(20)
        elif action == "start_forwarder":
            say("   -- audit-forwarder starts again: it resumes after the last acked line")
            self.start_forwarder()
        elif action == "stop_tailer" and self.tailer:
            say("   -- audit-tailer stops (SIGTERM); the forwarder retries")
            self.tailer.terminate()
            self.tailer.wait(30)
        elif action == "start_tailer":
            say("   -- audit-tailer starts again; the forwarder resends what was not acked")
            self.start_tailer()

    def stored(self) -> set[str]:
        body = httpx.get(f"http://127.0.0.1:{self.thttp}{PREFIX}/events", params={"limit": 5000}, timeout=10).json()
        return {item["auditID"] for item in body["items"]}

    def kubectl_audit(self, *args: str) -> None:
        say("$ kubectl audit " + " ".join(args))
        subprocess.run([sys.executable, "-m", "kubectl_audit.cli", *args, "--server", f"http://127.0.0.1:{self.thttp}"],
                       env=self.env, check=False)

    def run(self) -> int:
        out = self.out
        say("demo: everything runs on this machine (loopback, no cluster); its files stay in")
        say(f"      {out}")
        say(f"demo: audit-tailer starts: forward protocol on 127.0.0.1:{self.port}, API on :{self.thttp},")
        say("      store in audit.db")
        self.start_tailer()
        wait(lambda: self.ready(self.thttp, "/readyz"), 60, "audit-tailer to be ready")
        say("demo: audit-forwarder starts: follows log/audit.log, sends to the tailer")
        self.start_forwarder()
        wait(lambda: self.ready(self.fhttp, "/healthz"), 60, "audit-forwarder to start")
        say(f"demo: an apiserver-like writer appends {TOTAL} audit events to log/audit.log;")
        say("      each row is one event as the tailer printed it:")
        say(f"{'':8}{'TIME (UTC)':<13}{'USER':<22}{'VERB':<7}{'OBJECT':<26}CODE")
        written: set[str] = set()
        for planned in plan():
            action = ACTIONS.get(planned.index)
            if action in ("kill_forwarder", "stop_tailer"):  # each break starts once the rows before it are in
                wait(lambda: written <= self.view.seen, 90, "the tailer to print every event so far")
            if action:
                self.act(action)
            event = planned.event()
            written.add(event["auditID"])
            self.log.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            time.sleep(self.pace)  # the apiserver's pace, so the rows arrive as a person can follow them
        self.log.close()
        wait(lambda: written <= self.view.seen, 90, "the tailer to print every event")
        stored = self.stored()
        lost = len(written - stored)
        resent = self.view.lines - len(self.view.seen)
        again = f"{resent} sent twice after a restart, stored once" if resent else "none sent twice"
        say(f"demo: {len(written)} events written, {len(self.view.seen)} printed by the tailer, {len(stored)} in its "
            f"store: {'none' if not lost else lost} lost,")
        say(f"      {again}")
        self.kubectl_audit("history", "databases.example.com", "orders", "-n", "shop")
        self.kubectl_audit("diff", "databases.example.com", "orders", "-n", "shop", "--from", "1", "--to", "3")
        say(f"demo: kept in {out}:")
        say(f"      events.jsonl (the {self.view.lines} JSON lines the tailer printed), log/ (the audit log")
        say("      and its backups), tailer.log, forwarder.log, audit.db (the store)")
        return 0 if not lost else 1

    def stop(self) -> None:
        for proc in (self.forwarder, self.tailer):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        self.view.file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="an empty or new folder for the demo's files (default: a new one "
                                                 "under the temp folder); kept")
    parser.add_argument("--pace", type=float, default=0.15, help="seconds between audit events (default 0.15)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="kaf-demo-"))
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} is not empty: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    demo = Demo(out.resolve(), args.pace)
    try:
        return demo.run()
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
