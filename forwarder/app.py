"""Wires the forwarder: follow -> lines -> batcher -> chain -> client, checkpoint after each ack, in order;
status records beside the events, through the same chain and ack window."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import IO, Any

import orjson

from fluent_forward import EventTime
from kube_audit.errors import KubeError, KubeUnconfigured
from kube_audit.runtime.http import HttpServer, build_app
from kube_audit.runtime.lifecycle import Deadline, Runtime
from kube_audit.runtime.observability import get_logger

from . import checkpoint
from .batcher import Batcher, Chunk
from .chain import Chain
from .client import ForwardClient
from .errors import ConfigError, TransportError
from .follow import Follower, Read, Source
from .lines import BadLine, Line, to_timed_entry
from .metrics import ForwarderMetrics
from .settings import Settings
from .status import StatusBook, rfc3339

log = get_logger(component="forwarder")


class Forwarder:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.metrics = ForwarderMetrics()
        f = settings.follow
        exclude = (f.position_file, f"{f.position_file}.tmp", *((f.dead_letter_file,) if f.dead_letter_file else ()))
        self.follower = Follower(f.audit_log_path, max_event_bytes=f.max_event_bytes,
                                 max_held_files=f.max_held_files, log=log, exclude=exclude)
        b = settings.batch
        self.batcher = Batcher(b.tag, b.chunk_events, b.chunk_bytes, b.compress)
        self.resolver = None
        if settings.client.tailer_service:
            self.resolver = ServiceResolver(settings.client.tailer_service, settings.client.kubeconfig)
        self.client = ForwardClient(settings.client, self.metrics, log, self._on_ack, self.resolver)
        self.chain = Chain(settings.source, settings.integrity_key)
        self.status = StatusBook(settings.source, settings.status_interval, b.compress)
        self._seal_lock = asyncio.Lock()  # seal and submit in one order: the chain's is the window's
        self._status_wake = asyncio.Event()
        self._rotations_seen = 0
        self._acked_time = ""  # RFC 3339 time of the last acked event
        self._bad_kinds_logged: set[str] = set()
        self._dead_letter: IO[bytes] | None = None
        self._dead_letter_failing = False
        self._position: checkpoint.Checkpoint | None = None  # the last position saved
        self._flush_at: float | None = None
        self._checkpoint_failing = False
        self._sent_end: tuple[Source | None, int] = (None, 0)  # file and offset the last chunk ends at
        self._acked_at: tuple[Source, int] | None = None  # file and offset of the last ack

    # ---- acks -> checkpoint -------------------------------------------------------------------

    def _on_ack(self, chunk: Chunk) -> None:
        self.chain.acked(chunk)
        if chunk.status:  # moves the chain and the gaps reported, never a file position
            self.status.acked_record(chunk)
            self._status_wake.set()
            if self._position is not None:
                self._save(self._position)
            return
        self.status.acked += chunk.events
        if chunk.last_time is not None:
            self._acked_time = rfc3339(chunk.last_time)
        target, offset = chunk.source, chunk.end
        if chunk.source_done and chunk.next_source is not None and chunk.next_source.identifiable():
            target, offset = chunk.next_source, chunk.next_source.start
        self._acked_at = (target, offset)
        target, offset = self.follower.resume_point(target, offset)
        position = target.checkpoint(offset)
        if chunk.source_done and target is chunk.source:
            position = dataclasses.replace(position, finished=True)
        self._save(position)

    def _save(self, position: checkpoint.Checkpoint) -> None:
        position = dataclasses.replace(position, reported_gaps=tuple(self.follower.reported)[-64:],
                                       seq=self.chain.acked_seq, mac=self.chain.acked_mac.hex() if
                                       self.chain.acked_seq else "", last_event_time=self._acked_time,
                                       gaps=self.status.pending_records())
        self._position = position
        offset = position.offset
        try:
            checkpoint.save(self.s.follow.position_file, position)
        except OSError as exc:  # a stale checkpoint means resends after a restart, not loss
            self.metrics.checkpoint_errors.inc()
            if not self._checkpoint_failing:
                log.error("checkpoint_write_failed", file=self.s.follow.position_file, error=str(exc))
            self._checkpoint_failing = True
            return
        if self._checkpoint_failing:
            log.info("checkpoint_write_recovered", file=self.s.follow.position_file)
            self._checkpoint_failing = False
        self.metrics.checkpoint_offset.set(offset)

    # ---- reading ------------------------------------------------------------------------------

    def start_files(self) -> None:
        f = self.s.follow
        try:
            cp = checkpoint.load(f.position_file)
        except checkpoint.CheckpointError as exc:
            # unreadable position: resend rather than lose
            log.error("checkpoint_unreadable", error=str(exc), action="reading all files from the head")
            cp, read_from_head = None, True
        else:
            read_from_head = f.read_from_head
        if cp is not None:
            self._resume_chain(cp)
            # the position on disk until the first ack: a gap found at start is saved with it at once, so a
            # SIGKILL before that ack does not report it again
            self._position = cp
        self.follower.start(cp, read_from_head)
        self.after_poll()

    def _resume_chain(self, cp: checkpoint.Checkpoint) -> None:
        """The chain goes on from the last acked chunk; the gaps not yet acked are sent again."""
        try:
            mac = bytes.fromhex(cp.mac)
        except ValueError:
            mac = b""
        self.chain = Chain(self.s.source, self.s.integrity_key, cp.seq, mac)
        if cp.seq and self.chain.acked_seq != cp.seq:
            log.error("chain_checkpoint_damaged", seq=cp.seq, action="starting a new chain at seq 1")
        self._acked_time = cp.last_event_time
        self.status.load(cp.last_event_time, cp.gaps)

    def _report_gaps(self) -> None:
        if not self.follower.gaps:
            return
        for gap in self.follower.gaps:
            self.metrics.gaps.inc()
            self.metrics.gap_bytes.inc(gap.bytes_lost)
            gid = self.status.found(gap)
            log.error("gap", file=gap.path, inode=gap.inode, bytes_lost=gap.bytes_lost, exact=gap.exact,
                      reason=gap.reason, gap=gid)
        self.follower.gaps.clear()
        self._status_wake.set()
        if self._position is not None:  # remember them across a restart: each gap is reported once
            self._save(self._position)

    def after_poll(self) -> None:
        """After each look at the folder: a first file's start is checkpointed at once (a quiet restart
        then resumes there, not at the new end), gaps are reported, metrics updated."""
        fol = self.follower
        if fol.new_start and fol.sources:
            fol.new_start = False
            first = fol.sources[0]
            self._save(first.checkpoint(first.splitter.offset))
        if fol.late_queued and self._acked_at is not None:  # a file found late, older than the last ack's:
            back, offset = fol.resume_point(*self._acked_at)  # the position goes back to it
            if back is not self._acked_at[0]:
                self._save(back.checkpoint(offset))
        fol.late_queued = False
        self._report_gaps()
        if fol.rotations != self._rotations_seen:
            self._rotations_seen = fol.rotations
            self.status.wanted = True
            self._status_wake.set()
        self.metrics.lag_bytes.set(fol.lag_bytes())
        self.metrics.rotations.set(fol.rotations)
        self.metrics.truncations.set(fol.truncations)
        self.metrics.folder_missing.set(1 if fol.folder_missing else 0)

    async def read_loop(self, stop: asyncio.Event) -> None:
        changed = self.follower.changed
        while not stop.is_set():
            changed.clear()
            read = self.follower.read()
            if self.follower.gaps:  # found while reading: before the lines that follow them
                self._report_gaps()
            if read is not None:
                await self._take(read)
                continue
            timeout = self.s.follow.stat_interval
            if self._flush_at is not None:
                left = self._flush_at - time.monotonic()
                if left <= 0:
                    await self.flush()
                    continue
                timeout = min(timeout, left)
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                pass

    async def _take(self, read: Read) -> None:
        src = read.source
        identity = src.identity()
        fallback = EventTime.now()
        self.metrics.bytes_read.inc(sum(line.end - line.start for line in read.lines))
        skipped_to, taken = 0, 0
        first: EventTime | None = None
        last: EventTime | None = None
        good = [(line, False) for line in read.lines]
        items = sorted(good + [(line, True) for line in read.oversized], key=lambda i: i[0].start) \
            if read.oversized else good
        for line, oversized in items:
            try:
                if oversized:
                    raise BadLine("too_large", f"line of {line.end - line.start} bytes exceeds --max-event-bytes")
                entry, last = to_timed_entry(line.data, fallback)
            except Exception as exc:  # noqa: BLE001 - no line may stop the stream
                kind, detail = (exc.kind, exc.detail) if isinstance(exc, BadLine) else ("unencodable", repr(exc))
                self._bad(src, line, kind, detail)
                self.batcher.advance(src, line.end)
                skipped_to = line.end
                continue
            self.metrics.events_read.inc()
            taken += 1
            if first is None:
                first = last
            for chunk in self.batcher.add(src, identity, entry, line.start, line.end, last):
                await self._submit(chunk)
        self.status.events(taken, first, last)
        if read.done:
            self.status.passed(src)
        if self.status.wanted:
            self._status_wake.set()
        sent_src, sent_end = self._sent_end
        if skipped_to and self.batcher.empty() and not read.done and (sent_src is not src or skipped_to > sent_end):
            # nothing to send after the skipped lines: a marker still moves the checkpoint past them
            await self._submit(Chunk("", b"", 0, src, skipped_to))
        if read.done:
            chunk = self.batcher.flush(source_done=True) or Chunk("", b"", 0, src, src.splitter.offset, True)
            chunk.source_done = True
            chunk.next_source = self.follower.sources[0] if self.follower.sources else None
            await self._submit(chunk)
        elif not self.batcher.empty() and self._flush_at is None:
            self._flush_at = time.monotonic() + self.s.batch.flush_interval

    async def flush(self) -> None:
        chunk = self.batcher.flush()
        if chunk is not None:
            await self._submit(chunk)

    async def _submit(self, chunk: Chunk) -> None:
        if self.batcher.empty():
            self._flush_at = None
        if chunk.source is not None:
            self._sent_end = (chunk.source, chunk.end)
        async with self._seal_lock:
            if chunk.payload:
                self.chain.seal(chunk)
            if not chunk.status:
                self.metrics.events_sent.inc(chunk.events)
                self.status.sent += chunk.events
            await self.client.submit(chunk)

    async def status_loop(self, stop: asyncio.Event) -> None:
        """A status record every interval and on a change (status.py says when)."""
        while not stop.is_set():
            wait = self.status.wait(time.monotonic())
            if wait == 0:
                fol = self.follower
                head = fol.sources[0] if fol.sources else None
                chunk = self.status.chunk(head.path if head else fol.path, head.inode if head else 0,
                                          head.splitter.offset if head else 0, fol.lag_bytes(), fol.rotations)
                await self._submit(chunk)
                continue
            self._status_wake.clear()
            waiter = asyncio.ensure_future(self._status_wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([waiter, stopper], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()

    def _bad(self, src: Source, line: Line, kind: str, detail: str) -> None:
        self.metrics.bad_lines.labels(kind).inc()
        self.status.bad(kind)
        if kind not in self._bad_kinds_logged:
            self._bad_kinds_logged.add(kind)
            log.warning("bad_line", kind=kind, file=src.path, inode=src.inode, offset=line.start, error=detail,
                        note="further lines of this kind are only counted")
        if self.s.follow.dead_letter_file:
            record = {"file": src.path, "inode": src.inode, "offset": line.start, "kind": kind, "error": detail,
                      "line": line.data.decode("utf-8", "replace")}
            self._dead_letter_write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def _dead_letter_write(self, data: bytes) -> None:
        """A dead-letter file that cannot be written (disk full, gone) costs the record, never the stream."""
        path = self.s.follow.dead_letter_file
        assert path is not None
        try:
            if self._dead_letter is None:
                self._dead_letter = open(path, "ab")  # noqa: SIM115 - closed in close() or after an error
            self._dead_letter.write(data)
            self._dead_letter.flush()
        except OSError as exc:
            self.metrics.dead_letter_errors.inc()
            if not self._dead_letter_failing:
                log.error("dead_letter_write_failed", file=path, error=str(exc),
                          note="the bad line is counted and skipped; forwarding goes on")
            self._dead_letter_failing = True
            dead, self._dead_letter = self._dead_letter, None
            if dead is not None:
                try:
                    dead.close()
                except OSError:
                    pass  # the buffered record is what failed; it is dropped with the handle
            return
        if self._dead_letter_failing:
            log.info("dead_letter_write_recovered", file=path)
            self._dead_letter_failing = False

    async def close(self) -> None:
        self.follower.close()
        if self.resolver is not None:
            await self.resolver.close()
        if self._dead_letter is not None:
            try:
                self._dead_letter.close()
            except OSError:
                pass  # counted when the write failed


class ServiceResolver:
    """--tailer-service: the tailer's address from its Service, looked up again before every
    connection so that a changed Service is followed. A failed lookup is a TransportError, retried
    with the forwarder's backoff like any other step of reaching the tailer."""

    def __init__(self, service: tuple[str, str], kubeconfig: str | None) -> None:
        self.namespace, self.name = service
        self.kubeconfig = kubeconfig
        self.kube: Any = None

    async def open(self) -> None:
        from kube_audit.kube.aio import AsyncKube

        try:
            self.kube = await AsyncKube.connect(self.kubeconfig)
        except KubeUnconfigured as exc:
            hint = "" if self.kubeconfig else " (outside a cluster --tailer-service needs --kubeconfig)"
            raise ConfigError(f"--tailer-service: cannot load the Kubernetes configuration: {exc}{hint}") from exc

    async def __call__(self) -> tuple[str, int]:
        if self.kube is None:
            await self.open()
        try:
            return await self.kube.service_address(self.namespace, self.name)
        except KubeError as exc:
            raise TransportError("tailer_service", str(exc)) from exc

    async def close(self) -> None:
        if self.kube is not None:
            await self.kube.close()
            self.kube = None


async def start(settings: Settings, rt: Runtime) -> None:
    """Start the stages; ``rt`` stops them in reverse order: reader, flush, drain, HTTP, files."""
    fwd = Forwarder(settings)
    rt.on_exit("files", fwd.close)
    if fwd.resolver is not None:
        await fwd.resolver.open()
    fwd.start_files()
    fwd.follower.watch()
    http = HttpServer(build_app(fwd.metrics.registry, healthy=lambda: not fwd.follower.folder_missing),
                      settings.http_host, settings.http_port)
    await http.start()
    rt.on_shutdown("http", http.stop)
    client_stop = asyncio.Event()
    rt.spawn(fwd.client.run(client_stop), "forward-client")
    reader = rt.spawn(fwd.read_loop(rt.stop), "file-reader")
    rt.spawn(fwd.follower.watch_loop(rt.stop, settings.follow.stat_interval, fwd.after_poll), "file-watch")
    if fwd.status.on:
        rt.spawn(fwd.status_loop(rt.stop), "status")
    fwd.metrics.tamper_evidence.set(1 if fwd.chain.on else 0)
    if not fwd.chain.on:
        log.warning("tamper_evidence_off", note="no --integrity-key-file and no shared key: chunks carry no "
                                                "chain, the tailer cannot prove nothing was lost or altered")

    async def drain(deadline: Deadline) -> None:
        """Let the reader finish its read, send what is batched, wait for acks until the deadline."""
        log.info("forwarder_stopping", unacked_chunks=len(fwd.client.pending))
        await asyncio.wait([reader], timeout=deadline.left())
        if reader.done() and not reader.cancelled() and reader.exception() is None:
            try:
                async with asyncio.timeout(deadline.left()):
                    await fwd.flush()
            except TimeoutError:
                pass
        drained = await fwd.client.drain(deadline.left())
        client_stop.set()
        log.info("forwarder_stopped", all_acked=drained, unacked_chunks=len(fwd.client.pending),
                 note="unacked lines are re-read from the checkpoint on the next start")

    rt.on_shutdown("drain", drain)
    log.info("forwarder_started", audit_log=settings.follow.audit_log_path, http_port=http.port,
             tailer=f"{settings.client.route.tailer_host}:{settings.client.route.tailer_port}",
             tailer_service="/".join(settings.client.tailer_service or ()) or None,
             source=settings.source.name, cluster=settings.source.cluster, chain_seq=fwd.chain.acked_seq,
             status_interval=settings.status_interval)
