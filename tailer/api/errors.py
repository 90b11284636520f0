"""What the API answers when a request fails: a Kubernetes ``Status`` object, and strict parameter parsing.
Pure (no aiohttp): the query workers import it.

Every failure of the API stage ends here as a Status with an HTTP code; none reaches ingest (the API has
its own executor and its own error policy, see routes.py).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from kube_audit.runtime.flags import parse_duration

MAX_UINT = 2**63 - 1  # the stores' 64-bit integer columns
MAX_DIGITS = len(str(MAX_UINT))


class ApiError(Exception):
    """A request the API refuses or cannot answer; ``args`` carry everything, so it pickles."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(code, reason, message)
        self.code, self.reason, self.message = code, reason, message

    def __str__(self) -> str:
        return self.message


def status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def uint(raw: str, what: str, minimum: int = 0) -> int:
    """A whole number in ASCII digits that fits the stores' 64-bit columns, else 400.

    ``str.isdigit`` alone lets through '²' (int() then raises) and Arabic-Indic digits (int() accepts
    them), and int() of a 5,000-digit string raises: all of those are a 400 here, never a 500."""
    if not (raw.isascii() and raw.isdigit()) or len(raw.lstrip("0")) > MAX_DIGITS or int(raw) > MAX_UINT:
        raise bad_request(f"bad {what} {raw[:40]!r}: expected a whole number")
    value = int(raw)
    if value < minimum:
        raise bad_request(f"bad {what} {raw!r}: expected a whole number >= {minimum}")
    return value


def parse_time(value: str, now: float) -> float:
    """RFC 3339 (2026-11-20T09:00:00Z) or a duration back from now (90s, 15m, 2h, 7d)."""
    try:
        return now - parse_duration(value)
    except Exception:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise bad_request(f"bad time {value[:40]!r}: use RFC 3339 or a duration like 2h") from None


def encode_continue(after: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": after})).decode().rstrip("=")


def decode_continue(token: str) -> int:
    try:
        after = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
    except Exception:
        raise bad_request("bad continue token") from None
    return uint(str(after), "continue token")
