"""No unauthenticated peer can take the tailer down: the listener's limits, in process over mock streams."""

from __future__ import annotations

import asyncio
import gzip

import msgpack
from structlog.testing import capture_logs

import fluent_forward as ff
from tests.helpers.inprocess import Tailer, closed, receive


def unfinished(size: int) -> bytes:
    """The start of a message that announces a 12 MiB string and sends ``size`` bytes of it."""
    return b"\x93\xa5audit\xdb" + (12 * 1024 * 1024).to_bytes(4, "big") + b"x" * size


async def test_an_unauthenticated_peer_may_not_buffer_much_before_its_ping() -> None:
    tailer = Tailer(shared_key="k")
    reader, writer = tailer.connect(max_read=65536)
    writer.write(unfinished(100 * 1024))
    assert await closed(reader)
    assert tailer.metric("tailer_bad_frames_total", reason="pre_auth_limit") == 1


async def test_partial_messages_of_all_connections_share_one_budget() -> None:
    tailer = Tailer(max_buffered_bytes=1024 * 1024, max_message_bytes=1024 * 1024)
    first_r, first_w = tailer.connect(max_read=65536)
    second_r, second_w = tailer.connect(max_read=65536)
    big = ff.encode_message("audit", ff.EventTime(1, 0), {"blob": "y" * 600_000}, ff.Options(chunk="big"))
    first_w.write(big[:-10])  # 600 KB held by the first
    async with asyncio.timeout(10):
        while tailer.server.admission.buffered < 590_000:
            await asyncio.sleep(0.001)  # polling the condition, not synchronisation
    second_w.write(unfinished(600_000))  # the second would take the total over 1 MiB
    assert await closed(second_r)
    assert tailer.metric("tailer_bad_frames_total", reason="memory_budget") == 1
    first_w.write(big[-10:])
    assert await receive(first_r, ff.Decoder()) == [ff.Ack("big")]  # the first is served
    async with asyncio.timeout(10):
        while tailer.server.admission.buffered:  # released once the message is whole
            await asyncio.sleep(0.001)  # polling the condition, not synchronisation


async def test_connections_beyond_the_cap_are_closed_and_logged_once_per_burst() -> None:
    tailer = Tailer(max_connections=2)
    kept = [tailer.connect(max_read=65536) for _ in range(2)]
    with capture_logs() as logs:
        refused = [tailer.connect(max_read=65536) for _ in range(5)]
        for reader, _ in refused:
            assert await closed(reader)
        kept[0][1].close()
        async with asyncio.timeout(10):
            while tailer.server.admission.open > 1:
                await asyncio.sleep(0.001)  # polling the condition, not synchronisation
        again_r, again_w = tailer.connect(max_read=65536)
        again_w.write(ff.encode_message("audit", ff.EventTime(1, 0), {"a": 1}, ff.Options(chunk="c")))
        assert await receive(again_r, ff.Decoder()) == [ff.Ack("c")]
    assert tailer.metric("tailer_connections_refused_total", reason="max_connections") == 5
    assert [e["event"] for e in logs if "connections_" in e["event"]] == ["connections_refused",
                                                                          "connections_accepted_again"]
    assert next(e for e in logs if e["event"] == "connections_accepted_again")["refused"] == 5


async def test_an_idle_connection_is_closed() -> None:
    tailer = Tailer(idle_timeout=0.05)
    reader, writer = tailer.connect()
    writer.write(ff.encode_message("audit", ff.EventTime(1, 0), {"a": 1}, ff.Options(chunk="c")))
    assert await receive(reader, ff.Decoder()) == [ff.Ack("c")]
    assert await closed(reader)  # then nothing for longer than the idle timeout
    assert tailer.metric("tailer_connections_idle_closed_total") == 1


async def test_entry_amplification_closes_that_connection_and_others_are_served() -> None:
    tailer = Tailer()
    bomb = gzip.compress(b"\x92\x00\x80" * 10_000_000, 9)  # ~30 KB on the wire, 10 million entries inside
    bad_r, bad_w = tailer.connect(max_read=65536)
    good_r, good_w = tailer.connect(max_read=65536)
    bad_w.write(msgpack.packb(["audit", bomb, {"compressed": "gzip", "chunk": "bomb"}], use_bin_type=True))
    good_w.write(ff.encode_message("audit", ff.EventTime(1, 0), {"ok": 1}, ff.Options(chunk="ok")))
    assert await closed(bad_r)
    assert await receive(good_r, ff.Decoder()) == [ff.Ack("ok")]
    assert tailer.metric("tailer_bad_frames_total", reason="too_many_entries") == 1
    assert tailer.sink.records == [{"ok": 1}]


def test_after_start_up_the_collector_leaves_what_it_built_alone_and_runs_less_often() -> None:
    import gc

    from tailer.app import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made afterwards are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
