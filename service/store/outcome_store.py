"""Push outcomes as a worker's event loop writes them: resolved marks and campaign counters.

Why this one store is async (redis.asyncio) when the rest is not: a push's resolved mark
must reach Redis as its answer arrives, so a worker killed mid-batch repeats only the
requests that were on the wire (a re-run skips every resolved id). A blocking call per
answer would stall the event loop and every other push waiting in it; here one writer
coroutine sends whatever answers came in since its last write, in one MULTI/EXEC (marks
and counters together: a crash never leaves one without the other), while the loop
keeps sending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio

from . import keys
from .campaign_store import queue_counts, queue_resolved


@dataclass(frozen=True, slots=True)
class OutcomeWrite:
    """One campaign's outcomes since the last write."""

    campaign_id: str
    resolved: Sequence[int]
    counts: Mapping[str, int]
    errors: Mapping[str, int]


class OutcomeStore:
    def __init__(self, client: redis.asyncio.Redis):
        self.client = client

    async def write(self, writes: Sequence[OutcomeWrite], watched: Sequence[str]) -> dict[str, str | None]:
        """Write every campaign's outcomes in one transaction; return the state of each
        campaign in `watched` as it was right after (how a batch notices a cancel)."""
        pipe = self.client.pipeline(transaction=True)
        for write in writes:
            queue_resolved(pipe, write.campaign_id, write.resolved)
            queue_counts(pipe, write.campaign_id, write.counts, write.errors)
        for campaign_id in watched:
            pipe.hget(keys.campaign(campaign_id), "state")
        replies = await pipe.execute()
        states = replies[len(replies) - len(watched) :]
        return {
            campaign_id: raw.decode() if raw is not None else None
            for campaign_id, raw in zip(watched, states, strict=True)
        }
