"""RQ jobs for publishers' feeds: one poll of one feed, and restarting stalled schedules.

The logic lives in `service.feeds` (plain Python); these are the module-level functions RQ
imports by name, running with the worker's runtime (settings, store, queue).
"""

from __future__ import annotations

from service import feeds

from .runtime import runtime


def poll_feed(feed_id: str, slot: int) -> str:
    """Poll one feed for its scheduled slot, then schedule its next poll."""
    return feeds.run_poll(runtime(), feed_id, slot)


def reschedule_stalled_feeds() -> list[str]:
    """Feeds whose poll schedule had stalled, polled again now (run by workers' maintenance)."""
    return feeds.reschedule_stalled(runtime())
