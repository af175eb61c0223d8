"""Structured logs: one JSON event per line, carrying node, request id and task UPID when known."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(node: str, level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            lambda _logger, _method, event: {"node": node, **event},
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='{"event": "%(message)s", "logger": "%(name)s", "level": "%(levelname)s", '
                               f'"node": "{node}"}}')
