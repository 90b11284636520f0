"""The recorded Fluent Bit transcripts in tests/data/fluent-bit/: loading, and the capture tool's
independent decoding of each event frame (``view``/``inner``) turned back into values to compare with."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fluent_forward as ff

DIR = Path(__file__).resolve().parents[1] / "data" / "fluent-bit"
DATA_TYPES = ("Forward", "Message", "PackedForward", "CompressedPackedForward")


@dataclass
class Frame:
    conn: int
    sender: str  # "fb" (Fluent Bit sent it) or "peer"
    type: str
    data: bytes
    view: Any = None
    inner: Any = None

    @property
    def is_data(self) -> bool:
        return self.type in DATA_TYPES


@dataclass
class Case:
    name: str
    params: dict[str, Any]
    frames: list[Frame]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fluent_bit_sends(self) -> bool:
        return self.name.startswith("s")

    def connections(self) -> list[int]:
        return sorted({f.conn for f in self.frames})

    def of(self, conn: int, sender: str | None = None) -> list[Frame]:
        return [f for f in self.frames if f.conn == conn and (sender is None or f.sender == sender)]

    def fluent_bit_is_client(self, conn: int) -> bool:
        """Whether Fluent Bit sent the PING or the data on this connection (else it is the receiver)."""
        return any(f.sender == "fb" and (f.is_data or f.type == "PING") for f in self.of(conn))

    def text(self, key: str) -> bytes:
        value = self.params[key]
        return value.encode("utf-8")


def load(name: str) -> Case:
    raw = json.loads((DIR / f"{name}.json").read_text())
    frames, events = [], []
    for item in raw.pop("frames"):
        if "event" in item:
            events.append(item)
            continue
        frames.append(Frame(item["conn"], "fb" if item["dir"] == "fb->peer" else "peer", item["type"],
                            base64.b64decode(item["b64"]), item.get("view"), item.get("inner")))
    return Case(name, raw, frames, events)


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("[rs][0-9][0-9]-*.json"))


def from_view(value: Any) -> Any:
    """The capture tool's typed JSON back to what our decoder yields (str with raw bytes kept)."""
    if isinstance(value, list):
        return [from_view(v) for v in value]
    if isinstance(value, dict):
        if "$EventTime" in value:
            return ff.EventTime(*value["$EventTime"])
        if "$str_hex" in value:
            return bytes.fromhex(value["$str_hex"]).decode("utf-8", "surrogateescape")
        if "$bin_hex" in value:
            return bytes.fromhex(value["$bin_hex"])
        if "$map" in value:
            return {from_view(k): from_view(v) for k, v in value["$map"]}
        return {k: from_view(v) for k, v in value.items()}
    return value


def expected_entries(frame: Frame) -> list[tuple[ff.EventTime, dict[str, Any], dict[str, Any]]]:
    """(time, record, metadata) of every entry of a data frame, as the capture tool decoded it."""
    if frame.type == "Message":
        _tag, time, record, *rest = from_view(frame.view)
        options = rest[0] if rest else {}
        return [(_time(time), record, options.get("metadata") or {})]
    items = from_view(frame.inner if frame.inner is not None else frame.view[1])
    out = []
    for head, record in items:
        time, metadata = (head[0], head[1] or {}) if isinstance(head, list) else (head, {})
        out.append((_time(time), record, metadata))
    return out


def _time(value: Any) -> ff.EventTime:
    return value if isinstance(value, ff.EventTime) else ff.to_event_time(value)


def chunk_of(frame: Frame) -> str | None:
    view = frame.view
    options = view[3] if frame.type == "Message" and len(view) > 3 else view[2] if len(view) > 2 else None
    return options.get("chunk") if isinstance(options, dict) else None
