"""The sources stage on a real SQLite store with a driven clock (issue 12): the state rules, bad status
records, gaps once, gaps from the tailer's side, the silent transition, the counters, gap warnings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kube_audit.model.source import GapReport, SourceId, Status
from kubectl_audit.sources import age, render
from tailer.ingest.pipeline import Origin
from tailer.metrics import TailerMetrics
from tailer.sources.stage import Sources
from tailer.sources.state import Rules, crossed, item, source_list, state
from tailer.store import Store
from tailer.store.sources import GapRow, SourceRow
from tests.helpers.inprocess import value

PROD = SourceId("prod", "apiserver-0")
ORIGIN = Origin(PROD, "kube-audit-forwarder.status")
GAP = GapReport("g1", "/var/log/audit/audit-1.log", 7, 800, "truncated", start="2026-11-20T10:00:00Z",
                end="2026-11-20T10:00:05Z")
RULES = Rules(silent_after=30, lagging_bytes=1000, gap_window=600)


def status(gaps: tuple[GapReport, ...] = (), lag: int = 0, bad: dict[str, int] | None = None) -> dict[str, Any]:
    return Status(PROD, "0.12.0", "2026-11-20T08:00:00Z", "2026-11-20T10:01:00Z", lag_bytes=lag, gaps=gaps,
                  bad_lines=bad or {}).to_record()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def with_stage(tmp_path: Path, body: Callable[[Sources, Clock, TailerMetrics], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        store = await Store.open(str(tmp_path / "audit.db"))
        clock, metrics = Clock(), TailerMetrics()
        stage = Sources(store, metrics, RULES, clock=clock)
        await stage.start()
        try:
            await body(stage, clock, metrics)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize(("last_seen", "reported", "lag", "expected"), [
    (100.0, [], 0, "ok"),
    (69.0, [], 0, "silent"),  # 31 s ago
    (69.0, [95.0], 5000, "silent"),  # silent wins over gap and lagging
    (100.0, [95.0], 5000, "gap"),  # gap wins over lagging
    (100.0, [-600.0], 0, "ok"),  # a gap older than the window no longer counts
    (100.0, [], 5000, "lagging"),
    (100.0, [], 1000, "ok"),  # not over the threshold
])
def test_state_rules(last_seen: float, reported: list[float], lag: int, expected: str) -> None:
    row = SourceRow(PROD, last_seen, status=f'{{"lagBytes": {lag}}}',
                    gaps=[GapRow(f"g{i}", t, 1, "{}") for i, t in enumerate(reported)])
    assert state(row, 100.0, RULES) == expected


def test_bad_status_records_are_counted_logged_once_per_reason_and_never_stop_the_chunk(tmp_path: Path) -> None:
    async def body(stage: Sources, clock: Clock, metrics: TailerMetrics) -> None:
        bad = [None, "text", {"kind": "Other"}, {"kind": "ForwarderStatus"}, {"kind": "ForwarderStatus", "source": ""},
               {**status(), "lagBytes": -1}, {**status(), "gaps": [{"id": "x", "bytes": "many"}]},
               {**status(), "gaps": "no"}, {**status(), "badLines": {"k": True}}, {"kind": "ForwarderStatus"}]
        with capture_logs() as logs:
            await stage.write([*bad, status(lag=7)], ORIGIN)  # the good one after them is kept
        assert value(metrics, "tailer_records_rejected_total", reason="bad_status") == len(bad)
        refused = [e for e in logs if e["event"] == "status_rejected"]
        # once per reason and field: not a status record (3), source (2), lagBytes, a gap's bytes, gaps, a count
        assert [e["detail"].partition(":")[0] for e in refused] == [
            "expected a map with kind ForwarderStatus", "source", "lagBytes", "bytes", "gaps", "k"]
        assert all(e["source"] == "prod/apiserver-0" for e in refused)
        (row,) = await stage.rows()
        assert item(row, clock.now, RULES)["lagBytes"] == 7

    with_stage(tmp_path, body)


def test_a_gap_is_kept_once_and_the_tailers_own_gaps_join_them(tmp_path: Path) -> None:
    chain = GapReport("chain:41-43", "", 0, 0, "chain_break")

    async def body(stage: Sources, clock: Clock, metrics: TailerMetrics) -> None:
        with capture_logs() as logs:
            await stage.write([status((GAP,), bad={"not_json": 3})], ORIGIN)
            await stage.write([status((GAP,), bad={"not_json": 3})], ORIGIN)  # resent
            clock.now += 1
            assert await stage.report_gaps(PROD, [chain]) == [chain.id]
            assert await stage.report_gaps(PROD, [chain]) == []
        assert [e["id"] for e in logs if e["event"] == "source_gap"] == [GAP.id, chain.id]
        assert value(metrics, "tailer_source_gap_bytes_total", source="prod/apiserver-0") == 800
        assert value(metrics, "tailer_source_gaps_total", source="prod/apiserver-0", reason="chain_break") == 1
        assert value(metrics, "tailer_source_bad_lines_total", source="prod/apiserver-0", kind="not_json") == 3
        await stage.write([status(bad={"not_json": 5})], ORIGIN)
        await stage.write([status(bad={"not_json": 1})], ORIGIN)  # the forwarder restarted: from zero
        assert value(metrics, "tailer_source_bad_lines_total", source="prod/apiserver-0", kind="not_json") == 6
        (row,) = await stage.rows()
        listed = item(row, clock.now, RULES)
        assert [(g["id"], g["reason"], g["bytes"]) for g in listed["gaps"]] == [
            (GAP.id, "truncated", 800), (chain.id, "chain_break", 0)]
        assert listed["state"] == "gap" and listed["gapBytes"] == 800
        clock.now += 601
        await stage.write([status()], ORIGIN)
        assert item((await stage.rows())[0], clock.now, RULES)["state"] == "ok"  # out of the window

    with_stage(tmp_path, body)


def test_a_source_that_stops_turns_silent_once_and_resumes(tmp_path: Path) -> None:
    stock = SourceId("", "fluent-bit-0")

    async def body(stage: Sources, clock: Clock, metrics: TailerMetrics) -> None:
        await stage.seen.write([], Origin(stock, "audit"))
        await stage.save()
        with capture_logs() as logs:
            await stage.refresh()
            clock.now += 31
            await stage.refresh()
            await stage.refresh()  # still silent: said once
            assert [e["source"] for e in logs if e["event"] == "source_silent"] == ["fluent-bit-0"]
            assert item((await stage.rows())[0], clock.now, RULES)["state"] == "silent"
            await stage.seen.write([], Origin(stock, "audit"))
            await stage.refresh()
        assert [e["event"] for e in logs if e["event"].startswith("source_")] == ["source_silent", "source_resumed"]
        assert value(metrics, "tailer_source_last_seen_timestamp_seconds", source="fluent-bit-0") == clock.now

    with_stage(tmp_path, body)


def test_last_seen_is_saved_and_read_back_by_a_new_stage(tmp_path: Path) -> None:
    async def main() -> None:
        store = await Store.open(str(tmp_path / "audit.db"))
        first = Sources(store, TailerMetrics(), RULES, clock=lambda: 500.0)
        await first.seen.write([], Origin(PROD, "audit"))
        await first.stop()
        later = Sources(store, TailerMetrics(), RULES, clock=lambda: 400.0)  # a replica whose clock is behind
        await later.seen.write([], Origin(PROD, "audit"))
        await later.save()
        await later.start()
        assert [(r.source, r.last_seen) for r in later.cached] == [(PROD, 500.0)]  # only ever forward
        await store.close()

    asyncio.run(main())


def test_gap_warnings_name_the_gaps_the_range_crosses() -> None:
    row = SourceRow(PROD, 0, gaps=[GapRow("g1", 0, 800, '{"from": "2026-11-20T10:00:00Z", "to": '
                                                      '"2026-11-20T10:00:05Z", "reason": "truncated"}'),
                                   GapRow("g2", 0, 5, '{"from": null, "to": null, "reason": "unknown"}')])
    t = 1_795_168_800.0  # 2026-11-20T10:00:00Z
    assert crossed([row], t - 60, t + 1) and crossed([row], t + 5, None) and crossed([row], None, t)
    assert crossed([row], t + 6, t + 60) == [] and crossed([row], t - 60, t - 1) == [] and crossed([row], None, None) == []
    (text,) = crossed([row], t - 60, t + 60)
    assert "prod/apiserver-0: 800 bytes lost (truncated) from 2026-11-20T10:00:00Z to 2026-11-20T10:00:05Z" in text


def test_the_plugin_table() -> None:
    now = 1_000_000.0
    rows = [SourceRow(PROD, now - 4, now - 10, status='{"lagBytes": 512, "version": "0.12.0", '
                                                       '"badLines": {"not_json": 2}}',
                      gaps=[GapRow("g1", now - 4, 800, "{}")]),
            SourceRow(SourceId("", "fluent-bit-0"), now - 7200)]
    body = source_list(rows, now, RULES)
    assert body["kind"] == "SourceList"
    assert render(body, "table", now) == (
        "NAME           CLUSTER   STATE    LAST SEEN   LAG      GAP BYTES\n"
        "apiserver-0    prod      gap      4s          512      800\n"
        "fluent-bit-0   <none>    silent   2h          <none>   0\n")
    wide = render(body, "wide", now).splitlines()
    assert wide[0].split()[-5:] == ["EVENT", "GAPS", "BAD", "LINES", "VERSION"]
    assert wide[1].split()[-4:] == ["1970-01-12T13:46:30.000Z", "1", "not_json=2", "0.12.0"]
    assert render(body, "json").startswith("{") and render({"kind": "SourceList", "items": []}, "table") == \
        "No sources found.\n"
    stamps = (None, "1970-01-12T13:46:30Z", "1970-01-12T13:44:41Z", "1970-01-12T13:44:40Z", "1970-01-10T13:46:40Z")
    assert [age(s, now) for s in stamps] == ["<unknown>", "10s", "119s", "2m", "2d"]


def test_gaps_older_than_the_events_kept_leave_the_view(tmp_path: Path) -> None:
    async def body(stage: Sources, clock: Clock, metrics: TailerMetrics) -> None:
        stage.keep_gaps = 3600.0
        old = GapReport("old", "", 0, 0, "chain_break")
        young = GapReport("young", "", 0, 0, "chain_break")
        await stage.report_gaps(PROD, [old])
        clock.now += 3000
        await stage.report_gaps(PROD, [young])
        assert await stage.drop_old_gaps() == 0  # the old one is 3,000 s old: kept
        clock.now += 700
        assert await stage.drop_old_gaps(every=0) == 1
        (row,) = await stage.rows()
        assert [g["id"] for g in item(row, clock.now, RULES)["gaps"]] == ["young"]
        stage.keep_gaps = 0.0  # retention by age off: gaps stay for good
        clock.now += 10 * 3600
        assert await stage.drop_old_gaps(every=0) == 0

    with_stage(tmp_path, body)
