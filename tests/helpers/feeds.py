"""Driving feed polls from a test."""

from __future__ import annotations

from service.feeds import run_poll
from service.state import AppState


def poll(services: AppState, feed_id: str) -> str:
    """What the feed's queued poll job would do now."""
    return run_poll(services, feed_id, services.store.feeds.current_slot(feed_id))
