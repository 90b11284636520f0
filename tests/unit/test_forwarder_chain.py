"""The forwarder's chain sealing, its checkpoint fields and the status book's timing (pure parts)."""

from __future__ import annotations

import json

import fluent_forward as ff
from forwarder import checkpoint
from forwarder.batcher import Batcher
from forwarder.chain import Chain
from forwarder.source import Gap
from forwarder.status import CHANGE_SPACING, StatusBook, gap_reason, rfc3339
from kube_audit.model.chain import GENESIS, verify
from kube_audit.model.source import OPTION, STATUS_TAG, SourceId, parse_status

SRC = SourceId("c1", "n1")
KEY = b"k"


def chunks(n: int, compress: bool = True) -> list:
    b = Batcher("audit", max_events=2, max_bytes=1 << 20, compress=compress)
    out, f = [], object()
    for i in range(n):
        out += b.add(f, "id", ff.encode_entry(ff.EventTime(i), {"i": i}), i, i + 1, ff.EventTime(i))
    return out


def decode(chunk) -> ff.EventBatch:
    batch = ff.Decoder().feed(chunk.message)[0]
    assert isinstance(batch, ff.EventBatch)
    return batch


def test_sealed_chunks_chain_across_boundaries_and_verify_over_the_entries_field_as_sent() -> None:
    chain, prev = Chain(SRC, KEY), GENESIS
    for seq, chunk in enumerate(chunks(7), 1):
        chain.seal(chunk)
        batch = decode(chunk)
        opt = batch.options.extra[OPTION]
        assert (opt["source"], opt["cluster"], opt["seq"], opt["prev"]) == ("n1", "c1", seq, prev)
        assert batch.payload == chunk.payload and batch.options.compressed == "gzip"
        assert verify(KEY, "c1", "n1", "audit", seq, prev, batch.payload, opt["mac"])
        assert not verify(KEY, "c1", "n1", "audit", seq, prev, batch.payload + b"x", opt["mac"])
        assert [r["i"] for r in batch.records()] == list(range(2 * seq - 2, 2 * seq))
        prev = opt["mac"]


def test_a_chain_goes_on_from_its_acked_end_and_a_damaged_end_starts_a_new_chain() -> None:
    first = Chain(SRC, KEY)
    sealed = chunks(4)
    for c in sealed:
        first.seal(c)
    first.acked(sealed[0])
    assert (first.acked_seq, first.acked_mac) == (1, sealed[0].mac)
    again = Chain(SRC, KEY, first.acked_seq, first.acked_mac)
    resent = chunks(4)[1]
    again.seal(resent)  # what was sealed 2 before the crash is 2 again, on the same prev
    assert (resent.seq, decode(resent).options.extra[OPTION]["prev"]) == (2, sealed[0].mac)
    assert Chain(SRC, KEY, 5, b"short").acked_seq == 0 and Chain(SRC, KEY, 5, b"short").prev == GENESIS


def test_without_a_key_the_option_names_the_source_alone_and_markers_are_not_sealed() -> None:
    chain = Chain(SRC, None)
    c = chunks(2, compress=False)[0]
    chain.seal(c)
    assert decode(c).options.extra == {OPTION: {"source": "n1", "cluster": "c1"}} and c.seq == 0
    assert not chain.on and chain.seq == 0


def test_checkpoint_keeps_the_chain_end_and_pending_gaps_and_reads_one_without_them(tmp_path) -> None:
    path = str(tmp_path / "pos")
    gap = {"id": "g1", "file": "/a", "inode": 3, "bytes": 9, "exact": True, "from": None, "to": None,
           "reason": "rotated_unread"}
    cp = checkpoint.Checkpoint("/a/audit.log", 1, 2, "ab" * 32, 1024, 99, seq=7, mac="cd" * 32,
                               last_event_time="2026-11-20T09:00:00.000000Z", gaps=(gap,))
    checkpoint.save(path, cp)
    loaded = checkpoint.load(path)
    assert loaded is not None and (loaded.seq, loaded.mac, loaded.gaps) == (7, "cd" * 32, (gap,))
    assert json.loads((tmp_path / "pos").read_text())["version"] == 3
    old = {"path": "/a/audit.log", "device": 1, "inode": 2, "fingerprint": "ab" * 32, "fingerprint_bytes": 1024,
           "offset": 5, "version": 2, "reported_gaps": ["ef" * 32]}
    (tmp_path / "v2").write_text(json.dumps(old))
    v2 = checkpoint.load(str(tmp_path / "v2"))
    assert v2 is not None and (v2.seq, v2.mac, v2.gaps, v2.offset) == (0, "", (), 5)


def test_status_book_sends_at_the_interval_on_a_change_and_holds_a_gap_until_its_end_is_known(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("forwarder.status.time.monotonic", lambda: now[0])
    book = StatusBook(SRC, 10.0, compress=False)
    assert book.wait(now[0]) == 0  # the first at once
    book.chunk("/a/audit.log", 3, 0, 0, 0)
    assert book.wait(now[0]) is None  # one in flight
    first = book.chunk("/a/audit.log", 3, 0, 0, 0)
    book.acked_record(first)
    book.acked_record(first)
    assert book.inflight == 0 and book.wait(now[0]) == 10.0
    book.events(2, ff.EventTime(100), ff.EventTime(101))
    gid = book.found(Gap("/a/audit-x.log", 4, 50, "rotated away and deleted before it was read", True, "fp"))
    assert book.wait(now[0]) == 10.0  # held: its end is not known yet
    book.events(1, ff.EventTime(105), ff.EventTime(105))
    assert book.wait(now[0]) == CHANGE_SPACING  # a change: soon, not at once again
    now[0] += CHANGE_SPACING
    chunk = book.chunk("/a/audit.log", 3, 7, 1, 2)
    record = parse_status(_record(chunk))
    assert chunk.tag == STATUS_TAG and chunk.gap_ids == (gid,) and chunk.status
    (gap,) = record.gaps
    assert (gap.bytes, gap.reason, gap.start, gap.end) == (50, "rotated_unread", rfc3339(ff.EventTime(101)),
                                                           rfc3339(ff.EventTime(105)))
    assert (record.offset, record.lag_bytes, record.rotations, record.read) == (7, 1, 2, 3)
    assert book.pending_records()[0]["id"] == gid  # until acked: kept in the checkpoint
    book.acked_record(chunk)
    assert book.pending_records() == ()
    again = StatusBook(SRC, 10.0, compress=False)
    again.load("", ({**gap.to_record()},))
    assert again.chunk("/a", 1, 0, 0, 0).gap_ids == (gid,)  # after a restart: sent again at once


def _record(chunk) -> dict:
    (entry,) = ff.Decoder().feed(ff.encode_packed(chunk.tag, chunk.payload))[0].entries
    return entry[1]


def test_a_gap_without_its_end_goes_after_one_interval_and_gaps_map_to_the_reasons(monkeypatch) -> None:
    now = [50.0]
    monkeypatch.setattr("forwarder.status.time.monotonic", lambda: now[0])
    book = StatusBook(SRC, 4.0, compress=True)
    book.acked_record(book.chunk("/a", 1, 0, 0, 0))
    book.found(Gap("/a", 1, 5, "truncated before it was read and no copy found", False))
    assert book.wait(now[0]) == 4.0
    now[0] += 4.0
    assert book.wait(now[0]) == 0 and _record(_gz(book.chunk("/a", 1, 0, 0, 0)))["gaps"][0]["to"] is None
    assert gap_reason(Gap("/a", 1, 5, "the checkpointed file is gone; ...")) == "pruned_while_down"
    assert gap_reason(Gap("/a", 1, 5, "unreadable: bad gzip", False)) == "unknown"
    assert gap_reason(Gap("/a", 1, 5, "deleted before it could be opened")) == "rotated_unread"


def _gz(chunk):
    chunk.payload = ff.gunzip(chunk.payload, 1 << 20) if chunk.compressed else chunk.payload
    return chunk


def test_a_gap_after_a_queued_file_is_dated_when_the_reader_passes_that_file(monkeypatch) -> None:
    """Found by a poll while the reader is still in older files: the events read before the reader gets
    there are not after the gap."""
    now = [10.0]
    monkeypatch.setattr("forwarder.status.time.monotonic", lambda: now[0])
    book = StatusBook(SRC, 10.0, compress=False)
    book.acked_record(book.chunk("/a", 1, 0, 0, 0))
    older, lost_after = object(), object()
    book.events(1, ff.EventTime(1), ff.EventTime(1))
    book.found(Gap("/a/b", 2, 9, "deleted before it could be opened", after=lost_after))
    book.events(2, ff.EventTime(2), ff.EventTime(3))  # still in older files
    book.passed(older)
    book.events(1, ff.EventTime(4), ff.EventTime(4))
    assert book.wait(now[0]) == 10.0  # nothing ready: not met yet
    book.passed(lost_after)
    book.events(1, ff.EventTime(7), ff.EventTime(8))
    assert book.wait(now[0]) == CHANGE_SPACING
    now[0] += CHANGE_SPACING
    (gap,) = _record(book.chunk("/a", 1, 0, 0, 0))["gaps"]
    assert (gap["from"], gap["to"]) == (rfc3339(ff.EventTime(4)), rfc3339(ff.EventTime(7)))


def test_a_gap_found_at_start_is_saved_before_any_ack_so_a_sigkill_does_not_report_it_again(tmp_path) -> None:
    # the checkpointed live file is gone (rotated and pruned while down) and the apiserver has not yet made a
    # new one: nothing is queued, so no new position is saved; killed before its first ack, the next start
    # must still know the gap was reported
    from forwarder.app import Forwarder
    from forwarder.cli import parse

    log_path, pos = tmp_path / "audit.log", str(tmp_path / "pos")
    gone = checkpoint.Checkpoint(str(log_path), 1, 99999999, "ab" * 32, 1024, 10, size=4096, live=True)
    checkpoint.save(pos, gone)
    argv = ["--audit-log-path", str(log_path), "--position-file", pos, "--tailer", "127.0.0.1:1"]
    first = Forwarder(parse(argv))
    first.start_files()
    assert first.status.pending_records()  # the gap is waiting for its status ack
    saved = checkpoint.load(pos)
    assert saved is not None and "ab" * 32 in saved.reported_gaps and saved.gaps
    first.follower.close()
    second = Forwarder(parse(argv))
    second.start_files()
    assert not second.follower.gaps
    assert [g["id"] for g in second.status.pending_records()] == [g["id"] for g in saved.gaps]
    second.follower.close()
