"""Structured logs: one JSON event per line, carrying node, request id and task UPID when known."""

from __future__ import annotations

import json
import logging
import sys

import orjson
import structlog


def _dumps(event: dict, **kw) -> bytes:
    """One event as JSON bytes by orjson (a request's line in a few microseconds); what orjson refuses (a key that
    is not a string, an integer beyond 64 bits) by the standard library with structlog's fallback (`repr`)."""
    try:
        return orjson.dumps(event, default=kw.get("default"))
    except TypeError:
        return json.dumps(event, **kw).encode()


def configure_logging(node: str, level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            lambda _logger, _method, event: {"node": node, **event},
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='{"event": "%(message)s", "logger": "%(name)s", "level": "%(levelname)s", '
                               f'"node": "{node}"}}')
