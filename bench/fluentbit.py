"""The tailer's CPU per event without a store vs a real Fluent Bit in_forward (-> out_null), same run.

Both receive the same realistic events (bench/events.py) as our forwarder sends them: CompressedPackedForward
chunks of 1,000 events, gzip, each asking for an ack (``chunk`` option), 4 in flight, one connection (with
``--mode forward``, as a Fluent Bit out_forward sends them by default instead: Forward mode, not compressed,
each entry with its empty metadata map; an ack asked for, as ``require_ack_response`` does). The
tailer runs with ``--store none --configmaps false`` and prints to /dev/null; Fluent Bit runs in_forward ->
out_null. Fluent Bit acks a chunk once it is in its input buffer and flushes to out_null afterwards, so
each receiver's CPU (user + system of all its threads, from /proc/<pid>/stat) is read once it has been
idle for a while after the last ack (its flush included). Receivers are interleaved ``--runs`` times;
medians, and the ratio ours / Fluent Bit (goal <= 2x).

Beside them, ``python floor``: in this process, with the collector off, only the steps any CPython receiver that
prints each event as a JSON line cannot skip, each in C: inflate the chunk (zlib), decode its entries (msgpack)
and encode each record (orjson). No parse, no checks, no socket: what such a receiver's CPU per event is at least.

With ``--callgrind``, each receiver runs once under valgrind's callgrind instead, and what is printed is the
instructions it executed per event: (a run that receives ``--events`` events, minus a run that receives none
and lives as long), the one figure this machine repeats (its speed drifts by up to 2x within minutes).
Instructions are not time (C and the interpreter retire them at different rates); compare within a receiver.

Fluent Bit is not part of this project: build it beside it (README, issue 13) and pass its binary.

    python -m bench.fluentbit --fluent-bit /path/to/fluent-bit [--events 500000] [--runs 3] [--before REV] [--mode forward]
    python -m bench.fluentbit --fluent-bit /path/to/fluent-bit --callgrind [--events 20000] [--before REV]
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import fluent_forward as ff  # noqa: E402
from bench.daemon import cpu_seconds  # noqa: E402
from bench.events import many  # noqa: E402
from bench.store_e2e import connect, send_all  # noqa: E402
from bench.store_perf import unpack  # noqa: E402
from bench.synth import free_port  # noqa: E402

CHUNK = 1000
FLUENT_BIT_CONF = """\
[SERVICE]
    Flush        1
    Log_Level    warn
    HTTP_Server  Off

[INPUT]
    Name    forward
    Listen  127.0.0.1
    Port    {port}

[OUTPUT]
    Name   null
    Match  *
"""


MODES = ("compressed", "forward")


def chunks(n: int, mode: str = "compressed") -> list[tuple[str, bytes]]:
    """``n`` events as acked chunks of 1,000, built a chunk at a time (500k records never sit in memory):
    ``compressed`` as our forwarder sends them (CompressedPackedForward, gzip, entries ``[time, record]``),
    ``forward`` as a Fluent Bit out_forward with ``require_ack_response`` does (Forward mode, entries
    ``[[time, {}], record]``, options ``chunk``, ``size`` and ``fluent_signal``; shared/anchors)."""
    import msgpack

    out: list[tuple[str, bytes]] = []
    records = many(n)
    for c in itertools.count():
        batch = list(itertools.islice(records, CHUNK))
        if not batch:
            return out
        times = [ff.EventTime(1_763_629_200 + c, j) for j in range(len(batch))]
        if mode == "forward":
            entries = [[[msgpack.ExtType(0, t.to_bytes()), {}], r] for t, r in zip(times, batch, strict=True)]
            options = {"chunk": f"c{c}", "size": len(batch), "fluent_signal": 0}
            out.append((f"c{c}", msgpack.packb(["audit", entries, options], use_bin_type=True)))
            continue
        packed = b"".join(ff.encode_entry(t, r) for t, r in zip(times, batch, strict=True))
        out.append((f"c{c}", ff.encode_packed_forward("audit", packed, chunk=f"c{c}", compress=True)))


def settled_cpu(pid: int, quiet: float = 1.5, limit: float = 30.0) -> float:
    """The process's CPU seconds once they have not grown for ``quiet`` seconds (a flush after the acks)."""
    last, since, end = cpu_seconds(pid), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def measure(start: Callable[[int], subprocess.Popen[bytes]], data: list[tuple[str, bytes]], n: int
            ) -> tuple[float, float]:
    """(events/s, CPU µs per event) of the receiver ``start(port)`` launches."""
    port = free_port()
    proc = start(port)
    try:
        sock = connect(port)
        idle = settled_cpu(proc.pid, quiet=0.5)
        elapsed = send_all(sock, data)
        cpu = settled_cpu(proc.pid) - idle
    finally:
        proc.terminate()
        proc.wait(30)
    return n / elapsed, cpu / n * 1e6


def tailer(tree: Path, tmp: Path, null: int, prefix: Sequence[str] = ()) -> Callable[[int], subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(tree), KUBECONFIG=os.devnull)

    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*prefix, sys.executable, "-m", "tailer.cli", "--listen", f"127.0.0.1:{port}",
                                 "--http-listen", f"127.0.0.1:{free_port()}", "--log-level", "warning",
                                 "--data-dir", str(tmp), "--store", "none", "--configmaps", "false"],
                                stdout=null, env=env, cwd=str(tree))
    return start


def fluent_bit(binary: str, tmp: Path, null: int, prefix: Sequence[str] = ()) -> Callable[[int], subprocess.Popen[bytes]]:
    def start(port: int) -> subprocess.Popen[bytes]:
        conf = tmp / f"fluent-bit-{port}.conf"
        conf.write_text(FLUENT_BIT_CONF.format(port=port))
        return subprocess.Popen([*prefix, binary, "-c", str(conf)], stdout=null, stderr=subprocess.STDOUT)
    return start


def instructions(make: Callable[[Sequence[str]], Callable[[int], subprocess.Popen[bytes]]], data: list[tuple[str, bytes]],
                 tmp: Path, lifetime: float | None = None) -> tuple[int, float]:
    """(instructions, seconds alive) of one receiver under callgrind that gets ``data`` (acked, then idle
    until its CPU settles), or nothing, alive ``lifetime`` seconds (the same idle timers as the other run)."""
    log = tmp / f"callgrind-{time.monotonic_ns()}.log"
    prefix = ["valgrind", "--tool=callgrind", f"--log-file={log}", f"--callgrind-out-file={log}.out"]
    port, born = free_port(), time.monotonic()
    proc = make(prefix)(port)
    try:
        sock = connect(port, timeout=900, proc=proc)  # (start-up under valgrind takes a minute or more)
        if data:
            send_all(sock, data)
            settled_cpu(proc.pid, quiet=3.0, limit=60.0)
        else:
            sock.close()
            time.sleep(max(0.0, (lifetime or 0.0) - (time.monotonic() - born)))
        alive = time.monotonic() - born
    finally:
        proc.terminate()
        proc.wait(600)
    found = re.findall(r"Collected : (\d+)", log.read_text())
    if not found:
        raise RuntimeError(f"callgrind wrote no total (see {log})")
    return int(found[-1]), alive


def callgrind(receivers: dict[str, Callable[[Sequence[str]], Callable[[int], subprocess.Popen[bytes]]]],
              data: list[tuple[str, bytes]], n: int, tmp: Path) -> dict[str, float]:
    """Instructions per event of each receiver: a run with ``data`` minus a run without, as long."""
    out: dict[str, float] = {}
    for name, make in receivers.items():
        loaded, alive = instructions(make, data, tmp)
        idle, _ = instructions(make, [], tmp, lifetime=alive)
        out[name] = (loaded - idle) / n
        print(f"{name:>16}: {out[name]:>10,.0f} instructions/event ({loaded:,} with the events, {idle:,} "
              f"without, {alive:.0f} s each)", flush=True)
    return out


def floor(data: list[tuple[str, bytes]], n: int) -> tuple[float, float]:
    """(events/s, µs CPU per event) of inflate + decode + orjson encode of every record, here. The decode
    is msgspec's, of the whole payload as one array (its entries counted beforehand): the cheapest of the
    two C decoders (msgpack's Unpacker, one entry at a time, costs ~20% more instructions per event)."""
    import gc
    import zlib

    import msgpack
    import msgspec
    import orjson

    payloads = []
    for _, message in data:
        payload = msgpack.unpackb(message, raw=False)[1]
        if isinstance(payload, list):  # Forward mode: the message is decoded whole, nothing to inflate
            payloads.append((b"", message))
            continue
        count = sum(1 for _ in msgpack.Unpacker(io.BytesIO(zlib.decompress(payload, 47)), raw=False))
        payloads.append((b"\xdd" + count.to_bytes(4, "big"), payload))
    decode = msgspec.msgpack.Decoder().decode
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for header, payload in payloads:
            entries = decode(header + zlib.decompress(payload, 47)) if header else decode(payload)[1]
            b"\n".join([orjson.dumps(record) for _, record in entries])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        gc.enable()
    return n / elapsed, cpu / n * 1e6


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    return " ".join(out.split()[:6]) or "unknown version"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--fluent-bit", required=True, help="path of a fluent-bit binary with in_forward and out_null")
    p.add_argument("--events", type=int, default=500_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", default="", help="also measure the tailer of this git revision ('' = not)")
    p.add_argument("--mode", choices=MODES, default="compressed",
                   help="what is sent: our forwarder's gzip chunks, or Fluent Bit out_forward's default Forward mode")
    p.add_argument("--callgrind", action="store_true",
                   help="count instructions per event under valgrind instead of timing (one run each)")
    a = p.parse_args()
    if a.callgrind and shutil.which("valgrind") is None:
        print("bench.fluentbit: --callgrind needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    binary = shutil.which(a.fluent_bit) or a.fluent_bit
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"bench.fluentbit: no Fluent Bit binary at {a.fluent_bit!r}: build one (README, issue 13: "
              "in_forward and out_null are enough) and pass --fluent-bit PATH", file=sys.stderr)
        return 2
    print(f"{version(binary)}; {a.events:,} events in chunks of {CHUNK}, "
          f"{'gzip (CompressedPackedForward)' if a.mode == 'compressed' else 'Forward mode'}, acked; loadavg "
          f"{Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    data = chunks(a.events, a.mode)
    with tempfile.TemporaryDirectory() as tmp_, open(os.devnull, "wb") as null_file:
        tmp, null = Path(tmp_), null_file.fileno()
        # each receiver, given what to run it under (nothing, or valgrind)
        makers: dict[str, Callable[[Sequence[str]], Callable[[int], subprocess.Popen[bytes]]]] = {}
        if a.before:
            before = unpack(a.before, tmp / "before")
            makers["tailer " + a.before] = lambda prefix: tailer(before, tmp, null, prefix)
        makers["tailer"] = lambda prefix: tailer(HERE, tmp, null, prefix)
        makers["fluent-bit"] = lambda prefix: fluent_bit(binary, tmp, null, prefix)
        if a.callgrind:
            counts = callgrind(makers, data, a.events, tmp)
            print(f"\ninstructions per event, {a.events:,} events (one run each, under callgrind)")
            for name, count in counts.items():
                ratio = "" if name == "fluent-bit" else f"  {count / counts['fluent-bit']:.1f}x Fluent Bit's"
                print(f"{name:>16}: {count:>10,.0f}{ratio}")
            return 0
        receivers = {name: make(()) for name, make in makers.items()}
        got: dict[str, list[tuple[float, float]]] = {}
        for r in range(a.runs):
            for name, start in [*receivers.items(), ("python floor", None)]:
                eps, us = floor(data, a.events) if start is None else measure(start, data, a.events)
                got.setdefault(name, []).append((eps, us))
                print(f"run {r + 1} {name:>16}: {eps:>8,.0f} events/s, {us:6.1f} µs CPU/event", flush=True)
    med = {name: (statistics.median(e for e, _ in v), statistics.median(u for _, u in v)) for name, v in got.items()}
    fb = med["fluent-bit"][1]
    print(f"\nmedians of {a.runs} runs, {a.events:,} events; loadavg {Path('/proc/loadavg').read_text().split()[:3]}")
    for name, (eps, us) in med.items():
        ratio = "" if name == "fluent-bit" else f"  ratio to Fluent Bit {us / fb:.1f}x (goal <= 2x)"
        print(f"{name:>16}: {eps:>8,.0f} events/s {us:6.1f} µs CPU/event{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
