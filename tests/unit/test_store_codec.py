"""The store's zstd codec: a chunk's bodies compressed, and a page's decompressed, in one call each (one
release of the GIL), with exactly the frames and the JSON of one call per body."""

from __future__ import annotations

import orjson
import zstandard

from bench.events import many
from tailer.store.rows import Codec


def trained(bodies: list[bytes], dict_id: int) -> Codec:
    codec = Codec()
    codec.use(dict_id, Codec.with_id(zstandard.train_dictionary(Codec.DICT_BYTES, bodies, level=codec.level), dict_id))
    return codec


def test_compress_all_makes_the_frames_compress_makes() -> None:
    bodies = [orjson.dumps(e) for e in many(1500)]
    codec = trained(bodies[:1000], 1)
    assert codec.compress_all(bodies[1000:]) == [codec.compress(b) for b in bodies[1000:]]
    assert Codec().compress_all(bodies[:3]) == bodies[:3]  # no dictionary yet: plain JSON
    assert codec.compress_all([]) == []


def test_raw_all_reads_every_kind_of_body_in_its_place() -> None:
    bodies = [orjson.dumps(e) for e in many(2600)]
    one, two = trained(bodies[:1000], 1), trained(bodies[1000:2000], 2)
    dicts = {1: one.dicts[1].as_bytes(), 2: two.dicts[2].as_bytes()}
    reader = Codec()  # a process that knows no dictionary: it fetches them from the store
    fetched: list[int] = []

    def fetch(dict_id: int) -> bytes | None:
        fetched.append(dict_id)
        return dicts.get(dict_id)

    stored: list[bytes | str] = []
    for i, body in enumerate(bodies[2000:2600]):  # interleaved: two dictionaries, plain bytes, text (version 1)
        stored.append([lambda b: one.compress(b), lambda b: two.compress(b), bytes, lambda b: b.decode()][i % 4](body))
    assert reader.raw_all(stored, fetch) == bodies[2000:2600]
    assert sorted(fetched) == [1, 2]
    assert reader.load_all(stored[:8], fetch) == [orjson.loads(b) for b in bodies[2000:2008]]
    assert reader.raw_all([], fetch) == []


def test_to_row_makes_the_row_its_fields_name() -> None:
    """``to_row`` puts each field of the parsed event in the column of its name (Row's fields are positional)."""
    from kube_audit.model.audit import AuditEvent, parse
    from tailer.store.rows import Row, to_row

    records = list(many(200))
    records[0] = {**records[0], "requestURI": "/api/v1/namespaces/a/pods?dryRun=All"}
    for record in records:
        ev = parse(record)
        assert isinstance(ev, AuditEvent)
        v = ev.view
        code = v.code if v.code is not None and v.code < 2**63 else None
        want = Row(audit_id=v.audit_id, stage=v.stage, ts=ev.ts, verb=v.verb, level=v.level, username=v.user,
                   api_group=v.group, resource=v.resource, namespace=v.namespace, name=v.name, subresource=v.subresource,
                   code=code, dry=int("dryRun=" in str(record.get("requestURI", ""))), bytes=len(ev.json), meta=ev.meta,
                   origin=0, event=ev.json)
        row = to_row(ev)
        assert type(row) is Row and row == want and row._asdict() == want._asdict()
    assert to_row(records[0]).dry == 1  # type: ignore[union-attr]
