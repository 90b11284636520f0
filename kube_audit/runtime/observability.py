"""structlog JSON logs on stderr (stdout belongs to the data) and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest

LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str = "info", stream: Any = None) -> None:
    """One JSON object per line with ``event``, ``level``, ``timestamp`` and the bound keys."""
    out = stream or sys.stderr
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    """A lazy logger: it picks up the configuration in force when it first logs."""
    return structlog.get_logger(**bound)


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
