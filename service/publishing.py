"""What a story event does: create, refresh or cancel its campaign, and queue the work.

Plain Python shared by the webhook and `storypush publish`; nothing here knows HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rq import Queue

from .queueing import enqueue_campaign
from .store import Store
from .store.campaign_store import CampaignState


@dataclass(frozen=True)
class PublishResult:
    campaign_id: str
    status: str
    created: bool


def publish(store: Store, queue: Queue, story: dict[str, Any], send_at: float | None = None) -> PublishResult:
    """Create the story's campaign once; a repeat returns the existing one and sends nothing."""
    scheduled = send_at is not None and send_at > time.time() + 1
    state = CampaignState.SCHEDULED if scheduled else CampaignState.QUEUED
    campaign_id, created = store.campaigns.create_for_story(story, state, send_at if scheduled else None)
    if created:
        enqueue_campaign(queue, campaign_id, send_at if scheduled else None)
        return PublishResult(campaign_id, state.value, True)
    return PublishResult(campaign_id, _status(store, campaign_id), False)


def update(store: Store, story: dict[str, Any]) -> PublishResult | None:
    """Refresh the text of a campaign that has not finished; None if the story has none."""
    campaign_id = store.campaigns.id_for_story(story["id"])
    if campaign_id is None:
        return None
    current = store.campaigns.story(campaign_id) or {}
    store.campaigns.update_story(campaign_id, {**current, **story})
    return PublishResult(campaign_id, _status(store, campaign_id), False)


def unpublish(store: Store, story_id: str) -> PublishResult | None:
    """Cancel the story's campaign: batches not yet sent skip their work."""
    campaign_id = store.campaigns.id_for_story(story_id)
    if campaign_id is None:
        return None
    store.campaigns.cancel(campaign_id)
    return PublishResult(campaign_id, _status(store, campaign_id), False)


def _status(store: Store, campaign_id: str) -> str:
    state = store.campaigns.state(campaign_id)
    return state.value if state else "unknown"
