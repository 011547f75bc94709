"""The operator's side: the test admin token, and campaigns and failed jobs in a given state."""

from __future__ import annotations

import re

from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry

from service.store.campaign_store import FINAL_STATES, CampaignState

ADMIN_TOKEN = "test-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def make_campaign(store, story_id: str, state: CampaignState = CampaignState.QUEUED, title: str | None = None) -> str:
    """A campaign as the webhook would create it, moved on to `state`."""
    story = {"id": story_id, "title": title or f"Story {story_id}", "url": f"https://publisher.example/{story_id}"}
    campaign_id, _ = store.campaigns.create_for_story({**story, "topics": ["animals"]}, CampaignState.QUEUED)
    if state is not CampaignState.QUEUED:
        store.campaigns.transition(campaign_id, CampaignState.SENDING, (CampaignState.QUEUED,), stamp="started_at")
    if state in FINAL_STATES:
        store.campaigns.transition(campaign_id, state, (CampaignState.SENDING,), stamp="finished_at")
    return campaign_id


def make_failed_job(connection, queue_name: str, message: str = "push service on fire") -> str:
    """Enqueue a job that raises and run it, so it sits in RQ's FailedJobRegistry."""
    queue = Queue(queue_name, connection=connection)
    job = queue.enqueue("tests.helpers.jobs.explode", message, description="explode for the test")
    SimpleWorker([queue], connection=connection).work(burst=True)
    assert job.id in FailedJobRegistry(queue_name, connection=connection)
    return job.id


def sign_in(client) -> str:
    """Sign in through the form; returns the session's CSRF token (from the dashboard page)."""
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 302
    page = client.get("/admin")
    assert page.status_code == 200
    return re.search(r'name="csrf-token" content="([^"]+)"', page.get_data(as_text=True)).group(1)
