"""Jobs for tests that need RQ to run something: importable by any worker by their dotted path."""

from __future__ import annotations


def explode(message: str) -> None:
    """Always fails, so the job lands in RQ's FailedJobRegistry with `message` as its error."""
    raise RuntimeError(message)


def succeed(value: str = "ok") -> str:
    return value
