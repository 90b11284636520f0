"""A big chunk never holds the event loop whole: its entries are decoded and parsed a step at a time, and
other tasks (the API, other connections) run between the steps. Asserted by order, not by timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import fluent_forward as ff
import fluent_forward.entries as entries
import tailer.ingest.pipeline as pipeline
from tailer.ingest.listener import DECODE_STEP
from tests.helpers.inprocess import Tailer, receive

N = 1000


def chunk(n: int = N, compress: bool = True) -> bytes:
    payload = b"".join(ff.encode_entry(ff.EventTime(1_763_629_200, i), {"auditID": f"a-{i}", "verb": "get"})
                       for i in range(n))
    return ff.encode_packed_forward("audit", payload, chunk="big", compress=compress)


async def test_other_tasks_run_between_the_decode_steps_and_the_parse_steps_of_one_chunk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"decoded": 0, "parsed": 0}

    def counting(real: Any, key: str) -> Any:
        def wrapped(item: Any, *rest: Any) -> Any:
            counts[key] += 1
            return real(item, *rest)
        return wrapped

    monkeypatch.setattr(entries, "entry", counting(entries.entry, "decoded"))
    monkeypatch.setattr(pipeline, "parse", counting(pipeline.parse, "parsed"))
    tailer = Tailer()
    reader, writer = tailer.connect(max_read=1 << 22)  # the whole chunk in one read
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def other() -> None:  # what an API request is to the loop: a task that wants a turn
        while not done.is_set():
            seen.append((counts["decoded"], counts["parsed"]))
            await asyncio.sleep(0)

    spinner = asyncio.create_task(other())
    writer.write(chunk())
    assert await receive(reader, ff.Decoder()) == [ff.Ack("big")]
    done.set()
    await spinner
    assert len(tailer.sink.records) == N and [r["auditID"] for r in tailer.sink.records] == [f"a-{i}" for i in range(N)]
    decoding = {d for d, p in seen if 0 < d < N}
    parsing = {p for d, p in seen if 0 < p < N}
    assert len(decoding) >= N // DECODE_STEP - 2, sorted(decoding)  # a turn after (nearly) every step
    assert len(parsing) >= N // pipeline.PARSE_STEP - 1, sorted(parsing)


@pytest.mark.parametrize("compress", [True, False])
def test_a_batch_decoded_in_steps_is_the_batch_decoded_at_once(compress: bool) -> None:
    whole = ff.Decoder().feed(chunk(1050, compress))[0]
    stepped = ff.Decoder(step_entries=100)
    stepped.receive(chunk(1050, compress) + chunk(3, compress))
    first = stepped.next_message()
    assert isinstance(first, ff.EventBatch) and len(first.entries) == 100
    steps = 0
    while stepped.decode_more():
        steps += 1
    assert steps == 9 and first == whole  # 100, then 9 x 100 (True: maybe more), then the last 50
    second = stepped.next_message()
    assert isinstance(second, ff.EventBatch) and len(second.entries) == 3


def test_a_bad_entry_found_in_a_later_step_fails_the_session() -> None:
    good = b"".join(ff.encode_entry(ff.EventTime(1, 0), {"i": i}) for i in range(500))
    bad = ff.encode_packed_forward("audit", good + b"\x92\x00\x01" + good, chunk="c")  # entry 501: not a map
    session = ff.ServerSession("tailer-0", step_entries=100)
    session.receive_data(bad)
    batch = session.next_event()
    assert isinstance(batch, ff.EventBatch) and len(batch.entries) == 100
    with pytest.raises(ff.ProtocolError) as err:
        while session.decode_more():
            pass
    assert err.value.reason == "bad_record" and session.state is ff.State.ERROR
    assert not session.decode_more()


def test_next_message_finishes_a_batch_left_partial() -> None:
    decoder = ff.Decoder(step_entries=10)
    decoder.receive(chunk(25) + chunk(5))
    first = decoder.next_message()
    second = decoder.next_message()  # no decode_more in between: the first is finished, not lost
    assert isinstance(first, ff.EventBatch) and len(first.entries) == 25 and len(first.metadata) == 25
    assert isinstance(second, ff.EventBatch) and len(second.entries) == 5


async def test_a_small_chunk_after_a_big_one_reaches_the_sinks_after_it() -> None:
    # (parsed in steps inside each delivery, the small one overtook the big one: stdout and the store's
    # sequence out of arrival order)
    tailer = Tailer()
    reader, writer = tailer.connect(max_read=1 << 22)
    small = ff.encode_packed_forward("audit", b"".join(ff.encode_entry(ff.EventTime(1, 0), {"auditID": f"b-{i}"})
                                                       for i in range(3)), chunk="small")
    writer.write(chunk() + small)  # both in one read
    assert await receive(reader, ff.Decoder(), 2) == [ff.Ack("big"), ff.Ack("small")]
    assert [r["auditID"] for r in tailer.sink.records] == [f"a-{i}" for i in range(N)] + ["b-0", "b-1", "b-2"]
