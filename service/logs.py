"""Structured logs: one JSON object per line from web and worker processes.

Fields: time, level, logger, message, process ("web"/"worker"), the RQ job id
when a job is running, and whatever a call passes with `extra=` (campaign_id,
origin, status, reason, count, ...). Push endpoints are capability URLs, so
they are never logged: `endpoint_ref()` gives a short digest to correlate by.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO

from pythonjsonlogger.json import JsonFormatter
from rq import get_current_job

FIELDS = ("asctime", "levelname", "name", "message")
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


class _Formatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC with milliseconds: sorts as text and needs no time-zone guessing."""
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Context(logging.Filter):
    """Adds the process kind and, inside an RQ job, the job id."""

    def __init__(self, process: str):
        super().__init__()
        self.process_kind = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_kind = self.process_kind
        if not hasattr(record, "job_id"):
            job = get_current_job()
            if job is not None:
                record.job_id = job.id
        return True


class _StorypushHandler(logging.StreamHandler):
    """Our handler, recognisable so configuring twice replaces it instead of doubling lines."""


def configure_logging(process: str, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every log record (ours, RQ's, gunicorn's app loggers) to `stream` as JSON lines.

    Idempotent; other handlers on the root logger (pytest's, an operator's) are left alone.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StorypushHandler)]:
        root.removeHandler(handler)
    handler = _StorypushHandler(stream or sys.stderr)
    handler.setFormatter(
        _Formatter(
            " ".join(f"%({name})s" for name in FIELDS),
            rename_fields=RENAMED | {"process_kind": "process"},
            json_ensure_ascii=False,
        )
    )
    handler.addFilter(_Context(process))
    root.addHandler(handler)
    root.setLevel(level)


def endpoint_ref(endpoint: str) -> str:
    """A short, stable digest of a push endpoint for logs (the URL itself is a credential)."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:12]


def log_push_problems(logger: logging.Logger, campaign_id: str, problems: Mapping[tuple, int]) -> None:
    """One line per (origin, result, reason, status) of a flush's pushes that were not sent.

    Failures are warnings; expiries and retries are routine (410s, 429s) and stay at info.
    """
    for (origin, result, reason, status), count in problems.items():
        level = logging.WARNING if result == "failed" else logging.INFO
        logger.log(
            level,
            "campaign %s: %d pushes %s (%s) at %s",
            campaign_id,
            count,
            result,
            reason,
            origin,
            extra={
                "campaign_id": campaign_id,
                "origin": origin,
                "status": status,
                "result": result,
                "reason": reason,
                "count": count,
            },
        )
