"""What lets go of the GIL does so once per chunk or page, not once per row (each release waits up to the
switch interval to take the GIL back from a busy event loop): counted on a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import zstandard

from bench.events import events
from tailer.store import EventFilter, Store
from tailer.store.rows import Codec


class Counting:
    """Counts the calls of a zstd (de)compressor's methods, passing them on."""

    def __init__(self, inner: Any, calls: dict[str, int]) -> None:
        self.inner, self.calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


async def test_a_chunk_is_one_compression_and_a_few_statements_and_a_page_one_decompression(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "audit.db"))
    try:
        codec = store.codec
        sample = [orjson.dumps(e) for e in events(1000, seed=1)]
        codec.use(1, Codec.with_id(zstandard.train_dictionary(Codec.DICT_BYTES, sample, level=codec.level), 1))
        calls: dict[str, int] = {}
        codec._compressor = Counting(codec._compressor, calls)  # type: ignore[assignment]
        statements: list[str] = []
        await store._write(lambda: store._wconn.set_trace_callback(statements.append))
        await store.insert(list(events(813, seed=2)))  # what a forwarder's 1 MiB chunk holds: 3 x 250 + 63
        await store._write(lambda: store._wconn.set_trace_callback(None))
        assert calls == {"multi_compress_to_buffer": 1}
        inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS ")]
        assert len(inserts) == 4

        read: dict[str, int] = {}
        real = codec._decompressor

        def decompressor(dict_id: int, fetch: Any) -> Any:
            return Counting(real(dict_id, fetch), read)

        codec._decompressor = decompressor  # type: ignore[method-assign]
        page = await store.events(EventFilter(), 0, 500)
        assert len(page) == 500 and read == {"multi_decompress_to_buffer": 1}
        assert [e["auditID"] for _, e in page] == [e["auditID"] for e in events(813, seed=2)][:500]
    finally:
        await store.close()
