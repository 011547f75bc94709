"""RQ jobs: plain functions taking ids, so they import cleanly and run in a test without a worker.

`start_campaign` snapshots the audience and enqueues batch jobs over id ranges;
`send_batch` pushes to one range (or, on a retry, just the ids it carries): the batch
itself is `batch.BatchRun`, run on the worker's loop by `dispatch.Dispatch`, and
everything about HTTP and crypto is in `delivery`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from service.store.campaign_store import CampaignState, cut_ranges

from .batch import LEASE_TTL, Unit
from .dispatch import Dispatch
from .queueing import enqueue_batches, unit_id
from .runtime import runtime

logger = logging.getLogger(__name__)


class UnitBusy(Exception):
    """Another worker holds this unit's lease; RQ's Retry runs the job again later."""


def start_campaign(campaign_id: str) -> dict[str, Any]:
    """Snapshot the audience (followers of any of the story's topics, once each) and enqueue its batches."""
    rt = runtime()
    campaigns = rt.store.campaigns
    campaigns.transition(
        campaign_id, CampaignState.SENDING, (CampaignState.SCHEDULED, CampaignState.QUEUED), stamp="started_at"
    )
    state = campaigns.state(campaign_id)
    if state is not CampaignState.SENDING:
        return {"state": state.value if state else "missing"}
    story = campaigns.story(campaign_id) or {}
    audiences = rt.store.audiences
    # A re-run after a crash reuses the first snapshot, so batches stay the same ranges.
    bitmap = audiences.audience(campaign_id)
    if bitmap is None:
        topics = [t for t in story.get("topics", []) if t in rt.store.topic_ids]
        bitmap = audiences.snapshot(campaign_id, topics)
    targeted = int.from_bytes(bitmap, "big").bit_count()
    campaigns.set_targeted(campaign_id, targeted)
    ranges = cut_ranges(bitmap, rt.settings.batch_size)
    campaigns.plan_units(campaign_id, [unit_id(start, 1) for start, _ in ranges])
    if not ranges:
        campaigns.mark_done_if_idle(campaign_id)
    else:
        campaigns.offer_ranges(campaign_id, ranges)
        enqueue_batches(rt.queue, campaign_id, ranges)
    logger.info(
        "campaign %s started: %d subscribers in %d batches",
        campaign_id,
        targeted,
        len(ranges),
        extra={"campaign_id": campaign_id, "targeted": targeted, "batches": len(ranges)},
    )
    return {"targeted": targeted, "batches": len(ranges)}


def send_batch(
    campaign_id: str,
    start: int,
    end: int,
    attempt: int = 1,
    only: list[int] | None = None,
    used: list[int] | None = None,
) -> dict[str, Any]:
    """Push the campaign to the audience ids in [start, end) (or `only`, which have used
    `used` attempts each), each at most once."""
    rt = runtime()
    campaigns = rt.store.campaigns
    unit = Unit(campaign_id, start, end, attempt, only, used)
    if campaigns.unit_finished(campaign_id, unit.id_):
        return {"skipped": "already finished"}
    state = campaigns.state(campaign_id)
    if state is not CampaignState.SENDING:
        campaigns.finish_unit(campaign_id, unit.id_)
        return {"skipped": state.value if state else "missing"}
    token = uuid.uuid4().hex
    if not campaigns.acquire_lease(campaign_id, unit.id_, token, LEASE_TTL):
        raise UnitBusy(f"campaign {campaign_id} unit {unit.id_} is being sent by another worker")
    dispatch = Dispatch(rt)
    try:
        rt.loop.run_until_complete(dispatch.run(dispatch.unit(unit, token)))
    finally:
        dispatch.release()
    first, *ahead = dispatch.summaries()
    return {**first, "ran_ahead": ahead}
